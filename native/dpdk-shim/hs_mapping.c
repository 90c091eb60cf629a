/* SPDX-License-Identifier: MIT
 * Stage 2b: the mapping table (design.md §1 C8) and the host table.
 *
 * rte_hash in lock-free mode: the control thread is the only writer, the
 * workers read with bulk lookups. A deleted entry's slot is reclaimed only
 * after every worker has passed a quiescent state (RCU QSBR), so a worker may
 * keep using an entry it looked up for the rest of its burst.
 *
 * Every mapping is in rte_hash (the control plane finds entries there); the
 * workers look up the flat table first (hs_flowtab.h), where nearly every
 * mapping also is, with the fields the fast path needs in its slot. A
 * mapping's flat slot is freed with its entry, after the same grace period.
 */
#include <errno.h>
#include <string.h>
#include <netinet/in.h>
#include <rte_byteorder.h>
#include <rte_errno.h>
#include <rte_hash_crc.h>
#include <rte_malloc.h>

#include "hs_common.h"
#include "hs_state.h"
#include "hs_telemetry.h"

#define HS_RECLAIM_SLACK 4096

static void entry_reclaimed(void *p, void *key_data)
{
	struct hs_entry *e = key_data;
	(void)p;
	if (e->slot != HS_FT_NONE)
		hs_ft_reclaim(&hs.ft, e->slot);
	e->slot = HS_FT_NONE;
	hs.free_idx[hs.n_free++] = (uint32_t)(e - hs.entries);
}

int hs_mapping_setup(void)
{
	uint32_t cap = hs.cfg.mapping_capacity;
	char name[RTE_HASH_NAMESIZE];
	if ((uint64_t)cap + HS_RECLAIM_SLACK > HS_FT_MAX_IDX)
		return hs_fail(-EINVAL, "mapping_capacity must be at most %u, got %u", HS_FT_MAX_IDX - HS_RECLAIM_SLACK, cap);
	snprintf(name, sizeof(name), "hs_map");
	struct rte_hash_parameters hp = {
		.name = name,
		.entries = cap,
		.key_len = sizeof(struct hs_flow_key),
		.hash_func = rte_hash_crc,
		.hash_func_init_val = HS_MAP_HASH_INIT,
		.socket_id = (int)rte_socket_id(),
		/* EXT_TABLE: the full capacity is usable whatever the collisions. */
		.extra_flag = RTE_HASH_EXTRA_FLAGS_RW_CONCURRENCY_LF | RTE_HASH_EXTRA_FLAGS_EXT_TABLE,
	};
	hs.map = rte_hash_create(&hp);
	if (!hs.map)
		return hs_fail(-ENOMEM, "mapping table of %u entries: %s", cap, rte_strerror(rte_errno));

	size_t sz = rte_rcu_qsbr_get_memsize(hs.n_workers);
	hs.rcu = rte_zmalloc("hs_rcu", sz, RTE_CACHE_LINE_SIZE);
	if (!hs.rcu || rte_rcu_qsbr_init(hs.rcu, hs.n_workers) != 0)
		return hs_fail(-ENOMEM, "RCU state for %u workers", hs.n_workers);
	struct rte_hash_rcu_config rc = {
		.v = hs.rcu,
		.mode = RTE_HASH_QSBR_MODE_DQ,
		.dq_size = cap,
		.trigger_reclaim_limit = 0,
		.max_reclaim_size = 64,
		.free_key_data_func = entry_reclaimed,
	};
	if (rte_hash_rcu_qsbr_add(hs.map, &rc) != 0)
		return hs_fail(-ENOMEM, "attaching RCU to the mapping table: %s", rte_strerror(rte_errno));

	/* Slack for entries deleted but not yet reclaimed: the hash's own
	 * capacity stays the limit callers see. */
	uint32_t n = cap + HS_RECLAIM_SLACK;
	hs.n_entries = n;
	hs.entries = rte_zmalloc("hs_entries", sizeof(struct hs_entry) * n, RTE_CACHE_LINE_SIZE);
	hs.free_idx = rte_malloc("hs_free", sizeof(uint32_t) * n, 0);
	if (!hs.entries || !hs.free_idx)
		return hs_fail(-ENOMEM, "mapping entries (%u)", n);
	uint32_t buckets = hs_ft_buckets_for(cap);
	void *ft = rte_zmalloc("hs_flowtab", hs_ft_memsize(buckets), RTE_CACHE_LINE_SIZE);
	if (!ft)
		return hs_fail(-ENOMEM, "flat flow table (%u buckets, %zu MB)", buckets, hs_ft_memsize(buckets) >> 20);
	hs_ft_init(&hs.ft, ft, buckets);
	hs.n_overflow = 0;
	for (uint32_t i = 0; i < n; i++) {
		hs.entries[i].hold_ref = HS_HOLD_NONE;
		hs.entries[i].slot = HS_FT_NONE;
		hs.free_idx[i] = n - 1 - i;
	}
	hs.n_free = n;
	return 0;
}

void hs_mapping_teardown(void)
{
	if (hs.map)
		rte_hash_free(hs.map);
	hs.map = NULL;
	rte_free(hs.rcu);
	rte_free(hs.entries);
	rte_free(hs.free_idx);
	rte_free(hs.ft.b);
	hs.ft.b = NULL;
	hs.rcu = NULL;
	hs.entries = NULL;
	hs.free_idx = NULL;
	for (uint32_t i = 0; i < HS_MAX_HOSTS; i++) {
		rte_free(hs.hosts[i]);
		hs.hosts[i] = NULL;
	}
}

static void key_from(struct hs_flow_key *k, const struct hs_mapping *m)
{
	memset(k, 0, sizeof(*k));
	k->client_ip = rte_cpu_to_be_32(m->client_ip);
	k->vip = rte_cpu_to_be_32(m->vip);
	k->client_port = rte_cpu_to_be_16(m->client_port);
	k->vip_port = rte_cpu_to_be_16(m->vip_port);
	k->proto = m->proto;
}

static int valid_state(uint32_t s)
{
	return s == HS_STATE_PENDING || s == HS_STATE_ACTIVE || s == HS_STATE_CLOSING;
}

/* Commands are posted only when every worker has room, so none is lost. */
static int post_all(uint32_t op, uint32_t idx, uint32_t gen)
{
	for (uint32_t w = 0; w < hs.n_workers; w++)
		if (rte_ring_free_count(hs.workers[w].cmd) == 0)
			return hs_fail(-EAGAIN, "worker %u command ring is full", w);
	struct hs_cmd c = { .op = op, .idx = idx, .gen = gen };
	for (uint32_t w = 0; w < hs.n_workers; w++) {
		rte_ring_sp_enqueue_elem(hs.workers[w].cmd, &c, sizeof(c));
		hs_worker_kick(&hs.workers[w]);
	}
	return 0;
}

int hs_mapping_insert(const struct hs_mapping *m)
{
	struct hs_flow_key k;

	if (!hs.running)
		return hs_fail(-ENOTCONN, "shim not running");
	if (!m)
		return hs_fail(-EINVAL, "mapping: NULL");
	if (m->flow_id >= (1u << 24))
		return hs_fail(-EINVAL, "flow_id %u does not fit a 24-bit VNI", m->flow_id);
	if (!valid_state(m->state))
		return hs_fail(-EINVAL, "state %u is not PENDING, ACTIVE or CLOSING", m->state);
	if (m->host_id >= HS_MAX_HOSTS || !hs.hosts[m->host_id])
		return hs_fail(-EINVAL, "host %u is not defined", m->host_id);
	if (m->proto != IPPROTO_TCP && m->proto != IPPROTO_UDP)
		return hs_fail(-EINVAL, "protocol %u is neither TCP nor UDP", m->proto);
	key_from(&k, m);
	hash_sig_t sig = rte_hash_hash(hs.map, &k);
	if (rte_hash_lookup_with_hash(hs.map, &k, sig) >= 0)
		return hs_fail(-EEXIST, "mapping exists");
	if (hs.n_free == 0)
		return hs_fail(-ENOSPC, "mapping table full (%u)", hs.cfg.mapping_capacity);

	uint32_t idx = hs.free_idx[--hs.n_free];
	struct hs_entry *e = &hs.entries[idx];
	e->flow_id = m->flow_id;
	e->host_id = m->host_id;
	e->sport = hs_encap_sport(sig);
	e->gen = ++hs.gen;
	e->packets = 0;
	e->bytes = 0;
	e->slot = HS_FT_NONE;
	__atomic_store_n(&e->state, m->state, __ATOMIC_RELAXED);
	/* Room in the flat table, reserved (not yet visible) so the entry knows
	 * its slot before any worker can find it there. None: an overflow key,
	 * counted first, so a worker that misses the flat table looks in rte_hash. */
	uint32_t slot = hs_ft_reserve(&hs.ft, &k, sig);
	if (slot == HS_FT_NONE)
		__atomic_store_n(&hs.n_overflow, hs.n_overflow + 1, __ATOMIC_SEQ_CST);
	/* Publishing the key is a release: a worker that finds it sees the fields. */
	int rc = rte_hash_add_key_with_hash_data(hs.map, &k, sig, e);
	if (rc < 0) {
		if (slot == HS_FT_NONE)
			__atomic_store_n(&hs.n_overflow, hs.n_overflow - 1, __ATOMIC_SEQ_CST);
		else
			hs_ft_reclaim(&hs.ft, slot);
		hs.free_idx[hs.n_free++] = idx;
		return hs_fail(rc == -ENOSPC ? -ENOSPC : -EINVAL, "mapping insert: %s", rte_strerror(-rc));
	}
	if (slot != HS_FT_NONE) {
		e->slot = slot;
		hs_ft_publish(&hs.ft, slot, hs_ft_val(idx, e->host_id, e->flow_id, hs_state_fast(m->state)));
	}
	__atomic_store_n(&hs.n_live, hs.n_live + 1, __ATOMIC_RELAXED); /* one writer; telemetry reads */
	if (m->state == HS_STATE_PENDING)
		__atomic_store_n(&hs.n_pending, hs.n_pending + 1, __ATOMIC_RELAXED); /* one writer; telemetry reads */
	return 0;
}

int hs_mapping_insert_bulk(const struct hs_mapping *m, uint32_t n)
{
	uint32_t i;
	for (i = 0; i < n; i++) {
		int rc = hs_mapping_insert(&m[i]);
		if (rc < 0)
			return i ? (int)i : rc;
	}
	return (int)i;
}

static int find(const struct hs_mapping *key, struct hs_entry **e)
{
	struct hs_flow_key k;
	if (!hs.running)
		return hs_fail(-ENOTCONN, "shim not running");
	if (!key)
		return hs_fail(-EINVAL, "mapping key: NULL");
	key_from(&k, key);
	void *data;
	if (rte_hash_lookup_data(hs.map, &k, &data) < 0)
		return hs_fail(-ENOENT, "no such mapping");
	*e = data;
	return 0;
}

int hs_mapping_set_state(const struct hs_mapping *key, uint32_t state)
{
	struct hs_entry *e = NULL;
	int rc = find(key, &e);
	if (rc)
		return rc;
	if (!valid_state(state))
		return hs_fail(-EINVAL, "state %u is not PENDING, ACTIVE or CLOSING", state);
	uint8_t cur = __atomic_load_n(&e->state, __ATOMIC_ACQUIRE);
	int releasing = cur == HS_STATE_PENDING && state != HS_STATE_PENDING;
	if (releasing) {
		/* Room first, so the state never changes without its release. */
		for (uint32_t w = 0; w < hs.n_workers; w++)
			if (rte_ring_free_count(hs.workers[w].cmd) == 0)
				return hs_fail(-EAGAIN, "worker %u command ring is full", w);
	}
	__atomic_store_n(&e->state, (uint8_t)state, __ATOMIC_SEQ_CST);
	if (e->slot != HS_FT_NONE)
		hs_ft_val_derive(&hs.ft, e->slot, &e->state, hs_state_fast);
	if (cur != HS_STATE_PENDING && state == HS_STATE_PENDING)
		__atomic_store_n(&hs.n_pending, hs.n_pending + 1, __ATOMIC_RELAXED); /* one writer; telemetry reads */
	if (releasing) {
		__atomic_store_n(&hs.n_pending, hs.n_pending - 1, __ATOMIC_RELAXED);
		return post_all(HS_CMD_RELEASE, (uint32_t)(e - hs.entries), e->gen);
	}
	return 0;
}

int hs_mapping_delete(const struct hs_mapping *key)
{
	struct hs_entry *e = NULL;
	struct hs_flow_key k;
	int rc = find(key, &e);
	if (rc)
		return rc;
	rc = post_all(HS_CMD_FLUSH, (uint32_t)(e - hs.entries), e->gen);
	if (rc)
		return rc;
	uint8_t was = __atomic_load_n(&e->state, __ATOMIC_RELAXED);
	uint32_t slot = e->slot;
	if (slot != HS_FT_NONE)
		hs_ft_remove(&hs.ft, slot); /* the slot itself is freed with the entry */
	key_from(&k, key);
	rc = rte_hash_del_key(hs.map, &k);
	if (rc < 0)
		return hs_fail(-ENOENT, "no such mapping");
	if (slot == HS_FT_NONE)
		__atomic_store_n(&hs.n_overflow, hs.n_overflow - 1, __ATOMIC_SEQ_CST);
	__atomic_store_n(&hs.n_live, hs.n_live - 1, __ATOMIC_RELAXED);
	if (was == HS_STATE_PENDING)
		__atomic_store_n(&hs.n_pending, hs.n_pending - 1, __ATOMIC_RELAXED);
	return 0;
}

int hs_mapping_lookup(const struct hs_mapping *key, struct hs_mapping *out)
{
	struct hs_entry *e = NULL;
	int rc = find(key, &e);
	if (rc)
		return rc;
	if (!out)
		return hs_fail(-EINVAL, "out: NULL");
	*out = *key;
	out->state = __atomic_load_n(&e->state, __ATOMIC_ACQUIRE);
	out->host_id = e->host_id;
	out->flow_id = e->flow_id;
	out->reserved = 0;
	out->packets = __atomic_load_n(&e->packets, __ATOMIC_RELAXED);
	out->bytes = __atomic_load_n(&e->bytes, __ATOMIC_RELAXED);
	if (e->slot != HS_FT_NONE) {
		uint64_t c = __atomic_load_n(hs_ft_cnt_ptr(&hs.ft, e->slot), __ATOMIC_RELAXED);
		out->packets += hs_ft_cnt_packets(c);
		out->bytes += hs_ft_cnt_bytes(c);
	}
	return 0;
}

int hs_mapping_count(void)
{
	if (!hs.running)
		return hs_fail(-ENOTCONN, "shim not running");
	return (int)hs.n_live;
}

int hs_host_set(uint32_t id, const struct hs_host_conf *h)
{
	if (!hs.running)
		return hs_fail(-ENOTCONN, "shim not running");
	if (!h || id >= HS_MAX_HOSTS)
		return hs_fail(-EINVAL, "host id %u out of range (max %u)", id, HS_MAX_HOSTS - 1);
	if (h->port >= hs.n_ports)
		return hs_fail(-EINVAL, "host %u: port %u out of range (%u ports)", id, h->port, hs.n_ports);
	if (h->ip == 0)
		return hs_fail(-EINVAL, "host %u: address 0.0.0.0", id);
	struct hs_encap_tmpl *t = rte_zmalloc("hs_host", sizeof(*t), RTE_CACHE_LINE_SIZE);
	if (!t)
		return hs_fail(-ENOMEM, "host %u template", id);
	const struct hs_port *p = &hs.ports[h->port];
	hs_encap_tmpl_init(t, p->mac, p->ip, h->nexthop_mac, rte_cpu_to_be_32(h->ip), h->inner_mac,
			   h->port, p->mtu);
	hs_telemetry_host_conf_set(id, h); /* under the telemetry lock: its thread reads these */
	struct hs_encap_tmpl *old = __atomic_exchange_n(&hs.hosts[id], t, __ATOMIC_RELEASE);
	if (old) {
		/* A worker may still be encapsulating with the old template. */
		rte_rcu_qsbr_synchronize(hs.rcu, RTE_QSBR_THRID_INVALID);
		rte_free(old);
	}
	return 0;
}

int hs_mapping_set_host(const struct hs_mapping *key, uint32_t host_id)
{
	struct hs_entry *e = NULL;
	int rc = find(key, &e);
	if (rc)
		return rc;
	if (host_id >= HS_MAX_HOSTS || !hs.hosts[host_id])
		return hs_fail(-EINVAL, "host %u is not defined", host_id);
	__atomic_store_n(&e->host_id, (uint16_t)host_id, __ATOMIC_RELEASE);
	if (e->slot != HS_FT_NONE)
		hs_ft_val_set_host(&hs.ft, e->slot, (uint16_t)host_id);
	return 0;
}
