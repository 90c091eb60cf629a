// `npm start` runs `handoff demo`: the topology comes up, curl from this
// namespace is served by the hosts, and SIGINT removes everything. Needs root.
import t from 'tap';
import path from 'node:path';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { isRoot, waitFor } from './lib/harness';
import { sh } from './lib/netns';

const run = promisify(execFile);
const cli = path.resolve(__dirname, '../src/controller/cli.js');

if (!isRoot) {
  t.plan(0, 'needs root: the demo builds network namespaces and runs DPDK');
} else {
  t.test('demo: up, serving, torn down', async (t) => {
    const child = spawn(process.execPath, [cli, 'demo'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { out += d; });
    t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL'); });
    t.ok(await waitFor(() => /http:\/\/198\.18\.0\.100\//.test(out), 60000, 100), `prints the VIP URL\n${out.slice(-1500)}`);
    const ns = sh('ip', ['netns', 'list']);
    for (const n of ['handoff-lb', 'handoff-host1', 'handoff-host2']) t.match(ns, n, `namespace ${n}`);
    const a = await run('curl', ['-s', '--max-time', '10', 'http://198.18.0.100/']);
    t.match(a.stdout, /^served by host[12]\n$/, 'the VIP answers from the root namespace');
    const b = await run('curl', ['-s', '--max-time', '10', 'http://198.18.0.100/host2/x']);
    t.equal(b.stdout, 'served by host2\n', 'routed by path');
    // One connection, four requests: each goes where the demo's rules send it (per-request routing).
    const k = await run('curl', ['-s', '--max-time', '10', '-w', '[%{num_connects}]\n', 'http://198.18.0.100/host1/',
      'http://198.18.0.100/host2/', 'http://198.18.0.100/host1/', 'http://198.18.0.100/host2/']);
    t.equal(k.stdout, 'served by host1\n[1]\nserved by host2\n[0]\nserved by host1\n[0]\nserved by host2\n[0]\n',
      'keep-alive: each request routed by its path, on one connection');
    const c = await run('curl', ['-s', '--max-time', '20', 'http://198.18.0.100/bytes/1048576'], { encoding: 'buffer', maxBuffer: 4 << 20 });
    const body = c.stdout as unknown as Buffer;
    t.equal(body.length, 1048576, '1 MB');
    t.ok(body.every((v, i) => v === i % 251), 'intact');
    // 1 + 1 + 4 (the first and three hand-backs) + 1
    t.ok(await waitFor(() => /handoffs\s+7/.test(out), 5000, 100), 'the live table counts the handoffs');
    child.kill('SIGINT');
    t.ok(await waitFor(() => child.exitCode !== null, 15000, 100), 'exits on SIGINT');
    t.equal(child.exitCode, 0);
    t.notMatch(sh('ip', ['netns', 'list']), /handoff-(lb|host1|host2)/, 'namespaces removed');
    t.equal(sh('ip', ['link', 'show', 'handoff-br'], { allowFail: true }), '', 'bridge removed');
  });

  t.test('demo --balancers 3: a cluster behind a router, served, torn down', async (t) => {
    const child = spawn(process.execPath, [cli, 'demo', '--balancers', '3'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { out += d; });
    t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL'); });
    t.ok(await waitFor(() => /ready\. 3 balancers/.test(out), 90000, 100), `ready\n${out.slice(-1500)}`);
    const hops = sh('ip', ['route', 'show', '198.18.0.100'], { ns: 'handoff-rt' });
    t.equal((hops.match(/nexthop via/g) ?? []).length, 3, `the router has a next hop per balancer: ${hops}`);
    const a = await run('curl', ['-s', '--max-time', '10', 'http://198.18.0.100/host2/']);
    t.equal(a.stdout, 'served by host2\n', 'served from the root namespace through the router');
    t.ok(await waitFor(() => /lb1 .*\n.*lb2 .*\n.*lb3 /.test(out), 10000, 100), 'the table lists each balancer');
    child.kill('SIGINT');
    t.ok(await waitFor(() => child.exitCode !== null, 20000, 100), 'exits on SIGINT');
    t.equal(child.exitCode, 0);
    t.notMatch(sh('ip', ['netns', 'list']), /handoff-(lb\d|rt|host\d)/, 'namespaces removed');
    t.equal(sh('ip', ['route', 'show', '198.18.0.100/32'], { allowFail: true }), '', 'the route to the VIP removed');
  });
}
