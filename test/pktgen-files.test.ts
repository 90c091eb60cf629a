// The committed Pktgen files (bench/pktgen) agree with each other without
// Pktgen installed: the .pkt ranges walk exactly the flows the balancer
// helper maps, the balancer configs load and fit those flows, the generated
// pcaps carry what the scenarios say, and bad input is refused with a code.
// Pktgen itself runs in bench/pktgen/veth-check.ts (docs/benchmarks.md).
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import koffi from 'koffi';
import { loadBalancerConfig } from '../src/controller/config';
import { Mapping } from '../src/offload';
import { TCP_ACK, TCP_PSH, TCP_SYN, ipv4FromString, ipv4ToString, parseFrame } from '../src/net/packet';
import { readPcap } from '../src/net/pcap';
import {
  ESTABLISHED, FLOOD_SOURCES, FlowRange, VETH, VIP, flowClientIp, flowClientPort, flowCount, rangeMax,
} from '../bench/pktgen/common';
import { encodeMappings, parseHelperArgs } from '../bench/pktgen/balancer';
import { writePcaps } from '../bench/pktgen/pcaps';

const dir = path.resolve(__dirname, '../../bench/pktgen');
const read = (f: string) => fs.readFileSync(path.join(dir, f), 'utf8');

/** The Pktgen CLI lines of a .pkt file: comments and blanks dropped, as cli.c does. */
function commands(file: string): string[] {
  return read(file).split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
}

/** `range 0 <field> <start> <min> <max> <inc>` of a .pkt file. */
function range(cmds: string[], field: string): { start: string; min: string; max: string; inc: string } {
  const re = new RegExp(`^range 0 ${field} (\\S+) (\\S+) (\\S+) (\\S+)$`);
  const hits = cmds.map((c) => re.exec(c)).filter((m): m is RegExpExecArray => m !== null);
  if (hits.length !== 1) throw new Error(`expected one 'range 0 ${field}' line, found ${hits.length}`);
  const [, start, min, max, inc] = hits[0]!;
  return { start: start!, min: min!, max: max!, inc: inc! };
}

/**
 * Pktgen 23.03's range walk (pktgen_range_ctor): each field steps by its
 * increment per packet and wraps from above max to min, independently.
 */
function* pktgenWalk(ip: { start: number; min: number; max: number; inc: number }, port: typeof ip, n: number) {
  let a = ip.start;
  let p = port.start;
  for (let i = 0; i < n; i++) {
    a += ip.inc; if (a > ip.max) a = ip.min;
    p += port.inc; if (p > port.max) p = port.min;
    yield [a >>> 0, p] as const;
  }
}

t.test('established.pkt walks exactly the flows the helper maps', async (t) => {
  const cmds = commands('established.pkt');
  t.ok(cmds.includes('range 0 proto tcp') && cmds.includes('range 0 tcp flag clr all') && cmds.includes('range 0 tcp flag set ack'),
    'plain ACKs: no SYN, FIN or RST that would send the flow to the accept path or CLOSING');
  t.ok(cmds.includes(`range 0 dst mac start ${VETH.lbMac}`), 'to the balancer port of the veth check');
  t.same(range(cmds, 'dst ip'), { start: VIP.ip, min: VIP.ip, max: VIP.ip, inc: '0.0.0.0' });
  t.same(range(cmds, 'dst port'), { start: String(VIP.port), min: String(VIP.port), max: String(VIP.port), inc: '0' });
  const ip = range(cmds, 'src ip');
  const port = range(cmds, 'src port');
  const max = rangeMax(ESTABLISHED);
  t.same(ip, { start: ESTABLISHED.clientBase, min: ESTABLISHED.clientBase, max: max.ip, inc: '0.0.0.1' });
  t.same(port, { start: String(ESTABLISHED.portBase), min: String(ESTABLISHED.portBase), max: String(max.port), inc: '1' });
  t.equal(flowCount(ESTABLISHED), 1_000_000, 'a million flows');
  t.equal(cmds.at(-1), 'enable 0 range');

  // Walk the whole cycle as Pktgen would: every packet is a mapped flow, and
  // the million are all distinct (address and port periods are coprime).
  const n = flowCount(ESTABLISHED);
  const num = (s: string) => ({ start: ipv4FromString(s), min: ipv4FromString(ip.min), max: ipv4FromString(ip.max), inc: 1 });
  const ports = { start: Number(port.start), min: Number(port.min), max: Number(port.max), inc: 1 };
  const seen = new Set<number>();
  let k = 1; // Pktgen steps before building its first packet
  let mismatches = 0;
  for (const [a, p] of pktgenWalk(num(ip.start), ports, n)) {
    if (a !== flowClientIp(ESTABLISHED, k) || p !== flowClientPort(ESTABLISHED, k)) mismatches++;
    seen.add((a - ipv4FromString(ESTABLISHED.clientBase)) * 65536 + p);
    k++;
  }
  t.equal(mismatches, 0, 'the walk is the flow set of common.ts, packet for packet');
  t.equal(seen.size, n, 'one cycle visits every flow once');
});

t.test('a range with a common factor repeats early and is refused', async (t) => {
  const bad: FlowRange = { clientBase: '10.0.0.0', clients: 15625, portBase: 1024, ports: 125 };
  t.throws(() => flowCount(bad), { code: 'ERR_PKTGEN_FLOW_RANGE', message: /coprime.*lcm = 15625 flows/ });
  // What Pktgen would actually do with it: only lcm(15625, 125) = 15625 distinct flows.
  const seen = new Set<number>();
  for (const [a, p] of pktgenWalk({ start: 0, min: 0, max: 15624, inc: 1 }, { start: 0, min: 0, max: 124, inc: 1 }, 15625 * 125)) seen.add(a * 65536 + p);
  t.equal(seen.size, 15625);
  t.throws(() => flowCount({ ...ESTABLISHED, clientBase: '10.0.0.300' }), { code: 'ERR_PKTGEN_FLOW_RANGE' });
  t.throws(() => flowCount({ ...ESTABLISHED, portBase: 65500 }), { code: 'ERR_PKTGEN_FLOW_RANGE' });
});

t.test('syn-flood.pkt: SYNs from sources outside every mapped flow', async (t) => {
  const cmds = commands('syn-flood.pkt');
  t.ok(cmds.includes('range 0 tcp flag clr all') && cmds.includes('range 0 tcp flag set syn'), 'SYN only');
  t.ok(cmds.includes(`range 0 dst mac start ${VETH.lbMac}`));
  t.same(range(cmds, 'dst ip'), { start: VIP.ip, min: VIP.ip, max: VIP.ip, inc: '0.0.0.0' });
  const ip = range(cmds, 'src ip');
  const lo = ipv4FromString(FLOOD_SOURCES.base);
  const hi = lo + FLOOD_SOURCES.count - 1;
  for (const v of [ip.start, ip.min, ip.max]) {
    const a = ipv4FromString(v);
    t.ok(a >= lo && a <= hi, `${v} inside ${FLOOD_SOURCES.base}/10`);
  }
  const est = ipv4FromString(ESTABLISHED.clientBase);
  t.ok(hi < est || lo > est + ESTABLISHED.clients - 1, 'disjoint from the established clients: every SYN misses');
  t.equal(cmds.at(-1), 'enable 0 range');
  t.same(commands('pcap.pkt'), ['stop 0', 'disable 0 range', 'enable 0 pcap'], 'pcap mode: range off (it would take priority)');
});

t.test('the Lua scripts load the files that exist', async (t) => {
  for (const f of ['established.lua', 'syn-flood.lua', 'mix.lua']) {
    const s = read(f);
    t.match(s, /dofile\(.*"handoff\.lua"\)/, `${f} loads handoff.lua`);
    for (const m of s.matchAll(/"([a-z-]+\.pkt)"/g)) t.ok(fs.existsSync(path.join(dir, m[1]!)), `${f}: ${m[1]} exists`);
  }
  t.ok(/pktgen\.load\(M\.dir \.\. "pcap\.pkt"\)/.test(read('handoff.lua')), 'pcap mode loads pcap.pkt');
});

t.test('balancer configs load, match the scripts and fit a million mappings', async (t) => {
  const veth = loadBalancerConfig(path.join(dir, 'lb-veth.yaml'));
  t.same(veth.vips.map((v) => ({ ip: v.ip, port: v.port })), [VIP]);
  t.equal(veth.ports[0]!.ip, VETH.lbIp);
  t.match(veth.eal.vdevs[0], new RegExp(`^${veth.ports[0]!.device},iface=${VETH.lbDev}(,|$)`), 'af_packet on the balancer end of the veth');
  t.equal(veth.hosts[0]!.nexthopMac, VETH.pktgenMac, 'VXLAN goes back to Pktgen');
  const bare = loadBalancerConfig(path.join(dir, 'lb-bare-metal.yaml'));
  t.same(bare.vips.map((v) => ({ ip: v.ip, port: v.port })), [VIP]);
  t.ok(bare.eal.hugepages && bare.eal.filePrefix, 'hugepages with a file prefix, beside Pktgen');
  for (const [name, c] of [['veth', veth], ['bare metal', bare]] as const) {
    t.equal(c.routing.pools.length, 0, `${name}: forwarder only`);
    t.ok(c.limits.mappingCapacity >= flowCount(ESTABLISHED), `${name}: mappingCapacity holds the flows`);
    t.equal(c.idleSleepUs, 0, `${name}: busy-polling worker`);
  }

  const { buf, n } = encodeMappings(veth, ESTABLISHED, 0);
  t.equal(n, 1_000_000);
  const size = koffi.sizeof(Mapping);
  for (const k of [0, 1, 15624, 15625, 999_999]) {
    const o = k * size;
    t.equal(buf.readUInt32LE(o + koffi.offsetof(Mapping, 'client_ip')), flowClientIp(ESTABLISHED, k), `flow ${k} address`);
    t.equal(buf.readUInt16LE(o + koffi.offsetof(Mapping, 'client_port')), flowClientPort(ESTABLISHED, k), `flow ${k} port`);
    t.equal(buf.readUInt32LE(o + koffi.offsetof(Mapping, 'vip')), ipv4FromString(VIP.ip));
  }
  t.throws(() => encodeMappings({ ...veth, limits: { ...veth.limits, mappingCapacity: 65536 } }, ESTABLISHED, 0),
    { code: 'ERR_PKTGEN_HELPER_OPTION', message: /do not fit/ });
  t.throws(() => parseHelperArgs(['--mappings=some']), { code: 'ERR_PKTGEN_HELPER_OPTION' });
  t.throws(() => parseHelperArgs(['--clients=x']), { code: 'ERR_PKTGEN_HELPER_OPTION' });
});

t.test('pcaps: established flows, SYNs with options, SYN then request', async (t) => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'pktgen-files-'));
  t.teardown(() => fs.rmSync(out, { recursive: true, force: true }));
  const flows: FlowRange = { clientBase: '10.0.0.0', clients: 125, portBase: 1024, ports: 8 };
  const f = writePcaps({ out, flows, syns: 200, handshakes: 100, dstMac: '3c:fd:fe:00:00:01', srcMac: '3c:fd:fe:00:00:aa' });

  const est = readPcap(f.established).map(parseFrame);
  t.equal(est.length, 1000);
  const keys = new Set(est.map((p) => `${p.ipv4!.src}:${p.tcp!.srcPort}`));
  t.equal(keys.size, 1000, 'one frame per flow');
  const expected = new Set(Array.from({ length: 1000 }, (_, k) => `${ipv4ToString(flowClientIp(flows, k))}:${flowClientPort(flows, k)}`));
  t.same([...keys].filter((k) => !expected.has(k)), [], 'every frame is a mapped flow');
  t.ok(est.every((p) => p.eth.dst === '3c:fd:fe:00:00:01' && p.eth.src === '3c:fd:fe:00:00:aa'), 'MACs as given');
  t.ok(est.every((p) => p.ipv4!.dst === VIP.ip && p.tcp!.dstPort === VIP.port && p.tcp!.flags === TCP_ACK), 'ACKs to the VIP');
  t.ok(est.every((p) => p.ipv4!.checksumOk && p.tcp!.checksumOk), 'checksums rewritten per flow are valid');

  const syn = readPcap(f.synFlood).map(parseFrame);
  t.equal(syn.length, 200);
  const lo = ipv4FromString(FLOOD_SOURCES.base);
  t.ok(syn.every((p) => p.tcp!.flags === TCP_SYN && p.tcp!.checksumOk), 'valid SYNs');
  t.ok(syn.every((p) => { const a = ipv4FromString(p.ipv4!.src); return a >= lo && a < lo + FLOOD_SOURCES.count; }), 'from the flood range');
  t.ok(syn.every((p) => p.tcp!.options.subarray(0, 4).equals(Buffer.from([2, 4, 0x05, 0xb4]))), 'MSS 1460 first, as Linux');
  t.ok(new Set(syn.map((p) => `${p.ipv4!.src}:${p.tcp!.srcPort}`)).size > 190, 'random sources');

  const mix = readPcap(f.mix).map(parseFrame);
  t.equal(mix.length, 200);
  let paired = 0;
  for (let i = 0; i < mix.length; i += 2) {
    const [s, a] = [mix[i]!, mix[i + 1]!];
    if (s.tcp!.flags === TCP_SYN && a.tcp!.flags === (TCP_ACK | TCP_PSH) && s.ipv4!.src === a.ipv4!.src &&
      s.tcp!.srcPort === a.tcp!.srcPort && a.tcp!.seq === ((s.tcp!.seq + 1) >>> 0) && a.tcp!.payload.toString().startsWith('GET / HTTP/1.1\r\n')) paired++;
  }
  t.equal(paired, 100, 'each SYN followed by its ACK with the request');

  t.throws(() => writePcaps({ out, dstMac: 'nope' }), { code: 'ERR_PKTGEN_PCAP_OPTION' });
  t.throws(() => writePcaps({ out, syns: 0 }), { code: 'ERR_PKTGEN_PCAP_OPTION' });
});
