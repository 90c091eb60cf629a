// Issue 16 with real routing daemons: the router namespace runs BIRD 2
// (a dynamic neighbor range, ECMP merged into the kernel with L4 hashing);
// every balancer announces the VIP from its own BIRD, started by the
// balancer, over a kernel interface of its namespace. A balancer that is
// SIGKILLed is withdrawn (its BIRD gets the parent-death signal and closes
// the session), one that is told to stop withdraws before it drains, one
// that starts announces; long downloads survive all of it.
//
// Needs root and BIRD 2 (scripts/setup.sh installs bird2).
import t from 'tap';
import crypto from 'node:crypto';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { ClusterLab } from '../src/controller/cluster-lab';
import { isRoot, sleep } from './lib/harness';
import { runIn } from './lib/procs';
import { sh } from './lib/netns';

const has = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
const missing = ['curl', 'bird', 'birdc', 'setpriv'].filter((c) => !has(c));
const DOWNLOADER = path.resolve(__dirname, 'lib/download-client.js');

if (!isRoot) {
  t.plan(0, 'needs root: network namespaces, AF_PACKET, TCP_REPAIR');
} else if (missing.length) {
  t.plan(0, `${missing.join(' and ')} not installed (scripts/setup.sh installs bird2)`);
} else {
  const lab = new ClusterLab({ balancers: 3, keyHex: crypto.randomBytes(32).toString('hex'), bgp: true, tag: 'sb' });
  t.teardown(() => lab.shutdown());
  const ns = lab.client.ns!;
  sh('sysctl', ['-qw', 'net.ipv4.tcp_rmem=4096 65536 131072'], { ns });
  const curl = (url: string) => runIn(ns, 'curl', ['-s', '--max-time', '15', url], { timeoutMs: 20_000 });

  t.test('each balancer announces the VIP over BGP; the router merges them into one ECMP route', async (t) => {
    await lab.start();
    t.same(lab.nexthops(), lab.balancerIps, 'three next hops: the balancers\' data-port addresses');
    const r = await curl(`http://${lab.vip}/`);
    t.match(r.stdout.toString(), /^served by host[12]\n$/, 'served through the BGP route');
  });

  t.test('downloads survive SIGKILL (withdrawn by BIRD), a drain (withdrawn first), a restart and a rehash', async (t) => {
    const COUNT = 32;
    const BYTES = 5_000_000;
    const dl = runIn(ns, process.execPath, [DOWNLOADER, JSON.stringify({ host: lab.vip, count: COUNT, bytes: BYTES, rate: 500_000 })],
      { timeoutMs: 120_000 });
    await sleep(1500);
    const k0 = Date.now();
    await lab.stopBalancer(1, 'SIGKILL');
    const killMs = Date.now() - k0 + await lab.waitNexthops(2, 10_000);
    t.notOk(lab.nexthops().includes(lab.balancerIps[1]), `SIGKILLed lb2 withdrawn in ${killMs} ms`);
    await sleep(1500);
    await lab.startBalancer(1);
    const addMs = await lab.waitNexthops(3, 10_000);
    t.pass(`restarted lb2 announced ${addMs} ms after it was ready`);
    await sleep(1000);
    const d0 = Date.now();
    const stopping = lab.stopBalancer(0, 'SIGTERM');
    const drainMs = await lab.waitNexthops(2, 10_000);
    t.notOk(lab.nexthops().includes(lab.balancerIps[0]), `lb1 withdrew ${drainMs} ms after SIGTERM, before its drain ended`);
    await stopping;
    t.ok(Date.now() - d0 >= drainMs, 'and exited after');
    await lab.startBalancer(0);
    await lab.waitNexthops(3, 10_000);
    lab.rehash(crypto.randomInt(1, 2 ** 31));
    const r = await dl;
    const results = (JSON.parse(r.stdout.toString().trim().split('\n').pop() || '{}').results ?? []) as
      Array<{ ok: boolean; maxGapMs: number; error?: string }>;
    t.equal(results.length, COUNT, 'every download reported');
    t.same(results.filter((x) => !x.ok), [], 'every download completed intact');
    t.comment(`withdrawal after SIGKILL ${killMs} ms, after SIGTERM ${drainMs} ms; longest stall ${Math.max(...results.map((x) => x.maxGapMs))} ms`);
    let recovered = 0, stale = 0, unknown = 0;
    for (const i of [0, 1, 2]) {
      const st = (await lab.status(i)).stray;
      recovered += st.recovered;
      stale += st.staleAnswers;
      unknown += st.unknown;
    }
    t.comment(`stray lookups: ${unknown} nobody's, ${stale} answers to an earlier attempt set aside`);
    t.ok(recovered > 0, `flows recovered after the route changes: ${recovered}`);
    const after = await curl(`http://${lab.vip}/host2/`);
    t.equal(after.stdout.toString(), 'served by host2\n', 'new connections served after it all');
  });
}
