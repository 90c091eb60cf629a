/* SPDX-License-Identifier: MIT
 * Stage 2c: the flat flow table, the workers' index of mappings.
 *
 * A hit must cost one cache line (issue 18): rte_hash keeps a key's bytes
 * and its data pointer in a key store apart from its buckets, and our entry
 * was a third line, so a hit cost three dependent reads. Here a 64-byte
 * bucket holds two slots, each with its whole key, a value word with the
 * fields the fast path needs (flow ID, host, entry index, a FAST bit) and
 * its packet and byte counts. A key lives in its first bucket when there is
 * room, else in its second; with a table of twice the capacity in buckets,
 * about 9 in 10 keys of a full table are in the first. A key with no room
 * in either stays in rte_hash only (the overflow, looked up after a miss
 * here while there is any), which also stays the control plane's index.
 *
 * One writer (the control thread). Readers see a slot through its value
 * word: the key is written before the value is published (release), and a
 * slot removed is not reused until every worker has passed a quiescent
 * state (it is freed with its entry, by the mapping table's RCU). Workers
 * write only a slot's counts (atomic adds) and clear FAST when they mark a
 * mapping REOPENED (hs_ft_val_derive), so every value change is a CAS.
 * Pure: no DPDK call, testable on plain memory.
 */
#ifndef HS_FLOWTAB_H
#define HS_FLOWTAB_H

#include <stdint.h>
#include <string.h>

/* Mapping key, network byte order; padding zeroed so it hashes stably.
 * 8-aligned: rte_hash_crc reads the key as uint64_t words (a misaligned load
 * otherwise, which UBSan reports). */
struct hs_flow_key {
	uint32_t client_ip;
	uint32_t vip;
	uint16_t client_port;
	uint16_t vip_port;
	uint8_t proto;
	uint8_t pad[3];
} __attribute__((aligned(8)));

#define HS_FT_WAYS 2
#define HS_FT_NONE UINT32_MAX

/* Value word: VALID | FAST | idx:26 | host:12 | flow_id:24. */
#define HS_FT_VALID (1ull << 63)
#define HS_FT_FAST (1ull << 62)
#define HS_FT_TOMB 1ull /* removed, not yet reclaimed: neither valid nor free */
#define HS_FT_IDX_BITS 26
#define HS_FT_MAX_IDX (1u << HS_FT_IDX_BITS)

/* Counts word: packets in the low 24 bits, bytes above. A worker folds it
 * into its entry once the packets reach 2^23 (2^23 IPv4 packets hold less
 * than 2^39 bytes, so neither field can overflow before that). */
#define HS_FT_CNT_PKT_BITS 24
#define HS_FT_CNT_FOLD (1ull << 23)

struct hs_ft_bucket {
	struct hs_flow_key key[HS_FT_WAYS];
	uint64_t val[HS_FT_WAYS];
	uint64_t cnt[HS_FT_WAYS];
} __attribute__((aligned(64)));

struct hs_flowtab {
	struct hs_ft_bucket *b;
	uint32_t mask;     /* buckets - 1 */
	uint32_t used;     /* slots valid or removed-not-reclaimed (writer only) */
};

static inline uint64_t hs_ft_val(uint32_t idx, uint16_t host, uint32_t flow_id, int fast)
{
	return HS_FT_VALID | (fast ? HS_FT_FAST : 0) | (uint64_t)idx << 36 | (uint64_t)(host & 0xfff) << 24 |
	       (flow_id & 0xffffff);
}
static inline uint32_t hs_ft_val_idx(uint64_t v) { return (uint32_t)(v >> 36) & (HS_FT_MAX_IDX - 1); }
static inline uint16_t hs_ft_val_host(uint64_t v) { return (uint16_t)((v >> 24) & 0xfff); }
static inline uint32_t hs_ft_val_flow(uint64_t v) { return (uint32_t)(v & 0xffffff); }

static inline uint32_t hs_ft_bucket1(const struct hs_flowtab *t, uint32_t sig) { return sig & t->mask; }

/* The second bucket from the same hash (a multiplicative remix), never the first. */
static inline uint32_t hs_ft_bucket2(const struct hs_flowtab *t, uint32_t sig)
{
	uint32_t b = (uint32_t)(((uint64_t)sig * 0x9e3779b97f4a7c15ull) >> 32) & t->mask;
	return b == (sig & t->mask) ? b ^ 1 : b;
}

static inline int hs_ft_key_eq(const struct hs_flow_key *a, const struct hs_flow_key *b)
{
	const uint64_t *x = (const uint64_t *)a, *y = (const uint64_t *)b;
	return x[0] == y[0] && x[1] == y[1];
}

static inline uint64_t *hs_ft_val_ptr(const struct hs_flowtab *t, uint32_t slot)
{
	return &t->b[slot / HS_FT_WAYS].val[slot % HS_FT_WAYS];
}
static inline uint64_t *hs_ft_cnt_ptr(const struct hs_flowtab *t, uint32_t slot)
{
	return &t->b[slot / HS_FT_WAYS].cnt[slot % HS_FT_WAYS];
}

/* Look @p k up in one bucket: the slot and its value word, or HS_FT_NONE. */
static inline uint32_t hs_ft_probe(const struct hs_flowtab *t, uint32_t bucket, const struct hs_flow_key *k,
				   uint64_t *val)
{
	const struct hs_ft_bucket *b = &t->b[bucket];
	for (uint32_t w = 0; w < HS_FT_WAYS; w++) {
		uint64_t v = __atomic_load_n(&b->val[w], __ATOMIC_ACQUIRE);
		if ((v & HS_FT_VALID) && hs_ft_key_eq(&b->key[w], k)) {
			*val = v;
			return bucket * HS_FT_WAYS + w;
		}
	}
	return HS_FT_NONE;
}

/* Both buckets: the slot, or HS_FT_NONE. */
static inline uint32_t hs_ft_find(const struct hs_flowtab *t, const struct hs_flow_key *k, uint32_t sig, uint64_t *val)
{
	uint32_t s = hs_ft_probe(t, hs_ft_bucket1(t, sig), k, val);
	return s != HS_FT_NONE ? s : hs_ft_probe(t, hs_ft_bucket2(t, sig), k, val);
}

/* Count one packet of @p ip_len bytes (atomic: a flow's packets may meet
 * two workers, as when worker 0 reinjects held frames; removing the lock
 * measured no faster). @return nonzero when the slot's counts should be folded. */
static inline int hs_ft_count(uint64_t *cnt, uint32_t ip_len)
{
	uint64_t old = __atomic_fetch_add(cnt, (uint64_t)ip_len << HS_FT_CNT_PKT_BITS | 1, __ATOMIC_RELAXED);
	return (old & ((1ull << HS_FT_CNT_PKT_BITS) - 1)) + 1 >= HS_FT_CNT_FOLD;
}
static inline uint64_t hs_ft_cnt_packets(uint64_t c) { return c & ((1ull << HS_FT_CNT_PKT_BITS) - 1); }
static inline uint64_t hs_ft_cnt_bytes(uint64_t c) { return c >> HS_FT_CNT_PKT_BITS; }

/** Bytes of a table of @p buckets buckets (a power of two). */
size_t hs_ft_memsize(uint32_t buckets);

/** Buckets for @p capacity keys: twice as many (at most 2^24), a power of two. */
uint32_t hs_ft_buckets_for(uint32_t capacity);

/**
 * Initialise a table over @p mem (hs_ft_memsize(@p buckets) bytes, 64-aligned, zeroed).
 * @return 0, or -EINVAL when @p buckets is not a power of two of at least 2.
 */
int hs_ft_init(struct hs_flowtab *t, void *mem, uint32_t buckets);

/**
 * Take a free slot for @p k (not present) in its first bucket, else its
 * second, and write the key; readers do not see it until hs_ft_publish.
 * Writer only.
 * @return the slot, or HS_FT_NONE when both buckets are full (no error: the
 *   key is then served from the overflow).
 */
uint32_t hs_ft_reserve(struct hs_flowtab *t, const struct hs_flow_key *k, uint32_t sig);

/** Make a reserved slot visible with value @p val (built by hs_ft_val). Writer only. */
void hs_ft_publish(struct hs_flowtab *t, uint32_t slot, uint64_t val);

/** Unpublish a slot: readers stop finding it; it stays taken until hs_ft_reclaim. Writer only. */
void hs_ft_remove(struct hs_flowtab *t, uint32_t slot);

/** Free a slot: one removed, once no reader can hold it (after an RCU grace period), or one reserved and never published. Writer only. */
void hs_ft_reclaim(struct hs_flowtab *t, uint32_t slot);

/**
 * Set or clear FAST from a state read after the caller's own state change
 * (see hs_mapping.c: whoever changes the state last also sets FAST last).
 * @p fast_of maps a state to 1 when the fast path may forward for it.
 */
void hs_ft_val_derive(struct hs_flowtab *t, uint32_t slot, const uint8_t *state, int (*fast_of)(uint8_t));

/** Replace the host in a slot's value word. Writer only (but a CAS: workers clear FAST). */
void hs_ft_val_set_host(struct hs_flowtab *t, uint32_t slot, uint16_t host);

#endif
