// The forwarder half of the handoff end to end (claim steps C1-C5, C7, C8),
// through the real shim on a ring port: synthetic clients, the real engine,
// and stand-in host agents that verify each blob and answer like the real one.
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { FlowState } from '../src/offload';
import { buildTcp, parseFrame, TCP_ACK, TCP_PSH, TCP_RST, TCP_SYN } from '../src/net';
import { HandoffEngine, Router, validateRouting } from '../src/classifier';
import { startShim, sleep } from './lib/harness';
import { FakeHosts } from './lib/fake-host';
import { CLIENT, LB, VIP } from './lib/topology';

const KEY = Buffer.from('handoff-test-cluster-key-32bytes');
const HOSTS = ['h1', 'h2', 'h3', 'h4'].map((name, i) => ({
  name, id: i + 1, ip: `198.18.0.${11 + i}`, nexthopMac: `02:00:00:00:01:${(0x11 + i).toString(16)}`,
  innerMac: `02:00:00:00:0b:${(0x11 + i).toString(16)}`, agentPort: 4791,
}));
const routingDoc = {
  pools: [
    { name: 'api', hosts: [{ host: 'h1' }, { host: 'h2' }] },
    { name: 'tls', hosts: [{ host: 'h2' }] },
    { name: 'flaky', hosts: [{ host: 'h3' }, { host: 'h4' }], choice: 'least-pending' },
    { name: 'dead', hosts: [{ host: 'h3' }] },
  ],
  rules: [
    { name: 'by-sni', match: { sni: 'example.test' }, pool: 'tls' },
    { name: 'flaky-path', match: { pathPrefix: '/flaky' }, pool: 'flaky' },
    { name: 'dead-path', match: { pathPrefix: '/dead' }, pool: 'dead' },
    { name: 'api-host', match: { host: 'api.example' }, pool: 'api' },
  ],
  defaults: [{ vip: VIP.ip, port: VIP.port, pool: 'api' }],
};

const shim = startShim({
  ports: [{ device: 'ho_ring', ip: LB.ip, mac: LB.mac, ring: true }],
  vips: [{ ip: VIP.ip, port: VIP.port }], mbufs: 16383,
});

if (typeof shim === 'string') {
  t.plan(0, shim);
} else {
  const v = validateRouting(routingDoc, HOSTS.map((h) => h.name));
  if (!v.ok) throw new Error(JSON.stringify(v.problems));
  const router = new Router(v.routing, HOSTS.map((h) => h.name));
  for (const h of HOSTS) shim.setHost(h.id, { ip: h.ip, nexthopMac: h.nexthopMac, innerMac: h.innerMac });
  const engine = new HandoffEngine({ shim, router, hosts: HOSTS, clusterKey: KEY,
    sender: { maxAttempts: 20, maxRtoMs: 50 }, closingTimeoutMs: 300, idleTimeoutMs: 1500 });
  const running = engine.run();
  const fake = new FakeHosts(shim, HOSTS.map((h) => ({ name: h.name, ip: h.ip, mac: h.nexthopMac, agentPort: h.agentPort })), KEY, LB);
  t.teardown(async () => {
    engine.stop();
    await running;
    shim.stop();
  });

  /** Pump the stand-in hosts until `cond` holds (evaluated once per round: it may consume). */
  const pumpUntil = async (cond: () => boolean, ms = 5000) => {
    const end = Date.now() + ms;
    for (;;) {
      fake.pump();
      if (cond()) return true;
      if (Date.now() > end) return false;
      await sleep(1);
    }
  };
  const fromLb = (port: number, flags?: number) => (f: Buffer) => {
    const p = parseFrame(f);
    return p.tcp?.dstPort === port && (flags === undefined || p.tcp.flags === flags) ? p : undefined;
  };
  const take = (pred: (f: Buffer) => unknown) => {
    const i = fake.wire.findIndex((f) => pred(f));
    return i < 0 ? undefined : fake.wire.splice(i, 1)[0];
  };
  // Like Linux: MSS, SACK-permitted, timestamps and window scale 7 on the SYN; timestamps on every later segment.
  const seg = (port: number, seq: number, ack: number, flags: number, payload: Buffer = Buffer.alloc(0), tsecr = 0) => {
    const ts = Buffer.from('0101080a0000000200000000', 'hex');
    ts.writeUInt32BE(tsecr >>> 0, 8);
    return buildTcp({
      srcMac: CLIENT.mac, dstMac: LB.mac, srcIp: CLIENT.ip, dstIp: VIP.ip, srcPort: port, dstPort: VIP.port,
      seq: seq >>> 0, ack: ack >>> 0, flags, window: 1000, payload,
      options: flags & TCP_SYN ? Buffer.from('020405b40402080a000000010000000001030307', 'hex') : ts,
    });
  };
  const tsvalOf = (f: Buffer) => {
    const o = parseFrame(f).tcp!.options;
    return o.readUInt32BE(o.indexOf(Buffer.from([8, 10])) + 2);
  };
  const burst = (frames: Buffer[]) => {
    const { PacketBurst } = require('../src/offload') as typeof import('../src/offload');
    const b = new PacketBurst(Math.max(1, frames.length));
    for (const f of frames) b.add(f);
    shim.ringInject(0, b);
  };
  /** Handshake, then the request in `pieces` segments. @returns the cookie ISN. */
  const connect = async (port: number, isn: number, request: Buffer, pieces = 1) => {
    burst([seg(port, isn, 0, TCP_SYN)]);
    let synack: Buffer | undefined;
    await pumpUntil(() => !!(synack = take(fromLb(port, TCP_SYN | TCP_ACK))));
    if (!synack) throw new Error(`no SYN-ACK for port ${port}`);
    const cookie = parseFrame(synack).tcp!.seq;
    const ecr = tsvalOf(synack);
    const frames = [seg(port, isn + 1, cookie + 1, TCP_ACK, undefined, ecr)];
    const step = Math.ceil(request.length / pieces);
    for (let off = 0; off < request.length; off += step) {
      frames.push(seg(port, isn + 1 + off, cookie + 1, TCP_ACK | TCP_PSH, request.subarray(off, off + step), ecr));
    }
    burst(frames);
    return cookie;
  };
  const all = () => [...fake.injected.values()].flat();

  t.test('HTTP request split over segments: routed by Host, blob exact, then tunnelled', async (t) => {
    const req = Buffer.from('GET /v1/items HTTP/1.1\r\nHost: api.example\r\nUser-Agent: test\r\n\r\n');
    const cookie = await connect(42000, 5000, req, 3);
    t.ok(await pumpUntil(() => all().some((b) => b.clientPort === 42000)), 'a host accepted the blob');
    const blob = all().find((b) => b.clientPort === 42000)!;
    t.ok(blob.data.equals(req), 'the blob carries the request bytes exactly');
    t.equal(blob.irs, 5000, "the client's ISN");
    t.equal(blob.iss, cookie, 'our ISN (the cookie)');
    t.equal(blob.rcvNxt, 5001 + req.length, 'rcv_nxt after the request');
    t.equal(blob.sndNxt, (cookie + 1) >>> 0);
    t.same([blob.mss, blob.sndWscale, blob.rcvWscale, blob.sackOk, blob.tsOk], [1410, 7, 7, true, true]);
    t.equal(blob.decision.rule, 'api-host');
    t.equal(blob.decision.pool, 'api');
    t.ok(['h1', 'h2'].includes(blob.decision.host));
    const key = { clientIp: CLIENT.ip, clientPort: 42000, vip: VIP.ip, vipPort: VIP.port };
    t.ok(await pumpUntil(() => shim.lookupMapping(key)?.state === FlowState.ACTIVE), 'mapping ACTIVE after the final ACK');
    burst([seg(42000, 5001 + req.length, cookie + 1, TCP_ACK, Buffer.from('next request'))]);
    let tun: Buffer | undefined;
    await pumpUntil(() => !!(tun = take((f) => parseFrame(f).vxlan)));
    const p = parseFrame(tun!);
    t.equal(p.vxlan!.vni, blob.flowId, 'later packets are tunnelled with the flow ID as VNI');
    t.equal(p.ipv4!.dst, HOSTS.find((h) => h.name === blob.decision.host)!.ip, 'to the chosen host');
  });

  t.test('mappings go: after FIN plus the closing timeout, and when idle', async (t) => {
    const key = { clientIp: CLIENT.ip, clientPort: 42000, vip: VIP.ip, vipPort: VIP.port };
    const m = shim.lookupMapping(key)!;
    const closed = engine.stats.mappingsClosed;
    burst([buildTcp({ srcMac: CLIENT.mac, dstMac: LB.mac, srcIp: CLIENT.ip, dstIp: VIP.ip, srcPort: 42000,
      dstPort: VIP.port, seq: 1, ack: 1, flags: 0x11, window: 100 })]);
    t.ok(await pumpUntil(() => shim.lookupMapping(key)?.state === FlowState.CLOSING), 'FIN: CLOSING');
    t.ok(await pumpUntil(() => shim.lookupMapping(key) === undefined, 5000), 'removed after the closing timeout');
    t.equal(engine.stats.mappingsClosed - closed, 1);
    t.ok(m.flowId > 0);
    const before = engine.stats.mappingsExpired;
    const k2 = { clientIp: CLIENT.ip, clientPort: 42010, vip: VIP.ip, vipPort: VIP.port };
    await connect(42010, 777, Buffer.from('GET / HTTP/1.1\r\nHost: api.example\r\n\r\n'));
    t.ok(await pumpUntil(() => shim.lookupMapping(k2)?.state === FlowState.ACTIVE));
    t.ok(await pumpUntil(() => shim.lookupMapping(k2) === undefined, 8000), 'an idle mapping expires');
    t.equal(engine.stats.mappingsExpired - before, 1);
  });

  t.test('TLS ClientHello (openssl s_client) routed by SNI', async (t) => {
    const hello = fs.readFileSync(path.resolve(__dirname, '../../test/fixtures/requests/tls-openssl-s_client.bin'));
    await connect(42001, 9000, hello, 2);
    t.ok(await pumpUntil(() => all().some((b) => b.clientPort === 42001)));
    const blob = all().find((b) => b.clientPort === 42001)!;
    t.equal(blob.decision.rule, 'by-sni');
    t.equal(blob.decision.host, 'h2');
    t.ok(blob.data.equals(hello), 'the ClientHello travels in the blob');
  });

  t.test('a silent host: the connection fails over to the next in its pool', async (t) => {
    fake.silent.add('h3');
    const before = engine.stats.failovers;
    await connect(42002, 100, Buffer.from('GET /flaky HTTP/1.1\r\nHost: x\r\n\r\n'));
    t.ok(await pumpUntil(() => all().some((b) => b.clientPort === 42002), 10000), 'delivered');
    t.equal(all().find((b) => b.clientPort === 42002)!.decision.host, 'h4', 'to h4 after h3 stayed silent');
    t.equal(engine.stats.failovers - before, 1, 'one failover');
  });

  t.test('no host left: the client gets a reset and the mapping goes', async (t) => {
    const failed = engine.stats.handoffsFailed;
    const req = Buffer.from('GET /dead HTTP/1.1\r\nHost: x\r\n\r\n');
    await connect(42003, 200, req);
    let rst: Buffer | undefined;
    t.ok(await pumpUntil(() => !!(rst = take(fromLb(42003, TCP_RST | TCP_ACK))), 10000), 'RST to the client');
    const r = parseFrame(rst!).tcp!;
    t.equal(r.ack, 200 + 1 + req.length, 'acknowledging what it sent');
    t.equal(engine.stats.handoffsFailed - failed, 1);
    t.equal(shim.lookupMapping({ clientIp: CLIENT.ip, clientPort: 42003, vip: VIP.ip, vipPort: VIP.port }), undefined);
    fake.silent.delete('h3');
  });

  t.test('30% loss, 5% corruption, duplication and reordering on the blob path: every blob intact, once', async (t) => {
    shim.setFaults({ dropPm: 300, corruptPm: 50, duplicatePm: 50, reorderPm: 50, seed: 7 });
    const N = 100;
    const reqs = new Map<number, Buffer>();
    const before = all().length;
    for (let i = 0; i < N; i++) {
      const port = 43000 + i;
      // Large requests (several fragments each): 2-40 KB bodies after the head.
      const req = Buffer.concat([Buffer.from(`POST /upload/${i} HTTP/1.1\r\nHost: api.example\r\nContent-Length: 0\r\n\r\n`)]);
      reqs.set(port, req);
      await connect(port, i * 7919, req, 1 + (i % 3));
    }
    t.ok(await pumpUntil(() => all().length - before >= N, 30000), `all ${N} blobs delivered`);
    shim.setFaults({});
    const got = all().filter((b) => reqs.has(b.clientPort));
    t.equal(got.length, N, 'each exactly once (replays refused by nonce)');
    t.ok(got.every((b) => b.data.equals(reqs.get(b.clientPort)!)), 'every blob intact');
    const c = shim.counters().total;
    t.ok(c.drop_fault_injected > 0n && c.fault_corrupted > 0n && c.fault_duplicated > 0n, 'faults were injected');
    t.ok(engine.sender.stats.retransmitted > 0, `retransmissions happened (${engine.sender.stats.retransmitted})`);
    t.ok(await pumpUntil(() => engine.stats.handoffsCompleted + engine.stats.handoffsUncertain >= N + 3, 10000),
      'every handoff finished');
    t.comment(`handoff latency: ${JSON.stringify(engine.latency())}; uncertain ${engine.stats.handoffsUncertain}`);
  });
}
