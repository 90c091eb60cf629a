// End-to-end benchmark (npm run bench:e2e): Handoff against HAProxy 2.6 on
// design.md §6's topology, with the same hosts' servers and the same client.
//
// Columns, all running at once, each with its own address:
//   direct   wrk straight to the app on one host, no balancer: the ceiling of client and servers here;
//   handoff  `handoff lb` with configs/demo.yaml (DPDK on net_af_packet) in namespace lb, as the demo runs it;
//   haproxy  /usr/sbin/haproxy in namespace hap with the same routing rules translated (haproxy.ts),
//            keep-alive and connection reuse to the servers.
// Every column reaches the same one server (host2's app; see ROUTE in setup.ts).
// Rows (cases): GET /bytes/N for 1 KB, 100 KB, 1 MB over keep-alive connections,
// and 1 KB with `Connection: close` (a new connection, so one handoff, per request),
// with --connections and with one connection at a time (a moderate handoff rate).
// Per case: a warm-up per column, then --rounds rounds in which the columns take
// turns for --seconds each, so load from elsewhere on a shared machine falls on
// all of them alike. Per cell: requests/s (all rounds' requests over their time),
// p50/p99 latency (wrk's, median over rounds), bytes that crossed the balancer
// (rx+tx on its veth at the bridge, counted the same way for both), balancer CPU
// seconds (/proc/PID/stat utime+stime, all threads), and, to explain them, the
// hosts' and wrk's CPU, the balancer's CPU by thread and the machine's busy share.
// CPU is read per thread from /proc/PID/task/TID/stat over each measured window
// (CPU per request holds on a shared machine where requests/s does not): the
// balancer's control thread (its main thread) apart from its DPDK worker, the
// hosts' processes (agent and app in one process) by thread, wrk.
//
// Both balancers get 2 cores (CPUs 0-1), the whole of a 2-core machine:
// Handoff's EAL lcores 0,1 (control thread on CPU 0, one worker on CPU 1, as
// in configs/demo.yaml); HAProxy nbthread 2, cpu-map to CPUs 0 and 1 (--cpus).
//
// Options: --seconds 3 --rounds 3 --warmup 1 --connections 16 --threads 1 (wrk)
//          --modes direct,handoff,haproxy --cases 1k,100k,1m,1k-close,1k-close-c1
//          --cpus 0,1 (HAProxy threads; Handoff's lcores come from configs/demo.yaml)
//          --out bench/results
//          --profile DIR (V8 CPU profiles of `handoff lb` and the hosts' node into DIR;
//                         summarise with node dist/bench/handoff/profile.js FILE)
// Writes e2e-vs-haproxy.{json,md,svg} to --out. Last line:
//   e2e_rps_ratio_1mb=R e2e_lb_bytes_ratio_1mb=B e2e_rps_vs_direct_1mb=D e2e_close_vs_direct_1kb=K
//   close_vs_haproxy_1kb=H lb_ctl_cpu_us_per_conn=C host_extra_cpu_us_per_conn=X
//   haproxy_cpu_us_per_conn=P lb_ctl_cpu_us_per_conn_c1=C1
// (R, B, H: Handoff over HAProxy, B per request; D, K: Handoff over direct; C:
// the balancer's control thread per handoff in the 1 KB close cell, C1 the
// same one connection at a time; X: the hosts' CPU per connection through
// Handoff minus through direct, same app; P: HAProxy's CPU per connection).
// Exit 1 when a cell had errors (the line is still printed) or the run failed.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fetchStatus } from '../../src/controller/control';
import { killAll, killChildrenOnExit, live } from '../lib/processes';
import { busyShare, cpuSeconds, ifaceBytes, machineCpu, taskSeconds, threadDelta, threadSeconds, threadSecondsOf } from './measure';
import { fmtBytes, renderMarkdown, summaryLine, type Cell, type Results } from './report';
import { renderSvg } from './plot';
import { BenchWorld, HAPROXY_VIP, PLAIN_PORT, ROUTE, VIP, type Running } from './setup';
import { runWrk, type WrkResult } from './wrk';

class BenchError extends Error {
  readonly code = 'ERR_BENCH';
  override name = 'BenchError';
}

export const CASES = {
  '1k': { label: '1 KB keep-alive', bytes: 1024, close: false },
  '100k': { label: '100 KB keep-alive', bytes: 100 * 1024, close: false },
  '1m': { label: '1 MB keep-alive', bytes: 1024 * 1024, close: false },
  '1k-close': { label: '1 KB Connection: close', bytes: 1024, close: true },
  // One connection at a time: handoffs at a moderate rate, where a control loop that spins costs the most per handoff.
  '1k-close-c1': { label: '1 KB Connection: close, 1 connection', bytes: 1024, close: true, connections: 1 },
} as const satisfies Record<string, { label: string; bytes: number; close: boolean; connections?: number }>;
export type CaseId = keyof typeof CASES;
export const MODES = ['direct', 'handoff', 'haproxy'] as const;
export type Mode = (typeof MODES)[number];

interface Options {
  seconds: number;
  warmup: number;
  connections: number;
  threads: number;
  modes: Mode[];
  cases: CaseId[];
  cpus: number[];
  rounds: number;
  out: string;
  /** Directory for V8 CPU profiles of the balancer's and hosts' node (--cpu-prof), written as they stop. */
  profile?: string;
}

function parseOptions(): Options {
  const { values } = parseArgs({
    options: {
      seconds: { type: 'string', default: '3' }, warmup: { type: 'string', default: '1' }, rounds: { type: 'string', default: '3' },
      connections: { type: 'string', default: '16' }, threads: { type: 'string', default: '1' },
      modes: { type: 'string', default: MODES.join(',') }, cases: { type: 'string', default: Object.keys(CASES).join(',') },
      cpus: { type: 'string', default: '0,1' }, out: { type: 'string', default: 'bench/results' }, profile: { type: 'string' },
    },
  });
  const num = (k: 'seconds' | 'warmup' | 'connections' | 'threads' | 'rounds', min: number, max: number) => {
    const v = Number(values[k]);
    if (!Number.isFinite(v) || v < min || v > max) throw new BenchError(`--${k} must be ${min}..${max}, got '${values[k]}'`);
    return v;
  };
  const list = <T extends string>(k: 'modes' | 'cases', allowed: readonly string[]) => {
    const l = values[k]!.split(',').filter(Boolean);
    const bad = l.filter((x) => !allowed.includes(x));
    if (!l.length || bad.length) throw new BenchError(`--${k}: a comma-separated subset of ${allowed.join(',')} (got '${values[k]}')`);
    return l as T[];
  };
  const cpus = values.cpus!.split(',').map(Number);
  if (cpus.some((c) => !Number.isInteger(c) || c < 0 || c >= os.cpus().length)) throw new BenchError(`--cpus: CPU numbers below ${os.cpus().length}`);
  return {
    seconds: num('seconds', 1, 600), warmup: num('warmup', 0, 60), connections: Math.round(num('connections', 1, 10000)),
    threads: Math.round(num('threads', 1, 64)), modes: list<Mode>('modes', MODES), cases: list<CaseId>('cases', Object.keys(CASES)),
    cpus, rounds: Math.round(num('rounds', 1, 100)), out: path.resolve(values.out!),
    profile: values.profile ? path.resolve(values.profile) : undefined,
  };
}

const say = (s: string) => process.stdout.write(`${s}\n`);
const loadavg = () => os.loadavg().map((x) => Math.round(x * 100) / 100);

/** One wrk window of one column, with what the bench reads around it. */
interface Sample {
  wrk: WrkResult;
  lbBytes: number;
  lbCpu: number;
  lbThreads: Record<string, number>;
  /** Handoff: the balancer's main (Node, control-loop) thread alone. */
  lbCtlCpu: number;
  hostsCpu: number;
  /** The hosts' processes (agent and apps) by thread name. */
  hostThreads: Record<string, number>;
  /** CPU the other balancer used meanwhile (idle cost). */
  otherLbCpu: number;
  machineBusy: number;
  load: number;
  handoffs?: { completed: number; failed: number };
  /** Handoff: what its shim counters and engine stats counted in the window (non-zero changes). */
  counters: Record<string, number>;
}

interface Balancers {
  handoff?: Running & { socket: string; lcores: string };
  haproxy?: Running;
}

function url(world: BenchWorld, mode: Mode, bytes: number): string {
  const host = mode === 'direct' ? `${world.hosts[ROUTE.hostIndex].ip}:${PLAIN_PORT}` : mode === 'handoff' ? VIP : HAPROXY_VIP;
  return `http://${host}/bytes/${bytes}`;
}

function wrkOptions(world: BenchWorld, o: Options, mode: Mode, id: CaseId, dir: string) {
  const c = CASES[id];
  const headers = [`Host: ${ROUTE.hostHeader}`, ...(c.close ? ['Connection: close'] : [])];
  const connections = 'connections' in c ? c.connections : o.connections;
  return { ns: world.client.ns, url: url(world, mode, c.bytes), connections, threads: Math.min(o.threads, connections), headers, dir };
}

async function sample(world: BenchWorld, o: Options, mode: Mode, id: CaseId, lbs: Balancers, dir: string): Promise<Sample> {
  const lb = mode === 'direct' ? undefined : lbs[mode];
  const other = mode === 'handoff' ? lbs.haproxy : mode === 'haproxy' ? lbs.handoff : undefined;
  const status = async () => (mode === 'handoff' ? flatCounters(await fetchStatus<Record<string, any>>(lbs.handoff!.socket)) : {});
  const e0 = await status();
  const hostCpu0 = world.hostProcs.map((h) => cpuSeconds(h.pid));
  const lbCpu0 = lb ? cpuSeconds(lb.pid) : 0;
  const otherCpu0 = other ? cpuSeconds(other.pid) : 0;
  const threads0 = lb ? threadSeconds(lb.pid) : new Map<string, number>();
  const ctl0 = lb ? taskSeconds(lb.pid) : 0;
  const hostPids = world.hostProcs.map((h) => h.pid);
  const hostThreads0 = threadSecondsOf(hostPids);
  const wire = mode === 'direct' ? undefined : world.wire[mode];
  const bytes0 = wire ? ifaceBytes(wire) : 0;
  const m0 = machineCpu();
  const load = os.loadavg()[0];
  const wrk = await runWrk({ ...wrkOptions(world, o, mode, id, dir), seconds: o.seconds });
  const m1 = machineCpu();
  const e1 = await status();
  return {
    wrk, load, machineBusy: busyShare(m0, m1),
    lbBytes: wire ? ifaceBytes(wire) - bytes0 : 0,
    lbCpu: lb ? cpuSeconds(lb.pid) - lbCpu0 : 0,
    lbThreads: lb ? threadDelta(threads0, threadSeconds(lb.pid)) : {},
    lbCtlCpu: lb ? taskSeconds(lb.pid) - ctl0 : 0,
    hostThreads: threadDelta(hostThreads0, threadSecondsOf(hostPids)),
    otherLbCpu: other ? cpuSeconds(other.pid) - otherCpu0 : 0,
    hostsCpu: world.hostProcs.reduce((sum, h, i) => sum + cpuSeconds(h.pid) - hostCpu0[i], 0),
    handoffs: mode === 'handoff'
      ? { completed: (e1.handoffsCompleted ?? 0) - (e0.handoffsCompleted ?? 0), failed: (e1.handoffsFailed ?? 0) - (e0.handoffsFailed ?? 0) }
      : undefined,
    counters: Object.fromEntries(Object.entries(e1).map(([k, v]) => [k, v - (e0[k] ?? 0)]).filter(([, v]) => v !== 0)),
  };
}

/** The balancer's shim counters and engine stats as one flat map of numbers. */
function flatCounters(st: Record<string, any>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const src of [st.counters ?? {}, st.engine ?? {}]) {
    for (const [k, v] of Object.entries(src)) if (typeof v === 'number') out[k] = v;
  }
  return out;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** Rounds of one column and case into one cell: sums for counts, CPU and bytes; medians of the rounds' percentiles. */
function aggregate(mode: Mode, id: CaseId, ss: Sample[]): Cell {
  const c = CASES[id];
  const sum = (f: (x: Sample) => number) => ss.reduce((a, x) => a + f(x), 0);
  const requests = sum((x) => x.wrk.requests);
  const seconds = sum((x) => x.wrk.durationUs / 1e6);
  const lbCpu = sum((x) => x.lbCpu);
  const lbBytes = sum((x) => x.lbBytes);
  const threads: Record<string, number> = {};
  for (const x of ss) for (const [k, v] of Object.entries(x.lbThreads)) threads[k] = Math.round(((threads[k] ?? 0) + v) * 100) / 100;
  const hostThreads: Record<string, number> = {};
  for (const x of ss) for (const [k, v] of Object.entries(x.hostThreads)) hostThreads[k] = Math.round(((hostThreads[k] ?? 0) + v) * 100) / 100;
  const lbCtl = sum((x) => x.lbCtlCpu);
  const perRequest = (s: number) => (s * 1e6) / Math.max(1, requests);
  const errorsBy: Record<string, number> = {};
  for (const x of ss) for (const [k, v] of Object.entries(x.wrk.errors)) errorsBy[k] = (errorsBy[k] ?? 0) + v;
  const hasLb = mode !== 'direct';
  const counters: Record<string, number> = {};
  for (const x of ss) for (const [k, v] of Object.entries(x.counters)) counters[k] = (counters[k] ?? 0) + v;
  return {
    mode, case: id, label: c.label, responseBytes: c.bytes, connectionClose: c.close,
    rps: requests / seconds, roundsRps: ss.map((x) => Math.round(x.wrk.rps)), requests, seconds,
    latencyUs: {
      p50: median(ss.map((x) => x.wrk.latencyUs.p50)), p90: median(ss.map((x) => x.wrk.latencyUs.p90)),
      p99: median(ss.map((x) => x.wrk.latencyUs.p99)), max: Math.max(...ss.map((x) => x.wrk.latencyUs.max)),
    },
    errors: Object.values(errorsBy).reduce((a, b) => a + b, 0), errorsBy, clientBytes: sum((x) => x.wrk.bytes),
    lbBytes: hasLb ? lbBytes : null, lbBytesPerRequest: hasLb ? lbBytes / Math.max(1, requests) : null,
    lbCpuSeconds: hasLb ? lbCpu : null, lbCpuUsPerRequest: hasLb ? perRequest(lbCpu) : null, lbThreads: threads,
    lbCtlCpuSeconds: mode === 'handoff' ? lbCtl : null, lbCtlCpuUsPerRequest: mode === 'handoff' ? perRequest(lbCtl) : null,
    hostsCpuUsPerRequest: perRequest(sum((x) => x.hostsCpu)), hostThreads,
    wrkCpuUsPerRequest: perRequest(sum((x) => x.wrk.cpuSeconds)),
    otherLbCpuSeconds: sum((x) => x.otherLbCpu),
    hostsCpuSeconds: sum((x) => x.hostsCpu), wrkCpuSeconds: sum((x) => x.wrk.cpuSeconds),
    machineBusy: sum((x) => x.machineBusy * x.wrk.durationUs) / sum((x) => x.wrk.durationUs), loadavg1: median(ss.map((x) => x.load)),
    handoffs: mode === 'handoff'
      ? { completed: sum((x) => x.handoffs?.completed ?? 0), failed: sum((x) => x.handoffs?.failed ?? 0) } : undefined,
    lbCounters: mode === 'handoff' ? counters : undefined,
  };
}

function describe(cell: Cell): string {
  return `${Math.round(cell.rps).toString().padStart(6)} req/s [${cell.roundsRps.join(' ')}]  p50 ${(cell.latencyUs.p50 / 1000).toFixed(2)} ms  ` +
    `p99 ${(cell.latencyUs.p99 / 1000).toFixed(2)} ms` +
    (cell.lbBytesPerRequest !== null ? `  lb ${fmtBytes(cell.lbBytesPerRequest)}/req` : '') +
    (cell.lbCpuUsPerRequest !== null ? `  lb cpu ${Math.round(cell.lbCpuUsPerRequest)} us/req` : '') +
    (cell.lbCtlCpuUsPerRequest !== null ? ` (control thread ${Math.round(cell.lbCtlCpuUsPerRequest)})` : '') +
    `  hosts cpu ${Math.round(cell.hostsCpuUsPerRequest)} us/req` +
    (cell.errors ? `  ERRORS ${JSON.stringify(cell.errorsBy)}` : '') + `  (load ${cell.loadavg1.toFixed(1)})`;
}

async function main(): Promise<void> {
  const o = parseOptions();
  if (process.getuid?.() !== 0) throw new BenchError('needs root (network namespaces, DPDK, TCP_REPAIR); run: sudo npm run bench:e2e');
  for (const [cmd, why] of [['wrk', 'the client'], ['/usr/sbin/haproxy', 'the reference balancer'], ['taskset', 'pinning']] as const) {
    if (!o.modes.includes('haproxy') && cmd !== 'wrk') continue;
    if (spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status !== 0) {
      throw new BenchError(`${cmd} (${why}) is missing: run npm run setup (scripts/setup.sh installs it)`);
    }
  }
  killChildrenOnExit('bench:e2e');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'handoff-bench-e2e-'));
  live.add(() => fs.rmSync(dir, { recursive: true, force: true }));
  const started = new Date();
  const load0 = loadavg();
  say(`bench:e2e: ${o.modes.join(', ')} x ${o.cases.join(', ')}; wrk -t${o.threads} -c${o.connections}; per case ${o.warmup} s warm-up per column, ` +
    `then ${o.rounds} rounds of ${o.seconds} s per column, columns alternating; ${os.cpus().length} CPUs, load ${load0.join(' ')}`);
  const world = new BenchWorld(dir, o.profile ? ['--cpu-prof', `--cpu-prof-dir=${o.profile}`] : []);
  live.add(() => world.topo.destroy());
  const samples = new Map<string, Sample[]>();
  const lbs: Balancers = {};
  let pinning = '';
  let haproxyVersion = '';
  try {
    world.checkRoute();
    await world.startHosts();
    if (o.modes.includes('handoff')) {
      lbs.handoff = await world.startHandoff();
      pinning += `handoff: EAL lcores ${lbs.handoff.lcores} (control thread and ${lbs.handoff.lcores.split(',').length - 1} worker, ` +
        'each pinned to its CPU by EAL; configs/demo.yaml). ';
    }
    if (o.modes.includes('haproxy')) {
      const threads = o.cpus.length;
      lbs.haproxy = await world.startHaproxy(threads, o.cpus);
      haproxyVersion = spawnSync('/usr/sbin/haproxy', ['-v'], { encoding: 'utf8' }).stdout.split('\n')[0];
      pinning += `haproxy: nbthread ${threads}, threads pinned to CPUs ${o.cpus.join(',')} (cpu-map, taskset). `;
    }
    say(`bench:e2e: topology up (namespaces cli, lb, hap, host1, host2 on one bridge); ` +
      `${[lbs.handoff && `handoff lb pid ${lbs.handoff.pid}`, lbs.haproxy && `haproxy pid ${lbs.haproxy.pid}`].filter(Boolean).join(', ')}`);
    let n = 0;
    const total = o.cases.length * o.modes.length * o.rounds;
    for (const id of o.cases) {
      say(`  ${CASES[id].label}: warm-up`);
      for (const mode of o.modes) if (o.warmup > 0) await runWrk({ ...wrkOptions(world, o, mode, id, dir), seconds: o.warmup });
      for (let round = 0; round < o.rounds; round++) {
        for (const mode of o.modes) {
          const x = await sample(world, o, mode, id, lbs, dir);
          n++;
          const k = `${mode}/${id}`;
          samples.set(k, [...(samples.get(k) ?? []), x]);
          say(`  [${String(n).padStart(2)}/${total}] ${CASES[id].label}, round ${round + 1}: ${mode.padEnd(7)} ${Math.round(x.wrk.rps).toString().padStart(6)} req/s` +
            (Object.values(x.wrk.errors).some(Boolean) ? `  errors ${JSON.stringify(x.wrk.errors)}` : ''));
          for (const r of [lbs.handoff, lbs.haproxy]) {
            if (r && r.child.exitCode !== null) throw new BenchError(`${r.name} exited during the run:\n${r.tail.text()}`);
          }
        }
      }
      for (const mode of o.modes) say(`    ${mode.padEnd(7)} ${describe(aggregate(mode, id, samples.get(`${mode}/${id}`)!))}`);
    }
  } finally {
    for (const r of [lbs.handoff, lbs.haproxy]) if (r) await world.stop(r);
    await world.destroy();
  }
  const cells = o.cases.flatMap((id) => o.modes.map((mode) => aggregate(mode, id, samples.get(`${mode}/${id}`)!)));
  // What each balancer burns while the others are measured (Handoff's worker wakes every idleSleepUs).
  const idle: Record<string, number> = {};
  for (const m of ['handoff', 'haproxy'] as const) {
    const others = cells.filter((c) => c.mode !== m && c.mode !== 'direct' && o.modes.includes(m));
    const secs = others.reduce((a, c) => a + c.seconds, 0);
    if (secs) idle[m] = others.reduce((a, c) => a + c.otherLbCpuSeconds, 0) / secs;
  }
  const results: Results = {
    bench: 'e2e-vs-haproxy', started: started.toISOString(), finished: new Date().toISOString(),
    machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model ?? '', kernel: os.release(), loadavgStart: load0, loadavgEnd: loadavg() },
    options: { ...o, out: path.relative(process.cwd(), o.out) || '.' },
    client: `wrk -t${o.threads} -c${o.connections}, ${o.rounds} rounds of ${o.seconds} s per cell, columns alternating (after ${o.warmup} s warm-up each), ` +
      `in its own namespace; GET /bytes/N with Host: ${ROUTE.hostHeader}, so every column reaches ${ROUTE.hostName}'s app alone ` +
      '(directly, or by the demo\'s host2-name rule)',
    pinning: pinning.trim(), haproxyVersion, idleLbCpuShare: idle, cells,
  };
  fs.mkdirSync(o.out, { recursive: true });
  const base = path.join(o.out, 'e2e-vs-haproxy');
  fs.writeFileSync(`${base}.json`, `${JSON.stringify(results, null, 2)}\n`);
  fs.writeFileSync(`${base}.md`, renderMarkdown(results));
  fs.writeFileSync(`${base}.svg`, await renderSvg(results));
  say('');
  say(renderMarkdown(results, { brief: true }));
  say(`results: ${path.relative(process.cwd(), base)}.{json,md,svg}`);
  // A short body would count as a request in wrk but not have carried the bytes.
  const bad = cells.filter((c) => c.errors > 0 || c.requests === 0 || (c.handoffs && c.handoffs.failed > 0) ||
    c.clientBytes < c.requests * c.responseBytes);
  const line = summaryLine(results);
  if (bad.length) {
    say(`bench:e2e: cells with errors: ${bad.map((c) => `${c.mode}/${c.case} (${JSON.stringify(c.errorsBy)}` +
      `${c.handoffs?.failed ? `, ${c.handoffs.failed} failed handoffs` : ''}` +
      `${c.clientBytes < c.requests * c.responseBytes ? `, ${c.clientBytes} bytes read for ${c.requests} responses` : ''})`).join(', ')}`);
  }
  if (line) say(line);
  if (bad.length) process.exitCode = 1;
}

if (require.main === module) main().then(() => { killAll(); process.exit(process.exitCode ?? 0); }, (err: unknown) => {
  process.stderr.write(`bench:e2e: ${err instanceof Error ? err.message : String(err)}\n`);
  killAll();
  process.exit(1);
});
