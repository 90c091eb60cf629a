// Forward mode's host CPU (npm run bench:forward; issue 17): nginx from
// Debian behind the host agent's forwarder, against nginx serving the client
// directly, with wrk as the client, all in a network namespace of its own.
//
// Columns (all running at once, measured in turns, --rounds rounds):
//   direct  wrk -> nginx:9000
//   js      wrk -> front:9002 -> createForwarder (net.Socket pipes through Node) -> nginx
//   splice  wrk -> front:9001 -> KernelForwarder (hh_splice.c: splice() on the library's thread) -> nginx
// The front (front.ts) accepts without reading, as the agent holds an injected
// socket with the request in its queue, and gives each connection to the
// forwarder exactly as createHost does: what differs from a real handoff is
// only how the socket came to be (accept instead of TCP_REPAIR), which is the
// part forwarding does not touch.
// Rows: a 1 MB file over keep-alive (host CPU per MB) and a 1 KB file with
// `Connection: close` (host CPU per connection). Host CPU = the front's
// process (all threads: Node's and hh-splice) plus nginx's worker, from
// /proc/PID/stat over each measured window; wrk's own CPU is printed apart.
//
// Options: --seconds 3 --rounds 3 --connections 4
// Last line:
//   forward_host_cpu_us_per_mb_splice=S forward_host_cpu_us_per_mb_js=J nginx_direct_cpu_us_per_mb=D
//   forward_extra_us_per_mb_splice=S-D forward_extra_us_per_mb_js=J-D forward_extra_splice_vs_js=(S-D)/(J-D)
//   forward_close_cpu_us_per_conn_splice=.. forward_close_cpu_us_per_conn_js=.. nginx_direct_close_cpu_us_per_conn=..
//   forward_rps_1mb_splice_vs_direct=..
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { killAll, killChildrenOnExit, live, Tail } from '../lib/processes';
import { cpuSeconds, threadSeconds } from '../e2e-vs-haproxy/measure';
import { runWrk, type WrkResult } from '../e2e-vs-haproxy/wrk';

class BenchError extends Error {
  readonly code = 'ERR_BENCH';
  override name = 'BenchError';
}

const MODES = ['direct', 'js', 'splice'] as const;
type Mode = (typeof MODES)[number];
const PORT: Record<Mode, number> = { direct: 9000, splice: 9001, js: 9002 };
const CASES = {
  '1m': { label: '1 MB keep-alive', file: '1m', bytes: 1 << 20, close: false },
  '1k-close': { label: '1 KB Connection: close', file: '1k', bytes: 1024, close: true },
} as const;
type CaseId = keyof typeof CASES;

const say = (s: string) => process.stdout.write(`${s}\n`);

function sh(args: string[]): void {
  const r = spawnSync(args[0], args.slice(1), { encoding: 'utf8' });
  if (r.status !== 0) throw new BenchError(`${args.join(' ')}: ${(r.stderr || r.stdout).trim()}`);
}

function startChild(ns: string, argv: string[], name: string, ready: (line: string) => boolean): Promise<{ child: ChildProcess; tail: Tail }> {
  const tail = new Tail();
  const child = spawn('ip', ['netns', 'exec', ns, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(() => child.kill('SIGKILL'));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new BenchError(`${name} did not start in 10 s:\n${tail.text()}`)), 10_000);
    const onData = (d: Buffer) => {
      tail.push(d);
      if (d.toString().split('\n').some(ready)) {
        clearTimeout(timer);
        resolve({ child, tail });
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', (d: Buffer) => tail.push(d));
    child.on('exit', (code, sig) => { clearTimeout(timer); reject(new BenchError(`${name} exited (${code ?? sig}):\n${tail.text()}`)); });
  });
}

function waitListening(ns: string, port: number): Promise<void> {
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const poll = () => {
      const r = spawnSync('ip', ['netns', 'exec', ns, 'ss', '-Hltn', `sport = :${port}`], { encoding: 'utf8' });
      if (r.stdout.trim()) return resolve();
      if (Date.now() - t0 > 10_000) return reject(new BenchError(`nothing listens on :${port} after 10 s`));
      setTimeout(poll, 50);
    };
    poll();
  });
}

interface Sample { wrk: WrkResult; frontCpu: number; nginxCpu: number; threads: Record<string, number> }

async function main(): Promise<void> {
  const { values } = parseArgs({ options: {
    seconds: { type: 'string', default: '3' }, rounds: { type: 'string', default: '3' }, connections: { type: 'string', default: '4' },
  } });
  const seconds = Number(values.seconds);
  const rounds = Number(values.rounds);
  const connections = Number(values.connections);
  for (const [k, v] of Object.entries({ seconds, rounds, connections })) {
    if (!Number.isInteger(v) || v < 1) throw new BenchError(`--${k} must be a positive integer, not '${String(values[k as keyof typeof values])}'`);
  }
  if (process.getuid?.() !== 0) throw new BenchError('needs root (a network namespace); run: sudo npm run bench:forward');
  for (const cmd of ['nginx', 'wrk']) {
    if (spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status !== 0) throw new BenchError(`${cmd} is missing: run npm run setup`);
  }
  killChildrenOnExit('bench:forward');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'handoff-bench-forward-'));
  live.add(() => fs.rmSync(dir, { recursive: true, force: true }));
  const ns = `handoff-bfw-${process.pid}`;
  sh(['ip', 'netns', 'add', ns]);
  live.add(() => spawnSync('ip', ['netns', 'del', ns]));
  sh(['ip', 'netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);

  fs.mkdirSync(path.join(dir, 'www'));
  fs.writeFileSync(path.join(dir, 'www', '1m'), Buffer.alloc(1 << 20, 7));
  fs.writeFileSync(path.join(dir, 'www', '1k'), Buffer.alloc(1024, 7));
  fs.writeFileSync(path.join(dir, 'nginx.conf'), `
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  keepalive_requests 1000000;
  client_body_temp_path ${dir}; proxy_temp_path ${dir}; fastcgi_temp_path ${dir}; uwsgi_temp_path ${dir}; scgi_temp_path ${dir};
  server { listen 127.0.0.1:${PORT.direct}; root ${dir}/www; }
}
`);
  const nginx = spawn('ip', ['netns', 'exec', ns, 'nginx', '-c', path.join(dir, 'nginx.conf'), '-p', dir, '-g', 'daemon off;'], { stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(() => nginx.kill('SIGKILL'));
  await waitListening(ns, PORT.direct);
  // The master listens before it forks its worker.
  let workers: number[] = [];
  for (let i = 0; i < 100 && workers.length !== 1; i++) {
    if (i) await new Promise((res) => setTimeout(res, 50));
    workers = spawnSync('pgrep', ['-P', String(nginx.pid)], { encoding: 'utf8' }).stdout.trim().split('\n').filter(Boolean).map(Number);
  }
  if (workers.length !== 1) throw new BenchError(`expected one nginx worker, found ${workers.length}`);
  const nginxWorker = workers[0];

  const front = (mode: 'splice' | 'js') => startChild(ns,
    [process.execPath, path.join(__dirname, 'front.js'), JSON.stringify({ mode, port: PORT[mode], upstream: PORT.direct })],
    `front (${mode})`, (l) => l.includes('"ready"'));
  const fronts = { splice: await front('splice'), js: await front('js') };
  say(`bench:forward: nginx ${spawnSync('nginx', ['-v'], { encoding: 'utf8' }).stderr.trim()} (worker pid ${nginxWorker}), ` +
    `fronts splice pid ${fronts.splice.child.pid}, js pid ${fronts.js.child.pid}; wrk -c${connections}, ${rounds} rounds of ${seconds} s per cell, ` +
    `${os.cpus().length} CPUs, load ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);

  const samples = new Map<string, Sample[]>();
  for (const id of Object.keys(CASES) as CaseId[]) {
    const c = CASES[id];
    const url = (m: Mode) => `http://127.0.0.1:${PORT[m]}/${c.file}`;
    const headers = c.close ? ['Connection: close'] : [];
    for (const m of MODES) await runWrk({ ns, url: url(m), seconds: 1, connections, threads: 1, headers, dir });
    for (let r = 0; r < rounds; r++) {
      for (const m of MODES) {
        const fpid = m === 'direct' ? 0 : fronts[m].child.pid!;
        const f0 = fpid ? cpuSeconds(fpid) : 0;
        const t0 = fpid ? threadSeconds(fpid) : new Map<string, number>();
        const n0 = cpuSeconds(nginxWorker);
        const wrk = await runWrk({ ns, url: url(m), seconds, connections, threads: 1, headers, dir });
        const t1 = fpid ? threadSeconds(fpid) : new Map<string, number>();
        const threads: Record<string, number> = {};
        for (const [k, v] of t1) threads[k] = v - (t0.get(k) ?? 0);
        const x = { wrk, frontCpu: fpid ? cpuSeconds(fpid) - f0 : 0, nginxCpu: cpuSeconds(nginxWorker) - n0, threads };
        const errs = Object.values(wrk.errors).reduce((a, b) => a + b, 0);
        if (errs || wrk.bytes < wrk.requests * c.bytes) throw new BenchError(`${m}/${id}: wrk errors ${JSON.stringify(wrk.errors)}, ${wrk.bytes} bytes for ${wrk.requests} requests`);
        samples.set(`${m}/${id}`, [...(samples.get(`${m}/${id}`) ?? []), x]);
      }
    }
  }
  const agg = (m: Mode, id: CaseId) => {
    const ss = samples.get(`${m}/${id}`)!;
    const sum = (f: (s: Sample) => number) => ss.reduce((a, s) => a + f(s), 0);
    const requests = sum((s) => s.wrk.requests);
    const mb = sum((s) => s.wrk.bytes) / 1e6;
    const host = sum((s) => s.frontCpu + s.nginxCpu);
    const threads: Record<string, number> = {};
    for (const s of ss) for (const [k, v] of Object.entries(s.threads)) threads[k] = Math.round(((threads[k] ?? 0) + v) * 1000) / 1000;
    return {
      rps: requests / sum((s) => s.wrk.durationUs / 1e6), mbps: mb / sum((s) => s.wrk.durationUs / 1e6),
      hostUsPerMb: (host * 1e6) / mb, hostUsPerReq: (host * 1e6) / requests,
      frontUsPerReq: (sum((s) => s.frontCpu) * 1e6) / requests, nginxUsPerReq: (sum((s) => s.nginxCpu) * 1e6) / requests,
      wrkUsPerReq: (sum((s) => s.wrk.cpuSeconds) * 1e6) / requests, threads,
    };
  };
  const r: Record<string, ReturnType<typeof agg>> = {};
  for (const id of Object.keys(CASES) as CaseId[]) {
    say(`  ${CASES[id].label}:`);
    for (const m of MODES) {
      const a = r[`${m}/${id}`] = agg(m, id);
      say(`    ${m.padEnd(6)} ${Math.round(a.rps).toString().padStart(6)} req/s ${a.mbps.toFixed(0).padStart(5)} MB/s  host cpu ${a.hostUsPerMb.toFixed(0)} us/MB, ` +
        `${a.hostUsPerReq.toFixed(1)} us/req (front ${a.frontUsPerReq.toFixed(1)}, nginx ${a.nginxUsPerReq.toFixed(1)}; wrk ${a.wrkUsPerReq.toFixed(1)})` +
        (Object.keys(a.threads).length ? `  front threads s: ${JSON.stringify(a.threads)}` : ''));
    }
  }
  for (const m of ['splice', 'js'] as const) fronts[m].child.kill('SIGUSR2');
  await new Promise((res) => setTimeout(res, 200));
  for (const m of ['splice', 'js'] as const) {
    const st = fronts[m].tail.text().split('\n').reverse().find((l) => l.includes('"stats"'));
    say(`  front ${m} counters: ${st?.replace(/^\s*\| /, '') ?? '(none)'}`);
  }
  const d = r['direct/1m'].hostUsPerMb;
  const f = (x: number, p = 1) => x.toFixed(p);
  say([
    `forward_host_cpu_us_per_mb_splice=${f(r['splice/1m'].hostUsPerMb)}`, `forward_host_cpu_us_per_mb_js=${f(r['js/1m'].hostUsPerMb)}`,
    `nginx_direct_cpu_us_per_mb=${f(d)}`,
    `forward_extra_us_per_mb_splice=${f(r['splice/1m'].hostUsPerMb - d)}`, `forward_extra_us_per_mb_js=${f(r['js/1m'].hostUsPerMb - d)}`,
    `forward_extra_splice_vs_js=${f((r['splice/1m'].hostUsPerMb - d) / (r['js/1m'].hostUsPerMb - d), 3)}`,
    `forward_close_cpu_us_per_conn_splice=${f(r['splice/1k-close'].hostUsPerReq)}`, `forward_close_cpu_us_per_conn_js=${f(r['js/1k-close'].hostUsPerReq)}`,
    `nginx_direct_close_cpu_us_per_conn=${f(r['direct/1k-close'].hostUsPerReq)}`,
    `forward_rps_1mb_splice_vs_direct=${f(r['splice/1m'].rps / r['direct/1m'].rps, 3)}`,
  ].join(' '));
}

if (require.main === module) main().then(() => { killAll(); process.exit(0); }, (err: unknown) => {
  process.stderr.write(`bench:forward: ${err instanceof Error ? err.message : String(err)}\n`);
  killAll();
  process.exit(1);
});
