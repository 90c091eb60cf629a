// What one TunnelFilter.allow() costs (the host agent calls it once per
// handed-off connection, before injecting it), and the sweep of as many
// revoked flows, and counters(). Needs root: it makes a namespace with a
// `vxlan external` vx0, runs itself in it, and removes it.
//
//   node dist/bench/tunnel/allow.js [flows=20000] [module]
//
// `module` is the path of a tunnel-filter.js to measure instead of this
// tree's (e.g. an older build, for a before/after comparison).
import { execFileSync } from 'node:child_process';
import path from 'node:path';

const flows = Number(process.argv[2] ?? 20000);
const mod = path.resolve(process.argv[3] ?? path.join(__dirname, '../../src/host/tunnel-filter.js'));
const NS = `handoff-tabench-${process.pid}`;

async function inside(): Promise<void> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { TunnelFilter } = require(mod) as typeof import('../../src/host/tunnel-filter');
  const f = new TunnelFilter({ balancers: ['198.18.0.2'], lingerMs: 0 }).install();
  const us: number[] = [];
  const flow = (i: number) => ({ flowId: i + 1, clientIp: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, clientPort: 1024 + (i % 60000), vip: '198.18.0.100', vipPort: 80 });
  for (let i = 0; i < flows; i++) {
    const fl = flow(i);
    const t0 = process.hrtime.bigint();
    f.allow(fl);
    us.push(Number(process.hrtime.bigint() - t0) / 1000);
  }
  let t0 = process.hrtime.bigint();
  const c = await f.counters();
  const countersMs = Number(process.hrtime.bigint() - t0) / 1e6;
  for (let i = 0; i < flows; i++) f.revoke(flow(i), 0);
  t0 = process.hrtime.bigint();
  f.sweep(1);
  const sweepMs = Number(process.hrtime.bigint() - t0) / 1e6;
  f.close();
  us.sort((a, b) => a - b);
  const q = (p: number) => us[Math.min(us.length - 1, Math.floor(p * us.length))].toFixed(1);
  const mean = us.reduce((a, b) => a + b, 0) / us.length;
  console.log(JSON.stringify({
    module: path.relative(process.cwd(), mod), flows, allowUs: { mean: +mean.toFixed(1), p50: +q(0.5), p90: +q(0.9), p99: +q(0.99), max: +q(1) },
    countersMs: +countersMs.toFixed(2), flowsCounted: c.flows, sweepAllMs: +sweepMs.toFixed(1),
  }));
}

if (process.env.HANDOFF_TABENCH_INSIDE) {
  void inside();
} else {
  const sh = (...a: string[]) => execFileSync('ip', a, { stdio: ['ignore', 'pipe', 'inherit'] });
  sh('netns', 'add', NS);
  try {
    sh('-n', NS, 'link', 'set', 'lo', 'up');
    sh('-n', NS, 'link', 'add', 'vx0', 'type', 'vxlan', 'external', 'dstport', '4789');
    sh('-n', NS, 'link', 'set', 'vx0', 'up');
    const out = execFileSync('ip', ['netns', 'exec', NS, process.execPath, __filename, String(flows), mod],
      { env: { ...process.env, HANDOFF_TABENCH_INSIDE: '1' }, stdio: ['ignore', 'pipe', 'inherit'] });
    process.stdout.write(out);
  } finally {
    sh('netns', 'del', NS);
  }
}
