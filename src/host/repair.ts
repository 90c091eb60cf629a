// Connection injection (design.md §5, claim step C6): rebuild a client's TCP
// connection, accepted and ACKed by the balancer, inside this host's kernel
// with TCP_REPAIR, and hand it over as an ordinary connected socket.
//
// API
//   injectConnectionFd(blob, opts) -> fd        the caller owns the descriptor
//   injectConnection(blob, opts)   -> { fd, socket }
//                                               socket = new net.Socket({ fd }),
//                                               which owns (and closes) the fd
// Use the fd form to pass the descriptor elsewhere (SCM_RIGHTS, a C server);
// the socket form for in-process handlers (`server.emit('connection', s)`) and
// forward mode. Both are synchronous: 15-17 system calls, all made in ONE
// native call, hh_inject() of libhandoff_host.so (native/host-agent/
// hh_inject.c, bound in ./native.ts). Median 27 µs per injection in a network
// namespace with a veth, 80 bytes of data (the kernel's work: the same call
// from C takes as long; the former JS path, one koffi call per system call,
// took 37 µs there); 40-100 µs in test/host-repair.test.ts (busy client).
// Every failure throws InjectError and closes the descriptor first: a failed
// injection leaves nothing open and no socket bound. The C side reports the
// failing step, socket option and errno; the codes below are chosen here. The
// blob's checks (checkBlob: VIP served, IPv4, sequence invariants) stay in JS.
// The library is required (npm run setup builds it): without it every
// injection throws HostNativeError ERR_HOST_NATIVE, naming the fix.
//
// The sequence, as hh_inject runs it in C (each step's reason; "kernel" below
// is Linux ≥ 6.7 net/ipv4/tcp.c). This comment is hh_inject's spec.
//  1. socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC).
//  2. TCP_REPAIR = 1. Needs CAP_NET_ADMIN in the socket's network namespace:
//     EPERM here is the only EPERM that means "no privilege"
//     (ERR_INJECT_PERMISSION). Repair mode also sets sk_reuse = SK_FORCE_REUSE,
//     so the bind below never conflicts: any number of injected connections
//     share VIP:port with each other and with a server listening on it,
//     without SO_REUSEADDR/SO_REUSEPORT.
//  3. IP_FREEBIND (default) or IP_TRANSPARENT (opts.transparent, needs
//     CAP_NET_ADMIN or CAP_NET_RAW): bind works even when the VIP is not (yet)
//     a local address. With the VIP on lo (design §4) neither is needed; with a
//     VIP that is not local at all only IP_TRANSPARENT also lets the route
//     lookup of connect() accept it as a source (FLOWI_FLAG_ANYSRC).
//  4. bind(VIP:vipPort).
//  5. TCP_REPAIR_QUEUE = SEND, TCP_QUEUE_SEQ = sndNxt; then
//     TCP_REPAIR_QUEUE = RECV, TCP_QUEUE_SEQ = irs + 1. Both only while the
//     socket is still CLOSE (kernel: EPERM otherwise). The balancer never sends
//     data, so sndNxt = iss + 1 (checked: ERR_INJECT_BLOB otherwise).
//  6. connect(client). In repair mode tcp_connect() only runs
//     tcp_connect_init() and tcp_finish_connect(): snd_una = snd_nxt = sndNxt,
//     state ESTABLISHED, nothing is sent. EADDRNOTAVAIL here means the 4-tuple
//     is already in use on this host (a second injection of the same flow).
//  7. TCP_REPAIR_OPTIONS, an array of {u32 code, u32 val}:
//       MSS = blob.mss (the client's MSS, sets mss_clamp);
//       WINDOW = sndWscale | rcvWscale << 16 — ALWAYS sent: when scaling was
//         not agreed the blob carries 0/0 and the kernel needs exactly that,
//         because tcp_connect_init() already chose its own rcv_wscale (7 with
//         default buffers) and, without this option, would shift every window
//         it advertises by it to a client that does not scale (the window
//         would look 128 times smaller). wscale_ok with both shifts 0 is
//         indistinguishable on the wire from no scaling. (Measured: leaving
//         the option out for 0/0 stalls a 4 MB upload for over 30 s in the
//         test's no-options case; with it, 25-60 ms.)
//       SACK_PERM (val 0) if sackOk; TIMESTAMP (val must be 0) if tsOk.
//     Allowed only in ESTABLISHED before any byte was sent (kernel: EPERM).
//  8. TCP_TIMESTAMP (if tsOk) so the host's TS clock continues the balancer's:
//     the kernel stores tsoffset = val - tcp_clock_ts(usec) and, since 6.7,
//     takes the LOW BIT of val as "use µs timestamps". The balancer's clock
//     is in ms, so val is made even, rounded UP (a TSval may run ahead, never
//     behind the last one the client saw: its PAWS check drops segments whose
//     TSval went backwards). val = tsVal + max(0, now - created): elapsed time
//     is clamped at 0 so a host clock behind the balancer's never moves TSval
//     back; a host clock ahead only makes it jump forward, which is harmless.
//  9. Received bytes into the receive queue: TCP_REPAIR_QUEUE is still RECV;
//     send() goes to tcp_send_rcvq(), which queues them as if received and
//     advances rcv_nxt from irs + 1 to rcvNxt (blob invariant, checked).
//     It takes at most one skb (MAX_SKB_FRAGS pages, ~68 KiB) per call, so
//     larger data takes several send()s (1 MiB, the largest blob, works).
//     The application reads them as the first bytes of the stream.
// 10. TCP_REPAIR_WINDOW {snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup}:
//       snd_wl1 = rcvNxt - 1: the last window update came from a segment that
//         started before rcvNxt, and any segment the client sends from now on
//         starts at rcvNxt or later, so it updates the window while
//         retransmissions of old bytes do not; this is also the value the
//         kernel's own window probe sets (tcp_send_window_probe);
//       snd_wnd = max_window = sndWnd (the client's window, bytes, scaled);
//       rcv_wnd = rcvWnd, rcv_wup = rcvNxt: the window the balancer last
//         advertised, in its ACK of rcvNxt, so the host never offers less
//         (tcp_select_window never shrinks below rcv_wup + rcv_wnd).
//     DELIBERATE DIFFERENCE from design §5, which lists the window before the
//     data: the kernel refuses rcv_wup after rcv_nxt (EINVAL), and rcv_nxt
//     only reaches rcvNxt once the data is queued. Queuing first lets the
//     window be restored exactly as the balancer advertised it.
// 11. TCP_REPAIR = 0 (default; opts.windowProbe = false uses
//     TCP_REPAIR_OFF_NO_WP = -1). Leaving with 0 sends one window probe: an
//     ACK with seq snd_una - 1 that carries rcv_nxt, our window and a TSval.
//     We want it: it re-acknowledges everything the balancer acknowledged,
//     tells the client the host's real window, and the client, seeing an old
//     sequence number, answers at once with an ACK — carrying its current
//     window and TSval, which gives the new socket ts_recent (see below)
//     within one round trip, before the application has written anything.
// 12. SO_REUSEADDR = 1 (opts.reuseAddr, default on). Leaving repair mode
//     resets sk_reuse to SK_NO_REUSE; accepted sockets normally inherit
//     SO_REUSEADDR from their listener, and a listener (re)started on VIP:port
//     while injected connections live needs them to have it (measured: without
//     it, listen() fails with EADDRINUSE).
//
// On kernels before 6.7 the low bit means nothing and rounding up costs at most
// 1 ms of TS clock, so the same value is right there too.
//
// Timestamps: the echo (ts_recent). No socket option sets ts_recent — in
// repair mode TCPOPT_TIMESTAMP only enables timestamps and the kernel refuses
// any value other than 0 (EINVAL; checked on 6.18). So blob.tsEcr is not
// used here. Until the client's first segment after injection (the answer to
// the window probe, one RTT), the host's segments echo TSecr = 0. The client
// does not check TSecr against anything (RFC 7323 PAWS tests only TSval, and
// Linux only rejects bad TSecr in SYN_RECV, TcpExtTSEcrRejected); TSecr = 0 only means it
// takes no RTT sample from those segments (Linux skips rcv_tsecr == 0) and
// uses its sequence-based RTT instead. The host's own PAWS check passes every
// segment while ts_recent is 0 (tcp_paws_check), and the first client segment
// at rcv_wup (= rcvNxt) stores its TSval as ts_recent (tcp_replace_ts_recent).
//
// MSS: the kernel computes mss_cache in connect() (step 6), before the MSS
// option exists, from a clamp of 536 (TCP_MSS_DEFAULT, set by
// tcp_v4_connect), and nothing recomputes it until the path MTU changes. So
// TCP_MAXSEG = blob.mss is also set before connect (user_mss becomes the
// clamp tcp_connect_init uses): segments are full-sized from the first one.
// TCP_MAXSEG only takes 88..32767: a smaller MSS (the blob allows 48) is left
// to the 536 default clamp and the option's mss_clamp; a larger one (loopback
// MTUs) is capped at 32767.
import net from 'node:net';
import type { ConnectionBlob } from '../transfer/blob';
import {
  IP_TRANSPARENT, SOL_IP, SOL_TCP, TCP_REPAIR, TCP_REPAIR_ON, errnoName, libc, optionName,
} from './libc';
import { InjectFlag, InjectStep, hostLastError, injectFailure, nativeInject } from './native';

const EPERM = 1;
const EACCES = 13;
const EADDRNOTAVAIL = 99;

export type InjectErrorCode =
  /** The blob's fields contradict each other (would corrupt the byte stream), or are not IPv4. */
  | 'ERR_INJECT_BLOB'
  /** The blob names a VIP not in opts.vips. */
  | 'ERR_INJECT_VIP'
  /** No CAP_NET_ADMIN (TCP_REPAIR, IP_TRANSPARENT) or a privileged port without CAP_NET_BIND_SERVICE. */
  | 'ERR_INJECT_PERMISSION'
  | 'ERR_INJECT_SOCKET'
  | 'ERR_INJECT_SETSOCKOPT'
  | 'ERR_INJECT_BIND'
  /** connect() in repair mode; EADDRNOTAVAIL: this 4-tuple already exists here. */
  | 'ERR_INJECT_CONNECT'
  /** Writing the received bytes into the receive queue failed. */
  | 'ERR_INJECT_QUEUE'
  /** net.Socket refused the descriptor (injectConnection only). */
  | 'ERR_INJECT_WRAP';

export class InjectError extends Error {
  readonly code: InjectErrorCode;
  /** The failing system call ('setsockopt', 'bind', ...), if one failed. */
  readonly syscall?: string;
  /** The socket option, for setsockopt failures ('TCP_REPAIR_WINDOW', ...). */
  readonly option?: string;
  readonly errno?: number;
  /** 'EPERM', 'EINVAL', ... */
  readonly errnoName?: string;
  constructor(code: InjectErrorCode, message: string, detail: { syscall?: string; option?: string; errno?: number } = {}) {
    super(message);
    this.name = 'InjectError';
    this.code = code;
    this.syscall = detail.syscall;
    this.option = detail.option;
    this.errno = detail.errno;
    this.errnoName = detail.errno === undefined ? undefined : errnoName(detail.errno);
  }
}

export interface InjectOptions {
  /** Current time, ms since the epoch, for the timestamp offset (default Date.now()). */
  now?: number;
  /** IP_TRANSPARENT instead of IP_FREEBIND (needs CAP_NET_ADMIN or CAP_NET_RAW). Default false. */
  transparent?: boolean;
  /** Leave repair mode with a window probe (TCP_REPAIR = 0). Default true; false uses TCP_REPAIR_OFF_NO_WP. */
  windowProbe?: boolean;
  /** SO_REUSEADDR on the finished socket (see step 12). Default true. */
  reuseAddr?: boolean;
  /** SO_REUSEPORT on the finished socket, for listeners on VIP:port that use it. Default false. */
  reusePort?: boolean;
  /** VIPs this host serves; a blob for any other is refused (ERR_INJECT_VIP) before any system call. */
  vips?: ReadonlySet<string>;
}

export interface InjectedConnection {
  /** The descriptor, owned by `socket`: for getsockopt while the socket lives, never close it yourself. */
  fd: number;
  socket: net.Socket;
}

/** The TCP_TIMESTAMP value that continues the balancer's ms clock (step 8). Exported for tests. */
export function timestampValue(blob: Pick<ConnectionBlob, 'tsVal' | 'created'>, now: number): number {
  const ts = (blob.tsVal + Math.max(0, Math.floor(now - blob.created))) >>> 0;
  return (ts + (ts & 1)) >>> 0; // even: the low bit would select µs timestamps
}

function checkBlob(blob: ConnectionBlob, opts: InjectOptions): void {
  if (opts.vips && !opts.vips.has(blob.vip)) {
    throw new InjectError('ERR_INJECT_VIP', `blob for VIP ${blob.vip}:${blob.vipPort}, which this host does not serve`);
  }
  if (!net.isIPv4(blob.vip) || !net.isIPv4(blob.clientIp)) {
    throw new InjectError('ERR_INJECT_BLOB', `blob addresses must be IPv4 (vip ${blob.vip}, client ${blob.clientIp})`);
  }
  // These two would not fail in the kernel: they would silently corrupt the
  // byte stream (bytes missing or duplicated on one side).
  const data = blob.data ?? Buffer.alloc(0);
  if (((blob.irs + 1 + data.length) >>> 0) !== blob.rcvNxt >>> 0) {
    throw new InjectError('ERR_INJECT_BLOB', `rcvNxt ${blob.rcvNxt} is not irs + 1 + data.length (${(blob.irs + 1 + data.length) >>> 0})`);
  }
  if (((blob.iss + 1) >>> 0) !== blob.sndNxt >>> 0) {
    throw new InjectError('ERR_INJECT_BLOB', `sndNxt ${blob.sndNxt} is not iss + 1: the balancer sent bytes the host does not have`);
  }
}

/**
 * Recreate the blob's connection in this host's kernel and return the
 * connected descriptor; the caller owns it (close it, or wrap it with
 * `new net.Socket({ fd })`). Throws InjectError, with no descriptor left open.
 */
export function injectConnectionFd(blob: ConnectionBlob, opts: InjectOptions = {}): number {
  checkBlob(blob, opts);
  let flags = 0;
  if (opts.transparent) flags |= InjectFlag.TRANSPARENT;
  if (opts.windowProbe === false) flags |= InjectFlag.NO_WINDOW_PROBE;
  if (opts.reuseAddr !== false) flags |= InjectFlag.REUSEADDR;
  if (opts.reusePort) flags |= InjectFlag.REUSEPORT;
  const data = blob.data;
  const fd = nativeInject({
    clientIp: blob.clientIp, vip: blob.vip, clientPort: blob.clientPort, vipPort: blob.vipPort,
    iss: blob.iss, irs: blob.irs, sndNxt: blob.sndNxt, rcvNxt: blob.rcvNxt, sndWnd: blob.sndWnd, rcvWnd: blob.rcvWnd,
    tsValue: blob.tsOk ? timestampValue(blob, opts.now ?? Date.now()) : 0,
    mss: blob.mss, sndWscale: blob.sndWscale, rcvWscale: blob.rcvWscale, sackOk: blob.sackOk, tsOk: blob.tsOk, flags,
  }, data);
  if (fd >= 0) return fd;
  throw injectError(blob, data ? data.length : 0);
}

/** The InjectError for hh_inject's failure (the descriptor is already closed). */
function injectError(blob: ConnectionBlob, dataLength: number): InjectError {
  const f = injectFailure();
  const errno = f.err;
  const fail = (code: InjectErrorCode, syscall: string, what: string, option?: string): InjectError =>
    new InjectError(code,
      `inject ${blob.clientIp}:${blob.clientPort} -> ${blob.vip}:${blob.vipPort}: ${what}${errno ? `: ${errnoName(errno)}` : ''}`,
      { syscall, option, errno: errno || undefined });
  switch (f.step) {
    case InjectStep.SOCKET:
      return new InjectError('ERR_INJECT_SOCKET', `socket: ${errnoName(errno)}`, { syscall: 'socket', errno });
    case InjectStep.SETSOCKOPT: {
      const option = optionName(f.level, f.optname);
      // Only entering repair mode and IP_TRANSPARENT need a capability (steps 2, 3).
      const privileged = (f.level === SOL_TCP && f.optname === TCP_REPAIR && f.optval === TCP_REPAIR_ON) ||
        (f.level === SOL_IP && f.optname === IP_TRANSPARENT);
      if (privileged && (errno === EPERM || errno === EACCES)) {
        return fail('ERR_INJECT_PERMISSION', 'setsockopt', `setsockopt ${option} (needs CAP_NET_ADMIN)`, option);
      }
      return fail('ERR_INJECT_SETSOCKOPT', 'setsockopt', `setsockopt ${option}`, option);
    }
    case InjectStep.BIND:
      return fail(errno === EACCES ? 'ERR_INJECT_PERMISSION' : 'ERR_INJECT_BIND', 'bind', `bind ${blob.vip}:${blob.vipPort}`);
    case InjectStep.CONNECT:
      return fail('ERR_INJECT_CONNECT', 'connect', errno === EADDRNOTAVAIL
        ? 'connect in repair mode (this 4-tuple is already in use here)' : 'connect in repair mode');
    case InjectStep.QUEUE:
      return fail('ERR_INJECT_QUEUE', 'send', `receive queue took ${f.queued} of ${dataLength} bytes`);
    default:
      // hh_inject refused the arguments before any system call (checkBlob should have first).
      return new InjectError('ERR_INJECT_BLOB', hostLastError());
  }
}

/**
 * Recreate the blob's connection and wrap it in a net.Socket, which owns the
 * descriptor from then on. The socket is connected and flowing: its first
 * 'data' is blob.data. Throws InjectError, with no descriptor left open.
 */
export function injectConnection(blob: ConnectionBlob, opts: InjectOptions = {}): InjectedConnection {
  const fd = injectConnectionFd(blob, opts);
  try {
    // Half-open: a client that shuts down its side after the request still gets the whole response.
    return { fd, socket: new net.Socket({ fd, readable: true, writable: true, allowHalfOpen: true }) };
  } catch (err) {
    libc().close(fd);
    throw new InjectError('ERR_INJECT_WRAP', `net.Socket refused fd ${fd}: ${(err as Error).message}`);
  }
}
