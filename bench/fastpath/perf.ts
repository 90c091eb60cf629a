// Hardware cache misses of the forwarding threads, with perf(1), where the
// machine has a PMU. A VM without one (this project's CI machines are
// Firecracker guests: /sys/bus/event_source/devices has no `cpu`) reports the
// counter as unsupported: the bench then says so instead of printing a number.
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';

export type PerfSupport = { ok: true } | { ok: false; reason: string };

let support: PerfSupport | undefined;

/** Whether `perf stat -e cache-misses` counts on this machine (checked once). */
export function perfCacheMisses(): PerfSupport {
  if (support) return support;
  if (!fs.existsSync('/sys/bus/event_source/devices/cpu')) {
    support = { ok: false, reason: 'no hardware PMU (no /sys/bus/event_source/devices/cpu: a VM without counters)' };
    return support;
  }
  try {
    const out = execFileSync('perf', ['stat', '-x', ',', '-e', 'cache-misses', '--', 'true'], {
      encoding: 'utf8', stdio: ['ignore', 'ignore', 'pipe'],
    });
    support = parsePerfCount(out) === undefined ? { ok: false, reason: `perf cannot count cache-misses: ${out.trim()}` } : { ok: true };
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    support = { ok: false, reason: e.code === 'ENOENT' ? 'perf not installed (Debian: linux-perf)' : `perf failed: ${e.stderr?.trim() || e.message}` };
  }
  return support;
}

/** The count in perf stat's CSV output (`value,unit,event,...`), or undefined (`<not supported>`, `<not counted>`). */
export function parsePerfCount(csv: string): number | undefined {
  for (const line of csv.split('\n')) {
    const f = line.split(',');
    if (f[2]?.startsWith('cache-misses')) return /^\d+$/.test(f[0] ?? '') ? Number(f[0]) : undefined;
  }
  return undefined;
}

/** Thread IDs of process `pid` whose name starts with `prefix` (DPDK names its lcores rte-worker-N). */
export function threadIds(pid: number, prefix: string): number[] {
  const tids: number[] = [];
  try {
    for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
      try {
        if (fs.readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').startsWith(prefix)) tids.push(Number(tid));
      } catch { /* exited meanwhile */ }
    }
  } catch { /* the process is gone */ }
  return tids;
}

/**
 * Cache misses of threads `tids` over the next `seconds`, or undefined when
 * perf cannot count them. Starts at once; resolves when the window ends.
 */
export function countCacheMisses(tids: number[], seconds: number): Promise<number | undefined> {
  if (!perfCacheMisses().ok || tids.length === 0) return Promise.resolve(undefined);
  return new Promise((resolve) => {
    const p = spawn('perf', ['stat', '-x', ',', '-e', 'cache-misses', '-t', tids.join(','), '--', 'sleep', String(seconds)], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let err = '';
    p.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    p.on('error', () => resolve(undefined));
    p.on('exit', () => resolve(parsePerfCount(err)));
  });
}
