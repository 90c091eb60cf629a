// How much of the DPDK heap the shim uses, read straight from EAL (already
// loaded in this process by the shim) so the shim needs no extra API. RSS
// cannot tell: with --no-huge, EAL touches all of its -m memory at start-up.
import koffi, { type LibraryHandle } from 'koffi';

export interface HeapUse {
  /** Bytes allocated on the socket-0 heap (memzones included). */
  allocBytes: number;
  /** Bytes of the memzones backing mempool `pool` (header and object chunks). */
  poolBytes: number;
}

let probe: ((pool: string) => HeapUse) | undefined;

function load(): (pool: string) => HeapUse {
  // The soname of Debian's DPDK 22.11 first; dlopen returns the copy already mapped.
  let lib: LibraryHandle | undefined;
  for (const name of ['librte_eal.so.23', 'librte_eal.so']) {
    try {
      lib = koffi.load(name);
      break;
    } catch { /* next */ }
  }
  if (!lib) throw new Error('librte_eal not found');
  // rte_malloc.h, DPDK 22.11.
  const Stats = koffi.struct('fastpath_rte_malloc_socket_stats', {
    heap_totalsz_bytes: 'size_t',
    heap_freesz_bytes: 'size_t',
    greatest_free_size: 'size_t',
    free_count: 'unsigned int',
    alloc_count: 'unsigned int',
    heap_allocsz_bytes: 'size_t',
  });
  // rte_memzone.h: __rte_packed.
  const Memzone = koffi.pack('fastpath_rte_memzone', {
    name: koffi.array('char', 32, 'String'),
    iova: 'uint64_t',
    addr: 'uint64_t',
    len: 'size_t',
    hugepage_sz: 'uint64_t',
    socket_id: 'int32_t',
    flags: 'uint32_t',
  });
  const getStats = lib.func('int rte_malloc_get_socket_stats(int socket, _Out_ fastpath_rte_malloc_socket_stats *stats)');
  const lookup = lib.func('void *rte_memzone_lookup(const char *name)');
  const zoneLen = (name: string): number => {
    const p = lookup(name);
    return p ? Number((koffi.decode(p, Memzone) as { len: number | bigint }).len) : 0;
  };
  return (pool: string) => {
    const s: Record<string, number | bigint> = {};
    if (getStats(0, s) !== 0) throw new Error('rte_malloc_get_socket_stats failed');
    // RTE_MEMPOOL_MZ_FORMAT "MP_%s" for the header, "_%d" appended per chunk.
    let poolBytes = zoneLen(`MP_${pool}`);
    for (let i = 0; ; i++) {
      const len = zoneLen(`MP_${pool}_${i}`);
      if (!len) break;
      poolBytes += len;
    }
    return { allocBytes: Number(s.heap_allocsz_bytes), poolBytes };
  };
}

/** The heap use now, or undefined if EAL's symbols cannot be reached. */
export function dpdkHeapUse(pool: string): HeapUse | undefined {
  try {
    probe ??= load();
    return probe(pool);
  } catch {
    return undefined;
  }
}
