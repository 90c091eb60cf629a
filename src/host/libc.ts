// The few libc calls the host agent needs that Node does not expose: raw
// socket options (TCP_REPAIR and friends), bind/connect on a descriptor we own,
// send() into a repair queue. Bound with koffi; errno is read with
// koffi.errno() right after a call returned -1 (same thread, nothing between).
//
// Buffers are passed as raw pointers to their memory (koffi `void *`), so an
// out-buffer (getsockopt, recv) is written in place.
import os from 'node:os';
import koffi from 'koffi';

// Linux constants (include/uapi/linux/tcp.h, in.h, asm-generic/socket.h).
export const AF_INET = 2;
export const SOCK_STREAM = 1;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
export const SOL_SOCKET = 1;
export const SO_REUSEADDR = 2;
export const SO_REUSEPORT = 15;
export const SOL_IP = 0;
export const IP_TRANSPARENT = 19;
export const IP_FREEBIND = 15;
export const SOL_TCP = 6;
export const TCP_MAXSEG = 2;
export const TCP_INFO = 11;
export const TCP_REPAIR = 19;
export const TCP_REPAIR_QUEUE = 20;
export const TCP_QUEUE_SEQ = 21;
export const TCP_REPAIR_OPTIONS = 22;
export const TCP_TIMESTAMP = 24;
export const TCP_REPAIR_WINDOW = 29;
export const TCP_REPAIR_ON = 1;
export const TCP_REPAIR_OFF = 0;
/** Leave repair mode without the window probe TCP_REPAIR_OFF sends. */
export const TCP_REPAIR_OFF_NO_WP = -1;
export const TCP_NO_QUEUE = 0;
export const TCP_RECV_QUEUE = 1;
export const TCP_SEND_QUEUE = 2;
export const TCPOPT_MSS = 2;
export const TCPOPT_WINDOW = 3;
export const TCPOPT_SACK_PERM = 4;
export const TCPOPT_TIMESTAMP = 8;
export const MSG_PEEK = 2;
export const MSG_DONTWAIT = 0x40;
export const MSG_NOSIGNAL = 0x4000;
export const CLONE_NEWNET = 0x40000000;

/** Option names for messages, by "level:optname". */
export const OPTION_NAMES: Record<string, string> = {
  [`${SOL_SOCKET}:${SO_REUSEADDR}`]: 'SO_REUSEADDR',
  [`${SOL_SOCKET}:${SO_REUSEPORT}`]: 'SO_REUSEPORT',
  [`${SOL_IP}:${IP_TRANSPARENT}`]: 'IP_TRANSPARENT',
  [`${SOL_IP}:${IP_FREEBIND}`]: 'IP_FREEBIND',
  [`${SOL_TCP}:${TCP_MAXSEG}`]: 'TCP_MAXSEG',
  [`${SOL_TCP}:${TCP_INFO}`]: 'TCP_INFO',
  [`${SOL_TCP}:${TCP_REPAIR}`]: 'TCP_REPAIR',
  [`${SOL_TCP}:${TCP_REPAIR_QUEUE}`]: 'TCP_REPAIR_QUEUE',
  [`${SOL_TCP}:${TCP_QUEUE_SEQ}`]: 'TCP_QUEUE_SEQ',
  [`${SOL_TCP}:${TCP_REPAIR_OPTIONS}`]: 'TCP_REPAIR_OPTIONS',
  [`${SOL_TCP}:${TCP_TIMESTAMP}`]: 'TCP_TIMESTAMP',
  [`${SOL_TCP}:${TCP_REPAIR_WINDOW}`]: 'TCP_REPAIR_WINDOW',
};

export function optionName(level: number, optname: number): string {
  return OPTION_NAMES[`${level}:${optname}`] ?? `option ${level}:${optname}`;
}

const ERRNO_NAMES = new Map<number, string>();
for (const [name, num] of Object.entries(os.constants.errno)) {
  // Several names share a number (EAGAIN/EWOULDBLOCK): keep the first, the usual one.
  if (!ERRNO_NAMES.has(num)) ERRNO_NAMES.set(num, name);
}

/** "EPERM" for 1, "errno 999" for a number Node does not know. */
export function errnoName(errno: number): string {
  return ERRNO_NAMES.get(errno) ?? `errno ${errno}`;
}

export interface Libc {
  socket(domain: number, type: number, protocol: number): number;
  setsockopt(fd: number, level: number, optname: number, optval: Buffer, optlen: number): number;
  getsockopt(fd: number, level: number, optname: number, optval: Buffer, optlen: Buffer): number;
  bind(fd: number, addr: Buffer, addrlen: number): number;
  connect(fd: number, addr: Buffer, addrlen: number): number;
  send(fd: number, buf: Buffer, len: number, flags: number): number;
  recv(fd: number, buf: Buffer, len: number, flags: number): number;
  close(fd: number): number;
  setns(fd: number, nstype: number): number;
  errno(): number;
}

let bound: Libc | undefined;

/** libc, bound on first use (so importing this module never fails by itself). */
export function libc(): Libc {
  if (bound) return bound;
  const lib = koffi.load('libc.so.6');
  bound = {
    socket: lib.func('int socket(int domain, int type, int protocol)'),
    setsockopt: lib.func('int setsockopt(int fd, int level, int optname, const void *optval, uint32_t optlen)'),
    getsockopt: lib.func('int getsockopt(int fd, int level, int optname, void *optval, void *optlen)'),
    bind: lib.func('int bind(int fd, const void *addr, uint32_t addrlen)'),
    connect: lib.func('int connect(int fd, const void *addr, uint32_t addrlen)'),
    send: lib.func('long send(int fd, const void *buf, size_t len, int flags)'),
    recv: lib.func('long recv(int fd, void *buf, size_t len, int flags)'),
    close: lib.func('int close(int fd)'),
    setns: lib.func('int setns(int fd, int nstype)'),
    errno: () => koffi.errno(),
  };
  return bound;
}

/** struct sockaddr_in for an IPv4 dotted quad and a port. */
export function sockaddrIn(ip: string, port: number): Buffer {
  const sa = Buffer.alloc(16);
  // sa_family is in host byte order, the port and address in network order.
  if (os.endianness() === 'LE') sa.writeUInt16LE(AF_INET, 0);
  else sa.writeUInt16BE(AF_INET, 0);
  sa.writeUInt16BE(port, 2);
  const parts = ip.split('.');
  for (let i = 0; i < 4; i++) sa[4 + i] = Number(parts[i]);
  return sa;
}

/** A 4-byte int option value (host byte order). */
export function intOpt(v: number): Buffer {
  return Buffer.from(Int32Array.of(v | 0).buffer);
}

/** Consecutive u32 fields of a C struct (host byte order). */
export function u32Struct(...fields: number[]): Buffer {
  return Buffer.from(Uint32Array.from(fields, (f) => f >>> 0).buffer);
}
