// Process plumbing shared by the benchmarks: each DPDK process is a forked
// child (EAL initialises once per process), and every child dies with its
// parent, on every way out.
import { ChildProcess, spawn } from 'node:child_process';

/** Kill functions of every child still running (and temporary files): run on every exit. */
export const live = new Set<() => void>();

export function killAll(): void {
  for (const kill of live) {
    try { kill(); } catch { /* keep going */ }
  }
  live.clear();
}

/** Install the exit and signal handlers once, naming the benchmark in the message. */
export function killChildrenOnExit(name: string): void {
  process.on('exit', killAll);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      killAll();
      process.stderr.write(`${name}: interrupted by ${sig}\n`);
      process.exit(130);
    });
  }
}

/** The last lines a child printed, for error messages (EAL explains most failures there). */
export class Tail {
  private lines: string[] = [];
  private partial = '';
  constructor(private readonly max = 60, private readonly onLine?: (line: string) => void) {}

  push(chunk: Buffer | string): void {
    const parts = (this.partial + chunk.toString()).split('\n');
    this.partial = parts.pop() ?? '';
    for (const l of parts) {
      this.onLine?.(l);
      this.lines.push(l);
      if (this.lines.length > this.max) this.lines.shift();
    }
  }

  text(): string {
    const all = this.partial ? [...this.lines, this.partial] : this.lines;
    return all.map((l) => `    | ${l}`).join('\n');
  }
}

/** Child side: a message to the parent over the IPC channel. */
export function sendToParent<M>(msg: M): Promise<void> {
  return new Promise((resolve, reject) => {
    if (!process.send) return reject(new Error('this script must be forked with an IPC channel (run run.js)'));
    process.send(msg as object, (err: Error | null) => (err ? reject(err) : resolve()));
  });
}

/** Child side: run `main` with the config passed as argv[2]; report a failure to the parent, then exit. */
export function runAsChild<C>(main: (cfg: C) => Promise<void>): void {
  // The parent going away closes the channel: do not keep a busy-polling core alive.
  process.on('disconnect', () => process.exit(2));
  main(JSON.parse(process.argv[2] ?? '{}') as C).then(
    () => process.exit(0),
    async (err: unknown) => {
      const message = err instanceof Error ? err.stack ?? err.message : String(err);
      await sendToParent({ type: 'error', message }).catch(() => undefined);
      process.exit(1);
    },
  );
}

export interface Exit { code: number | null; signal: NodeJS.Signals | null }

/** How `child` ended, once it has. */
export function exitOf(child: ChildProcess): Promise<Exit> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      resolve({ code: child.exitCode, signal: child.signalCode });
      return;
    }
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
}

export function describeExit(e: Exit): string {
  return e.signal ? `was killed by ${e.signal}` : `exited with code ${e.code}`;
}

/**
 * Run `argv` under timeout(1), in a process group of its own: it dies after
 * `limitS` seconds even if this process is SIGKILLed, timeout forwards our
 * SIGINT, and `kill` (registered in `live`; the caller removes it) ends the
 * whole group. Both output streams go to `tail`.
 */
export function spawnBounded(argv: string[], limitS: number, tail: Tail): { child: ChildProcess; kill: () => void; exited: Promise<Exit> } {
  const child = spawn('timeout', ['-s', 'INT', '-k', '10', String(limitS), ...argv], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const kill = () => { try { process.kill(-child.pid!, 'SIGKILL'); } catch { /* gone already */ } };
  live.add(kill);
  child.stdout!.on('data', (d: Buffer) => tail.push(d));
  child.stderr!.on('data', (d: Buffer) => tail.push(d));
  return { child, kill, exited: exitOf(child) };
}
