import crypto from 'node:crypto';
import { performance } from 'node:perf_hooks';
import net from 'node:net';
import { buildTcp, buildUdp, ipv4FromString, ipv4ToString, macToString, TCP_ACK, TCP_RST } from '../net';
import { ConnEventType as EV, ExceptionReason, FlowState, PacketBurst, Shim, ShimError } from '../offload';
import type { FlowKey } from '../offload';
import {
  BlobError, BlobSender, decodeBlob, decodeDatagram, DatagramType, encodeBlob, Reassembler, ReplayWindow, Status,
  statusForBlobError,
} from '../transfer';
import type { BlobSenderOptions, ConnectionBlob, TransferResult } from '../transfer';
import { classifyBytes } from './classify';
import { FlowIdAllocator } from './flow-ids';
import type { FlowIdOptions } from './flow-ids';
import { StrayRecovery } from './stray';
import type { StrayOptions } from './stray';
import type { RequestInfo } from './request-info';
import type { Decision, HostDecision, Router } from './router';

/** A backend host as the engine needs it. */
export interface EngineHost {
  name: string;
  /** The shim's host id (hs_host_set). */
  id: number;
  ip: string;
  /** Outer Ethernet destination for blob datagrams (and the tunnel); undefined until resolved (nothing is sent). */
  nexthopMac?: string;
  /** The host agent's UDP port. */
  agentPort: number;
}

export interface HandoffEngineOptions {
  shim: Shim;
  router: Router;
  hosts: readonly EngineHost[];
  /** HMAC-SHA256 key shared with the host agents (16 bytes or more). */
  clusterKey: Buffer;
  /** Shim port carrying blob traffic. Default 0. */
  shimPort?: number;
  /** UDP port blob datagrams leave from (hosts answer to it). Default 4790. */
  blobPort?: number;
  /** Bytes after which an undecided connection goes to its VIP's default. Default 16384. */
  byteCap?: number;
  /** Time after the first byte by which a connection must be decided. Default 3000. */
  classifyTimeoutMs?: number;
  /** Whether a host takes new connections. Default: all do. */
  health?: (host: string) => boolean;
  /** Transfer tuning (retransmission, in-flight limits). */
  sender?: Omit<BlobSenderOptions, 'send' | 'now'>;
  /** How long a released flow ID stays unused. Default 60000. */
  flowIdQuarantineMs?: number;
  /**
   * Keep polling this long after the last event before parking. Parking is
   * cheap (the shim's wake-up pipe is watched by the event loop itself, so a
   * wake is one write by the worker and no thread-pool round trip), and on
   * shared cores every spin is CPU taken from hosts and clients, so the
   * default is 0: park as soon as the exception ring is empty.
   */
  spinUs?: number;
  /**
   * After asking a worker to freeze a connection, keep polling this long
   * before parking: the worker answers within microseconds while it is still
   * polling (it is: it just sent the connection's data), and a park and
   * wake cost more than this wait. Default 50.
   */
  freezeSpinUs?: number;
  /** A mapping in CLOSING (FIN or RST seen) is removed after this. Default 10000. */
  closingTimeoutMs?: number;
  /** A mapping with no packet for this long is removed. Default 300000. */
  idleTimeoutMs?: number;
  /** Health-check answers (PONG datagrams) from host agents, with the sender's address. */
  onHostDatagram?: (fromIp: string, fromPort: number, datagram: Buffer) => void;
  /** ARP replies and gratuitous ARP the shim passed up (HS_EXC_ARP): next-hop resolution. */
  onArp?: (frame: Buffer, port: number) => void;
  /** Each completed handoff's latency, microseconds (first data byte to the host's final ACK). */
  onHandoffLatency?: (us: number) => void;
  /**
   * VIP services routed per request (issue 15): their HTTP connections carry
   * the routing in the blob, so a host hands a connection back when a later
   * request belongs to a pool it is not in. Default: none.
   */
  perRequestVips?: ReadonlyArray<{ ip: string; port: number }>;
  /** The flow IDs this balancer hands out (its partition of the VNI space in a cluster). Default: 1..0xffffff from 1. */
  flowIds?: Omit<FlowIdOptions, 'quarantineMs'>;
  /**
   * Recovery of flows this balancer has no mapping for (another balancer's,
   * or its own before a restart): the shim passes their segments up
   * (ShimOptions.strayRate) and the engine asks the hosts. Default: off.
   */
  stray?: Omit<StrayOptions, 'clusterKey'>;
}

/** Counters of the engine; every connection ends in exactly one outcome. */
export interface EngineStats {
  accepted: number;
  decided: number;
  undecided: number;
  /** Connections reset by the balancer before a handoff (policy, no host, limits). */
  resets: number;
  handoffsStarted: number;
  handoffsCompleted: number;
  /** Transfers that gave up after the host had every fragment: activated, outcome unknown. */
  handoffsUncertain: number;
  /** No host left: the client got a reset. */
  handoffsFailed: number;
  failovers: number;
  /** The client closed before its request was decided (v1 blobs carry no FIN). */
  finBeforeHandoff: number;
  /** The client reset, or the shim timed it out, before a decision. */
  clientGone: number;
  /** Event for a connection the engine no longer tracks. */
  staleEvents: number;
  /** The bytes passed up disagree with the shim's sequence numbers: never sent. */
  bytesMismatch: number;
  mappingErrors: number;
  /** Frames to the balancer's address that are not blob traffic. */
  localIgnored: number;
  /** UDP to a UDP VIP with no mapping (no UDP handoff yet). */
  udpMisses: number;
  /** Mappings removed after FIN/RST plus the closing timeout. */
  mappingsClosed: number;
  /** Mappings removed after the idle timeout. */
  mappingsExpired: number;
  /** CLOSED notices from hosts (their socket closed). */
  hostClosed: number;
  /** Handoffs whose FROZEN answer never came (lost on a full exception ring): their mapping and flow ID were freed. */
  freezeLost: number;
  /** Passes of the control loop (step() calls): what the loop costs besides the events themselves. */
  passes: number;
  /** Times the loop parked (armed the wake-up pipe and went back to the event loop). */
  parks: number;
  /** Connections a host handed back (a later request belonged elsewhere), taken and handed on. */
  handbacks: number;
  /** Hand-back blobs refused (forged, stale, replayed, or no such flow on that host). */
  handbacksRefused: number;
  /** Flows taken over from a host's answer (stray recovery): mapped here under the host's flow ID. */
  adopted: number;
  /**
   * Handoffs on a per-request VIP sent without routing because their first
   * request is their last (`Connection: close`, HTTP/1.0): nothing can move,
   * so the host hands the application the socket itself.
   */
  perRequestLast: number;
  /** Datagrams not sent to a host whose next hop is not resolved yet (its ARP unanswered). */
  unresolvedSends: number;
}

/** A flow handed off and tunnelled: watched until its mapping can go. */
interface ActiveFlow {
  key: FlowKey;
  hostIp: string;
  /** Where the client is, to reset it if a hand-back finds no host. */
  port: number;
  peerMac: string;
  vlan: number;
  packets: bigint;
  lastChange: number;
  closingSince: number;
  /** In the closed queue already (a repeated CLOSED adds nothing: the queue stays one entry per flow). */
  closedQueued?: boolean;
  /** Taken over from a host's answer, not handed off here. */
  adopted?: boolean;
}

interface Snapshot {
  iss: number; irs: number; sndNxt: number; rcvNxt: number; sndWnd: number; rcvWnd: number;
  sndWscale: number; rcvWscale: number; mss: number; sackOk: boolean; tsOk: boolean; tsVal: number; tsEcr: number;
}

/** One accepted connection, from its first event to the end of its handoff. */
class Connection {
  state: 'classifying' | 'freezing' | 'transferring' = 'classifying';
  data = Buffer.alloc(0);
  bytes = 0;
  fin = false;
  firstDataAt = 0;
  freezingSince = 0;
  readonly acceptedAt = performance.now();
  info: RequestInfo;
  decision?: HostDecision;
  host?: EngineHost;
  flowId = 0;
  snap?: Snapshot;
  readonly tried = new Set<string>();
  readonly key: FlowKey;

  constructor(
    readonly id: number, readonly worker: number, readonly connId: number, readonly gen: number,
    readonly port: number, readonly peerMac: string, readonly vlan: number, base: RequestInfo,
    clientIp: number, vip: number,
  ) {
    this.info = base;
    // Numeric addresses: the binding passes them on without parsing a string per call.
    this.key = { clientIp, clientPort: base.clientPort, vip, vipPort: base.vipPort };
  }

  append(bytes: Buffer): void {
    if (this.bytes + bytes.length > this.data.length) {
      // Exactly the first segment, then doubling: a connection that sent a
      // few bytes and stopped (up to acceptCapacity of them) costs a few
      // bytes. allocUnsafe: small ones come from Node's shared pool, and only
      // the bytes written are ever read (received()).
      const grown = Buffer.allocUnsafe(Math.max(this.data.length * 2, this.bytes + bytes.length));
      this.data.copy(grown, 0, 0, this.bytes);
      this.data = grown;
    }
    bytes.copy(this.data, this.bytes);
    this.bytes += bytes.length;
  }

  received(): Buffer {
    return this.data.subarray(0, this.bytes);
  }
}

const LATENCY_SAMPLES = 1 << 16;
/** A host-closed flow's mapping stays this long, so its last packets (FIN, final ACKs) still pass. */
const HOST_CLOSED_LINGER_MS = 1000;
/** A freeze unanswered this long was lost (a worker answers within microseconds). */
const FREEZE_LOST_MS = 2000;

/** Blob nonces from a pool refilled 4 KiB at a time: one CSPRNG call per 256 blobs instead of one each. */
class NoncePool {
  private pool = Buffer.alloc(0);
  private used = 0;

  next(): Buffer {
    if (this.used + 16 > this.pool.length) {
      this.pool = crypto.randomFillSync(Buffer.allocUnsafe(4096));
      this.used = 0;
    }
    // A copy: the blob keeps its nonce, the pool moves on.
    const n = Buffer.from(this.pool.subarray(this.used, this.used + 16));
    this.used += 16;
    return n;
  }
}

/**
 * The classifier's control loop (claim steps C3-C5, C7-C9): takes connection
 * events from the shim, decides a host, freezes the connection, sends its
 * blob reliably through the shim's TX ring and, on the host's final ACK,
 * turns the mapping ACTIVE so held and later packets are tunnelled.
 */
export class HandoffEngine {
  readonly stats: EngineStats = {
    accepted: 0, decided: 0, undecided: 0, resets: 0, handoffsStarted: 0, handoffsCompleted: 0, handoffsUncertain: 0,
    handoffsFailed: 0, failovers: 0, finBeforeHandoff: 0, clientGone: 0, staleEvents: 0, bytesMismatch: 0,
    mappingErrors: 0, localIgnored: 0, udpMisses: 0, mappingsClosed: 0, mappingsExpired: 0, hostClosed: 0,
    freezeLost: 0, passes: 0, parks: 0, handbacks: 0, handbacksRefused: 0, adopted: 0, perRequestLast: 0, unresolvedSends: 0,
  };
  /** Stray recovery (issue 16), when configured. */
  readonly stray?: StrayRecovery;
  readonly sender: BlobSender;
  /** Completed handoffs per host. */
  readonly perHost = new Map<string, number>();
  private readonly shim: Shim;
  private router: Router;
  private readonly key: Buffer;
  private readonly hostByName = new Map<string, EngineHost>();
  private readonly hostByIp = new Map<string, EngineHost>();
  /** Per host: Ethernet, IPv4 and UDP headers of blob datagrams, with lengths and checksum left to fill. */
  private readonly udpHeaders = new Map<string, Buffer>();
  /** By worker and connection slot; the generation tells a reused slot apart. */
  private readonly conns = new Map<number, Connection>();
  private readonly pendingByHost = new Map<string, number>();
  private readonly flowIds: FlowIdAllocator;
  private readonly nonces = new NoncePool();
  private readonly rx = new PacketBurst(64);
  private readonly tx = new PacketBurst(64);
  private readonly reinjectTx = new PacketBurst(64);
  private readonly shimPort: number;
  private readonly blobPort: number;
  private readonly byteCap: number;
  private readonly classifyTimeoutMs: number;
  private readonly health: (host: string) => boolean;
  private readonly pending = (host: string) => this.pendingByHost.get(host) ?? 0;
  private readonly lbIp: string;
  private readonly lbMac: string;
  private readonly latencies = new Float64Array(LATENCY_SAMPLES);
  private latencyCount = 0;
  private running = false;
  private nextTimeoutScan = 0;
  private readonly active = new Map<number, ActiveFlow>();
  private sweepCursor?: Iterator<[number, ActiveFlow]>;
  /**
   * Flows whose host said CLOSED, in the order their removal falls due (one
   * fixed delay, so arrival order is due order): removed when due without
   * waiting for the sweep to come round to them.
   */
  private readonly closedQueue: Array<{ flowId: number; flow: ActiveFlow; due: number }> = [];
  private closedHead = 0;
  private readonly closingTimeoutMs: number;
  private readonly idleTimeoutMs: number;
  private readonly spinMs: number;
  private readonly freezeSpinMs: number;
  /** Poll (don't park) until then: a FROZEN answer is due. */
  private spinUntil = 0;
  /** Schedules a pass of run()'s loop (stop() uses it). */
  private wakeRun?: () => void;
  private readonly onHostDatagram?: (fromIp: string, fromPort: number, datagram: Buffer) => void;
  private readonly onArp?: (frame: Buffer, port: number) => void;
  private readonly onHandoffLatency?: (us: number) => void;
  private readonly perRequest: Set<string>;
  /** Hand-back blobs from hosts: reassembled, then verified with their own replay window. */
  private readonly handbackReasm = new Reassembler();
  private readonly handbackReplay = new ReplayWindow();
  private handbackIds = 0;

  constructor(o: HandoffEngineOptions) {
    if (!Buffer.isBuffer(o.clusterKey) || o.clusterKey.length < 16) {
      throw new ShimError('engine', 'ERR_ENGINE_CLUSTER_KEY', 'clusterKey must be a Buffer of at least 16 bytes');
    }
    this.shim = o.shim;
    this.router = o.router;
    this.key = o.clusterKey;
    this.setHosts(o.hosts);
    this.onHostDatagram = o.onHostDatagram;
    this.onArp = o.onArp;
    this.onHandoffLatency = o.onHandoffLatency;
    this.perRequest = new Set((o.perRequestVips ?? []).map((v) => `${v.ip}:${v.port}`));
    this.shimPort = o.shimPort ?? 0;
    this.blobPort = o.blobPort ?? 4790;
    this.byteCap = o.byteCap ?? 16384;
    this.classifyTimeoutMs = o.classifyTimeoutMs ?? 3000;
    this.health = o.health ?? (() => true);
    this.flowIds = new FlowIdAllocator({ ...o.flowIds, quarantineMs: o.flowIdQuarantineMs });
    if (o.stray) {
      this.stray = new StrayRecovery({ ...o.stray, clusterKey: o.clusterKey }, {
        hosts: () => this.hostByIp.values(),
        send: (ip, port, d) => this.sendDatagram(ip, port, d),
        adopt: (key, hostIp, flowId, frame, port) => this.adopt(key, hostIp, flowId, frame, port),
        reinject: (frame, port) => {
          if (this.reinjectTx.count === this.reinjectTx.capacity) this.flushReinject();
          this.reinjectTx.add(frame, port);
        },
        reset: (frame, port) => this.resetStray(frame, port),
      });
    }
    this.closingTimeoutMs = o.closingTimeoutMs ?? 10_000;
    this.idleTimeoutMs = o.idleTimeoutMs ?? 300_000;
    this.spinMs = (o.spinUs ?? 0) / 1000;
    this.freezeSpinMs = (o.freezeSpinUs ?? 50) / 1000;
    const info = this.shim.portInfo(this.shimPort);
    this.lbIp = info.ip;
    this.lbMac = info.mac;
    this.sender = new BlobSender({ ...o.sender, send: (dest, d) => this.sendDatagram(dest.ip, dest.port, d),
      now: () => performance.now() });
  }

  /** Handoff latency from the first data byte seen to the host's final ACK, in microseconds. */
  latency(): { count: number; p50: number; p99: number } {
    const n = Math.min(this.latencyCount, LATENCY_SAMPLES);
    if (!n) return { count: 0, p50: NaN, p99: NaN };
    const s = Float64Array.from(this.latencies.subarray(0, n)).sort();
    return { count: this.latencyCount, p50: s[Math.floor(n * 0.5)], p99: s[Math.min(n - 1, Math.floor(n * 0.99))] };
  }

  /**
   * Reload: the hosts new connections may go to. Connections under way keep
   * the host they were given; flows already handed off are not touched.
   */
  setHosts(hosts: readonly EngineHost[]): void {
    this.hostByName.clear();
    // Addresses stay known: transfers under way to a host just removed still need its next-hop MAC.
    this.udpHeaders.clear();
    for (const h of hosts) {
      this.hostByName.set(h.name, h);
      this.hostByIp.set(h.ip, h);
    }
  }

  /** Reload: the rules and pools for connections decided from now on. */
  setRouter(router: Router): void {
    this.router = router;
  }

  /** Send one datagram to a host's agent port from the blob port (health checks). */
  sendToHost(name: string, datagram: Buffer): boolean {
    const h = this.hostByName.get(name);
    if (!h?.nexthopMac) return false;
    this.sendDatagram(h.ip, h.agentPort, datagram);
    this.flushTx();
    return true;
  }

  /**
   * Mappings by state as the engine tracks them: PENDING while a handoff is
   * under way; ACTIVE and CLOSING for flows handed off (CLOSING as of the
   * last sweep), also per host address. O(flows): for scrapes, not per packet.
   */
  flowCounts(): { pending: number; active: number; closing: number; byHostIp: Map<string, { active: number; closing: number }> } {
    let pending = 0;
    for (const v of this.pendingByHost.values()) pending += v;
    let closing = 0;
    const byHostIp = new Map<string, { active: number; closing: number }>();
    for (const f of this.active.values()) {
      let h = byHostIp.get(f.hostIp);
      if (!h) byHostIp.set(f.hostIp, h = { active: 0, closing: 0 });
      if (f.closingSince) {
        closing++;
        h.closing++;
      } else {
        h.active++;
      }
    }
    return { pending, active: this.active.size - closing, closing, byHostIp };
  }

  /** Handoffs under way per host (decided, not yet confirmed by the host). */
  pendingFor(host: string): number {
    return this.pending(host);
  }

  /** Connections the engine is tracking (classifying, freezing or transferring). */
  get inProgress(): number {
    let n = 0;
    for (const v of this.pendingByHost.values()) n += v;
    return this.conns.size + n;
  }

  /**
   * Run until stop(). Takes events while the exception ring has them
   * (yielding to the event loop between passes), then parks: arms the
   * shim's wake-up pipe and returns to the event loop, which wakes it when a
   * worker writes to the pipe or at the sender's next deadline (at most
   * 20 ms, for the timeout scans). No thread is blocked and nothing spins
   * while idle (unless spinUs asks for it).
   */
  run(): Promise<void> {
    this.running = true;
    const pipe = new net.Socket({ fd: this.shim.exceptionNotifyFd(), readable: true, writable: false });
    return new Promise<void>((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      let immediate: NodeJS.Immediate | undefined;
      let lastWork = performance.now();
      let done = false;
      const finish = () => {
        if (done) return;
        done = true;
        if (timer) clearTimeout(timer);
        if (immediate) clearImmediate(immediate);
        this.wakeRun = undefined;
        pipe.destroy();
        resolve();
      };
      const pump = () => {
        immediate = undefined;
        if (timer) {
          clearTimeout(timer);
          timer = undefined;
        }
        if (!this.running) return finish();
        const now = performance.now();
        if (this.step() > 0) lastWork = now;
        if (!this.running) return finish();
        const due = Math.min(this.sender.nextDeadline() ?? Infinity, this.stray?.nextDeadline() ?? Infinity);
        const wait = Math.min(20, due - performance.now());
        // Busy (or asked to spin, or a timer overdue): another pass after I/O and timers had their turn.
        const t = performance.now();
        if (wait <= 0 || t - lastWork < this.spinMs || t < this.spinUntil || !this.shim.armExceptions()) {
          immediate = setImmediate(pump);
          return;
        }
        this.stats.parks++;
        timer = setTimeout(pump, Math.max(1, Math.ceil(wait)));
      };
      const wake = () => {
        if (!immediate && !done) pump();
      };
      this.wakeRun = () => {
        if (!immediate && !done) immediate = setImmediate(pump);
      };
      // Bytes on the pipe mean only "look at the ring"; the data is discarded.
      pipe.on('data', wake);
      // The pipe cannot fail short of the shim closing it; keep going on timers alone if it does.
      pipe.on('error', () => {});
      pump();
    });
  }

  stop(): void {
    this.running = false;
    this.wakeRun?.();
  }

  /**
   * One pass: take events, run timers, transmit. Public for callers that
   * drive their own loop. @returns the events taken.
   */
  step(): number {
    let n: number;
    let total = 0;
    this.stats.passes++;
    do {
      n = this.shim.exceptionBurst(this.rx);
      for (let i = 0; i < n; i++) {
        const reason = this.rx.reason(i);
        if (reason === ExceptionReason.CONN) this.onConnEvent(i);
        else if (reason === ExceptionReason.LOCAL) this.onLocal(i);
        else if (reason === ExceptionReason.STRAY && this.stray) this.stray.onPacket(this.rx.frame(i), this.rx.port(i), performance.now());
        else if (reason === ExceptionReason.ARP && this.onArp) this.onArp(this.rx.frame(i), this.rx.port(i));
        else this.stats.udpMisses++;
      }
      this.flushTx();
      this.flushReinject();
      total += n;
    } while (n === this.rx.capacity);
    const now = performance.now();
    this.sender.tick(now);
    if (this.stray) {
      this.stray.tick(now);
      this.flushReinject();
    }
    if (now >= this.nextTimeoutScan) this.scanTimeouts(now);
    this.flushTx();
    return total;
  }

  private onConnEvent(i: number): void {
    const b = this.rx;
    const type = b.ev32(i, 'type');
    const worker = b.ev16(i, 'worker');
    const connId = b.ev32(i, 'conn_id');
    const gen = b.ev32(i, 'conn_gen');
    // A number, not a string: no allocation per event.
    const id = worker * 0x1_0000_0000 + connId;
    let c = this.conns.get(id);
    if (c && c.gen !== gen) c = undefined; // an event for an earlier user of the slot
    if (type & EV.ACCEPTED) {
      const clientIp = b.ev32(i, 'client_ip');
      const vip = b.ev32(i, 'vip');
      c = new Connection(id, worker, connId, gen, b.ev16(i, 'port'), macToString(b.evPeerMac(i)), b.ev16(i, 'vlan_tci'), {
        kind: 'unknown', clientIp: ipv4ToString(clientIp), clientPort: b.ev16(i, 'client_port'),
        vip: ipv4ToString(vip), vipPort: b.ev16(i, 'vip_port'),
      }, clientIp, vip);
      this.conns.set(id, c);
      this.stats.accepted++;
    }
    if (!c) {
      this.stats.staleEvents++;
      return;
    }
    if (type & EV.DATA) {
      if (!c.firstDataAt) c.firstDataAt = performance.now();
      c.append(b.payload(i));
    }
    if (type & EV.FIN) c.fin = true;
    // New bytes or a FIN froze the connection in its worker: this event's
    // state is exact until the engine hands it off or resumes it.
    if (type & (EV.DATA | EV.FIN)) c.snap = this.snapshot(i);
    if (type & (EV.RESET | EV.TIMEOUT)) {
      this.stats.clientGone++;
      this.forget(c);
      if (c.state === 'freezing') this.abandonMapping(c);
      return;
    }
    if (type & EV.FROZEN) return this.onFrozen(c, i);
    if (type & (EV.DATA | EV.FIN) && c.state === 'classifying') this.classify(c, false);
    // Nothing within the classify timeout (the shim times it when it announces connections lazily).
    else if (type & EV.SILENT && c.state === 'classifying') this.classify(c, true);
  }

  private classify(c: Connection, timedOut: boolean): void {
    const r = classifyBytes(c.received(), c.info, { byteCap: this.byteCap });
    if (r.status === 'incomplete' && !c.fin && !timedOut && c.bytes < this.byteCap) return this.resume(c);
    let d: Decision;
    if (r.status === 'decided') {
      c.info = r.info;
      d = this.router.decide(r.info, this.health, this.pending);
      this.stats.decided++;
    } else {
      if (r.status === 'undecidable') c.info = r.info;
      d = this.router.decideUndecided(c.info, this.health, this.pending);
      this.stats.undecided++;
    }
    if (d.kind !== 'host') return this.resetBeforeHandoff(c);
    if (c.fin) {
      this.stats.finBeforeHandoff++;
      return this.resetBeforeHandoff(c);
    }
    this.startHandoff(c, d);
  }

  /** Unfreeze a connection that needs more bytes; its snapshot is stale from now on. */
  private resume(c: Connection): void {
    if (!c.snap) return;
    c.snap = undefined;
    try {
      this.shim.resumeConnection(c.worker, c.connId, c.gen);
    } catch {
      this.stats.mappingErrors++; // command ring full: it would stay frozen until its timeout
      this.resetBeforeHandoff(c);
    }
  }

  private snapshot(i: number): Snapshot {
    const b = this.rx;
    return {
      iss: b.ev32(i, 'iss'), irs: b.ev32(i, 'irs'), sndNxt: b.ev32(i, 'snd_nxt'), rcvNxt: b.ev32(i, 'rcv_nxt'),
      sndWnd: b.ev32(i, 'snd_wnd'), rcvWnd: b.ev32(i, 'rcv_wnd'), sndWscale: b.ev8(i, 'snd_wscale'),
      rcvWscale: b.ev8(i, 'rcv_wscale'), mss: b.ev16(i, 'mss'), sackOk: b.ev8(i, 'sack_ok') === 1,
      tsOk: b.ev8(i, 'ts_ok') === 1, tsVal: b.ev32(i, 'ts_val'), tsEcr: b.ev32(i, 'ts_ecr'),
    };
  }

  /** Every byte the shim acknowledged must be in the blob, or the host would resume on a gap. */
  private static complete(c: Connection, s: Snapshot): boolean {
    return ((s.rcvNxt - s.irs - 1) >>> 0) === c.bytes;
  }

  private startHandoff(c: Connection, d: HostDecision): void {
    // Frozen by its last event: no round trip to the worker before the blob goes.
    const snap = c.snap;
    if (snap && !HandoffEngine.complete(c, snap)) {
      this.stats.bytesMismatch++;
      return this.resetBeforeHandoff(c);
    }
    const host = this.hostByName.get(d.host);
    const flowId = host && this.flowIds.allocate(performance.now());
    if (!host || flowId === undefined) {
      this.stats.mappingErrors++;
      return this.resetBeforeHandoff(c);
    }
    const mapping = { ...c.key, hostId: host.id, flowId, state: FlowState.PENDING };
    try {
      try {
        this.shim.insertMapping(mapping);
      } catch (err) {
        // A mapping left by an earlier connection on the same 4-tuple is stale now.
        if ((err as ShimError).code !== 'EEXIST') throw err;
        const old = this.shim.lookupMapping(c.key);
        if (old && this.active.delete(old.flowId)) this.flowIds.release(old.flowId, performance.now());
        this.shim.deleteMapping(c.key);
        this.shim.insertMapping(mapping);
      }
      if (snap) this.shim.handoffConnection(c.worker, c.connId, c.gen);
      else this.shim.freezeConnection(c.worker, c.connId, c.gen);
    } catch {
      this.stats.mappingErrors++;
      this.flowIds.release(flowId, performance.now());
      try { this.shim.deleteMapping(c.key); } catch { /* not inserted */ }
      return this.resetBeforeHandoff(c);
    }
    c.decision = d;
    c.host = host;
    c.flowId = flowId;
    c.tried.add(host.name);
    this.pendingByHost.set(host.name, this.pending(host.name) + 1);
    this.stats.handoffsStarted++;
    if (snap) {
      this.forget(c);
      c.state = 'transferring';
      return this.sendBlob(c);
    }
    // It sent nothing (decided on its timeout): ask the worker for its state.
    c.state = 'freezing';
    c.freezingSince = performance.now();
    this.spinUntil = c.freezingSince + this.freezeSpinMs;
  }

  private onFrozen(c: Connection, i: number): void {
    const b = this.rx;
    this.forget(c);
    if (c.fin) {
      // The FIN came between the decision and the freeze: v1 blobs cannot carry it.
      this.stats.finBeforeHandoff++;
      c.snap = { iss: b.ev32(i, 'iss'), irs: 0, sndNxt: b.ev32(i, 'snd_nxt'), rcvNxt: b.ev32(i, 'rcv_nxt'), sndWnd: 0,
        rcvWnd: 0, sndWscale: 0, rcvWscale: 0, mss: 0, sackOk: false, tsOk: false, tsVal: 0, tsEcr: 0 };
      return this.failHandoff(c, false);
    }
    c.snap = this.snapshot(i);
    // Refuse rather than inject something wrong (a DATA event was lost).
    if (!HandoffEngine.complete(c, c.snap)) {
      this.stats.bytesMismatch++;
      return this.failHandoff(c);
    }
    c.state = 'transferring';
    this.sendBlob(c);
  }

  private sendBlob(c: Connection): void {
    const d = c.decision!;
    const blob: ConnectionBlob = {
      v: 1, flowId: c.flowId, clientIp: c.info.clientIp, clientPort: c.key.clientPort, vip: c.info.vip,
      vipPort: c.key.vipPort, ...c.snap!, data: c.received(),
      decision: { rule: d.rule, pool: d.pool, host: d.host }, created: Date.now(), nonce: this.nonces.next(),
    };
    // Per request: only where a later request could belong to a pool without this host.
    if (c.info.kind === 'http' && this.perRequest.size && this.perRequest.has(`${c.info.vip}:${c.info.vipPort}`)
      && !this.router.isSticky(d.rule) && this.router.mayMove(c.info.vip, c.info.vipPort, d.host)) {
      if (c.info.lastRequest) this.stats.perRequestLast++;
      else blob.routing = this.router.routingJson;
    }
    const host = c.host!;
    this.sender.send({ ip: host.ip, port: host.agentPort }, encodeBlob(blob, this.key), (r) => this.onTransfer(c, r));
  }

  private onTransfer(c: Connection, r: TransferResult): void {
    const host = c.host!;
    this.pendingByHost.set(host.name, this.pending(host.name) - 1);
    // The host holds the whole blob but its final ACK was lost: it may have
    // the socket. Sending the flow elsewhere could put it on two hosts, so
    // the flow goes to this one; if it has no socket its kernel resets the client.
    const uncertain = !r.ok && r.code === 'ERR_TRANSFER_GAVE_UP' && r.hostHadBlob;
    if (r.ok || uncertain) {
      try {
        this.shim.setState(c.key, FlowState.ACTIVE);
      } catch {
        this.stats.mappingErrors++;
        return this.failHandoff(c);
      }
      if (uncertain) this.stats.handoffsUncertain++;
      else this.stats.handoffsCompleted++;
      this.perHost.set(host.name, (this.perHost.get(host.name) ?? 0) + 1);
      this.active.set(c.flowId, { key: c.key, hostIp: host.ip, port: c.port, peerMac: c.peerMac, vlan: c.vlan, packets: 0n,
        lastChange: performance.now(), closingSince: 0 });
      const us = (performance.now() - (c.firstDataAt || c.acceptedAt)) * 1000;
      this.latencies[this.latencyCount++ % LATENCY_SAMPLES] = us;
      this.onHandoffLatency?.(us);
      return;
    }
    const next = this.router.nextHost(c.decision!, c.info, c.tried, this.health, this.pending);
    const nextHost = next.kind === 'host' ? this.hostByName.get(next.host) : undefined;
    if (next.kind !== 'host' || !nextHost) return this.failHandoff(c);
    try {
      this.shim.setMappingHost(c.key, nextHost.id);
    } catch {
      this.stats.mappingErrors++;
      return this.failHandoff(c);
    }
    this.stats.failovers++;
    c.decision = next;
    c.host = nextHost;
    c.tried.add(nextHost.name);
    this.pendingByHost.set(nextHost.name, this.pending(nextHost.name) + 1);
    this.sendBlob(c);
  }

  /**
   * After the freeze the shim has forgotten the connection: reset the client
   * from here. `counted` false when the caller counted the outcome itself.
   */
  private failHandoff(c: Connection, counted = true): void {
    if (counted) this.stats.handoffsFailed++;
    const s = c.snap;
    if (s) {
      this.addTx(buildTcp({
        srcMac: this.lbMac, dstMac: c.peerMac, vlan: c.vlan || undefined, srcIp: c.key.vip, dstIp: c.key.clientIp,
        srcPort: c.key.vipPort, dstPort: c.key.clientPort, seq: s.sndNxt, ack: s.rcvNxt, flags: TCP_RST | TCP_ACK,
        window: 0,
      }), c.port);
    }
    this.abandonMapping(c);
  }

  private abandonMapping(c: Connection): void {
    try { this.shim.deleteMapping(c.key); } catch { /* already gone */ }
    if (c.flowId) this.flowIds.release(c.flowId, performance.now());
    if (c.state === 'freezing' && c.host) this.pendingByHost.set(c.host.name, this.pending(c.host.name) - 1);
  }

  private resetBeforeHandoff(c: Connection): void {
    this.stats.resets++;
    this.forget(c);
    try {
      this.shim.resetConnection(c.worker, c.connId, c.gen);
    } catch {
      this.stats.mappingErrors++; // command ring full: the shim's own timeout resets it
    }
  }

  private forget(c: Connection): void {
    if (this.conns.get(c.id) === c) this.conns.delete(c.id);
  }

  /** Remove the mappings of host-closed flows whose delay has passed. */
  private removeClosed(now: number): void {
    const q = this.closedQueue;
    while (this.closedHead < q.length && q[this.closedHead].due <= now) {
      const { flowId, flow } = q[this.closedHead++];
      // Still the same flow (not removed by the sweep, its flow ID not reused)?
      if (this.active.get(flowId) !== flow) continue;
      const m = this.shim.lookupMapping(flow.key);
      if (m && m.flowId === flowId) {
        try { this.shim.deleteMapping(flow.key); } catch { /* already gone */ }
      }
      this.stats.mappingsClosed++;
      this.active.delete(flowId);
      this.flowIds.release(flowId, now);
    }
    // Compact once the consumed head dominates (amortised O(1) per entry).
    if (this.closedHead > 1024 && this.closedHead * 2 > q.length) {
      q.splice(0, this.closedHead);
      this.closedHead = 0;
    }
  }

  /**
   * Remove mappings of finished flows (design.md §3.7): CLOSING ones after
   * the closing timeout, idle ones after the idle timeout. A slice of the
   * active flows per pass (every 100 ms), so the control loop never stalls:
   * at least 256, and enough that every flow is visited within about 5 s
   * whatever their number (at high handoff rates a fixed slice would visit
   * each flow too rarely and the table would fill with finished flows).
   */
  private sweepMappings(now: number): void {
    const budget = Math.max(256, Math.ceil(this.active.size / 50));
    for (let n = 0; n < budget && this.active.size; n++) {
      let next = this.sweepCursor?.next();
      if (!next || next.done) {
        this.sweepCursor = this.active.entries();
        next = this.sweepCursor.next();
        if (next.done) return;
      }
      const [flowId, f] = next.value;
      const m = this.shim.lookupMapping(f.key);
      let remove = !m || m.flowId !== flowId || m.state === FlowState.REOPENED;
      if (remove && m?.state === FlowState.REOPENED) this.stats.mappingsClosed++;
      if (!remove && (m!.state === FlowState.CLOSING || f.closingSince)) {
        if (!f.closingSince) f.closingSince = now;
        if (now - f.closingSince > this.closingTimeoutMs) {
          remove = true;
          this.stats.mappingsClosed++;
        }
      } else if (!remove && m!.packets !== f.packets) {
        f.packets = m!.packets;
        f.lastChange = now;
      } else if (!remove && now - f.lastChange > this.idleTimeoutMs) {
        remove = true;
        this.stats.mappingsExpired++;
      }
      if (remove) {
        if (m && m.flowId === flowId) {
          try { this.shim.deleteMapping(f.key); } catch { /* already gone */ }
        }
        this.active.delete(flowId);
        this.flowIds.release(flowId, now);
      }
    }
  }

  /** Flows handed off whose mappings are still in place. */
  get activeFlows(): number {
    return this.active.size;
  }

  private scanTimeouts(now: number): void {
    this.nextTimeoutScan = now + 100;
    this.removeClosed(now);
    this.sweepMappings(now);
    for (const c of this.conns.values()) {
      if (c.state === 'classifying' && now - (c.firstDataAt || c.acceptedAt) > this.classifyTimeoutMs) this.classify(c, true);
      else if (c.state === 'freezing' && now - c.freezingSince > FREEZE_LOST_MS) {
        // The worker answers a freeze within microseconds; its answer was lost (exception ring
        // full). Without it there is nothing to send: free what the handoff held.
        this.stats.freezeLost++;
        this.stats.handoffsFailed++;
        this.forget(c);
        this.abandonMapping(c);
      }
    }
  }

  /** Host agents answer blob datagrams to the balancer's own address. */
  private onLocal(i: number): void {
    const f = this.rx.frame(i);
    let l2 = 14;
    if (f.length >= 18 && f.readUInt16BE(12) === 0x8100) l2 = 18;
    if (f.length < l2 + 28 || f.readUInt16BE(l2 - 2) !== 0x0800 || f[l2 + 9] !== 17) {
      this.stats.localIgnored++;
      return;
    }
    const ihl = (f[l2] & 15) * 4;
    const udp = l2 + ihl;
    if (f.length < udp + 8 || f.readUInt16BE(udp + 2) !== this.blobPort) {
      this.stats.localIgnored++;
      return;
    }
    const len = Math.min(f.readUInt16BE(udp + 4), f.length - udp);
    const from = { ip: ipv4ToString(f.readUInt32BE(l2 + 12)), port: f.readUInt16BE(udp) };
    const payload = Buffer.from(f.subarray(udp + 8, udp + len));
    if (payload.length > 5 && payload[5] === DatagramType.CLOSED) return this.onHostClosed(from.ip, payload);
    if (payload.length > 5 && payload[5] === DatagramType.DATA) return this.onHandbackDatagram(from, payload);
    if (payload.length > 5 && payload[5] === DatagramType.OWNER) {
      if (this.stray && this.hostByIp.has(from.ip)) this.stray.onAnswer(from.ip, from.port, payload, performance.now());
      else this.stats.localIgnored++;
      return;
    }
    if (payload.length > 5 && payload[5] === DatagramType.PONG) {
      if (this.onHostDatagram) this.onHostDatagram(from.ip, from.port, payload);
      else this.stats.localIgnored++;
      return;
    }
    this.sender.onDatagram(from, payload);
  }

  /** A fragment of a hand-back blob from a host: reassemble, answer, and take the connection once complete. */
  private onHandbackDatagram(from: { ip: string; port: number }, payload: Buffer): void {
    if (!this.hostByIp.has(from.ip)) return void this.stats.localIgnored++;
    const r = this.handbackReasm.receive(from, payload, performance.now());
    if (r.kind === 'dropped') return void this.stats.localIgnored++;
    this.sendDatagram(from.ip, from.port, r.reply);
    if (r.kind !== 'complete') return;
    const status = this.takeHandback(r.blob, from.ip);
    this.sendDatagram(from.ip, from.port, this.handbackReasm.finish(r.ref, status));
  }

  /**
   * A host froze a live connection whose next request belongs elsewhere and
   * sent it back: hold the client's packets (PENDING), classify the request
   * the blob carries, and hand the connection to the host it belongs to, as
   * for a new one. @returns the status for the old host's FINAL.
   */
  private takeHandback(buf: Buffer, fromIp: string): number {
    let blob: ConnectionBlob;
    try {
      blob = decodeBlob(buf, this.key, { replay: this.handbackReplay });
    } catch (err) {
      this.stats.handbacksRefused++;
      return err instanceof BlobError ? statusForBlobError(err.code) : Status.INTERNAL;
    }
    const f = this.active.get(blob.flowId);
    const clientIp = f && ipv4FromString(blob.clientIp);
    if (!f || f.hostIp !== fromIp || f.key.clientIp !== clientIp || f.key.clientPort !== blob.clientPort
      || f.key.vip !== ipv4FromString(blob.vip) || f.key.vipPort !== blob.vipPort) {
      this.stats.handbacksRefused++;
      return Status.UNKNOWN_FLOW;
    }
    try {
      this.shim.setState(f.key, FlowState.PENDING);
    } catch {
      this.stats.mappingErrors++;
      this.stats.handbacksRefused++;
      return Status.INTERNAL;
    }
    this.active.delete(blob.flowId);
    this.stats.handbacks++;
    const id = -++this.handbackIds;
    const c = new Connection(id, 0, 0, 0, f.port, f.peerMac, f.vlan, {
      kind: 'unknown', clientIp: blob.clientIp, clientPort: blob.clientPort, vip: blob.vip, vipPort: blob.vipPort,
    }, f.key.clientIp, f.key.vip);
    c.append(blob.data);
    c.firstDataAt = performance.now();
    c.flowId = blob.flowId;
    c.snap = {
      iss: blob.iss, irs: blob.irs, sndNxt: blob.sndNxt, rcvNxt: blob.rcvNxt, sndWnd: blob.sndWnd, rcvWnd: blob.rcvWnd,
      sndWscale: blob.sndWscale, rcvWscale: blob.rcvWscale, mss: blob.mss, sackOk: blob.sackOk, tsOk: blob.tsOk,
      tsVal: blob.tsVal, tsEcr: blob.tsEcr,
    };
    c.state = 'transferring';
    const r = classifyBytes(c.received(), c.info, { byteCap: this.byteCap });
    if (r.status !== 'decided') return this.failHandoff(c), Status.OK;
    c.info = r.info;
    this.stats.decided++;
    const d = this.router.decide(r.info, this.health, this.pending);
    const host = d.kind === 'host' ? this.hostByName.get(d.host) : undefined;
    if (d.kind !== 'host' || !host) return this.failHandoff(c), Status.OK;
    try {
      this.shim.setMappingHost(c.key, host.id);
    } catch {
      this.stats.mappingErrors++;
      return this.failHandoff(c), Status.OK;
    }
    c.decision = d;
    c.host = host;
    c.tried.add(host.name);
    this.pendingByHost.set(host.name, this.pending(host.name) + 1);
    this.stats.handoffsStarted++;
    this.sendBlob(c);
    return Status.OK;
  }

  /** The host's socket closed: remove the mapping a second from now (late packets still pass), from the closed queue. */
  private onHostClosed(fromIp: string, payload: Buffer): void {
    const d = decodeDatagram(payload);
    if ('error' in d || d.type !== 'closed') return void this.stats.localIgnored++;
    this.hostClosed(fromIp, d.blobId);
    if (d.more) for (const id of d.more) this.hostClosed(fromIp, id);
  }

  private hostClosed(fromIp: string, flowId: number): void {
    const f = this.active.get(flowId);
    if (!f || f.hostIp !== fromIp) return void this.stats.localIgnored++;
    this.stats.hostClosed++;
    const now = performance.now();
    const due = Math.min(f.closingSince ? f.closingSince + this.closingTimeoutMs : Infinity, now + HOST_CLOSED_LINGER_MS);
    f.closingSince = due - this.closingTimeoutMs;
    if (!f.closedQueued) {
      f.closedQueued = true;
      this.closedQueue.push({ flowId, flow: f, due: now + HOST_CLOSED_LINGER_MS });
    }
  }

  /**
   * Blob datagrams are written straight into the TX burst behind a per-host
   * header template. UDP checksum 0 (allowed over IPv4): every datagram
   * carries its own CRC32C.
   */
  private sendDatagram(ip: string, port: number, datagram: Buffer): void {
    const host = this.hostByIp.get(ip);
    if (!host) return;
    if (!host.nexthopMac) {
      this.stats.unresolvedSends++;
      return;
    }
    let hdr = this.udpHeaders.get(`${ip}:${port}`);
    if (!hdr) {
      hdr = buildUdp({ srcMac: this.lbMac, dstMac: host.nexthopMac, srcIp: this.lbIp, dstIp: ip,
        srcPort: this.blobPort, dstPort: port, payload: Buffer.alloc(0), dontFragment: true, udpChecksum: false });
      this.udpHeaders.set(`${ip}:${port}`, hdr);
    }
    if (this.tx.count === this.tx.capacity) this.flushTx();
    const f = this.tx.addParts(hdr, datagram, this.shimPort);
    f.writeUInt16BE(20 + 8 + datagram.length, 16); // IPv4 total length
    f.writeUInt16BE(8 + datagram.length, 38); // UDP length
    f.writeUInt16BE(0, 24);
    let sum = 0;
    for (let o = 14; o < 34; o += 2) sum += f.readUInt16BE(o);
    while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
    f.writeUInt16BE(~sum & 0xffff, 24);
  }

  /**
   * A host answered that it has this flow, under `flowId`: map it here,
   * ACTIVE, and watch it like a flow handed off here (sweeps, CLOSED).
   */
  private adopt(key: FlowKey, hostIp: string, flowId: number, frame: Buffer, port: number): boolean {
    const host = this.hostByIp.get(hostIp);
    if (!host || this.active.has(flowId)) return false;
    const k = { clientIp: key.clientIp, clientPort: key.clientPort, vip: key.vip, vipPort: key.vipPort };
    try {
      this.shim.insertMapping({ ...k, hostId: host.id, flowId, state: FlowState.ACTIVE });
    } catch (err) {
      if ((err as ShimError).code !== 'EEXIST') {
        this.stats.mappingErrors++;
        return false;
      }
      // Mapped meanwhile (a handoff of a reused 4-tuple): its packets go where that says.
      return true;
    }
    this.flowIds.claim(flowId);
    const vlan = frame.length >= 18 && frame.readUInt16BE(12) === 0x8100 ? frame.readUInt16BE(14) & 0x0fff : 0;
    this.active.set(flowId, { key: k, hostIp, port, peerMac: macToString(frame.subarray(6, 12)), vlan, packets: 0n,
      lastChange: performance.now(), closingSince: 0, adopted: true });
    this.stats.adopted++;
    return true;
  }

  /** A stray segment nobody owns: reset its sender, as a kernel would for an unknown connection (RFC 9293 3.10.7.1). */
  private resetStray(frame: Buffer, port: number): void {
    let l2 = 14, vlan = 0;
    if (frame.length >= 18 && frame.readUInt16BE(12) === 0x8100) (l2 = 18), (vlan = frame.readUInt16BE(14) & 0x0fff);
    const t = l2 + (frame[l2] & 15) * 4;
    const flags = frame[t + 13];
    if (flags & TCP_RST) return; // never answer a reset
    const ipLen = frame.readUInt16BE(l2 + 2);
    const segLen = ipLen - (t - l2) - (frame[t + 12] >> 4) * 4 + (flags & 1 ? 1 : 0);
    const ack = flags & TCP_ACK;
    this.addTx(buildTcp({
      srcMac: this.lbMac, dstMac: macToString(frame.subarray(6, 12)), vlan: vlan || undefined,
      srcIp: frame.readUInt32BE(l2 + 16), dstIp: frame.readUInt32BE(l2 + 12),
      srcPort: frame.readUInt16BE(t + 2), dstPort: frame.readUInt16BE(t),
      seq: ack ? frame.readUInt32BE(t + 8) : 0, ack: ack ? 0 : (frame.readUInt32BE(t + 4) + segLen) >>> 0,
      flags: ack ? TCP_RST : TCP_RST | TCP_ACK, window: 0,
    }), port);
  }

  private flushReinject(): void {
    if (!this.reinjectTx.count) return;
    try {
      this.shim.reinjectBurst(this.reinjectTx);
    } catch {
      this.stats.mappingErrors++;
    }
    this.reinjectTx.clear();
  }

  private addTx(frame: Buffer, port: number): void {
    if (this.tx.count === this.tx.capacity) this.flushTx();
    this.tx.add(frame, port);
  }

  private flushTx(): void {
    if (!this.tx.count) return;
    this.shim.txBurst(this.tx);
    this.tx.clear();
  }
}
