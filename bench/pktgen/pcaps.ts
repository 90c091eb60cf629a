// The pcap files Pktgen replays (`pktgen ... -- -s 0:FILE`): what range mode
// cannot send. Run directly to write them for a bare-metal run:
//   node dist/bench/pktgen/pcaps.js --out DIR --dst-mac <balancer NIC> --src-mac <Pktgen port>
// Frames carry correct IPv4 and TCP checksums; addresses come from common.ts.
import fs from 'node:fs';
import path from 'node:path';
import {
  IPPROTO_TCP, TCP_ACK, TCP_PSH, TCP_SYN, buildTcp, ipv4Checksum, ipv4FromString, macFromString, padFrame, tcpUdpChecksum,
} from '../../src/net/packet';
import { PcapWriter } from '../../src/net/pcap';
import { prng } from '../fastpath/common';
import { ESTABLISHED, FLOOD_SOURCES, FlowRange, VETH, VIP, flowClientIp, flowClientPort, flowCount } from './common';

export interface PcapOptions {
  /** Directory the files are written to (created). */
  out: string;
  /** Destination MAC: the balancer's port. Default VETH.lbMac. */
  dstMac?: string;
  /** Source MAC: Pktgen's port. Default VETH.pktgenMac. */
  srcMac?: string;
  /** The established flows. Default ESTABLISHED (1,000,000). */
  flows?: FlowRange;
  /** SYNs in syn-flood.pcap. Default 65536. */
  syns?: number;
  /** Handshakes in mix.pcap (two frames each). Default 32768. */
  handshakes?: number;
  /** PRNG seed: the same files every run. Default 1. */
  seed?: number;
}

export interface PcapFiles {
  established: string;
  synFlood: string;
  mix: string;
  /** Frames in each file. */
  frames: { established: number; synFlood: number; mix: number };
}

export class PcapOptionError extends Error {
  readonly code = 'ERR_PKTGEN_PCAP_OPTION';
}

/**
 * A Linux client's SYN options (MSS 1460, SACK permitted, timestamps, window
 * scale 7), so the cookie path parses and encodes what real clients offer.
 */
function synOptions(tsval: number): Buffer {
  const o = Buffer.from([2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0, 1, 3, 3, 7]);
  o.writeUInt32BE(tsval >>> 0, 8);
  return o;
}

/** NOP, NOP, timestamps: what follows the handshake. */
function tsOptions(tsval: number, tsecr: number): Buffer {
  const o = Buffer.from([1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0]);
  o.writeUInt32BE(tsval >>> 0, 4);
  o.writeUInt32BE(tsecr >>> 0, 8);
  return o;
}

const REQUEST = Buffer.from(`GET / HTTP/1.1\r\nHost: ${VIP.ip}\r\nUser-Agent: pktgen\r\nAccept: */*\r\n\r\n`);

function count(name: string, v: number | undefined, dflt: number): number {
  const n = v ?? dflt;
  if (!Number.isInteger(n) || n < 1 || n > 1 << 24) throw new PcapOptionError(`${name} must be an integer 1..16777216, got ${v}`);
  return n;
}

function mac(name: string, v: string): string {
  try {
    macFromString(v);
  } catch {
    throw new PcapOptionError(`${name}: '${v}' is not a MAC address`);
  }
  return v;
}

/**
 * Write established.pcap (one ACK per established flow, in range-walk order),
 * syn-flood.pcap (SYNs with Linux options from random sources) and mix.pcap
 * (per handshake a SYN, then an ACK carrying an HTTP request whose
 * acknowledgement number cannot be the balancer's cookie).
 * @throws PcapOptionError, FlowRangeError, and file system errors
 */
export function writePcaps(o: PcapOptions): PcapFiles {
  const flows = o.flows ?? ESTABLISHED;
  const n = flowCount(flows);
  const syns = count('syns', o.syns, 65536);
  const handshakes = count('handshakes', o.handshakes, 32768);
  const l2 = { dstMac: mac('dstMac', o.dstMac ?? VETH.lbMac), srcMac: mac('srcMac', o.srcMac ?? VETH.pktgenMac) };
  const vip = ipv4FromString(VIP.ip);
  const rnd = prng(o.seed ?? 1);
  const u32 = () => Math.floor(rnd() * 0x100000000) >>> 0;
  const floodBase = ipv4FromString(FLOOD_SOURCES.base);
  const floodSource = () => ({
    srcIp: (floodBase + Math.floor(rnd() * FLOOD_SOURCES.count)) >>> 0,
    srcPort: 1024 + Math.floor(rnd() * 64512),
  });
  fs.mkdirSync(o.out, { recursive: true });
  const files = {
    established: path.join(o.out, 'established.pcap'),
    synFlood: path.join(o.out, 'syn-flood.pcap'),
    mix: path.join(o.out, 'mix.pcap'),
  };

  // A million frames: one template, and per flow only the source address and
  // port and both checksums rewritten (buildTcp per frame takes a minute).
  const frame = padFrame(buildTcp({
    ...l2, srcIp: flowClientIp(flows, 0), dstIp: vip, srcPort: flowClientPort(flows, 0), dstPort: VIP.port,
    seq: 1000, ack: 2000, flags: TCP_ACK, window: 502,
  }));
  const IP = 14;
  const TCP = IP + 20;
  let w = new PcapWriter(files.established);
  try {
    for (let k = 0; k < n; k++) {
      const src = flowClientIp(flows, k);
      frame.writeUInt32BE(src, IP + 12);
      frame.writeUInt16BE(0, IP + 10);
      frame.writeUInt16BE(ipv4Checksum(frame, IP, 20), IP + 10);
      frame.writeUInt16BE(flowClientPort(flows, k), TCP);
      frame.writeUInt16BE(0, TCP + 16);
      frame.writeUInt16BE(tcpUdpChecksum(src, vip, IPPROTO_TCP, frame, TCP, 20), TCP + 16);
      w.write(frame);
    }
  } finally {
    w.close();
  }

  w = new PcapWriter(files.synFlood);
  try {
    for (let i = 0; i < syns; i++) {
      w.write(buildTcp({
        ...l2, ...floodSource(), dstIp: vip, dstPort: VIP.port, seq: u32(), ack: 0, flags: TCP_SYN, window: 64240,
        options: synOptions(u32()),
      }));
    }
  } finally {
    w.close();
  }

  w = new PcapWriter(files.mix);
  try {
    for (let i = 0; i < handshakes; i++) {
      const src = floodSource();
      const isn = u32();
      const ts = u32();
      w.write(buildTcp({ ...l2, ...src, dstIp: vip, dstPort: VIP.port, seq: isn, ack: 0, flags: TCP_SYN, window: 64240, options: synOptions(ts) }));
      // The balancer's cookie depends on its secret and clock: no file can hold it.
      w.write(buildTcp({
        ...l2, ...src, dstIp: vip, dstPort: VIP.port, seq: (isn + 1) >>> 0, ack: u32(), flags: TCP_ACK | TCP_PSH, window: 502,
        options: tsOptions(ts + 1, u32()), payload: REQUEST,
      }));
    }
  } finally {
    w.close();
  }
  return { ...files, frames: { established: n, synFlood: syns, mix: 2 * handshakes } };
}

function parseArgs(argv: string[]): PcapOptions {
  const o: Partial<PcapOptions> = {};
  const flows = { ...ESTABLISHED };
  for (const a of argv) {
    const m = /^--([a-z-]+)=(.*)$/.exec(a);
    if (!m) throw new PcapOptionError(`unknown argument '${a}' (use --name=value)`);
    const [, k, v] = m;
    if (k === 'out') o.out = v;
    else if (k === 'dst-mac') o.dstMac = v;
    else if (k === 'src-mac') o.srcMac = v;
    else if (k === 'syns') o.syns = Number(v);
    else if (k === 'handshakes') o.handshakes = Number(v);
    else if (k === 'clients') flows.clients = Number(v);
    else if (k === 'ports') flows.ports = Number(v);
    else if (k === 'client-base') flows.clientBase = v;
    else if (k === 'port-base') flows.portBase = Number(v);
    else throw new PcapOptionError(`unknown option --${k}`);
  }
  if (!o.out) throw new PcapOptionError('--out=DIR is required');
  return { ...o, out: o.out, flows };
}

if (require.main === module) {
  try {
    const t0 = Date.now();
    const f = writePcaps(parseArgs(process.argv.slice(2)));
    console.log(`established ${f.established} (${f.frames.established} frames)\n` +
      `syn-flood   ${f.synFlood} (${f.frames.synFlood} frames)\nmix         ${f.mix} (${f.frames.mix} frames)\n` +
      `written in ${Date.now() - t0} ms`);
  } catch (err) {
    console.error(`pcaps: ${(err as Error).message}`);
    process.exit(2);
  }
}
