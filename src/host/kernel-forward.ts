// Forward mode without a copy through JS (issue 17): each injected
// connection's descriptor goes to libhandoff_host's splice thread
// (hh_splice.c), which joins it to a new connection to the local server and
// moves the bytes both ways in the kernel. The agent keeps the flow in its
// table (tunnel check, owner lookups, CLOSED) until the thread reports the
// pair's end through a pipe the event loop watches: no polling, no spin.
import net from 'node:net';
import os from 'node:os';
import type { InjectedFlow } from './agent';
import type { ForwardStats } from './apps';
import {
  HostNativeError, hostLastError, nativeSpliceAdd, nativeSpliceClose, nativeSpliceDone, nativeSpliceNotifyFd,
  nativeSpliceOpen, nativeSpliceStats, type SpliceStats,
} from './native';

export interface KernelForwarderOptions {
  /** The local server: an IPv4 address (the kernel connects to it) and port. */
  upstream: { host: string; port: number };
  /** Connections forwarded at once; more are reset and counted (refusedFull). Default 16384. */
  maxConnections?: number;
}

const ZERO: SpliceStats = { added: 0, active: 0, done: 0, refusedFull: 0, upstreamFailed: 0, errors: 0, bytesToUpstream: 0, bytesToClient: 0 };

/** One forwarding app's splice thread, opened with its first connection. */
export class KernelForwarder {
  /** Counters read from the native forwarder on every access. */
  readonly stats: ForwardStats;
  private handle = -1;
  private notify: net.Socket | undefined;
  private readonly flows = new Map<number, { flow: InjectedFlow; end: (f: InjectedFlow) => void }>();
  private readonly ids = new Uint32Array(256);
  private readonly rcs = new Int32Array(256);
  /** Pairs that ended with a reset, by errno name (ECONNREFUSED: nothing listened upstream). */
  readonly resets = new Map<string, number>();

  constructor(private readonly o: KernelForwarderOptions) {
    if (!net.isIPv4(o.upstream.host)) {
      throw Object.assign(new TypeError(`kernel forwarding needs an IPv4 upstream address, not '${o.upstream.host}'`), { code: 'ERR_FORWARD_UPSTREAM' });
    }
    const self = this;
    this.stats = {
      get connections() { return self.native().added + self.native().refusedFull; },
      get bytesFromClient() { return self.native().bytesToUpstream; },
      get bytesToClient() { return self.native().bytesToClient; },
      get upstreamErrors() { const n = self.native(); return n.upstreamFailed + n.errors + n.refusedFull; },
    };
  }

  /** The native counters (zeros before the first connection). */
  native(): SpliceStats {
    return this.handle < 0 ? ZERO : nativeSpliceStats(this.handle);
  }

  /** Connections whose pairs have not ended yet, as the agent sees them. */
  get size(): number {
    return this.flows.size;
  }

  /**
   * Give `flow`'s socket to the splice thread (call it in the tick the
   * socket was made: Node has read nothing yet), then drop this process's
   * copy. `end` runs once the pair is over.
   * @returns 0, or -errno with the socket left to the caller
   */
  forward(flow: InjectedFlow, end: (f: InjectedFlow) => void): { rc: number; detail?: string } {
    if (this.handle < 0) {
      try {
        this.open();
      } catch (err) {
        return { rc: -5, detail: (err as Error).message }; // EIO: the library could not start a forwarder
      }
    }
    const socket = flow.socket as net.Socket & { _handle?: { fd?: number } };
    if (socket.connecting) {
      // A handler's own socket still connecting (an injected one never is): paused, so
      // Node reads nothing when it connects; taken in its 'connect' event, before any read.
      socket.pause();
      socket.once('connect', () => {
        if (this.forward(flow, end).rc < 0) socket.resetAndDestroy();
      });
      return { rc: 0 };
    }
    const fd = socket._handle?.fd ?? -1;
    if (fd < 0) return { rc: -9, detail: 'the socket has no descriptor' };
    const rc = nativeSpliceAdd(this.handle, fd, this.o.upstream.host, this.o.upstream.port, flow.flowId);
    if (rc < 0) return { rc, detail: hostLastError() };
    flow.passed = true;
    this.flows.set(flow.flowId, { flow, end });
    socket.destroy();
    return { rc: 0 };
  }

  /** Stop the thread: the connections still forwarded are reset, and each one's `end` runs. */
  close(): void {
    this.notify?.destroy();
    this.notify = undefined;
    if (this.handle >= 0) nativeSpliceClose(this.handle);
    this.handle = -1;
    const left = [...this.flows.values()];
    this.flows.clear();
    for (const e of left) e.end(e.flow);
  }

  private open(): void {
    const h = nativeSpliceOpen(this.o.maxConnections ?? 16384);
    if (h < 0) throw new HostNativeError(`hh_splice_open: ${hostLastError()}`);
    const fd = nativeSpliceNotifyFd(h);
    if (fd < 0) {
      nativeSpliceClose(h);
      throw new HostNativeError(`hh_splice_notify_fd: ${hostLastError()}`);
    }
    this.handle = h;
    this.notify = new net.Socket({ fd, readable: true, writable: false });
    this.notify.on('data', () => this.drain());
    this.notify.unref();
  }

  private drain(): void {
    for (;;) {
      const n = nativeSpliceDone(this.handle, this.ids, this.rcs);
      if (n <= 0) return;
      for (let i = 0; i < n; i++) {
        if (this.rcs[i] < 0) {
          const name = errnoName(-this.rcs[i]);
          this.resets.set(name, (this.resets.get(name) ?? 0) + 1);
        }
        const e = this.flows.get(this.ids[i]);
        if (!e) continue;
        this.flows.delete(this.ids[i]);
        e.end(e.flow);
      }
    }
  }
}

function errnoName(e: number): string {
  for (const [k, v] of Object.entries(os.constants.errno as Record<string, number>)) if (v === e) return k;
  return `errno ${e}`;
}
