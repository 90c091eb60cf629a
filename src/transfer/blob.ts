// The connection blob (design.md §4, claim step C5): everything a host needs to
// rebuild a client's TCP connection with TCP_REPAIR, authenticated so that a
// host only ever injects connections its own balancer handed to it.
//
// Framing (all integers big-endian):
//
//   [u8 version = 1][u32 body length][body: msgpack map][32-byte HMAC-SHA256]
//
// The MAC is HMAC-SHA256(cluster key, version byte ‖ length ‖ body): it covers
// the header too, so neither the version nor the length can be altered without
// detection. The body is a msgpack map written by msgpackr with records off
// (`useRecords: false`), keys always in the order of BLOB_FIELDS, so one blob
// always encodes to the same bytes (test/fixtures/blob-v1.hex is the golden
// copy; a msgpackr upgrade that changes the encoding fails that test).
//
// decodeBlob is a security boundary: it checks, in this order, the framing
// (ERR_BLOB_TRUNCATED: short, or bytes after the MAC), the version
// (ERR_BLOB_VERSION), the MAC in constant time (ERR_BLOB_MAC), every field's
// presence, type and range and no unknown field (ERR_BLOB_SCHEMA), the age
// (ERR_BLOB_STALE) and last the nonce (ERR_BLOB_REPLAY). The MAC comes before
// parsing, so unauthenticated bytes never reach msgpackr, and the nonce is
// remembered only once everything else passed, so forged or stale blobs cannot
// fill the replay window.
//
// Sequence numbers are uint32 as plain numbers. Besides ranges, one invariant
// across fields is enforced because breaking it would corrupt the client's
// byte stream at the host: the balancer hands over every byte it ACKed, so
// rcvNxt === irs + 1 + data.length (mod 2^32). A FIN received before the
// handoff is therefore not representable in version 1.
import { createHmac, timingSafeEqual } from 'node:crypto';
import { isIPv4 } from 'node:net';
import { Packr, Unpackr } from 'msgpackr';
import { MAX_TOTAL_LENGTH } from './fragment';

export const BLOB_VERSION = 1;
/** Framing overhead: version byte, body length, MAC. */
export const BLOB_HEADER_BYTES = 5;
export const BLOB_MAC_BYTES = 32;
/** An encoded blob must fit one transfer (fragment.ts MAX_TOTAL_LENGTH). */
export const MAX_BLOB_BYTES = MAX_TOTAL_LENGTH;
export const NONCE_BYTES = 16;
/** Shortest cluster key accepted: 128 bits. */
export const MIN_KEY_BYTES = 16;
/** Longest rule/pool/host name, in UTF-16 units; names come from the config. */
export const MAX_NAME_LENGTH = 256;
/** Linux's default tcp_min_snd_mss; nothing smaller is a usable MSS. */
export const MIN_MSS = 48;
/** RFC 7323 §2.3: shift counts above 14 are not allowed. */
export const MAX_WSCALE = 14;

export interface HandoffDecision {
  /** Name of the rule that matched, or null when the VIP's default pool was used. */
  rule: string | null;
  pool: string;
  host: string;
}

export interface ConnectionBlob {
  v: 1;
  /** VXLAN VNI the balancer will tunnel this flow with (24 bits). */
  flowId: number;
  clientIp: string;
  clientPort: number;
  vip: string;
  vipPort: number;
  /** Balancer's initial sequence number (the SYN cookie). */
  iss: number;
  /** Client's initial sequence number. */
  irs: number;
  sndNxt: number;
  rcvNxt: number;
  sndWnd: number;
  rcvWnd: number;
  /** Shift the client announced (applies to windows the client advertises). */
  sndWscale: number;
  /** Shift the balancer announced (applies to windows the host advertises). */
  rcvWscale: number;
  mss: number;
  sackOk: boolean;
  tsOk: boolean;
  /** The balancer's TS clock when the blob was created (host derives its offset). */
  tsVal: number;
  /** Last TSval received from the client. */
  tsEcr: number;
  /** Bytes received from the client, in order, starting at irs + 1. */
  data: Buffer;
  decision: HandoffDecision;
  /** Creation time, ms since the epoch. */
  created: number;
  /** 16 random bytes; a host accepts each nonce once. */
  nonce: Buffer;
  /**
   * Per-request routing (issue 15): the balancer's routing as JSON (pools,
   * rules, defaults), so the host can tell whether a later request on this
   * connection belongs to a pool it is in, or must be handed back. Absent:
   * the connection stays whatever comes next. Optional and last, so a blob
   * without it encodes as before.
   */
  routing?: Buffer;
}

/** Longest routing document a blob carries. */
export const MAX_ROUTING_BYTES = 65536;

export type BlobErrorCode =
  | 'ERR_BLOB_TRUNCATED'
  | 'ERR_BLOB_VERSION'
  | 'ERR_BLOB_MAC'
  | 'ERR_BLOB_STALE'
  | 'ERR_BLOB_REPLAY'
  | 'ERR_BLOB_SCHEMA'
  | 'ERR_BLOB_KEY';

/** A blob refused by decodeBlob (or a blob encodeBlob will not produce). */
export class BlobError extends Error {
  readonly code: BlobErrorCode;
  constructor(code: BlobErrorCode, message: string) {
    super(message);
    this.name = 'BlobError';
    this.code = code;
  }
}

/** Field order of the encoded map; part of the wire format, do not reorder. */
export const BLOB_FIELDS = [
  'v', 'flowId', 'clientIp', 'clientPort', 'vip', 'vipPort', 'iss', 'irs', 'sndNxt', 'rcvNxt',
  'sndWnd', 'rcvWnd', 'sndWscale', 'rcvWscale', 'mss', 'sackOk', 'tsOk', 'tsVal', 'tsEcr',
  'data', 'decision', 'created', 'nonce',
] as const satisfies readonly (keyof ConnectionBlob)[];
/** Fields a blob may carry after BLOB_FIELDS, in this order. */
const OPTIONAL_FIELDS = ['routing'] as const satisfies readonly (keyof ConnectionBlob)[];
const DECISION_FIELDS = ['rule', 'pool', 'host'] as const satisfies readonly (keyof HandoffDecision)[];

// Records off: a record encoding would depend on which structures the packer
// had seen before, and the host must decode a blob without shared state.
const packr = new Packr({ useRecords: false, moreTypes: false, bundleStrings: false });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, moreTypes: false, bundleStrings: false });

function checkKey(key: Buffer): void {
  if (!Buffer.isBuffer(key) || key.length < MIN_KEY_BYTES) {
    throw new BlobError('ERR_BLOB_KEY', `cluster key must be a Buffer of at least ${MIN_KEY_BYTES} bytes`);
  }
}

function mac(key: Buffer, head: Buffer, body: Buffer): Buffer {
  return createHmac('sha256', key).update(head).update(body).digest();
}

/** Authenticate and frame a blob. Throws BlobError ERR_BLOB_SCHEMA for an invalid blob. */
export function encodeBlob(blob: ConnectionBlob, key: Buffer): Buffer {
  checkKey(key);
  const canonical = validateBlob(blob);
  const body = packr.pack(canonical);
  const total = BLOB_HEADER_BYTES + body.length + BLOB_MAC_BYTES;
  if (total > MAX_BLOB_BYTES) {
    throw new BlobError('ERR_BLOB_SCHEMA', `blob is ${total} bytes, over the ${MAX_BLOB_BYTES}-byte limit`);
  }
  const out = Buffer.allocUnsafe(total);
  out[0] = BLOB_VERSION;
  out.writeUInt32BE(body.length, 1);
  body.copy(out, BLOB_HEADER_BYTES);
  mac(key, out.subarray(0, BLOB_HEADER_BYTES), body).copy(out, BLOB_HEADER_BYTES + body.length);
  return out;
}

export interface DecodeBlobOptions {
  /** Current time, ms since the epoch (default Date.now()). */
  now?: number;
  /** Oldest accepted blob (default: the replay window's maxAgeMs, 5000). */
  maxAgeMs?: number;
  /** Clock skew tolerated for blobs created "in the future" (default 1000). */
  maxFutureMs?: number;
  /** Nonces seen; a nonce is recorded only when the blob is accepted. */
  replay: ReplayWindow;
}

/** Verify and parse a framed blob. Throws BlobError (see the file header for the order of checks). */
export function decodeBlob(buf: Buffer, key: Buffer, opts: DecodeBlobOptions): ConnectionBlob {
  checkKey(key);
  if (!Buffer.isBuffer(buf) || buf.length < 1) throw new BlobError('ERR_BLOB_TRUNCATED', 'empty blob');
  // Version before length: another version may frame its body differently.
  if (buf[0] !== BLOB_VERSION) {
    throw new BlobError('ERR_BLOB_VERSION', `blob version ${buf[0]}, expected ${BLOB_VERSION}`);
  }
  if (buf.length < BLOB_HEADER_BYTES + BLOB_MAC_BYTES) {
    throw new BlobError('ERR_BLOB_TRUNCATED', `blob of ${buf.length} bytes is shorter than its framing`);
  }
  const bodyLen = buf.readUInt32BE(1);
  const expected = BLOB_HEADER_BYTES + bodyLen + BLOB_MAC_BYTES;
  if (buf.length !== expected) {
    throw new BlobError('ERR_BLOB_TRUNCATED', buf.length < expected
      ? `blob truncated: ${buf.length} of ${expected} bytes`
      : `blob length mismatch: ${buf.length - expected} bytes after the MAC`);
  }
  const head = buf.subarray(0, BLOB_HEADER_BYTES);
  const body = buf.subarray(BLOB_HEADER_BYTES, BLOB_HEADER_BYTES + bodyLen);
  const got = buf.subarray(BLOB_HEADER_BYTES + bodyLen);
  // timingSafeEqual: the comparison time must not reveal how many leading
  // bytes of a forged MAC were right.
  if (!timingSafeEqual(mac(key, head, body), got)) throw new BlobError('ERR_BLOB_MAC', 'blob MAC does not verify');

  let raw: unknown;
  try {
    raw = unpackr.unpack(body);
  } catch (err) {
    throw new BlobError('ERR_BLOB_SCHEMA', `blob body is not valid msgpack: ${(err as Error).message}`);
  }
  if (isObject(raw) && raw.v !== BLOB_VERSION && Object.hasOwn(raw, 'v')) {
    throw new BlobError('ERR_BLOB_VERSION', `blob body version ${typeof raw.v === 'number' ? raw.v : typeOf(raw.v)}, expected ${BLOB_VERSION}`);
  }
  const blob = validateBlob(raw);

  const now = opts.now ?? Date.now();
  const maxAgeMs = opts.maxAgeMs ?? opts.replay.maxAgeMs;
  const maxFutureMs = opts.maxFutureMs ?? 1000;
  if (now - blob.created > maxAgeMs) {
    throw new BlobError('ERR_BLOB_STALE', `blob is ${now - blob.created} ms old (limit ${maxAgeMs})`);
  }
  if (blob.created - now > maxFutureMs) {
    throw new BlobError('ERR_BLOB_STALE', `blob is ${blob.created - now} ms in the future (limit ${maxFutureMs})`);
  }
  if (!opts.replay.admit(blob.nonce, blob.created, now, maxAgeMs)) {
    throw new BlobError('ERR_BLOB_REPLAY', `blob nonce ${blob.nonce.toString('hex')} was seen before`);
  }
  return blob;
}

// ---------------------------------------------------------------------------
// Schema. One validator serves both directions: encodeBlob refuses what a host
// would refuse, so a bad blob fails at the balancer, where the bug is.

function isObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x) && !(x instanceof Uint8Array);
}

function schemaError(field: string, why: string): never {
  throw new BlobError('ERR_BLOB_SCHEMA', `blob field ${field}: ${why}`);
}

function int(o: Record<string, unknown>, field: string, min: number, max: number): number {
  const x = o[field];
  if (typeof x !== 'number' || !Number.isInteger(x)) schemaError(field, `expected an integer, got ${typeOf(x)}`);
  if (x < min || x > max) schemaError(field, `${x} is outside ${min}..${max}`);
  return x;
}

const u32 = (o: Record<string, unknown>, field: string) => int(o, field, 0, 0xffffffff);

function bool(o: Record<string, unknown>, field: string): boolean {
  const x = o[field];
  if (typeof x !== 'boolean') schemaError(field, `expected a boolean, got ${typeOf(x)}`);
  return x;
}

function name(o: Record<string, unknown>, field: string, path: string): string {
  const x = o[field];
  if (typeof x !== 'string') schemaError(path, `expected a string, got ${typeOf(x)}`);
  if (x.length === 0 || x.length > MAX_NAME_LENGTH) schemaError(path, `length ${x.length} is outside 1..${MAX_NAME_LENGTH}`);
  return x;
}

function ipv4(o: Record<string, unknown>, field: string): string {
  const x = o[field];
  if (typeof x !== 'string' || !isIPv4(x)) schemaError(field, `expected a dotted-quad IPv4 address, got ${typeOf(x)}`);
  return x;
}

function bytes(o: Record<string, unknown>, field: string, min: number, max: number): Buffer {
  const x = o[field];
  if (!(x instanceof Uint8Array)) schemaError(field, `expected bytes, got ${typeOf(x)}`);
  if (x.length < min || x.length > max) schemaError(field, `length ${x.length} is outside ${min}..${max}`);
  // A copy: the caller's (or msgpackr's) buffer may be reused or be a view of
  // a much larger one.
  return Buffer.from(x);
}

function exactKeys(o: Record<string, unknown>, fields: readonly string[], path: string, optional: readonly string[] = []): void {
  for (const f of fields) if (!Object.hasOwn(o, f)) schemaError(path + f, 'missing');
  const keys = Object.keys(o);
  const present = optional.filter((f) => Object.hasOwn(o, f) && o[f] !== undefined).length;
  const undef = optional.filter((f) => Object.hasOwn(o, f) && o[f] === undefined).length;
  if (keys.length !== fields.length + present + undef) {
    const extra = keys.filter((k) => !fields.includes(k) && !optional.includes(k));
    schemaError(path + (extra[0] ?? '?'), 'unknown field');
  }
}

function typeOf(x: unknown): string {
  if (x === null) return 'null';
  if (x instanceof Uint8Array) return 'bytes';
  if (Array.isArray(x)) return 'array';
  if (typeof x !== 'object') return typeof x;
  // A decoded map may carry its own "constructor" key: never trust it to be a class.
  const name: unknown = (x as { constructor?: { name?: unknown } }).constructor?.name;
  return typeof name === 'string' ? name : 'object';
}

/** Check every field and return a fresh blob with fields in wire order. */
export function validateBlob(x: unknown): ConnectionBlob {
  if (!isObject(x)) schemaError('(root)', `expected a map, got ${typeOf(x)}`);
  exactKeys(x, BLOB_FIELDS, '', OPTIONAL_FIELDS);
  if (x.v !== BLOB_VERSION) schemaError('v', `expected ${BLOB_VERSION}`);
  const d = x.decision;
  if (!isObject(d)) schemaError('decision', `expected a map, got ${typeOf(d)}`);
  exactKeys(d, DECISION_FIELDS, 'decision.');
  const rule = d.rule === null ? null : name(d, 'rule', 'decision.rule');

  const blob: ConnectionBlob = {
    v: 1,
    flowId: int(x, 'flowId', 0, 0xffffff),
    clientIp: ipv4(x, 'clientIp'),
    clientPort: int(x, 'clientPort', 1, 0xffff),
    vip: ipv4(x, 'vip'),
    vipPort: int(x, 'vipPort', 1, 0xffff),
    iss: u32(x, 'iss'),
    irs: u32(x, 'irs'),
    sndNxt: u32(x, 'sndNxt'),
    rcvNxt: u32(x, 'rcvNxt'),
    sndWnd: u32(x, 'sndWnd'),
    rcvWnd: u32(x, 'rcvWnd'),
    sndWscale: int(x, 'sndWscale', 0, MAX_WSCALE),
    rcvWscale: int(x, 'rcvWscale', 0, MAX_WSCALE),
    mss: int(x, 'mss', MIN_MSS, 0xffff),
    sackOk: bool(x, 'sackOk'),
    tsOk: bool(x, 'tsOk'),
    tsVal: u32(x, 'tsVal'),
    tsEcr: u32(x, 'tsEcr'),
    data: bytes(x, 'data', 0, MAX_BLOB_BYTES),
    decision: { rule, pool: name(d, 'pool', 'decision.pool'), host: name(d, 'host', 'decision.host') },
    created: int(x, 'created', 0, Number.MAX_SAFE_INTEGER),
    nonce: bytes(x, 'nonce', NONCE_BYTES, NONCE_BYTES),
  };
  if (x.routing !== undefined) blob.routing = bytes(x, 'routing', 2, MAX_ROUTING_BYTES);
  if (((blob.irs + 1 + blob.data.length) >>> 0) !== blob.rcvNxt) {
    schemaError('rcvNxt', `${blob.rcvNxt} is not irs + 1 + data.length (${(blob.irs + 1 + blob.data.length) >>> 0})`);
  }
  return blob;
}

// ---------------------------------------------------------------------------

export interface ReplayWindowOptions {
  /** How long a nonce must be remembered: the staleness limit (default 5000). */
  maxAgeMs?: number;
  /** Memory bound (default 65536 nonces, about 6 MB). */
  maxEntries?: number;
}

/**
 * Nonces of accepted blobs, each kept until its blob would be stale anyway
 * (created + maxAgeMs), after which the staleness check refuses a replay.
 *
 * Memory is capped at maxEntries. Dropping a live nonce to make room would
 * open a replay hole, so the window remembers the latest expiry it had to drop
 * early (the horizon) and refuses every blob that would expire no later: such
 * a blob might be the replay of a forgotten one. Under overload this refuses
 * some genuine blobs (the balancer then tries another host); it never accepts
 * a replay. Insertion-ordered Map: lookup, insert and eviction are O(1).
 */
export class ReplayWindow {
  readonly maxAgeMs: number;
  readonly maxEntries: number;
  /** nonce (latin1) -> time after which the nonce's blob is stale. */
  private readonly seen = new Map<string, number>();
  private horizon = -Infinity;
  readonly stats = { admitted: 0, replays: 0, horizonRefusals: 0, expired: 0, evicted: 0 };

  constructor(opts: ReplayWindowOptions = {}) {
    this.maxAgeMs = opts.maxAgeMs ?? 5000;
    this.maxEntries = opts.maxEntries ?? 65536;
    if (!(this.maxAgeMs >= 0) || !Number.isInteger(this.maxEntries) || this.maxEntries < 1) {
      throw new RangeError('ReplayWindow: maxAgeMs must be >= 0 and maxEntries a positive integer');
    }
  }

  get size(): number {
    return this.seen.size;
  }

  /**
   * Record a nonce; false if it (possibly) was seen before. `maxAgeMs` is the
   * staleness limit the caller applies, which decides how long to remember.
   */
  admit(nonce: Uint8Array, created: number, now: number, maxAgeMs = this.maxAgeMs): boolean {
    this.expire(now);
    const id = Buffer.from(nonce.buffer, nonce.byteOffset, nonce.byteLength).toString('latin1');
    if (this.seen.has(id)) {
      this.stats.replays++;
      return false;
    }
    const until = created + Math.max(maxAgeMs, this.maxAgeMs);
    if (until <= this.horizon) {
      this.stats.horizonRefusals++;
      return false;
    }
    if (this.seen.size >= this.maxEntries) {
      const [oldId, oldUntil] = this.seen.entries().next().value as [string, number];
      this.seen.delete(oldId);
      this.horizon = Math.max(this.horizon, oldUntil);
      this.stats.evicted++;
    }
    this.seen.set(id, until);
    this.stats.admitted++;
    return true;
  }

  /** Forget nonces whose blobs are stale by now (a replay of them fails as stale). */
  expire(now: number): void {
    // Insertion order is close to expiry order (creation times are close to
    // arrival times); an out-of-order entry only delays expiry, the cap still holds.
    for (const [id, until] of this.seen) {
      if (until >= now) break;
      this.seen.delete(id);
      this.stats.expired++;
    }
  }
}
