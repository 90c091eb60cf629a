// Sender side of the blob transfer (the balancer): fragments a blob, sends
// every fragment, and retransmits what the host's latest ACK does not list,
// with exponential back-off and jitter, until the host's FINAL arrives or it
// has been silent for maxAttempts rounds.
//
// Transport-agnostic and clock-agnostic: datagrams leave through the `send`
// callback (the shim's TX queue in the balancer, an in-memory channel in the
// tests) and time only moves when the owner calls tick(now). nextDeadline()
// tells the owner when to call next; driveWithTimers() does that with real
// timers. Results are delivered from tick() or onDatagram(), never from
// inside send(), so a callback may call send() again (to try the next host).
//
// Retransmission, per transfer:
// - Round 1 sends every fragment; its timer is initialRtoMs.
// - On a timer: if the host has been silent for maxAttempts rounds, give up
//   (ERR_TRANSFER_GAVE_UP). Otherwise resend the fragments the latest ACK does
//   not hold; if it holds all of them (the blob is complete and the host is
//   injecting, or its FINAL was lost), resend the last fragment as a probe,
//   which the host answers with the FINAL or a full ACK. Then double the
//   timer, capped at maxRtoMs.
// - An ACK that shows a fragment never acknowledged before is progress: the
//   silence count and the timer start again from initialRtoMs (RFC 6298 §5.3).
// - Every timer is multiplied by a random factor in [1 - jitter, 1 + jitter],
//   so transfers that lost the same burst do not retransmit in lock-step.
// A silent host is therefore given up after sum over k < maxAttempts of
// min(initialRtoMs * 2^k, maxRtoMs), about 581 ms with the defaults.
//
// The latest ACK, not the union of all ACKs, says what is missing: a host that
// dropped a partial blob (timeout, restart) must get those fragments again;
// a reordered old ACK only costs a few redundant fragments.
import { randomInt } from 'node:crypto';
import {
  DEFAULT_FRAGMENT_SIZE, Endpoint, MAX_FRAGMENT_PAYLOAD, MAX_TOTAL_LENGTH, MIN_FRAGMENT_SIZE, Status,
  bitmapBytes, decodeDatagram, encodeData, endpointKey, fragmentCount, fragmentLength, isDatagramError,
  popcount, statusName, testBit,
} from './fragment';

export type TransferErrorCode =
  | 'ERR_TRANSFER_GAVE_UP'
  | 'ERR_TRANSFER_REFUSED'
  | 'ERR_TRANSFER_QUEUE_FULL'
  | 'ERR_TRANSFER_CANCELLED'
  | 'ERR_TRANSFER_TOO_LARGE'
  | 'ERR_TRANSFER_OPTIONS';

export type TransferResult =
  /** FINAL with status 0: the host injected the connection. */
  | { ok: true; rttMs: number; queuedMs: number; rounds: number }
  /**
   * The host was silent for maxAttempts rounds. `hostHadBlob`: some ACK had
   * listed every fragment, so the host may have injected the connection and
   * only its FINAL was lost; handing the connection to another host then risks
   * two hosts answering the client. False: the host never had the whole blob.
   */
  | { ok: false; code: 'ERR_TRANSFER_GAVE_UP'; rounds: number; hostHadBlob: boolean }
  /** The host answered FINAL or ERROR with a nonzero status (fragment.ts Status). */
  | { ok: false; code: 'ERR_TRANSFER_REFUSED'; status: number; statusName: string }
  /** maxInFlightPerHost transfers running and maxQueuedPerHost waiting for this host. */
  | { ok: false; code: 'ERR_TRANSFER_QUEUE_FULL' }
  /** cancel() or close(). */
  | { ok: false; code: 'ERR_TRANSFER_CANCELLED' };

export type TransferCallback = (result: TransferResult) => void;

/** Thrown for bad arguments (a blob too large to send, bad options): bugs, not network conditions. */
export class TransferError extends Error {
  readonly code: TransferErrorCode;
  constructor(code: TransferErrorCode, message: string) {
    super(message);
    this.name = 'TransferError';
    this.code = code;
  }
}

export interface BlobSenderOptions {
  send: (dest: Endpoint, datagram: Buffer) => void;
  /** Milliseconds on any monotonic clock (default performance.now). */
  now?: () => number;
  /** Payload bytes per fragment (default 1400: fits a 1500-byte MTU). */
  fragmentSize?: number;
  /**
   * First retransmission timer before a host has been measured (default 3 ms:
   * a LAN); after that, each host's timer follows its measured round trips to
   * the FINAL (RFC 6298, Karn's rule), never below this.
   */
  initialRtoMs?: number;
  maxRtoMs?: number;
  maxAttempts?: number;
  /** Timers vary by ± this fraction (default 0.2). */
  jitter?: number;
  maxInFlightPerHost?: number;
  /** Transfers waiting per host beyond those in flight (default 1024). */
  maxQueuedPerHost?: number;
  /** Uniform [0, 1), for the jitter (default Math.random; tests pass a seeded one). */
  random?: () => number;
  /** This sender's session (default random); see fragment.ts. */
  session?: number;
}

export interface SenderStats {
  /** Datagrams handed to `send`. */
  sent: number;
  /** Fragments sent for the first time. */
  fragments: number;
  /** Fragments sent again (including probes). */
  retransmitted: number;
  probes: number;
  completed: number;
  /** refused + gaveUp + queueFull. */
  failed: number;
  refused: number;
  gaveUp: number;
  queueFull: number;
  cancelled: number;
  acks: number;
  finals: number;
  errors: number;
  /** Datagrams that failed decoding, or were not ACK/FINAL/ERROR, or disagree with their transfer. */
  badDatagrams: number;
  /** Answers for transfers that are over or were never ours (late duplicates, other session). */
  unknown: number;
  /** Answers from an address other than the transfer's host. */
  misaddressed: number;
}

interface Transfer {
  id: number;
  dest: Endpoint;
  destKey: string;
  cb: TransferCallback;
  state: 'queued' | 'active' | 'done';
  /** Held only while queued; fragments are encoded on activation. */
  blob: Buffer | null;
  frames: Buffer[];
  count: number;
  /** Fragments the host's latest ACK holds. */
  acked: Uint8Array;
  /** Fragments any ACK ever held (to recognise progress). */
  everAcked: Uint8Array;
  enqueuedAt: number;
  startedAt: number;
  rounds: number;
  silent: number;
  rtoMs: number;
  deadline: number;
  /** The one live heap entry is the one with this generation. */
  gen: number;
  heapAt: number;
}

interface HostQueue {
  active: number;
  waiting: Transfer[];
}

/** What the sender learned of a host's round trips; kept while the host is idle. */
interface HostRtt {
  /** Smoothed round trip to the host's FINAL and its variation (RFC 6298), ms; NaN before the first sample. */
  srttMs: number;
  rttvarMs: number;
  /** SRTT + 4 RTTVAR within [initialRtoMs, maxRtoMs] (initialRtoMs before a sample). */
  rtoMs: number;
  /** A backed-off timer kept since the last clean sample (0: none); new transfers start at the larger. */
  backoffMs: number;
}

interface HeapEntry {
  at: number;
  gen: number;
  t: Transfer;
}

export class BlobSender {
  readonly session: number;
  readonly now: () => number;
  readonly stats: SenderStats = {
    sent: 0, fragments: 0, retransmitted: 0, probes: 0, completed: 0, failed: 0, refused: 0, gaveUp: 0,
    queueFull: 0, cancelled: 0, acks: 0, finals: 0, errors: 0, badDatagrams: 0, unknown: 0, misaddressed: 0,
  };
  /**
   * Called whenever a deadline is set that may be earlier than the ones
   * before; a timer driver re-arms on it. Deadlines are on the `now` clock.
   */
  onWake: ((deadline: number) => void) | undefined;

  private readonly out: (dest: Endpoint, datagram: Buffer) => void;
  private readonly fragmentSize: number;
  private readonly initialRtoMs: number;
  private readonly maxRtoMs: number;
  private readonly maxAttempts: number;
  private readonly jitter: number;
  private readonly maxInFlightPerHost: number;
  private readonly maxQueuedPerHost: number;
  private readonly random: () => number;
  private nextId = 0;
  private readonly transfers = new Map<number, Transfer>();
  private readonly hosts = new Map<string, HostQueue>();
  private readonly rtts = new Map<string, HostRtt>();
  private readonly heap: HeapEntry[] = [];
  /** Results to deliver on the next tick (refusals decided inside send()). */
  private deferred: (() => void)[] = [];

  constructor(opts: BlobSenderOptions) {
    this.out = opts.send;
    this.now = opts.now ?? (() => performance.now());
    this.fragmentSize = opts.fragmentSize ?? DEFAULT_FRAGMENT_SIZE;
    this.initialRtoMs = opts.initialRtoMs ?? 3;
    this.maxRtoMs = opts.maxRtoMs ?? 200;
    this.maxAttempts = opts.maxAttempts ?? 8;
    this.jitter = opts.jitter ?? 0.2;
    this.maxInFlightPerHost = opts.maxInFlightPerHost ?? 64;
    this.maxQueuedPerHost = opts.maxQueuedPerHost ?? 1024;
    this.random = opts.random ?? Math.random;
    this.session = opts.session ?? randomInt(0, 2 ** 32 - 1);
    const bad = (what: string) => { throw new TransferError('ERR_TRANSFER_OPTIONS', `BlobSender: ${what}`); };
    if (!Number.isInteger(this.fragmentSize) || this.fragmentSize < MIN_FRAGMENT_SIZE || this.fragmentSize > MAX_FRAGMENT_PAYLOAD) {
      bad(`fragmentSize must be an integer in ${MIN_FRAGMENT_SIZE}..${MAX_FRAGMENT_PAYLOAD}`);
    }
    if (!(this.initialRtoMs > 0) || !(this.maxRtoMs >= this.initialRtoMs)) bad('need 0 < initialRtoMs <= maxRtoMs');
    if (!Number.isInteger(this.maxAttempts) || this.maxAttempts < 1) bad('maxAttempts must be a positive integer');
    if (!(this.jitter >= 0 && this.jitter < 1)) bad('jitter must be in [0, 1)');
    if (!Number.isInteger(this.maxInFlightPerHost) || this.maxInFlightPerHost < 1) bad('maxInFlightPerHost must be a positive integer');
    if (!Number.isInteger(this.maxQueuedPerHost) || this.maxQueuedPerHost < 0) bad('maxQueuedPerHost must be a non-negative integer');
    if (!Number.isInteger(this.session) || this.session < 0 || this.session > 0xffffffff) bad('session must be a uint32');
  }

  /** Transfers in flight and waiting, over all hosts. */
  get pending(): number {
    return this.transfers.size;
  }

  /**
   * Send `blob` to the host agent at `dest`; `cb` gets the result exactly once,
   * from a later tick() or onDatagram(). Returns the transfer's id (its blob id
   * on the wire), for cancel(). Throws TransferError ERR_TRANSFER_TOO_LARGE for
   * a blob over 1 MiB or needing more than 1024 fragments.
   */
  send(dest: Endpoint, blob: Buffer, cb: TransferCallback): number {
    const count = blob.length > MAX_TOTAL_LENGTH ? 0 : fragmentCount(blob.length, this.fragmentSize);
    if (count === 0) {
      throw new TransferError('ERR_TRANSFER_TOO_LARGE',
        `a blob of ${blob.length} bytes cannot be sent (1..${MAX_TOTAL_LENGTH} bytes, at most 1024 fragments)`);
    }
    const id = this.allocateId();
    const now = this.now();
    const destKey = endpointKey(dest);
    const t: Transfer = {
      id, dest: { ip: dest.ip, port: dest.port }, destKey, cb, state: 'queued', blob, frames: [], count,
      acked: new Uint8Array(bitmapBytes(count)), everAcked: new Uint8Array(bitmapBytes(count)),
      enqueuedAt: now, startedAt: now, rounds: 0, silent: 0, rtoMs: this.initialRtoMs, deadline: Infinity,
      gen: 0, heapAt: Infinity,
    };
    let host = this.hosts.get(destKey);
    if (!host) {
      host = { active: 0, waiting: [] };
      this.hosts.set(destKey, host);
    }
    t.rtoMs = this.rtoFor(dest);
    if (host.active < this.maxInFlightPerHost) {
      this.transfers.set(id, t);
      this.activate(t, host, now);
    } else if (host.waiting.length < this.maxQueuedPerHost) {
      this.transfers.set(id, t);
      host.waiting.push(t);
    } else {
      this.stats.queueFull++;
      this.stats.failed++;
      t.state = 'done';
      this.defer(() => cb({ ok: false, code: 'ERR_TRANSFER_QUEUE_FULL' }), now);
    }
    return id;
  }

  /** Abandon a transfer (its callback gets ERR_TRANSFER_CANCELLED now). False if it is already over. */
  cancel(id: number): boolean {
    const t = this.transfers.get(id);
    if (!t) return false;
    this.stats.cancelled++;
    this.finish(t, { ok: false, code: 'ERR_TRANSFER_CANCELLED' }, this.now());
    return true;
  }

  /** Cancel everything (shutdown); results still pending are delivered now. */
  close(): void {
    for (const id of [...this.transfers.keys()]) this.cancel(id);
    const deferred = this.deferred;
    this.deferred = [];
    for (const fn of deferred) fn();
  }

  /** Take an ACK, FINAL or ERROR from a host agent. Never throws on bad input. */
  onDatagram(from: Endpoint, buf: Uint8Array): void {
    const d = decodeDatagram(buf);
    if (isDatagramError(d) || d.type === 'data') {
      this.stats.badDatagrams++;
      return;
    }
    const t = d.session === this.session ? this.transfers.get(d.blobId) : undefined;
    if (!t || t.state !== 'active') {
      this.stats.unknown++;
      return;
    }
    if (endpointKey(from) !== t.destKey) {
      this.stats.misaddressed++;
      return;
    }
    const now = this.now();
    if (d.type === 'ack') {
      if (d.count !== t.count) {
        this.stats.badDatagrams++;
        return;
      }
      this.stats.acks++;
      t.acked.set(d.bitmap);
      let progress = false;
      for (let i = 0; i < d.bitmap.length; i++) {
        if (d.bitmap[i] & ~t.everAcked[i]) {
          t.everAcked[i] |= d.bitmap[i];
          progress = true;
        }
      }
      if (progress) {
        t.silent = 0;
        // The host answers: back to its measured timer.
        t.rtoMs = this.rtts.get(t.destKey)?.rtoMs ?? this.initialRtoMs;
        this.schedule(t, now + this.jittered(t.rtoMs));
      }
      return;
    }
    if (d.type === 'final') this.stats.finals++;
    else this.stats.errors++;
    // Karn: only a transfer sent once gives an unambiguous sample.
    if (d.type === 'final' && t.rounds === 1) this.sampleRtt(t.destKey, now - t.startedAt);
    if (d.type === 'final' && d.status === Status.OK) {
      this.stats.completed++;
      this.finish(t, { ok: true, rttMs: now - t.startedAt, queuedMs: t.startedAt - t.enqueuedAt, rounds: t.rounds }, now);
    } else {
      this.stats.refused++;
      this.stats.failed++;
      this.finish(t, { ok: false, code: 'ERR_TRANSFER_REFUSED', status: d.status, statusName: statusName(d.status) }, now);
    }
  }

  /** The retransmission timer a new transfer to `dest` starts with, ms. */
  rtoFor(dest: Endpoint): number {
    const h = this.rtts.get(endpointKey(dest));
    return h ? Math.max(h.rtoMs, h.backoffMs) : this.initialRtoMs;
  }

  private backOff(destKey: string, rtoMs: number): void {
    const h = this.rtts.get(destKey);
    // One entry per host ever sent to: destinations come from the configuration, not the network.
    if (!h) this.rtts.set(destKey, { srttMs: NaN, rttvarMs: NaN, rtoMs: this.initialRtoMs, backoffMs: rtoMs });
    else h.backoffMs = Math.max(h.backoffMs, rtoMs);
  }

  private sampleRtt(destKey: string, r: number): void {
    if (!(r >= 0)) return;
    let h = this.rtts.get(destKey);
    if (!h || Number.isNaN(h.srttMs)) {
      if (!h) this.rtts.set(destKey, h = { srttMs: r, rttvarMs: r / 2, rtoMs: this.initialRtoMs, backoffMs: 0 });
      h.srttMs = r;
      h.rttvarMs = r / 2;
    } else {
      h.rttvarMs = 0.75 * h.rttvarMs + 0.25 * Math.abs(h.srttMs - r);
      h.srttMs = 0.875 * h.srttMs + 0.125 * r;
    }
    h.rtoMs = Math.min(this.maxRtoMs, Math.max(this.initialRtoMs, h.srttMs + 4 * h.rttvarMs));
    h.backoffMs = 0;
  }

  /** Earliest time tick() has work, or undefined when idle. */
  nextDeadline(): number | undefined {
    if (this.deferred.length > 0) return this.now();
    while (this.heap.length > 0) {
      const top = this.heap[0];
      // The top may only need moving to its transfer's later deadline; waking
      // for that is cheaper than keeping the heap exact on every ACK.
      if (top.gen === top.t.gen && top.t.state === 'active') return top.at;
      heapPop(this.heap);
    }
    return undefined;
  }

  /** Run every timer due at `now` (default this.now()). */
  tick(now: number = this.now()): void {
    const deferred = this.deferred;
    this.deferred = [];
    for (const fn of deferred) fn();
    while (this.heap.length > 0 && this.heap[0].at <= now) {
      const e = heapPop(this.heap);
      const t = e.t;
      if (e.gen !== t.gen || t.state !== 'active') continue;
      t.heapAt = Infinity; // its live entry is gone
      if (t.deadline > now) {
        // Postponed by progress after this entry was pushed: one entry per
        // transfer, moved lazily, rather than one per ACK.
        this.push(t, t.deadline);
        continue;
      }
      this.timeout(t, now);
    }
  }

  // -------------------------------------------------------------------------

  private allocateId(): number {
    // Skip ids still in use after a wrap (4 billion transfers later).
    do this.nextId = (this.nextId + 1) >>> 0;
    while (this.transfers.has(this.nextId));
    return this.nextId;
  }

  private activate(t: Transfer, host: HostQueue, now: number): void {
    host.active++;
    t.state = 'active';
    t.startedAt = now;
    const blob = t.blob as Buffer;
    t.blob = null;
    const ids = { session: this.session, blobId: t.id, count: t.count, totalLength: blob.length, fragmentSize: this.fragmentSize };
    for (let i = 0; i < t.count; i++) {
      const off = i * this.fragmentSize;
      const len = fragmentLength(i, t.count, blob.length, this.fragmentSize);
      t.frames.push(encodeData({ ...ids, index: i, payload: blob.subarray(off, off + len) }));
    }
    t.rounds = 1;
    for (const f of t.frames) this.emit(t, f);
    this.stats.fragments += t.count;
    this.schedule(t, now + this.jittered(t.rtoMs));
  }

  private timeout(t: Transfer, now: number): void {
    t.silent++;
    if (t.silent >= this.maxAttempts) {
      this.stats.gaveUp++;
      this.stats.failed++;
      const hostHadBlob = popcount(t.everAcked) === t.count;
      this.finish(t, { ok: false, code: 'ERR_TRANSFER_GAVE_UP', rounds: t.rounds, hostHadBlob }, now);
      return;
    }
    let resent = 0;
    for (let i = 0; i < t.count; i++) {
      if (!testBit(t.acked, i)) {
        this.emit(t, t.frames[i]);
        resent++;
      }
    }
    if (resent === 0) {
      this.emit(t, t.frames[t.count - 1]);
      this.stats.probes++;
      resent = 1;
    }
    this.stats.retransmitted += resent;
    t.rounds++;
    t.rtoMs = Math.min(t.rtoMs * 2, this.maxRtoMs);
    // RFC 6298 5.5/5.7: the host's timer stays backed off until a transfer sent once
    // gives a clean sample; else a host slower than the timer would never be measured.
    this.backOff(t.destKey, t.rtoMs);
    this.schedule(t, now + this.jittered(t.rtoMs));
  }

  private finish(t: Transfer, result: TransferResult, now: number): void {
    const wasActive = t.state === 'active';
    t.state = 'done';
    t.frames = [];
    t.blob = null;
    this.transfers.delete(t.id);
    const host = this.hosts.get(t.destKey);
    if (host) {
      if (wasActive) host.active--;
      else {
        const i = host.waiting.indexOf(t);
        if (i >= 0) host.waiting.splice(i, 1);
      }
      // Start waiting transfers before the callback, so a callback that sends
      // again queues behind them.
      while (host.active < this.maxInFlightPerHost && host.waiting.length > 0) {
        this.activate(host.waiting.shift() as Transfer, host, now);
      }
      if (host.active === 0 && host.waiting.length === 0) this.hosts.delete(t.destKey);
    }
    t.cb(result);
  }

  private emit(t: Transfer, frame: Buffer): void {
    this.stats.sent++;
    this.out(t.dest, frame);
  }

  private jittered(ms: number): number {
    return ms * (1 + this.jitter * (2 * this.random() - 1));
  }

  private schedule(t: Transfer, at: number): void {
    t.deadline = at;
    // A live entry at or before `at` will fire and re-push; only an earlier
    // deadline needs an entry of its own.
    if (at < t.heapAt) this.push(t, at);
  }

  private push(t: Transfer, at: number): void {
    t.gen++;
    t.heapAt = at;
    heapPush(this.heap, { at, gen: t.gen, t });
    this.onWake?.(at);
  }

  private defer(fn: () => void, now: number): void {
    this.deferred.push(fn);
    this.onWake?.(now);
  }
}

/**
 * Drive a sender with real timers: one setTimeout armed for its next deadline,
 * re-armed when it reports an earlier one. The owner still feeds it datagrams
 * with onDatagram(). stop() disarms.
 */
export function driveWithTimers(sender: BlobSender): { stop(): void } {
  let timer: NodeJS.Timeout | undefined;
  let armedAt = Infinity;
  let stopped = false;
  const fire = () => {
    timer = undefined;
    armedAt = Infinity;
    sender.tick();
    arm();
  };
  const arm = () => {
    if (stopped) return;
    const at = sender.nextDeadline();
    if (at === undefined || (timer && at >= armedAt)) return;
    if (timer) clearTimeout(timer);
    armedAt = at;
    timer = setTimeout(fire, Math.max(0, Math.ceil(at - sender.now())));
  };
  sender.onWake = arm;
  arm();
  return {
    stop() {
      stopped = true;
      sender.onWake = undefined;
      if (timer) clearTimeout(timer);
    },
  };
}

// A binary min-heap on `at`, small enough to keep here.

function heapPush(h: HeapEntry[], e: HeapEntry): void {
  let i = h.push(e) - 1;
  while (i > 0) {
    const parent = (i - 1) >> 1;
    if (h[parent].at <= e.at) break;
    h[i] = h[parent];
    i = parent;
  }
  h[i] = e;
}

function heapPop(h: HeapEntry[]): HeapEntry {
  const top = h[0];
  const last = h.pop() as HeapEntry;
  if (h.length > 0) {
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= h.length) break;
      const r = l + 1;
      const c = r < h.length && h[r].at < h[l].at ? r : l;
      if (h[c].at >= last.at) break;
      h[i] = h[c];
      i = c;
    }
    h[i] = last;
  }
  return top;
}
