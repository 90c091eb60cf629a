// Issue 8, part 4: forged input at a host, end to end, on the namespace
// topology (design.md §6): blob transfers with bad MACs, replays, stale or
// future timestamps, wrong VIPs, malformed fields, fragments claiming absurd
// sizes or counts, garbage, and a flood of partial transfers (memory); then
// VXLAN packets with unknown flow IDs, forged from a client and from the
// balancer's own address. Each is refused and counted, and nothing is
// injected: the agent's counters, the app's connection events, `ss`, and the
// host kernel's TCP counters (a forged segment that reached the stack would
// be answered with a RST) say so. A host without the tunnel check is the
// positive control (the same forged segment does reach its stack), and real
// curl through the balancer shows known flows still pass.
//
// Needs root (namespaces, AF_PACKET, TCP_REPAIR, the BPF tunnel check).
import t from 'tap';
import crypto from 'node:crypto';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { pack } from 'msgpackr';
import { Balancer } from '../src/controller/balancer';
import { parseBalancerConfig } from '../src/controller/config';
import { buildTcp, buildVxlan, TCP_ACK, TCP_PSH } from '../src/net';
import { PacketBurst } from '../src/offload';
import {
  DEFAULT_FRAGMENT_SIZE, encodeBlob, encodeData, fragmentCount, fragmentLength, Status, statusName,
} from '../src/transfer';
import { isRoot, waitFor } from './lib/harness';
import { makeBlob, type ProbeBlob } from './lib/blob-probe';
import { HostProc, mb, reseal, runIn, runNodeIn, tcpCounters, waitForAsync } from './lib/hardening';
import type { ForgeCase, ForgeResult } from './lib/forge-probe';
import { Topology, sh } from './lib/netns';

const VIP = '198.18.0.100';
const LB_IP = '198.18.0.2';
const KEY_HEX = crypto.randomBytes(32).toString('hex');
const KEY = Buffer.from(KEY_HEX, 'hex');
const FORGE = path.resolve(__dirname, 'lib/forge-probe.js');
const has = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;

const SESSION = crypto.randomInt(1, 2 ** 32);
let nextBlobId = 1;
const b64 = (b: Buffer) => b.toString('base64');

/** The DATA datagrams of one transfer of `bytes`. */
function transfer(bytes: Buffer, blobId = nextBlobId++): string[] {
  const fs = DEFAULT_FRAGMENT_SIZE;
  const count = fragmentCount(bytes.length, fs);
  return Array.from({ length: count }, (_, i) => b64(encodeData({
    session: SESSION, blobId, index: i, count, totalLength: bytes.length, fragmentSize: fs,
    payload: bytes.subarray(i * fs, i * fs + fragmentLength(i, count, bytes.length, fs)),
  })));
}

/** Framing with a valid MAC around any body: what only a key holder (or a bug) could send. */
function frameWithMac(body: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head[0] = 1;
  head.writeUInt32BE(body.length, 1);
  const mac = crypto.createHmac('sha256', KEY).update(head).update(body).digest();
  return Buffer.concat([head, body, mac]);
}

/** A valid first fragment, edited field by field and resealed (so only the edit is wrong). */
function dataWith(edit: (d: Buffer) => void, totalLength = 3000): string {
  const count = fragmentCount(totalLength, DEFAULT_FRAGMENT_SIZE);
  const d = encodeData({ session: SESSION, blobId: nextBlobId++, index: 0, count, totalLength, fragmentSize: DEFAULT_FRAGMENT_SIZE,
    payload: crypto.randomBytes(DEFAULT_FRAGMENT_SIZE) });
  edit(d);
  return b64(reseal(d));
}

if (!isRoot) {
  t.plan(0, 'needs root: network namespaces, AF_PACKET, TCP_REPAIR, BPF');
} else {
  const topo = new Topology('f');
  let lb: Balancer | undefined;
  let lbStopped = false;
  t.teardown(async () => {
    if (lb && !lbStopped) await lb.stop().catch(() => {});
    await topo.shutdown();
  });
  const lbDev = topo.rootPort('lb');
  const client = topo.host('cli', '198.18.0.1/24');
  const h1 = topo.host('h1', '198.18.0.11/24');
  const h2 = topo.host('h2', '198.18.0.12/24');
  const vips = [{ ip: VIP, port: 80 }];
  // host1: as in production, the tunnel check on and only the balancer may send.
  const host1 = HostProc.start(topo, h1, KEY_HEX, { name: 'host1', vips, balancers: [LB_IP] });
  // host2: no allowlist and no tunnel check: blobs are guarded by their MAC
  // alone, and it is the control for the VXLAN tests.
  const host2 = HostProc.start(topo, h2, KEY_HEX, { name: 'host2', vips, balancers: [], filterTunnel: false });
  const hosts = [host1, host2];

  // Every datagram the test sends to host2's blob port, counted, so a test
  // can wait until the agent has taken in all earlier traffic before it reads
  // its "before" counters: a slow agent (under ASan, on a loaded machine) may
  // still be working through the previous case's datagrams when it returns.
  // Only the test and the balancer's health checks (counted apart as pings)
  // send to host2's blob port (its pool gets no connections).
  let sentToHost2 = 0;
  const forge = async (to: { ip: string; port: number }, cases: ForgeCase[]) => {
    const r = await runNodeIn<{ results?: ForgeResult[]; fatal?: string }>(client.ns, FORGE, { to, cases }, { timeoutMs: 120_000 });
    if (r.fatal) throw new Error(r.fatal);
    for (const x of r.results!) {
      const dest = cases.find((c) => c.name === x.name)?.to ?? to;
      if (dest.ip === h2.ip && dest.port === 4791) sentToHost2 += x.sent;
    }
    const by = new Map(r.results!.map((x) => [x.name, x]));
    return (name: string) => by.get(name)!;
  };
  /** host2's non-PING datagrams: only what the test sent moves it. */
  const taken = (s: { datagrams: number; pings: number }) => s.datagrams - s.pings;
  /**
   * host2's counters once it has taken in every datagram sent to it so far
   * (waits for that, up to 30 s; a shortfall then shows in the assertions).
   */
  const settledHost2 = async () => {
    let s = await host2.stats();
    await waitForAsync(async () => taken(s = await host2.stats()) >= sentToHost2, 30_000, 50);
    return s;
  };
  const finals = (r: ForgeResult) => r.replies.filter((x) => x.type === 'final' || x.type === 'error');

  t.test('hosts and balancer start', async (t) => {
    for (const h of hosts) t.match(await h.ready(), { ev: 'ready' }, `${h.name} ready ${h.text.slice(0, 300)}`);
    const filters = sh('tc', ['filter', 'show', 'dev', 'vx0', 'ingress'], { ns: h1.ns });
    t.match(filters, /bpf .*name hh_tunnel_check/, 'host1 installed its tunnel check (BPF filter on vx0 ingress)');
    t.notMatch(sh('tc', ['filter', 'show', 'dev', 'vx0', 'ingress'], { ns: h2.ns }), /hh_tunnel_check/, 'host2 runs without one (filterTunnel: false)');
    const cfg = parseBalancerConfig({
      eal: { vdevs: [`net_af_packet0,iface=${lbDev}`], memoryMb: 256, extraArgs: ['--no-telemetry'] },
      ports: [{ device: 'net_af_packet0', ip: LB_IP }],
      vips,
      hosts: [
        { name: 'host1', ip: h1.ip, nexthopMac: h1.mac, innerMac: host1.mac },
        { name: 'host2', ip: h2.ip, nexthopMac: h2.mac, innerMac: host2.mac },
      ],
      routing: { pools: [{ name: 'one', hosts: [{ host: 'host1' }] }], defaults: [{ vip: VIP, port: 80, pool: 'one' }] },
    }, 'hardening-forged');
    lb = new Balancer(cfg, { clusterKey: KEY });
    lb.start();
    t.ok(lb.engine, 'the handoff engine runs');
  });

  t.test('forged and malformed blob transfers are refused and counted; nothing is injected', async (t) => {
    const base: ProbeBlob = { clientIp: client.ip, clientPort: 0, vip: VIP, vipPort: 80, data: 'GET / HTTP/1.1\r\nHost: forged\r\n\r\n' };
    const blob = (port: number, over: Record<string, unknown> = {}) => ({ ...makeBlob({ ...base, clientPort: port }), ...over });
    const wrongVip = encodeBlob(blob(41003, { vipPort: 8080 }), KEY);
    const stale = encodeBlob(blob(41004, { created: Date.now() - 60_000 }), KEY);
    const future = encodeBlob(blob(41005, { created: Date.now() + 60_000 }), KEY);
    const v2 = encodeBlob(blob(41006), KEY);
    v2[0] = 2;
    const good = encodeBlob(blob(41007), KEY);
    const before = await settledHost2();
    const tcp0 = await tcpCounters(h2.ns);
    const get = await forge({ ip: h2.ip, port: 4791 }, [
      { name: 'bad-mac', datagrams: transfer(encodeBlob(blob(41001), crypto.randomBytes(32))), expect: 1 },
      { name: 'mac-flipped', datagrams: transfer((() => { const b = encodeBlob(blob(41002), KEY); b[b.length - 1] ^= 1; return b; })()), expect: 1 },
      { name: 'wrong-vip', datagrams: transfer(wrongVip), expect: 1 },
      { name: 'replay', datagrams: transfer(wrongVip), expect: 1 },
      { name: 'stale', datagrams: transfer(stale), expect: 1 },
      { name: 'future', datagrams: transfer(future), expect: 1 },
      { name: 'version-2', datagrams: transfer(v2), expect: 1 },
      { name: 'truncated', datagrams: transfer(good.subarray(0, good.length - 9)), expect: 1 },
      { name: 'garbage-body-valid-mac', datagrams: transfer(frameWithMac(crypto.randomBytes(200))), expect: 1 },
      { name: 'bad-fields-valid-mac', datagrams: transfer(frameWithMac(pack({ v: 1, flowId: -5, mss: 1 }))), expect: 1 },
    ]);
    const expect: Array<[string, number]> = [
      ['bad-mac', Status.BAD_MAC], ['mac-flipped', Status.BAD_MAC], ['wrong-vip', Status.WRONG_VIP], ['replay', Status.REPLAY],
      ['stale', Status.STALE], ['future', Status.STALE], ['version-2', Status.BAD_VERSION], ['truncated', Status.TRUNCATED],
      ['garbage-body-valid-mac', Status.SCHEMA], ['bad-fields-valid-mac', Status.SCHEMA],
    ];
    for (const [name, status] of expect) {
      t.same(finals(get(name)).map((x) => x.statusName), [statusName(status)], `${name}: FINAL ${statusName(status)}`);
    }
    const s = await settledHost2();
    const d = (k: keyof typeof s) => (s[k] as number) - (before[k] as number);
    t.equal(d('blobs'), expect.length, `${expect.length} blobs reassembled and judged`);
    t.same({ mac: d('refusedMac'), vip: d('refusedVip'), replay: d('refusedReplay'), stale: d('refusedStale'), schema: d('refusedSchema') },
      { mac: 2, vip: 1, replay: 1, stale: 2, schema: 4 }, 'each refusal counted by reason (version and truncation count as malformed)');
    t.equal(d('injected'), 0, 'nothing injected');
    t.equal(d('injectFailed'), 0, 'no injection even attempted (TCP_REPAIR never ran)');
    t.notOk(host2.find((e) => e.ev === 'conn'), 'the app got no connection');
    t.equal(sh('ss', ['-Htn', 'state', 'established'], { ns: h2.ns }).trim(), '', 'no established TCP socket in host2');
    const tcp1 = await tcpCounters(h2.ns);
    t.equal(tcp1.TcpOutRsts - tcp0.TcpOutRsts, 0, 'host2\'s kernel sent no TCP segment about them (no RST)');
  });

  t.test('malformed datagrams and absurd fragments: dropped unanswered, counted, never used', async (t) => {
    const before = await settledHost2();
    const cases: ForgeCase[] = [
      { name: 'count-65535', datagrams: [dataWith((d) => d.writeUInt16BE(65535, 22))] },
      { name: 'count-0', datagrams: [dataWith((d) => d.writeUInt16BE(0, 22))] },
      { name: 'total-4GiB', datagrams: [dataWith((d) => d.writeUInt32BE(0xffffffff, 24))] },
      { name: 'total-2MiB', datagrams: [dataWith((d) => { d.writeUInt32BE(2 << 20, 24); d.writeUInt16BE(1498, 22); })] },
      { name: 'index-past-count', datagrams: [dataWith((d) => d.writeUInt16BE(7, 20))] },
      { name: 'count-disagrees-with-total', datagrams: [dataWith((d) => d.writeUInt16BE(900, 22))] },
      { name: 'fragment-size-1', datagrams: [dataWith((d) => d.writeUInt16BE(1, 28))] },
      { name: 'payload-length-lies', datagrams: [dataWith((d) => d.writeUInt16BE(9000, 30))] },
      { name: 'bad-crc', datagrams: [(() => { const d = Buffer.from(dataWith(() => {}), 'base64'); d[40] ^= 0xff; return b64(d); })()] },
      { name: 'garbage', datagrams: Array.from({ length: 20 }, (_, i) => b64(crypto.randomBytes(1 + i * 400))) },
      { name: 'empty', datagrams: [b64(Buffer.alloc(0))] },
      { name: 'magic-only', datagrams: [b64(Buffer.from('HOFF'))] },
      { name: 'jumbo-garbage', datagrams: [b64(crypto.randomBytes(60000))] },
    ];
    const get = await forge({ ip: h2.ip, port: 4791 }, cases);
    const sent = cases.reduce((n, c) => n + get(c.name).sent, 0);
    for (const c of cases) t.same(get(c.name).replies, [], `${c.name}: no answer`);
    const s = await settledHost2();
    // The balancer's health checks (PINGs) arrive meanwhile: taken() counts them out.
    t.equal(taken(s) - taken(before), sent, `the agent received all ${sent} datagrams`);
    t.equal(s.datagramsDropped - before.datagramsDropped, sent, 'and counted every one as dropped');
    t.equal(s.blobs - before.blobs, 0, 'none made a blob');
    t.equal(s.injected - before.injected, 0, 'nothing injected');
  });

  t.test('a flood of partial transfers claiming 1 MiB each: memory bounded, then BUSY, then expired', async (t) => {
    // Each announces 1 MiB (the largest) and sends one fragment, so the agent
    // reserves the whole blob. The reassembler admits 64 MiB in all and 128
    // transfers per sender, answers BUSY beyond, and drops partial transfers
    // that make no progress for 2 s.
    const N = 300;
    const total = 1 << 20;
    const count = fragmentCount(total, DEFAULT_FRAGMENT_SIZE);
    const firsts = Array.from({ length: N }, () => b64(encodeData({ session: SESSION, blobId: nextBlobId++, index: 0, count,
      totalLength: total, fragmentSize: DEFAULT_FRAGMENT_SIZE, payload: crypto.randomBytes(DEFAULT_FRAGMENT_SIZE) })));
    const rss0 = host2.rss();
    const before = await settledHost2();
    // Each first fragment is answered (ACK or ERROR BUSY): wait for all N answers, not a fixed time.
    const get = await forge({ ip: h2.ip, port: 4791 }, [{ name: 'partials', datagrams: firsts, replies: N, waitMs: 30_000 }]);
    const rss1 = host2.rss();
    const r = get('partials');
    const acks = r.replies.filter((x) => x.type === 'ack').length;
    const busy = r.replies.filter((x) => x.type === 'error' && x.status === Status.BUSY).length;
    t.comment(`host2 agent RSS before ${mb(rss0)}, after ${N} partial 1 MiB transfers ${mb(rss1)} (+${mb(rss1 - rss0)})`);
    t.equal(acks, 64, '64 transfers admitted (64 MiB reserved), each ACKed');
    t.equal(busy, N - 64, `the other ${N - 64} refused with ERROR BUSY`);
    t.ok(rss1 - rss0 < 96 * 1048576, `agent memory grew ${mb(rss1 - rss0)}: bounded by the 64 MiB reservation limit`);
    // Once they expire (2 s without progress) a genuine-size transfer is admitted again.
    await new Promise((res) => setTimeout(res, 2500));
    const get2 = await forge({ ip: h2.ip, port: 4791 }, [{ name: 'after', datagrams: [dataWith(() => {})] }]);
    t.ok(get2('after').replies.some((x) => x.type === 'ack'), 'after expiry a new transfer is admitted (ACKed)');
    const s = await settledHost2();
    t.equal(s.blobs - before.blobs, 0, 'no blob completed');
    t.equal(s.injected - before.injected, 0, 'nothing injected');
    await new Promise((res) => setTimeout(res, 2500)); // let the last partial expire
    if (typeof global.gc === 'function') global.gc();
    t.comment(`host2 agent RSS once expired: ${mb(host2.rss())}`);
  });

  t.test('blobs from an address that is not a balancer are refused unread (host1\'s allowlist)', async (t) => {
    const before = await host1.stats();
    const get = await forge({ ip: h1.ip, port: 4791 }, [
      { name: 'genuine-from-client', datagrams: transfer(encodeBlob(makeBlob({ clientIp: client.ip, clientPort: 41100, vip: VIP, vipPort: 80 }), KEY)), waitMs: 500 },
    ]);
    t.same(get('genuine-from-client').replies, [], 'no answer at all');
    // Refused datagrams get no answer, so wait until the agent has counted them all (it may lag the sender).
    let s = await host1.stats();
    await waitForAsync(async () => (s = await host1.stats()).refusedSender - before.refusedSender >= get('genuine-from-client').sent, 30_000, 50);
    t.equal(s.refusedSender - before.refusedSender, get('genuine-from-client').sent, 'counted as refusedSender');
    t.equal(s.injected - before.injected, 0, 'nothing injected, though its MAC was right');
  });

  // ---- VXLAN with unknown flow IDs -------------------------------------------------------------

  /** A client segment as the balancer would tunnel it: ACK + data to VIP:80, no socket behind it. */
  const inner = (innerMac: string, clientPort: number) => buildTcp({
    srcMac: '02:00:00:00:00:aa', dstMac: innerMac, srcIp: client.ip, dstIp: VIP, srcPort: clientPort, dstPort: 80,
    seq: 1000, ack: 2000, flags: TCP_ACK | TCP_PSH, window: 502, payload: Buffer.from('GET /forged HTTP/1.1\r\n\r\n'),
  });
  /** The VXLAN payload (header + inner frame) a UDP socket sends. */
  const vxlanPayload = (vni: number, frame: Buffer) => {
    const h = Buffer.alloc(8);
    h[0] = 0x08;
    h.writeUIntBE(vni, 4, 3);
    return Buffer.concat([h, frame]);
  };
  /** Send from the balancer's own address and MAC, through its port: as the balancer would. */
  const sendFromLb = (h: { ip: string; mac: string }, vni: number, frame: Buffer): number => {
    const info = lb!.shim.portInfo(0);
    const b = new PacketBurst(4);
    b.add(buildVxlan({ srcMac: info.mac, dstMac: h.mac, srcIp: LB_IP, dstIp: h.ip, srcPort: 50000, vni, inner: frame, udpChecksum: false }), 0);
    return lb!.shim.txBurst(b);
  };

  t.test('control: without the tunnel check a forged VXLAN segment reaches the host\'s TCP stack', async (t) => {
    const k0 = await tcpCounters(h2.ns);
    t.equal(sendFromLb(h2, 0xabcde, inner(host2.mac, 41200)), 1, 'sent from the balancer\'s address, unknown VNI');
    const ok = await waitForAsync(async () => (await tcpCounters(h2.ns)).TcpOutRsts > k0.TcpOutRsts, 5000, 50);
    const k1 = await tcpCounters(h2.ns);
    t.ok(ok, `host2's kernel answered the forged segment with a RST (TcpOutRsts ${k0.TcpOutRsts} -> ${k1.TcpOutRsts})`);
    t.ok(k1.TcpInSegs > k0.TcpInSegs, 'its TCP stack took the segment in');
  });

  t.test('real curl through the balancer still works with the tunnel check (known flows pass)', { skip: !has('curl') && 'curl is not installed' },
    async (t) => {
      for (let i = 0; i < 3; i++) {
        const r = await runIn(client.ns, 'curl', ['-s', '--max-time', '10', `http://${VIP}/bytes/300000`]);
        t.equal(r.code, 0, 'curl exits 0');
        t.equal(r.stdout.length, 300000, 'the whole 300 kB response: the client\'s ACKs came through the tunnel');
      }
      const s = await host1.stats();
      t.ok(s.tunnelled > 0, `host1 let ${s.tunnelled} tunnelled packets of its flows in`);
      t.equal(s.tunnelRefusedFlow, 0, 'and refused none of them');
    });

  t.test('forged VXLAN at a host with the tunnel check: dropped, counted, never reaches the stack', async (t) => {
    const conn = host1.filter((e) => e.ev === 'conn').at(-1);
    t.ok(conn, 'a flow host1 injected (from the curl test) gives a known VNI');
    const knownVni = (conn?.flowId as number) ?? 1;
    const s0 = await host1.stats();
    const k0 = await tcpCounters(h1.ns);
    // 1. From a client's address: not a balancer.
    const get = await forge({ ip: h1.ip, port: 4789 }, [
      { name: 'from-client', datagrams: [b64(vxlanPayload(0xabcde, inner(host1.mac, 41300)))] },
    ]);
    t.equal(get('from-client').sent, 1, 'sent from the client namespace');
    // 2. From the balancer's address: an unknown VNI; a known VNI with another flow's 4-tuple.
    let queued = sendFromLb(h1, 0xabcde, inner(host1.mac, 41301));
    queued += sendFromLb(h1, knownVni, inner(host1.mac, 41302));
    queued += sendFromLb(h1, knownVni, inner(host1.mac, ((conn?.clientPort as number) ?? 40000) ^ 1));
    t.equal(queued, 3, 'three sent from the balancer\'s address');
    let s1 = s0;
    await waitForAsync(async () => {
      s1 = await host1.stats();
      return s1.tunnelRefusedSender - s0.tunnelRefusedSender >= 1 && s1.tunnelRefusedFlow - s0.tunnelRefusedFlow >= 3;
    }, 10000, 100);
    t.equal(s1.tunnelRefusedSender - s0.tunnelRefusedSender, 1, 'VXLAN from a non-balancer: tunnelRefusedSender +1');
    t.equal(s1.tunnelRefusedFlow - s0.tunnelRefusedFlow, 3,
      'unknown VNI, and a known VNI carrying another 4-tuple (twice): tunnelRefusedFlow +3');
    const k1 = await tcpCounters(h1.ns);
    t.equal(k1.TcpOutRsts - k0.TcpOutRsts, 0, 'host1\'s kernel sent no RST: the segments never reached TCP');
    t.comment(`host1 TcpInSegs +${k1.TcpInSegs - k0.TcpInSegs} meanwhile (any closing of earlier flows)`);
    t.equal(s1.injected - s0.injected, 0, 'nothing injected');
    t.comment(`host1: tunnelled ${s1.tunnelled}, tunnelRefusedFlow ${s1.tunnelRefusedFlow}, tunnelRefusedSender ${s1.tunnelRefusedSender}`);
  });

  t.test('shut down: the agent removes its tunnel check', async (t) => {
    await lb?.stop();
    lbStopped = true;
    for (const h of hosts) h.child.kill('SIGTERM');
    t.ok(await waitFor(() => hosts.every((h) => h.exited), 10000, 20), 'host processes exited');
    // (allowFail: the agent also deletes the vx0 it created, and the filter with it)
    t.notMatch(sh('tc', ['filter', 'show', 'dev', 'vx0', 'ingress'], { ns: h1.ns, allowFail: true }), /hh_tunnel_check/, 'host1\'s BPF filter is gone');
    t.notOk(host1.find((e) => e.ev === 'agent-error'), 'host1 reported no agent error');
  });
}
