// The third way to hand a connection to the application (design.md §2,
// issue 17): pass its descriptor over a UNIX socket (SCM_RIGHTS) to a server
// in any language, which reads the request the balancer already took (it is
// in the socket's receive queue) and answers directly. The agent keeps the
// flow in its table (tunnel check, owner lookups, CLOSED) without holding
// the socket: a duplicate would keep the connection open after the server
// closed it. So it asks the kernel (sock_diag) every pollMs whether the
// connection is still there, and ends the flow when it is gone.
import type net from 'node:net';
import type { InjectedFlow } from './agent';
import { hostLastError, nativePassFd, nativeTcpState } from './native';

export interface PassOnStats {
  /** Connections passed to another process. */
  passed: number;
  /** Could not be passed (nobody listening, its backlog full): the client was reset. */
  passFailed: number;
}

export interface PassOnOptions {
  /** The flow is over (the kernel no longer has its socket, or it is in TIME_WAIT): forget it. */
  end(flow: InjectedFlow): void;
  /** Between checks of the passed connections. Default 500 ms. */
  pollMs?: number;
}

const ENOENT = -2;
const TCP_TIME_WAIT = 6;
const TCP_CLOSE = 7;

export class PassedFlows {
  readonly stats: PassOnStats = { passed: 0, passFailed: 0 };
  private readonly flows = new Set<InjectedFlow>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly o: PassOnOptions) {}

  /** Connections passed on and not over yet. */
  get size(): number {
    return this.flows.size;
  }

  /**
   * Pass `flow`'s socket to the server on `path`, with a JSON line naming the
   * flow. Synchronous, in the tick the socket was made: Node has read nothing yet.
   * @returns 0, or -errno (hh_pass_fd's) with the socket left to the caller
   */
  pass(flow: InjectedFlow, path: string): { rc: number; detail?: string } {
    const socket = flow.socket as net.Socket & { _handle?: { fd?: number } };
    const fd = socket._handle?.fd ?? -1;
    const b = flow.blob;
    const hdr = Buffer.from(`${JSON.stringify({ flowId: b.flowId, client: `${b.clientIp}:${b.clientPort}`, vip: `${b.vip}:${b.vipPort}` })}\n`);
    const rc = fd < 0 ? -9 : nativePassFd(path, fd, hdr);
    if (rc < 0) {
      this.stats.passFailed++;
      return { rc, detail: fd < 0 ? 'the socket has no descriptor' : hostLastError() };
    }
    this.stats.passed++;
    flow.passed = true;
    this.flows.add(flow);
    socket.destroy(); // this process's copy; the server has its own
    if (!this.timer) {
      this.timer = setInterval(() => this.poll(), this.o.pollMs ?? 500);
      this.timer.unref();
    }
    return { rc: 0 };
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.flows.clear();
  }

  private poll(): void {
    for (const f of this.flows) {
      const b = f.blob;
      const st = nativeTcpState(b.clientIp, b.clientPort, b.vip, b.vipPort);
      // Still sending, or waiting for the client's last ACK or FIN: the tunnel must let it in.
      if (st !== ENOENT && st !== TCP_TIME_WAIT && st !== TCP_CLOSE) continue;
      this.flows.delete(f);
      this.o.end(f);
    }
    if (!this.flows.size && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }
}
