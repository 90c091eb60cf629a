// Handoff benchmark: how many connections per second one control thread (the
// Node thread running HandoffEngine) hands off, how long a handoff takes, and
// what waking the parked control thread costs.
//
// Synthetic clients and stand-in host agents (driver.ts) talk to the real
// shim through an in-process ring port, as in test/handoff.test.ts: SYN ->
// SYN-ACK (cookie) -> ACK + an HTTP request -> the engine classifies, inserts
// the mapping, freezes the connection, sends its blob through the shim's TX
// ring -> the host answers ACK + FINAL -> the engine turns the mapping
// ACTIVE. Fault-free: no loss is injected. The DPDK worker busy-polls
// (idleSleepUs 0) on lcore 1. A ring port cannot be shared between processes,
// so the clients and hosts run on the Node thread too and take part of its
// time: the output says how much.
//
// Each phase runs in a child process (child.ts), because EAL initialises
// once per process:
// - throughput: a closed-loop sweep over the number of connections in flight,
//   one connection at a time (unloaded latency), the saturated load for
//   --seconds through engine.run() (the headline rate), and one connection
//   at a time again through a loop calling engine.step() (never parks);
// - wake: inject one packet while the engine is parked (the shim's wake-up
//   pipe armed, Node asleep in epoll; and, raw, a thread-pool thread in
//   waitExceptions) versus spinning;
// - memory: heap and buffers per connection the engine holds.
//
// Options (flag or environment):
//   --seconds / HANDOFF_SECONDS (5)     saturated measurement window, after --warmup / HANDOFF_WARMUP (1)
//   --rounds / HANDOFF_ROUNDS (3)       saturated runs; the one with the median rate is reported
//   --window / HANDOFF_WINDOW (0)       connections in flight for the saturated run; 0: the sweep's best
//   --sweep / HANDOFF_SWEEP (1,4,16,32,64,256)
//   --samples / HANDOFF_SAMPLES (1000)  wake samples per variant
//   --pending / HANDOFF_PENDING (20000) connections held for the memory figure
//   --phases / HANDOFF_PHASES (throughput,wake,memory)
//   --mem / HANDOFF_MEM_MB (2048)       EAL -m
//   --announce / HANDOFF_ANNOUNCE (lazy) lazy: the shim reports a connection with its first bytes
//                                       (announceAfterMs, as the balancer runs it); eager: an
//                                       ACCEPTED event per handshake as well (the shim before ABI 7)
//   --profile[=FILE] / HANDOFF_PROFILE  only the saturated run, under the V8 CPU profiler; prints
//                                       self time by function and writes FILE (.cpuprofile)
//
// The last line is `handoff_rate=N handoff_p50_us=X handoff_p99_us=Y`: the
// saturated rate through engine.run() (median of the rounds), and
// engine.latency() (first DATA event at the engine -> final ACK, ACTIVE) with
// one connection in flight.
// It fails (exit 1) when a run does not work: a child dying, a handoff not
// completing or failing, a blob that does not verify, shim drops.
import { ChildProcess, fork } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  ChildConfig, ChildMessage, LoadResult, MemoryResult, PARTIAL_REQUEST, Phase, REQUEST, WakeStats,
} from './common';
import { CpuProfile, formatSummary, summarise } from './profile';
import { killAll, killChildrenOnExit, live, Tail } from '../lib/processes';

class BenchError extends Error {
  override name = 'BenchError';
}

interface Options {
  seconds: number;
  rounds: number;
  warmup: number;
  window: number;
  sweep: number[];
  samples: number;
  pending: number;
  phases: Phase[];
  memMb: number;
  announce: 'lazy' | 'eager';
  profile?: string;
}

const args = process.argv.slice(2);

function raw(name: string, env: string): string | undefined {
  const flag = args.find((a) => a.startsWith(`--${name}=`));
  return flag ? flag.slice(name.length + 3) : process.env[env] || undefined;
}

function num(name: string, env: string, def: number, min: number, max: number, int = true): number {
  const r = raw(name, env);
  if (r === undefined) return def;
  const v = Number(r);
  if (!Number.isFinite(v) || (int && !Number.isInteger(v)) || v < min || v > max) {
    throw new BenchError(`--${name} / ${env} must be ${int ? 'an integer' : 'a number'} ${min}..${max}, got '${r}'`);
  }
  return v;
}

function parseOptions(): Options {
  for (const a of args) {
    if (!/^--(seconds|rounds|warmup|window|sweep|samples|pending|phases|mem|announce)=.|^--profile(=.+)?$/.test(a)) {
      throw new BenchError(`unknown argument '${a}' (see the header of bench/handoff/run.ts)`);
    }
  }
  const sweep = (raw('sweep', 'HANDOFF_SWEEP') ?? '1,4,16,32,64,256').split(',').filter(Boolean).map(Number);
  if (sweep.some((w) => !Number.isInteger(w) || w < 1 || w > 8192)) throw new BenchError('--sweep: integers 1..8192, comma-separated');
  const phases = (raw('phases', 'HANDOFF_PHASES') ?? 'throughput,wake,memory').split(',').filter(Boolean) as Phase[];
  if (!phases.length || phases.some((p) => !['throughput', 'wake', 'memory'].includes(p))) {
    throw new BenchError('--phases: a comma-separated subset of throughput,wake,memory');
  }
  const profFlag = args.find((a) => a.startsWith('--profile'));
  const profEnv = process.env.HANDOFF_PROFILE;
  let profile: string | undefined;
  if (profFlag || profEnv) {
    const given = profFlag?.includes('=') ? profFlag.slice('--profile='.length) : profEnv && profEnv !== '1' ? profEnv : undefined;
    profile = path.resolve(given ?? `handoff-${new Date().toISOString().replace(/[:.]/g, '-')}.cpuprofile`);
  }
  const window = num('window', 'HANDOFF_WINDOW', 0, 0, 8192);
  return {
    seconds: num('seconds', 'HANDOFF_SECONDS', 5, 0.5, 600, false),
    rounds: num('rounds', 'HANDOFF_ROUNDS', 3, 1, 20),
    warmup: num('warmup', 'HANDOFF_WARMUP', 1, 0, 60, false),
    window,
    sweep: sweep.length || window ? sweep : [16],
    samples: num('samples', 'HANDOFF_SAMPLES', 1000, 10, 100_000),
    pending: num('pending', 'HANDOFF_PENDING', 20_000, 100, 60_000),
    phases: profile ? ['throughput'] : phases,
    memMb: num('mem', 'HANDOFF_MEM_MB', 2048, 512, 1 << 20),
    announce: (() => {
      const a = raw('announce', 'HANDOFF_ANNOUNCE') ?? 'lazy';
      if (a !== 'lazy' && a !== 'eager') throw new BenchError(`--announce: lazy or eager, got '${a}'`);
      return a;
    })(),
    profile,
  };
}

// ------------------------------------------------------------------ children

killChildrenOnExit('handoff');

interface Collected {
  loads: LoadResult[];
  wake?: WakeStats[];
  memory?: MemoryResult;
  verified?: number;
  refused?: number;
  infos: string[];
  problems: string[];
}

/** Fork the child for `phase`, collect what it reports until it exits. */
async function runChild(o: Options, phase: Phase, budgetS: number, into: Collected): Promise<void> {
  const cfg: ChildConfig = {
    phase, seconds: o.seconds, rounds: o.rounds, warmupSeconds: o.warmup, window: o.window, sweep: o.sweep, sweepSeconds: 1,
    lightSeconds: 2, samples: o.samples, pending: o.pending,
    profileFile: o.profile, memMb: phase === 'throughput' ? o.memMb : Math.min(o.memMb, 1024),
    announceAfterMs: o.announce === 'lazy' ? 3000 : 0,
  };
  const tail = new Tail();
  // Inherit execArgv, so `node --cpu-prof dist/bench/handoff/run.js` profiles the children too.
  const execArgv = phase === 'memory' ? [...process.execArgv, '--expose-gc'] : process.execArgv;
  const child: ChildProcess = fork(path.join(__dirname, 'child.js'), [JSON.stringify(cfg)], { silent: true, execArgv });
  const kill = () => { child.kill('SIGKILL'); };
  live.add(kill);
  child.stdout?.on('data', (d: Buffer) => tail.push(d));
  child.stderr?.on('data', (d: Buffer) => tail.push(d));
  let error: string | undefined;
  let done = false;
  child.on('message', (m: ChildMessage) => {
    switch (m.type) {
      case 'load': into.loads.push(m.result); progress(m.result); break;
      case 'wake': into.wake = m.result; break;
      case 'memory': into.memory = m.result; break;
      case 'verify': into.verified = m.verified; into.refused = m.refused; break;
      case 'info': into.infos.push(m.text); break;
      case 'done': done = true; into.problems.push(...m.problems); break;
      case 'error': error = m.message; break;
    }
  });
  try {
    const exit = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
      const timer = setTimeout(() => reject(new BenchError(`${phase} child: no result within ${budgetS} s`)), budgetS * 1000);
      child.once('error', (e) => reject(new BenchError(`cannot start the ${phase} child: ${e.message}`)));
      child.once('exit', (code, signal) => { clearTimeout(timer); resolve({ code, signal }); });
    });
    if (error) {
      const hint = /ENOMEM|no mbufs|mapping entries|memory/i.test(error) ? ' (EAL memory: raise --mem / HANDOFF_MEM_MB)' : '';
      throw new BenchError(`${phase} child failed${hint}: ${error}`);
    }
    if (exit.code !== 0 || !done) {
      throw new BenchError(`${phase} child ${exit.signal ? `was killed by ${exit.signal}` : `exited with code ${exit.code}`}` +
        `${done ? '' : ' before finishing'}`);
    }
  } catch (err) {
    if (err instanceof BenchError) err.message += `\n  ${phase} child output (last lines):\n${tail.text() || '    | (none)'}`;
    throw err;
  } finally {
    kill();
    live.delete(kill);
  }
}

// ------------------------------------------------------------------ report

const f0 = (x: number) => (Number.isFinite(x) ? x.toFixed(0) : '-');
const f1 = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : '-');
const pct = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? '-' : `${(x * 100).toFixed(0)}%`);

function progress(r: LoadResult): void {
  process.stderr.write(`handoff: ${r.label} ${r.loop}() ${r.window} in flight: ${f0(r.rate)}/s\n`);
}

/** Node-thread CPU time per handoff, us: what the rate would be on a core of its own, inverted. */
const cpuPerHandoff = (r: LoadResult) => (r.nodeCpu !== undefined && r.rate ? (r.nodeCpu / r.rate) * 1e6 : NaN);

function loadRow(r: LoadResult): string {
  return [
    `${r.label} ${r.loop}()`.padEnd(17), String(r.window).padStart(5), f0(r.rate).padStart(8),
    `${f0(r.engine.p50)}/${f0(r.engine.p99)}`.padStart(15), `${f0(r.e2e.p50)}/${f0(r.e2e.p99)}`.padStart(15),
    `${pct(r.share.engine)}/${pct(r.share.driver)}/${pct(r.share.other)}`.padStart(13),
    pct(r.nodeCpu).padStart(5), pct(r.nodeWait).padStart(5), pct(r.workerCpu).padStart(6),
    f1(r.eventsPerHandoff).padStart(5), f1(r.waitsPerHandoff).padStart(6), String(r.retransmitted).padStart(6),
    f0(cpuPerHandoff(r)).padStart(7),
  ].join(' ');
}

function report(o: Options, c: Collected): { rate: number; p50: number; p99: number } | undefined {
  // The saturated round with the median rate: other load on the machine hits single rounds.
  const rounds = c.loads.filter((r) => r.label === 'saturated' && r.loop === 'run').sort((a, b) => a.rate - b.rate);
  const sat = rounds[(rounds.length - 1) >> 1];
  const light = c.loads.find((r) => r.label === 'light' && r.loop === 'run');
  const lightStep = c.loads.find((r) => r.label === 'light' && r.loop === 'step');
  console.log('');
  if (c.loads.length) {
    console.log('Closed-loop load through the real shim (ring port), fault-free. Latencies in us:');
    console.log('  engine = engine.latency(): first DATA event at the engine -> host FINAL processed, ACTIVE set;');
    console.log('  e2e    = driver clock: first data segment injected into the ring port -> setState(ACTIVE) returned.');
    console.log('  time   = share of the Node thread\'s wall time in engine.step() / the stand-in clients+hosts / the rest');
    console.log('           (event loop, thread-pool completions, promises). The stand-ins run on the same thread as');
    console.log('           the engine (a ring port lives in one process): their share is taken from the engine.');
    console.log('  cpu/wait = Node thread on a CPU / runnable but waiting for one (other load); worker = DPDK lcore 1.');
    console.log('  ev/h = exception events per handoff (without retransmissions: ACCEPTED with DATA, ACK, FINAL; with --announce=eager 4)');
    console.log('  wait/h = parks per handoff (armed the wake-up pipe, back to the event loop); retx = blob datagrams sent again;');
    console.log('  cpu/h = Node-thread CPU us per handoff (1e6 / cpu/h = the rate with a core to itself).');
    console.log('');
    console.log('run               inflight handoffs/s  engine p50/p99     e2e p50/p99  time e/d/o   cpu  wait worker  ev/h wait/h   retx   cpu/h');
    for (const r of c.loads) console.log(loadRow(r));
    console.log('');
  }
  if (sat) {
    const perHandoff = (share: number) => (sat.rate ? (share / sat.rate) * 1e6 : NaN);
    const of = rounds.length > 1 ? ` (median of ${rounds.length} rounds: ${rounds.map((r) => f0(r.rate)).join(', ')}/s)` : '';
    console.log(`saturated, engine.run(), ${sat.window} in flight, ${sat.elapsedS.toFixed(1)} s${of}: ${sat.completed} handoffs, ` +
      `${f0(sat.rate)}/s = ${f1(1e6 / sat.rate)} us of Node thread per handoff ` +
      `(${f1(perHandoff(sat.share.engine))} in engine.step(), ${f1(perHandoff(sat.share.driver))} in the stand-ins, ` +
      `${f1(perHandoff(sat.share.other))} elsewhere)`);
    if (sat.nodeCpu) {
      console.log(`  Node-thread CPU per handoff ${f1(cpuPerHandoff(sat))} us: ${f0(1e6 / cpuPerHandoff(sat))}/s with a core to itself`);
    }
    console.log(`  per second: ${sat.perSecond.join(' ')}; ${sat.retransmitted} blob datagrams retransmitted ` +
      `(${f1(sat.eventsPerHandoff)} events per handoff)`);
    if (sat.nodeWait !== undefined && sat.nodeWait > 0.05) {
      console.log(`WARNING: the Node thread waited for a CPU ${pct(sat.nodeWait)} of the time, the DPDK worker had ` +
        `${pct(sat.workerCpu)} of its core, and this process's other threads (GC, compiler, thread pool) used ` +
        `${pct(sat.otherThreadsCpu)} of a core: on 2 CPUs the rest is other load on the machine. The rate is low by about the wait.`);
    }
  }
  if (light) {
    console.log(`one connection at a time (unloaded), engine.run(): engine p50 ${f0(light.engine.p50)} us, p99 ${f0(light.engine.p99)} us; ` +
      `e2e p50 ${f0(light.e2e.p50)} us; SYN -> ACTIVE p50 ${f0(light.fromSyn.p50)} us; ` +
      `${f1(light.waitsPerHandoff)} parks per handoff`);
    if (lightStep) {
      console.log(`  the same through a step() loop (never parks): engine p50 ${f0(lightStep.engine.p50)} us, ` +
        `p99 ${f0(lightStep.engine.p99)} us; e2e p50 ${f0(lightStep.e2e.p50)} us`);
    }
    console.log('  (the driver spins, so the Node thread never sleeps in epoll here: an idle balancer adds the wake cost below)');
  }
  if (c.verified !== undefined) console.log(`blobs decoded in full by the stand-in hosts (HMAC, fields, request bytes): ${c.verified} ok, ${c.refused} refused`);
  if (c.wake) {
    console.log('');
    console.log(`Wake cost of the exception path (${c.wake[0]?.samples} samples each, us):`);
    console.log('variant                                                        p50      p90      p99      min');
    for (const w of c.wake) {
      console.log(`${w.label.padEnd(60)} ${f1(w.p50).padStart(7)}  ${f1(w.p90).padStart(7)}  ${f1(w.p99).padStart(7)}  ${f1(w.min).padStart(7)}`);
    }
    const [rp, rb, ep, eb] = c.wake;
    if (rp && rb) console.log(`wake overhead (parked - spinning), p50: raw ${f1(rp.p50 - rb.p50)} us, through the engine ${ep && eb ? f1(ep.p50 - eb.p50) : '-'} us`);
  }
  if (c.memory) {
    const m = c.memory;
    console.log('');
    console.log(`Memory per pending connection (${m.pending} accepted, ${PARTIAL_REQUEST.length} of the ` +
      `${REQUEST.length} request bytes in, waiting for the rest): ` +
      `JS heap ${f0(m.heapPerConn)} B + buffers ${f0(m.externalPerConn)} B (RSS delta ${f0(m.rssPerConn)} B); ` +
      'the shim\'s accept table is preallocated (acceptCapacity)');
  }
  for (const i of c.infos) console.log(`note: ${i}`);
  if (o.profile && fs.existsSync(o.profile)) {
    console.log('');
    const s = summarise(JSON.parse(fs.readFileSync(o.profile, 'utf8')) as CpuProfile, 30);
    console.log(formatSummary(s));
    if (sat) console.log(`(${sat.completed} handoffs in the profiled window: 1% of the samples = ${f1(s.totalMs * 10 / sat.completed)} us per handoff)`);
    console.log(`profile written to ${o.profile}`);
  }
  if (!sat || !light) return undefined;
  return { rate: sat.rate, p50: light.engine.p50, p99: light.engine.p99 };
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) process.stderr.write('handoff: warning: not root; DPDK will probably fail\n');
  const o = parseOptions();
  if (os.cpus().length < 2) throw new BenchError('needs 2 CPUs (lcore 0 = the Node/control thread, lcore 1 = the DPDK worker)');
  const c: Collected = { loads: [], infos: [], problems: [] };
  console.log(`handoff: control-thread benchmark; phases ${o.phases.join(', ')}; saturated window ` +
    `${o.window || `best of ${o.sweep.join('/')}`} in flight, ${o.warmup} s warm-up + ${o.seconds} s` +
    `${o.profile ? '; CPU profile of the saturated window' : ''}`);
  for (const phase of o.phases) {
    const budget = phase === 'throughput'
      ? 60 + o.sweep.length * 5 + (o.warmup + o.seconds + 4) * o.rounds + 15
      : phase === 'wake' ? 60 + o.samples * 0.02 : 90;
    await runChild(o, phase, budget, c);
  }
  const r = report(o, c);

  const failures = c.problems.filter((p) => !p.includes('info:'));
  for (const r of c.loads) {
    if (r.completed === 0) failures.push(`${r.label} ${r.loop}(), ${r.window} in flight: no handoff completed`);
  }
  if (c.refused) failures.push(`${c.refused} blob(s) failed verification at the stand-in host`);
  if (c.verified === 0) failures.push('no blob was verified');
  if (failures.length) throw new BenchError(`the run did not work:\n  ${failures.join('\n  ')}`);
  if (o.profile) console.log('(no handoff_rate line: --profile runs the saturated window only, under the profiler)');
  else if (r) {
    console.log('');
    console.log('handoff_rate: the saturated run through engine.run() (median round); handoff_p50/p99_us: engine.latency() ' +
      'with one connection in flight.');
    console.log(`handoff_rate=${Math.round(r.rate)} handoff_p50_us=${f1(r.p50)} handoff_p99_us=${f1(r.p99)}`);
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    killAll();
    const msg = err instanceof BenchError ? err.message : err instanceof Error ? err.stack ?? err.message : String(err);
    process.stderr.write(`handoff: FAILED: ${msg}\n`);
    process.exit(1);
  },
);
