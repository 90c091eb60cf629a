/**
 * Flow IDs (the VXLAN VNI of a handed-off flow, 24 bits). An ID is reused
 * only after a quarantine, so late tunnelled packets of an old flow can never
 * be taken for a new one at a host (design.md §3.7).
 */
export class FlowIdAllocator {
  private next = 1;
  private readonly inUse = new Set<number>();
  private readonly quarantined = new Set<number>();
  /** Freed IDs with the time they may be reused, oldest first. */
  private readonly queue: Array<[id: number, until: number]> = [];
  private head = 0;
  private readonly quarantineMs: number;
  private readonly max: number;

  constructor(opts: { quarantineMs?: number; max?: number } = {}) {
    this.quarantineMs = opts.quarantineMs ?? 60_000;
    this.max = opts.max ?? 0xffffff;
  }

  get size(): number {
    return this.inUse.size;
  }

  /** @returns a free ID, or undefined when every ID is in use or quarantined. */
  allocate(now: number): number | undefined {
    while (this.head < this.queue.length && this.queue[this.head][1] <= now) {
      this.quarantined.delete(this.queue[this.head++][0]);
    }
    if (this.head > 4096 && this.head * 2 > this.queue.length) this.queue.splice(0, this.head), (this.head = 0);
    if (this.inUse.size + this.quarantined.size >= this.max) return undefined;
    for (;;) {
      const id = this.next;
      this.next = this.next >= this.max ? 1 : this.next + 1;
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
