// wrk as the client of every column: run in a namespace, figures read from a
// Lua done() hook that prints one JSON line (wrk's own text rounds latency).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

export class WrkError extends Error {
  readonly code = 'ERR_WRK';
  override name = 'WrkError';
}

const MARK = 'WRK_JSON ';
// latency:percentile() and the summary are in microseconds.
const SCRIPT = `
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('${MARK}{"requests":%d,"bytes":%d,"durationUs":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latencyUs":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\\n',
    summary.requests, summary.bytes, summary.duration,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
`;

export interface WrkOptions {
  ns: string;
  url: string;
  seconds: number;
  connections: number;
  threads: number;
  headers?: string[];
  /** Directory for the Lua script. */
  dir: string;
  /** Lua run before the reporting script (e.g. a request() that varies the path). */
  lua?: string;
}

export interface WrkResult {
  requests: number;
  bytes: number;
  durationUs: number;
  errors: { connect: number; read: number; write: number; status: number; timeout: number };
  latencyUs: { p50: number; p90: number; p99: number; max: number; mean: number };
  rps: number;
  /** wrk's own CPU (user+system), from the shell's `times`. */
  cpuSeconds: number;
}

/** Run wrk to completion without blocking the event loop. @throws WrkError when it fails or prints no figures. */
export function runWrk(o: WrkOptions): Promise<WrkResult> {
  const script = path.join(o.dir, o.lua ? 'wrk-json-custom.lua' : 'wrk-json.lua');
  if (o.lua) fs.writeFileSync(script, `${o.lua}\n${SCRIPT}`);
  else if (!fs.existsSync(script)) fs.writeFileSync(script, SCRIPT);
  const wrkArgs = [`-t${o.threads}`, `-c${o.connections}`, `-d${o.seconds}s`,
    '--timeout', '10s', '-s', script, ...(o.headers ?? []).flatMap((h) => ['-H', h]), o.url];
  // bash's `times` prints its children's CPU time once wrk is done.
  const args = ['netns', 'exec', o.ns, 'bash', '-c', 'wrk "$@"; rc=$?; times; exit $rc', 'wrk', ...wrkArgs];
  return new Promise((resolve, reject) => {
    const child = spawn('ip', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    // wrk ends itself after -d; this only catches a hang.
    const timer = setTimeout(() => child.kill('SIGKILL'), (o.seconds + 30) * 1000);
    child.on('error', (e) => reject(new WrkError(`wrk: ${e.message}`)));
    child.on('close', (code) => {
      clearTimeout(timer);
      const line = out.split('\n').find((l) => l.startsWith(MARK));
      if (code !== 0 || !line) return reject(new WrkError(`wrk ${wrkArgs.join(' ')} exited ${code}: ${(err || out).trim().slice(-800)}`));
      const r = JSON.parse(line.slice(MARK.length)) as Omit<WrkResult, 'rps' | 'cpuSeconds'>;
      const times = [...out.matchAll(/^(\d+)m([\d.]+)s (\d+)m([\d.]+)s$/gm)].at(-1);
      const cpuSeconds = times ? Number(times[1]) * 60 + Number(times[2]) + Number(times[3]) * 60 + Number(times[4]) : NaN;
      resolve({ ...r, rps: r.requests / (r.durationUs / 1e6), cpuSeconds });
    });
  });
}
