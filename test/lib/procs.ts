// Child processes for namespace tests: run a command to completion without
// blocking the event loop (runIn), and follow a long-running `handoff`
// process's JSON log lines (LoggedProc).
import { spawn, type ChildProcess } from 'node:child_process';
import { waitFor } from './harness';

export interface RunResult { code: number | null; signal: NodeJS.Signals | null; stdout: Buffer; stderr: string }

/**
 * Run a command in a namespace; stdin gets `input` and is closed. Never
 * blocks the event loop (a balancer's engine may run in the test process).
 * `stopAfterMs` sends SIGINT then (a second later) SIGKILL: for tools that
 * run until told.
 */
export function runIn(ns: string, cmd: string, args: string[],
  o: { input?: string; timeoutMs?: number; stopAfterMs?: number; env?: Record<string, string> } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const envArgs = Object.entries(o.env ?? {}).map(([k, v]) => `${k}=${v}`);
    // No input: stdin is /dev/null, so there is no pipe for a quick child to break.
    const child = spawn('ip', ['netns', 'exec', ns, 'env', ...envArgs, cmd, ...args],
      { stdio: [o.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout!.on('data', (d: Buffer) => out.push(d));
    child.stderr!.on('data', (d: Buffer) => { err += d; });
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
    if (o.input !== undefined) writeStdin(child, o.input);
  });
}

/**
 * Write `input` to a child's stdin and close it. A child may exit (or close
 * its stdin) before reading all of it: the write then fails with EPIPE, which
 * is not an error of the test's (the child's exit code and output say what
 * happened), so it is swallowed here instead of becoming an uncaught
 * exception. Any other error still throws.
 */
export function writeStdin(child: ChildProcess, input: string | Buffer, end = true): void {
  const stdin = child.stdin;
  if (!stdin) throw new Error('writeStdin: the child has no stdin pipe');
  guardStdin(child);
  if (stdin.destroyed || stdin.writableEnded) return;
  if (end) stdin.end(input);
  else stdin.write(input);
}

const guarded = new WeakSet<ChildProcess>();
/** Attach the EPIPE guard to a child's stdin once (see writeStdin). */
export function guardStdin(child: ChildProcess): void {
  if (!child.stdin || guarded.has(child)) return;
  guarded.add(child);
  child.stdin.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE' && err.code !== 'ERR_STREAM_DESTROYED' && err.code !== 'ECONNRESET') throw err;
  });
}

export type LogLine = Record<string, any>;

/** A process whose stdout is JSON lines (pino); other output is kept as text. */
export class LoggedProc {
  readonly lines: LogLine[] = [];
  text = '';
  private partial = '';
  /** Resolves with the exit code when the process ends. */
  readonly exit: Promise<number | null>;

  constructor(readonly child: ChildProcess, readonly name: string) {
    child.stdout!.on('data', (d: Buffer) => {
      this.partial += d;
      let i;
      while ((i = this.partial.indexOf('\n')) >= 0) {
        const line = this.partial.slice(0, i);
        this.partial = this.partial.slice(i + 1);
        try { this.lines.push(JSON.parse(line) as LogLine); } catch { this.text += `${line}\n`; }
      }
    });
    child.stderr!.on('data', (d: Buffer) => { this.text += d; });
    this.exit = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  }

  find(pred: (l: LogLine) => boolean): LogLine | undefined {
    return this.lines.find(pred);
  }

  /** Wait for a line matching `pred`; throws with the output so far when none comes. */
  async waitLine(pred: (l: LogLine) => boolean, ms = 10000): Promise<LogLine> {
    const l = await waitFor(() => this.find(pred), ms, 20);
    if (!l) throw new Error(`${this.name}: no such log line within ${ms} ms; output:\n${this.output().slice(-3000)}`);
    return l;
  }

  output(): string {
    return this.lines.map((l) => JSON.stringify(l)).join('\n') + '\n' + this.text;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  get exited(): boolean {
    return !this.running;
  }
}

/** Poll an async condition until it holds or `ms` elapse; returns the last value. */
export async function waitForAsync<T>(fn: () => Promise<T>, ms = 5000, stepMs = 50): Promise<T> {
  const end = Date.now() + ms;
  let v = await fn();
  while (!v && Date.now() < end) {
    await new Promise((r) => setTimeout(r, stepMs));
    v = await fn();
  }
  return v;
}
