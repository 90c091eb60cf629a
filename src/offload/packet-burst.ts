import koffi from 'koffi';
import { ConnEvent, PKT_MAX, PktMeta } from './abi';

const META_SIZE = koffi.sizeof(PktMeta);
// Field positions in 16- and 32-bit units, derived from the koffi layout.
const OFF = koffi.offsetof(PktMeta, 'offset') / 4;
const LEN = koffi.offsetof(PktMeta, 'len') / 2;
const PORT = koffi.offsetof(PktMeta, 'port') / 2;
const REASON = koffi.offsetof(PktMeta, 'reason') / 2;
const WORKER = koffi.offsetof(PktMeta, 'worker') / 2;
const NOTHING = new Uint8Array(0);
const EVENT_SIZE = koffi.sizeof(ConnEvent);
/** Byte offsets of struct hs_conn_event fields, from the koffi layout. */
export const EV = Object.fromEntries(
  ['type', 'worker', 'port', 'conn_id', 'conn_gen', 'client_ip', 'vip', 'client_port', 'vip_port', 'iss', 'irs',
    'snd_nxt', 'rcv_nxt', 'snd_wnd', 'rcv_wnd', 'ts_val', 'ts_ecr', 'data_seq', 'payload_off', 'payload_len', 'mss',
    'snd_wscale', 'rcv_wscale', 'sack_ok', 'ts_ok', 'vlan_tci', 'peer_mac'].map((f) => [f, koffi.offsetof(ConnEvent, f)]),
) as Record<string, number>;

/**
 * A reusable burst of frames shared with the shim: one PKT_MAX slot per frame
 * and a descriptor array (struct hs_pkt_meta). Fields are read from typed
 * views, so a burst creates no object per packet.
 */
export class PacketBurst {
  /** Frame bytes; frame i starts at offset(i). */
  readonly data: Buffer;
  /** hs_pkt_meta descriptors. */
  readonly meta: Buffer;
  /** hs_conn_event per frame (exception bursts; zero for other exceptions). */
  readonly events: Buffer;
  readonly capacity: number;
  /** Frames currently in the burst (set by the receiving call, or by add()). */
  count = 0;
  private readonly m16: Uint16Array;
  private readonly m32: Uint32Array;

  constructor(capacity = 64) {
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > 65536) {
      throw new RangeError(`PacketBurst capacity must be an integer 1..65536, got ${capacity}`);
    }
    this.capacity = capacity;
    this.data = Buffer.alloc(capacity * PKT_MAX);
    this.meta = Buffer.alloc(capacity * META_SIZE);
    this.events = Buffer.alloc(capacity * EVENT_SIZE);
    this.m16 = new Uint16Array(this.meta.buffer, this.meta.byteOffset, this.meta.length / 2);
    this.m32 = new Uint32Array(this.meta.buffer, this.meta.byteOffset, this.meta.length / 4);
  }

  offset(i: number): number { return this.m32[i * (META_SIZE / 4) + OFF]; }
  length(i: number): number { return this.m16[i * (META_SIZE / 2) + LEN]; }
  port(i: number): number { return this.m16[i * (META_SIZE / 2) + PORT]; }
  reason(i: number): number { return this.m16[i * (META_SIZE / 2) + REASON]; }
  worker(i: number): number { return this.m16[i * (META_SIZE / 2) + WORKER]; }

  /** Field of frame i's connection event: a u32 (u16/u8 fields by their width). */
  ev32(i: number, field: string): number { return this.events.readUInt32LE(i * EVENT_SIZE + EV[field]); }
  ev16(i: number, field: string): number { return this.events.readUInt16LE(i * EVENT_SIZE + EV[field]); }
  ev8(i: number, field: string): number { return this.events[i * EVENT_SIZE + EV[field]]; }

  /** The client's MAC from frame i's connection event, as a view. */
  evPeerMac(i: number): Buffer {
    const off = i * EVENT_SIZE + EV.peer_mac;
    return this.events.subarray(off, off + 6);
  }

  /** Payload bytes of frame i's data event, as a view. */
  payload(i: number): Buffer {
    const off = this.offset(i) + this.ev16(i, 'payload_off');
    return this.data.subarray(off, off + this.ev16(i, 'payload_len'));
  }

  /** Frame i as a view into the burst memory (valid until the burst is reused). */
  frame(i: number): Buffer {
    const off = this.offset(i);
    return this.data.subarray(off, off + this.length(i));
  }

  /** Empty the burst for refilling with add(). */
  clear(): this {
    this.count = 0;
    return this;
  }

  /**
   * Append a frame made of a header and a payload, copied straight into the
   * slot (no concatenated Buffer). @returns the frame's bytes in the slot, for
   * patching lengths and checksums.
   * @throws RangeError when the burst is full or the frame does not fit a slot.
   */
  addParts(header: Uint8Array, payload: Uint8Array, port = 0): Buffer {
    const len = header.length + payload.length;
    if (this.count >= this.capacity) throw new RangeError(`burst full (${this.capacity} frames)`);
    if (len > PKT_MAX) throw new RangeError(`frame of ${len} bytes: at most ${PKT_MAX}`);
    const i = this.count++;
    const off = i * PKT_MAX;
    this.data.set(header, off);
    this.data.set(payload, off + header.length);
    this.m32[i * (META_SIZE / 4) + OFF] = off;
    this.m16[i * (META_SIZE / 2) + LEN] = len;
    this.m16[i * (META_SIZE / 2) + PORT] = port;
    this.m16[i * (META_SIZE / 2) + REASON] = 0;
    this.m16[i * (META_SIZE / 2) + WORKER] = 0;
    return this.data.subarray(off, off + len);
  }

  /**
   * Append a frame for transmission or injection on shim port `port`.
   * (The shim refuses frames under 14 bytes for transmission; ring ports
   * accept any length, so tests can inject runts.)
   * @throws RangeError when the burst is full or the frame does not fit a slot.
   */
  add(frame: Uint8Array, port = 0): this {
    this.addParts(frame, NOTHING, port);
    return this;
  }

}
