// Child processes for namespace tests: run a command to completion without
// blocking the event loop (runIn), and follow a long-running `handoff`
// process's JSON log lines (LoggedProc).
import { spawn, type ChildProcess } from 'node:child_process';
import { waitFor } from './harness';

export interface RunResult { code: number | null; stdout: Buffer; stderr: string }

/** Run a command in a namespace; stdin gets `input` and is closed. Never blocks the event loop. */
export function runIn(ns: string, cmd: string, args: string[], o: { input?: string; timeoutMs?: number; env?: Record<string, string> } = {}):
Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const envArgs = Object.entries(o.env ?? {}).map(([k, v]) => `${k}=${v}`);
    const child = spawn('ip', ['netns', 'exec', ns, 'env', ...envArgs, cmd, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => { err += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 30000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out), stderr: err });
    });
    child.stdin.end(o.input ?? '');
  });
}

export type LogLine = Record<string, any>;

/** A process whose stdout is JSON lines (pino); other output is kept as text. */
export class LoggedProc {
  readonly lines: LogLine[] = [];
  text = '';
  private partial = '';
  readonly exited: Promise<number | null>;

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
    this.exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
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
}

/** Poll an async condition until it holds or `ms` elapse; returns the last value. */
export async function waitForAsync<T>(fn: () => Promise<T>, ms = 2000, stepMs = 20): Promise<T> {
  const end = Date.now() + ms;
  let v = await fn();
  while (!v && Date.now() < end) {
    await new Promise((r) => setTimeout(r, stepMs));
    v = await fn();
  }
  return v;
}
