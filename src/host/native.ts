// libhandoff_host.so (native/host-agent/, design.md §5): the host agent's
// per-connection work in C, bound with koffi. This file is the library's
// only koffi user: lib() loads it once and checks its ABI version, each
// feature declares its functions from lib() in its own section below.
//
// Structs cross the boundary as raw Buffers at the offsets of the koffi
// declarations (no koffi object per call); test/host-native-abi.test.ts checks
// those declarations against the compiler's layout (hh_abi_layout).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import koffi, { type LibraryHandle, type TypeObject } from 'koffi';
import type { ConnectionBlob } from '../transfer/blob';

/** Must equal HH_ABI_VERSION in native/host-agent/handoff_host.h. */
export const HOST_ABI_VERSION = 4;

/** The library is missing, or another version than this binding's. */
export class HostNativeError extends Error {
  readonly code = 'ERR_HOST_NATIVE';
  constructor(message: string) {
    super(message);
    this.name = 'HostNativeError';
  }
}

// ---------------------------------------------------------------------------
// Loading (shared by every section)

/** Where the library is looked for: HANDOFF_HOST_LIB_PATH, then the build tree. */
export function hostLibraryPath(): string {
  if (process.env.HANDOFF_HOST_LIB_PATH) return process.env.HANDOFF_HOST_LIB_PATH;
  // dist/src/host -> package root, or src/host when run from source.
  for (const up of ['../../..', '../..']) {
    const candidate = path.resolve(__dirname, up, 'native/host-agent/build/libhandoff_host.so');
    if (fs.existsSync(candidate)) return candidate;
  }
  return path.resolve(__dirname, '../../../native/host-agent/build/libhandoff_host.so');
}

let loaded: LibraryHandle | undefined;
let common: { hh_abi_version(): number; hh_abi_layout(buf: Buffer | null, len: number): number; hh_last_error(): string } | undefined;

/**
 * The library, loaded once per process, its ABI version checked.
 * @throws HostNativeError (ERR_HOST_NATIVE) if it is missing, does not load, or is another version
 */
export function lib(): LibraryHandle {
  if (loaded) return loaded;
  const file = hostLibraryPath();
  const fix = "build it with 'npm run setup' (or make -C native/host-agent)";
  if (!fs.existsSync(file)) throw new HostNativeError(`${file} does not exist; ${fix}`);
  let l: LibraryHandle;
  try {
    l = koffi.load(file);
  } catch (err) {
    throw new HostNativeError(`${file} does not load (${(err as Error).message}); ${fix}`);
  }
  const fns = {
    hh_abi_version: l.func('uint32_t hh_abi_version()'),
    hh_abi_layout: l.func('int hh_abi_layout(void *buf, size_t len)'),
    hh_last_error: l.func('const char *hh_last_error()'),
  };
  const version = fns.hh_abi_version() as number;
  if (version !== HOST_ABI_VERSION) {
    throw new HostNativeError(`${file} has ABI version ${version}, this binding expects ${HOST_ABI_VERSION}; rebuild it (make -C native/host-agent)`);
  }
  loaded = l;
  common = fns;
  return l;
}

/** The calling thread's sentence about the library's last failure. */
export function hostLastError(): string {
  lib();
  return common!.hh_last_error();
}

export function hostAbiVersion(): number {
  lib();
  return common!.hh_abi_version();
}

// ---------------------------------------------------------------------------
// Layout (handoff_host.h). Every struct hh_abi_layout() publishes is declared
// here, once (koffi type names are global): the sections below use them.

export interface HostAbiLayout {
  version: number;
  constants: Record<string, number>;
  structs: Record<string, { size: number; fields: Record<string, number> }>;
}

/** Sizes and offsets as the C compiler laid them out. */
export function readHostAbiLayout(): HostAbiLayout {
  lib();
  const need = common!.hh_abi_layout(null, 0);
  const buf = Buffer.alloc(need + 1);
  common!.hh_abi_layout(buf, buf.length);
  return JSON.parse(buf.toString('utf8', 0, need)) as HostAbiLayout;
}

export const HhConn = koffi.struct('hh_conn', {
  client_ip: 'uint32_t',
  vip: 'uint32_t',
  client_port: 'uint16_t',
  vip_port: 'uint16_t',
  iss: 'uint32_t',
  irs: 'uint32_t',
  snd_nxt: 'uint32_t',
  rcv_nxt: 'uint32_t',
  snd_wnd: 'uint32_t',
  rcv_wnd: 'uint32_t',
  ts_value: 'uint32_t',
  mss: 'uint16_t',
  snd_wscale: 'uint8_t',
  rcv_wscale: 'uint8_t',
  sack_ok: 'uint8_t',
  ts_ok: 'uint8_t',
  flags: 'uint8_t',
  reserved: 'uint8_t',
});

export const HhFlowKey = koffi.struct('hh_flow_key', {
  vni: 'uint32_t',
  client_ip: 'uint32_t',
  vip: 'uint32_t',
  client_port: 'uint16_t',
  vip_port: 'uint16_t',
});

export const HhInjectFailure = koffi.struct('hh_inject_failure', {
  step: 'int32_t',
  err: 'int32_t',
  level: 'int32_t',
  optname: 'int32_t',
  optval: 'int32_t',
  queued: 'uint32_t',
});

export const HhFrozen = koffi.struct('hh_frozen', {
  snd_nxt: 'uint32_t',
  rcv_nxt: 'uint32_t',
  snd_wnd: 'uint32_t',
  rcv_wnd: 'uint32_t',
  ts_value: 'uint32_t',
  unread: 'uint32_t',
  fd: 'int32_t',
  reserved: 'uint32_t',
});

/** Every struct of handoff_host.h by its C name (for the ABI test). */
export const HhSpliceStats = koffi.struct('hh_splice_stats', {
  added: 'uint64_t',
  active: 'uint64_t',
  done: 'uint64_t',
  refused_full: 'uint64_t',
  upstream_failed: 'uint64_t',
  errors: 'uint64_t',
  bytes_to_upstream: 'uint64_t',
  bytes_to_client: 'uint64_t',
});

export const hostAbiStructs: Record<string, TypeObject> = {
  hh_splice_stats: HhSpliceStats,
  hh_conn: HhConn,
  hh_flow_key: HhFlowKey,
  hh_inject_failure: HhInjectFailure,
  hh_frozen: HhFrozen,
};

/** The constants hh_abi_layout() publishes (hh_tunnel_key.h). */
export const hostAbiConstants: Record<string, number> = {
  HH_TUNNEL_MAX_FLOWS: 262144,
  HH_TUNNEL_MAX_BALANCERS: 64,
  HH_TC_COUNT: 4,
  HH_SPLICE_MAX_PAIRS: 65536,
};

const LE = os.endianness() === 'LE';

// ---------------------------------------------------------------------------
// Injection (hh_inject.c)

/** enum hh_inject_flag */
export const InjectFlag = { TRANSPARENT: 1, NO_WINDOW_PROBE: 2, REUSEADDR: 4, REUSEPORT: 8 } as const;
/** enum hh_inject_step */
export const InjectStep = { NONE: 0, SOCKET: 1, SETSOCKOPT: 2, BIND: 3, CONNECT: 4, QUEUE: 5 } as const;
export type InjectStep = (typeof InjectStep)[keyof typeof InjectStep];

/**
 * struct hh_conn in JS terms: the blob's connection fields as the blob has
 * them (addresses as dotted quads), plus what the host decides.
 */
export type HostConn = Pick<ConnectionBlob, 'clientIp' | 'vip' | 'clientPort' | 'vipPort' | 'iss' | 'irs' | 'sndNxt' | 'rcvNxt'
  | 'sndWnd' | 'rcvWnd' | 'mss' | 'sndWscale' | 'rcvWscale' | 'sackOk' | 'tsOk'> & {
  /** The TCP_TIMESTAMP value (even), used if tsOk. */
  tsValue: number;
  /** InjectFlag bits. */
  flags: number;
};

/** struct hh_inject_failure, read after hh_inject returned < 0. */
export interface HostInjectFailure {
  step: InjectStep;
  /** errno of the failing call; 0 if it returned without one. */
  err: number;
  level: number;
  optname: number;
  optval: number;
  queued: number;
}

const off = (field: string) => koffi.offsetof(HhConn, field);
const C = {
  clientIp: off('client_ip'), vip: off('vip'), clientPort: off('client_port'), vipPort: off('vip_port'),
  iss: off('iss'), irs: off('irs'), sndNxt: off('snd_nxt'), rcvNxt: off('rcv_nxt'), sndWnd: off('snd_wnd'),
  rcvWnd: off('rcv_wnd'), tsValue: off('ts_value'), mss: off('mss'), sndWscale: off('snd_wscale'),
  rcvWscale: off('rcv_wscale'), sackOk: off('sack_ok'), tsOk: off('ts_ok'), flags: off('flags'), reserved: off('reserved'),
};
const F = {
  step: koffi.offsetof(HhInjectFailure, 'step'), err: koffi.offsetof(HhInjectFailure, 'err'),
  level: koffi.offsetof(HhInjectFailure, 'level'), optname: koffi.offsetof(HhInjectFailure, 'optname'),
  optval: koffi.offsetof(HhInjectFailure, 'optval'), queued: koffi.offsetof(HhInjectFailure, 'queued'),
};

// One of each, reused: hh_inject is synchronous and copies nothing it keeps.
const connBuf = Buffer.alloc(koffi.sizeof(HhConn));
const connView = new DataView(connBuf.buffer, connBuf.byteOffset, connBuf.byteLength);
const failBuf = Buffer.alloc(koffi.sizeof(HhInjectFailure));
const failView = new DataView(failBuf.buffer, failBuf.byteOffset, failBuf.byteLength);
const EMPTY = Buffer.alloc(0);

type HhInject = (conn: Buffer, data: Buffer, len: number, fail: Buffer) => number;
let hhInject: HhInject | undefined;

/** A dotted quad's 4 bytes at `at`, in network order (the caller checked it is IPv4). */
function writeIPv4(ip: string, at: number): void {
  let octet = 0;
  let i = at;
  for (let k = 0; k < ip.length; k++) {
    const ch = ip.charCodeAt(k);
    if (ch === 46) { connBuf[i++] = octet; octet = 0; } else octet = octet * 10 + ch - 48;
  }
  connBuf[i] = octet;
}

/**
 * hh_inject: re-create the connection in one native call.
 * @returns the descriptor (>= 0, the caller owns it) or -errno, with the
 *          details in injectFailure() and hostLastError()
 * @throws HostNativeError if the library is missing
 */
export function nativeInject(c: HostConn, data: Buffer | null | undefined): number {
  if (!hhInject) {
    hhInject = lib().func('int hh_inject(const void *conn, const void *data, size_t len, void *fail)') as unknown as HhInject;
  }
  const v = connView;
  writeIPv4(c.clientIp, C.clientIp);
  writeIPv4(c.vip, C.vip);
  v.setUint16(C.clientPort, c.clientPort, false);
  v.setUint16(C.vipPort, c.vipPort, false);
  v.setUint32(C.iss, c.iss >>> 0, LE);
  v.setUint32(C.irs, c.irs >>> 0, LE);
  v.setUint32(C.sndNxt, c.sndNxt >>> 0, LE);
  v.setUint32(C.rcvNxt, c.rcvNxt >>> 0, LE);
  v.setUint32(C.sndWnd, c.sndWnd >>> 0, LE);
  v.setUint32(C.rcvWnd, c.rcvWnd >>> 0, LE);
  v.setUint32(C.tsValue, c.tsValue >>> 0, LE);
  v.setUint16(C.mss, c.mss, LE);
  v.setUint8(C.sndWscale, c.sndWscale);
  v.setUint8(C.rcvWscale, c.rcvWscale);
  v.setUint8(C.sackOk, c.sackOk ? 1 : 0);
  v.setUint8(C.tsOk, c.tsOk ? 1 : 0);
  v.setUint8(C.flags, c.flags);
  v.setUint8(C.reserved, 0);
  const d = data ?? EMPTY;
  return hhInject!(connBuf, d, d.length, failBuf);
}

/** The failure of the last nativeInject that returned < 0. */
export function injectFailure(): HostInjectFailure {
  const v = failView;
  return {
    step: v.getInt32(F.step, LE) as InjectStep,
    err: v.getInt32(F.err, LE),
    level: v.getInt32(F.level, LE),
    optname: v.getInt32(F.optname, LE),
    optval: v.getInt32(F.optval, LE),
    queued: v.getUint32(F.queued, LE),
  };
}

// ---------------------------------------------------------------------------
// Tunnel check (hh_tunnel.c): declared from lib() in this section.
// The classifier and its maps live in the kernel; these are thin wrappers
// returning the C functions' results (>= 0, or -errno with the sentence in
// hostLastError()). src/host/tunnel-filter.ts is their user.

/** enum hh_tunnel_open_flag */
export const TunnelOpenFlag = { NO_ATTACH: 1, TEST_PROG: 2 } as const;
/** enum hh_tunnel_test_flag (hh_tunnel_prog.h): the metadata hh_tunnel_test_run pretends the skb has. */
export const TunnelTestFlag = { HAS_KEY: 1, IPV6: 2 } as const;
/** The counters of enum hh_tunnel_counter by index (HH_TUNNEL_COUNTERS in hh_tunnel_key.h). */
export const TUNNEL_COUNTER_NAMES = ['tunnelled', 'refused_flow', 'refused_sender', 'refused_malformed'] as const;
/** TC_ACT_OK and TC_ACT_SHOT, the verdicts hh_tunnel_test_run returns. */
export const TcAct = { OK: 0, SHOT: 2 } as const;

/** Where tunnel.bpf.o is looked for: HANDOFF_HOST_BPF_PATH, then the build tree (next to the library). */
export function hostBpfPath(): string {
  if (process.env.HANDOFF_HOST_BPF_PATH) return process.env.HANDOFF_HOST_BPF_PATH;
  for (const up of ['../../..', '../..']) {
    const candidate = path.resolve(__dirname, up, 'native/host-agent/build/tunnel.bpf.o');
    if (fs.existsSync(candidate)) return candidate;
  }
  return path.resolve(__dirname, '../../../native/host-agent/build/tunnel.bpf.o');
}

/** The fields of a flow the check keys on (a ConnectionBlob has them). */
export interface TunnelFlowKey {
  flowId: number;
  clientIp: string;
  clientPort: number;
  vip: string;
  vipPort: number;
}

type FlowFn = (h: number, vni: number, clientIp: number, vip: number, clientPort: number, vipPort: number) => number;
interface TunnelFns {
  open: (bpfPath: string, device: string | null, flags: number) => number;
  setBalancers: (h: number, addrs: Buffer | null, n: number) => number;
  allow: FlowFn;
  revoke: FlowFn;
  revokeBatch: (h: number, keys: Buffer, n: number) => number;
  flows: (h: number) => number;
  counters: (h: number, out: Buffer, count: number) => number;
  testRun: (h: number, frame: Buffer, len: number, flags: number, vni: number, remoteIp: number) => number;
  close: (h: number) => number;
}
let tunnelFns: TunnelFns | undefined;

function tunnel(): TunnelFns {
  if (tunnelFns) return tunnelFns;
  const l = lib();
  tunnelFns = {
    open: l.func('int hh_tunnel_open(const char *bpf_path, const char *device, uint32_t flags)'),
    setBalancers: l.func('int hh_tunnel_set_balancers(int h, const void *addrs, size_t n)'),
    allow: l.func('int hh_tunnel_allow(int h, uint32_t vni, uint32_t client_ip, uint32_t vip, uint16_t client_port, uint16_t vip_port)'),
    revoke: l.func('int hh_tunnel_revoke(int h, uint32_t vni, uint32_t client_ip, uint32_t vip, uint16_t client_port, uint16_t vip_port)'),
    revokeBatch: l.func('int hh_tunnel_revoke_batch(int h, const void *keys, size_t n)'),
    flows: l.func('int hh_tunnel_flows(int h)'),
    counters: l.func('int hh_tunnel_counters(int h, void *out, size_t count)'),
    testRun: l.func('int hh_tunnel_test_run(int h, const void *frame, size_t len, uint32_t flags, uint32_t vni, uint32_t remote_ip)'),
    close: l.func('int hh_tunnel_close(int h)'),
  } as unknown as TunnelFns;
  return tunnelFns;
}

/** A dotted quad as the uint32_t argument whose bytes in memory are the address in network order. */
function ipv4Arg(ip: string): number {
  let v = 0;
  let octet = 0;
  let shift = 0;
  for (let k = 0; k <= ip.length; k++) {
    const ch = k < ip.length ? ip.charCodeAt(k) : 46;
    if (ch === 46) {
      v |= LE ? octet << shift : octet << (24 - shift);
      shift += 8;
      octet = 0;
    } else octet = octet * 10 + ch - 48;
  }
  return v >>> 0;
}
/** A port as the uint16_t argument in network order. */
const portArg = (p: number) => (LE ? ((p & 0xff) << 8) | (p >>> 8) : p);

/**
 * hh_tunnel_open: load tunnel.bpf.o and (unless NO_ATTACH) attach it to
 * `device`'s tc ingress. @returns a handle >= 0 or -errno
 * @throws HostNativeError if the library is missing
 */
export function tunnelOpen(device: string | null, flags = 0, bpfPath = hostBpfPath()): number {
  return tunnel().open(bpfPath, device, flags);
}

/** hh_tunnel_set_balancers (IPv4 addresses, checked by the caller). @returns 0 or -errno */
export function tunnelSetBalancers(h: number, addrs: readonly string[]): number {
  const b = Buffer.alloc(4 * addrs.length);
  addrs.forEach((a, i) => b.set(a.split('.').map(Number), 4 * i));
  return tunnel().setBalancers(h, addrs.length ? b : null, addrs.length);
}

/** hh_tunnel_allow (addresses IPv4, checked by the caller). @returns 1 added, 0 present already, or -errno */
export function tunnelAllow(h: number, f: TunnelFlowKey): number {
  return tunnel().allow(h, f.flowId, ipv4Arg(f.clientIp), ipv4Arg(f.vip), portArg(f.clientPort), portArg(f.vipPort));
}

/** hh_tunnel_revoke. @returns 1 removed, 0 absent, or -errno */
export function tunnelRevoke(h: number, f: TunnelFlowKey): number {
  return tunnel().revoke(h, f.flowId, ipv4Arg(f.clientIp), ipv4Arg(f.vip), portArg(f.clientPort), portArg(f.vipPort));
}

const KEY_SIZE = koffi.sizeof(HhFlowKey);
const K = {
  vni: koffi.offsetof(HhFlowKey, 'vni'), clientIp: koffi.offsetof(HhFlowKey, 'client_ip'), vip: koffi.offsetof(HhFlowKey, 'vip'),
  clientPort: koffi.offsetof(HhFlowKey, 'client_port'), vipPort: koffi.offsetof(HhFlowKey, 'vip_port'),
};
let keysBuf = Buffer.alloc(KEY_SIZE * 256);

/** A dotted quad's 4 bytes at `at` of `b`, in network order. */
function putIPv4(b: Buffer, ip: string, at: number): void {
  let octet = 0;
  let i = at;
  for (let k = 0; k < ip.length; k++) {
    const ch = ip.charCodeAt(k);
    if (ch === 46) { b[i++] = octet; octet = 0; } else octet = octet * 10 + ch - 48;
  }
  b[i] = octet;
}

/**
 * hh_tunnel_revoke_batch: revoke many flows in one call (absent ones skipped).
 * @returns the number removed, or -errno
 */
export function tunnelRevokeBatch(h: number, flows: readonly TunnelFlowKey[]): number {
  if (keysBuf.length < flows.length * KEY_SIZE) keysBuf = Buffer.alloc(flows.length * KEY_SIZE);
  const b = keysBuf;
  flows.forEach((f, i) => {
    const at = i * KEY_SIZE;
    if (LE) b.writeUInt32LE(f.flowId >>> 0, at + K.vni); else b.writeUInt32BE(f.flowId >>> 0, at + K.vni);
    putIPv4(b, f.clientIp, at + K.clientIp);
    putIPv4(b, f.vip, at + K.vip);
    b.writeUInt16BE(f.clientPort, at + K.clientPort);
    b.writeUInt16BE(f.vipPort, at + K.vipPort);
  });
  return tunnel().revokeBatch(h, b, flows.length);
}

/** hh_tunnel_flows. @returns flows allowed, or -errno */
export function tunnelFlows(h: number): number {
  return tunnel().flows(h);
}

const countersBuf = Buffer.alloc(8 * TUNNEL_COUNTER_NAMES.length);

/**
 * hh_tunnel_counters, summed over the CPUs, by name.
 * @returns the counters, or -errno
 */
export function tunnelCounters(h: number): Record<(typeof TUNNEL_COUNTER_NAMES)[number], number> | number {
  const rc = tunnel().counters(h, countersBuf, TUNNEL_COUNTER_NAMES.length);
  if (rc < 0) return rc;
  const out = {} as Record<(typeof TUNNEL_COUNTER_NAMES)[number], number>;
  TUNNEL_COUNTER_NAMES.forEach((name, i) => {
    out[name] = Number(LE ? countersBuf.readBigUInt64LE(8 * i) : countersBuf.readBigUInt64BE(8 * i));
  });
  return out;
}

/**
 * hh_tunnel_test_run: the check on one crafted inner frame (a handle opened
 * with TEST_PROG). @returns TcAct.OK / TcAct.SHOT, or -errno
 */
export function tunnelTestRun(h: number, frame: Buffer, o: { flags?: number; vni?: number; remoteIp?: string } = {}): number {
  return tunnel().testRun(h, frame, frame.length, o.flags ?? TunnelTestFlag.HAS_KEY, o.vni ?? 0,
    o.remoteIp ? ipv4Arg(o.remoteIp) : 0);
}

/** hh_tunnel_close: detach and unload. @returns 0 or -errno */
export function tunnelClose(h: number): number {
  return tunnel().close(h);
}

// ---------------------------------------------------------------------------
// Hand-back (hh_freeze.c)

/** A connection frozen by nativeFreeze: its state now, and a descriptor still in repair mode. */
export interface FrozenConn {
  sndNxt: number;
  rcvNxt: number;
  sndWnd: number;
  rcvWnd: number;
  tsValue: number;
  /** Bytes the kernel had received and nobody had read, in order. */
  unread: Buffer;
  /** Close with nativeFrozenClose (silently, or with a reset). */
  fd: number;
}

const frozenBuf = Buffer.alloc(koffi.sizeof(HhFrozen));
const frozenView = new DataView(frozenBuf.buffer, frozenBuf.byteOffset, frozenBuf.byteLength);
const FZ = Object.fromEntries(['snd_nxt', 'rcv_nxt', 'snd_wnd', 'rcv_wnd', 'ts_value', 'unread', 'fd']
  .map((f) => [f, koffi.offsetof(HhFrozen, f)])) as Record<string, number>;
/** Unread bytes a freeze can carry: a socket's default receive buffer is smaller. */
const FREEZE_BUF_BYTES = 1 << 20;
let freezeBuf: Buffer | undefined;
let hhFreeze: ((fd: number, buf: Buffer, len: number, out: Buffer) => number) | undefined;
let hhFrozenClose: ((fd: number, reset: number) => number) | undefined;

/**
 * hh_freeze: TCP_REPAIR on a live, drained socket; its state and unread bytes.
 * @returns the frozen state, or -errno (-EBUSY: bytes still unacknowledged)
 *          with hostLastError() saying why; the socket is then as it was
 */
export function nativeFreeze(fd: number): FrozenConn | number {
  if (!hhFreeze) hhFreeze = lib().func('int hh_freeze(int fd, void *buf, size_t len, void *out)') as unknown as typeof hhFreeze;
  freezeBuf ??= Buffer.alloc(FREEZE_BUF_BYTES);
  const rc = hhFreeze!(fd, freezeBuf, freezeBuf.length, frozenBuf);
  if (rc < 0) return rc;
  const v = frozenView;
  const unread = v.getUint32(FZ.unread, LE);
  return {
    sndNxt: v.getUint32(FZ.snd_nxt, LE), rcvNxt: v.getUint32(FZ.rcv_nxt, LE), sndWnd: v.getUint32(FZ.snd_wnd, LE),
    rcvWnd: v.getUint32(FZ.rcv_wnd, LE), tsValue: v.getUint32(FZ.ts_value, LE),
    unread: Buffer.from(freezeBuf.subarray(0, unread)), fd: v.getInt32(FZ.fd, LE),
  };
}

/** hh_frozen_close: close a frozen descriptor silently, or with a RST. @returns 0 or -errno */
export function nativeFrozenClose(fd: number, reset: boolean): number {
  if (!hhFrozenClose) hhFrozenClose = lib().func('int hh_frozen_close(int fd, int reset)') as unknown as typeof hhFrozenClose;
  return hhFrozenClose!(fd, reset ? 1 : 0);
}

let hhPassFd: ((path: string, fd: number, hdr: Buffer, len: number) => number) | undefined;
let hhTcpState: ((clientIp: number, clientPort: number, vip: number, vipPort: number) => number) | undefined;

/** hh_pass_fd: give connection `fd` to the server on UNIX socket `path` (SCM_RIGHTS), with `hdr`. @returns hdr bytes sent or -errno */
export function nativePassFd(path: string, fd: number, hdr: Buffer): number {
  if (!hhPassFd) hhPassFd = lib().func('int hh_pass_fd(const char *path, int fd, const void *hdr, size_t len)') as unknown as typeof hhPassFd;
  return hhPassFd!(path, fd, hdr, hdr.length);
}

/**
 * hh_tcp_state: the kernel's TCP state of vip:vipPort <-> client:clientPort
 * (dotted quads, host-order ports). @returns 1..11 (linux/tcp_states.h), or
 * -ENOENT (-2) when the socket is gone, or another -errno
 */
export function nativeTcpState(clientIp: string, clientPort: number, vip: string, vipPort: number): number {
  if (!hhTcpState) {
    hhTcpState = lib().func('int hh_tcp_state(uint32_t client_ip, uint16_t client_port, uint32_t vip, uint16_t vip_port)') as unknown as typeof hhTcpState;
  }
  return hhTcpState!(ipv4Arg(clientIp), portArg(clientPort), ipv4Arg(vip), portArg(vipPort));
}

// ---------------------------------------------------------------------------
// Forward mode in the kernel (hh_splice.c): splice() both ways on the
// library's own thread.

/** A forwarder's counters (struct hh_splice_stats). */
export interface SpliceStats {
  added: number;
  active: number;
  done: number;
  refusedFull: number;
  upstreamFailed: number;
  errors: number;
  bytesToUpstream: number;
  bytesToClient: number;
}

interface SpliceFns {
  open(maxPairs: number): number;
  add(h: number, fd: number, ip: number, port: number, flowId: number): number;
  notifyFd(h: number): number;
  done(h: number, ids: Uint32Array, rcs: Int32Array, n: number): number;
  stats(h: number, out: Buffer): number;
  close(h: number): number;
}
let spliceFns: SpliceFns | undefined;
function splice(): SpliceFns {
  if (spliceFns) return spliceFns;
  const l = lib();
  spliceFns = {
    open: l.func('int hh_splice_open(uint32_t max_pairs)') as unknown as SpliceFns['open'],
    add: l.func('int hh_splice_add(int h, int client_fd, uint32_t upstream_ip, uint16_t upstream_port, uint32_t flow_id)') as unknown as SpliceFns['add'],
    notifyFd: l.func('int hh_splice_notify_fd(int h)') as unknown as SpliceFns['notifyFd'],
    done: l.func('int hh_splice_done(int h, _Out_ uint32_t *flow_ids, _Out_ int32_t *results, uint32_t n)') as unknown as SpliceFns['done'],
    stats: l.func('int hh_splice_stats(int h, _Out_ void *out)') as unknown as SpliceFns['stats'],
    close: l.func('int hh_splice_close(int h)') as unknown as SpliceFns['close'],
  };
  return spliceFns;
}

/** hh_splice_open. @returns a handle >= 0 or -errno */
export function nativeSpliceOpen(maxPairs: number): number {
  return splice().open(maxPairs);
}

/** hh_splice_add: forward `fd` (a duplicate is taken) to ip:port (dotted quad, host-order port). @returns 0 or -errno */
export function nativeSpliceAdd(h: number, fd: number, ip: string, port: number, flowId: number): number {
  return splice().add(h, fd, ipv4Arg(ip), portArg(port), flowId >>> 0);
}

/** hh_splice_notify_fd: a pipe's read end, readable when pairs ended. @returns the descriptor or -errno */
export function nativeSpliceNotifyFd(h: number): number {
  return splice().notifyFd(h);
}

/** hh_splice_done: ended pairs into `ids` / `rcs`. @returns how many, or -errno */
export function nativeSpliceDone(h: number, ids: Uint32Array, rcs: Int32Array): number {
  return splice().done(h, ids, rcs, Math.min(ids.length, rcs.length));
}

const spliceStatsBuf = Buffer.alloc(koffi.sizeof(HhSpliceStats));
/** hh_splice_stats. @throws HostNativeError on a bad handle */
export function nativeSpliceStats(h: number): SpliceStats {
  const rc = splice().stats(h, spliceStatsBuf);
  if (rc < 0) throw new HostNativeError(`hh_splice_stats: ${hostLastError()}`);
  const at = (f: string) => Number(LE ? spliceStatsBuf.readBigUInt64LE(koffi.offsetof(HhSpliceStats, f)) : spliceStatsBuf.readBigUInt64BE(koffi.offsetof(HhSpliceStats, f)));
  return {
    added: at('added'), active: at('active'), done: at('done'), refusedFull: at('refused_full'),
    upstreamFailed: at('upstream_failed'), errors: at('errors'), bytesToUpstream: at('bytes_to_upstream'),
    bytesToClient: at('bytes_to_client'),
  };
}

/** hh_splice_close: stop the thread, reset what is open. @returns 0 or -errno */
export function nativeSpliceClose(h: number): number {
  return splice().close(h);
}
