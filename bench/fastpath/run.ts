// Fast-path benchmark: packets per second of the shim's worker (one core,
// busy-polling, every packet a mapped ACTIVE flow tunnelled to its host) next
// to two references on the same input, rounds alternating:
// - dpdk-testpmd's 5tswap forwarding: "parse a frame and rewrite its headers"
//   with no lookup, the ceiling on this machine;
// - DPDK's l3fwd example in exact-match mode with the same 1M flows as rules
//   (l3fwd.ts): the matched peer, a 1M-entry rte_hash lookup per packet.
// Then the shim again with 2 workers, the pcap's flows split over two RX
// queues as RSS would (the pcap PMD has no RSS of its own). On a 2-CPU machine
// the second worker shares CPU 0 with the control thread.
//
// Both read the same pcap through the pcap PMD with infinite_rx (it replays
// the file from mbufs forever) and transmit into the PMD's drop path. The
// PMD's per-packet cost (an mbuf allocation, a copy, a free) is in both
// numbers, which pulls the ratio towards 1: the forwarding logic alone differs
// more than the ratio says.
//
// Options (flag or environment): --flows / FASTPATH_FLOWS (default 1000000),
// --packets / FASTPATH_PACKETS (65536), --seconds / FASTPATH_SECONDS (5),
// --rounds / FASTPATH_ROUNDS (3), --mem / FASTPATH_MEM_MB (3072),
// --testpmd / FASTPATH_TESTPMD (/usr/bin/dpdk-testpmd),
// --l3fwd / FASTPATH_L3FWD (built from dpdk-doc's sources when not given),
// --workers / FASTPATH_WORKERS (2: measure the shim with 1..N workers),
// --keep-pcap / FASTPATH_KEEP_PCAP=1.
//
// The last line is `fastpath_ratio_vs_5tswap=R1 fastpath_ratio_vs_l3fwd_em=R2`
// and the per-worker rates, then the cache misses per packet from perf where
// the machine has hardware counters (`NA` where it has none). Nothing here
// asserts on timings: it fails only when a run does not work (no traffic,
// packets not hitting their mappings or rules, a process dying, a phase not
// finishing).
import { fork } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TCP_ACK, TCP_PSH, buildTcp, padFrame } from '../../src/net/packet';
import { PcapWriter } from '../../src/net/pcap';
import {
  BenchError, CLIENT_MAC, ChildConfig, ChildMessage, LB, MAX_FLOWS, VIP, WORKER_THREAD, childOf, ealArgs, flowClientIp,
  flowClientPort, ensureHugepages, prng, threadCpuSeconds,
} from './common';
import { L3fwdResult, ensureL3fwd, runL3fwd, writeL3fwdRules } from './l3fwd';
import { perfCacheMisses } from './perf';
import { describeExit, exitOf, killAll, killChildrenOnExit, live, spawnBounded, Tail } from '../lib/processes';

interface Options {
  flows: number;
  packets: number;
  seconds: number;
  rounds: number;
  memMb: number;
  hugepages: boolean;
  testpmd: string;
  l3fwd?: string;
  workers: number;
  keepPcap: boolean;
}

function intOption(name: string, env: string, def: number, min: number, max: number): number {
  const flag = process.argv.slice(2).find((a) => a.startsWith(`--${name}=`));
  const raw = flag ? flag.slice(name.length + 3) : process.env[env];
  if (raw === undefined || raw === '') return def;
  const v = Number(raw);
  if (!Number.isInteger(v) || v < min || v > max) {
    throw new BenchError(`--${name} / ${env} must be an integer ${min}..${max}, got '${raw}'`);
  }
  return v;
}

function parseOptions(): Options {
  for (const a of process.argv.slice(2)) {
    if (!/^--(flows|packets|seconds|rounds|mem|testpmd|l3fwd|workers)=.|^--keep-pcap$|^--no-hugepages$/.test(a)) {
      throw new BenchError(`unknown argument '${a}' (see the header of bench/fastpath/run.ts)`);
    }
  }
  const flag = process.argv.slice(2).find((a) => a.startsWith('--testpmd='));
  const l3fwd = process.argv.slice(2).find((a) => a.startsWith('--l3fwd='))?.slice('--l3fwd='.length) ?? process.env.FASTPATH_L3FWD;
  return {
    flows: intOption('flows', 'FASTPATH_FLOWS', 1_000_000, 64, MAX_FLOWS),
    packets: intOption('packets', 'FASTPATH_PACKETS', 65536, 1, 1 << 22),
    seconds: intOption('seconds', 'FASTPATH_SECONDS', 5, 1, 3600),
    rounds: intOption('rounds', 'FASTPATH_ROUNDS', 3, 1, 100),
    memMb: intOption('mem', 'FASTPATH_MEM_MB', 1536, 256, 1 << 20),
    // Hugepages unless refused (--no-hugepages / FASTPATH_HUGEPAGES=0) or not available.
    hugepages: !process.argv.includes('--no-hugepages') && process.env.FASTPATH_HUGEPAGES !== '0',
    testpmd: flag ? flag.slice('--testpmd='.length) : (process.env.FASTPATH_TESTPMD || '/usr/bin/dpdk-testpmd'),
    l3fwd: l3fwd || undefined,
    workers: intOption('workers', 'FASTPATH_WORKERS', 2, 1, 4),
    keepPcap: process.argv.includes('--keep-pcap') || process.env.FASTPATH_KEEP_PCAP === '1',
  };
}

// ------------------------------------------------------------------ children

killChildrenOnExit('fastpath');

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new BenchError(`${what}: no answer within ${Math.round(ms / 1000)} s`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

// ------------------------------------------------------------------ pcap

interface PcapInfo {
  file: string;
  /** The same packets split by flow over n files, one per RX queue: split[n] for n workers. */
  split: Record<number, string[]>;
  dir: string;
  packets: number;
  distinctFlows: number;
  avgFrameBytes: number;
}

/**
 * Client → VIP TCP segments of flows drawn uniformly from the whole flow set:
 * 3 in 4 carry 10..74 bytes of data (64..128-byte frames), 1 in 4 is a pure
 * ACK zero-padded to 64 bytes (the shim trims the padding before tunnelling).
 */
function generatePcap(o: Options): PcapInfo {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'handoff-fastpath-'));
  const file = path.join(dir, `clients-${o.packets}p-${o.flows}f.pcap`);
  const rnd = prng(0x48616e64);
  const u32 = () => Math.floor(rnd() * 2 ** 32);
  const seen = new Uint8Array(Math.ceil(o.flows / 8));
  const payloads = Array.from({ length: 75 }, (_, n) => Buffer.alloc(n, 0x61));
  let distinct = 0;
  let bytes = 0;
  const w = new PcapWriter(file);
  const split: Record<number, string[]> = {};
  const splitWriters: Record<number, PcapWriter[]> = {};
  for (let n = 2; n <= o.workers; n++) {
    split[n] = Array.from({ length: n }, (_, q) => path.join(dir, `clients-q${q}of${n}.pcap`));
    splitWriters[n] = split[n]!.map((f) => new PcapWriter(f));
  }
  try {
    for (let k = 0; k < o.packets; k++) {
      const f = Math.floor(rnd() * o.flows);
      if (!(seen[f >> 3]! & (1 << (f & 7)))) {
        seen[f >> 3]! |= 1 << (f & 7);
        distinct++;
      }
      const pureAck = rnd() < 0.25;
      const frame = buildTcp({
        srcMac: CLIENT_MAC, dstMac: LB.mac,
        srcIp: flowClientIp(f), dstIp: VIP.ip, ipId: k & 0xffff, dontFragment: true,
        srcPort: flowClientPort(f), dstPort: VIP.port,
        seq: u32(), ack: u32(), window: 502,
        flags: pureAck ? TCP_ACK : TCP_ACK | TCP_PSH,
        payload: pureAck ? undefined : payloads[10 + Math.floor(rnd() * 65)],
      });
      const out = padFrame(frame, 64);
      bytes += out.length;
      w.write(out);
      // RSS keeps a flow on one queue: so does the split.
      for (const ws of Object.values(splitWriters)) ws[f % ws.length]!.write(out);
    }
  } finally {
    w.close();
    for (const ws of Object.values(splitWriters)) for (const x of ws) x.close();
  }
  return { file, split, dir, packets: o.packets, distinctFlows: distinct, avgFrameBytes: bytes / o.packets };
}

/**
 * The pcap PMD copies the whole file into mbufs of the port's pool when the
 * RX queue is set up; on top of that come the RX/TX descriptors, the per-lcore
 * mempool caches and bursts in flight.
 */
function mbufsFor(packets: number, workers = 1): number {
  return packets + 8192 * workers;
}

// ------------------------------------------------------------------ handoff

interface HandoffResult {
  pps: number;
  hitRatio: number;
  elapsedS: number;
  cpuShare?: number;
  cacheMisses?: number;
  loaded: Extract<ChildMessage, { type: 'loaded' }>;
  delta: Record<string, number>;
}

async function runHandoff(o: Options, pcap: PcapInfo, workers = 1): Promise<HandoffResult> {
  const cfg: ChildConfig = {
    pcaps: workers === 1 ? [pcap.file] : pcap.split[workers]!, workers,
    flows: o.flows, seconds: o.seconds, warmupSeconds: 1, memMb: o.memMb, mbufs: mbufsFor(o.packets, workers), hugepages: o.hugepages,
  };
  const tail = new Tail();
  // silent: EAL's start-up chatter is kept for error messages, not shown.
  const child = fork(path.join(__dirname, 'shim-child.js'), [JSON.stringify(cfg)], { silent: true });
  const kill = () => { child.kill('SIGKILL'); };
  live.add(kill);
  child.stdout?.on('data', (d: Buffer) => tail.push(d));
  child.stderr?.on('data', (d: Buffer) => tail.push(d));
  const exited = exitOf(child);

  const inbox: ChildMessage[] = [];
  let wake: (() => void) | undefined;
  child.on('message', (m: ChildMessage) => { inbox.push(m); wake?.(); });
  /** The child's next message of `type`; its error report, its death or a timeout throw. */
  const next = <K extends ChildMessage['type']>(type: K, ms: number, what: string) =>
    within((async (): Promise<Extract<ChildMessage, { type: K }>> => {
      for (;;) {
        const m = inbox.shift();
        if (m?.type === 'error') throw new BenchError(`shim child failed: ${m.message}`);
        if (m?.type === type) return m as Extract<ChildMessage, { type: K }>;
        if (m) continue;
        const woke = new Promise<void>((r) => { wake = r; });
        const e = await Promise.race([woke.then(() => undefined), exited]);
        if (e && inbox.length === 0) throw new BenchError(`shim child ${describeExit(e)} during ${what}`);
      }
    })(), ms, `shim child, ${what}`);

  try {
    // EAL start, the pcap loaded into mbufs, and the bulk insert.
    const loaded = await next('loaded', 300_000 + o.flows / 100, 'start and mapping insert');
    if (loaded.inserted !== o.flows || loaded.count !== o.flows) {
      throw new BenchError(`inserted ${loaded.inserted} mappings, table holds ${loaded.count}, expected ${o.flows}`);
    }
    const res = await next('result', (o.seconds + 60) * 1000, 'measurement');
    const e = await within(exited, 30_000, 'shim child, stop').catch((err: Error) => {
      process.stderr.write(`fastpath: warning: ${err.message}; killed it\n`);
      return { code: 0, signal: null };
    });
    if (e.code !== 0) throw new BenchError(`shim child ${describeExit(e)} after measuring`);

    const rx = res.delta.rx_packets ?? 0;
    const encap = res.delta.encap_packets ?? 0;
    const problems = Object.entries(res.delta)
      .filter(([k, v]) => v > 0 && (k.startsWith('drop_') || k.startsWith('exception_') || k === 'held'))
      .map(([k, v]) => `${k}=${v}`);
    if (rx === 0) throw new BenchError(`the shim received no packets in ${res.elapsedS.toFixed(1)} s`);
    const hitRatio = encap / rx;
    // Every packet belongs to an ACTIVE mapping: anything else is a broken
    // set-up (or fast path), not a performance result.
    if (hitRatio < 0.99) {
      throw new BenchError(`only ${(hitRatio * 100).toFixed(2)}% of ${rx} received packets were tunnelled; ` +
        `nonzero drop/exception counters: ${problems.join(' ') || '(none)'}`);
    }
    if (problems.length) process.stderr.write(`fastpath: warning: handoff counters: ${problems.join(' ')}\n`);
    return {
      pps: rx / res.elapsedS, hitRatio, elapsedS: res.elapsedS, cpuShare: res.cpuShare, cacheMisses: res.cacheMisses, loaded, delta: res.delta,
    };
  } catch (err) {
    if (err instanceof BenchError) err.message += `\n  shim child output (last lines):\n${tail.text()}`;
    throw err;
  } finally {
    kill();
    live.delete(kill);
    await exited;
  }
}

// ------------------------------------------------------------------ testpmd

interface TestpmdResult {
  pps: number;
  txPps: number;
  samples: number[];
  cpuShare?: number;
}

async function runTestpmd(o: Options, pcap: PcapInfo): Promise<TestpmdResult> {
  if (!fs.existsSync(o.testpmd)) {
    throw new BenchError(`${o.testpmd} not found (Debian: apt-get install dpdk-dev; or set FASTPATH_TESTPMD)`);
  }
  const args = [
    ...ealArgs(pcap.file, o.memMb, o.hugepages), '--',
    '--forward-mode=5tswap', '--port-topology=loop', '--nb-cores=1', '--rxq=1', '--txq=1', '--stats-period=1',
    `--total-num-mbufs=${mbufsFor(o.packets)}`,
    // Flushing would spin on the endless pcap RX for a second before starting.
    '--no-flush-rx',
  ];
  // The first Rx-pps line has no previous sample (it prints 0) and the next
  // covers the first second of forwarding: both are discarded.
  const want = o.seconds + 2;
  const rx: number[] = [];
  const tx: number[] = [];
  let done: (() => void) | undefined;
  const enough = new Promise<void>((r) => { done = r; });
  // The forwarding thread's CPU time over the window the kept samples cover.
  let testpmdPid: number | undefined;
  const cpu: { t: bigint; s?: number }[] = [];
  const tail = new Tail(80, (line) => {
    const m = /^\s*(Rx|Tx)-pps:\s+(\d+)/.exec(line);
    if (!m) return;
    (m[1] === 'Rx' ? rx : tx).push(Number(m[2]));
    if (m[1] === 'Rx' && (rx.length === 2 || rx.length === want)) {
      testpmdPid ??= childOf(child.pid!);
      cpu.push({ t: process.hrtime.bigint(), s: testpmdPid ? threadCpuSeconds(testpmdPid, WORKER_THREAD) : undefined });
    }
    if (rx.length >= want && tx.length >= want) done?.();
  });
  // stdbuf makes testpmd's stdout line-buffered so the per-second stats
  // arrive as they are printed.
  const limit = o.seconds + 180;
  const { child, kill, exited } = spawnBounded(['stdbuf', '-oL', o.testpmd, ...args], limit, tail);
  const spawnError = new Promise<never>((_, reject) => child.once('error', (e) => reject(new BenchError(`cannot run testpmd: ${e.message}`))));

  try {
    const early = await within(Promise.race([enough.then(() => undefined), exited, spawnError]), limit * 1000,
      'dpdk-testpmd, forwarding');
    if (early) throw new BenchError(`dpdk-testpmd ${describeExit(early)} after ${rx.length} of ${want} stats periods`);
    process.kill(-child.pid!, 'SIGINT');
    const e = await within(exited, 30_000, 'dpdk-testpmd, exit after SIGINT').catch((err: Error) => {
      process.stderr.write(`fastpath: warning: ${err.message}; killed it\n`);
      return null;
    });
    if (e && e.code !== 0 && e.signal !== 'SIGINT' && e.code !== 130) {
      throw new BenchError(`dpdk-testpmd ${describeExit(e)} after SIGINT`);
    }
    const samples = rx.slice(2, want);
    const pps = samples.reduce((a, b) => a + b, 0) / samples.length;
    const txPps = tx.slice(2, want).reduce((a, b) => a + b, 0) / samples.length;
    if (pps === 0) throw new BenchError('dpdk-testpmd forwarded no packets');
    const [a, b] = cpu;
    const cpuShare = a?.s !== undefined && b?.s !== undefined ? (b.s - a.s) / (Number(b.t - a.t) / 1e9) : undefined;
    return { pps, txPps, samples, cpuShare };
  } catch (err) {
    if (err instanceof BenchError) err.message += `\n  dpdk-testpmd output (last lines):\n${tail.text()}`;
    throw err;
  } finally {
    kill();
    live.delete(kill);
    await exited;
  }
}

// ------------------------------------------------------------------ report

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

const mpps = (pps: number) => (pps / 1e6).toFixed(3);
const nsPerPkt = (pps: number) => (1e9 / pps).toFixed(1);

/** The forwarding thread's share of its core, flagged when something else took part of it. */
function cpuNote(share: number | undefined): string {
  if (share === undefined) return 'core share unknown';
  const pct = `${(Math.min(share, 1) * 100).toFixed(1)}%`;
  return share < 0.95 ? `WARNING: the forwarding thread had only ${pct} of its core (other load or steal): rate is low` : `core ${pct}`;
}

/** Cache misses per packet, or NA when perf cannot count them here. */
function missesPerPacket(misses: number | undefined, pps: number, seconds: number): string {
  return misses === undefined ? 'NA' : (misses / (pps * seconds)).toFixed(2);
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) process.stderr.write('fastpath: warning: not root; DPDK will probably fail\n');
  const o = parseOptions();
  if (os.cpus().length < 2) throw new BenchError('needs 2 CPUs (lcore 0 = main, lcore 1 = the forwarding core)');
  const l3fwdBin = ensureL3fwd(o.l3fwd);

  const tGen = Date.now();
  const pcap = generatePcap(o);
  console.log(`fastpath: ${pcap.packets} packets (avg ${pcap.avgFrameBytes.toFixed(1)} B/frame) to ${VIP.ip}:${VIP.port}, ` +
    `drawn from ${o.flows} flows (${pcap.distinctFlows} distinct in the pcap); ${pcap.file} in ${Date.now() - tGen} ms`);
  const removePcap = () => { fs.rmSync(pcap.dir, { recursive: true, force: true }); };
  if (!o.keepPcap) live.add(removePcap);
  const rules = writeL3fwdRules(pcap.dir, o.flows);
  if (o.hugepages && !ensureHugepages(o.memMb + 128)) {
    console.log('fastpath: hugepages unavailable (needs root); running with --no-huge (4 KiB pages: slower table lookups for every engine)');
    o.hugepages = false;
  }
  if (!o.hugepages && o.memMb < 3072) o.memMb = 3072; // 4 KiB pages: an mbuf cannot cross one, so the pool doubles
  console.log(`fastpath: ${o.hugepages ? '2 MiB hugepages' : 'no hugepages'}; l3fwd ${l3fwdBin}`);
  console.log(`fastpath: ${o.rounds} round(s) of ${o.seconds} s each, one forwarding core (lcore 1) unless said, pool ${mbufsFor(o.packets)} mbufs, -m ${o.memMb}`);
  const perf = perfCacheMisses();
  console.log(`fastpath: cache misses per packet: ${perf.ok ? 'perf stat -e cache-misses on the forwarding threads' : `not measured, ${perf.reason}`}`);

  const handoff: HandoffResult[] = [];
  const multi: Record<number, HandoffResult[]> = {};
  const l3fwd: L3fwdResult[] = [];
  const testpmd: TestpmdResult[] = [];
  const handoffLine = (r: number, label: string, h: HandoffResult) => {
    const rx = h.delta.rx_packets ?? 0;
    console.log(`round ${r}: ${label} ${mpps(h.pps)} Mpps (hit ${(h.hitRatio * 100).toFixed(3)}%, ` +
      `fast path ${((h.delta.encap_fast ?? 0) / rx * 100).toFixed(2)}%, overflow ${((h.delta.overflow_hits ?? 0) / rx * 100).toFixed(2)}%, ` +
      `${o.flows} mappings inserted in ${h.loaded.insertMs.toFixed(0)} ms; ` +
      `cache misses/packet ${missesPerPacket(h.cacheMisses, h.pps, o.seconds)}; ${cpuNote(h.cpuShare)})`);
  };
  try {
    for (let r = 1; r <= o.rounds; r++) {
      const h = await runHandoff(o, pcap);
      handoff.push(h);
      handoffLine(r, 'handoff', h);
      const e = await runL3fwd({
        bin: l3fwdBin, pcap: pcap.file, rules, memMb: o.memMb, hugepages: o.hugepages, seconds: o.seconds, packets: o.packets,
      });
      l3fwd.push(e);
      console.log(`round ${r}: l3fwd-em ${mpps(e.pps)} Mpps (rule hits ${(e.hitRatio * 100).toFixed(3)}%, ` +
        `${o.flows} rules loaded and started in ${e.loadMs} ms; cache misses/packet ${missesPerPacket(e.cacheMisses, e.pps, o.seconds)}; ` +
        `${cpuNote(e.cpuShare)})`);
      const t = await runTestpmd(o, pcap);
      testpmd.push(t);
      console.log(`round ${r}: testpmd-5tswap ${mpps(t.pps)} Mpps (tx ${mpps(t.txPps)}; per second: ` +
        `${t.samples.map(mpps).join(' ')}; ${cpuNote(t.cpuShare)})`);
      for (let n = 2; n <= o.workers; n++) {
        const m = await runHandoff(o, pcap, n);
        (multi[n] ??= []).push(m);
        handoffLine(r, `handoff ${n} workers`, m);
      }
    }
  } finally {
    if (!o.keepPcap) {
      removePcap();
      live.delete(removePcap);
    }
  }

  const hPps = median(handoff.map((h) => h.pps));
  const ePps = median(l3fwd.map((e) => e.pps));
  const tPps = median(testpmd.map((t) => t.pps));
  const insertMs = median(handoff.map((h) => h.loaded.insertMs));
  const l = handoff[0]!.loaded;
  console.log('');
  console.log(`mappings: ${l.count} (capacity ${o.flows}), bulk insert median ${insertMs.toFixed(0)} ms ` +
    `(${(l.count / insertMs / 1e3).toFixed(2)} M inserts/s)`);
  if (l.heapBytes !== undefined && l.poolBytes) {
    // The table is preallocated for the capacity, so this is per slot; the
    // remainder also holds the rings and PMD state (a few MiB).
    const rest = l.heapBytes - l.poolBytes;
    const mib = (b: number) => (b / 2 ** 20).toFixed(1);
    console.log(`memory: DPDK heap ${mib(l.heapBytes)} MiB after start = mbuf pool ${mib(l.poolBytes)} MiB ` +
      `+ ${mib(rest)} MiB table and rings: <= ${(rest / o.flows).toFixed(0)} B per mapping`);
  }
  const medianMisses = (xs: { cacheMisses?: number; pps: number }[]) =>
    xs.some((x) => x.cacheMisses === undefined) ? 'NA' : median(xs.map((x) => x.cacheMisses! / (x.pps * o.seconds))).toFixed(2);
  console.log('');
  console.log('engine                    Mpps   ns/packet   cache misses/packet');
  console.log(`handoff                 ${mpps(hPps).padStart(6)}   ${nsPerPkt(hPps).padStart(8)}   ${medianMisses(handoff)}`);
  console.log(`l3fwd-em (1M rules)     ${mpps(ePps).padStart(6)}   ${nsPerPkt(ePps).padStart(8)}   ${medianMisses(l3fwd)}`);
  console.log(`testpmd-5tswap          ${mpps(tPps).padStart(6)}   ${nsPerPkt(tPps).padStart(8)}   (no lookup)`);
  const scaling: string[] = [`fastpath_mpps_1w=${mpps(hPps)}`];
  for (let n = 2; n <= o.workers; n++) {
    const p = median(multi[n]!.map((m) => m.pps));
    console.log(`handoff, ${n} workers      ${mpps(p).padStart(6)}   ${nsPerPkt(p / n).padStart(8)}   ${medianMisses(multi[n]!)}` +
      `   (per worker ${mpps(p / n)} Mpps; worker ${n} shares CPU 0 with the control thread)`);
    scaling.push(`fastpath_mpps_${n}w=${mpps(p)}`, `fastpath_mpps_per_worker_${n}w=${mpps(p / n)}`);
  }
  console.log(`fastpath_ratio_vs_5tswap=${(hPps / tPps).toFixed(3)} fastpath_ratio_vs_l3fwd_em=${(hPps / ePps).toFixed(3)} ` +
    `${scaling.join(' ')} fastpath_cache_misses_per_pkt=${medianMisses(handoff)} l3fwd_cache_misses_per_pkt=${medianMisses(l3fwd)}`);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    killAll();
    const msg = err instanceof BenchError ? err.message : err instanceof Error ? err.stack ?? err.message : String(err);
    process.stderr.write(`fastpath: FAILED: ${msg}\n`);
    process.exit(1);
  },
);
