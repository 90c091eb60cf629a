// npm run bench:scaleout (issue 16): long checksummed downloads through three
// balancers behind a BIRD router (ECMP, L4 hash) while one balancer is
// SIGKILLed, restarted and the router rehashes. Last line:
//   scaleout_broken_flows=N scaleout_max_stall_ms=X scaleout_recovery_p50_us=Y scaleout_recovery_p99_us=Z ...
// Recovery latency is the balancer's: first stray segment of a flow to its
// mapping installed from the owner's answer. On this machine 3 balancers,
// 2 hosts, the router and the clients share 2 cores, so latencies include
// waiting for a core; a real cluster gives each its own.
import crypto from 'node:crypto';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { ClusterLab } from '../../src/controller/cluster-lab';
import { runIn } from '../../test/lib/procs';
import { sh } from '../../src/controller/netns';

const arg = (k: string, d: number) => { const i = process.argv.indexOf(`--${k}`); return i > 0 ? Number(process.argv[i + 1]) : d; };
const COUNT = arg('count', 64);
const BYTES = arg('bytes', 8_000_000);
const RATE = arg('rate', 1_000_000);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('needs root');
  const bgp = spawnSync('sh', ['-c', 'command -v bird'], { stdio: 'ignore' }).status === 0;
  const lab = new ClusterLab({ balancers: 3, keyHex: crypto.randomBytes(32).toString('hex'), bgp, tag: 'bs' });
  try {
    await lab.start();
    const ns = lab.client.ns!;
    sh('sysctl', ['-qw', 'net.ipv4.tcp_rmem=4096 65536 131072'], { ns });
    const dl = runIn(ns, process.execPath, [path.resolve(__dirname, '../../test/lib/download-client.js'),
      JSON.stringify({ host: lab.vip, count: COUNT, bytes: BYTES, rate: RATE })], { timeoutMs: 600_000 });
    const third = (BYTES / RATE) * 1000 / 4;
    await sleep(third);
    const k0 = Date.now();
    await lab.stopBalancer(1, 'SIGKILL');
    if (!bgp) lab.routeVia([0, 2]);
    const withdrawMs = bgp ? Date.now() - k0 + await lab.waitNexthops(2, 10_000) : 0;
    await sleep(third);
    await lab.startBalancer(1);
    if (bgp) await lab.waitNexthops(3, 10_000); else lab.routeVia([0, 1, 2]);
    await sleep(third);
    lab.rehash(crypto.randomInt(1, 2 ** 31));
    const r = await dl;
    const results = JSON.parse(r.stdout.toString().trim().split('\n').pop() || '{}').results as Array<{ ok: boolean; maxGapMs: number }>;
    const lat: Array<{ count: number; p50: number; p99: number }> = [];
    for (const i of [0, 1, 2]) lat.push((await lab.status(i)).stray.latencyUs);
    const withSamples = lat.filter((l) => l.count > 0);
    const recovered = withSamples.reduce((s, l) => s + l.count, 0);
    // Per balancer p50 and p99; the figure is the worst balancer's (conservative).
    const p50 = Math.max(...withSamples.map((l) => l.p50));
    const p99 = Math.max(...withSamples.map((l) => l.p99));
    const broken = results.filter((x) => !x.ok).length + (COUNT - results.length);
    const stall = Math.max(...results.map((x) => x.maxGapMs));
    console.log(`downloads ${COUNT} x ${BYTES} B at ${RATE} B/s; routing ${bgp ? 'BGP (BIRD)' : 'static ECMP'}; recovered flows ${recovered}`);
    for (const [i, l] of lat.entries()) console.log(`  lb${i + 1}: recovered ${l.count}, p50 ${Math.round(l.p50 || 0)} us, p99 ${Math.round(l.p99 || 0)} us`);
    console.log(`scaleout_broken_flows=${broken} scaleout_max_stall_ms=${stall} scaleout_recovery_p50_us=${Math.round(p50)} `
      + `scaleout_recovery_p99_us=${Math.round(p99)} scaleout_recovered_flows=${recovered} scaleout_withdraw_after_sigkill_ms=${withdrawMs}`);
  } finally {
    await lab.shutdown();
  }
}

main().catch((err) => { console.error(err); process.exitCode = 1; });
