// CPU time of processes by thread, from /proc/PID/task/TID/stat (utime +
// stime): snapshot every task of a set of processes with its name, diff two
// snapshots. The kernel counts in clock ticks (getconf CLK_TCK, usually 100:
// 10 ms granularity), so a figure is only as good as the interval is long;
// measure whole windows and sum them rather than dividing short ones.
//
// A thread that ends between two snapshots takes its time out of the task
// list, but not out of the process's own counters (/proc/PID/stat keeps the
// time of threads that exited): diffSnapshots() reports that remainder as
// `exitedUs`.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';

/** Clock ticks per second of utime/stime (getconf CLK_TCK; 100 when it cannot be asked). */
export const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** Microseconds in `ticks` clock ticks. */
export const ticksToUs = (ticks: number): number => (ticks * 1e6) / CLK_TCK;

export interface StatFields {
  /** The name between the parentheses (may itself hold spaces and parentheses). */
  comm: string;
  /** utime + stime, in clock ticks. */
  ticks: number;
  /** CPU it last ran on. */
  processor: number;
}

/** Fields of one /proc stat line. @throws Error when the line is not one. */
export function parseStat(text: string): StatFields {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) throw new Error(`not a /proc stat line: '${text.slice(0, 80)}'`);
  // After ')': state is field 3, so utime (14), stime (15) and processor (39) are at 11, 12 and 36.
  const f = text.slice(close + 2).trim().split(' ');
  const utime = Number(f[11]);
  const stime = Number(f[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) throw new Error(`no utime/stime in '${text.slice(0, 80)}'`);
  return { comm: text.slice(open + 1, close), ticks: utime + stime, processor: Number(f[36]) };
}

export interface TaskStat extends StatFields {
  tid: number;
}

export interface ProcSnapshot {
  pid: number;
  /** The process's own utime+stime (its live threads and those that ended). */
  ticks: number;
  tasks: Map<number, TaskStat>;
}

/** pid -> its snapshot; a process that is gone is left out. */
export type Snapshot = Map<number, ProcSnapshot>;

function readStat(file: string): StatFields | undefined {
  try {
    return parseStat(fs.readFileSync(file, 'utf8'));
  } catch {
    return undefined; // gone meanwhile
  }
}

/** Every task of each process, with its name; processes that are gone are left out. */
export function snapshot(pids: Iterable<number>): Snapshot {
  const out: Snapshot = new Map();
  for (const pid of pids) {
    const tasks = new Map<number, TaskStat>();
    let tids: string[];
    try {
      tids = fs.readdirSync(`/proc/${pid}/task`);
    } catch {
      continue;
    }
    for (const t of tids) {
      const s = readStat(`/proc/${pid}/task/${t}/stat`);
      if (s) tasks.set(Number(t), { tid: Number(t), ...s });
    }
    // Read after the tasks, so the process total is never below their sum.
    const p = readStat(`/proc/${pid}/stat`);
    if (p) out.set(pid, { pid, ticks: p.ticks, tasks });
  }
  return out;
}

export interface ThreadDelta {
  tid: number;
  comm: string;
  /** The process's main thread (tid = pid): a Node process's event loop. */
  main: boolean;
  us: number;
  /** CPU it last ran on (at the second snapshot). */
  processor: number;
}

export interface ProcDelta {
  pid: number;
  /** The whole process between the snapshots. */
  us: number;
  /** Threads alive at the second snapshot (started meanwhile: counted from zero), largest first. */
  threads: ThreadDelta[];
  /** Time of threads that ended between the snapshots (process total minus the threads'). */
  exitedUs: number;
}

/** What each process present in both snapshots used between them. */
export function diffSnapshots(a: Snapshot, b: Snapshot): Map<number, ProcDelta> {
  const out = new Map<number, ProcDelta>();
  for (const [pid, pb] of b) {
    const pa = a.get(pid);
    if (!pa) continue;
    const threads: ThreadDelta[] = [];
    for (const [tid, tb] of pb.tasks) {
      const ticks = tb.ticks - (pa.tasks.get(tid)?.ticks ?? 0);
      threads.push({ tid, comm: tb.comm, main: tid === pid, us: ticksToUs(ticks), processor: tb.processor });
    }
    threads.sort((x, y) => y.us - x.us || x.tid - y.tid);
    const us = ticksToUs(pb.ticks - pa.ticks);
    const live = threads.reduce((s, t) => s + t.us, 0);
    out.set(pid, { pid, us, threads, exitedUs: Math.max(0, us - live) });
  }
  return out;
}

/** DPDK's lcore threads (22.11 names them rte-worker-N; other releases lcore-worker-N or dpdk-worker-N). */
export const isDpdkWorker = (comm: string): boolean => /^(rte|lcore|dpdk)-worker-\d+$/.test(comm);

/**
 * A process's threads summed into named groups: `role(t)` names each
 * thread's group; time of threads that ended goes to `exited`.
 */
export function groupThreads(d: ProcDelta, role: (t: ThreadDelta) => string): Record<string, { us: number; threads: number; names: string[] }> {
  const out: Record<string, { us: number; threads: number; names: string[] }> = {};
  const add = (k: string, us: number, name?: string) => {
    const g = (out[k] ??= { us: 0, threads: 0, names: [] });
    g.us += us;
    if (name !== undefined) {
      g.threads++;
      if (!g.names.includes(name)) g.names.push(name);
    }
  };
  for (const t of d.threads) add(role(t), t.us, t.comm);
  if (d.exitedUs > 0) add('exited', d.exitedUs);
  return out;
}
