// The synthetic clients and host agents of the handoff benchmark. They run on
// the Node thread next to the engine (a ring port lives in one process), so
// they are written to cost as little as possible:
//
// - Frames are built from templates into the inject burst in place: only the
//   fields that differ per connection are written, and the IPv4 and TCP
//   checksums are finished from precomputed sums of the constant words.
// - A connection's index is its 4-tuple (client address and port), so frames
//   coming back are matched with arithmetic, and per-connection state lives in
//   typed arrays allocated once.
// - The stand-in host does not reassemble or verify blobs: every blob is one
//   fragment (the request is ~100 bytes), and it answers the DATA datagram
//   with an ACK and a FINAL (status OK) as the real agent does (reassembly.ts:
//   the full ACK, then the FINAL once injected). The first few blobs are
//   decoded in full (HMAC, fields, request bytes) so the benchmark cannot
//   measure something that does not work.
//
// Clients behave like Linux: SYN with MSS, SACK-permitted, timestamps and
// window scale; then the handshake ACK and the request in a second segment,
// injected together (or, for the wake measurement, the request on the
// handshake ACK itself: one segment, one event). Checksums are valid.
//
// The child (child.ts) calls pump() in its own loop and also at every
// exceptionBurst() of the engine, so hosts answer while a long engine.step()
// runs, as concurrent hosts would.
import { PacketBurst, PKT_MAX, Shim } from '../../src/offload';
import {
  buildTcp, buildUdp, ipv4FromString, onesComplementSum, TCP_ACK, TCP_PSH, TCP_RST, TCP_SYN,
} from '../../src/net';
import { crc32c, decodeBlob, encodeAck, encodeFinal, ReplayWindow, Status } from '../../src/transfer';
import {
  BLOB_PORT, CLIENT_MAC, CLIENT_NET, CLUSTER_KEY, HOSTS, LB, PARTIAL_REQUEST, PORT_BASE, PORTS_PER_IP, REQUEST, VIP,
} from './common';

// Frame offsets (Ethernet without VLAN, IPv4 without options).
const IP = 14;
const IP_CSUM = 24;
const IP_SRC = 26;
const IP_DST = 30;
const L4 = 34;
const TCP_SEQ = 38;
const TCP_ACKNO = 42;
const TCP_FLAGS = 47;
const TCP_CSUM = 50;
const TCP_OPT = 54;
/** SYN options as Linux: MSS, SACK-permitted, timestamps, NOP, window scale 7. */
const SYN_OPTS = Buffer.from('020405b40402080a000000000000000001030307', 'hex');
const SYN_TSVAL = TCP_OPT + 8;
/** Later segments: NOP, NOP, timestamps. */
const TS_OPTS = Buffer.from('0101080a0000000000000000', 'hex');
const TS_VAL = TCP_OPT + 4;
const TS_ECR = TCP_OPT + 8;
const UDP_PAYLOAD = 42;

const CONN_SYN = 1;
const CONN_SYNACKED = 2;
const CONN_DATA = 3;
const CONN_DONE = 4;
const CONN_FAILED = 5;

const w16 = (b: Uint8Array, o: number, v: number) => { b[o] = v >>> 8; b[o + 1] = v & 0xff; };
const w32 = (b: Uint8Array, o: number, v: number) => {
  b[o] = v >>> 24; b[o + 1] = (v >>> 16) & 0xff; b[o + 2] = (v >>> 8) & 0xff; b[o + 3] = v & 0xff;
};
const r16 = (b: Uint8Array, o: number) => (b[o] << 8) | b[o + 1];
const r32 = (b: Uint8Array, o: number) => ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0;
const fold = (s: number) => {
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
};
const words32 = (v: number) => (v >>> 16) + (v & 0xffff);

/**
 * A client TCP segment template: the variable fields (client address, port,
 * seq, ack, timestamps) are zero in `buf`, and `ipSum`/`tcpSum` hold the
 * ones-complement sums of everything else (pseudo-header included).
 */
interface TcpTemplate { buf: Buffer; ipSum: number; tcpSum: number; tsVal: number; tsEcr: number }

function tcpTemplate(flags: number, options: Buffer, tsVal: number, tsEcr: number, payload?: Buffer): TcpTemplate {
  const buf = buildTcp({
    srcMac: CLIENT_MAC, dstMac: LB.mac, srcIp: 0, dstIp: VIP.ip, srcPort: 0, dstPort: VIP.port,
    seq: 0, ack: 0, flags, window: 502, options, payload, dontFragment: true,
  });
  buf[IP_CSUM] = buf[IP_CSUM + 1] = 0;
  buf[TCP_CSUM] = buf[TCP_CSUM + 1] = 0;
  const ipSum = onesComplementSum(buf, IP, 20);
  const tcpLen = buf.length - L4;
  const vip = ipv4FromString(VIP.ip);
  const tcpSum = onesComplementSum(buf, L4, tcpLen, words32(vip) + 6 + tcpLen);
  return { buf, ipSum, tcpSum, tsVal, tsEcr };
}

/** Per-host reply templates (ACK and FINAL datagrams to the balancer's blob port). */
interface HostReply { ip: number; name: string; ack: Buffer; final: Buffer }

function hostReply(h: (typeof HOSTS)[number]): HostReply {
  const udp = (payload: Buffer) => {
    const f = buildUdp({ srcMac: h.nexthopMac, dstMac: LB.mac, srcIp: h.ip, dstIp: LB.ip, srcPort: h.agentPort,
      dstPort: BLOB_PORT, payload });
    // No UDP checksum (0 is legal over IPv4): the datagram's own CRC32C protects it.
    f[L4 + 6] = f[L4 + 7] = 0;
    return f;
  };
  // The full ACK of a one-fragment blob, and the FINAL with status 0 (injected);
  // session and blob id are filled in per blob.
  const ack = encodeAck({ session: 0, blobId: 0, count: 1, bitmap: Uint8Array.of(1) });
  const final = encodeFinal({ session: 0, blobId: 0, status: Status.OK });
  return { ip: ipv4FromString(h.ip), name: h.name, ack: udp(ack), final: udp(final) };
}

export interface DriverStats {
  synSent: number;
  synAcks: number;
  dataAcks: number;
  resets: number;
  blobs: number;
  /** Frames the driver did not expect (not counted above). */
  other: number;
  duplicates: number;
  completed: number;
  failed: number;
}

/** Percentiles of `n` samples (microseconds), sorted in place. */
export function percentiles(a: Float64Array, n: number) {
  const s = a.subarray(0, n).sort();
  const at = (q: number) => (n ? s[Math.min(n - 1, Math.floor(n * q))] : NaN);
  return { count: n, p50: at(0.5), p90: at(0.9), p99: at(0.99), max: n ? s[n - 1] : NaN };
}

/** Latency samples of one phase, in microseconds. */
export class Samples {
  readonly v: Float64Array;
  n = 0;
  constructor(cap: number) { this.v = new Float64Array(cap); }
  add(us: number): void { if (this.n < this.v.length) this.v[this.n++] = us; }
  reset(): void { this.n = 0; }
  pcts() { return percentiles(this.v, this.n); }
}

export interface DriverOptions {
  /** Connections this process may open at most (their 4-tuples are never reused: a mapping stays). */
  capacity: number;
  /** Decode this many blobs in full (HMAC and content) and check them. */
  verifyFirst?: number;
}

export class Driver {
  readonly stats: DriverStats = {
    synSent: 0, synAcks: 0, dataAcks: 0, resets: 0, blobs: 0, other: 0, duplicates: 0, completed: 0, failed: 0,
  };
  /** Connections to keep in flight (SYN sent, not yet ACTIVE); 0 opens none. */
  window = 0;
  /** On SYN-ACK, send the ACK and the request at once (load); else wait for sendData(). */
  autoData = true;
  /** Latency samples: first data segment injected -> ACTIVE, and SYN -> ACTIVE. */
  readonly e2e = new Samples(1 << 21);
  readonly fromSyn = new Samples(1 << 21);
  verified = 0;
  refused = 0;
  readonly refusals: string[] = [];

  private readonly state: Uint8Array;
  private readonly tSyn: Float64Array;
  private readonly tData: Float64Array;
  private readonly cookie: Uint32Array;
  private readonly tsEcr: Uint32Array;
  private next = 0;
  private inflightCount = 0;
  private readonly out = new PacketBurst(256);
  private inj = new PacketBurst(512);
  private spare = new PacketBurst(512);
  /** Connections whose first data segment is in `inj` (their clock starts at the inject). */
  private readonly dataPending: number[] = [];
  private readonly syn: TcpTemplate;
  private readonly ack: TcpTemplate;
  private readonly data: TcpTemplate;
  private readonly ackData: TcpTemplate;
  private readonly ackPartial: TcpTemplate;
  private readonly hosts = new Map<number, HostReply>();
  private readonly verifyFirst: number;
  private readonly replay = new ReplayWindow({ maxAgeMs: 60_000 });
  private readonly verifiedIds = new Set<string>();

  constructor(private readonly shim: Shim, private readonly opts: DriverOptions) {
    const cap = opts.capacity;
    this.state = new Uint8Array(cap);
    this.tSyn = new Float64Array(cap);
    this.tData = new Float64Array(cap);
    this.cookie = new Uint32Array(cap);
    this.tsEcr = new Uint32Array(cap);
    this.verifyFirst = opts.verifyFirst ?? 0;
    this.syn = tcpTemplate(TCP_SYN, SYN_OPTS, SYN_TSVAL, 0);
    this.ack = tcpTemplate(TCP_ACK, TS_OPTS, TS_VAL, TS_ECR);
    this.data = tcpTemplate(TCP_ACK | TCP_PSH, TS_OPTS, TS_VAL, TS_ECR, REQUEST);
    this.ackData = this.data; // the request on the handshake ACK: the same segment
    this.ackPartial = tcpTemplate(TCP_ACK | TCP_PSH, TS_OPTS, TS_VAL, TS_ECR, PARTIAL_REQUEST);
    for (const h of HOSTS) {
      const r = hostReply(h);
      this.hosts.set(r.ip, r);
    }
  }

  /** Connections opened and not finished. */
  get inflight(): number { return this.inflightCount; }
  /** Connections opened so far (the next one's index). */
  get opened(): number { return this.next; }

  static clientIp(c: number): number { return (CLIENT_NET + Math.floor(c / PORTS_PER_IP)) >>> 0; }
  static clientPort(c: number): number { return PORT_BASE + (c % PORTS_PER_IP); }
  static isn(c: number): number { return Math.imul(c + 1, 0x9e3779b1) >>> 0; }

  /** The connection of a 4-tuple's client side, or -1. */
  index(ip: number, port: number): number {
    const c = (ip - CLIENT_NET) * PORTS_PER_IP + (port - PORT_BASE);
    return port >= PORT_BASE && port < PORT_BASE + PORTS_PER_IP && c >= 0 && c < this.next ? c : -1;
  }

  /** The engine turned connection `c`'s mapping ACTIVE (a hook on Shim.setState). */
  active(c: number, now: number): void {
    if (c < 0 || this.state[c] !== CONN_DATA) {
      this.stats.duplicates++;
      return;
    }
    this.state[c] = CONN_DONE;
    this.inflightCount--;
    this.stats.completed++;
    this.e2e.add((now - this.tData[c]) * 1000);
    this.fromSyn.add((now - this.tSyn[c]) * 1000);
  }

  /** Open a connection now (SYN into the inject burst). @returns its index. */
  open(now: number): number {
    const c = this.next;
    if (c >= this.opts.capacity) throw new Error(`the driver ran out of connections (${c}); raise its capacity`);
    this.next++;
    this.inflightCount++;
    this.stats.synSent++;
    this.state[c] = CONN_SYN;
    this.tSyn[c] = now;
    this.put(this.syn, c, Driver.isn(c), 0, 1, 0);
    return c;
  }

  /** Send connection `c`'s request after its SYN-ACK (autoData off): as one segment with the handshake ACK. */
  sendData(c: number): void {
    if (this.state[c] !== CONN_SYNACKED) throw new Error(`connection ${c} is not waiting for its request`);
    this.state[c] = CONN_DATA;
    this.put(this.ackData, c, (Driver.isn(c) + 1) >>> 0, (this.cookie[c] + 1) >>> 0, 2, this.tsEcr[c]);
    this.dataPending.push(c);
  }

  /** Like sendData, with only the first bytes of the request: the engine waits for the rest. */
  sendPartial(c: number): void {
    if (this.state[c] !== CONN_SYNACKED) throw new Error(`connection ${c} is not waiting for its request`);
    this.state[c] = CONN_DATA;
    this.put(this.ackPartial, c, (Driver.isn(c) + 1) >>> 0, (this.cookie[c] + 1) >>> 0, 2, this.tsEcr[c]);
  }

  /** Whether `c` got its SYN-ACK (autoData off). */
  synAcked(c: number): boolean { return this.state[c] === CONN_SYNACKED; }
  done(c: number): boolean { return this.state[c] === CONN_DONE; }

  /**
   * One round: take everything the shim transmitted and answer it, open
   * connections up to the window (unless `open` is false), inject.
   * @returns frames taken from the ring.
   */
  pump(now: number, open = true): number {
    let total = 0;
    let n: number;
    do {
      n = this.shim.ringDrain(0, this.out);
      total += n;
      for (let i = 0; i < n; i++) this.take(i);
    } while (n === this.out.capacity);
    let room = open ? this.window - this.inflightCount : 0;
    if (room > 256) room = 256;
    for (let k = 0; k < room && this.next < this.opts.capacity; k++) this.open(now);
    this.flush();
    return total;
  }

  /** Inject what is queued (retrying what the ring did not take on the next flush). */
  flush(): void {
    const b = this.inj;
    if (!b.count) return;
    const done = this.shim.ringInject(0, b);
    if (this.dataPending.length) {
      const t = performance.now();
      for (const c of this.dataPending) this.tData[c] = t;
      this.dataPending.length = 0;
    }
    if (done === b.count) {
      b.clear();
      return;
    }
    // The ring port's RX ring was full: keep the rest, in order.
    const s = this.spare.clear();
    for (let i = done; i < b.count; i++) s.add(b.frame(i));
    b.clear();
    this.spare = b;
    this.inj = s;
  }

  private slot(): number {
    if (this.inj.count === this.inj.capacity) {
      // The worker drains the ring port's RX ring; give it up to a second (it may be descheduled).
      const until = performance.now() + 1000;
      do this.flush();
      while (this.inj.count === this.inj.capacity && performance.now() < until);
      if (this.inj.count === this.inj.capacity) throw new Error('the ring port takes no frames (its RX ring stays full)');
    }
    return this.inj.count * PKT_MAX;
  }

  /** A client segment of connection c from template t into the inject burst. */
  private put(t: TcpTemplate, c: number, seq: number, ack: number, tsVal: number, tsEcr: number): void {
    const o = this.slot();
    this.inj.add(t.buf);
    const d = this.inj.data;
    const ip = Driver.clientIp(c);
    const port = Driver.clientPort(c);
    w32(d, o + IP_SRC, ip);
    w16(d, o + L4, port);
    w32(d, o + TCP_SEQ, seq);
    w32(d, o + TCP_ACKNO, ack);
    w32(d, o + t.tsVal, tsVal);
    if (t.tsEcr) w32(d, o + t.tsEcr, tsEcr);
    w16(d, o + IP_CSUM, ~fold(t.ipSum + words32(ip)) & 0xffff);
    const sum = t.tcpSum + words32(ip) + port + words32(seq) + words32(ack) + words32(tsVal) + words32(tsEcr);
    w16(d, o + TCP_CSUM, ~fold(sum) & 0xffff);
  }

  private take(i: number): void {
    const f = this.out.data;
    const o = this.out.offset(i);
    const len = this.out.length(i);
    if (len < UDP_PAYLOAD || r16(f, o + 12) !== 0x0800 || (f[o + IP] & 0x0f) !== 5) {
      this.stats.other++;
      return;
    }
    const proto = f[o + 23];
    if (proto === 6) return this.tcp(f, o, len);
    if (proto === 17) return this.udp(f, o, len);
    this.stats.other++;
  }

  private tcp(f: Buffer, o: number, len: number): void {
    const c = this.index(r32(f, o + IP_DST), r16(f, o + L4 + 2));
    if (c < 0) {
      this.stats.other++;
      return;
    }
    const flags = f[o + TCP_FLAGS];
    if (flags & TCP_RST) {
      this.stats.resets++;
      if (this.state[c] !== CONN_DONE && this.state[c] !== CONN_FAILED) {
        this.state[c] = CONN_FAILED;
        this.inflightCount--;
        this.stats.failed++;
      }
      return;
    }
    if ((flags & (TCP_SYN | TCP_ACK)) !== (TCP_SYN | TCP_ACK)) {
      this.stats.dataAcks++;
      return;
    }
    this.stats.synAcks++;
    if (this.state[c] !== CONN_SYN) {
      this.stats.duplicates++;
      return;
    }
    const cookie = r32(f, o + TCP_SEQ);
    const tsval = this.tsvalOf(f, o, len);
    if (!this.autoData) {
      this.cookie[c] = cookie;
      this.tsEcr[c] = tsval;
      this.state[c] = CONN_SYNACKED;
      return;
    }
    this.state[c] = CONN_DATA;
    const seq = (Driver.isn(c) + 1) >>> 0;
    const ack = (cookie + 1) >>> 0;
    this.put(this.ack, c, seq, ack, 2, tsval);
    this.put(this.data, c, seq, ack, 2, tsval);
    this.dataPending.push(c);
  }

  private tsvalOf(f: Buffer, o: number, len: number): number {
    const end = Math.min(o + L4 + (f[o + L4 + 12] >>> 4) * 4, o + len);
    for (let p = o + TCP_OPT; p < end;) {
      const kind = f[p];
      if (kind === 0) break;
      if (kind === 1) { p++; continue; }
      if (kind === 8) return r32(f, p + 2);
      p += Math.max(2, f[p + 1]);
    }
    return 0;
  }

  /** A blob DATA datagram to a stand-in host: answer ACK + FINAL. */
  private udp(f: Buffer, o: number, len: number): void {
    const h = this.hosts.get(r32(f, o + IP_DST));
    const p = o + UDP_PAYLOAD;
    if (!h || len < UDP_PAYLOAD + 32 || r32(f, p) !== 0x484f4646 || f[p + 5] !== 1) {
      this.stats.other++;
      return;
    }
    this.stats.blobs++;
    if (r16(f, p + 22) !== 1) throw new Error(`a blob of ${r16(f, p + 22)} fragments: the stand-in host takes one-fragment blobs only`);
    if (this.verified + this.refused < this.verifyFirst) {
      // Once per blob: a retransmitted copy carries the same nonce and would read as a replay.
      const id = `${r32(f, p + 12)}/${r32(f, p + 16)}`;
      if (!this.verifiedIds.has(id)) {
        this.verifiedIds.add(id);
        this.verify(h, f.subarray(p + 32, p + 32 + r16(f, p + 30)));
      }
    }
    const toPort = r16(f, o + L4);
    this.reply(h.ack, f, p, toPort);
    this.reply(h.final, f, p, toPort);
  }

  private reply(tpl: Buffer, f: Buffer, p: number, toPort: number): void {
    const o = this.slot();
    this.inj.add(tpl);
    const d = this.inj.data;
    w16(d, o + L4 + 2, toPort);
    // session and blob id from the DATA datagram; CRC32C with its own field zero.
    const q = o + UDP_PAYLOAD;
    f.copy(d, q + 12, p + 12, p + 20);
    w32(d, q + 8, 0);
    w32(d, q + 8, crc32c(d.subarray(q, q + tpl.length - UDP_PAYLOAD)));
  }

  private verify(h: HostReply, blobBytes: Buffer): void {
    try {
      const b = decodeBlob(Buffer.from(blobBytes), CLUSTER_KEY, { replay: this.replay });
      const c = this.index(ipv4FromString(b.clientIp), b.clientPort);
      const ok = c >= 0 && b.data.equals(REQUEST) && b.decision.host === h.name && b.vip === VIP.ip &&
        b.irs === Driver.isn(c) && b.rcvNxt === ((Driver.isn(c) + 1 + REQUEST.length) >>> 0) &&
        // What the SYN negotiated, as in test/handoff.test.ts.
        b.mss === 1410 && b.sndWscale === 7 && b.rcvWscale === 7 && b.sackOk && b.tsOk;
      if (ok) this.verified++;
      else {
        this.refused++;
        this.refusals.push(`blob for ${b.clientIp}:${b.clientPort} to ${h.name}: fields or request bytes differ`);
      }
    } catch (err) {
      this.refused++;
      this.refusals.push((err as Error).message);
    }
  }

  /** Forget connections that will never finish (after a drain); @returns how many. */
  abandon(): number {
    const n = this.inflightCount;
    for (let c = 0; c < this.next; c++) {
      if (this.state[c] === CONN_SYN || this.state[c] === CONN_SYNACKED || this.state[c] === CONN_DATA) {
        this.state[c] = CONN_FAILED;
      }
    }
    this.inflightCount = 0;
    return n;
  }
}
