// DPDK telemetry: the shim's /handoff/ commands read with Debian's
// dpdk-telemetry.py over the real dpdk_telemetry.v2 socket, compared with the
// shim's own counters and tables after real packets went through a worker.
import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import t from 'tap';
import { ABI_VERSION, FlowState, PacketBurst } from '../src/offload';
import { buildArpRequest, buildTcp, parseFrame, TCP_ACK, TCP_PSH, TCP_SYN } from '../src/net';
import { parseBalancerConfig, ealArgs } from '../src/controller/config';
import { startShim, waitFor, TEST_EAL } from './lib/harness';
import { writeStdin } from './lib/procs';
import { CLIENT, HOST1, LB, VIP } from './lib/topology';

// Telemetry on (TEST_EAL turns it off), under a prefix of our own so the
// socket is /var/run/dpdk/<prefix>/dpdk_telemetry.v2 whatever else runs.
const PREFIX = `hstel${process.pid}`;
const EAL = [...TEST_EAL.filter((a) => a !== '--no-telemetry'), '--file-prefix', PREFIX,
  '--log-level', 'lib.telemetry:error'];

/** EAL's runtime directory for a prefix (lib/eal/unix/eal_filesystem.c), as dpdk-telemetry.py finds it. */
function runtimeDir(prefix: string): string {
  const base = process.env.RUNTIME_DIRECTORY
    ?? (process.getuid?.() === 0 ? '/var/run' : process.env.XDG_RUNTIME_DIR ?? '/tmp');
  return path.join(base, 'dpdk', prefix);
}

const TOOL = 'dpdk-telemetry.py';
const haveTool = spawnSync('sh', ['-c', `command -v ${TOOL}`]).status === 0;

type Reply = Record<string, any> | null; // eslint-disable-line @typescript-eslint/no-explicit-any

/** Send commands through dpdk-telemetry.py (non-interactive: one JSON reply per line). */
function query(...cmds: string[]): Promise<Reply[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(TOOL, ['-f', PREFIX], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    child.on('error', reject);
    child.on('close', (code) => {
      const lines = out.trim().split('\n').filter(Boolean);
      if (code !== 0 || lines.length !== cmds.length) {
        reject(new Error(`${TOOL} exited ${code} with ${lines.length} replies for ${cmds.length} commands: ${out}${err}`));
        return;
      }
      // Each reply is {"<command without its parameter>": value}.
      try {
        resolve(lines.map((l, i) => {
          const obj = JSON.parse(l) as Record<string, Reply>;
          const key = cmds[i].split(',')[0];
          if (!(key in obj)) throw new Error(`reply to ${cmds[i]} has no ${key}: ${l}`);
          return obj[key];
        }));
      } catch (e) {
        reject(e);
      }
    });
    writeStdin(child, cmds.join('\n') + '\n');
  });
}

const toNumbers = (row: Record<string, bigint>) => Object.fromEntries(Object.entries(row).map(([k, v]) => [k, Number(v)]));
const without = (o: Record<string, number>, key: string) => Object.fromEntries(Object.entries(o).filter(([k]) => k !== key));

t.test("the balancer's EAL arguments leave telemetry on", async (t) => {
  const cfg = parseBalancerConfig({ ports: [{ device: 'net_tap0', ip: '198.18.0.2' }] });
  t.notOk(ealArgs(cfg).includes('--no-telemetry'), 'default configuration');
  const huge = parseBalancerConfig({ eal: { hugepages: true, filePrefix: 'handoff-lb' }, ports: [{ device: 'net_tap0', ip: '198.18.0.2' }] });
  t.same(ealArgs(huge).slice(ealArgs(huge).indexOf('--file-prefix'), ealArgs(huge).indexOf('--file-prefix') + 2),
    ['--file-prefix', 'handoff-lb'], 'with hugepages the prefix names the telemetry directory');
});

const shim = haveTool ? startShim({
  eal: EAL,
  ports: [{ device: 'tel_ring', ip: LB.ip, mac: LB.mac, ring: true }],
  vips: [{ ip: VIP.ip, port: VIP.port }],
  acceptTimeoutMs: 600000, // nothing times out while the test reads the counters
}) : `${TOOL} (Debian package dpdk-dev) is not installed`;

if (typeof shim === 'string') {
  t.test('telemetry through the shim', (t) => { t.plan(0, shim); t.end(); });
} else {
  t.teardown(() => {
    if (shim.running) shim.stop();
    // EAL leaves its runtime directory behind; the socket goes at exit.
    fs.rmSync(runtimeDir(PREFIX), { recursive: true, force: true });
  });
  shim.setHost(1, HOST1);
  const inb = new PacketBurst(64);
  const out = new PacketBurst(64);
  const exc = new PacketBurst(64);
  let injected = 0;
  const inject = (...frames: Buffer[]) => {
    inb.clear();
    for (const f of frames) inb.add(f);
    injected += shim.ringInject(0, inb);
  };
  const drain = () => { shim.ringDrain(0, out); return out.count; };
  /** Wait until the worker has taken everything injected and its counters stop moving (idle_sleeps aside). */
  const settle = async () => {
    await waitFor(() => shim.counters().total.rx_packets === BigInt(injected), 5000);
    let prev = '';
    await waitFor(() => {
      drain();
      const now = JSON.stringify(without(toNumbers(shim.counters().total), 'idle_sleeps'));
      const quiet = now === prev;
      prev = now;
      return quiet;
    }, 5000, 20);
  };
  const seg = (port: number, seq: number, flags: number, ack = 0, payload = '') => buildTcp({
    srcMac: CLIENT.mac, dstMac: LB.mac, srcIp: CLIENT.ip, dstIp: VIP.ip, srcPort: port, dstPort: VIP.port,
    seq, ack, flags, window: 1024, payload: Buffer.from(payload), options: flags & TCP_SYN ? Buffer.from('020405b4', 'hex') : undefined,
  });
  const key = (clientPort: number) => ({ clientIp: CLIENT.ip, clientPort, vip: VIP.ip, vipPort: VIP.port });

  t.test('the socket is where dpdk-telemetry.py looks, and lists the commands', async (t) => {
    t.ok(fs.existsSync(path.join(runtimeDir(PREFIX), 'dpdk_telemetry.v2')), `${runtimeDir(PREFIX)}/dpdk_telemetry.v2`);
    const [list] = await query('/');
    for (const c of ['info', 'stats', 'drops', 'workers', 'mappings', 'accept', 'hosts']) {
      t.ok((list as unknown as string[]).includes(`/handoff/${c}`), `/handoff/${c} registered`);
    }
  });

  t.test('/handoff/info describes the running shim', async (t) => {
    const [info] = await query('/handoff/info');
    t.match(info, {
      abi_version: ABI_VERSION, running: 1, workers: 1, worker_lcores: [1], control_lcore: 0, ports: 1,
      counters: shim.counterNames.length,
      port0: { device: 'tel_ring', ip: LB.ip, mac: LB.mac, mtu: 1500, ring: 1 },
      vips: [`${VIP.ip}:${VIP.port}/tcp`],
    });
    t.match(info!.dpdk_version, /^DPDK \d+\.\d+/);
  });

  t.test('counters after real traffic match the shim row for row', async (t) => {
    shim.insertMapping({ ...key(42000), hostId: 1, flowId: 4200, state: FlowState.ACTIVE });
    shim.insertMapping({ ...key(42001), hostId: 1, flowId: 4201, state: FlowState.PENDING });
    inject(
      buildArpRequest({ srcMac: CLIENT.mac, srcIp: CLIENT.ip, targetIp: LB.ip }), // answered
      seg(42000, 1, TCP_ACK | TCP_PSH, 1, 'tunnelled'), seg(42000, 10, TCP_ACK | TCP_PSH, 1, 'tunnelled'), // encapsulated
      seg(42001, 1, TCP_ACK | TCP_PSH, 1, 'held'), seg(42001, 5, TCP_ACK | TCP_PSH, 1, 'held'), seg(42001, 9, TCP_ACK | TCP_PSH, 1, 'held'),
      Buffer.alloc(10), Buffer.alloc(12), // shorter than an Ethernet header
    );
    await settle();
    const before = shim.counters();
    t.equal(before.total.encap_packets, 2n, 'the traffic went through: two tunnelled');
    t.equal(before.total.held, 3n, 'three held');
    t.equal(before.total.drop_truncated_ethernet, 2n, 'two runts dropped');

    const [total, w0, ctl, drops, drops0] = await query('/handoff/stats', '/handoff/stats,0', '/handoff/stats,control',
      '/handoff/drops', '/handoff/drops,0');
    const after = shim.counters();
    t.same(Object.keys(total!), shim.counterNames, 'every counter, in the shim order');
    // Only idle_sleeps moves while the worker is idle: exact everywhere else.
    t.same(without(total!, 'idle_sleeps'), without(toNumbers(before.total), 'idle_sleeps'), '/handoff/stats: the sum of all rows');
    t.same(without(w0!, 'idle_sleeps'), without(toNumbers(before.workers[0]), 'idle_sleeps'), '/handoff/stats,0: worker 0');
    t.same(ctl, toNumbers(before.control), '/handoff/stats,control: the control row');
    t.ok(total!.idle_sleeps >= Number(before.total.idle_sleeps) && total!.idle_sleeps <= Number(after.total.idle_sleeps),
      'idle_sleeps read between two snapshots');
    const dropNames = shim.counterNames.filter((n) => n.startsWith('drop_'));
    t.same(Object.keys(drops!), ['total', ...dropNames.map((n) => n.slice(5))], '/handoff/drops: reasons without the prefix');
    t.equal(drops!.total, dropNames.reduce((s, n) => s + Number(before.total[n]), 0), 'their total');
    t.equal(drops!.truncated_ethernet, 2);
    t.same(drops0, drops, 'one worker: its row is the sum but for control drops (none here)');
  });

  t.test('/handoff/workers and /handoff/mappings', async (t) => {
    const c = shim.counters();
    const [workers, maps] = await query('/handoff/workers', '/handoff/mappings');
    t.match(workers, {
      worker0: { lcore: 1, rx_packets: Number(c.workers[0].rx_packets), tx_packets: Number(c.workers[0].tx_packets),
        encap_packets: 2, drops: 2, held_packets: 3, accept_live: 0, commands_queued: 0 },
      control: { lcore: 0, control_tx: 0, drops: 0 },
    });
    t.match(maps, { capacity: 65536, live: shim.mappingCount(), pending: 1, active_or_closing: 1, held_packets: 3, hold_total: 4096 });
    t.equal(maps!.live, 2);

    shim.setState(key(42001), FlowState.ACTIVE);
    await waitFor(() => shim.counters().total.released === 3n);
    await settle();
    const [m2] = await query('/handoff/mappings');
    t.match(m2, { live: 2, pending: 0, active_or_closing: 2, held_packets: 0 }, 'ACTIVE: released, no longer pending');
    shim.insertMapping({ ...key(42002), hostId: 1, flowId: 4202, state: FlowState.PENDING });
    shim.deleteMapping(key(42000));
    const [m3] = await query('/handoff/mappings');
    t.match(m3, { live: 2, pending: 1, active_or_closing: 1 }, 'insert PENDING, delete ACTIVE');
    t.ok(m3!.awaiting_reclaim <= 1, 'the deleted entry waits for RCU at most');
    shim.deleteMapping(key(42002));
    const [m4] = await query('/handoff/mappings');
    t.match(m4, { live: 1, pending: 0, active_or_closing: 1 }, 'delete PENDING');
  });

  t.test('/handoff/accept counts a real handshake', async (t) => {
    inject(seg(43000, 5000, TCP_SYN));
    let synack: Buffer | undefined;
    await waitFor(() => { if (drain()) synack = Buffer.from(out.frame(0)); return synack; });
    t.ok(synack, 'SYN-ACK with a cookie');
    const cookie = parseFrame(synack!).tcp!.seq;
    inject(seg(43000, 5001, TCP_ACK, (cookie + 1) >>> 0));
    await waitFor(() => shim.counters().total.accepted === 1n);
    await settle();
    const [acc, w] = await query('/handoff/accept', '/handoff/workers');
    t.match(acc, { live: 1, capacity: 65536, worker0: { live: 1, capacity: 65536 }, syn_received: 1, accepted: 1,
      handoffs_frozen: 0, timeouts: 0, drop_accept_table_full: 0, drop_bad_cookie: 0 });
    t.equal(w!.worker0.accept_live, 1);
    t.ok(w!.control.exceptions_waiting >= 1, 'its event waits on the exception ring');
    shim.exceptionBurst(exc);
  });

  t.test('/handoff/hosts', async (t) => {
    shim.setHost(7, { ip: '198.18.0.77', nexthopMac: '02:00:00:00:07:07', innerMac: '02:00:00:00:07:08' });
    const [all, h1, h7, none, bad] = await query('/handoff/hosts', '/handoff/hosts,1', '/handoff/hosts,7', '/handoff/hosts,2',
      '/handoff/hosts,x');
    t.same(all, { defined: 2, ids: [1, 7] });
    t.same(h1, { id: 1, ip: HOST1.ip, port: 0, nexthop_mac: HOST1.nexthopMac, inner_mac: HOST1.innerMac });
    t.match(h7, { id: 7, ip: '198.18.0.77', inner_mac: '02:00:00:00:07:08' });
    shim.setHost(7, { ip: '198.18.0.78', nexthopMac: '02:00:00:00:07:07', innerMac: '02:00:00:00:07:09' });
    const [h7b] = await query('/handoff/hosts,7');
    t.match(h7b, { ip: '198.18.0.78', inner_mac: '02:00:00:00:07:09' }, 'a replaced host shows its new configuration');
    t.equal(none, null, 'an undefined host: null');
    t.equal(bad, null, 'a malformed parameter: null');
  });

  t.test('bad parameters answer null; clients may ask at once', async (t) => {
    const [a, b, c] = await query('/handoff/stats,1', '/handoff/stats,control2', '/handoff/drops,-1');
    t.same([a, b, c], [null, null, null], 'a worker that does not exist, junk');
    const replies = await Promise.all([1, 2, 3, 4].map(() => query('/handoff/info', '/handoff/mappings')));
    for (const [info, maps] of replies) t.match([info, maps], [{ running: 1 }, { live: 1 }]);
  });

  t.test('after hs_stop the commands stay registered but read nothing', async (t) => {
    shim.stop();
    const [info, stats, maps] = await query('/handoff/info', '/handoff/stats', '/handoff/mappings');
    t.match(info, { abi_version: ABI_VERSION, running: 0 });
    t.notOk('workers' in info!, 'no shim state read');
    t.same([stats, maps], [null, null]);
  });
}
