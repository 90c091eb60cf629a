import fs from 'node:fs';

// Shared by the handoff benchmark's driver (run.ts) and its DPDK children
// (child.ts): addresses, the routing, the request the clients send, the EAL
// arguments and the messages a child reports. Defined once so both sides agree.

/** RFC 2544 benchmarking range, as in test/lib/topology.ts. */
export const LB = { ip: '198.18.0.2', mac: '02:00:00:00:00:01' };
export const VIP = { ip: '198.18.0.100', port: 80 };
export const CLIENT_MAC = '02:00:00:00:00:aa';
/** Blob datagrams leave the balancer from this UDP port (the engine's default). */
export const BLOB_PORT = 4790;
export const CLUSTER_KEY = Buffer.from('handoff-bench-cluster-key-32byte');

export const HOSTS = ['h1', 'h2', 'h3', 'h4'].map((name, i) => ({
  name, id: i + 1, ip: `198.18.0.${11 + i}`, nexthopMac: `02:00:00:00:01:${(0x11 + i).toString(16)}`,
  innerMac: `02:00:00:00:0b:${(0x11 + i).toString(16)}`, agentPort: 4791,
}));

/** One rule on the Host header, a Maglev pool of all hosts, and a default: a small, typical configuration. */
export const ROUTING = {
  pools: [{ name: 'api', hosts: HOSTS.map((h) => ({ host: h.name })) }],
  rules: [
    { name: 'static', match: { pathPrefix: '/static/' }, pool: 'api' },
    { name: 'api-host', match: { host: 'api.example' }, pool: 'api' },
  ],
  defaults: [{ vip: VIP.ip, port: VIP.port, pool: 'api' }],
};

/** What every client sends: a curl-like HTTP/1.1 request head (one segment, one blob fragment). */
export const REQUEST = Buffer.from(
  'GET /v1/items?page=2 HTTP/1.1\r\nHost: api.example\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n');
/** The same, cut short: the engine keeps the connection while it waits for the rest (memory phase). */
export const PARTIAL_REQUEST = REQUEST.subarray(0, 40);

/**
 * Clients: one address per 16384 connections in 10.0.0.0/8, ports 1024..17407,
 * so a connection's index is its 4-tuple and back, with no map.
 */
export const CLIENT_NET = 0x0a000000;
export const PORTS_PER_IP = 16384;
export const PORT_BASE = 1024;

/** EAL: no hugepages, no shared config, no PCI; lcore 0 = this (Node) thread, lcore 1 = the one worker. */
export function ealArgs(memMb: number): string[] {
  return ['--no-huge', '-m', String(memMb), '--no-shconf', '--no-pci', '-l', '0,1', '--log-level', 'lib.eal:error',
    '--no-telemetry'];
}

/**
 * Scheduler accounting of a thread of process `pid` (the one named `comm`, or
 * without it the main thread, tid = pid), from /proc/.../schedstat: seconds
 * on a CPU, and seconds runnable but waiting for one (other load on its core).
 * undefined when not found.
 */
export function threadSched(pid: number, comm?: string): { runS: number; waitS: number } | undefined {
  try {
    const tids = comm === undefined ? [String(pid)] : fs.readdirSync(`/proc/${pid}/task`);
    for (const tid of tids) {
      if (comm !== undefined && fs.readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim() !== comm) continue;
      const [run, wait] = fs.readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').trim().split(' ').map(Number);
      return { runS: run / 1e9, waitS: wait / 1e9 };
    }
  } catch { /* gone, or no schedstats in this kernel */ }
  return undefined;
}

/** CPU seconds of every thread of this process so far (schedstat), or undefined. */
export function processSched(): number | undefined {
  try {
    let sum = 0;
    for (const tid of fs.readdirSync('/proc/self/task')) {
      sum += Number(fs.readFileSync(`/proc/self/task/${tid}/schedstat`, 'utf8').split(' ')[0]) / 1e9;
    }
    return sum;
  } catch {
    return undefined;
  }
}

// ------------------------------------------------------------------ messages

export type Phase = 'throughput' | 'wake' | 'memory';

export interface ChildConfig {
  phase: Phase;
  /** Measurement window of the saturated run, seconds. */
  seconds: number;
  /** Saturated runs (the driver reports the median). */
  rounds: number;
  warmupSeconds: number;
  /**
   * Connections the clients keep in flight (SYN sent, mapping not yet ACTIVE)
   * in the saturated run; 0: the sweep's best.
   */
  window: number;
  /** Windows of the short load sweep (empty: no sweep). */
  sweep: number[];
  sweepSeconds: number;
  /** One connection in flight at a time, for the unloaded latency (through run(), then a step() loop). */
  lightSeconds: number;
  /** Wake phase: samples per variant. */
  samples: number;
  /** Memory phase: pending connections to open. */
  pending: number;
  /** Profile the saturated window with the V8 CPU profiler, write the .cpuprofile here, and skip the rest. */
  profileFile?: string;
  memMb: number;
  /** The shim's announceAfterMs: 0 reports each handshake as an event of its own. */
  announceAfterMs: number;
}

/** Latency percentiles in microseconds. */
export interface Pcts { count: number; p50: number; p90: number; p99: number; max: number }

/** One closed-loop load point (a fixed number of connections in flight). */
export interface LoadResult {
  label: string;
  /** The engine's own loop (run()) or a tight loop calling step(). */
  loop: 'run' | 'step';
  window: number;
  elapsedS: number;
  /** Handoffs completed in each whole second of the window. */
  perSecond: number[];
  completed: number;
  rate: number;
  /** engine.latency(): first DATA event at the engine -> host's FINAL processed, ACTIVE set. */
  engine: Pcts;
  /** Driver clock: first data segment injected into the ring port -> setState(ACTIVE) returned. */
  e2e: Pcts;
  /** Driver clock: SYN injected -> setState(ACTIVE) returned (handshake included). */
  fromSyn: Pcts;
  /** Shares of wall time on the Node thread. */
  share: { engine: number; driver: number; other: number };
  /** CPU time of the Node thread / wall time (1 = never idle). */
  nodeCpu?: number;
  /** Time the Node thread was runnable but another thread had its core / wall time. */
  nodeWait?: number;
  /** CPU time of the DPDK worker thread / wall time (busy-polling: should be 1). */
  workerCpu?: number;
  /** CPU of this process's other threads (V8 GC and compiler, libuv pool) / wall time. */
  otherThreadsCpu?: number;
  /** Blob fragments the engine sent again (an answer came later than its RTO). */
  retransmitted: number;
  /** Parks (armExceptions, the engine went back to the event loop to wait) per completed handoff. */
  waitsPerHandoff: number;
  /** Exception events the engine took per handoff. */
  eventsPerHandoff: number;
  lost: number;
}

export interface WakeStats { label: string; samples: number; p50: number; p90: number; p99: number; min: number }

export interface MemoryResult {
  pending: number;
  heapPerConn: number;
  externalPerConn: number;
  rssPerConn: number;
}

export type ChildMessage =
  | { type: 'load'; result: LoadResult }
  | { type: 'wake'; result: WakeStats[] }
  | { type: 'memory'; result: MemoryResult }
  | { type: 'info'; text: string }
  | { type: 'verify'; verified: number; refused: number }
  | { type: 'done'; problems: string[] }
  | { type: 'error'; message: string };
