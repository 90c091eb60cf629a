// npm run bench:scaleout (issue 16): long checksummed downloads through three
// balancers behind a BIRD router (ECMP, L4 hash) while one balancer is
// SIGKILLed, restarted and the router rehashes. Last line:
//   scaleout_broken_flows=N scaleout_max_stall_ms=X scaleout_recovery_p50_us=Y scaleout_recovery_p99_us=Z ...
// Recovery latency is the balancer's: first stray segment of a flow to its
// mapping installed from the owner's answer. A second phase measures
// handoffs/s (wrk, 1 KB answers with `Connection: close`: one handoff per
// request) with the VIP routed over 1, 2 and 3 balancers (static ECMP), and
// the balancers' control-thread CPU per handoff (/proc/PID/task/PID/stat). On this machine 3 balancers,
// 2 hosts, the router and the clients share 2 cores, so latencies include
// waiting for a core; a real cluster gives each its own.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { ClusterLab } from '../../src/controller/cluster-lab';
import { runIn } from '../../test/lib/procs';
import { sh } from '../../src/controller/netns';
import { taskSeconds, threadSeconds } from '../e2e-vs-haproxy/measure';
import { runWrk } from '../e2e-vs-haproxy/wrk';

const arg = (k: string, d: number) => { const i = process.argv.indexOf(`--${k}`); return i > 0 ? Number(process.argv[i + 1]) : d; };
const COUNT = arg('count', 64);
const BYTES = arg('bytes', 8_000_000);
const RATE = arg('rate', 1_000_000);
const RATE_SECONDS = arg('rate-seconds', 5);
const SKIP_DOWNLOADS = process.argv.includes('--rate-only');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface RateResult {
  balancers: number; rps: number; errors: number; ctlUsPerHandoff: number; hostUsPerHandoff: number; busy: number[];
  /** host1's CPU per handoff by thread name, µs. */
  hostThreads: Record<string, number>;
}

/** Handoffs/s through the first 1, 2, 3 balancers of a lab without BGP (static ECMP routes). */
async function handoffRates(): Promise<RateResult[]> {
  const lab = new ClusterLab({ balancers: 3, keyHex: crypto.randomBytes(32).toString('hex'), bgp: false, tag: 'br' });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'handoff-scaleout-'));
  const out: RateResult[] = [];
  try {
    await lab.start();
    const ns = lab.client.ns!;
    const url = `http://${lab.vip}/`;
    const wrk = (seconds: number) => runWrk({ ns, url, seconds, connections: 16, threads: 2, headers: ['Connection: close'], dir });
    for (const n of [1, 2, 3]) {
      lab.routeVia([0, 1, 2].slice(0, n));
      await wrk(1); // warm-up: JIT, ARP, the route
      const lbs = [0, 1, 2].map((i) => lab.pid(`lb${i + 1}`)!);
      const hosts = [0, 1].map((i) => lab.pid(`host${i + 1}`)!);
      const ctl0 = lbs.map((p) => taskSeconds(p));
      const threads0 = threadSeconds(hosts[0]);
      const host0 = hosts.map((p) => [...threadSeconds(p).values()].reduce((a, b) => a + b, 0));
      const r = await wrk(RATE_SECONDS);
      const ctl = lbs.map((p, i) => taskSeconds(p) - ctl0[i]);
      const host = hosts.map((p, i) => [...threadSeconds(p).values()].reduce((a, b) => a + b, 0) - host0[i]);
      const hostThreads: Record<string, number> = {};
      for (const [k, v] of threadSeconds(hosts[0])) hostThreads[k] = Math.round(((v - (threads0.get(k) ?? 0)) / r.requests) * 1e6);
      const e = r.errors;
      out.push({
        balancers: n, rps: r.rps, errors: e.connect + e.read + e.write + e.status + e.timeout,
        ctlUsPerHandoff: (ctl.reduce((a, b) => a + b, 0) / r.requests) * 1e6,
        hostUsPerHandoff: (host.reduce((a, b) => a + b, 0) / r.requests) * 1e6,
        busy: ctl.map((c) => c / RATE_SECONDS), hostThreads,
      });
    }
  } finally {
    await lab.shutdown();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return out;
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('needs root');
  const rates = await handoffRates();
  for (const r of rates) {
    console.log(`  ${r.balancers} balancer(s): ${Math.round(r.rps)} handoffs/s, ${r.errors} errors; control threads ${Math.round(r.ctlUsPerHandoff)} us CPU `
      + `per handoff (busy ${r.busy.map((b) => `${Math.round(b * 100)}%`).join(' ')}), hosts ${Math.round(r.hostUsPerHandoff)} us `
      + `(host1 by thread, us per handoff: ${JSON.stringify(r.hostThreads)})`);
  }
  const rateLine = rates.map((r) => `scaleout_handoffs_per_s_${r.balancers}=${Math.round(r.rps)}`).join(' ')
    + ` scaleout_handoffs_3_vs_1=${(rates[2].rps / rates[0].rps).toFixed(2)}`
    + ` scaleout_ctl_cpu_us_per_handoff=${Math.round(rates[2].ctlUsPerHandoff)}`;
  if (SKIP_DOWNLOADS) return void console.log(rateLine);
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
      + `scaleout_recovery_p99_us=${Math.round(p99)} scaleout_recovered_flows=${recovered} scaleout_withdraw_after_sigkill_ms=${withdrawMs} ${rateLine}`);
  } finally {
    await lab.shutdown();
  }
}

main().catch((err) => { console.error(err); process.exitCode = 1; });
