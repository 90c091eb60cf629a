import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  ARP_OP_REPLY,
  ARP_OP_REQUEST,
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
  ICMP_ECHO_REPLY,
  ICMP_ECHO_REQUEST,
  IPPROTO_TCP,
  IPPROTO_UDP,
  PacketParseError,
  PcapWriter,
  TCP_ACK,
  TCP_PSH,
  TCP_SYN,
  VXLAN_FLAG_VNI,
  buildArpReply,
  buildArpRequest,
  buildIcmpEcho,
  buildTcp,
  buildUdp,
  buildVxlan,
  ipv4Checksum,
  ipv4FromString,
  ipv4ToString,
  macFromString,
  macToString,
  onesComplementSum,
  padFrame,
  parseFrame,
  parsePcap,
  readPcap,
  readPcapFile,
  tcpUdpChecksum,
  writePcap,
} from '../src/net';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

function tmpDir(t: { teardown(fn: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'net-packet-test-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const A = { mac: '02:00:00:00:00:0a', ip: '10.99.0.1' };
const B = { mac: '02:00:00:00:00:0b', ip: '10.99.0.2' };
const AtoB = { srcMac: A.mac, dstMac: B.mac, srcIp: A.ip, dstIp: B.ip };

t.test('address helpers', async (t) => {
  const m = macFromString('02:00:00:00:00:01');
  t.same([...m], [2, 0, 0, 0, 0, 1]);
  t.equal(macToString(m), '02:00:00:00:00:01');
  t.equal(macToString(macFromString('AA-bb-CC-dd-EE-ff')), 'aa:bb:cc:dd:ee:ff');
  t.equal(macToString(hex('ffff 0102030405 06'), 2), '01:02:03:04:05:06');
  for (const bad of ['02:00:00:00:00', '02:00:00:00:00:001', '02:00-00:00:00:01', 'zz:00:00:00:00:01', '']) {
    t.throws(() => macFromString(bad), /invalid MAC/, bad);
  }
  t.throws(() => macToString(Buffer.alloc(5)), RangeError);

  t.equal(ipv4FromString('10.0.0.1'), 0x0a000001);
  t.equal(ipv4FromString('255.255.255.255'), 0xffffffff);
  t.equal(ipv4FromString('0.0.0.0'), 0);
  t.equal(ipv4ToString(0xc0a800c7), '192.168.0.199');
  t.equal(ipv4ToString(0xffffffff), '255.255.255.255');
  for (const bad of ['10.0.0', '10.0.0.256', '010.0.0.1', '10.0.0.1 ', '1.2.3.4.5', '-1.0.0.0', '']) {
    t.throws(() => ipv4FromString(bad), /invalid IPv4/, bad);
  }
  t.throws(() => ipv4ToString(2 ** 32), RangeError);
  t.throws(() => ipv4ToString(1.5), RangeError);
});

t.test('checksums against reference values', async (t) => {
  // RFC 1071 section 3 worked example.
  const rfc = hex('0001 f203 f4f5 f6f7');
  t.equal(onesComplementSum(rfc), 0xddf2);
  t.equal(ipv4Checksum(rfc), 0x220d);

  // Classic IPv4 header example (checksum field zeroed) -> 0xb861.
  const ip = hex('4500 0073 0000 4000 4011 0000 c0a8 0001 c0a8 00c7');
  t.equal(ipv4Checksum(ip, 0, 20), 0xb861);
  ip.writeUInt16BE(0xb861, 10);
  t.equal(ipv4Checksum(ip, 0, 20), 0, 'valid header verifies to 0');
  // Offset/length window inside a larger buffer.
  t.equal(ipv4Checksum(Buffer.concat([hex('dead'), ip, hex('beef')]), 2, 20), 0);

  // Odd length pads with a zero byte.
  t.equal(onesComplementSum(hex('01')), 0x0100);
  t.equal(onesComplementSum(hex('0102 03')), 0x0402);
  t.equal(ipv4Checksum(Buffer.alloc(0)), 0xffff);
  t.throws(() => ipv4Checksum(Buffer.alloc(4), 2, 4), RangeError);

  // UDP segment of the kernel-verified frame below; strings and numbers are interchangeable.
  const seg = hex('9c40 b26e 0015 0000 68656c6c6f206b65726e656c21');
  t.equal(tcpUdpChecksum('10.99.0.1', '10.99.0.2', IPPROTO_UDP, seg), 0xf419);
  t.equal(tcpUdpChecksum(0x0a630001, 0x0a630002, IPPROTO_UDP, seg), 0xf419);
  seg.writeUInt16BE(0xf419, 6);
  t.equal(tcpUdpChecksum('10.99.0.1', '10.99.0.2', IPPROTO_UDP, seg), 0);
  t.not(tcpUdpChecksum('10.99.0.1', '10.99.0.3', IPPROTO_UDP, seg), 0, 'pseudo-header covers addresses');
  t.not(tcpUdpChecksum('10.99.0.1', '10.99.0.2', IPPROTO_TCP, seg), 0, 'pseudo-header covers protocol');
});

// These frames were injected into a Linux 6.18 veth and accepted (delivered to a
// socket / answered); copies with one payload bit flipped raised InCsumErrors.
// Replies were captured with TX checksum offload disabled.
t.test('builders reproduce kernel-verified frames byte for byte', async (t) => {
  const ref = {
    udpOdd: '02000000000b02000000000a08004500002912344000401113c80a6300010a6300029c40b26e0015f41968656c6c6f206b65726e656c21',
    udpEven: '02000000000b02000000000a08004500002c00010000401165f80a6300010a6300029c42b26e00186d0d30313233343536373839616263646566',
    udpIpOpts: '02000000000b02000000000a08004600002f00000000401162f40a6300010a630002010101019c43b26e001759a177697468206970206f7074696f6e73',
    tcpSyn: '02000000000b02000000000a08004500003800074000400625f10a6300010a6300029c41b26f11223344000000009002faf0b93c0000020405b40402080a0000000100000000',
    icmp: '02000000000b02000000000a08004500002100000000400166140a6300010a6300020800b5eb4242000170696e6721',
  };
  const built = {
    udpOdd: buildUdp({ ...AtoB, srcPort: 40000, dstPort: 45678, payload: Buffer.from('hello kernel!'), ipId: 0x1234, dontFragment: true }),
    udpEven: buildUdp({ ...AtoB, srcPort: 40002, dstPort: 45678, payload: Buffer.from('0123456789abcdef'), ipId: 1 }),
    udpIpOpts: buildUdp({ ...AtoB, srcPort: 40003, dstPort: 45678, payload: Buffer.from('with ip options'), ipOptions: hex('01010101') }),
    tcpSyn: buildTcp({
      ...AtoB, srcPort: 40001, dstPort: 45679, seq: 0x11223344, ack: 0, flags: TCP_SYN, window: 64240,
      options: hex('020405b4 0402 080a 00000001 00000000'), ipId: 7, dontFragment: true,
    }),
    icmp: buildIcmpEcho({ ...AtoB, id: 0x4242, seq: 1, payload: Buffer.from('ping!') }),
  };
  for (const k of Object.keys(ref) as (keyof typeof ref)[]) {
    t.equal(built[k].toString('hex'), ref[k], k);
    const p = parseFrame(built[k]);
    t.equal(p.ipv4!.checksumOk, true, `${k} ip checksum`);
    t.equal((p.tcp ?? p.udp ?? p.icmp)!.checksumOk, true, `${k} l4 checksum`);
    // One flipped payload bit must break the L4 checksum but not the IP one.
    const bad = Buffer.from(built[k]);
    bad[bad.length - 1] ^= 1;
    const q = parseFrame(bad);
    t.equal(q.ipv4!.checksumOk, true, `${k} corrupted: ip checksum unaffected`);
    t.equal((q.tcp ?? q.udp ?? q.icmp)!.checksumOk, false, `${k} corrupted: l4 checksum fails`);
  }

  const synAck = parseFrame(hex('02000000000a02000000000b08004500003800004000400625f80a6300020a630001b26f9c4197c4faaf112233459012fe883a460000020405b40402080ac9e01ef800000001'));
  t.equal(synAck.ipv4!.checksumOk, true);
  t.equal(synAck.tcp!.checksumOk, true);
  t.equal(synAck.tcp!.flags, TCP_SYN | TCP_ACK);
  t.equal(synAck.tcp!.ack, 0x11223345);
  t.equal(synAck.tcp!.headerLength, 36);
  t.equal(synAck.tcp!.options.toString('hex'), '020405b40402080ac9e01ef800000001');

  const echoReply = parseFrame(hex('02000000000a02000000000b080045000021fc00000040016a130a6300020a6300010000bdeb4242000170696e6721'));
  t.equal(echoReply.ipv4!.checksumOk, true);
  t.match(echoReply.icmp, { type: ICMP_ECHO_REPLY, code: 0, id: 0x4242, seq: 1, checksumOk: true });

  const ipBad = Buffer.from(built.tcpSyn);
  ipBad[14 + 8] -= 1; // decrement TTL without fixing the header checksum
  t.equal(parseFrame(ipBad).ipv4!.checksumOk, false);
});

t.test('UDP checksum edge cases', async (t) => {
  // Find the 2-byte payload whose computed checksum is 0; it must go on the wire as 0xffff.
  const base = { ...AtoB, srcPort: 1, dstPort: 2 };
  const probe = buildUdp({ ...base, payload: Buffer.alloc(2), udpChecksum: false });
  const seg = Buffer.from(probe.subarray(34));
  let payload: Buffer | undefined;
  for (let v = 0; v <= 0xffff && !payload; v++) {
    seg.writeUInt16BE(v, 8);
    if (tcpUdpChecksum(AtoB.srcIp, AtoB.dstIp, IPPROTO_UDP, seg) === 0) payload = Buffer.from(seg.subarray(8));
  }
  t.ok(payload, 'found a payload with zero checksum');
  const f = buildUdp({ ...base, payload: payload! });
  const p = parseFrame(f);
  t.equal(p.udp!.checksum, 0xffff);
  t.equal(p.udp!.checksumOk, true);

  const off = parseFrame(buildUdp({ ...base, payload: Buffer.from('x'), udpChecksum: false }));
  t.equal(off.udp!.checksum, 0);
  t.equal(off.udp!.checksumOk, null, 'checksum 0 means not computed');
});

t.test('ARP round trips', async (t) => {
  const req = buildArpRequest({ srcMac: A.mac, srcIp: A.ip, targetIp: B.ip });
  t.equal(req.length, 42);
  const p = parseFrame(req);
  t.same(p.eth, { dst: 'ff:ff:ff:ff:ff:ff', src: A.mac, etherType: ETHERTYPE_ARP, headerLength: 14 });
  t.same(p.arp, { htype: 1, ptype: ETHERTYPE_IPV4, op: ARP_OP_REQUEST, sha: A.mac, spa: A.ip, tha: '00:00:00:00:00:00', tpa: B.ip });
  t.notOk(p.ipv4);

  const rep = parseFrame(buildArpReply({ srcMac: B.mac, srcIp: B.ip, dstMac: A.mac, dstIp: A.ip }));
  t.same(rep.eth, { dst: A.mac, src: B.mac, etherType: ETHERTYPE_ARP, headerLength: 14 });
  t.same(rep.arp, { htype: 1, ptype: ETHERTYPE_IPV4, op: ARP_OP_REPLY, sha: B.mac, spa: B.ip, tha: A.mac, tpa: A.ip });

  const vreq = buildArpRequest({ srcMac: macFromString(A.mac), srcIp: ipv4FromString(A.ip), targetIp: B.ip, vlan: 100 });
  t.equal(vreq.length, 46);
  t.equal(vreq.subarray(12, 16).toString('hex'), '81000064');
  const vp = parseFrame(vreq);
  t.match(vp.eth, { vlan: 100, vlanTci: 100, etherType: ETHERTYPE_ARP, headerLength: 18 });
  t.match(vp.arp, { op: ARP_OP_REQUEST, tpa: B.ip });

  const vrep = parseFrame(buildArpReply({ srcMac: B.mac, srcIp: B.ip, dstMac: A.mac, dstIp: A.ip, vlan: 4095 }));
  t.match(vrep.eth, { vlan: 4095, dst: A.mac });
  t.match(vrep.arp, { op: ARP_OP_REPLY, tha: A.mac });
});

t.test('TCP round trips', async (t) => {
  const payload = Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  for (const vlan of [undefined, 42]) {
    const f = buildTcp({
      ...AtoB, srcPort: 51000, dstPort: 80, seq: 0xfffffff0, ack: 123456789, flags: TCP_PSH | TCP_ACK, window: 502,
      options: hex('0101080a0000000100000002'), payload, ttl: 3, ipId: 0xbeef, vlan, ipOptions: hex('94040000'),
    });
    const p = parseFrame(f);
    if (vlan === undefined) t.notOk('vlan' in p.eth, 'untagged');
    else t.match(p.eth, { vlan: 42, vlanTci: 42, headerLength: 18 });
    t.match(p.eth, { dst: B.mac, src: A.mac, etherType: ETHERTYPE_IPV4 });
    t.match(p.ipv4, {
      version: 4, ihl: 6, headerLength: 24, totalLength: 24 + 32 + payload.length, id: 0xbeef, ttl: 3, proto: IPPROTO_TCP,
      src: A.ip, dst: B.ip, checksumOk: true, dontFragment: false, moreFragments: false, fragOffset: 0,
    });
    t.equal(p.ipv4!.options.toString('hex'), '94040000');
    t.match(p.tcp, {
      srcPort: 51000, dstPort: 80, seq: 0xfffffff0, ack: 123456789, flags: TCP_PSH | TCP_ACK, window: 502,
      headerLength: 32, urgentPointer: 0, checksumOk: true,
    });
    t.equal(p.tcp!.options.toString('hex'), '0101080a0000000100000002');
    t.equal(p.tcp!.payload.toString(), payload.toString());
  }

  // Options are zero-padded to 4 bytes; defaults fill in.
  const p = parseFrame(buildTcp({ ...AtoB, srcPort: 1, dstPort: 2, seq: 0, ack: 0, flags: TCP_SYN, window: 0, options: hex('020405b401') }));
  t.equal(p.tcp!.options.toString('hex'), '020405b401000000');
  t.equal(p.tcp!.payload.length, 0);
  t.match(p.ipv4, { ttl: 64, id: 0, ihl: 5, options: Buffer.alloc(0) });
  t.equal(p.tcp!.checksumOk, true);

  // Fragment fields are set as asked; L4 is only decoded for the first fragment.
  const first = parseFrame(buildTcp({ ...AtoB, srcPort: 1, dstPort: 2, seq: 0, ack: 0, flags: 0, window: 0, moreFragments: true }));
  t.match(first.ipv4, { moreFragments: true, fragOffset: 0, checksumOk: true });
  t.match(first.tcp, { srcPort: 1, dstPort: 2, checksumOk: null });
  const later = parseFrame(buildTcp({ ...AtoB, srcPort: 1, dstPort: 2, seq: 0, ack: 0, flags: 0, window: 0, fragOffset: 185 }));
  t.match(later.ipv4, { moreFragments: false, fragOffset: 185, checksumOk: true });
  t.notOk(later.tcp, 'no TCP header in a non-first fragment');

  t.throws(() => buildTcp({ ...AtoB, srcPort: 65536, dstPort: 2, seq: 0, ack: 0, flags: 0, window: 0 }), /srcPort/);
  t.throws(() => buildTcp({ ...AtoB, srcPort: 1, dstPort: 2, seq: 2 ** 32, ack: 0, flags: 0, window: 0 }), /seq/);
  t.throws(() => buildTcp({ ...AtoB, srcPort: 1, dstPort: 2, seq: 0, ack: 0, flags: 0, window: 0, options: Buffer.alloc(41) }), /at most 40/);
  t.throws(() => buildTcp({ ...AtoB, srcPort: 1, dstPort: 2, seq: 0, ack: 0, flags: 0, window: 0, ipOptions: Buffer.alloc(44) }), /at most 40/);
  t.throws(() => buildTcp({ ...AtoB, srcPort: 1, dstPort: 2, seq: 0, ack: 0, flags: 0, window: 0, vlan: 4096 }), /vlan/);
  t.throws(() => buildTcp({ ...AtoB, srcPort: 1, dstPort: 2, seq: 0, ack: 0, flags: 0, window: 0, fragOffset: 8192 }), /fragOffset/);
  t.throws(() => buildTcp({ ...AtoB, srcMac: '02:00', srcPort: 1, dstPort: 2, seq: 0, ack: 0, flags: 0, window: 0 }), /invalid MAC/);
  t.throws(() => buildTcp({ ...AtoB, srcPort: 1, dstPort: 2, seq: 0, ack: 0, flags: 0, window: 0, payload: Buffer.alloc(65500) }), /IPv4 total length 65540 exceeds 65535/);
});

t.test('UDP, ICMP round trips', async (t) => {
  for (const vlan of [undefined, 7]) {
    const u = parseFrame(buildUdp({ ...AtoB, srcPort: 5353, dstPort: 53, payload: Buffer.from('query'), ttl: 1, ipId: 9, vlan }));
    t.equal(u.eth.vlan, vlan);
    t.match(u.ipv4, { proto: IPPROTO_UDP, ttl: 1, id: 9, totalLength: 20 + 8 + 5, checksumOk: true });
    t.match(u.udp, { srcPort: 5353, dstPort: 53, length: 13, checksumOk: true });
    t.equal(u.udp!.payload.toString(), 'query');
    t.notOk(u.vxlan);

    const req = parseFrame(buildIcmpEcho({ ...AtoB, id: 1, seq: 2, vlan }));
    t.equal(req.eth.vlan, vlan);
    t.match(req.icmp, { type: ICMP_ECHO_REQUEST, code: 0, id: 1, seq: 2, checksumOk: true });
    t.equal(req.icmp!.payload.length, 0);
    const rep = parseFrame(buildIcmpEcho({ ...AtoB, id: 1, seq: 2, vlan, reply: true, payload: Buffer.from('abc') }));
    t.match(rep.icmp, { type: ICMP_ECHO_REPLY, checksumOk: true });
    t.equal(rep.icmp!.payload.toString(), 'abc');
  }
});

t.test('VXLAN is decoded recursively', async (t) => {
  const inner = buildTcp({
    srcMac: '02:00:00:00:01:01', dstMac: '02:00:00:00:01:02', srcIp: '192.168.1.1', dstIp: '192.168.1.2',
    srcPort: 1234, dstPort: 443, seq: 1, ack: 2, flags: TCP_ACK, window: 1000, payload: Buffer.from('inner'), vlan: 12,
  });
  const outer = buildVxlan({ ...AtoB, srcPort: 49152, vni: 0xabcdef, inner, vlan: 3 });
  const p = parseFrame(outer);
  t.equal(p.eth.vlan, 3);
  t.match(p.udp, { srcPort: 49152, dstPort: 4789, checksumOk: true, length: 8 + 8 + inner.length });
  t.match(p.vxlan, { flags: VXLAN_FLAG_VNI, vni: 0xabcdef });
  const ip = p.vxlan!.inner;
  t.match(ip.eth, { src: '02:00:00:00:01:01', dst: '02:00:00:00:01:02', vlan: 12 });
  t.match(ip.ipv4, { src: '192.168.1.1', dst: '192.168.1.2', checksumOk: true });
  t.match(ip.tcp, { srcPort: 1234, dstPort: 443, checksumOk: true });
  t.equal(ip.tcp!.payload.toString(), 'inner');

  // Truncation inside the inner frame is reported as such. Trim the outer
  // lengths consistently so that only the inner frame is short.
  const cut = Buffer.from(outer.subarray(0, outer.length - inner.length + 30));
  cut.writeUInt16BE(cut.length - 18, 18 + 2);
  cut.writeUInt16BE(cut.length - 18 - 20, 18 + 20 + 4);
  t.throws(() => parseFrame(cut), { name: 'PacketParseError', message: /VXLAN inner frame.*truncated IPv4/ });
});

t.test('Ethernet padding is ignored', async (t) => {
  const f = buildUdp({ ...AtoB, srcPort: 1, dstPort: 2, payload: Buffer.from('x') });
  t.equal(f.length, 43);
  const padded = padFrame(f);
  t.equal(padded.length, 60);
  t.equal(padFrame(padded), padded, 'already long enough');
  const p = parseFrame(padded);
  t.equal(p.ipv4!.payload.length, 9);
  t.equal(p.udp!.payload.toString(), 'x');
  t.equal(p.udp!.checksumOk, true);
  const a = parseFrame(padFrame(buildArpRequest({ srcMac: A.mac, srcIp: A.ip, targetIp: B.ip })));
  t.equal(a.arp!.tpa, B.ip);
});

t.test('truncated and malformed frames throw', async (t) => {
  const frames: Record<string, Buffer> = {
    tcp: buildTcp({ ...AtoB, srcPort: 1, dstPort: 2, seq: 0, ack: 0, flags: 0, window: 0, options: hex('01010101'), ipOptions: hex('01010101'), vlan: 5 }),
    udp: buildUdp({ ...AtoB, srcPort: 1, dstPort: 2, payload: Buffer.from('x') }),
    icmp: buildIcmpEcho({ ...AtoB, id: 1, seq: 1 }),
    arp: buildArpRequest({ srcMac: A.mac, srcIp: A.ip, targetIp: B.ip, vlan: 9 }),
  };
  for (const [name, f] of Object.entries(frames)) {
    parseFrame(f);
    let failures = 0;
    for (let len = 0; len < f.length; len++) {
      try {
        parseFrame(f.subarray(0, len));
      } catch (e) {
        if (e instanceof PacketParseError && /^truncated /.test(e.message)) failures++;
        else throw e;
      }
    }
    t.equal(failures, f.length, `${name}: every shorter prefix throws a truncation error`);
  }
  t.throws(() => parseFrame(Buffer.alloc(10)), { message: 'truncated Ethernet header: need 14 bytes at offset 0, frame has 10 left' });
  t.throws(() => parseFrame(frames.tcp!.subarray(0, 20)), /truncated IPv4 header: need 20 bytes at offset 18/);

  const mutate = (f: Buffer, fn: (b: Buffer) => void) => {
    const b = Buffer.from(f);
    fn(b);
    return b;
  };
  t.throws(() => parseFrame(mutate(frames.udp!, (b) => (b[14] = 0x65))), /IP version is 6/);
  t.throws(() => parseFrame(mutate(frames.udp!, (b) => (b[14] = 0x44))), /IHL 4 < 5/);
  t.throws(() => parseFrame(mutate(frames.udp!, (b) => b.writeUInt16BE(19, 16))), /total length 19/);
  t.throws(() => parseFrame(mutate(frames.udp!, (b) => b.writeUInt16BE(100, 16))), /truncated IPv4 packet/);
  t.throws(() => parseFrame(mutate(frames.udp!, (b) => b.writeUInt16BE(7, 38))), /UDP header: length 7/);
  t.throws(() => parseFrame(mutate(frames.udp!, (b) => b.writeUInt16BE(10, 38))), /truncated UDP datagram/);
  t.throws(() => parseFrame(mutate(frames.tcp!, (b) => (b[54] = 0x40))), /data offset 4 < 5/);
  t.throws(() => parseFrame(mutate(frames.arp!, (b) => b.writeUInt16BE(6, 18))), /unsupported ARP/);

  // Unknown EtherType and IP protocol stop decoding without error.
  const v6 = parseFrame(mutate(frames.udp!, (b) => b.writeUInt16BE(0x86dd, 12)));
  t.equal(v6.eth.etherType, 0x86dd);
  t.notOk(v6.ipv4);
  const gre = parseFrame(mutate(frames.udp!, (b) => (b[23] = 47)));
  t.equal(gre.ipv4!.proto, 47);
  t.notOk(gre.udp);
});

t.test('pcap round trips', async (t) => {
  const dir = tmpDir(t);
  const frames = [
    buildArpRequest({ srcMac: A.mac, srcIp: A.ip, targetIp: B.ip }),
    buildTcp({ ...AtoB, srcPort: 1, dstPort: 2, seq: 3, ack: 4, flags: TCP_SYN, window: 5, vlan: 6 }),
    buildUdp({ ...AtoB, srcPort: 7, dstPort: 8, payload: Buffer.alloc(1400, 0x5a) }),
  ];

  for (const byteOrder of ['little', 'big'] as const) {
    const file = path.join(dir, `${byteOrder}.pcap`);
    writePcap(file, frames, byteOrder === 'big' ? { byteOrder } : undefined);
    const raw = fs.readFileSync(file);
    const u32 = (o: number) => (byteOrder === 'little' ? raw.readUInt32LE(o) : raw.readUInt32BE(o));
    const u16 = (o: number) => (byteOrder === 'little' ? raw.readUInt16LE(o) : raw.readUInt16BE(o));
    t.equal(raw.subarray(0, 4).toString('hex'), byteOrder === 'little' ? 'd4c3b2a1' : 'a1b2c3d4');
    t.same([u16(4), u16(6), u32(8), u32(12), u32(16), u32(20)], [2, 4, 0, 0, 65535, 1], `${byteOrder} global header`);
    t.equal(raw.length, 24 + frames.reduce((n, f) => n + 16 + f.length, 0));
    t.same(readPcap(file), frames, `${byteOrder} frames survive`);
    t.match(readPcapFile(file), { byteOrder, nanosecond: false, versionMajor: 2, versionMinor: 4, snaplen: 65535, linktype: 1 });
  }

  // Timestamps at both resolutions, and the nanosecond magic.
  const ts = 1_700_000_000_123_456_789n;
  for (const nanosecond of [false, true]) {
    for (const byteOrder of ['little', 'big'] as const) {
      const file = path.join(dir, `ts-${nanosecond}-${byteOrder}.pcap`);
      const w = new PcapWriter(file, { nanosecond, byteOrder });
      w.write(frames[0]!, ts);
      w.write(frames[1]!);
      w.close();
      w.close();
      t.throws(() => w.write(frames[0]!), /write after close/);
      const raw = fs.readFileSync(file);
      const magic = byteOrder === 'little' ? raw.readUInt32LE(0) : raw.readUInt32BE(0);
      t.equal(magic, nanosecond ? 0xa1b23c4d : 0xa1b2c3d4);
      const r = readPcapFile(file);
      t.match(r, { nanosecond, byteOrder });
      t.equal(r.records[0]!.timestampNs, nanosecond ? ts : ts - 789n);
      t.equal(r.records[1]!.timestampNs, 0n);
      t.same(r.records.map((x) => x.data), frames.slice(0, 2));
    }
  }

  // Hand-made big-endian nanosecond file, independent of PcapWriter.
  const frame = hex('ffffffffffff 020000000001 0806');
  const hand = Buffer.concat([
    hex('a1b23c4d 0002 0004 00000000 00000000 0000ffff 00000001'),
    hex('00000002 00000003 0000000e 0000003c'),
    frame,
  ]);
  const parsed = parsePcap(hand);
  t.match(parsed, { byteOrder: 'big', nanosecond: true, snaplen: 65535, linktype: 1 });
  t.same(parsed.records, [{ timestampNs: 2_000_000_003n, origLen: 60, data: frame }]);

  // snaplen truncation keeps the original length.
  const snapFile = path.join(dir, 'snap.pcap');
  writePcap(snapFile, [frames[2]!], { snaplen: 100 });
  const snap = readPcapFile(snapFile);
  t.equal(snap.snaplen, 100);
  t.equal(snap.records[0]!.data.length, 100);
  t.equal(snap.records[0]!.origLen, frames[2]!.length);
  t.same(snap.records[0]!.data, frames[2]!.subarray(0, 100));
});

t.test('PcapWriter streams many frames across chunk boundaries', async (t) => {
  const dir = tmpDir(t);
  const file = path.join(dir, 'many.pcap');
  const n = 30_000;
  const w = new PcapWriter(file, { snaplen: 4 << 20 });
  let bytes = 24;
  for (let i = 0; i < n; i++) {
    const f = buildUdp({ ...AtoB, srcPort: 1024 + (i % 50000), dstPort: 9, payload: Buffer.alloc(i % 97) });
    w.write(f, BigInt(i) * 1000n);
    bytes += 16 + f.length;
  }
  // Bigger than the internal chunk: must bypass it intact.
  const big = Buffer.alloc(3 << 20);
  for (let i = 0; i < big.length; i += 4096) big[i] = i & 0xff;
  w.write(big);
  bytes += 16 + big.length;
  w.write(buildArpRequest({ srcMac: A.mac, srcIp: A.ip, targetIp: B.ip }));
  bytes += 16 + 42;
  t.equal(w.count, n + 2);
  w.close();

  t.equal(fs.statSync(file).size, bytes);
  const r = readPcapFile(file);
  t.equal(r.records.length, n + 2);
  let ok = 0;
  for (let i = 0; i < n; i++) {
    const p = parseFrame(r.records[i]!.data);
    if (p.udp!.srcPort === 1024 + (i % 50000) && p.udp!.payload.length === i % 97 && p.udp!.checksumOk && r.records[i]!.timestampNs === BigInt(i) * 1000n) ok++;
  }
  t.equal(ok, n, 'every record intact and in order');
  t.ok(r.records[n]!.data.equals(big), 'oversized frame intact');
  t.equal(parseFrame(r.records[n + 1]!.data).arp!.op, ARP_OP_REQUEST);
});

t.test('pcap read errors', async (t) => {
  const dir = tmpDir(t);
  const file = path.join(dir, 'x.pcap');
  writePcap(file, [buildArpRequest({ srcMac: A.mac, srcIp: A.ip, targetIp: B.ip })]);
  const raw = fs.readFileSync(file);
  t.throws(() => parsePcap(raw.subarray(0, 20)), /truncated pcap global header/);
  t.throws(() => parsePcap(raw.subarray(0, 30)), /truncated header of record 0/);
  t.throws(() => parsePcap(raw.subarray(0, raw.length - 1)), /truncated record 0 .*incl_len 42/);
  t.throws(() => parsePcap(Buffer.concat([hex('0a0d0d0a'), raw.subarray(4)])), /pcapng is not supported/);
  t.throws(() => parsePcap(Buffer.concat([hex('deadbeef'), raw.subarray(4)])), /not a pcap file \(magic 0xdeadbeef\)/);
  t.same(parsePcap(raw.subarray(0, 24)).records, [], 'header-only file is empty, not an error');
  t.throws(() => readPcap(path.join(dir, 'missing.pcap')), { code: 'ENOENT' });
});
