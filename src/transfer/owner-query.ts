// Who owns this flow? (issue 16, design.md §8 "any balancer can carry any
// flow"): a balancer that sees a segment of a flow it has no mapping for
// asks the host agents with a LOOKUP; the agent holding the connection
// answers OWNER with the flow ID it was injected under, the others answer
// OWNER with status NOT_HERE, so the balancer knows early that nobody has it.
// Both are authenticated with the cluster key: an OWNER answer makes a
// balancer tunnel a client's packets to a host, so a forged one must not.
//
// Layout (56 bytes, integers big-endian), after the common header of
// fragment.ts (magic, version, type LOOKUP=8 or OWNER=9, reserved, CRC32C,
// session = the asking balancer's, blobId = the query's id):
//   20  u32  client address     24  u32  VIP
//   28  u16  client port        30  u16  VIP port
//   32  u32  flow ID (OWNER with status MINE; 0 otherwise)
//   36  u16  status (OWNER: OwnerStatus; LOOKUP: 0)
//   38  u16  reserved, 0
//   40  16   HMAC-SHA256(cluster key, bytes 0..39 with the CRC field zero), first 16 bytes
// The CRC covers the whole datagram (HMAC included), as for every datagram.
import crypto from 'node:crypto';
import { crc32c } from './crc32c';
import { DatagramType, DGRAM_VERSION, MAGIC } from './fragment';

export const OWNER_QUERY_BYTES = 56;
const MAC_AT = 40;
const MAC_BYTES = 16;

export const OwnerStatus = {
  /** The connection is on this host, under `flowId`. */
  MINE: 0,
  /** No such connection here (or it is being handed back right now). */
  NOT_HERE: 1,
} as const;

export interface OwnerQuery {
  type: 'lookup' | 'owner';
  session: number;
  queryId: number;
  /** Addresses as host-order uint32, as FlowKey has them. */
  clientIp: number;
  clientPort: number;
  vip: number;
  vipPort: number;
  flowId: number;
  status: number;
}

export type OwnerQueryErrorCode = 'ERR_QUERY_LENGTH' | 'ERR_QUERY_HEADER' | 'ERR_QUERY_CRC' | 'ERR_QUERY_MAC' | 'ERR_QUERY_BOUNDS';

const ZERO4 = Buffer.alloc(4);

function mac(key: Buffer, b: Buffer): Buffer {
  const h = crypto.createHmac('sha256', key);
  h.update(b.subarray(0, 8));
  h.update(ZERO4);
  h.update(b.subarray(12, MAC_AT));
  return h.digest().subarray(0, MAC_BYTES);
}

function crc(b: Buffer): number {
  let c = crc32c(b.subarray(0, 8));
  c = crc32c(ZERO4, c);
  return crc32c(b.subarray(12), c);
}

/** @throws RangeError (code ERR_INVALID_ARG_VALUE) for a field out of range. */
export function encodeOwnerQuery(q: OwnerQuery, key: Buffer): Buffer {
  const u32 = (n: string, v: number) => {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
      throw Object.assign(new RangeError(`${n} must be a uint32, got ${v}`), { code: 'ERR_INVALID_ARG_VALUE' });
    }
  };
  const u16 = (n: string, v: number) => {
    if (!Number.isInteger(v) || v < 0 || v > 0xffff) {
      throw Object.assign(new RangeError(`${n} must be a uint16, got ${v}`), { code: 'ERR_INVALID_ARG_VALUE' });
    }
  };
  u32('session', q.session); u32('queryId', q.queryId); u32('clientIp', q.clientIp); u32('vip', q.vip);
  u16('clientPort', q.clientPort); u16('vipPort', q.vipPort); u32('flowId', q.flowId); u16('status', q.status);
  const b = Buffer.alloc(OWNER_QUERY_BYTES);
  b.writeUInt32BE(MAGIC, 0);
  b[4] = DGRAM_VERSION;
  b[5] = q.type === 'lookup' ? DatagramType.LOOKUP : DatagramType.OWNER;
  b.writeUInt32BE(q.session, 12);
  b.writeUInt32BE(q.queryId, 16);
  b.writeUInt32BE(q.clientIp, 20);
  b.writeUInt32BE(q.vip, 24);
  b.writeUInt16BE(q.clientPort, 28);
  b.writeUInt16BE(q.vipPort, 30);
  b.writeUInt32BE(q.flowId, 32);
  b.writeUInt16BE(q.status, 36);
  mac(key, b).copy(b, MAC_AT);
  b.writeUInt32BE(crc(b), 8);
  return b;
}

/** Parse and verify; never throws (input from the network). */
export function decodeOwnerQuery(b: Buffer, key: Buffer): OwnerQuery | { error: OwnerQueryErrorCode } {
  if (b.length !== OWNER_QUERY_BYTES) return { error: 'ERR_QUERY_LENGTH' };
  const type = b[5];
  if (b.readUInt32BE(0) !== MAGIC || b[4] !== DGRAM_VERSION || (type !== DatagramType.LOOKUP && type !== DatagramType.OWNER)) {
    return { error: 'ERR_QUERY_HEADER' };
  }
  if (b.readUInt32BE(8) !== crc(b)) return { error: 'ERR_QUERY_CRC' };
  if (!crypto.timingSafeEqual(mac(key, b), b.subarray(MAC_AT))) return { error: 'ERR_QUERY_MAC' };
  const status = b.readUInt16BE(36);
  if (b.readUInt16BE(6) !== 0 || b.readUInt16BE(38) !== 0 || (type === DatagramType.LOOKUP && status !== 0)
    || (type === DatagramType.OWNER && status > OwnerStatus.NOT_HERE) || b.readUInt32BE(32) > 0xffffff) {
    return { error: 'ERR_QUERY_BOUNDS' };
  }
  return {
    type: type === DatagramType.LOOKUP ? 'lookup' : 'owner',
    session: b.readUInt32BE(12), queryId: b.readUInt32BE(16),
    clientIp: b.readUInt32BE(20), vip: b.readUInt32BE(24), clientPort: b.readUInt16BE(28), vipPort: b.readUInt16BE(30),
    flowId: b.readUInt32BE(32), status,
  };
}
