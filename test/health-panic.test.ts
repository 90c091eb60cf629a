// Panic mode on a real shim (net_null port, no agents answering): once every
// host fails its checks, the balancer tries them all rather than refusing
// every client; a drained host stays out. Needs root.
import t from 'tap';
import crypto from 'node:crypto';
import { Balancer } from '../src/controller/balancer';
import { parseBalancerConfig } from '../src/controller/config';
import { isRoot, waitFor } from './lib/harness';

const host = (name: string, ip: string, drain = false) => ({ name, ip, nexthopMac: '02:00:00:00:01:01', innerMac: '02:00:00:00:02:02', drain });

if (!isRoot) {
  t.plan(0, 'needs root: DPDK');
} else {
  t.test('no host answers: down, then panic tries all but the drained', async (t) => {
    const lb = new Balancer(parseBalancerConfig({
      eal: { vdevs: ['net_null0'], memoryMb: 256, extraArgs: ['--no-telemetry'] },
      ports: [{ device: 'net_null0', ip: '198.18.0.2' }],
      vips: [{ ip: '198.18.0.100', port: 80 }],
      hosts: [host('a', '10.0.0.1'), host('b', '10.0.0.2'), host('c', '10.0.0.3', true)],
      routing: {
        pools: [{ name: 'all', hosts: [{ host: 'a' }, { host: 'b' }, { host: 'c' }] }],
        defaults: [{ vip: '198.18.0.100', port: 80, pool: 'all' }],
      },
      health: { intervalMs: 50, timeoutMs: 20, fall: 2, rise: 1 },
    }, 'panic-test'), { clusterKey: crypto.randomBytes(32) });
    lb.start();
    t.teardown(() => lb.stop());
    t.equal(lb.panic(), false, 'hosts start up: no panic');
    t.ok(lb.eligible('a') && lb.eligible('b'), 'a and b take connections');
    t.notOk(lb.eligible('c'), 'c is drained');
    const down = await waitFor(() => lb.health!.state('a')!.up === false && lb.health!.state('b')!.up === false, 3000, 10);
    t.ok(down, 'unanswered PINGs take a and b down');
    t.equal(lb.panic(), true, 'no undrained host is up: panic');
    t.ok(lb.eligible('a') && lb.eligible('b'), 'so both are tried (the transfer fails over past dead ones)');
    t.notOk(lb.eligible('c'), 'the drained host stays out');
    t.equal((lb.status() as { healthPanic: boolean }).healthPanic, true, 'status shows it');
  });
}
