// Datagrams of the blob transfer (design.md §4, claim step C7): the balancer
// sends a blob as DATA fragments over UDP, the host agent answers with ACKs
// (a bitmap of the fragments it holds), a FINAL once the connection is
// injected (status 0) or refused, and an ERROR when it will not take the
// transfer at all. All integers big-endian.
//
// Common header, 20 bytes:
//    0  u32  magic 'HOFF' (0x484F4646)
//    4  u8   version (1)
//    5  u8   type: DATA=1, ACK=2, FINAL=3, ERROR=4
//    6  u16  reserved, 0
//    8  u32  CRC32C of the whole datagram, computed with these 4 bytes zeroed
//   12  u32  session: random per sender instance
//   16  u32  blob id: per-sender counter
// A blob is identified by (sender address, session, blob id): the session
// keeps a restarted balancer's new blob 0 from matching the old blob 0 that a
// host still remembers as complete (it would get the old FINAL and never be
// injected).
//
// DATA, 32 bytes + payload:
//   20  u16  fragment index (< count)
//   22  u16  fragment count (1..1024)
//   24  u32  total blob length (1..1 MiB)
//   28  u16  fragment size: payload length of every fragment but the last
//   30  u16  payload length
//   32       payload
// count, total, fragment size and payload length must agree
// (count = ceil(total / fragment size); the last fragment carries the rest),
// so a fragment's offset (index * fragment size) is known from the fragment
// alone and a receiver can check every fragment against the first one.
//
// ACK, 24 bytes + ceil(count / 8):
//   20  u16  fragment count
//   22  u16  number of fragments held (= bits set; a cross-check)
//   24       bitmap, fragment i is bit (i & 7) of byte (i >> 3); unused bits 0
//
// FINAL and ERROR, 24 bytes:
//   20  u16  status (Status below)
//   22  u16  reserved, 0
//
// CLOSED, 24 + 4n bytes: as FINAL (blob id = a flow ID, status 0), but 22 may
// be 4n (n <= 255), followed by n more flow IDs (u32): the connections a host
// saw close within a few milliseconds, in one datagram.
//
// PONG, 24 or 32 bytes: as FINAL, but 22 may be 8, followed by the 6-byte MAC
// of the agent's VXLAN device and 2 zero bytes (the balancer's inner
// Ethernet destination, learned instead of configured).
//
// decodeDatagram never throws: it returns { error: code } for anything
// malformed. It checks magic, version and type, then lengths (so a truncated
// datagram says ERR_DGRAM_TRUNCATED rather than a CRC mismatch), then the CRC
// before any field is trusted, then every field's range.
import { crc32c } from './crc32c';
import { macFromString, macToString } from '../net/packet';
import type { BlobErrorCode } from './blob';

export const MAGIC = 0x484f4646; // 'HOFF'
export const DGRAM_VERSION = 1;
export const COMMON_HEADER_BYTES = 20;
export const DATA_HEADER_BYTES = 32;
export const ACK_HEADER_BYTES = 24;
export const STATUS_DATAGRAM_BYTES = 24;
/** Fragments per blob: the ACK bitmap is then at most 128 bytes. */
export const MAX_FRAGMENTS = 1024;
/** Largest blob (the blob codec's limit too). */
export const MAX_TOTAL_LENGTH = 1 << 20;
/** Largest payload: a 9000-byte jumbo frame minus IPv4, UDP and DATA headers. */
export const MAX_FRAGMENT_PAYLOAD = 9000 - 20 - 8 - DATA_HEADER_BYTES;
/** Smallest fragment size: nothing smaller is sensible on any link. */
export const MIN_FRAGMENT_SIZE = 64;
/** Payload size that fits a 1500-byte MTU with room for a VLAN tag or tunnel. */
export const DEFAULT_FRAGMENT_SIZE = 1400;

export const DatagramType = { DATA: 1, ACK: 2, FINAL: 3, ERROR: 4, CLOSED: 5, PING: 6, PONG: 7, LOOKUP: 8, OWNER: 9 } as const;

/** Flags a host agent sets in a PONG's status field. */
export const PongFlag = {
  /** The agent is shutting down or was told to drain: no new connections, its flows continue. */
  DRAINING: 1,
  /** The agent's own HTTP check of its application failed. */
  APP_DOWN: 2,
} as const;

/**
 * Status codes. FINAL carries the outcome of a reassembled blob: 0 = injected,
 * 1..63 = the host refused it. ERROR carries 64..: the host would not take the
 * transfer. A sender treats every nonzero status as a refusal (try another host).
 */
export const Status = {
  OK: 0,
  BAD_MAC: 1,
  STALE: 2,
  REPLAY: 3,
  WRONG_VIP: 4,
  INJECT_FAILED: 5,
  SCHEMA: 6,
  BAD_VERSION: 7,
  TRUNCATED: 8,
  INTERNAL: 9,
  /** A hand-back for a flow the balancer does not have on the sending host. */
  UNKNOWN_FLOW: 10,
  /** A live flow on the host already has this flow ID. */
  FLOW_ID_IN_USE: 11,
  BUSY: 64,
  TOO_LARGE: 65,
} as const;
export type StatusName = keyof typeof Status;

const statusNames = new Map<number, StatusName>(
  (Object.entries(Status) as [StatusName, number][]).map(([k, v]) => [v, k]),
);

/** 'BAD_MAC' for 1, 'STATUS_200' for codes this version does not know. */
export function statusName(status: number): string {
  return statusNames.get(status) ?? `STATUS_${status}`;
}

/** The FINAL status a host sends for a blob decodeBlob refused. */
export function statusForBlobError(code: BlobErrorCode): number {
  switch (code) {
    case 'ERR_BLOB_MAC': return Status.BAD_MAC;
    case 'ERR_BLOB_STALE': return Status.STALE;
    case 'ERR_BLOB_REPLAY': return Status.REPLAY;
    case 'ERR_BLOB_SCHEMA': return Status.SCHEMA;
    case 'ERR_BLOB_VERSION': return Status.BAD_VERSION;
    case 'ERR_BLOB_TRUNCATED': return Status.TRUNCATED;
    default: return Status.INTERNAL;
  }
}

export interface Endpoint {
  ip: string;
  port: number;
}

export const endpointKey = (e: Endpoint): string => `${e.ip}:${e.port}`;

interface Ids {
  session: number;
  blobId: number;
}

export interface DataDatagram extends Ids {
  type: 'data';
  index: number;
  count: number;
  totalLength: number;
  fragmentSize: number;
  /** A view into the decoded buffer; copy it to keep it past the buffer's reuse. */
  payload: Buffer;
}

export interface AckDatagram extends Ids {
  type: 'ack';
  count: number;
  held: number;
  /** ceil(count / 8) bytes, a view into the decoded buffer. */
  bitmap: Buffer;
}

export interface FinalDatagram extends Ids {
  type: 'final';
  status: number;
}

export interface ErrorDatagram extends Ids {
  type: 'error';
  status: number;
}

/**
 * Host to balancer: the injected connection of flow `blobId` (the flow ID)
 * closed, so its mapping can go before the idle timeout. Not authenticated:
 * the balancer accepts it only from the host the flow was handed to, and it
 * only shortens a timeout.
 */
export interface ClosedDatagram extends Ids {
  type: 'closed';
  status: number;
  /** More flow IDs closed (a batch); `blobId` is the first. */
  more?: number[];
}

/**
 * Health checks over the blob port: the balancer sends PING (`session` its
 * own, `blobId` a sequence number); the agent answers PONG with the same
 * ids and PongFlag bits in `status`. Not authenticated, like CLOSED: a forged
 * PONG can at most keep a dead host marked up for a while, and the blob
 * transfer's own failover still applies.
 */
export interface PingDatagram extends Ids {
  type: 'ping' | 'pong';
  status: number;
  /** PONG: the MAC of the agent's VXLAN device, when it says. */
  innerMac?: string;
}

export type Datagram = DataDatagram | AckDatagram | FinalDatagram | ErrorDatagram | ClosedDatagram | PingDatagram;

export type DatagramErrorCode =
  | 'ERR_DGRAM_TRUNCATED' // shorter than its header or its declared length
  | 'ERR_DGRAM_LENGTH' // bytes after its declared end
  | 'ERR_DGRAM_MAGIC'
  | 'ERR_DGRAM_VERSION'
  | 'ERR_DGRAM_TYPE'
  | 'ERR_DGRAM_CRC'
  | 'ERR_DGRAM_BOUNDS'; // a field out of range or inconsistent with another

export interface DatagramError {
  error: DatagramErrorCode;
  detail: string;
}

export const isDatagramError = (r: Datagram | DatagramError): r is DatagramError => 'error' in r;

// ---------------------------------------------------------------------------
// Bitmaps (shared with the sender and the reassembler).

export const bitmapBytes = (count: number): number => (count + 7) >>> 3;
export const testBit = (bm: Uint8Array, i: number): boolean => (bm[i >>> 3] & (1 << (i & 7))) !== 0;
export const setBit = (bm: Uint8Array, i: number): void => {
  bm[i >>> 3] |= 1 << (i & 7);
};

export function popcount(bm: Uint8Array): number {
  let n = 0;
  for (let i = 0; i < bm.length; i++) {
    let b = bm[i];
    while (b) {
      b &= b - 1;
      n++;
    }
  }
  return n;
}

/** Number of fragments for a blob, or 0 if it cannot be sent with this fragment size. */
export function fragmentCount(totalLength: number, fragmentSize: number): number {
  const n = Math.ceil(totalLength / fragmentSize);
  return n >= 1 && n <= MAX_FRAGMENTS ? n : 0;
}

/** Payload length of fragment `index` (all are fragmentSize except the last). */
export function fragmentLength(index: number, count: number, totalLength: number, fragmentSize: number): number {
  return index < count - 1 ? fragmentSize : totalLength - (count - 1) * fragmentSize;
}

// ---------------------------------------------------------------------------
// Encoders: for our own sender and agent, so bad arguments are bugs and throw.

function argError(msg: string): RangeError {
  return Object.assign(new RangeError(msg), { code: 'ERR_INVALID_ARG_VALUE' });
}

function checkU32(field: string, x: number): void {
  if (!Number.isInteger(x) || x < 0 || x > 0xffffffff) throw argError(`${field} must be a uint32, got ${x}`);
}

const ZERO_CRC = new Uint8Array(4);

/** CRC32C of a datagram with its CRC field taken as zero, without copying it. */
function datagramCrc(buf: Buffer): number {
  let c = crc32c(buf.subarray(0, 8));
  c = crc32c(ZERO_CRC, c);
  return crc32c(buf.subarray(12), c);
}

function header(size: number, type: number, ids: Ids): Buffer {
  checkU32('session', ids.session);
  checkU32('blobId', ids.blobId);
  const buf = Buffer.allocUnsafe(size);
  buf.writeUInt32BE(MAGIC, 0);
  buf[4] = DGRAM_VERSION;
  buf[5] = type;
  buf.writeUInt16BE(0, 6);
  buf.writeUInt32BE(0, 8);
  buf.writeUInt32BE(ids.session, 12);
  buf.writeUInt32BE(ids.blobId, 16);
  return buf;
}

function seal(buf: Buffer): Buffer {
  buf.writeUInt32BE(datagramCrc(buf), 8);
  return buf;
}

export function encodeData(d: Omit<DataDatagram, 'type'>): Buffer {
  const { index, count, totalLength, fragmentSize, payload } = d;
  if (!Number.isInteger(fragmentSize) || fragmentSize < MIN_FRAGMENT_SIZE || fragmentSize > MAX_FRAGMENT_PAYLOAD) {
    throw argError(`fragmentSize ${fragmentSize} is outside ${MIN_FRAGMENT_SIZE}..${MAX_FRAGMENT_PAYLOAD}`);
  }
  if (!Number.isInteger(totalLength) || totalLength < 1 || totalLength > MAX_TOTAL_LENGTH) {
    throw argError(`totalLength ${totalLength} is outside 1..${MAX_TOTAL_LENGTH}`);
  }
  if (count !== fragmentCount(totalLength, fragmentSize)) {
    throw argError(`count ${count} does not match ${totalLength} bytes in ${fragmentSize}-byte fragments`);
  }
  if (!Number.isInteger(index) || index < 0 || index >= count) throw argError(`index ${index} is outside 0..${count - 1}`);
  if (payload.length !== fragmentLength(index, count, totalLength, fragmentSize)) {
    throw argError(`payload of fragment ${index} is ${payload.length} bytes, expected ${fragmentLength(index, count, totalLength, fragmentSize)}`);
  }
  const buf = header(DATA_HEADER_BYTES + payload.length, DatagramType.DATA, d);
  buf.writeUInt16BE(index, 20);
  buf.writeUInt16BE(count, 22);
  buf.writeUInt32BE(totalLength, 24);
  buf.writeUInt16BE(fragmentSize, 28);
  buf.writeUInt16BE(payload.length, 30);
  buf.set(payload, DATA_HEADER_BYTES);
  return seal(buf);
}

/** ACK for `count` fragments; bits at or beyond `count` in `bitmap` are ignored. */
export function encodeAck(d: Ids & { count: number; bitmap: Uint8Array }): Buffer {
  const { count, bitmap } = d;
  if (!Number.isInteger(count) || count < 1 || count > MAX_FRAGMENTS) throw argError(`count ${count} is outside 1..${MAX_FRAGMENTS}`);
  const n = bitmapBytes(count);
  if (bitmap.length < n) throw argError(`bitmap of ${bitmap.length} bytes is too short for ${count} fragments`);
  const buf = header(ACK_HEADER_BYTES + n, DatagramType.ACK, d);
  const bm = buf.subarray(ACK_HEADER_BYTES);
  bm.set(bitmap.subarray(0, n));
  if (count & 7) bm[n - 1] &= (1 << (count & 7)) - 1;
  buf.writeUInt16BE(count, 20);
  buf.writeUInt16BE(popcount(bm), 22);
  return seal(buf);
}

function encodeStatus(type: number, d: Ids & { status: number }): Buffer {
  if (!Number.isInteger(d.status) || d.status < 0 || d.status > 0xffff) throw argError(`status ${d.status} is not a uint16`);
  const buf = header(STATUS_DATAGRAM_BYTES, type, d);
  buf.writeUInt16BE(d.status, 20);
  buf.writeUInt16BE(0, 22);
  return seal(buf);
}

export const encodeFinal = (d: Ids & { status: number }): Buffer => encodeStatus(DatagramType.FINAL, d);
export const encodeError = (d: Ids & { status: number }): Buffer => encodeStatus(DatagramType.ERROR, d);
export const encodeClosed = (flowId: number): Buffer => encodeStatus(DatagramType.CLOSED, { session: 0, blobId: flowId, status: 0 });
/** Most flow IDs one CLOSED datagram carries. */
export const MAX_CLOSED_BATCH = 256;
/** One CLOSED for several flows (1..MAX_CLOSED_BATCH flow IDs). */
export function encodeClosedBatch(flowIds: readonly number[]): Buffer {
  if (flowIds.length < 1 || flowIds.length > MAX_CLOSED_BATCH) throw argError(`${flowIds.length} flow IDs (1..${MAX_CLOSED_BATCH})`);
  if (flowIds.length === 1) return encodeClosed(flowIds[0]);
  for (const id of flowIds) if (!Number.isInteger(id) || id < 0 || id > 0xffffffff) throw argError(`flow ID ${id} is not a uint32`);
  const extra = 4 * (flowIds.length - 1);
  const buf = header(STATUS_DATAGRAM_BYTES + extra, DatagramType.CLOSED, { session: 0, blobId: flowIds[0] });
  buf.writeUInt16BE(0, 20);
  buf.writeUInt16BE(extra, 22);
  for (let i = 1; i < flowIds.length; i++) buf.writeUInt32BE(flowIds[i], STATUS_DATAGRAM_BYTES + 4 * (i - 1));
  return seal(buf);
}
export const encodePing = (d: Ids): Buffer => encodeStatus(DatagramType.PING, { ...d, status: 0 });
/** PONG bytes 22..: the length of what follows the status, 0 or PONG_MAC_BYTES. */
const PONG_MAC_BYTES = 8;
export function encodePong(d: Ids & { status: number; innerMac?: string }): Buffer {
  if (d.innerMac === undefined) return encodeStatus(DatagramType.PONG, d);
  let mac: Buffer;
  try {
    mac = macFromString(d.innerMac);
  } catch {
    throw argError(`innerMac ${d.innerMac} is not a MAC address`);
  }
  if (!Number.isInteger(d.status) || d.status < 0 || d.status > 0xffff) throw argError(`status ${d.status} is not a uint16`);
  const buf = header(STATUS_DATAGRAM_BYTES + PONG_MAC_BYTES, DatagramType.PONG, d);
  buf.writeUInt16BE(d.status, 20);
  buf.writeUInt16BE(PONG_MAC_BYTES, 22);
  mac.copy(buf, 24);
  buf.writeUInt16BE(0, 30);
  return seal(buf);
}

// ---------------------------------------------------------------------------
// Decoder: input from the network, so it never throws.

const STATUS_TYPES: Record<number, 'final' | 'error' | 'closed' | 'ping' | 'pong'> = {
  [DatagramType.FINAL]: 'final', [DatagramType.ERROR]: 'error', [DatagramType.CLOSED]: 'closed',
  [DatagramType.PING]: 'ping', [DatagramType.PONG]: 'pong',
};

const fail = (error: DatagramErrorCode, detail: string): DatagramError => ({ error, detail });

/** Parse and verify one datagram; { error } for anything malformed. */
export function decodeDatagram(buf: Uint8Array): Datagram | DatagramError {
  if (!(buf instanceof Uint8Array)) return fail('ERR_DGRAM_TRUNCATED', 'not a byte buffer');
  const b = Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length < 4) return fail('ERR_DGRAM_TRUNCATED', `${b.length} bytes, no magic`);
  if (b.readUInt32BE(0) !== MAGIC) return fail('ERR_DGRAM_MAGIC', `magic 0x${b.readUInt32BE(0).toString(16)}`);
  if (b.length < 6) return fail('ERR_DGRAM_TRUNCATED', `${b.length} bytes, no version and type`);
  if (b[4] !== DGRAM_VERSION) return fail('ERR_DGRAM_VERSION', `version ${b[4]}`);
  const type = b[5];

  // The declared length, from header fields not yet covered by a verified CRC:
  // used only to tell truncation from corruption, never to index the buffer.
  let headerBytes: number;
  switch (type) {
    case DatagramType.DATA: headerBytes = DATA_HEADER_BYTES; break;
    case DatagramType.ACK: headerBytes = ACK_HEADER_BYTES; break;
    case DatagramType.FINAL:
    case DatagramType.ERROR:
    case DatagramType.CLOSED:
    case DatagramType.PING:
    case DatagramType.PONG: headerBytes = STATUS_DATAGRAM_BYTES; break;
    default: return fail('ERR_DGRAM_TYPE', `type ${type}`);
  }
  if (b.length < headerBytes) return fail('ERR_DGRAM_TRUNCATED', `${b.length} bytes, header is ${headerBytes}`);
  let declared = headerBytes;
  if (type === DatagramType.DATA) declared += b.readUInt16BE(30);
  else if (type === DatagramType.ACK) declared += bitmapBytes(b.readUInt16BE(20));
  else if (type === DatagramType.PONG && b.readUInt16BE(22) === PONG_MAC_BYTES) declared += PONG_MAC_BYTES;
  else if (type === DatagramType.CLOSED && b.readUInt16BE(22) % 4 === 0 && b.readUInt16BE(22) <= 4 * (MAX_CLOSED_BATCH - 1)) {
    declared += b.readUInt16BE(22);
  }
  if (b.length < declared) return fail('ERR_DGRAM_TRUNCATED', `${b.length} of ${declared} bytes`);
  if (b.length > declared) return fail('ERR_DGRAM_LENGTH', `${b.length - declared} bytes after the declared end`);

  const crc = b.readUInt32BE(8);
  const computed = datagramCrc(b);
  if (crc !== computed) return fail('ERR_DGRAM_CRC', `crc 0x${crc.toString(16)}, computed 0x${computed.toString(16)}`);

  if (b.readUInt16BE(6) !== 0) return fail('ERR_DGRAM_BOUNDS', 'reserved header bits set');
  const session = b.readUInt32BE(12);
  const blobId = b.readUInt32BE(16);
  switch (type) {
    case DatagramType.DATA: return decodeData(b, session, blobId);
    case DatagramType.ACK: return decodeAck(b, session, blobId);
    default: {
      const status = b.readUInt16BE(20);
      if (type === DatagramType.PONG && b.length === STATUS_DATAGRAM_BYTES + PONG_MAC_BYTES) {
        if (b.readUInt16BE(30) !== 0) return fail('ERR_DGRAM_BOUNDS', 'reserved PONG bits set');
        const m = b.subarray(24, 30);
        if (m[0] & 1 || m.every((x) => x === 0)) return fail('ERR_DGRAM_BOUNDS', 'PONG inner MAC is not a unicast address');
        return { type: 'pong', session, blobId, status, innerMac: macToString(b, 24) };
      }
      if (type === DatagramType.CLOSED && b.length > STATUS_DATAGRAM_BYTES) {
        if (status !== 0) return fail('ERR_DGRAM_BOUNDS', `CLOSED status ${status}`);
        const more: number[] = [];
        for (let o = STATUS_DATAGRAM_BYTES; o < b.length; o += 4) more.push(b.readUInt32BE(o));
        return { type: 'closed', session, blobId, status, more };
      }
      if (b.readUInt16BE(22) !== 0) return fail('ERR_DGRAM_BOUNDS', 'reserved status bits set');
      return { type: STATUS_TYPES[type], session, blobId, status } as Datagram;
    }
  }
}

function decodeData(b: Buffer, session: number, blobId: number): DataDatagram | DatagramError {
  const index = b.readUInt16BE(20);
  const count = b.readUInt16BE(22);
  const totalLength = b.readUInt32BE(24);
  const fragmentSize = b.readUInt16BE(28);
  const payloadLength = b.readUInt16BE(30);
  if (count < 1 || count > MAX_FRAGMENTS) return fail('ERR_DGRAM_BOUNDS', `count ${count}`);
  if (index >= count) return fail('ERR_DGRAM_BOUNDS', `index ${index} of ${count}`);
  if (totalLength < 1 || totalLength > MAX_TOTAL_LENGTH) return fail('ERR_DGRAM_BOUNDS', `total length ${totalLength}`);
  if (fragmentSize < MIN_FRAGMENT_SIZE || fragmentSize > MAX_FRAGMENT_PAYLOAD) {
    return fail('ERR_DGRAM_BOUNDS', `fragment size ${fragmentSize}`);
  }
  if (fragmentCount(totalLength, fragmentSize) !== count) {
    return fail('ERR_DGRAM_BOUNDS', `count ${count} does not match ${totalLength} bytes in ${fragmentSize}-byte fragments`);
  }
  const expected = fragmentLength(index, count, totalLength, fragmentSize);
  if (payloadLength !== expected) {
    return fail('ERR_DGRAM_BOUNDS', `fragment ${index} has ${payloadLength} bytes, expected ${expected}`);
  }
  const payload = b.subarray(DATA_HEADER_BYTES);
  return { type: 'data', session, blobId, index, count, totalLength, fragmentSize, payload };
}

function decodeAck(b: Buffer, session: number, blobId: number): AckDatagram | DatagramError {
  const count = b.readUInt16BE(20);
  const held = b.readUInt16BE(22);
  if (count < 1 || count > MAX_FRAGMENTS) return fail('ERR_DGRAM_BOUNDS', `count ${count}`);
  const bitmap = b.subarray(ACK_HEADER_BYTES);
  if (count & 7 && bitmap[bitmap.length - 1] >>> (count & 7)) return fail('ERR_DGRAM_BOUNDS', 'bits set past count');
  if (popcount(bitmap) !== held) return fail('ERR_DGRAM_BOUNDS', `held ${held} but ${popcount(bitmap)} bits set`);
  return { type: 'ack', session, blobId, count, held, bitmap };
}
