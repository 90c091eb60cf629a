// Shared plumbing of the hardening tests (test/hardening-*.test.ts): child
// processes in namespaces without blocking the event loop (the balancer's
// engine runs in the test process), host agents (host-proc.js) with their
// events and counters, and what the tests measure: a process's resident
// memory and a namespace's kernel TCP counters.
import fs from 'node:fs';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import type { HostAgentStats } from '../../src/host';
import { crc32c } from '../../src/transfer';
import { waitFor } from './harness';
import type { NsHost, Topology } from './netns';
import type { HostProcConfig } from './host-proc';

export const HOST_PROC = path.resolve(__dirname, 'host-proc.js');

export interface RunResult { code: number | null; signal: NodeJS.Signals | null; stdout: Buffer; stderr: string }

/**
 * Run a command in a namespace without blocking the event loop. `stopAfterMs`
 * sends SIGINT then (a second later) SIGKILL: for tools that run until told.
 */
export function runIn(ns: string, cmd: string, args: string[],
  o: { input?: string; timeoutMs?: number; stopAfterMs?: number; env?: Record<string, string> } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const envArgs = Object.entries(o.env ?? {}).map(([k, v]) => `${k}=${v}`);
    const child = spawn('ip', ['netns', 'exec', ns, 'env', ...envArgs, cmd, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => { err += d; });
    const timers = [setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 60_000)];
    if (o.stopAfterMs !== undefined) {
      timers.push(setTimeout(() => child.kill('SIGINT'), o.stopAfterMs));
      timers.push(setTimeout(() => child.kill('SIGKILL'), o.stopAfterMs + 1000));
    }
    child.on('error', reject);
    child.on('close', (code, signal) => {
      for (const x of timers) clearTimeout(x);
      resolve({ code, signal, stdout: Buffer.concat(out), stderr: err });
    });
    child.stdin.end(o.input ?? '');
  });
}

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

export type Ev = Record<string, any>;

/** A host-proc.js child: its JSON events and its agent's counters. */
export class HostProc {
  readonly events: Ev[] = [];
  text = '';
  private partial = '';

  constructor(readonly child: ChildProcess, readonly name: string) {
    child.stdout!.on('data', (d: Buffer) => {
      this.partial += d;
      let i;
      while ((i = this.partial.indexOf('\n')) >= 0) {
        const line = this.partial.slice(0, i);
        this.partial = this.partial.slice(i + 1);
        try { this.events.push(JSON.parse(line) as Ev); } catch { this.text += `${line}\n`; }
      }
    });
    child.stderr!.on('data', (d: Buffer) => { this.text += d; });
  }

  static start(topo: Topology, h: NsHost, keyHex: string, cfg: HostProcConfig): HostProc {
    return new HostProc(topo.spawn(h.ns, 'env', [`HANDOFF_CLUSTER_KEY=${keyHex}`, process.execPath, HOST_PROC, JSON.stringify(cfg)]),
      cfg.name);
  }

  find(pred: (e: Ev) => boolean): Ev | undefined {
    return this.events.find(pred);
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
  async stats(): Promise<HostAgentStats> {
    if (this.exited) throw new Error(`${this.name} has exited: ${this.text.slice(0, 500)}`);
    const n = this.filter((e) => e.ev === 'stats').length;
    this.child.kill('SIGUSR2');
    await waitFor(() => this.filter((e) => e.ev === 'stats').length > n, 10000, 10);
    const last = this.filter((e) => e.ev === 'stats').at(-1);
    if (!last) throw new Error(`${this.name} printed no stats: ${this.text.slice(0, 500)}`);
    return last.stats as HostAgentStats;
  }

  /** Resident memory of the agent process, bytes. */
  rss(): number {
    return rssOf(this.child.pid!);
  }

  get exited(): boolean {
    return this.child.exitCode !== null || this.child.signalCode !== null;
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
export async function waitForAsync<T>(fn: () => Promise<T>, ms = 5000, stepMs = 50): Promise<T> {
  const end = Date.now() + ms;
  let v = await fn();
  while (!v && Date.now() < end) {
    await new Promise((r) => setTimeout(r, stepMs));
    v = await fn();
  }
  return v;
}
