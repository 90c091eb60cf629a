// Receiver side of the blob transfer (the host agent): turns DATA datagrams
// back into blobs and says what to answer.
//
// Guarantees:
// - A datagram that fails its CRC or any check is counted and dropped; its
//   bytes are never used.
// - Every fragment of a blob must agree with the first one seen (count, total
//   length, fragment size); one that does not is dropped (it cannot come from
//   the sender of the first, short of a session collision).
// - Each blob is returned complete exactly once. Its id is then remembered
//   (completedTtlMs) so that late duplicates get the same answer again: the
//   recorded FINAL once the agent called finish(), a full ACK before that. A
//   sender whose FINAL was lost thus learns the outcome without a second
//   injection. The window is bounded (maxCompleted, oldest first), so the
//   agent's ReplayWindow remains the last guard against a double injection.
// - Memory is bounded: blobs in progress (overall and per sender), bytes
//   reserved (the announced total, reserved at the first fragment), and
//   partial blobs that make no progress for partialTimeoutMs are dropped. A
//   transfer that does not fit is refused with an ERROR (BUSY, or TOO_LARGE
//   when it could never fit), so the balancer tries another host at once
//   instead of timing out.
//
// Any host can send UDP to the agent, and the CRC is not authentication: the
// agent should accept transfers only from its balancers' addresses. The blob's
// HMAC is what makes its content trustworthy.
import {
  DataDatagram, DatagramErrorCode, Endpoint, Status, bitmapBytes, decodeDatagram, encodeAck,
  encodeError, encodeFinal, endpointKey, isDatagramError, setBit, testBit,
} from './fragment';

export interface ReassemblerOptions {
  /** Blobs in progress, all senders (default 256). */
  maxBlobs?: number;
  /** Blobs in progress per sender address (default 128: twice a sender's default window). */
  maxBlobsPerSender?: number;
  /** Bytes reserved by blobs in progress (default 64 MiB). */
  maxBytes?: number;
  /** A partial blob with no new fragment for this long is dropped (default 2000 ms). */
  partialTimeoutMs?: number;
  /** How long a completed blob's id is remembered (default 10000 ms, far beyond a sender's retries). */
  completedTtlMs?: number;
  /** Completed ids remembered at most (default 65536). */
  maxCompleted?: number;
}

/** Identifies a blob: sender address, sender session, blob id. */
export interface BlobRef {
  sender: Endpoint;
  session: number;
  blobId: number;
  /** The three above as one string, the map key. */
  key: string;
}

export type ReceiveResult =
  /** Nothing to answer (bad or unexpected datagram); see stats. */
  | { kind: 'dropped'; reason: DatagramErrorCode | 'ERR_NOT_DATA' | 'ERR_INCONSISTENT' }
  /** Fragment taken or already held: send `reply` (an ACK). */
  | { kind: 'partial'; reply: Buffer }
  /**
   * Last fragment: `blob` is complete. Send `reply` (a full ACK), verify and
   * inject the blob, then send finish(ref, status).
   */
  | { kind: 'complete'; reply: Buffer; ref: BlobRef; blob: Buffer }
  /** A fragment of a blob already returned: send `reply` (its FINAL, or a full ACK if not finished). */
  | { kind: 'already-complete'; reply: Buffer; ref: BlobRef; status: number | null }
  /** Transfer refused: send `reply` (an ERROR with `status`). */
  | { kind: 'refused'; reply: Buffer; status: number };

interface Partial {
  ref: BlobRef;
  senderKey: string;
  count: number;
  totalLength: number;
  fragmentSize: number;
  buf: Buffer;
  bitmap: Uint8Array;
  held: number;
  lastProgress: number;
}

interface Completed {
  ref: BlobRef;
  count: number;
  totalLength: number;
  /** null until the agent calls finish(). */
  status: number | null;
  at: number;
}

export interface ReassemblerStats {
  datagrams: number;
  /** Refused by decodeDatagram, by code. */
  bad: Record<DatagramErrorCode, number>;
  notData: number;
  inconsistent: number;
  fragments: number;
  duplicateFragments: number;
  completed: number;
  alreadyComplete: number;
  refusedBusy: number;
  refusedTooLarge: number;
  expiredPartial: number;
  expiredCompleted: number;
  /** Completed ids forgotten before their TTL to respect maxCompleted. */
  evictedCompleted: number;
}

export class Reassembler {
  private readonly opts: Required<ReassemblerOptions>;
  /** In order of last progress, so the front is the first to expire. */
  private readonly partials = new Map<string, Partial>();
  /** In order of completion. */
  private readonly completed = new Map<string, Completed>();
  private readonly perSender = new Map<string, number>();
  private bytes = 0;
  readonly stats: ReassemblerStats = {
    datagrams: 0,
    bad: {
      ERR_DGRAM_TRUNCATED: 0, ERR_DGRAM_LENGTH: 0, ERR_DGRAM_MAGIC: 0, ERR_DGRAM_VERSION: 0,
      ERR_DGRAM_TYPE: 0, ERR_DGRAM_CRC: 0, ERR_DGRAM_BOUNDS: 0,
    },
    notData: 0, inconsistent: 0, fragments: 0, duplicateFragments: 0, completed: 0, alreadyComplete: 0,
    refusedBusy: 0, refusedTooLarge: 0, expiredPartial: 0, expiredCompleted: 0, evictedCompleted: 0,
  };

  constructor(opts: ReassemblerOptions = {}) {
    this.opts = {
      maxBlobs: opts.maxBlobs ?? 256,
      maxBlobsPerSender: opts.maxBlobsPerSender ?? 128,
      maxBytes: opts.maxBytes ?? 64 << 20,
      partialTimeoutMs: opts.partialTimeoutMs ?? 2000,
      completedTtlMs: opts.completedTtlMs ?? 10_000,
      maxCompleted: opts.maxCompleted ?? 65536,
    };
  }

  /** Blobs in progress and bytes they reserve. */
  get inProgress(): { blobs: number; bytes: number; completedRemembered: number } {
    return { blobs: this.partials.size, bytes: this.bytes, completedRemembered: this.completed.size };
  }

  /** Take one datagram from `from`. Never throws on bad input. */
  receive(from: Endpoint, buf: Uint8Array, now: number): ReceiveResult {
    this.stats.datagrams++;
    this.expire(now);
    const d = decodeDatagram(buf);
    if (isDatagramError(d)) {
      this.stats.bad[d.error]++;
      return { kind: 'dropped', reason: d.error };
    }
    if (d.type !== 'data') {
      this.stats.notData++;
      return { kind: 'dropped', reason: 'ERR_NOT_DATA' };
    }
    const senderKey = endpointKey(from);
    const key = `${senderKey}/${d.session}/${d.blobId}`;

    const done = this.completed.get(key);
    if (done) {
      if (done.count !== d.count || done.totalLength !== d.totalLength) return this.inconsistent();
      this.stats.alreadyComplete++;
      return { kind: 'already-complete', ref: done.ref, status: done.status, reply: this.completedReply(done) };
    }

    let p = this.partials.get(key);
    if (!p) {
      const refusal = this.admit(senderKey, d);
      if (refusal !== undefined) {
        return { kind: 'refused', status: refusal, reply: encodeError({ session: d.session, blobId: d.blobId, status: refusal }) };
      }
      p = {
        ref: { sender: { ip: from.ip, port: from.port }, session: d.session, blobId: d.blobId, key },
        senderKey, count: d.count, totalLength: d.totalLength, fragmentSize: d.fragmentSize,
        buf: Buffer.alloc(d.totalLength), bitmap: new Uint8Array(bitmapBytes(d.count)), held: 0, lastProgress: now,
      };
      this.partials.set(key, p);
      this.perSender.set(senderKey, (this.perSender.get(senderKey) ?? 0) + 1);
      this.bytes += d.totalLength;
    } else if (p.count !== d.count || p.totalLength !== d.totalLength || p.fragmentSize !== d.fragmentSize) {
      return this.inconsistent();
    }

    if (testBit(p.bitmap, d.index)) {
      // The sender retransmits because it lacks our ACK: answer again.
      this.stats.duplicateFragments++;
      return { kind: 'partial', reply: this.ack(p) };
    }
    // decodeDatagram checked that the payload has exactly this fragment's length.
    p.buf.set(d.payload, d.index * p.fragmentSize);
    setBit(p.bitmap, d.index);
    p.held++;
    p.lastProgress = now;
    this.stats.fragments++;
    // Move to the back: the map stays ordered by last progress.
    this.partials.delete(key);

    if (p.held < p.count) {
      this.partials.set(key, p);
      return { kind: 'partial', reply: this.ack(p) };
    }
    this.release(p);
    this.remember({ ref: p.ref, count: p.count, totalLength: p.totalLength, status: null, at: now });
    this.stats.completed++;
    return { kind: 'complete', ref: p.ref, blob: p.buf, reply: this.ack(p) };
  }

  /**
   * Record the outcome of a completed blob (Status.OK once injected) and get
   * the FINAL to send; duplicates of the blob get the same FINAL from now on.
   */
  finish(ref: BlobRef, status: number): Buffer {
    const done = this.completed.get(ref.key);
    if (done) done.status = status;
    return encodeFinal({ session: ref.session, blobId: ref.blobId, status });
  }

  /** Drop partial blobs without progress and completed ids past their TTL. Called by receive(). */
  expire(now: number): void {
    for (const p of this.partials.values()) {
      if (now - p.lastProgress < this.opts.partialTimeoutMs) break;
      this.partials.delete(p.ref.key);
      this.release(p);
      this.stats.expiredPartial++;
    }
    for (const c of this.completed.values()) {
      if (now - c.at < this.opts.completedTtlMs) break;
      this.completed.delete(c.ref.key);
      this.stats.expiredCompleted++;
    }
  }

  /** undefined if a new blob fits, else the ERROR status to refuse it with. */
  private admit(senderKey: string, d: DataDatagram): number | undefined {
    if (d.totalLength > this.opts.maxBytes) {
      this.stats.refusedTooLarge++;
      return Status.TOO_LARGE;
    }
    if (
      this.partials.size >= this.opts.maxBlobs ||
      (this.perSender.get(senderKey) ?? 0) >= this.opts.maxBlobsPerSender ||
      this.bytes + d.totalLength > this.opts.maxBytes
    ) {
      this.stats.refusedBusy++;
      return Status.BUSY;
    }
    return undefined;
  }

  private release(p: Partial): void {
    this.bytes -= p.totalLength;
    const n = (this.perSender.get(p.senderKey) ?? 1) - 1;
    if (n > 0) this.perSender.set(p.senderKey, n);
    else this.perSender.delete(p.senderKey);
  }

  private remember(c: Completed): void {
    if (this.completed.size >= this.opts.maxCompleted) {
      const oldest = this.completed.keys().next().value as string;
      this.completed.delete(oldest);
      this.stats.evictedCompleted++;
    }
    this.completed.set(c.ref.key, c);
  }

  private inconsistent(): ReceiveResult {
    this.stats.inconsistent++;
    return { kind: 'dropped', reason: 'ERR_INCONSISTENT' };
  }

  private ack(p: Partial): Buffer {
    return encodeAck({ session: p.ref.session, blobId: p.ref.blobId, count: p.count, bitmap: p.bitmap });
  }

  private completedReply(c: Completed): Buffer {
    const ids = { session: c.ref.session, blobId: c.ref.blobId };
    if (c.status !== null) return encodeFinal({ ...ids, status: c.status });
    return encodeAck({ ...ids, count: c.count, bitmap: fullBitmap(c.count) });
  }
}

/** All ones; encodeAck clears the bits past count. */
const fullBitmap = (count: number): Uint8Array => new Uint8Array(bitmapBytes(count)).fill(0xff);
