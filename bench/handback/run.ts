// bench:handback (issue 15): what per-request routing costs when every
// request on a keep-alive connection belongs to another pool than the last.
// On the topology of bench:e2e (bench/e2e-vs-haproxy/setup.ts: the demo's
// rules, host1 and host2, HAProxy with the same rules as ACLs):
//
//   latency  one keep-alive connection, requests alternating /host1/ and
//            /host2/ one at a time: time from sending a request (right after
//            the previous response's last byte, which the client ACKs) to the
//            first byte of its answer, through Handoff (every request a
//            hand-back) and through HAProxy; same-pool requests through
//            Handoff for reference (no hand-back).
//   rate     wrk -c16 with a request() that alternates the two paths, rounds
//            alternating between the balancers.
//
// Options: --requests 400 (latency samples per column) --seconds 3 --rounds 3
// Last line: handback_p50_us=A handback_p99_us=B handback_rps=R haproxy_switch_rps=H
//   handback_rps_vs_haproxy=X handback_share=S (hand-backs per request in the wrk cells)
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fetchStatus } from '../../src/controller/control';
import { killChildrenOnExit, live } from '../lib/processes';
import { runIn } from '../../test/lib/procs';
import { BenchWorld, HAPROXY_VIP, VIP } from '../e2e-vs-haproxy/setup';
import { runWrk } from '../e2e-vs-haproxy/wrk';

const say = (s: string) => process.stdout.write(`${s}\n`);

// Alternates per connection where it can: wrk calls request() for whichever connection is ready next.
const ALTERNATE = `
local n = 0
request = function()
  n = n + 1
  if n % 2 == 0 then return wrk.format("GET", "/host1/") end
  return wrk.format("GET", "/host2/")
end
`;

/** One keep-alive connection, requests one at a time; microseconds from write to the answer's first byte. */
const LATENCY_CLIENT = `
const net = require('net');
const [ip, n, mode] = JSON.parse(process.argv[1]);
const paths = mode === 'same' ? ['/host1/a', '/host1/b'] : ['/host1/', '/host2/'];
const s = net.connect(80, ip);
const us = []; let i = 0; let t0 = 0n; let buf = ''; let first = false;
const next = () => { if (i === n) { s.end(); console.log(JSON.stringify(us)); return; }
  buf = ''; first = true; t0 = process.hrtime.bigint(); s.write('GET ' + paths[i % 2] + ' HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n'); };
s.on('connect', next);
s.on('data', (d) => { if (first) { first = false; us.push(Number(process.hrtime.bigint() - t0) / 1000); }
  buf += d; if (/served by host\\d\\n$/.test(buf) || /\\r\\n0\\r\\n\\r\\n$/.test(buf)) { i++; next(); } });
s.on('error', (e) => { console.log(JSON.stringify({ error: e.code })); process.exit(1); });
`;

const pct = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(s.length * q))];
};

async function latency(world: BenchWorld, ip: string, n: number, mode: 'switch' | 'same'): Promise<number[]> {
  const r = await runIn(world.client.ns, process.execPath, ['-e', LATENCY_CLIENT, JSON.stringify([ip, n, mode])], { timeoutMs: 120_000 });
  const v = JSON.parse(r.stdout.toString().trim().split('\n').at(-1) || 'null') as number[] | { error: string } | null;
  if (!Array.isArray(v)) throw new Error(`latency client (${ip}, ${mode}): ${JSON.stringify(v)} ${r.stderr}`);
  return v.slice(2); // the first two open the connection and its first handoff
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: {
    requests: { type: 'string', default: '400' }, seconds: { type: 'string', default: '3' }, rounds: { type: 'string', default: '3' },
  } });
  const n = Number(values.requests);
  const seconds = Number(values.seconds);
  const rounds = Number(values.rounds);
  if (process.getuid?.() !== 0) throw new Error('needs root (network namespaces, DPDK, TCP_REPAIR)');
  killChildrenOnExit('bench:handback');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'handoff-bench-handback-'));
  live.add(() => fs.rmSync(dir, { recursive: true, force: true }));
  const world = new BenchWorld(dir, []);
  live.add(() => world.topo.destroy());
  let handoff;
  let haproxy;
  try {
    await world.startHosts();
    handoff = await world.startHandoff();
    haproxy = await world.startHaproxy(2, [0, 1]);
    say(`bench:handback: topology up; ${n} latency samples per column, wrk -c16 ${rounds} x ${seconds} s per balancer`);
    const engine = async () => ((await fetchStatus<Record<string, any>>(handoff!.socket)).engine ?? {}) as Record<string, number>;
    const e0 = await engine();
    const hb = await latency(world, VIP, n, 'switch');
    const e1 = await engine();
    const same = await latency(world, VIP, n, 'same');
    const hap = await latency(world, HAPROXY_VIP, n, 'switch');
    say(`latency, request sent -> first byte of its answer (us), one connection, one request at a time:`);
    for (const [label, xs] of [['handoff, every request switches pool (hand-back)', hb], ['handoff, same pool (no hand-back)', same],
      ['haproxy, every request switches pool', hap]] as const) {
      say(`  ${label.padEnd(52)} p50 ${pct(xs, 0.5).toFixed(0).padStart(6)}  p99 ${pct(xs, 0.99).toFixed(0).padStart(6)}`);
    }
    say(`  hand-backs during the switching run: ${(e1.handbacks ?? 0) - (e0.handbacks ?? 0)} for ${n} requests`);
    const wrkFor = (ip: string) => ({ ns: world.client.ns, url: `http://${ip}/`, connections: 16, threads: 1, dir, lua: ALTERNATE });
    await runWrk({ ...wrkFor(VIP), seconds: 1 });
    await runWrk({ ...wrkFor(HAPROXY_VIP), seconds: 1 });
    let hReq = 0; let hUs = 0; let pReq = 0; let pUs = 0; let errors = 0;
    const w0 = await engine();
    for (let r = 0; r < rounds; r++) {
      const a = await runWrk({ ...wrkFor(VIP), seconds });
      const b = await runWrk({ ...wrkFor(HAPROXY_VIP), seconds });
      hReq += a.requests; hUs += a.durationUs; pReq += b.requests; pUs += b.durationUs;
      errors += Object.values(a.errors).reduce((x, y) => x + y, 0) + Object.values(b.errors).reduce((x, y) => x + y, 0);
      say(`  round ${r + 1}: handoff ${Math.round(a.rps)} req/s, haproxy ${Math.round(b.rps)} req/s`);
    }
    const w1 = await engine();
    const rps = hReq / (hUs / 1e6);
    const hrps = pReq / (pUs / 1e6);
    const share = ((w1.handbacks ?? 0) - (w0.handbacks ?? 0)) / Math.max(1, hReq);
    say(`wrk -c16, paths alternating: handoff ${Math.round(rps)} req/s (${(share * 100).toFixed(0)}% of requests handed back), ` +
      `haproxy ${Math.round(hrps)} req/s${errors ? `, ${errors} ERRORS` : ''}`);
    say(`handback_p50_us=${pct(hb, 0.5).toFixed(0)} handback_p99_us=${pct(hb, 0.99).toFixed(0)} handback_rps=${Math.round(rps)} ` +
      `haproxy_switch_rps=${Math.round(hrps)} handback_rps_vs_haproxy=${(rps / hrps).toFixed(3)} handback_share=${share.toFixed(2)}`);
    if (errors) process.exitCode = 1;
  } finally {
    if (handoff) await world.stop(handoff);
    if (haproxy) await world.stop(haproxy);
    await world.destroy();
  }
}

main().catch((err) => {
  process.stderr.write(`bench:handback: ${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
