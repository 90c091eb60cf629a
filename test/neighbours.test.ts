// Next hops and inner MACs learned instead of configured (issue 17), on
// plain buffers: the ARP table (requests, replies, gratuitous ARP, refresh,
// expiry, what it ignores), the hosts' MACs with a gateway for hosts off the
// link, and the PONG that carries the agent's VXLAN MAC.
import t from 'tap';
import { NeighbourTable } from '../src/controller/neighbours';
import { HostMacs } from '../src/controller/host-macs';
import { parseBalancerConfig } from '../src/controller/config';
import { ConfigError } from '../src/controller/config';
import { buildArpReply, buildArpRequest, parseFrame } from '../src/net';
import { decodeDatagram, encodePong } from '../src/transfer';

const LB = { ip: '198.18.0.2', mac: '02:00:00:00:00:02' };
const H1 = { ip: '198.18.0.11', mac: '02:00:00:00:00:11' };

function table(o: { refreshMs?: number; retryMs?: number } = {}) {
  const sent: Buffer[] = [];
  const changes: Array<[string, string | null]> = [];
  const n = new NeighbourTable({ ports: [LB], send: (_p, f) => void sent.push(f), onChange: (ip, _p, mac) => void changes.push([ip, mac]), ...o });
  return { n, sent, changes };
}

t.test('a next hop is asked for, learned from the reply, refreshed, and expires when it stops answering', async (t) => {
  const { n, sent, changes } = table({ refreshMs: 1000, retryMs: 100 });
  n.want(H1.ip, 0);
  n.tick(0);
  t.equal(sent.length, 1, 'one request at once');
  const req = parseFrame(sent[0]);
  t.equal(req.eth.dst, 'ff:ff:ff:ff:ff:ff', 'broadcast');
  t.match(req.arp, { op: 1, sha: LB.mac, spa: LB.ip, tpa: H1.ip }, 'who-has 198.18.0.11, tell the balancer');
  n.tick(50);
  t.equal(sent.length, 1, 'no second request before retryMs');
  n.tick(100);
  t.equal(sent.length, 2, 'then a retry');
  t.equal(n.lookup(H1.ip, 0), null, 'unresolved so far');
  n.onArp(buildArpReply({ srcMac: H1.mac, srcIp: H1.ip, dstMac: LB.mac, dstIp: LB.ip }), 0, 150);
  t.equal(n.lookup(H1.ip, 0), H1.mac, 'learned from the reply');
  t.ok(n.fresh(H1.ip, 0));
  t.same(changes, [[H1.ip, H1.mac]], 'told once');
  n.tick(1100);
  t.equal(sent.length, 2, 'nothing until refreshMs after the answer');
  n.tick(1150);
  t.equal(sent.length, 3, 'a refresh');
  n.tick(1250); n.tick(1350);
  t.equal(sent.length, 5, 'retried while unanswered');
  t.ok(n.fresh(H1.ip, 0), 'still fresh after two unanswered');
  n.tick(1450);
  t.notOk(n.fresh(H1.ip, 0), 'expired after three');
  t.equal(n.lookup(H1.ip, 0), H1.mac, 'the last MAC is kept for flows already there');
  t.same(changes.at(-1), [H1.ip, null], 'and the expiry told');
  t.equal(n.stats.expired, 1);
  n.onArp(buildArpReply({ srcMac: H1.mac, srcIp: H1.ip, dstMac: LB.mac, dstIp: LB.ip }), 0, 1500);
  t.ok(n.fresh(H1.ip, 0), 'an answer makes it fresh again');
  t.same(changes.at(-1), [H1.ip, H1.mac], 'told');
});

t.test('gratuitous ARP moves a next hop; what is not ours, or not unicast, is ignored', async (t) => {
  const { n, changes } = table();
  n.want(H1.ip, 0);
  n.onArp(buildArpReply({ srcMac: H1.mac, srcIp: H1.ip, dstMac: LB.mac, dstIp: LB.ip }), 0, 0);
  n.onArp(buildArpRequest({ srcMac: '02:00:00:00:00:99', srcIp: H1.ip, targetIp: H1.ip }), 0, 10);
  t.equal(n.lookup(H1.ip, 0), '02:00:00:00:00:99', 'a gratuitous ARP (a failover) moves it');
  t.equal(n.stats.changed, 1, 'counted as changed');
  t.equal(changes.length, 2);
  n.onArp(buildArpReply({ srcMac: '02:00:00:00:00:33', srcIp: '198.18.0.33', dstMac: LB.mac, dstIp: LB.ip }), 0, 20);
  n.onArp(buildArpReply({ srcMac: 'ff:ff:ff:ff:ff:ff', srcIp: H1.ip, dstMac: LB.mac, dstIp: LB.ip }), 0, 20);
  n.onArp(buildArpReply({ srcMac: H1.mac, srcIp: H1.ip, dstMac: LB.mac, dstIp: LB.ip }), 1, 20);
  n.onArp(Buffer.from('not a frame'), 0, 20);
  t.equal(n.stats.ignored, 4, 'another address, a broadcast sender, another port, garbage: ignored');
  t.equal(n.lookup(H1.ip, 0), '02:00:00:00:00:99', 'and the entry is untouched');
});

const cfg = (hosts: unknown[], extra: Record<string, unknown> = {}) => parseBalancerConfig({
  eal: { vdevs: ['net_null0'] },
  ports: [{ device: 'net_null0', ip: LB.ip, prefixLength: 24, gateway: '198.18.0.1' }],
  vips: [{ ip: '198.18.0.100', port: 80 }],
  hosts,
  routing: { pools: [{ name: 'p', hosts: hosts.map((h) => ({ host: (h as { name: string }).name })) }],
    defaults: [{ vip: '198.18.0.100', port: 80, pool: 'p' }] },
  ...extra,
});

t.test('hosts: next hop on the link or through the gateway; usable once both MACs are known and fresh', async (t) => {
  const c = cfg([{ name: 'near', ip: H1.ip }, { name: 'far', ip: '198.19.5.7' },
    { name: 'fixed', ip: '198.19.5.8', nexthopMac: '02:00:00:00:00:88', innerMac: '02:00:00:00:01:88' }]);
  const sent: Buffer[] = [];
  const changed: string[][] = [];
  const m = new HostMacs({ ports: c.ports, portAddrs: [LB], send: (_p, f) => void sent.push(f), onChange: (n) => void changed.push(n) });
  m.setHosts(c.hosts);
  const [near, far, fixed] = c.hosts;
  t.equal(m.nextHop(near), H1.ip, 'on the link: the host itself');
  t.equal(m.nextHop(far), '198.18.0.1', 'off the link: the gateway');
  t.same(m.resolve(fixed), { ip: '198.19.5.8', port: 0, nexthopMac: '02:00:00:00:00:88', innerMac: '02:00:00:00:01:88' },
    'configured MACs are used as given');
  t.ok(m.usable(fixed));
  m.neighbours.tick(0);
  t.same(sent.map((f) => parseFrame(f).arp!.tpa).sort(), ['198.18.0.1', H1.ip], 'ARP for the host and the gateway, not the fixed one');
  t.equal(m.resolve(far), null, 'nothing known yet');
  m.neighbours.onArp(buildArpReply({ srcMac: '02:00:00:00:00:01', srcIp: '198.18.0.1', dstMac: LB.mac, dstIp: LB.ip }), 0, 5);
  t.same(changed.at(-1), ['far'], 'the gateway answered: the host behind it changed');
  t.equal(m.nexthopMac(far), '02:00:00:00:00:01', 'its next hop is the gateway\'s MAC');
  t.equal(m.resolve(far), null, 'still no inner MAC');
  t.notOk(m.usable(far), 'so not usable');
  t.ok(m.learnInner('far', '02:00:00:00:01:07'), 'a PONG tells the inner MAC');
  t.notOk(m.learnInner('far', '02:00:00:00:01:07'), 'the same again changes nothing');
  t.notOk(m.learnInner('fixed', '02:00:00:00:01:99'), 'a configured inner MAC is not overridden');
  t.same(m.resolve(far), { ip: '198.19.5.7', port: 0, nexthopMac: '02:00:00:00:00:01', innerMac: '02:00:00:00:01:07' });
  t.ok(m.usable(far));
  m.setHosts([near]);
  t.same(m.neighbours.list(10).map((e) => e.ip), [H1.ip], 'a reload without the far hosts stops resolving the gateway');
});

t.test('config: MACs optional, gateway on the link, innerMac needed without health checks', async (t) => {
  t.doesNotThrow(() => cfg([{ name: 'a', ip: H1.ip }]), 'hosts by address alone');
  const refused = (f: () => unknown) => {
    try {
      f();
      return [];
    } catch (err) {
      return err instanceof ConfigError ? err.problems.map((p) => p.path) : ['not a ConfigError'];
    }
  };
  t.same(refused(() => cfg([{ name: 'a', ip: H1.ip }], { health: { enabled: false } })), ['/hosts/0/innerMac'],
    'without health checks nothing tells the inner MAC');
  t.same(refused(() => cfg([{ name: 'a', ip: H1.ip }], { ports: [{ device: 'net_null0', ip: LB.ip, gateway: '198.19.0.1' }] })),
    ['/ports/0/gateway'], 'a gateway off the link');
});

t.test('PONG carries the agent\'s VXLAN MAC; a bad one is refused', async (t) => {
  const d = decodeDatagram(encodePong({ session: 1, blobId: 2, status: 0, innerMac: '02:aa:bb:cc:dd:ee' }));
  t.same(d, { type: 'pong', session: 1, blobId: 2, status: 0, innerMac: '02:aa:bb:cc:dd:ee' });
  t.same(decodeDatagram(encodePong({ session: 1, blobId: 2, status: 0 })), { type: 'pong', session: 1, blobId: 2, status: 0 },
    'and without it, as before');
  t.throws(() => encodePong({ session: 1, blobId: 2, status: 0, innerMac: 'nope' }), 'a malformed MAC is refused by the encoder');
  t.match(decodeDatagram(encodePong({ session: 1, blobId: 2, status: 0, innerMac: '01:00:5e:00:00:01' })), { error: 'ERR_DGRAM_BOUNDS' },
    'a multicast inner MAC is refused');
});
