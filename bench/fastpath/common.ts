// Shared by the benchmark driver (run.ts) and the shim child (shim-child.ts):
// the flow set, the addresses and the EAL arguments must be identical on both
// sides, so they are defined once here.
import fs from 'node:fs';

/**
 * RFC 2544 benchmarking range, as in test/lib/topology.ts. The MAC is the one
 * the pcap PMD gives its first device (it cannot be changed); the shim child
 * checks it.
 */
export const LB = { ip: '198.18.0.1', mac: '02:70:63:61:70:00' };
export const VIP = { ip: '198.18.0.100', port: 80 };
export const HOST = { id: 1, ip: '198.18.0.11', nexthopMac: '02:00:00:00:01:11', innerMac: '02:00:00:00:0b:11' };
export const CLIENT_MAC = '02:00:00:00:00:aa';
export const PCAP_DEVICE = 'net_pcap0';

/** The flow index space is mapped bijectively onto 10.0.0.0/8, so at most 2^24 flows. */
export const MAX_FLOWS = 1 << 24;

/**
 * Client address (host byte order) of flow i: one distinct address per flow,
 * scattered over 10.0.0.0/8. Multiplying by an odd constant is a bijection
 * modulo 2^24, so flows never collide.
 */
export function flowClientIp(i: number): number {
  return (0x0a000000 | (Math.imul(i, 0x9e3779b1) & 0xffffff)) >>> 0;
}

/** Client port of flow i: an ephemeral-looking port, decorrelated from the address. */
export function flowClientPort(i: number): number {
  return 1024 + ((Math.imul(i ^ 0x5bd1e995, 0x85ebca6b) >>> 0) % 64512);
}

/** VNI of flow i: 24 bits, never 0. */
export function flowId(i: number): number {
  return (i % 0xffffff) + 1;
}

/** Small deterministic PRNG (mulberry32): the same pcap every run. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * EAL arguments for both the shim and dpdk-testpmd: the same pcap vdev (no
 * tx_pcap, so the PMD frees what is transmitted), no hugepages, no shared
 * config, lcore 0 = main thread, lcore 1 = the single forwarding core.
 */
export function ealArgs(pcapPaths: string | string[], memMb: number, hugepages = false, opts: EalOptions = {}): string[] {
  const files = typeof pcapPaths === 'string' ? [pcapPaths] : pcapPaths;
  for (const f of files) {
    if (/[,=\s]/.test(f)) throw new Error(`pcap path '${f}' must not contain ',', '=' or spaces (vdev devargs syntax)`);
  }
  const workers = opts.workers ?? 1;
  return [
    // One RX queue per rx_pcap (the PMD has no RSS: the driver splits the
    // flows between the files instead); as many TX queues, which drop.
    '--vdev', `${PCAP_DEVICE},${files.map((f) => `rx_pcap=${f}`).join(',')},infinite_rx=1`,
    ...(opts.extraVdevs ?? []).flatMap((v) => ['--vdev', v]),
    ...(hugepages ? ['--in-memory'] : ['--no-huge', '--no-shconf']),
    '-m', String(memMb), '--no-pci',
    // Worker lcores 1..N: lcore 1 on CPU 1, any further one on CPU 0, which
    // it shares with the main (control) thread on this 2-CPU machine.
    ...(opts.lcores ? ['-l', opts.lcores] : workers === 1 ? ['-l', '0,1'] : ['--lcores', ['0@0', '1@1', ...Array.from({ length: workers - 1 }, (_, k) => `${k + 2}@0`)].join(',')]),
    ...(opts.telemetry ? ['--file-prefix', opts.filePrefix ?? `handoff-fastpath-${process.pid}`] : ['--no-telemetry']),
  ];
}

export interface EalOptions {
  /** Forwarding lcores (default 1). */
  workers?: number;
  /** EAL's -l instead (overrides workers). */
  lcores?: string;
  /** More --vdev arguments (l3fwd's null TX port). */
  extraVdevs?: string[];
  /** Keep EAL's telemetry socket (default off); it lives in /var/run/dpdk/<filePrefix>/. */
  telemetry?: boolean;
  filePrefix?: string;
}

/** A benchmark set-up that did not work: reported as a failure, never as a figure. */
export class BenchError extends Error {
  override name = 'BenchError';
}

/** The pid of a child of `ppid` (timeout(1)'s only child is the DPDK process), from /proc. */
export function childOf(ppid: number): number | undefined {
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === ppid) return Number(d);
    } catch { /* exited meanwhile */ }
  }
  return undefined;
}

/**
 * Make `needMb` of 2 MiB hugepages available (root: reserve them and mount
 * hugetlbfs if needed). Both engines then run with the same memory; with 4 KiB
 * pages a million random mapping lookups are dominated by TLB misses.
 * @returns whether hugepages can be used.
 */
export function ensureHugepages(needMb: number): boolean {
  const fs = require('node:fs') as typeof import('node:fs');
  const { execFileSync } = require('node:child_process') as typeof import('node:child_process');
  try {
    const pages = Math.ceil(needMb / 2);
    const cur = Number(fs.readFileSync('/proc/sys/vm/nr_hugepages', 'utf8'));
    if (cur < pages) fs.writeFileSync('/proc/sys/vm/nr_hugepages', String(pages));
    const free = Number(/HugePages_Free:\s+(\d+)/.exec(fs.readFileSync('/proc/meminfo', 'utf8'))?.[1] ?? 0);
    if (free < pages) return false;
    if (!/ hugetlbfs /.test(fs.readFileSync('/proc/mounts', 'utf8'))) {
      fs.mkdirSync('/dev/hugepages', { recursive: true });
      execFileSync('mount', ['-t', 'hugetlbfs', 'nodev', '/dev/hugepages']);
    }
    return true;
  } catch {
    return false;
  }
}

/** The name DPDK 22.11 gives the thread of worker lcore 1, in the shim and in testpmd. */
export const WORKER_THREAD = 'rte-worker-1';
/** USER_HZ: /proc's unit of CPU time on every Linux architecture that matters here. */
const CLK_TCK = 100;

/**
 * CPU time in seconds used so far by the thread named `comm` of process
 * `pid`, or undefined when there is none. Over a measurement window, a busy-
 * polling forwarding thread should get all of its core: less means other load
 * on that core or time stolen by the hypervisor, and a lower packet rate.
 */
export function threadCpuSeconds(pid: number, comm: string): number | undefined {
  try {
    for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
      if (fs.readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim() !== comm) continue;
      const stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      // Fields after "(comm) ": state is field 3, utime 14, stime 15.
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      return (Number(f[11]) + Number(f[12])) / CLK_TCK;
    }
  } catch { /* the process or thread is gone */ }
  return undefined;
}

/** Parameters the driver hands the shim child (JSON in argv[2]). */
export interface ChildConfig {
  /** One pcap per worker (its RX queue). */
  pcaps: string[];
  workers: number;
  flows: number;
  seconds: number;
  warmupSeconds: number;
  memMb: number;
  mbufs: number;
  hugepages: boolean;
}

/** Messages the shim child sends back over the IPC channel. */
export type ChildMessage =
  | {
    type: 'loaded'; inserted: number; count: number; insertMs: number;
    /** DPDK heap in use after start, and the mbuf pool's share of it (undefined: not measurable). */
    heapBytes?: number; poolBytes?: number;
  }
  | {
    type: 'result'; elapsedS: number; delta: Record<string, number>;
    /** CPU time of the worker thread over the window / elapsedS (undefined: thread not found). */
    cpuShare?: number;
    /** Hardware cache misses of the worker threads over the window (undefined: perf cannot count here). */
    cacheMisses?: number;
  }
  | { type: 'error'; message: string };
