// Per-request routing on the host (issue 15): the agent stands between an
// injected connection and the in-process application, so it sees where each
// HTTP/1.x request begins. A request for a pool this host is not in is not
// passed on: once every earlier response is written and acknowledged by the
// client, the connection is frozen with TCP_REPAIR and handed back to the
// balancer with the unread bytes, and the application sees the client end.
//
// The application gets a Duplex, not the kernel socket: Node's http.Server
// reads a net.Socket's handle directly (no 'data' events to watch), and a
// request it has read can no longer be handed on. The cost is a copy of the
// bytes through this module, paid only on connections that may move (the
// balancer sends the routing only then: Router.mayMove).
import { Duplex } from 'node:stream';
import type net from 'node:net';
import { classifyBytes } from '../classifier/classify';
import type { RequestInfo } from '../classifier/request-info';
import type { Router } from '../classifier/router';
import type { ConnectionBlob } from '../transfer';
import { BodyReader, bodyFraming, headEnd, MAX_HEAD_BYTES, ResponseCounter } from './http-framing';
import { nativeFreeze, nativeFrozenClose, type FrozenConn } from './native';

export interface PerRequestStats {
  /** Connections handed back: frozen and sent to the balancer. */
  handbacks: number;
  /** Hand-backs the balancer refused: the client was reset. */
  handbacksFailed: number;
  /** A request for another pool after the client half-closed (a blob cannot carry the FIN): reset. */
  handbacksRefusedFin: number;
  /** The previous response was not acknowledged in time: reset. */
  handbacksTimedOut: number;
  /** Connections that stopped being framed (an unframable message): served here from then on. */
  unframed: number;
  /**
   * Gauge: hand-backs decided and not yet settled (waiting for the previous
   * response's ACK, or sent and awaiting the balancer's answer).
   */
  handbacksUnderWay: number;
}

export interface PerRequestOptions {
  socket: net.Socket;
  blob: ConnectionBlob;
  router: Router;
  stats: PerRequestStats;
  /** Called before the freeze: stop the tunnel check letting this flow's packets in. */
  revoke(): void;
  /** The frozen connection and the bytes of its next requests: send them back, then call done(closeSilently). */
  handback(frozen: FrozenConn, data: Buffer, done: (ok: boolean) => void): void;
  /** Longest wait for the previous response to be acknowledged. Default 10000 ms. */
  drainTimeoutMs?: number;
}

const EMPTY = Buffer.alloc(0);
const EBUSY = -16;
const EPIPE = -32;

export class PerRequestSession {
  /** What the application reads and writes instead of the socket. */
  readonly app: Duplex;
  /** Set once frozen: the socket's 'close' is not the connection's end. */
  handedBack = false;
  private readonly socket: net.Socket;
  private readonly responses = new ResponseCounter();
  private readonly base: RequestInfo;
  private pending: Buffer = EMPTY;
  private body: BodyReader | undefined;
  private first = true;
  private passthrough = false;
  private handingBack = false;
  /** Counted in handbacksUnderWay, not yet settled. */
  private underWay = false;
  private clientEnded = false;
  private appPaused = false;

  constructor(private readonly o: PerRequestOptions) {
    const s = (this.socket = o.socket);
    // The application decides when its side ends (an http.Server answers a half-closed client).
    s.allowHalfOpen = true;
    const b = o.blob;
    this.base = { kind: 'unknown', clientIp: b.clientIp, clientPort: b.clientPort, vip: b.vip, vipPort: b.vipPort };
    const app = (this.app = new Duplex({
      read: () => {
        if (this.appPaused && !this.handingBack) {
          this.appPaused = false;
          s.resume();
        }
      },
      write: (chunk: Buffer, _enc, cb) => {
        this.responses.feed(chunk);
        if (this.handedBack) return cb();
        s.write(chunk, (err) => cb(err ?? undefined));
      },
      // http.Server corks a response's pieces (head, chunks, end): one write to the kernel, as on a socket.
      writev: (chunks, cb) => {
        const bufs = chunks.map((c) => c.chunk as Buffer);
        for (const b of bufs) this.responses.feed(b);
        if (this.handedBack) return cb();
        s.write(bufs.length === 1 ? bufs[0] : Buffer.concat(bufs), (err) => cb(err ?? undefined));
      },
      final: (cb) => {
        if (!this.handedBack) s.end();
        cb();
      },
      destroy: (err, cb) => {
        if (!this.handedBack) s.destroy();
        cb(err);
      },
    }));
    // What http.Server and applications ask a socket.
    Object.assign(app, {
      remoteAddress: b.clientIp, remotePort: b.clientPort, remoteFamily: 'IPv4', localAddress: b.vip, localPort: b.vipPort,
      setTimeout: (ms: number, cb?: () => void) => { s.setTimeout(ms, cb); return app; },
      setNoDelay: (v?: boolean) => { s.setNoDelay(v); return app; },
      setKeepAlive: (v?: boolean, d?: number) => { s.setKeepAlive(v, d); return app; },
    });
    s.on('timeout', () => app.emit('timeout'));
    s.on('data', (d: Buffer) => {
      this.pending = this.pending.length ? Buffer.concat([this.pending, d]) : d;
      this.pump();
    });
    s.on('end', () => {
      this.clientEnded = true;
      if (this.handingBack) return this.refuse('fin');
      this.pump();
      if (!this.handingBack) app.push(null);
    });
    s.on('error', (err) => app.destroy(err));
    s.on('close', () => { if (!this.handedBack) app.destroy(); });
  }

  private deliver(bytes: Buffer): void {
    if (bytes.length && !this.app.push(bytes)) {
      this.appPaused = true;
      this.socket.pause();
    }
  }

  /** Pass on whole requests while they belong here; stop at the first that does not. */
  private pump(): void {
    while (this.pending.length && !this.handingBack) {
      if (!this.passthrough && this.responses.unframed) this.unframe();
      if (this.passthrough) {
        this.deliver(this.pending);
        this.pending = EMPTY;
        return;
      }
      if (this.body) {
        const n = this.body.consume(this.pending, 0);
        if (this.body.failed) { this.unframe(); continue; }
        this.deliver(this.pending.subarray(0, n));
        this.pending = this.pending.subarray(n);
        if (this.body.done) this.body = undefined;
        continue;
      }
      const e = headEnd(this.pending);
      if (e < 0) {
        if (this.pending.length > MAX_HEAD_BYTES) { this.unframe(); continue; }
        return;
      }
      const r = classifyBytes(this.pending.subarray(0, e), this.base, { byteCap: MAX_HEAD_BYTES });
      const framing = r.status === 'decided' && r.info.kind === 'http' ? bodyFraming(r.info.headers ?? [], true) : null;
      if (r.status !== 'decided' || !framing) { this.unframe(); continue; }
      if (!this.first && !this.stays(r.info)) return this.startHandback();
      this.first = false;
      this.responses.expect(r.info.method ?? 'GET');
      this.deliver(this.pending.subarray(0, e));
      this.pending = this.pending.subarray(e);
      this.body = framing.kind === 'none' ? undefined : new BodyReader(framing);
    }
  }

  private unframe(): void {
    if (!this.passthrough) this.o.stats.unframed++;
    this.passthrough = true;
  }

  /** May this request stay: is this host in the pool it routes to? */
  private stays(info: RequestInfo): boolean {
    const route = this.o.router.route(info);
    return route !== null && this.o.router.poolHas(route.pool, this.o.blob.decision.host);
  }

  private settle(): void {
    if (!this.underWay) return;
    this.underWay = false;
    this.o.stats.handbacksUnderWay--;
  }

  private startHandback(): void {
    this.handingBack = true;
    this.underWay = true;
    this.o.stats.handbacksUnderWay++;
    this.socket.pause(); // what else arrives stays in the kernel's queue, and is peeked
    if (this.clientEnded) return this.refuse('fin');
    const deadline = Date.now() + (this.o.drainTimeoutMs ?? 10_000);
    const attempt = () => {
      if (this.socket.destroyed) return this.settle();
      // Every response the application owes written, flushed to the kernel, and acknowledged (hh_freeze checks).
      if (this.responses.outstanding === 0 && this.socket.writableLength === 0) {
        const fd = (this.socket as unknown as { _handle?: { fd?: number } })._handle?.fd ?? -1;
        const f = nativeFreeze(fd);
        if (typeof f !== 'number') return this.frozen(fd, f);
        if (f === EPIPE) return this.refuse('fin');
        if (f !== EBUSY) return this.refuse('timeout');
      }
      if (Date.now() > deadline) return this.refuse('timeout');
      setTimeout(attempt, 1);
    };
    attempt();
  }

  private frozen(fd: number, first: FrozenConn): void {
    // The kernel still takes packets in repair mode: stop them at the tunnel check, then read the state again.
    this.o.revoke();
    const f = nativeFreeze(fd);
    if (typeof f === 'number') {
      // Out of repair mode with an abortive close armed: the socket's last close resets the client.
      nativeFrozenClose(first.fd, true);
      return this.refuse(f === EPIPE ? 'fin' : 'timeout');
    }
    nativeFrozenClose(first.fd, false);
    const data = f.unread.length ? Buffer.concat([this.pending, f.unread]) : this.pending;
    this.handedBack = true;
    this.o.stats.handbacks++;
    this.socket.destroy(); // the connection lives on in f.fd, still frozen
    this.app.push(null);
    this.app.destroy();
    this.o.handback(f, data, (ok) => {
      if (!ok) this.o.stats.handbacksFailed++;
      nativeFrozenClose(f.fd, !ok);
      this.settle();
    });
  }

  private refuse(why: 'fin' | 'timeout'): void {
    if (why === 'fin') this.o.stats.handbacksRefusedFin++;
    else this.o.stats.handbacksTimedOut++;
    this.settle();
    this.socket.resetAndDestroy();
  }
}
