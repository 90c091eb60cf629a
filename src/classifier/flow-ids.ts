import crypto from 'node:crypto';

/** Options of FlowIdAllocator. */
export interface FlowIdOptions {
  /** A released ID stays unused this long, ms. Default 60000. */
  quarantineMs?: number;
  /** Smallest ID handed out. Default 1 (VNI 0 is never used). */
  first?: number;
  /** Largest ID handed out. Default 0xffffff (24-bit VNI). */
  last?: number;
  /**
   * Start at a random ID of the range instead of `first`: a restarted
   * balancer then rarely picks an ID its previous run left live on a host
   * (the host refuses a duplicate anyway: Status.FLOW_ID_IN_USE). Default false.
   */
  randomStart?: boolean;
}

/**
 * The ID range of balancer `balancerId` when the top `idBits` bits of the
 * 24-bit VNI name the balancer: IDs of different balancers never collide
 * on a host (design.md §8). idBits 0: the whole space.
 */
export function flowIdPartition(balancerId: number, idBits: number): { first: number; last: number } {
  if (!Number.isInteger(idBits) || idBits < 0 || idBits > 8) throw new RangeError(`idBits must be 0..8, got ${idBits}`);
  if (!Number.isInteger(balancerId) || balancerId < 0 || balancerId >= 1 << idBits) {
    throw new RangeError(`balancerId must be 0..${(1 << idBits) - 1} with ${idBits} ID bits, got ${balancerId}`);
  }
  const size = 1 << (24 - idBits);
  const base = balancerId * size;
  return { first: Math.max(1, base), last: base + size - 1 };
}

/**
 * Flow IDs (the VXLAN VNI of a handed-off flow, 24 bits). An ID is reused
 * only after a quarantine, so late tunnelled packets of an old flow can never
 * be taken for a new one at a host (design.md §3.7).
 */
export class FlowIdAllocator {
  private next: number;
  private readonly inUse = new Set<number>();
  private readonly quarantined = new Set<number>();
  /** Freed IDs with the time they may be reused, oldest first. */
  private readonly queue: Array<[id: number, until: number]> = [];
  private head = 0;
  private readonly quarantineMs: number;
  readonly first: number;
  readonly last: number;

  constructor(opts: FlowIdOptions = {}) {
    this.quarantineMs = opts.quarantineMs ?? 60_000;
    this.first = opts.first ?? 1;
    this.last = opts.last ?? 0xffffff;
    if (!Number.isInteger(this.first) || !Number.isInteger(this.last) || this.first < 1 || this.last > 0xffffff || this.first > this.last) {
      throw new RangeError(`flow ID range ${this.first}..${this.last} is not within 1..16777215`);
    }
    this.next = opts.randomStart ? this.first + crypto.randomInt(this.last - this.first + 1) : this.first;
  }

  get size(): number {
    return this.inUse.size;
  }

  /** Whether `id` is in this allocator's range. */
  owns(id: number): boolean {
    return id >= this.first && id <= this.last;
  }

  /**
   * Mark an ID of this range as in use without allocating it: a flow this
   * balancer adopted from a host (its earlier run's, say) keeps its ID.
   * @returns false when the ID is outside the range or already in use.
   */
  claim(id: number): boolean {
    if (!this.owns(id) || this.inUse.has(id)) return false;
    this.quarantined.delete(id); // its queue entry, when due, deletes nothing
    this.inUse.add(id);
    return true;
  }

  /** @returns a free ID, or undefined when every ID is in use or quarantined. */
  allocate(now: number): number | undefined {
    while (this.head < this.queue.length && this.queue[this.head][1] <= now) {
      const id = this.queue[this.head++][0];
      if (!this.inUse.has(id)) this.quarantined.delete(id);
    }
    if (this.head > 4096 && this.head * 2 > this.queue.length) this.queue.splice(0, this.head), (this.head = 0);
    if (this.inUse.size + this.quarantined.size >= this.last - this.first + 1) return undefined;
    for (;;) {
      const id = this.next;
      this.next = this.next >= this.last ? this.first : this.next + 1;
      if (this.inUse.has(id) || this.quarantined.has(id)) continue;
      this.inUse.add(id);
      return id;
    }
  }

  release(id: number, now: number): void {
    if (!this.inUse.delete(id)) return;
    this.quarantined.add(id);
    this.queue.push([id, now + this.quarantineMs]);
  }
}
