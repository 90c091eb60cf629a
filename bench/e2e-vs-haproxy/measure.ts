// What the bench reads from the kernel around each measured window: CPU time
// of processes (all their threads), bytes on an interface, machine-wide CPU.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';

const TICK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** utime+stime of a /proc stat line, in seconds (the comm field may hold spaces: split after ')'). */
function statSeconds(text: string): number {
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // After ')': state is field 3, so utime (14) and stime (15) are at 11 and 12.
  return (Number(f[11]) + Number(f[12])) / TICK;
}

/** CPU seconds a process used so far, every thread included (0 once it is gone). */
export function cpuSeconds(pid: number): number {
  try {
    return statSeconds(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return 0;
  }
}

/**
 * CPU seconds of one thread (/proc/PID/task/TID/stat); 0 once it is gone.
 * A process's main thread has TID = PID: for `handoff lb` that is the Node
 * thread running the control loop (the DPDK worker is an lcore thread).
 */
export function taskSeconds(pid: number, tid = pid): number {
  try {
    return statSeconds(fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8'));
  } catch {
    return 0;
  }
}

/** CPU seconds per thread name (threads of one name summed): where a process's time goes. */
export function threadSeconds(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  let tids: string[] = [];
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const text = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const comm = text.slice(text.indexOf('(') + 1, text.lastIndexOf(')'));
      out.set(comm, (out.get(comm) ?? 0) + statSeconds(text));
    } catch { /* thread ended */ }
  }
  return out;
}

/** rx+tx bytes counted on a network interface of this namespace. */
export function ifaceBytes(dev: string): number {
  const read = (k: string) => Number(fs.readFileSync(`/sys/class/net/${dev}/statistics/${k}`, 'utf8'));
  return read('rx_bytes') + read('tx_bytes');
}

export interface MachineCpu {
  busy: number;
  total: number;
}

/** Machine-wide CPU ticks (all cores) from /proc/stat; busy excludes idle and iowait. */
export function machineCpu(): MachineCpu {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
  return { busy: total - f[3] - f[4], total };
}

/** Share of all cores busy between two readings (0..1). */
export function busyShare(a: MachineCpu, b: MachineCpu): number {
  return b.total > a.total ? (b.busy - a.busy) / (b.total - a.total) : 0;
}

/** Per-thread CPU of several processes, by thread name (the same names summed across them). */
export function threadSecondsOf(pids: number[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const pid of pids) for (const [k, v] of threadSeconds(pid)) out.set(k, (out.get(k) ?? 0) + v);
  return out;
}

/** Per-thread CPU used between two readings, largest first. */
export function threadDelta(a: Map<string, number>, b: Map<string, number>): Record<string, number> {
  const out: Array<[string, number]> = [];
  for (const [k, v] of b) {
    const d = v - (a.get(k) ?? 0);
    if (d > 0.005) out.push([k, Math.round(d * 100) / 100]);
  }
  return Object.fromEntries(out.sort((x, y) => y[1] - x[1]));
}
