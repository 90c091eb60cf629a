// Classic libpcap file format (not pcapng).
import * as fs from 'node:fs';

export const PCAP_MAGIC_USEC = 0xa1b2c3d4;
export const PCAP_MAGIC_NSEC = 0xa1b23c4d;
export const LINKTYPE_ETHERNET = 1;

const GLOBAL_HDR_LEN = 24;
const RECORD_HDR_LEN = 16;
const CHUNK_SIZE = 1 << 20;

export type PcapByteOrder = 'little' | 'big';

export interface PcapWriteOptions {
  /** Default 'little'. */
  byteOrder?: PcapByteOrder;
  /** Write the nanosecond-resolution magic (0xa1b23c4d). Default false. */
  nanosecond?: boolean;
  /** Frames longer than this are truncated (orig_len keeps the real size). Default 65535. */
  snaplen?: number;
  /** Default 1 (Ethernet). */
  linktype?: number;
}

export interface PcapRecord {
  /** Captured bytes; a view into the file contents. */
  data: Buffer;
  /** Length on the wire; > data.length if truncated by snaplen. */
  origLen: number;
  /** Timestamp in nanoseconds since the epoch (microsecond files: multiple of 1000). */
  timestampNs: bigint;
}

export interface PcapFile {
  byteOrder: PcapByteOrder;
  nanosecond: boolean;
  versionMajor: number;
  versionMinor: number;
  snaplen: number;
  linktype: number;
  records: PcapRecord[];
}

/**
 * Streams records to disk through one reusable chunk, so memory stays
 * bounded regardless of frame count.
 */
export class PcapWriter {
  private fd: number | null;
  private readonly chunk = Buffer.allocUnsafe(CHUNK_SIZE);
  private pos = 0;
  private readonly le: boolean;
  private readonly nanosecond: boolean;
  private readonly snaplen: number;
  /** Frames written so far. */
  count = 0;

  constructor(readonly path: string, opts: PcapWriteOptions = {}) {
    this.le = (opts.byteOrder ?? 'little') === 'little';
    this.nanosecond = opts.nanosecond ?? false;
    this.snaplen = opts.snaplen ?? 65535;
    const linktype = opts.linktype ?? LINKTYPE_ETHERNET;
    if (!Number.isInteger(this.snaplen) || this.snaplen < 1 || this.snaplen > 0x7fffffff) throw new RangeError(`invalid snaplen ${this.snaplen}`);
    if (!Number.isInteger(linktype) || linktype < 0 || linktype > 0xffffffff) throw new RangeError(`invalid linktype ${linktype}`);
    this.fd = fs.openSync(path, 'w');
    const c = this.chunk;
    this.u32(c, this.nanosecond ? PCAP_MAGIC_NSEC : PCAP_MAGIC_USEC, 0);
    this.u16(c, 2, 4);
    this.u16(c, 4, 6);
    this.u32(c, 0, 8); // thiszone
    this.u32(c, 0, 12); // sigfigs
    this.u32(c, this.snaplen, 16);
    this.u32(c, linktype, 20);
    this.pos = GLOBAL_HDR_LEN;
  }

  /** Appends one frame. timestampNs defaults to 0 so output is reproducible. */
  write(frame: Buffer, timestampNs: bigint = 0n): void {
    if (this.fd === null) throw new Error(`PcapWriter(${this.path}): write after close`);
    if (timestampNs < 0n) throw new RangeError(`negative timestamp ${timestampNs}`);
    const incl = Math.min(frame.length, this.snaplen);
    const sec = timestampNs / 1_000_000_000n;
    if (sec > 0xffffffffn) throw new RangeError(`timestamp ${timestampNs}ns does not fit the 32-bit seconds field`);
    const subNs = timestampNs % 1_000_000_000n;
    const frac = this.nanosecond ? subNs : subNs / 1000n;
    if (this.pos + RECORD_HDR_LEN + incl > this.chunk.length) this.flush();
    const c = this.chunk;
    this.u32(c, Number(sec), this.pos);
    this.u32(c, Number(frac), this.pos + 4);
    this.u32(c, incl, this.pos + 8);
    this.u32(c, frame.length, this.pos + 12);
    this.pos += RECORD_HDR_LEN;
    if (incl > c.length - this.pos) {
      // Larger than a chunk: flush the header and write the frame directly.
      this.flush();
      writeAll(this.fd, frame.subarray(0, incl));
    } else {
      frame.copy(c, this.pos, 0, incl);
      this.pos += incl;
    }
    this.count++;
  }

  /** Flushes and closes; idempotent. */
  close(): void {
    if (this.fd === null) return;
    try {
      this.flush();
    } finally {
      fs.closeSync(this.fd);
      this.fd = null;
    }
  }

  private flush(): void {
    if (this.pos > 0) writeAll(this.fd!, this.chunk.subarray(0, this.pos));
    this.pos = 0;
  }

  private u16(b: Buffer, v: number, off: number): void {
    if (this.le) b.writeUInt16LE(v, off);
    else b.writeUInt16BE(v, off);
  }

  private u32(b: Buffer, v: number, off: number): void {
    if (this.le) b.writeUInt32LE(v, off);
    else b.writeUInt32BE(v, off);
  }
}

function writeAll(fd: number, b: Buffer): void {
  let off = 0;
  while (off < b.length) off += fs.writeSync(fd, b, off, b.length - off);
}

export function writePcap(path: string, frames: Iterable<Buffer>, opts?: PcapWriteOptions): void {
  const w = new PcapWriter(path, opts);
  try {
    for (const f of frames) w.write(f);
  } finally {
    w.close();
  }
}

/** Parses a whole pcap file held in memory; either byte order, usec or nsec. */
export function parsePcap(buf: Buffer, name = 'pcap data'): PcapFile {
  if (buf.length < GLOBAL_HDR_LEN) throw new Error(`${name}: truncated pcap global header (${buf.length} of ${GLOBAL_HDR_LEN} bytes)`);
  const magicLE = buf.readUInt32LE(0);
  const magicBE = buf.readUInt32BE(0);
  let le: boolean;
  let nanosecond: boolean;
  if (magicLE === PCAP_MAGIC_USEC || magicLE === PCAP_MAGIC_NSEC) {
    le = true;
    nanosecond = magicLE === PCAP_MAGIC_NSEC;
  } else if (magicBE === PCAP_MAGIC_USEC || magicBE === PCAP_MAGIC_NSEC) {
    le = false;
    nanosecond = magicBE === PCAP_MAGIC_NSEC;
  } else if (magicLE === 0x0a0d0d0a) {
    throw new Error(`${name}: pcapng is not supported, convert with 'editcap -F pcap'`);
  } else {
    throw new Error(`${name}: not a pcap file (magic 0x${magicBE.toString(16).padStart(8, '0')})`);
  }
  const u16 = (off: number) => (le ? buf.readUInt16LE(off) : buf.readUInt16BE(off));
  const u32 = (off: number) => (le ? buf.readUInt32LE(off) : buf.readUInt32BE(off));
  const file: PcapFile = {
    byteOrder: le ? 'little' : 'big',
    nanosecond,
    versionMajor: u16(4),
    versionMinor: u16(6),
    snaplen: u32(16),
    linktype: u32(20),
    records: [],
  };
  const fracNs = nanosecond ? 1n : 1000n;
  let off = GLOBAL_HDR_LEN;
  while (off < buf.length) {
    const idx = file.records.length;
    if (off + RECORD_HDR_LEN > buf.length) throw new Error(`${name}: truncated header of record ${idx} at offset ${off}`);
    const incl = u32(off + 8);
    if (off + RECORD_HDR_LEN + incl > buf.length) {
      throw new Error(`${name}: truncated record ${idx} at offset ${off} (incl_len ${incl}, ${buf.length - off - RECORD_HDR_LEN} bytes left)`);
    }
    file.records.push({
      timestampNs: BigInt(u32(off)) * 1_000_000_000n + BigInt(u32(off + 4)) * fracNs,
      origLen: u32(off + 12),
      data: buf.subarray(off + RECORD_HDR_LEN, off + RECORD_HDR_LEN + incl),
    });
    off += RECORD_HDR_LEN + incl;
  }
  return file;
}

export function readPcapFile(path: string): PcapFile {
  return parsePcap(fs.readFileSync(path), path);
}

/** Frames of a pcap file (views into one file-sized Buffer). */
export function readPcap(path: string): Buffer[] {
  return readPcapFile(path).records.map((r) => r.data);
}
