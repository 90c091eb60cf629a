// Runs the shim's pure-C unit tests (parse, ARP, VXLAN encapsulation on plain
// buffers) and reports each of their TAP lines as an assertion here.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const bin = path.resolve(__dirname, '../../native/dpdk-shim/build/test_pure');

t.ok(fs.existsSync(bin), `${bin} is built (npm run setup)`);
if (fs.existsSync(bin)) {
  const r = spawnSync(bin, { encoding: 'utf8' });
  const lines = r.stdout.split('\n');
  const results = lines.filter((l) => /^(not )?ok \d+/.test(l));
  const plan = lines.find((l) => /^1\.\.\d+$/.test(l));
  t.ok(plan, 'the C tests print a plan');
  t.equal(results.length, Number(plan?.slice(3)), 'every planned C test reported');
  for (const l of results) t.ok(l.startsWith('ok'), l.replace(/^(not )?ok \d+ - /, 'C: '));
  t.equal(r.status, 0, 'test_pure exits 0');
}
