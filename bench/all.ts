// npm run bench: every benchmark in turn, its output streamed with progress,
// then a table of each one's last line (`name=value ...`).
//
// The benchmarks are package.json's `bench:*` scripts (the set-up step they
// start with runs once, here, from `npm run bench`): fastpath, handoff and e2e
// first, then pktgen, then any others. pktgen runs only where a pktgen binary
// is installed (else it is reported as skipped). A failing benchmark does not
// stop the others; the exit status is 1 if any failed.
//
// Options: --only a,b   run only these (names without `bench:`)
//          --skip a,b   leave these out
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';

const ROOT = path.resolve(__dirname, '../..');
const ORDER = ['fastpath', 'handoff', 'e2e', 'pktgen'];
const SETUP = /^bash scripts\/setup\.sh\s*&&\s*/;
/** A benchmark's figures: its last line of name=value pairs. */
const FIGURES = /^\s*[A-Za-z_][\w.]*=\S+(\s+[A-Za-z_][\w.]*=\S+)*\s*$/;

interface Outcome {
  name: string;
  status: 'ok' | 'failed' | 'skipped';
  seconds: number;
  figures: Array<[string, string]>;
  note: string;
}

const has = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;

/** Why a benchmark cannot run here, or undefined. */
function skipReason(name: string): string | undefined {
  if (name === 'pktgen' && !has('pktgen') && !has('dpdk-pktgen')) return 'pktgen is not installed';
  return undefined;
}

function run(name: string, command: string, index: number, total: number): Promise<Outcome> {
  const t0 = Date.now();
  const elapsed = () => `${Math.round((Date.now() - t0) / 1000)} s`;
  process.stdout.write(`\n=== [${index}/${total}] bench:${name}: ${command}\n`);
  return new Promise((resolve) => {
    const child = spawn('sh', ['-c', command], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let last = '';
    let partial = '';
    const onOut = (d: Buffer) => {
      process.stdout.write(d);
      const lines = (partial + d.toString()).split('\n');
      partial = lines.pop() ?? '';
      for (const l of lines) if (FIGURES.test(l)) last = l.trim();
    };
    child.stdout.on('data', onOut);
    child.stderr.on('data', (d: Buffer) => process.stderr.write(d));
    // A heartbeat so a long quiet phase does not look like a hang.
    const beat = setInterval(() => process.stdout.write(`=== bench:${name} running, ${elapsed()}\n`), 60_000);
    child.on('close', (code, signal) => {
      clearInterval(beat);
      if (FIGURES.test(partial)) last = partial.trim();
      const figures = last.split(/\s+/).filter(Boolean).map((kv) => kv.split('=', 2) as [string, string]);
      const ok = code === 0;
      process.stdout.write(`=== bench:${name} ${ok ? 'done' : `FAILED (${signal ?? `exit ${code}`})`} in ${elapsed()}\n`);
      resolve({ name, status: ok ? 'ok' : 'failed', seconds: (Date.now() - t0) / 1000, figures,
        note: ok ? '' : `${signal ?? `exit ${code}`}${figures.length ? '' : ', no figures'}` });
    });
  });
}

function table(outcomes: Outcome[]): string {
  const rows: string[][] = [['benchmark', 'status', 'time', 'figure', 'value']];
  for (const o of outcomes) {
    const status = o.status === 'ok' ? 'ok' : `${o.status}${o.note ? ` (${o.note})` : ''}`;
    const time = o.status === 'skipped' ? '-' : `${Math.round(o.seconds)} s`;
    if (!o.figures.length) rows.push([`bench:${o.name}`, status, time, '-', '-']);
    o.figures.forEach(([k, v], i) => rows.push(i ? ['', '', '', k, v] : [`bench:${o.name}`, status, time, k, v]));
  }
  const w = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  const line = (r: string[]) => r.map((x, c) => (c === 4 ? x.padStart(w[c]) : x.padEnd(w[c]))).join('  ');
  return [line(rows[0]), w.map((n) => '-'.repeat(n)).join('  '), ...rows.slice(1).map(line)].join('\n');
}

async function main(): Promise<number> {
  const { values } = parseArgs({ options: { only: { type: 'string' }, skip: { type: 'string' } } });
  const scripts = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).scripts ?? {}) as Record<string, string>;
  const all = Object.keys(scripts).filter((k) => k.startsWith('bench:')).map((k) => k.slice('bench:'.length));
  const names = [...ORDER.filter((n) => all.includes(n) || n === 'pktgen'), ...all.filter((n) => !ORDER.includes(n))];
  const only = values.only?.split(',').filter(Boolean);
  const skip = new Set(values.skip?.split(',').filter(Boolean) ?? []);
  for (const n of [...(only ?? []), ...skip]) {
    if (!names.includes(n)) {
      process.stderr.write(`bench: no benchmark '${n}' (there are: ${names.join(', ')})\n`);
      return 2;
    }
  }
  const chosen = names.filter((n) => (!only || only.includes(n)) && !skip.has(n));
  process.stdout.write(`bench: ${chosen.join(', ')}\n`);
  const outcomes: Outcome[] = [];
  for (const [i, name] of chosen.entries()) {
    const why = skipReason(name) ?? (scripts[`bench:${name}`] ? undefined : `no bench:${name} script in package.json`);
    if (why) {
      process.stdout.write(`\n=== [${i + 1}/${chosen.length}] bench:${name}: skipped (${why})\n`);
      outcomes.push({ name, status: 'skipped', seconds: 0, figures: [], note: why });
      continue;
    }
    outcomes.push(await run(name, scripts[`bench:${name}`].replace(SETUP, ''), i + 1, chosen.length));
  }
  process.stdout.write(`\nbench: summary\n${table(outcomes)}\n`);
  return outcomes.some((o) => o.status === 'failed') ? 1 : 0;
}

if (require.main === module) main().then((code) => process.exit(code), (err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
