import { createHash } from 'node:crypto';

// Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable
// Software Network Load Balancer", NSDI 2016, section 3.4).
//
// Every backend has a preference list: a permutation of the M table slots,
// given by offset = h1(name) % M and skip = h2(name) % (M - 1) + 1. With M
// prime every skip is coprime to M, so the list visits every slot. Backends
// take turns claiming their next still-free preferred slot until the table is
// full. Because a backend's preferences do not depend on the others, removing
// one mostly hands its slots to others and leaves theirs alone: a key moves
// only if it mapped to the removed backend, plus a small disruption.
//
// Weights: in each round a backend of weight w takes w turns in a row (the
// paper's "adjusting the frequency" variant), so it ends up with about
// M * w / sum(w) slots. The last round is cut short when the table fills,
// which can shift at most max(w) slots: negligible while M >> backends.

const EMPTY = 0xffff; // table entries are Uint16 backend indices: 65535 is free

export interface MaglevBackend {
  name: string;
  /** relative share, a positive integer */
  weight: number;
}

export class MaglevTable {
  /** M, the number of slots: prime. */
  readonly size: number;
  private entries: Uint16Array;
  private names: string[] = [];

  /**
   * @param size a prime; 65537 gives under ~1% imbalance up to ~650 backends
   *   (the paper sizes M >= 100 x backends). Tests use smaller primes.
   */
  constructor(size = 65537) {
    if (!Number.isInteger(size) || size < 2 || size > 1 << 24 || !isPrime(size)) {
      throw new RangeError(`Maglev table size must be a prime up to 2^24 (got ${size})`);
    }
    this.size = size;
    this.entries = new Uint16Array(size).fill(EMPTY);
  }

  /** Backend names in table-index order (sorted by name). */
  get backends(): readonly string[] {
    return this.names;
  }

  /**
   * Rebuild for a set of backends. The result depends only on the set (names
   * and weights), not on the order given: backends are sorted by name, so
   * two balancers with the same healthy set agree.
   */
  build(backends: readonly MaglevBackend[]): void {
    const sorted = [...backends].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const n = sorted.length;
    if (n >= EMPTY) throw new RangeError(`too many backends (${n})`);
    if (n > this.size) throw new RangeError(`${n} backends do not fit a table of ${this.size}`);
    for (let i = 0; i < n; i++) {
      const b = sorted[i];
      if (i > 0 && b.name === sorted[i - 1].name) throw new RangeError(`duplicate backend '${b.name}'`);
      if (!Number.isInteger(b.weight) || b.weight < 1) {
        throw new RangeError(`backend '${b.name}': weight must be a positive integer (got ${b.weight})`);
      }
    }
    const m = this.size;
    const entries = this.entries.fill(EMPTY);
    this.names = sorted.map((b) => b.name);
    if (n === 0) return;

    // pos[i] is backend i's next preferred slot, permutation[i][next[i]] in
    // the paper, advanced by skip[i] instead of recomputed.
    const pos = new Uint32Array(n);
    const skip = new Uint32Array(n);
    for (let i = 0; i < n; i++) {
      // The build may use a cryptographic hash: it runs on health changes,
      // never per lookup. Two disjoint words of one digest are independent.
      const d = createHash('sha256').update(sorted[i].name).digest();
      pos[i] = d.readUInt32BE(0) % m;
      skip[i] = (d.readUInt32BE(4) % (m - 1)) + 1;
    }
    let filled = 0;
    for (;;) {
      for (let i = 0; i < n; i++) {
        for (let turn = sorted[i].weight; turn > 0; turn--) {
          let c = pos[i];
          while (entries[c] !== EMPTY) c = (c + skip[i]) % m;
          entries[c] = i;
          pos[i] = (c + skip[i]) % m;
          if (++filled === m) return;
        }
      }
    }
  }

  /**
   * The backend for a key: a client address as a 4-byte network-order Buffer
   * or the same address as a uint32 (both hash alike), or any other Buffer or
   * string. Allocation-free.
   * @throws Error when the table has no backends
   */
  lookup(key: Buffer | number | string): string {
    return this.names[this.indexAt(this.slotOf(key))];
  }

  /** Index into `backends` of the backend owning a slot. */
  indexAt(slot: number): number {
    const i = this.entries[slot];
    if (i === EMPTY) throw new Error('Maglev table has no backends');
    return i;
  }

  /**
   * The slot a key hashes to. Failover walks the slots after it: neighbours
   * belong to pseudo-random backends in proportion to their weights.
   */
  slotOf(key: Buffer | number | string): number {
    return hashKey(key) % this.size;
  }

  /** Slots owned by each backend, by name (diagnostics and tests; allocates). */
  counts(): Map<string, number> {
    const out = new Map<string, number>(this.names.map((n) => [n, 0]));
    for (const i of this.entries) if (i !== EMPTY) out.set(this.names[i], out.get(this.names[i])! + 1);
    return out;
  }
}

// Lookup hash: 32-bit FNV-1a over the key's bytes, then murmur3's fmix32
// finaliser, because FNV-1a alone mixes the last bytes of short keys (an
// IPv4 address) poorly. Non-cryptographic on purpose: it runs per connection.
const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

function hashKey(key: Buffer | number | string): number {
  let h = FNV_OFFSET;
  if (typeof key === 'number') {
    // The uint32 big-endian, so it hashes like the address's 4 wire bytes.
    h = Math.imul(h ^ ((key >>> 24) & 0xff), FNV_PRIME);
    h = Math.imul(h ^ ((key >>> 16) & 0xff), FNV_PRIME);
    h = Math.imul(h ^ ((key >>> 8) & 0xff), FNV_PRIME);
    h = Math.imul(h ^ (key & 0xff), FNV_PRIME);
  } else if (typeof key === 'string') {
    for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), FNV_PRIME);
  } else {
    for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key[i], FNV_PRIME);
  }
  return fmix32(h);
}

function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

function isPrime(n: number): boolean {
  if (n < 4) return n >= 2;
  if (n % 2 === 0) return false;
  for (let d = 3; d * d <= n; d += 2) if (n % d === 0) return false;
  return true;
}
