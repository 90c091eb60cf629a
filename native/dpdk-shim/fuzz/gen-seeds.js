#!/usr/bin/env node
// Regenerates the seed corpora in corpus/<target>/ from the packet builders
// of src/net (run `npx tsc -p .` first) and test/fixtures/golden.json.
// Seeds are committed; rerun only when the frame formats change.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const crypto = require('node:crypto');

const root = path.resolve(__dirname, '../../..');
const net = require(path.join(root, 'dist/src/net'));
const golden = JSON.parse(fs.readFileSync(path.join(root, 'test/fixtures/golden.json'), 'utf8'));

function write(target, name, buf) {
  const dir = path.join(__dirname, 'corpus', target);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, name), buf);
}

const client = { srcMac: '02:00:00:00:00:aa', dstMac: '02:00:00:00:00:01', srcIp: '198.18.0.1', dstIp: '198.18.0.100' };
const tcp = (o) => net.buildTcp({ ...client, srcPort: 40000, dstPort: 80, seq: 1000, ack: 2000,
  flags: net.TCP_ACK | net.TCP_PSH, window: 502, payload: Buffer.from('GET / HTTP/1.1\r\nHost: seed\r\n\r\n'), ...o });
const linuxSynOpts = Buffer.from('020405b40402080aabcdef0100000000010303' + '09', 'hex');

// fuzz_parse: byte 0 bit 0 = verify the IPv4 checksum, then the frame.
const frames = {
  'arp-request': net.padFrame(net.buildArpRequest({ srcMac: client.srcMac, srcIp: client.srcIp, targetIp: client.dstIp })),
  'arp-request-vlan': net.padFrame(net.buildArpRequest({ srcMac: client.srcMac, srcIp: client.srcIp, targetIp: client.dstIp, vlan: 7 })),
  'tcp-data': tcp({}),
  'tcp-data-vlan': tcp({ vlan: 7 }),
  'tcp-ack-padded': net.padFrame(tcp({ flags: net.TCP_ACK, payload: Buffer.alloc(0) })),
  'tcp-syn-linux': tcp({ flags: net.TCP_SYN, ack: 0, payload: Buffer.alloc(0), options: linuxSynOpts }),
  'tcp-fin': tcp({ flags: net.TCP_FIN | net.TCP_ACK, payload: Buffer.alloc(0) }),
  'udp': net.buildUdp({ ...client, srcPort: 5000, dstPort: 53, payload: Buffer.from('query') }),
  'icmp-echo': net.buildIcmpEcho({ ...client, dstIp: '198.18.0.2', id: 1, seq: 1 }),
};
for (const [name, f] of Object.entries(frames)) {
  write('fuzz_parse', name, Buffer.concat([Buffer.from([1]), f]));
  write('fuzz_parse', name + '-nocsum', Buffer.concat([Buffer.from([0]), f]));
}
Object.values(golden).forEach((hex, i) => write('fuzz_parse', `golden-${i}`, Buffer.concat([Buffer.from([1]), Buffer.from(hex, 'hex')])));

// fuzz_tcp: byte 0 even = an options block, odd = a segment to build.
write('fuzz_tcp', 'opts-linux-syn', Buffer.concat([Buffer.from([0]), linuxSynOpts]));
write('fuzz_tcp', 'opts-mss-only', Buffer.from('0002040218', 'hex'));
write('fuzz_tcp', 'opts-nop-ts', Buffer.from('000101080a0000000100000002', 'hex'));
write('fuzz_tcp', 'opts-unknown-then-eol', Buffer.from('00fe04abcd00ffff', 'hex'));
// macs(12) vlan(2) ips(8) ports(4) seq ack(8) flags(1) window(2) mss(2) wscale(1) bits(1) tsval tsecr(8)
const seg = (vlan, flags, mss, ws, bits) => Buffer.concat([Buffer.from([1]),
  Buffer.from('02000000000102000000aa', 'hex'), Buffer.from([0xaa]), Buffer.from([vlan >> 8, vlan & 0xff]),
  Buffer.from('c6120064c6120001', 'hex'), Buffer.from('00509c40', 'hex'), Buffer.from('1122334400000008', 'hex'),
  Buffer.from([flags]), Buffer.from('faf0', 'hex'), Buffer.from([mss >> 8, mss & 0xff]), Buffer.from([ws, bits]),
  Buffer.from('000f4240abcdef01', 'hex')]);
write('fuzz_tcp', 'build-synack-full', seg(0, 0x12, 1410, 7, 3));
write('fuzz_tcp', 'build-synack-vlan-mss', seg(7, 0x12, 536, 0xff, 0));
write('fuzz_tcp', 'build-ack-ts', seg(0, 0x10, 0, 0xff, 2));
write('fuzz_tcp', 'build-rst', seg(0, 0x14, 0, 0xff, 0));

// fuzz_cookie: secrets, flow, cookie, clock and options read field by field.
const rng = (n, seed) => crypto.createHash('sha512').update(seed).digest().subarray(0, n);
for (let i = 0; i < 4; i++) write('fuzz_cookie', `random-${i}`, rng(62, `cookie-${i}`));
write('fuzz_cookie', 'tick-wrap', Buffer.concat([rng(32, 'k'), Buffer.from('c6120001c61200640000000a9c400050', 'hex'),
  Buffer.from('f8000000ffffffff05b4091f', 'hex'), Buffer.from('0000003f', 'hex')]));
