// Balancer.reload() on a real shim (net_null port): what a reload may change,
// what it refuses, and that a shim host id never points at another address
// while flows may use it (a host removed, then re-added elsewhere). Needs root.
import t from 'tap';
import crypto from 'node:crypto';
import { Balancer } from '../src/controller/balancer';
import { ConfigError, parseBalancerConfig } from '../src/controller/config';
import { isRoot } from './lib/harness';

const host = (name: string, ip: string) => ({ name, ip, nexthopMac: '02:00:00:00:01:01', innerMac: '02:00:00:00:02:02' });

function config(hosts: Array<{ name: string; ip: string; nexthopMac?: string; innerMac?: string }>, extra: Record<string, unknown> = {}) {
  return parseBalancerConfig({
    eal: { vdevs: ['net_null0'], memoryMb: 256, extraArgs: ['--no-telemetry'] },
    ports: [{ device: 'net_null0', ip: '198.18.0.2' }],
    vips: [{ ip: '198.18.0.100', port: 80 }],
    hosts,
    routing: {
      pools: [{ name: 'all', hosts: hosts.map((h) => ({ host: h.name })) }],
      defaults: [{ vip: '198.18.0.100', port: 80, pool: 'all' }],
    },
    health: { enabled: false },
    ...extra,
  }, 'reload-test');
}

if (!isRoot) {
  t.plan(0, 'needs root: DPDK');
} else {
  const lb = new Balancer(config([host('a', '10.0.0.1'), host('b', '10.0.0.2')]), { clusterKey: crypto.randomBytes(32) });
  lb.start();
  t.teardown(() => lb.stop());
  const ids = () => Object.fromEntries((lb as unknown as { hostIds: Map<string, number> }).hostIds);
  const shimHost = (id: number) => (lb as unknown as { shimHosts: Map<number, { ip: string }> }).shimHosts.get(id)?.ip;

  t.test('hosts removed and re-added elsewhere get fresh ids; old ids keep their address', async (t) => {
    t.same(ids(), { a: 0, b: 1 });
    let r = lb.reload(config([host('a', '10.0.0.1')]));
    t.same(r.changes, ['host b removed', 'pool all changed'], 'b removed');
    t.equal(lb.eligible('b'), false, 'b takes no new connections');
    t.equal(shimHost(1), '10.0.0.2', "b's id still tunnels to its old address (its flows continue)");
    r = lb.reload(config([host('a', '10.0.0.1'), host('b', '10.0.0.9')]));
    t.same(r.changes, ['host b added', 'pool all changed'], 'b re-added at another address');
    t.equal(ids().b, 2, 'it gets a fresh id');
    t.equal(shimHost(1), '10.0.0.2', 'id 1 is untouched');
    t.equal(shimHost(2), '10.0.0.9');
    r = lb.reload(config([host('a', '10.0.0.1'), { ...host('b', '10.0.0.9'), nexthopMac: '02:00:00:00:01:99' }]));
    t.same(r.changes, ['host b changed'], 'a MAC change');
    t.equal(ids().b, 2, 'keeps the id (same address)');
    t.equal(lb.eligible('a'), true);
  });

  t.test('refused reloads leave everything as it was', async (t) => {
    const before = JSON.stringify(lb.config);
    const idsBefore = ids();
    const cur = lb.config;
    const bad = config(cur.hosts, { vips: [{ ip: '198.18.0.101', port: 80 }] });
    t.throws(() => lb.reload(bad), ConfigError, 'a VIP change needs a restart');
    try {
      lb.reload(bad);
    } catch (err) {
      t.same((err as ConfigError).problems.map((p) => p.path), ['/vips'], 'the key path is named');
    }
    t.equal(JSON.stringify(lb.config), before, 'the configuration in force is unchanged');
    t.same(ids(), idsBefore, 'so are the host ids');
    // The same values, keys in another order: not a change.
    const reordered = config(cur.hosts);
    reordered.accept = Object.fromEntries(Object.entries(reordered.accept).reverse()) as typeof reordered.accept;
    t.doesNotThrow(() => lb.reload(reordered), 'key order is not a change');
    t.equal(lb.reloads.refused, 2, 'refusals are counted');
  });
}
