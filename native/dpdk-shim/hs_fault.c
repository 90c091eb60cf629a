/* SPDX-License-Identifier: MIT
 * Fault injection on the blob path (design.md §6: this kernel has no netem).
 * Only frames the control thread sends and frames addressed to the balancer
 * itself pass here; client traffic never does.
 */
#include <errno.h>
#include <string.h>
#include <rte_mbuf.h>

#include "hs_common.h"
#include "hs_state.h"

static inline uint32_t next_rand(struct hs_worker *w)
{
	/* xorshift64*: cheap, and reproducible from the configured seed. */
	w->rng ^= w->rng >> 12;
	w->rng ^= w->rng << 25;
	w->rng ^= w->rng >> 27;
	return (uint32_t)((w->rng * 0x2545F4914F6CDD1DULL) >> 32);
}

static inline int hit(struct hs_worker *w, uint16_t pm) { return pm && next_rand(w) % 1000 < pm; }

int hs_fault_apply(struct hs_worker *w, struct rte_mbuf **m, struct rte_mbuf **out2)
{
	const struct hs_fault *f = &hs.fault;
	*out2 = NULL;
	if (likely(!(f->drop_pm | f->corrupt_pm | f->duplicate_pm | f->reorder_pm)))
		return 1;
	if (hit(w, f->drop_pm)) {
		hs_drop(w, *m, HS_D_FAULT_DROPPED);
		*m = NULL;
		return 0;
	}
	if (hit(w, f->corrupt_pm) && (*m)->data_len > 14) {
		uint8_t *d = rte_pktmbuf_mtod(*m, uint8_t *);
		uint32_t bit = 14 * 8 + next_rand(w) % (((*m)->data_len - 14u) * 8);
		d[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		w->stats->c[HS_C_FAULT_CORRUPTED]++;
	}
	int n = 1;
	if (hit(w, f->duplicate_pm)) {
		struct rte_mbuf *c = rte_pktmbuf_copy(*m, hs.pool, 0, UINT32_MAX);
		if (c) {
			*out2 = c;
			n = 2;
			w->stats->c[HS_C_FAULT_DUPLICATED]++;
		}
	}
	if (hit(w, f->reorder_pm) && !w->reorder_held && n == 1) {
		w->reorder_held = *m; /* goes out after the next frame */
		*m = NULL;
		w->stats->c[HS_C_FAULT_REORDERED]++;
		return 0;
	}
	if (w->reorder_held) {
		/* The held frame follows this one. */
		if (n == 1) {
			*out2 = w->reorder_held;
			n = 2;
		} else {
			rte_pktmbuf_free(*out2);
			*out2 = w->reorder_held;
		}
		w->reorder_held = NULL;
	}
	return n;
}

int hs_fault_set(const struct hs_fault *f)
{
	if (!hs.running)
		return hs_fail(-ENOTCONN, "shim not running");
	if (!f || f->drop_pm > 1000 || f->corrupt_pm > 1000 || f->duplicate_pm > 1000 || f->reorder_pm > 1000)
		return hs_fail(-EINVAL, "fault rates are parts per thousand (0..1000)");
	hs.fault.drop_pm = f->drop_pm;
	hs.fault.corrupt_pm = f->corrupt_pm;
	hs.fault.duplicate_pm = f->duplicate_pm;
	hs.fault.reorder_pm = f->reorder_pm;
	if (f->seed)
		for (uint32_t i = 0; i < hs.n_workers; i++)
			hs.workers[i].rng = (uint64_t)f->seed * 0x9E3779B97F4A7C15ULL + i + 1;
	return 0;
}
