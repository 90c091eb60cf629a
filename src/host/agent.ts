import dgram from 'node:dgram';
import { EventEmitter } from 'node:events';
import net from 'node:net';
import crypto from 'node:crypto';
import {
  BlobError, BlobSender, DatagramType, decodeBlob, decodeDatagram, decodeOwnerQuery, driveWithTimers, encodeBlob,
  encodeClosedBatch, encodeOwnerQuery, MAX_CLOSED_BATCH, encodePong, OwnerStatus, PongFlag, Reassembler, ReplayWindow, Status, statusForBlobError,
} from '../transfer';
import { ipv4FromString } from '../net';
import type { ConnectionBlob } from '../transfer';
import { Router } from '../classifier/router';
import { validateRouting } from '../classifier/rules-schema';
import type { FrozenConn } from './native';
import type { KernelForwarder } from './kernel-forward';
import { PassedFlows } from './pass-on';
import { PerRequestSession, type PerRequestStats } from './per-request';
import { InjectError, injectConnection } from './repair';
import type { TunnelFilter } from './tunnel-filter';

export interface HostAgentOptions {
  /** UDP port for blobs. Default 4791. */
  port?: number;
  /** Address to bind. Default 0.0.0.0. */
  address?: string;
  /** HMAC-SHA256 key shared with the balancers (16 bytes or more). */
  clusterKey: Buffer;
  /** The VIP services this host serves; blobs for others are refused. */
  vips: ReadonlyArray<{ ip: string; port: number }>;
  /** Balancer addresses allowed to send blobs; empty allows any (the MAC still authenticates). */
  balancers?: readonly string[];
  /** Oldest blob accepted, ms. Default 5000. */
  maxAgeMs?: number;
  /** Replace the injection (tests). Default: TCP_REPAIR through the kernel. */
  inject?: (blob: ConnectionBlob) => net.Socket;
  /**
   * The tunnel check (createHost installs one): each flow is allowed before
   * its socket is injected and revoked when it closes. Default: none.
   */
  tunnel?: Pick<TunnelFilter, 'allow' | 'revoke' | 'counters'>;
  /**
   * Route per request where the balancer asks for it (the blob carries the
   * routing): the application then gets a Duplex in front of the socket, and
   * a request for a pool this host is not in is handed back. Default true.
   */
  perRequest?: boolean;
  /**
   * The MAC of this host's VXLAN device, told to the balancers in every PONG
   * so their configs need not carry it (createHost sets it). Default: not told.
   */
  innerMac?: string;
  /**
   * Longest a connection is kept after the application ended its side while
   * the client has not closed its own (see keepUntilClientCloses). Default 120000 ms.
   */
  lingerMs?: number;
  /** VIP services (`ip:port`) whose connections go to the application as sockets, never per request (passed on: app kind unix). */
  socketOnly?: ReadonlySet<string>;
}

/**
 * The application's end of its output is not the connection's end: the
 * kernel may still hold megabytes of it to send, and while it does the
 * client's ACKs must pass the tunnel check and a balancer that lost the flow
 * must find it here. http.Server ends a `Connection: close` response with
 * destroySoon(), which closes the descriptor once the bytes are in the
 * kernel; the agent would then forget the flow (tunnel revoked, CLOSED sent)
 * with the response still in flight. So the socket stays half-open until the
 * client closes too (it does once it has read the response), as it does in
 * front of a per-request session, or until `lingerMs` after the end.
 */
function keepUntilClientCloses(socket: net.Socket, lingerMs: number): void {
  socket.allowHalfOpen = true;
  socket.destroySoon = function destroySoon(this: net.Socket) {
    this.end();
    return this;
  } as net.Socket['destroySoon'];
  socket.once('finish', () => {
    const t = setTimeout(() => socket.destroy(), lingerMs);
    t.unref();
    socket.once('close', () => clearTimeout(t));
  });
  // Once the client's end arrives too, the stream destroys itself (autoDestroy): the flow ends then.
}

/** How long a CLOSED notice waits for others to share its datagram. */
const CLOSED_BATCH_MS = 2;

/** Why blobs were refused, and what was done: every blob ends in one counter. */
export interface HostAgentStats {
  datagrams: number;
  datagramsDropped: number;
  blobs: number;
  injected: number;
  duplicates: number;
  refusedMac: number;
  refusedStale: number;
  refusedReplay: number;
  refusedSchema: number;
  refusedVip: number;
  refusedSender: number;
  injectFailed: number;
  closed: number;
  /** Tunnel check (0 without one; read by refreshStats): packets of live flows let in. */
  tunnelled: number;
  /** VXLAN packets refused: VNI and inner 4-tuple are no flow of this host. */
  tunnelRefusedFlow: number;
  /** VXLAN packets refused: not from a balancer's address. */
  tunnelRefusedSender: number;
  /** VXLAN packets refused: no tunnel metadata, or the inner frame is not a whole Ethernet/IPv4/TCP packet. */
  tunnelRefusedMalformed: number;
  /** Health-check PINGs answered. */
  pings: number;
  /** Owner LOOKUPs answered (stray recovery), and of those the ones for a flow here. */
  lookups: number;
  lookupsOwned: number;
  /** LOOKUPs that failed their check (MAC, CRC, fields): not answered. */
  lookupsRefused: number;
  /** Blobs refused because a live flow here has their flow ID. */
  refusedFlowId: number;
  /** Routing documents in blobs that did not validate: those connections stay here. */
  routingRefused: number;
}

export interface InjectedFlow {
  flowId: number;
  blob: ConnectionBlob;
  socket: net.Socket;
  /** Nanoseconds from the blob being complete to the socket being ready. */
  injectNs: bigint;
  /** Set when the connection is routed per request (the app got session.app). */
  session?: PerRequestSession;
  /** The balancer carrying the flow now: the one that handed it here, or the last that asked for it (a hand-back goes there). */
  balancer: { address: string; port: number };
  /** Every balancer that mapped the flow: each hears CLOSED. */
  notify: Map<string, { address: string; port: number }>;
  /** Set once its descriptor went to another process (passOn): its end is learned from the kernel. */
  passed?: boolean;
}

export interface HostAgentEvents {
  connection: [socket: net.Socket, flow: InjectedFlow];
  error: [err: Error];
}

/**
 * The host agent (the claim's "second device", steps C6, C9, C11): receives
 * blob datagrams, reassembles and verifies them, injects each connection once
 * into this host's kernel, answers ACKs and a final ACK, and hands the socket
 * to the application as a 'connection' event.
 */
export class HostAgent extends EventEmitter<HostAgentEvents> {
  readonly stats: HostAgentStats = {
    datagrams: 0, datagramsDropped: 0, blobs: 0, injected: 0, duplicates: 0, refusedMac: 0, refusedStale: 0,
    refusedReplay: 0, refusedSchema: 0, refusedVip: 0, refusedSender: 0, injectFailed: 0, closed: 0,
    tunnelled: 0, tunnelRefusedFlow: 0, tunnelRefusedSender: 0, tunnelRefusedMalformed: 0,
    pings: 0, routingRefused: 0, lookups: 0, lookupsOwned: 0, lookupsRefused: 0, refusedFlowId: 0,
  };
  /** Connections passed to other processes (app kind unix). */
  readonly passedFlows = new PassedFlows({ end: (f) => this.endFlow(f) });
  private readonly closedOut = new Map<string, { to: { address: string; port: number }; ids: number[] }>();
  private closedTimer: NodeJS.Timeout | undefined;
  /** Per-request routing (issue 15). */
  readonly perRequestStats: PerRequestStats = {
    handbacks: 0, handbacksFailed: 0, handbacksRefusedFin: 0, handbacksTimedOut: 0, unframed: 0, handbacksUnderWay: 0,
  };
  /**
   * Announced in every PONG: balancers send no new connections here while
   * set, and the flows already here continue. Set by a graceful shutdown.
   */
  draining = false;
  /** False while the application's own HTTP check fails (announced in PONGs). */
  appHealthy = true;
  /** Flow ID to its connection, while the socket is open (C11). */
  readonly flows = new Map<number, InjectedFlow>();
  /** The same flows by client and VIP address and port: what a balancer's LOOKUP asks for. */
  private readonly flowsByKey = new Map<string, InjectedFlow>();
  private readonly sock: dgram.Socket;
  private readonly reasm = new Reassembler();
  private readonly replay: ReplayWindow;
  private readonly vips: Set<string>;
  private readonly balancers: Set<string>;
  private readonly inject: (blob: ConnectionBlob) => net.Socket;
  private readonly injectTimes: bigint[] = [];
  /** Hand-backs to the balancers: the same reliable transfer, the other way. */
  private readonly handbackSender: BlobSender;
  private readonly handbackTimers: { stop(): void };
  /** Hand-backs sent and not yet answered, by flow ID: the frozen socket still holds the 4-tuple. */
  private readonly handingBack = new Map<number, { transfer: number; done: (ok: boolean) => void }>();
  /** Routers by routing document (the blob's bytes, latin1): a balancer sends the same one until it reloads. */
  private readonly routers = new Map<string, Router | null>();

  constructor(private readonly opts: HostAgentOptions) {
    super();
    if (!Buffer.isBuffer(opts.clusterKey) || opts.clusterKey.length < 16) {
      throw Object.assign(new Error('clusterKey must be a Buffer of at least 16 bytes'), { code: 'ERR_HOST_CLUSTER_KEY' });
    }
    this.replay = new ReplayWindow({ maxAgeMs: opts.maxAgeMs ?? 5000 });
    this.vips = new Set(opts.vips.map((v) => `${v.ip}:${v.port}`));
    this.balancers = new Set(opts.balancers ?? []);
    this.inject = opts.inject ?? ((blob) => injectConnection(blob).socket);
    this.sock = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 << 20 });
    this.sock.on('message', (msg, rinfo) => this.onDatagram(msg, rinfo));
    this.sock.on('error', (err) => this.emit('error', err));
    this.handbackSender = new BlobSender({ send: (dest, d) => this.sock.send(d, dest.port, dest.ip) });
    this.handbackTimers = driveWithTimers(this.handbackSender);
  }

  /** Bind the blob port. @returns the bound port. */
  listen(): Promise<number> {
    return new Promise((resolve, reject) => {
      this.sock.once('error', reject);
      this.sock.bind(this.opts.port ?? 4791, this.opts.address ?? '0.0.0.0', () => {
        this.sock.off('error', reject);
        resolve(this.sock.address().port);
      });
    });
  }

  close(): void {
    this.flushClosed();
    this.passedFlows.close();
    this.handbackTimers.stop();
    this.handbackSender.close();
    this.sock.close();
    for (const f of this.flows.values()) f.socket.destroy();
    this.flows.clear();
  }

  /** The stats with the tunnel check's counters read now (they live in the kernel). */
  async refreshStats(): Promise<HostAgentStats> {
    if (this.opts.tunnel) {
      const c = await this.opts.tunnel.counters();
      this.stats.tunnelled = c.tunnelled;
      this.stats.tunnelRefusedFlow = c.refusedFlow;
      this.stats.tunnelRefusedSender = c.refusedSender;
      this.stats.tunnelRefusedMalformed = c.refusedMalformed;
    }
    return this.stats;
  }

  /** Median and p99 injection time (blob complete to socket ready), microseconds. */
  injectTime(): { count: number; p50: number; p99: number } {
    const s = [...this.injectTimes].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    if (!s.length) return { count: 0, p50: NaN, p99: NaN };
    const at = (q: number) => Number(s[Math.min(s.length - 1, Math.floor(s.length * q))]) / 1000;
    return { count: s.length, p50: at(0.5), p99: at(0.99) };
  }

  private reply(buf: Buffer, rinfo: dgram.RemoteInfo): void {
    this.sock.send(buf, rinfo.port, rinfo.address);
  }

  private onDatagram(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    this.stats.datagrams++;
    if (this.balancers.size && !this.balancers.has(rinfo.address)) {
      this.stats.refusedSender++;
      return;
    }
    if (msg.length > 5 && msg[5] === DatagramType.PING) return this.onPing(msg, rinfo);
    if (msg.length > 5 && msg[5] === DatagramType.LOOKUP) return this.onLookup(msg, rinfo);
    if (msg.length > 5 && (msg[5] === DatagramType.ACK || msg[5] === DatagramType.FINAL || msg[5] === DatagramType.ERROR)) {
      // An answer to a hand-back; what matches none (forged, late, malformed) is counted as dropped.
      const x = this.handbackSender.stats;
      const refused = x.badDatagrams + x.unknown + x.misaddressed;
      this.handbackSender.onDatagram({ ip: rinfo.address, port: rinfo.port }, msg);
      this.stats.datagramsDropped += x.badDatagrams + x.unknown + x.misaddressed - refused;
      return;
    }
    const r = this.reasm.receive({ ip: rinfo.address, port: rinfo.port }, msg, Date.now());
    switch (r.kind) {
      case 'dropped':
        this.stats.datagramsDropped++;
        return;
      case 'partial':
      case 'refused':
        return this.reply(r.reply, rinfo);
      case 'already-complete':
        // A retransmission after we finished: the same final answer, never a second injection.
        this.stats.duplicates++;
        return this.reply(r.reply, rinfo);
      case 'complete': {
        this.reply(r.reply, rinfo);
        this.stats.blobs++;
        const status = this.accept(r.blob, rinfo);
        this.reply(this.reasm.finish(r.ref, status), rinfo);
      }
    }
  }

  /** A balancer's health check: answer with the same ids and this host's state. */
  private onPing(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const d = decodeDatagram(msg);
    if ('error' in d || d.type !== 'ping') {
      this.stats.datagramsDropped++;
      return;
    }
    this.stats.pings++;
    const flags = (this.draining ? PongFlag.DRAINING : 0) | (this.appHealthy ? 0 : PongFlag.APP_DOWN);
    this.reply(encodePong({ session: d.session, blobId: d.blobId, status: flags, innerMac: this.opts.innerMac }), rinfo);
  }

  /**
   * A balancer without a mapping for a live flow asks who has it (issue 16):
   * answer with the flow ID if it is here, so it maps the flow to this host,
   * and remember that balancer for CLOSED and a hand-back.
   */
  private onLookup(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const q = decodeOwnerQuery(msg, this.opts.clusterKey);
    if ('error' in q || q.type !== 'lookup') {
      this.stats.datagramsDropped++;
      this.stats.lookupsRefused++;
      return;
    }
    this.stats.lookups++;
    const flow = this.flowsByKey.get(`${q.clientIp}:${q.clientPort}:${q.vip}:${q.vipPort}`);
    const mine = !!flow && !flow.session?.handedBack;
    if (mine) {
      this.stats.lookupsOwned++;
      const b = { address: rinfo.address, port: rinfo.port };
      flow.balancer = b;
      flow.notify.set(`${b.address}:${b.port}`, b);
    }
    this.reply(encodeOwnerQuery({ ...q, type: 'owner', flowId: mine ? flow.flowId : 0,
      status: mine ? OwnerStatus.MINE : OwnerStatus.NOT_HERE }, this.opts.clusterKey), rinfo);
  }

  /** Verify, inject, hand over. @returns the final status for the balancer. */
  private accept(buf: Buffer, from: dgram.RemoteInfo): number {
    const t0 = process.hrtime.bigint();
    let blob: ConnectionBlob;
    try {
      blob = decodeBlob(buf, this.opts.clusterKey, { replay: this.replay, maxAgeMs: this.opts.maxAgeMs });
    } catch (err) {
      const code = err instanceof BlobError ? err.code : 'ERR_BLOB_SCHEMA';
      if (code === 'ERR_BLOB_MAC') this.stats.refusedMac++;
      else if (code === 'ERR_BLOB_STALE') this.stats.refusedStale++;
      else if (code === 'ERR_BLOB_REPLAY') this.stats.refusedReplay++;
      else this.stats.refusedSchema++;
      return err instanceof BlobError ? statusForBlobError(err.code) : Status.INTERNAL;
    }
    if (!this.vips.has(`${blob.vip}:${blob.vipPort}`)) {
      this.stats.refusedVip++;
      return Status.WRONG_VIP;
    }
    // The balancer hands a flow on only once it took the hand-back: if the
    // connection comes back here before its FINAL did, the frozen socket goes now.
    const back = this.handingBack.get(blob.flowId);
    if (back) {
      this.handingBack.delete(blob.flowId);
      this.handbackSender.cancel(back.transfer);
      back.done(true);
    }
    // Flow IDs are unique per host (design.md §8): a second live flow under one (a restarted
    // balancer's allocator meeting its earlier run's flow) is refused, never overwritten.
    if (this.flows.has(blob.flowId)) {
      this.stats.refusedFlowId++;
      return Status.FLOW_ID_IN_USE;
    }
    let socket: net.Socket;
    try {
      // Before injecting: the balancer's first tunnelled packet must find the flow allowed.
      this.opts.tunnel?.allow(blob);
      socket = this.inject(blob);
    } catch (err) {
      this.opts.tunnel?.revoke(blob);
      this.stats.injectFailed++;
      this.emit('error', err instanceof InjectError ? err : new Error(String(err)));
      return Status.INJECT_FAILED;
    }
    const injectNs = process.hrtime.bigint() - t0;
    if (this.injectTimes.length >= 65536) this.injectTimes.shift();
    this.injectTimes.push(injectNs);
    const origin = { address: from.address, port: from.port };
    const flow: InjectedFlow = { flowId: blob.flowId, blob, socket, injectNs, balancer: origin,
      notify: new Map([[`${origin.address}:${origin.port}`, origin]]) };
    const keyName = `${ipv4FromString(blob.clientIp)}:${blob.clientPort}:${ipv4FromString(blob.vip)}:${blob.vipPort}`;
    this.flows.set(blob.flowId, flow);
    this.flowsByKey.set(keyName, flow);
    socket.once('close', () => {
      if (flow.passed) return; // another process has it: PassedFlows learns its end
      if (this.flowsByKey.get(keyName) === flow) this.flowsByKey.delete(keyName);
      if (flow.session?.handedBack) return; // moved on: its mapping stays, the balancer re-points it
      this.endFlow(flow);
    });
    this.stats.injected++;
    const router = blob.routing && this.opts.perRequest !== false && !this.opts.socketOnly?.has(`${blob.vip}:${blob.vipPort}`)
      ? this.routerFor(blob.routing) : null;
    if (!router) {
      keepUntilClientCloses(socket, this.opts.lingerMs ?? 120_000);
      this.emit('connection', socket, flow);
      return Status.OK;
    }
    const session = new PerRequestSession({
      socket, blob, router, stats: this.perRequestStats,
      revoke: () => this.opts.tunnel?.revoke(blob),
      handback: (f, data, done) => this.handBack(blob, f, data, flow.balancer, done),
    });
    flow.session = session;
    this.emit('connection', session.app as unknown as net.Socket, flow);
    return Status.OK;
  }

  /** The connection is over: forget it, stop its tunnel, tell the balancers (its mapping goes before its idle timeout). */
  private endFlow(flow: InjectedFlow): void {
    const blob = flow.blob;
    const k = `${ipv4FromString(blob.clientIp)}:${blob.clientPort}:${ipv4FromString(blob.vip)}:${blob.vipPort}`;
    if (this.flowsByKey.get(k) === flow) this.flowsByKey.delete(k);
    if (this.flows.get(blob.flowId) === flow) this.flows.delete(blob.flowId);
    this.stats.closed++;
    this.opts.tunnel?.revoke(blob);
    for (const b of flow.notify.values()) this.queueClosed(blob.flowId, b);
  }

  /**
   * CLOSED notices go out in batches: what closed within CLOSED_BATCH_MS, one
   * datagram per balancer (a send per connection measured ~17 µs of this
   * thread, and each is an event on the balancer's control thread).
   */
  private queueClosed(flowId: number, to: { address: string; port: number }): void {
    const k = `${to.address}:${to.port}`;
    let q = this.closedOut.get(k);
    if (!q) this.closedOut.set(k, q = { to, ids: [] });
    q.ids.push(flowId);
    if (q.ids.length >= MAX_CLOSED_BATCH) return this.flushClosed();
    if (!this.closedTimer) {
      this.closedTimer = setTimeout(() => this.flushClosed(), CLOSED_BATCH_MS);
      this.closedTimer.unref();
    }
  }

  private flushClosed(): void {
    if (this.closedTimer) clearTimeout(this.closedTimer);
    this.closedTimer = undefined;
    for (const { to, ids } of this.closedOut.values()) {
      try {
        this.sock.send(encodeClosedBatch(ids), to.port, to.address);
      } catch { /* agent closing */ }
    }
    this.closedOut.clear();
  }

  /**
   * Give an injected connection to the server listening on UNIX socket
   * `path` (SCM_RIGHTS): call it from a 'connection' handler, in the same
   * tick. A connection that cannot be passed is reset.
   * @returns whether it was passed
   */
  passOn(flow: InjectedFlow, path: string): boolean {
    const r = this.passedFlows.pass(flow, path);
    if (r.rc === 0) return true;
    this.emit('error', new Error(`flow ${flow.flowId}: not passed to ${path}: ${r.detail}`));
    flow.socket.resetAndDestroy();
    return false;
  }

  /**
   * Forward an injected connection in the kernel (KernelForwarder): call it
   * from a 'connection' handler, in the same tick. A connection the
   * forwarder cannot take (it is full) is reset.
   * @returns whether it was taken
   */
  forwardInKernel(flow: InjectedFlow, forwarder: KernelForwarder): boolean {
    const r = forwarder.forward(flow, (f) => this.endFlow(f));
    if (r.rc === 0) return true;
    this.emit('error', new Error(`flow ${flow.flowId}: not forwarded: ${r.detail}`));
    flow.socket.resetAndDestroy();
    return false;
  }

  private routerFor(doc: Buffer): Router | null {
    const k = doc.toString('latin1');
    let r = this.routers.get(k);
    if (r === undefined) {
      r = null;
      try {
        const raw: unknown = JSON.parse(doc.toString('utf8'));
        const hosts = (raw as { pools?: Array<{ hosts?: Array<{ host?: unknown }> }> }).pools
          ?.flatMap((p) => p.hosts?.map((h) => String(h.host)) ?? []) ?? [];
        const v = validateRouting(raw, hosts);
        if (v.ok) r = new Router(v.routing, hosts);
      } catch { /* refused below */ }
      if (!r) this.stats.routingRefused++;
      if (this.routers.size >= 16) this.routers.delete(this.routers.keys().next().value as string);
      this.routers.set(k, r);
    }
    return r;
  }

  /** Send a frozen connection back to the balancer that handed it here. */
  private handBack(orig: ConnectionBlob, f: FrozenConn, data: Buffer, to: { address: string; port: number },
    done: (ok: boolean) => void): void {
    const flow = this.flows.get(orig.flowId);
    this.flows.delete(orig.flowId);
    if (flow) {
      const k = `${ipv4FromString(orig.clientIp)}:${orig.clientPort}:${ipv4FromString(orig.vip)}:${orig.vipPort}`;
      if (this.flowsByKey.get(k) === flow) this.flowsByKey.delete(k);
    }
    const rcvNxt = f.rcvNxt >>> 0;
    const blob: ConnectionBlob = {
      v: 1, flowId: orig.flowId, clientIp: orig.clientIp, clientPort: orig.clientPort, vip: orig.vip, vipPort: orig.vipPort,
      // The stream restarts at the next request: sequence numbers before it no longer matter.
      iss: (f.sndNxt - 1) >>> 0, irs: (rcvNxt - data.length - 1) >>> 0, sndNxt: f.sndNxt >>> 0, rcvNxt,
      sndWnd: f.sndWnd, rcvWnd: f.rcvWnd, sndWscale: orig.sndWscale, rcvWscale: orig.rcvWscale, mss: orig.mss,
      sackOk: orig.sackOk, tsOk: orig.tsOk, tsVal: f.tsValue >>> 0, tsEcr: 0, data, decision: orig.decision,
      created: Date.now(), nonce: crypto.randomBytes(16),
    };
    let buf: Buffer;
    try {
      buf = encodeBlob(blob, this.opts.clusterKey);
    } catch (err) {
      this.emit('error', err as Error);
      return done(false);
    }
    const entry = { transfer: -1, done };
    this.handingBack.set(orig.flowId, entry);
    entry.transfer = this.handbackSender.send({ ip: to.address, port: to.port }, buf, (r) => {
      if (this.handingBack.get(orig.flowId) !== entry) return; // already settled by the flow's return
      this.handingBack.delete(orig.flowId);
      // Reset the client only when the balancer refused the hand-back. Silence for the whole
      // transfer leaves it unknown whether the balancer took it (and handed the connection on,
      // which a RST from here would kill there): close silently; if it did not, the flow is
      // revoked here and the client times out, never served wrongly.
      done(r.ok || r.code === 'ERR_TRANSFER_GAVE_UP');
    });
  }
}
