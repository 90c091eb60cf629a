// Packet construction and parsing for tests and benchmarks. Not the fast
// path: clarity and strict validation win over speed here.

export const ETH_ALEN = 6;
export const ETH_HLEN = 14;
export const VLAN_HLEN = 4;
/** Minimum Ethernet frame length without FCS; NICs pad shorter frames. */
export const ETH_ZLEN = 60;

export const ETHERTYPE_IPV4 = 0x0800;
export const ETHERTYPE_ARP = 0x0806;
export const ETHERTYPE_VLAN = 0x8100;
export const ETHERTYPE_IPV6 = 0x86dd;

export const IPPROTO_ICMP = 1;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;
export const TCP_URG = 0x20;
export const TCP_ECE = 0x40;
export const TCP_CWR = 0x80;

export const ARP_OP_REQUEST = 1;
export const ARP_OP_REPLY = 2;

export const ICMP_ECHO_REPLY = 0;
export const ICMP_ECHO_REQUEST = 8;

export const VXLAN_PORT = 4789;
export const VXLAN_HLEN = 8;
/** VXLAN "I" flag: VNI field is valid (RFC 7348). */
export const VXLAN_FLAG_VNI = 0x08;

export const BROADCAST_MAC = Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);

/** A MAC as 6-byte Buffer or 'aa:bb:cc:dd:ee:ff' / 'aa-bb-...' string. */
export type MacAddress = Buffer | string;
/** An IPv4 address as host-order uint32 or dotted quad. */
export type IPv4Address = number | string;

/** Thrown by parseFrame for truncated or malformed input. */
export class PacketParseError extends Error {
  override name = 'PacketParseError';
}

// ---------------------------------------------------------------- addresses

export function macFromString(s: string): Buffer {
  const m = /^([0-9a-f]{2})([:-])([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})$/i.exec(s);
  if (!m) throw new Error(`invalid MAC address: ${JSON.stringify(s)}`);
  return Buffer.from([m[1], m[3], m[4], m[5], m[6], m[7]].map((h) => parseInt(h!, 16)));
}

export function macToString(buf: Buffer, off = 0): string {
  if (off < 0 || off + ETH_ALEN > buf.length) throw new RangeError(`macToString: need 6 bytes at offset ${off}, buffer has ${buf.length}`);
  const parts: string[] = [];
  for (let i = 0; i < ETH_ALEN; i++) parts.push(buf[off + i]!.toString(16).padStart(2, '0'));
  return parts.join(':');
}

export function ipv4FromString(s: string): number {
  const parts = s.split('.');
  // Strict decimal only: inet_aton-style "10.1" or octal "010" would hide typos in tests.
  if (parts.length !== 4 || !parts.every((p) => /^(0|[1-9][0-9]{0,2})$/.test(p) && Number(p) <= 255)) {
    throw new Error(`invalid IPv4 address: ${JSON.stringify(s)}`);
  }
  return ((Number(parts[0]) << 24) | (Number(parts[1]) << 16) | (Number(parts[2]) << 8) | Number(parts[3])) >>> 0;
}

export function ipv4ToString(n: number): string {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new RangeError(`invalid IPv4 address value: ${n}`);
  return `${n >>> 24}.${(n >>> 16) & 0xff}.${(n >>> 8) & 0xff}.${n & 0xff}`;
}

function toMac(name: string, m: MacAddress): Buffer {
  if (typeof m === 'string') return macFromString(m);
  if (!Buffer.isBuffer(m) || m.length !== ETH_ALEN) throw new Error(`${name}: MAC must be a 6-byte Buffer or string`);
  return m;
}

function toIp(name: string, a: IPv4Address): number {
  if (typeof a === 'string') return ipv4FromString(a);
  if (!Number.isInteger(a) || a < 0 || a > 0xffffffff) throw new RangeError(`${name}: invalid IPv4 address value ${a}`);
  return a;
}

function checkUint(name: string, v: number, max: number): number {
  if (!Number.isInteger(v) || v < 0 || v > max) throw new RangeError(`${name} must be an integer in [0, ${max}], got ${v}`);
  return v;
}

// ---------------------------------------------------------------- checksums

/** RFC 1071 ones-complement sum of 16-bit big-endian words, folded to 16 bits. */
export function onesComplementSum(buf: Buffer, off = 0, len = buf.length - off, initial = 0): number {
  if (off < 0 || len < 0 || off + len > buf.length) throw new RangeError(`checksum range [${off}, ${off + len}) outside buffer of ${buf.length}`);
  let sum = initial;
  const end = off + len;
  let i = off;
  for (; i + 1 < end; i += 2) sum += (buf[i]! << 8) | buf[i + 1]!;
  if (i < end) sum += buf[i]! << 8; // odd length: pad with a zero byte
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return sum;
}

/**
 * Internet checksum of buf[off, off+len). Over a header whose checksum field
 * is zero it yields the value to store; over a valid header it yields 0.
 */
export function ipv4Checksum(buf: Buffer, off = 0, len = buf.length - off): number {
  return ~onesComplementSum(buf, off, len) & 0xffff;
}

/**
 * TCP/UDP checksum over the IPv4 pseudo-header plus the L4 segment
 * seg[off, off+len). Same zero/verify semantics as ipv4Checksum. UDP senders
 * must transmit a computed 0 as 0xffff (buildUdp does), since 0 means "none".
 */
export function tcpUdpChecksum(
  srcIp: IPv4Address,
  dstIp: IPv4Address,
  proto: number,
  seg: Buffer,
  off = 0,
  len = seg.length - off,
): number {
  const s = toIp('srcIp', srcIp);
  const d = toIp('dstIp', dstIp);
  checkUint('L4 length', len, 0xffff);
  const pseudo = (s >>> 16) + (s & 0xffff) + (d >>> 16) + (d & 0xffff) + checkUint('proto', proto, 0xff) + len;
  return ~onesComplementSum(seg, off, len, pseudo) & 0xffff;
}

// ---------------------------------------------------------------- builders

export interface EthernetOptions {
  srcMac: MacAddress;
  dstMac: MacAddress;
  /** 802.1Q VLAN ID; the TCI carries it with PCP=0, DEI=0. */
  vlan?: number;
}

export interface Ipv4Options extends EthernetOptions {
  srcIp: IPv4Address;
  dstIp: IPv4Address;
  ttl?: number;
  ipId?: number;
  tos?: number;
  dontFragment?: boolean;
  moreFragments?: boolean;
  /** Fragment offset in 8-byte units, as in the header field. */
  fragOffset?: number;
  /** Zero-padded to a multiple of 4 bytes; at most 40 bytes. */
  ipOptions?: Buffer;
}

export interface TcpOptions extends Ipv4Options {
  srcPort: number;
  dstPort: number;
  seq: number;
  ack: number;
  /** Bitwise OR of TCP_* constants. */
  flags: number;
  window: number;
  urgentPointer?: number;
  /** Raw TCP options; zero-padded (EOL) to a multiple of 4; at most 40 bytes. */
  options?: Buffer;
  payload?: Buffer;
}

export interface UdpOptions extends Ipv4Options {
  srcPort: number;
  dstPort: number;
  payload: Buffer;
  /** false leaves the checksum field 0 ("not computed"). Default true. */
  udpChecksum?: boolean;
}

export interface IcmpEchoOptions extends Ipv4Options {
  id: number;
  seq: number;
  payload?: Buffer;
  /** Build an echo reply (type 0) instead of a request (type 8). */
  reply?: boolean;
}

export interface VxlanOptions extends Omit<UdpOptions, 'payload' | 'dstPort'> {
  vni: number;
  /** Complete inner Ethernet frame. */
  inner: Buffer;
  dstPort?: number;
}

export interface ArpRequestOptions {
  srcMac: MacAddress;
  srcIp: IPv4Address;
  targetIp: IPv4Address;
  vlan?: number;
}

export interface ArpReplyOptions {
  srcMac: MacAddress;
  srcIp: IPv4Address;
  dstMac: MacAddress;
  dstIp: IPv4Address;
  vlan?: number;
}

function pad4(name: string, b: Buffer | undefined): Buffer {
  if (!b || b.length === 0) return Buffer.alloc(0);
  const padded = (b.length + 3) & ~3;
  if (padded > 40) throw new RangeError(`${name}: at most 40 bytes, got ${b.length}`);
  if (padded === b.length) return b;
  const out = Buffer.alloc(padded);
  b.copy(out);
  return out;
}

/** Ethernet frame around an arbitrary payload. */
export function buildEthernet(opts: EthernetOptions & { etherType: number; payload: Buffer }): Buffer {
  const dst = toMac('dstMac', opts.dstMac);
  const src = toMac('srcMac', opts.srcMac);
  const tagged = opts.vlan !== undefined;
  const hlen = ETH_HLEN + (tagged ? VLAN_HLEN : 0);
  const buf = Buffer.alloc(hlen + opts.payload.length);
  dst.copy(buf, 0);
  src.copy(buf, 6);
  let off = 12;
  if (tagged) {
    buf.writeUInt16BE(ETHERTYPE_VLAN, off);
    buf.writeUInt16BE(checkUint('vlan', opts.vlan!, 0xfff), off + 2);
    off += 4;
  }
  buf.writeUInt16BE(checkUint('etherType', opts.etherType, 0xffff), off);
  opts.payload.copy(buf, hlen);
  return buf;
}

/** IPv4 packet (header checksum filled in) around an already-built L4 payload. */
export function buildIpv4(opts: Ipv4Options & { proto: number; payload: Buffer }): Buffer {
  const ipOpts = pad4('ipOptions', opts.ipOptions);
  const ihl = 20 + ipOpts.length;
  const total = ihl + opts.payload.length;
  if (total > 0xffff) throw new RangeError(`IPv4 total length ${total} exceeds 65535`);
  const frag = checkUint('fragOffset', opts.fragOffset ?? 0, 0x1fff);
  const ip = Buffer.alloc(total);
  ip[0] = 0x40 | (ihl >> 2);
  ip[1] = checkUint('tos', opts.tos ?? 0, 0xff);
  ip.writeUInt16BE(total, 2);
  ip.writeUInt16BE(checkUint('ipId', opts.ipId ?? 0, 0xffff), 4);
  ip.writeUInt16BE((opts.dontFragment ? 0x4000 : 0) | (opts.moreFragments ? 0x2000 : 0) | frag, 6);
  ip[8] = checkUint('ttl', opts.ttl ?? 64, 0xff);
  ip[9] = checkUint('proto', opts.proto, 0xff);
  ip.writeUInt32BE(toIp('srcIp', opts.srcIp), 12);
  ip.writeUInt32BE(toIp('dstIp', opts.dstIp), 16);
  ipOpts.copy(ip, 20);
  ip.writeUInt16BE(ipv4Checksum(ip, 0, ihl), 10);
  opts.payload.copy(ip, ihl);
  return buildEthernet({ ...opts, etherType: ETHERTYPE_IPV4, payload: ip });
}

/**
 * fragOffset/moreFragments only set IPv4 header fields; the TCP segment is
 * still complete and checksummed, which is enough to drive fragment paths.
 */
export function buildTcp(opts: TcpOptions): Buffer {
  const tcpOpts = pad4('TCP options', opts.options);
  const payload = opts.payload ?? Buffer.alloc(0);
  const hlen = 20 + tcpOpts.length;
  const seg = Buffer.alloc(hlen + payload.length);
  seg.writeUInt16BE(checkUint('srcPort', opts.srcPort, 0xffff), 0);
  seg.writeUInt16BE(checkUint('dstPort', opts.dstPort, 0xffff), 2);
  seg.writeUInt32BE(checkUint('seq', opts.seq, 0xffffffff), 4);
  seg.writeUInt32BE(checkUint('ack', opts.ack, 0xffffffff), 8);
  seg[12] = (hlen >> 2) << 4;
  seg[13] = checkUint('flags', opts.flags, 0xff);
  seg.writeUInt16BE(checkUint('window', opts.window, 0xffff), 14);
  seg.writeUInt16BE(checkUint('urgentPointer', opts.urgentPointer ?? 0, 0xffff), 18);
  tcpOpts.copy(seg, 20);
  payload.copy(seg, hlen);
  seg.writeUInt16BE(tcpUdpChecksum(opts.srcIp, opts.dstIp, IPPROTO_TCP, seg), 16);
  return buildIpv4({ ...opts, proto: IPPROTO_TCP, payload: seg });
}

export function buildUdp(opts: UdpOptions): Buffer {
  const seg = Buffer.alloc(8 + opts.payload.length);
  seg.writeUInt16BE(checkUint('srcPort', opts.srcPort, 0xffff), 0);
  seg.writeUInt16BE(checkUint('dstPort', opts.dstPort, 0xffff), 2);
  seg.writeUInt16BE(checkUint('UDP length', seg.length, 0xffff), 4);
  opts.payload.copy(seg, 8);
  if (opts.udpChecksum ?? true) {
    seg.writeUInt16BE(tcpUdpChecksum(opts.srcIp, opts.dstIp, IPPROTO_UDP, seg) || 0xffff, 6);
  }
  return buildIpv4({ ...opts, proto: IPPROTO_UDP, payload: seg });
}

export function buildIcmpEcho(opts: IcmpEchoOptions): Buffer {
  const payload = opts.payload ?? Buffer.alloc(0);
  const msg = Buffer.alloc(8 + payload.length);
  msg[0] = opts.reply ? ICMP_ECHO_REPLY : ICMP_ECHO_REQUEST;
  msg.writeUInt16BE(checkUint('id', opts.id, 0xffff), 4);
  msg.writeUInt16BE(checkUint('seq', opts.seq, 0xffff), 6);
  payload.copy(msg, 8);
  msg.writeUInt16BE(ipv4Checksum(msg), 2);
  return buildIpv4({ ...opts, proto: IPPROTO_ICMP, payload: msg });
}

/** VXLAN-encapsulated frame: outer Ethernet/IPv4/UDP, VXLAN header, `inner`. */
export function buildVxlan(opts: VxlanOptions): Buffer {
  const hdr = Buffer.alloc(VXLAN_HLEN);
  hdr[0] = VXLAN_FLAG_VNI;
  hdr.writeUIntBE(checkUint('vni', opts.vni, 0xffffff), 4, 3);
  return buildUdp({ ...opts, dstPort: opts.dstPort ?? VXLAN_PORT, payload: Buffer.concat([hdr, opts.inner]) });
}

function buildArp(op: number, sha: Buffer, spa: number, tha: Buffer, tpa: number, ethDst: Buffer, vlan?: number): Buffer {
  const arp = Buffer.alloc(28);
  arp.writeUInt16BE(1, 0); // htype Ethernet
  arp.writeUInt16BE(ETHERTYPE_IPV4, 2);
  arp[4] = ETH_ALEN;
  arp[5] = 4;
  arp.writeUInt16BE(op, 6);
  sha.copy(arp, 8);
  arp.writeUInt32BE(spa, 14);
  tha.copy(arp, 18);
  arp.writeUInt32BE(tpa, 24);
  return buildEthernet({ srcMac: sha, dstMac: ethDst, vlan, etherType: ETHERTYPE_ARP, payload: arp });
}

/** Broadcast who-has; THA is zero. Use targetIp === srcIp for gratuitous ARP. */
export function buildArpRequest(opts: ArpRequestOptions): Buffer {
  const sha = toMac('srcMac', opts.srcMac);
  return buildArp(ARP_OP_REQUEST, sha, toIp('srcIp', opts.srcIp), Buffer.alloc(ETH_ALEN), toIp('targetIp', opts.targetIp), BROADCAST_MAC, opts.vlan);
}

export function buildArpReply(opts: ArpReplyOptions): Buffer {
  const sha = toMac('srcMac', opts.srcMac);
  const tha = toMac('dstMac', opts.dstMac);
  return buildArp(ARP_OP_REPLY, sha, toIp('srcIp', opts.srcIp), tha, toIp('dstIp', opts.dstIp), tha, opts.vlan);
}

/** Zero-pads a frame to `min` bytes (default 60, the Ethernet minimum without FCS). */
export function padFrame(frame: Buffer, min = ETH_ZLEN): Buffer {
  if (frame.length >= min) return frame;
  const out = Buffer.alloc(min);
  frame.copy(out);
  return out;
}

// ---------------------------------------------------------------- parser

export interface ParsedEthernet {
  dst: string;
  src: string;
  /** VLAN ID from the 802.1Q tag, if tagged. */
  vlan?: number;
  /** Full TCI (PCP/DEI/VID), if tagged. */
  vlanTci?: number;
  /** EtherType after any VLAN tag. */
  etherType: number;
  headerLength: number;
}

export interface ParsedArp {
  htype: number;
  ptype: number;
  op: number;
  sha: string;
  spa: string;
  tha: string;
  tpa: string;
}

export interface ParsedIpv4 {
  version: number;
  /** Header length in 32-bit words, as in the header. */
  ihl: number;
  headerLength: number;
  tos: number;
  totalLength: number;
  id: number;
  dontFragment: boolean;
  moreFragments: boolean;
  /** In 8-byte units. */
  fragOffset: number;
  ttl: number;
  proto: number;
  checksum: number;
  checksumOk: boolean;
  src: string;
  dst: string;
  options: Buffer;
  /** Bytes after the IP header up to totalLength (Ethernet padding excluded). */
  payload: Buffer;
}

export interface ParsedTcp {
  srcPort: number;
  dstPort: number;
  seq: number;
  ack: number;
  /** Header length in bytes (data offset * 4). */
  headerLength: number;
  flags: number;
  window: number;
  checksum: number;
  /** null for IP fragments, where the segment is incomplete. */
  checksumOk: boolean | null;
  urgentPointer: number;
  options: Buffer;
  payload: Buffer;
}

export interface ParsedUdp {
  srcPort: number;
  dstPort: number;
  length: number;
  checksum: number;
  /** null when the sender left the checksum 0, or for IP fragments. */
  checksumOk: boolean | null;
  payload: Buffer;
}

export interface ParsedIcmp {
  type: number;
  code: number;
  checksum: number;
  checksumOk: boolean;
  /** Echo request/reply identifier and sequence. */
  id?: number;
  seq?: number;
  payload: Buffer;
}

export interface ParsedVxlan {
  flags: number;
  vni: number;
  inner: ParsedFrame;
}

export interface ParsedFrame {
  eth: ParsedEthernet;
  arp?: ParsedArp;
  ipv4?: ParsedIpv4;
  tcp?: ParsedTcp;
  udp?: ParsedUdp;
  icmp?: ParsedIcmp;
  vxlan?: ParsedVxlan;
}

function need(buf: Buffer, off: number, n: number, what: string): void {
  if (off + n > buf.length) {
    throw new PacketParseError(`truncated ${what}: need ${n} bytes at offset ${off}, frame has ${buf.length - off} left`);
  }
}

/**
 * Decodes Ethernet [802.1Q] / ARP | IPv4 / TCP | UDP [VXLAN / inner] | ICMP.
 * Returned Buffers are views into `buf`. Throws PacketParseError on
 * truncated or malformed headers; unknown EtherTypes/protocols stop decoding.
 */
export function parseFrame(buf: Buffer): ParsedFrame {
  need(buf, 0, ETH_HLEN, 'Ethernet header');
  const eth: ParsedEthernet = { dst: macToString(buf, 0), src: macToString(buf, 6), etherType: buf.readUInt16BE(12), headerLength: ETH_HLEN };
  if (eth.etherType === ETHERTYPE_VLAN) {
    need(buf, 12, 8, '802.1Q tag');
    eth.vlanTci = buf.readUInt16BE(14);
    eth.vlan = eth.vlanTci & 0xfff;
    eth.etherType = buf.readUInt16BE(16);
    eth.headerLength += VLAN_HLEN;
  }
  const out: ParsedFrame = { eth };
  const off = eth.headerLength;
  if (eth.etherType === ETHERTYPE_ARP) out.arp = parseArp(buf, off);
  else if (eth.etherType === ETHERTYPE_IPV4) parseIpv4(buf, off, out);
  return out;
}

function parseArp(buf: Buffer, off: number): ParsedArp {
  need(buf, off, 8, 'ARP header');
  const htype = buf.readUInt16BE(off);
  const ptype = buf.readUInt16BE(off + 2);
  if (htype !== 1 || ptype !== ETHERTYPE_IPV4 || buf[off + 4] !== 6 || buf[off + 5] !== 4) {
    throw new PacketParseError(`unsupported ARP: htype ${htype} ptype 0x${ptype.toString(16)} hlen ${buf[off + 4]} plen ${buf[off + 5]}`);
  }
  need(buf, off, 28, 'ARP packet');
  return {
    htype,
    ptype,
    op: buf.readUInt16BE(off + 6),
    sha: macToString(buf, off + 8),
    spa: ipv4ToString(buf.readUInt32BE(off + 14)),
    tha: macToString(buf, off + 18),
    tpa: ipv4ToString(buf.readUInt32BE(off + 24)),
  };
}

function parseIpv4(buf: Buffer, off: number, out: ParsedFrame): void {
  need(buf, off, 20, 'IPv4 header');
  const version = buf[off]! >> 4;
  const ihl = buf[off]! & 0x0f;
  if (version !== 4) throw new PacketParseError(`EtherType is IPv4 but IP version is ${version}`);
  if (ihl < 5) throw new PacketParseError(`malformed IPv4 header: IHL ${ihl} < 5`);
  const hlen = ihl * 4;
  need(buf, off, hlen, 'IPv4 header with options');
  const totalLength = buf.readUInt16BE(off + 2);
  if (totalLength < hlen) throw new PacketParseError(`malformed IPv4 header: total length ${totalLength} < header length ${hlen}`);
  need(buf, off, totalLength, 'IPv4 packet');
  const fragWord = buf.readUInt16BE(off + 6);
  const src = buf.readUInt32BE(off + 12);
  const dst = buf.readUInt32BE(off + 16);
  const ip: ParsedIpv4 = {
    version,
    ihl,
    headerLength: hlen,
    tos: buf[off + 1]!,
    totalLength,
    id: buf.readUInt16BE(off + 4),
    dontFragment: (fragWord & 0x4000) !== 0,
    moreFragments: (fragWord & 0x2000) !== 0,
    fragOffset: fragWord & 0x1fff,
    ttl: buf[off + 8]!,
    proto: buf[off + 9]!,
    checksum: buf.readUInt16BE(off + 10),
    checksumOk: ipv4Checksum(buf, off, hlen) === 0,
    src: ipv4ToString(src),
    dst: ipv4ToString(dst),
    options: buf.subarray(off + 20, off + hlen),
    payload: buf.subarray(off + hlen, off + totalLength),
  };
  out.ipv4 = ip;
  // Only the first fragment carries the L4 header.
  if (ip.fragOffset !== 0) return;
  const isFragment = ip.moreFragments;
  const l4 = ip.payload;
  const l4Abs = off + hlen;
  if (ip.proto === IPPROTO_TCP) out.tcp = parseTcp(l4, l4Abs, src, dst, isFragment);
  else if (ip.proto === IPPROTO_UDP) {
    out.udp = parseUdp(l4, l4Abs, src, dst, isFragment);
    if (out.udp.dstPort === VXLAN_PORT && !isFragment) out.vxlan = parseVxlan(out.udp.payload, l4Abs + 8);
  } else if (ip.proto === IPPROTO_ICMP && !isFragment) out.icmp = parseIcmp(l4, l4Abs);
}

// `seg` is bounded by the IP total length; `abs` is its offset in the frame, for error messages.
function needL4(seg: Buffer, abs: number, n: number, what: string): void {
  if (n > seg.length) throw new PacketParseError(`truncated ${what}: need ${n} bytes at offset ${abs}, IPv4 payload has ${seg.length}`);
}

function parseTcp(seg: Buffer, abs: number, src: number, dst: number, isFragment: boolean): ParsedTcp {
  needL4(seg, abs, 20, 'TCP header');
  const hlen = (seg[12]! >> 4) * 4;
  if (hlen < 20) throw new PacketParseError(`malformed TCP header: data offset ${hlen / 4} < 5`);
  needL4(seg, abs, hlen, 'TCP header with options');
  return {
    srcPort: seg.readUInt16BE(0),
    dstPort: seg.readUInt16BE(2),
    seq: seg.readUInt32BE(4),
    ack: seg.readUInt32BE(8),
    headerLength: hlen,
    flags: seg[13]!,
    window: seg.readUInt16BE(14),
    checksum: seg.readUInt16BE(16),
    checksumOk: isFragment ? null : tcpUdpChecksum(src, dst, IPPROTO_TCP, seg) === 0,
    urgentPointer: seg.readUInt16BE(18),
    options: seg.subarray(20, hlen),
    payload: seg.subarray(hlen),
  };
}

function parseUdp(seg: Buffer, abs: number, src: number, dst: number, isFragment: boolean): ParsedUdp {
  needL4(seg, abs, 8, 'UDP header');
  const length = seg.readUInt16BE(4);
  if (length < 8) throw new PacketParseError(`malformed UDP header: length ${length} < 8`);
  if (!isFragment) needL4(seg, abs, length, 'UDP datagram');
  const checksum = seg.readUInt16BE(6);
  const end = Math.min(length, seg.length);
  return {
    srcPort: seg.readUInt16BE(0),
    dstPort: seg.readUInt16BE(2),
    length,
    checksum,
    checksumOk: isFragment || checksum === 0 ? null : tcpUdpChecksum(src, dst, IPPROTO_UDP, seg, 0, length) === 0,
    payload: seg.subarray(8, end),
  };
}

function parseIcmp(msg: Buffer, abs: number): ParsedIcmp {
  needL4(msg, abs, 8, 'ICMP header');
  const type = msg[0]!;
  const icmp: ParsedIcmp = {
    type,
    code: msg[1]!,
    checksum: msg.readUInt16BE(2),
    checksumOk: ipv4Checksum(msg) === 0,
    payload: msg.subarray(8),
  };
  if (type === ICMP_ECHO_REQUEST || type === ICMP_ECHO_REPLY) {
    icmp.id = msg.readUInt16BE(4);
    icmp.seq = msg.readUInt16BE(6);
  }
  return icmp;
}

function parseVxlan(data: Buffer, abs: number): ParsedVxlan {
  if (data.length < VXLAN_HLEN) {
    throw new PacketParseError(`truncated VXLAN header: need ${VXLAN_HLEN} bytes at offset ${abs}, UDP payload has ${data.length}`);
  }
  let inner: ParsedFrame;
  try {
    inner = parseFrame(data.subarray(VXLAN_HLEN));
  } catch (e) {
    // Inner offsets are relative to the inner frame; say so.
    if (e instanceof PacketParseError) throw new PacketParseError(`VXLAN inner frame (at offset ${abs + VXLAN_HLEN}): ${e.message}`);
    throw e;
  }
  return { flags: data[0]!, vni: data.readUIntBE(4, 3), inner };
}
