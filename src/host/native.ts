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

/** Must equal HH_ABI_VERSION in native/host-agent/handoff_host.h. */
export const HOST_ABI_VERSION = 1;

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

/** Every struct of handoff_host.h by its C name (for the ABI test). */
export const hostAbiStructs: Record<string, TypeObject> = {
  hh_conn: HhConn,
  hh_flow_key: HhFlowKey,
  hh_inject_failure: HhInjectFailure,
};

/** The constants hh_abi_layout() publishes (hh_tunnel_key.h). */
export const hostAbiConstants: Record<string, number> = {
  HH_TUNNEL_MAX_FLOWS: 262144,
  HH_TUNNEL_MAX_BALANCERS: 64,
  HH_TC_COUNT: 4,
};

const LE = os.endianness() === 'LE';

// ---------------------------------------------------------------------------
// Injection (hh_inject.c)

/** enum hh_inject_flag */
export const InjectFlag = { TRANSPARENT: 1, NO_WINDOW_PROBE: 2, REUSEADDR: 4, REUSEPORT: 8 } as const;
/** enum hh_inject_step */
export const InjectStep = { NONE: 0, SOCKET: 1, SETSOCKOPT: 2, BIND: 3, CONNECT: 4, QUEUE: 5 } as const;
export type InjectStep = (typeof InjectStep)[keyof typeof InjectStep];

/** struct hh_conn in JS terms: addresses as dotted quads, ports and the rest as numbers. */
export interface HostConn {
  clientIp: string;
  vip: string;
  clientPort: number;
  vipPort: number;
  iss: number;
  irs: number;
  sndNxt: number;
  rcvNxt: number;
  sndWnd: number;
  rcvWnd: number;
  /** The TCP_TIMESTAMP value (even), used if tsOk. */
  tsValue: number;
  mss: number;
  sndWscale: number;
  rcvWscale: number;
  sackOk: boolean;
  tsOk: boolean;
  /** InjectFlag bits. */
  flags: number;
}

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
