// The workers' flat flow table (native/dpdk-shim/hs_flowtab.h) through a
// real worker on a ring port: which packets take the one-line fast path and
// which go through the entry, the overflow of a key whose two buckets are
// full (served from rte_hash), per-flow counts from the slot, FAST cleared by
// a reopening SYN, and a host change seen by the fast path. Needs root (EAL).
import t from 'tap';
import { FlowState, PacketBurst } from '../src/offload';
import { buildTcp, parseFrame, TCP_ACK, TCP_FIN, TCP_PSH, TCP_SYN } from '../src/net';
import { crc32c } from '../src/transfer/crc32c';
import { ipv4FromString } from '../src/net/packet';
import { startShim, ringInjectFrames, ringCollect } from './lib/harness';
import { CLIENT, HOST1, HOST2, LB, VIP } from './lib/topology';

// 64 mappings: 128 buckets of 2 slots (hs_ft_buckets_for), small enough to fill two buckets on purpose.
const CAPACITY = 64;
const BUCKETS = 128;
const shim = startShim({
  ports: [{ device: 'ft_ring', ip: LB.ip, mac: LB.mac, ring: true }],
  vips: [{ ip: VIP.ip, port: VIP.port }],
  mappingCapacity: CAPACITY,
});

/** The shim's hash of a mapping key: rte_hash_crc (raw CRC32C, init 0x5eed) over the 16-byte key in network order. */
function keyHash(clientPort: number): number {
  const k = Buffer.alloc(16);
  k.writeUInt32BE(ipv4FromString(CLIENT.ip) >>> 0, 0);
  k.writeUInt32BE(ipv4FromString(VIP.ip) >>> 0, 4);
  k.writeUInt16BE(clientPort, 8);
  k.writeUInt16BE(VIP.port, 10);
  k[12] = 6;
  return ~crc32c(k, ~0x5eed >>> 0) >>> 0;
}
function buckets(sig: number): [number, number] {
  const mask = BUCKETS - 1;
  const b1 = sig & mask;
  let b2 = Number(((BigInt(sig) * 0x9e3779b97f4a7c15n) >> 32n) & BigInt(mask));
  if (b2 === b1) b2 ^= 1;
  return [b1, b2];
}

const seg = (srcPort: number, seq: number, flags = TCP_ACK | TCP_PSH, payload: string | undefined = `segment ${seq}`) => buildTcp({
  srcMac: CLIENT.mac, dstMac: LB.mac, srcIp: CLIENT.ip, dstIp: VIP.ip, srcPort, dstPort: VIP.port,
  seq, ack: 1, flags, window: 512, payload: payload === undefined ? undefined : Buffer.from(payload),
});
const key = (clientPort: number) => ({ clientIp: CLIENT.ip, clientPort, vip: VIP.ip, vipPort: VIP.port });

if (typeof shim === 'string') {
  t.plan(0, shim);
} else {
  t.teardown(() => shim.stop());
  shim.setHost(1, HOST1);
  shim.setHost(2, HOST2);
  const burst = new PacketBurst(64);
  const out = new PacketBurst(64);
  const total = () => shim.counters().total;
  /** Inject `frames`, then collect until `expect` came out (ringCollect). */
  const send = (frames: Buffer[], expect: number) => {
    ringInjectFrames(shim, 0, burst, frames);
    return ringCollect(shim, 0, out, expect);
  };
  const delta = (a: Record<string, bigint>, b: Record<string, bigint>, k: string) => Number(b[k]! - a[k]!);

  t.test('the hash the test computes is the shim\'s (the outer source port derives from it)', async (t) => {
    shim.insertMapping({ ...key(30000), hostId: 1, flowId: 3000, state: FlowState.ACTIVE });
    const [f] = await send([seg(30000, 1)], 1);
    t.ok(f, 'tunnelled');
    const sig = keyHash(30000);
    // hs_encap_sport: 49152 | 14 bits folded from the flow hash.
    t.equal(parseFrame(f!).udp!.srcPort, 49152 | ((sig ^ (sig >>> 16)) & 0x3fff), 'outer source port from the hash computed here');
    shim.deleteMapping(key(30000));
  });

  t.test('a key whose two buckets are full is served from the overflow; the others from their slots', async (t) => {
    // Five client ports sharing both buckets: two fill the first, two the second, the fifth finds no room.
    const byPair = new Map<string, number[]>();
    let ports: number[] | undefined;
    for (let p = 1024; p < 65536 && !ports; p++) {
      const k = buckets(keyHash(p)).join(',');
      const l = byPair.get(k) ?? [];
      l.push(p);
      byPair.set(k, l);
      if (l.length === 5) ports = l;
    }
    t.ok(ports, 'five client ports with the same two buckets');
    if (!ports) return;
    ports.forEach((p, i) => shim.insertMapping({ ...key(p), hostId: 1, flowId: 4000 + i, state: FlowState.ACTIVE }));
    const c0 = total();
    const got = await send(ports.map((p, i) => seg(p, 100 + i)), 5);
    const c1 = total();
    t.equal(got.length, 5, 'all five tunnelled');
    t.same(got.map((f) => parseFrame(f).vxlan!.vni).sort(), [4000, 4001, 4002, 4003, 4004], 'each under its own flow ID');
    t.equal(delta(c0, c1, 'encap_fast'), 4, 'four from their flat slots');
    t.equal(delta(c0, c1, 'overflow_hits'), 1, 'the fifth from rte_hash');
    for (const [i, p] of ports.entries()) {
      const m = shim.lookupMapping(key(p))!;
      t.equal(m.packets, 1n, `port ${p}: one packet counted`);
      t.equal(m.flowId, 4000 + i);
    }
    // The overflow key goes; a new key for the same buckets takes the overflow again (its buckets are still full).
    shim.deleteMapping(key(ports[4]!));
    const c2 = total();
    await send([seg(ports[4]!, 1, TCP_ACK, undefined)], 0);
    t.equal(delta(c2, total(), 'overflow_hits'), 0, 'a deleted overflow key is no longer found');
    for (const p of ports.slice(0, 4)) shim.deleteMapping(key(p));
  });

  t.test('FIN and SYN go through the entry; a SYN on a CLOSING flow clears FAST', async (t) => {
    shim.insertMapping({ ...key(31000), hostId: 1, flowId: 3100, state: FlowState.ACTIVE });
    let c0 = total();
    await send([seg(31000, 1)], 1);
    t.equal(delta(c0, total(), 'encap_fast'), 1, 'data: fast path');
    c0 = total();
    const fin = await send([seg(31000, 2, TCP_ACK | TCP_FIN, undefined)], 1);
    let c1 = total();
    t.equal(fin.length, 1, 'the FIN is tunnelled');
    t.equal(delta(c0, c1, 'encap_fast'), 0, 'not by the fast path');
    t.equal(delta(c0, c1, 'fin_rst_seen'), 1, 'the entry saw it: CLOSING');
    t.equal(shim.lookupMapping(key(31000))!.state, FlowState.CLOSING);
    c0 = total();
    await send([seg(31000, 3, TCP_ACK, undefined)], 1);
    t.equal(delta(c0, total(), 'encap_fast'), 1, 'a CLOSING flow\'s ACK: fast path again');
    // The client reuses the port: a new connection, not the old host's.
    c0 = total();
    await send([seg(31000, 5000, TCP_SYN, undefined)], 1);
    c1 = total();
    t.equal(delta(c0, c1, 'reopened_by_syn'), 1, 'REOPENED');
    t.equal(delta(c0, c1, 'synack_sent'), 1, 'the SYN is answered here');
    t.equal(delta(c0, c1, 'encap_packets'), 0, 'and not tunnelled');
    c0 = total();
    await send([seg(31000, 5001, TCP_ACK, undefined)], 1);
    c1 = total();
    t.equal(delta(c0, c1, 'encap_packets'), 0, 'the new connection\'s next segment is not tunnelled either (FAST cleared)');
    t.equal(delta(c0, c1, 'encap_fast'), 0);
    shim.deleteMapping(key(31000));
  });

  t.test('held packets go before the fast path takes the flow; a host change reaches the fast path', async (t) => {
    shim.insertMapping({ ...key(32000), hostId: 1, flowId: 3200, state: FlowState.PENDING });
    const c0 = total();
    await send([seg(32000, 1), seg(32000, 2)], 0);
    t.equal(delta(c0, total(), 'held'), 2, 'two held while PENDING');
    shim.setState(key(32000), FlowState.ACTIVE);
    const got = await send([seg(32000, 3)], 3);
    t.same(got.map((f) => parseFrame(f).vxlan!.inner.tcp!.seq), [1, 2, 3], 'released in order, then the new one');
    const c1 = total();
    await send([seg(32000, 4)], 1);
    t.equal(delta(c1, total(), 'encap_fast'), 1, 'nothing held any more: fast path');
    shim.setMappingHost(key(32000), 2);
    const [f] = await send([seg(32000, 5)], 1);
    t.equal(parseFrame(f!).ipv4!.dst, HOST2.ip, 'the fast path tunnels to the new host');
    const m = shim.lookupMapping(key(32000))!;
    t.equal(m.packets, 5n, 'five packets counted: held, released and fast alike');
    t.equal(m.hostId, 2);
    shim.deleteMapping(key(32000));
  });
}
