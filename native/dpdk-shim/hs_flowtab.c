/* SPDX-License-Identifier: MIT
 * Stage 2c: the flat flow table's writer side (hs_flowtab.h has the readers).
 */
#include <errno.h>

#include "hs_flowtab.h"

size_t hs_ft_memsize(uint32_t buckets)
{
	return (size_t)buckets * sizeof(struct hs_ft_bucket);
}

uint32_t hs_ft_buckets_for(uint32_t capacity)
{
	uint64_t want = (uint64_t)capacity * 2;
	uint32_t n = 2;
	while (n < want && n < (1u << 24))
		n <<= 1;
	return n;
}

int hs_ft_init(struct hs_flowtab *t, void *mem, uint32_t buckets)
{
	if (buckets < 2 || (buckets & (buckets - 1)))
		return -EINVAL;
	t->b = mem;
	t->mask = buckets - 1;
	t->used = 0;
	return 0;
}

static uint32_t take(struct hs_flowtab *t, uint32_t bucket, const struct hs_flow_key *k)
{
	struct hs_ft_bucket *b = &t->b[bucket];
	for (uint32_t w = 0; w < HS_FT_WAYS; w++) {
		if (__atomic_load_n(&b->val[w], __ATOMIC_RELAXED) != 0)
			continue;
		/* Taken but not valid: no reader matches it, no insert reuses it. */
		__atomic_store_n(&b->val[w], HS_FT_TOMB, __ATOMIC_RELAXED);
		b->key[w] = *k;
		__atomic_store_n(&b->cnt[w], 0, __ATOMIC_RELAXED);
		t->used++;
		return bucket * HS_FT_WAYS + w;
	}
	return HS_FT_NONE;
}

uint32_t hs_ft_reserve(struct hs_flowtab *t, const struct hs_flow_key *k, uint32_t sig)
{
	uint32_t s = take(t, hs_ft_bucket1(t, sig), k);
	return s != HS_FT_NONE ? s : take(t, hs_ft_bucket2(t, sig), k);
}

void hs_ft_publish(struct hs_flowtab *t, uint32_t slot, uint64_t val)
{
	/* The release: a reader that sees the value sees the key. */
	__atomic_store_n(hs_ft_val_ptr(t, slot), val, __ATOMIC_RELEASE);
}

void hs_ft_remove(struct hs_flowtab *t, uint32_t slot)
{
	__atomic_store_n(hs_ft_val_ptr(t, slot), HS_FT_TOMB, __ATOMIC_RELEASE);
}

void hs_ft_reclaim(struct hs_flowtab *t, uint32_t slot)
{
	__atomic_store_n(hs_ft_val_ptr(t, slot), 0, __ATOMIC_RELEASE);
	t->used--;
}

void hs_ft_val_derive(struct hs_flowtab *t, uint32_t slot, const uint8_t *state, int (*fast_of)(uint8_t))
{
	uint64_t *p = hs_ft_val_ptr(t, slot);
	uint64_t v = __atomic_load_n(p, __ATOMIC_SEQ_CST);
	for (;;) {
		if (!(v & HS_FT_VALID))
			return;
		/* The state is read after the value: the last CAS to succeed read
		 * the last state written, so FAST ends up matching it. */
		uint64_t nv = fast_of(__atomic_load_n(state, __ATOMIC_SEQ_CST)) ? v | HS_FT_FAST : v & ~HS_FT_FAST;
		if (nv == v || __atomic_compare_exchange_n(p, &v, nv, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
			return;
	}
}

void hs_ft_val_set_host(struct hs_flowtab *t, uint32_t slot, uint16_t host)
{
	uint64_t *p = hs_ft_val_ptr(t, slot);
	uint64_t v = __atomic_load_n(p, __ATOMIC_SEQ_CST);
	for (;;) {
		if (!(v & HS_FT_VALID))
			return;
		uint64_t nv = (v & ~(0xfffull << 24)) | (uint64_t)(host & 0xfff) << 24;
		if (__atomic_compare_exchange_n(p, &v, nv, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
			return;
	}
}
