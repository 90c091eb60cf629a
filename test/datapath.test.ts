// The shim's data path through a real worker on a ring port: PENDING flows
// held and released in order, hold bounds, deletion, the control TX ring,
// malformed input, and the mapping API's coded errors.
import t from 'tap';
import { FlowState, PacketBurst, Shim, ShimError } from '../src/offload';
import { buildArpRequest, buildTcp, padFrame, parseFrame, TCP_ACK, TCP_PSH } from '../src/net';
import { startShim, waitFor, sleep, TEST_EAL, ringInjectFrames, ringCollect } from './lib/harness';
import { CLIENT, HOST1, LB, VIP } from './lib/topology';

const shim = startShim({
  ports: [{ device: 'dp_ring', ip: LB.ip, mac: LB.mac, ring: true }],
  vips: [{ ip: VIP.ip, port: VIP.port }],
  holdPerFlow: 4, holdTotal: 8, holdFlows: 16, mappingCapacity: 4096,
});

const seg = (srcPort: number, seq: number, payload = `segment ${seq}`) => buildTcp({
  srcMac: CLIENT.mac, dstMac: LB.mac, srcIp: CLIENT.ip, dstIp: VIP.ip, srcPort, dstPort: VIP.port,
  seq, ack: 1, flags: TCP_ACK | TCP_PSH, window: 512, payload: Buffer.from(payload),
});
const key = (clientPort: number) => ({ clientIp: CLIENT.ip, clientPort, vip: VIP.ip, vipPort: VIP.port });

if (typeof shim === 'string') {
  t.plan(0, shim);
} else {
  t.teardown(() => shim.stop());
  shim.setHost(1, HOST1);
  const burst = new PacketBurst(128);
  const out = new PacketBurst(128);
  const total = () => shim.counters().total;
  const inject = (frames: Buffer[]) => ringInjectFrames(shim, 0, burst, frames);
  /** Drain until `n` frames came out (or a short grace when n is 0); returns them. */
  const collect = (n: number) => ringCollect(shim, 0, out, n);
  const innerSeq = (f: Buffer) => parseFrame(f).vxlan!.inner.tcp!.seq;

  t.test('PENDING holds packets, ACTIVE releases them in order before new ones', async (t) => {
    shim.insertMapping({ ...key(41000), hostId: 1, flowId: 1000, state: FlowState.PENDING });
    shim.insertMapping({ ...key(41001), hostId: 1, flowId: 1001, state: FlowState.ACTIVE });
    const before = total();
    inject([seg(41000, 1), seg(41000, 2), seg(41000, 3)]);
    t.ok(await waitFor(() => total().held - before.held === 3n), 'three packets held');
    inject([seg(41001, 77)]);
    const other = await collect(1);
    t.equal(other.length, 1, 'another ACTIVE flow passes while this one is held');
    t.equal(innerSeq(other[0]), 77);
    shim.setState(key(41000), FlowState.ACTIVE);
    inject([seg(41000, 4)]);
    const rel = await collect(4);
    t.same(rel.map(innerSeq), [1, 2, 3, 4], 'held packets first, in arrival order, then the new one');
    t.equal(total().released - before.released, 3n, 'released counter');
    t.equal(parseFrame(rel[0]).vxlan!.vni, 1000, 'tunnelled with the flow ID as VNI');
    t.ok(rel[0].subarray(64).equals(seg(41000, 1).subarray(14)), "the client's IP packet is unchanged");
  });

  t.test('release without further traffic', async (t) => {
    shim.insertMapping({ ...key(41010), hostId: 1, flowId: 1010, state: FlowState.PENDING });
    inject([seg(41010, 1), seg(41010, 2)]);
    await waitFor(() => shim.lookupMapping(key(41010)) && total().held > 0n);
    await sleep(10);
    t.same(await collect(0), [], 'nothing leaves while PENDING');
    shim.setState(key(41010), FlowState.ACTIVE);
    t.same((await collect(2)).map(innerSeq), [1, 2], 'the state change alone releases them');
  });

  t.test('hold bounds: per flow and in total', async (t) => {
    const b = total();
    shim.insertMapping({ ...key(41020), hostId: 1, flowId: 1020, state: FlowState.PENDING });
    inject([1, 2, 3, 4, 5, 6].map((s) => seg(41020, s)));
    t.ok(await waitFor(() => total().drop_hold_flow_full - b.drop_hold_flow_full === 2n), 'two over the per-flow bound dropped, counted');
    shim.insertMapping({ ...key(41021), hostId: 1, flowId: 1021, state: FlowState.PENDING });
    shim.insertMapping({ ...key(41022), hostId: 1, flowId: 1022, state: FlowState.PENDING });
    inject([1, 2, 3, 4].map((s) => seg(41021, s)));
    inject([seg(41022, 1)]);
    t.ok(await waitFor(() => total().drop_hold_total_full - b.drop_hold_total_full === 1n), 'over the total bound dropped, counted');
    shim.setState(key(41020), FlowState.ACTIVE);
    t.same((await collect(4)).map(innerSeq), [1, 2, 3, 4], 'the four held are released in order');
    shim.setState(key(41021), FlowState.ACTIVE);
    t.same((await collect(4)).map(innerSeq), [1, 2, 3, 4]);
  });

  t.test('deleting a PENDING mapping drops its held packets, counted', async (t) => {
    const b = total();
    shim.insertMapping({ ...key(41030), hostId: 1, flowId: 1030, state: FlowState.PENDING });
    inject([seg(41030, 1), seg(41030, 2)]);
    await waitFor(() => total().held - b.held === 2n);
    shim.deleteMapping(key(41030));
    t.ok(await waitFor(() => total().drop_held_flushed - b.drop_held_flushed === 2n), 'held_flushed counted');
    t.equal(shim.lookupMapping(key(41030)), undefined, 'mapping gone');
    inject([seg(41030, 3)]);
    t.ok(await waitFor(() => total().drop_bad_cookie - b.drop_bad_cookie === 1n),
      'the flow now misses the table and, with no valid cookie, is refused');
    // A reused slot must never receive an earlier flow's held packets.
    shim.insertMapping({ ...key(41031), hostId: 1, flowId: 1031, state: FlowState.ACTIVE });
    inject([seg(41031, 9)]);
    t.same((await collect(1)).map(innerSeq), [9]);
  });

  t.test('TX ring to the wire', async (t) => {
    const frames = [padFrame(buildArpRequest({ srcMac: LB.mac, srcIp: LB.ip, targetIp: HOST1.ip })), seg(1, 5)];
    const b = new PacketBurst(4);
    for (const f of frames) b.add(f, 0);
    t.equal(shim.txBurst(b), 2, 'both queued');
    const got = await collect(2);
    t.equal(got.length, 2);
    t.ok(got[0].equals(frames[0]) && got[1].equals(frames[1]), 'sent byte for byte, in order');
    const bad = new PacketBurst(1).add(frames[0], 5);
    t.throws(() => shim.txBurst(bad), { code: 'EINVAL' }, 'unknown port refused with EINVAL');
    const runt = new PacketBurst(1).add(Buffer.alloc(10), 0);
    t.throws(() => shim.txBurst(runt), { code: 'EINVAL' }, 'runt refused with EINVAL');
  });

  t.test('malformed input is counted and dropped, never crashes', async (t) => {
    const good = seg(41001, 1);
    const cases: [string, Buffer, string][] = [];
    cases.push(['zero length', Buffer.alloc(0), 'drop_zero_length']);
    for (let cut = 1; cut < 54; cut++) {
      const reason = cut < 14 ? 'drop_truncated_ethernet' : cut < 34 ? 'drop_truncated_ipv4' : 'drop_bad_ip_total_length';
      cases.push([`truncated at ${cut}`, good.subarray(0, cut), reason]);
    }
    const mut = (f: (b: Buffer) => void, fixCsum = true) => {
      const b = Buffer.from(good);
      f(b);
      if (fixCsum) {
        b.writeUInt16BE(0, 24);
        let s = 0;
        const ihl = (b[14] & 15) * 4;
        for (let i = 14; i < 14 + ihl; i += 2) s += b.readUInt16BE(i);
        while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
        b.writeUInt16BE(~s & 0xffff, 24);
      }
      return b;
    };
    cases.push(['bad IHL', mut((b) => { b[14] = 0x43; }), 'drop_bad_ihl']);
    cases.push(['IP options', mut((b) => { b[14] = 0x46; }), 'drop_ip_options']);
    cases.push(['IPv6 version nibble', mut((b) => { b[14] = 0x65; }), 'drop_bad_ip_version']);
    cases.push(['more fragments', mut((b) => { b[20] = 0x20; }), 'drop_ip_fragment']);
    cases.push(['fragment offset', mut((b) => { b[21] = 0x08; }), 'drop_ip_fragment']);
    cases.push(['bad checksum', mut((b) => { b[22] ^= 0xff; }, false), 'drop_bad_ip_checksum']);
    cases.push(['TCP data offset too small', mut((b) => { b[46] = 0x30; }), 'drop_bad_tcp_data_offset']);
    cases.push(['unknown EtherType', mut((b) => { b[12] = 0x86; b[13] = 0xdd; }, false), 'drop_unknown_ethertype']);
    cases.push(['oversize frame', Buffer.concat([good, Buffer.alloc(1600)]), 'drop_oversize']);
    const want: Record<string, bigint> = {};
    for (const [, , r] of cases) want[r] = (want[r] ?? 0n) + 1n;
    const b = total();
    for (let i = 0; i < cases.length; i += 64) inject(cases.slice(i, i + 64).map((c) => c[1]));
    const dropped = () => Object.keys(want).reduce((s, r) => s + total()[r] - b[r], 0n);
    t.ok(await waitFor(() => dropped() === BigInt(cases.length)), `all ${cases.length} counted as drops`);
    const a = total();
    for (const [r, n] of Object.entries(want)) t.equal(a[r] - b[r], n, `${r}: ${n}`);
    t.same(await collect(0), [], 'nothing transmitted');
    t.equal(a.exception_miss - b.exception_miss, 0n, 'nothing passed up');
    inject([padFrame(buildArpRequest({ srcMac: CLIENT.mac, srcIp: CLIENT.ip, targetIp: VIP.ip }))]);
    t.equal((await collect(1)).length, 1, 'the worker still answers afterwards');
  });

  t.test('mapping API: coded errors, bulk insert, capacity', async (t) => {
    t.throws(() => shim.insertMapping({ ...key(41001), hostId: 1, flowId: 5, state: FlowState.ACTIVE }),
      { code: 'EEXIST' }, 'duplicate refused');
    t.throws(() => shim.deleteMapping(key(9)), { code: 'ENOENT' });
    t.throws(() => shim.setState(key(9), FlowState.ACTIVE), { code: 'ENOENT' });
    t.throws(() => shim.insertMapping({ ...key(9), hostId: 77, flowId: 5, state: FlowState.ACTIVE }),
      { code: 'EINVAL', message: /host 77 is not defined/ }, 'undefined host refused by the shim');
    t.throws(() => shim.insertMapping({ ...key(9), hostId: 1, flowId: 1 << 24, state: FlowState.ACTIVE }),
      { code: 'ERR_SHIM_INVALID_ARGUMENT' }, 'flow ID beyond 24 bits refused by the binding');
    t.throws(() => shim.insertMapping({ ...key(9), vip: 'nope', hostId: 1, flowId: 1, state: FlowState.ACTIVE }),
      { code: 'ERR_SHIM_INVALID_ARGUMENT' });
    const m = shim.lookupMapping(key(41001));
    t.match(m, { hostId: 1, flowId: 1001, state: FlowState.ACTIVE }, 'lookup returns the record');
    t.ok(m!.packets >= 1n && m!.bytes > 0n, 'per-flow packet and byte counts');
    const n0 = shim.mappingCount();
    const recs = Array.from({ length: 1000 }, (_, i) => ({
      clientIp: '198.18.1.1', clientPort: 10000 + i, vip: VIP.ip, vipPort: VIP.port,
      hostId: 1, flowId: 20000 + i, state: FlowState.ACTIVE }));
    t.equal(shim.insertMappings(recs), 1000, 'bulk insert');
    t.equal(shim.mappingCount(), n0 + 1000);
    let err: unknown;
    let added = 0;
    for (let i = 0; i < 5000 && !err; i++) {
      try {
        shim.insertMapping({ clientIp: '198.18.2.1', clientPort: i, vip: VIP.ip, vipPort: VIP.port,
          hostId: 1, flowId: i, state: FlowState.ACTIVE });
        added++;
      } catch (e) { err = e; }
    }
    t.ok(err instanceof ShimError, 'the table fills up');
    t.equal((err as ShimError).code, 'ENOSPC', 'with ENOSPC');
    t.equal(shim.mappingCount(), 4096, 'at exactly the configured capacity');
  });

  t.test('one EAL per process; calls need a running shim', async (t) => {
    const again = new Shim({ eal: TEST_EAL, ports: [{ device: 'x', ip: LB.ip, ring: true }] });
    t.throws(() => again.start(), { code: 'EALREADY' });
    t.throws(() => again.mappingCount(), { code: 'ERR_SHIM_NOT_RUNNING' });
    t.throws(() => Shim.configStruct({ eal: [], ports: [] }), { code: 'ERR_SHIM_INVALID_ARGUMENT' });
    t.throws(() => Shim.configStruct({ eal: [], ports: [{ device: 'a', ip: LB.ip }], holdPerFlow: 65 }),
      { code: 'ERR_SHIM_INVALID_ARGUMENT', message: /holdPerFlow/ });
  });
}
