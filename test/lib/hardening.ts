// Shared plumbing of the hardening tests (test/hardening-*.test.ts): child
// processes in namespaces without blocking the event loop (the balancer's
// engine runs in the test process), host agents (host-proc.js) with their
// events and counters, and what the tests measure: a process's resident
// memory and a namespace's kernel TCP counters.
import fs from 'node:fs';
import path from 'node:path';
import type { HostAgentStats } from '../../src/host';
import type { PerRequestStats } from '../../src/host/per-request';
import { crc32c } from '../../src/transfer';
import { waitFor } from './harness';
import { LoggedProc, runIn, type LogLine } from './procs';
import type { NsHost, Topology } from './netns';
import type { HostProcConfig } from './host-proc';

export const HOST_PROC = path.resolve(__dirname, 'host-proc.js');

export { runIn, waitForAsync } from './procs';
export type { RunResult } from './procs';

/** Run a Node helper in a namespace with `arg` as JSON on its stdin; it prints one JSON line last. */
export async function runNodeIn<T>(ns: string, script: string, arg: unknown, o: { timeoutMs?: number; env?: Record<string, string> } = {}):
Promise<T> {
  const r = await runIn(ns, process.execPath, [script], { ...o, input: JSON.stringify(arg) });
  const last = r.stdout.toString().trim().split('\n').at(-1) ?? '';
  try {
    return JSON.parse(last) as T;
  } catch {
    throw new Error(`${path.basename(script)} exited ${r.code ?? r.signal}: ${r.stdout.toString().slice(0, 500)} ${r.stderr.slice(0, 2000)}`);
  }
}

export type Ev = LogLine;

/** A host-proc.js child: its JSON events and its agent's counters. */
export class HostProc extends LoggedProc {
  get events(): Ev[] {
    return this.lines;
  }

  static start(topo: Topology, h: NsHost, keyHex: string, cfg: HostProcConfig): HostProc {
    return new HostProc(topo.spawn(h.ns, 'env', [`HANDOFF_CLUSTER_KEY=${keyHex}`, process.execPath, HOST_PROC, JSON.stringify(cfg)]),
      cfg.name);
  }

  filter(pred: (e: Ev) => boolean): Ev[] {
    return this.events.filter(pred);
  }

  async ready(ms = 15000): Promise<Ev | undefined> {
    return waitFor(() => this.find((e) => e.ev === 'ready') ?? (this.exited ? { ev: 'exited' } : undefined), ms, 20);
  }

  get mac(): string {
    return (this.find((e) => e.ev === 'ready')?.mac as string) || '00:00:00:00:00:00';
  }

  /** The agent's counters (tunnel counters read from the kernel), asked for with SIGUSR2. */
  async stats(): Promise<HostAgentStats & { perRequest?: PerRequestStats }> {
    if (this.exited) throw new Error(`${this.name} has exited: ${this.text.slice(0, 500)}`);
    const n = this.filter((e) => e.ev === 'stats').length;
    this.child.kill('SIGUSR2');
    await waitFor(() => this.filter((e) => e.ev === 'stats').length > n, 10000, 10);
    const last = this.filter((e) => e.ev === 'stats').at(-1);
    if (!last) throw new Error(`${this.name} printed no stats: ${this.text.slice(0, 500)}`);
    return last.stats as HostAgentStats & { perRequest?: PerRequestStats };
  }

  /** Resident memory of the agent process, bytes. */
  rss(): number {
    return rssOf(this.child.pid!);
  }
}

/** VmRSS of a process, bytes (`ip netns exec` and `env` exec, so a spawned child's pid is the program's). */
export function rssOf(pid: number | 'self'): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

export const mb = (bytes: number) => `${(bytes / 1048576).toFixed(1)} MB`;

/** The kernel's TCP counters in a namespace (/proc/net/snmp "Tcp:" and netstat "TcpExt:"). */
export async function tcpCounters(ns: string): Promise<Record<string, number>> {
  const r = await runIn(ns, 'cat', ['/proc/net/snmp', '/proc/net/netstat']);
  const lines = r.stdout.toString().split('\n');
  const out: Record<string, number> = {};
  for (let i = 0; i + 1 < lines.length; i++) {
    const [k, ...names] = lines[i].trim().split(/\s+/);
    const [k2, ...vals] = lines[i + 1].trim().split(/\s+/);
    if ((k !== 'Tcp:' && k !== 'TcpExt:') || k2 !== k || vals.some((v) => !/^-?\d+$/.test(v))) continue;
    names.forEach((n, j) => { out[(k === 'TcpExt:' ? 'TcpExt' : 'Tcp') + n] = Number(vals[j]); });
    i++;
  }
  return out;
}

/** Recompute a blob-transfer datagram's CRC32C after editing its fields (bytes 8..11, computed over zeros). */
export function reseal(d: Buffer): Buffer {
  d.writeUInt32BE(0, 8);
  d.writeUInt32BE(crc32c(d) >>> 0, 8);
  return d;
}

/** Poll an async condition until truthy or `ms` elapse; returns the last value. */
