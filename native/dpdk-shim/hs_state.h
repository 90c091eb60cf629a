/* SPDX-License-Identifier: MIT
 * The shim's runtime state, shared by its stages. One instance per process
 * (EAL allows one initialisation per process).
 */
#ifndef HS_STATE_H
#define HS_STATE_H

#include <stdint.h>
#include <rte_mbuf.h>
#include <rte_ring.h>
#include <rte_hash.h>
#include <rte_rcu_qsbr.h>
#include <rte_cycles.h>

#include "handoff_shim.h"
#include "hs_counters.h"
#include "hs_encap.h"
#include "hs_cookie.h"
#include "hs_parse.h"
#include "hs_flowtab.h"
#include <rte_hash_crc.h>

#define HS_BURST 32
#define HS_PREFETCH_AHEAD 3
#define HS_HOLD_NONE UINT32_MAX
#define HS_HOLD_BLOOM 1024
/* rte_hash and the flat table hash keys alike (the outer UDP source port comes from it). */
#define HS_MAP_HASH_INIT 0x5eed

/* rte_hash_crc over the key, as rte_hash computes it (8-byte words in
 * order), reading the key through memcpy: rte_hash_crc's uint64_t loads of
 * a key just written through its uint32_t/uint16_t fields may be moved
 * before those stores (strict aliasing), which gave wrong hashes at -O3. */
static inline uint32_t hs_ft_hash(const struct hs_flow_key *k, uint32_t init)
{
	uint64_t w[2];
	memcpy(w, k, sizeof(w));
	return rte_hash_crc_8byte(w[1], rte_hash_crc_8byte(w[0], init));
}
/* Segments a frozen accepted connection keeps while the control thread decides. */
#define HS_CONN_HOLD 8



/* A mapping's value. Control thread writes all but hold_ref, packets and
 * bytes, which belong to the worker that sees the flow. The fast path reads
 * none of it (the flat table's slot has what it needs): a packet reaches
 * its entry only when its flow is held, closing or reopened, when the
 * packet is a SYN, FIN or RST, or when the key is in the overflow. */
struct hs_entry {
	uint32_t flow_id;
	uint16_t host_id;
	uint16_t sport;    /* outer UDP source port, network order */
	uint32_t gen;      /* distinguishes reuses of this entry */
	uint32_t hold_ref; /* (worker << 24) | bucket, or HS_HOLD_NONE */
	uint32_t slot;     /* in the flat table, or HS_FT_NONE (overflow: rte_hash only) */
	uint8_t state;     /* enum hs_flow_state, atomic */
	uint8_t pad[3];
	uint64_t packets;  /* overflow keys' counts, and a flat slot's folded counts (atomic adds) */
	uint64_t bytes;
} __rte_aligned(64);

/* May the fast path forward a packet (not SYN, FIN or RST) in this state?
 * CLOSING forwards like ACTIVE; only a SYN can change that, and a SYN never
 * takes the fast path. */
static inline int hs_state_fast(uint8_t s) { return s == HS_STATE_ACTIVE || s == HS_STATE_CLOSING; }

/* RELEASE/FLUSH act on a mapping's held packets; the others on an accepted
 * connection (hs_accept_command). */
enum hs_cmd_op {
	HS_CMD_RELEASE = 1, HS_CMD_FLUSH = 2,
	HS_CMD_FREEZE = 3, HS_CMD_RESET = 4, HS_CMD_HANDOFF = 5, HS_CMD_RESUME = 6,
};

struct hs_cmd {
	uint32_t op;
	uint32_t idx;
	uint32_t gen;
	uint32_t pad;
};

/* Packets held for one PENDING flow. */
struct hs_hold {
	uint32_t idx;
	uint32_t gen;
	uint16_t n;
	uint16_t fin_rst;   /* a held packet carried FIN or RST: CLOSING once released */
	uint32_t next_free;
	struct rte_mbuf *pkts[HS_MAX_HOLD_PER_FLOW];
};

/* An accepted connection awaiting classification. Owned by one worker. */
struct hs_conn {
	struct hs_flow_key key;
	uint32_t iss, irs, rcv_nxt;
	uint32_t snd_wnd;       /* client's window, bytes */
	uint32_t ts_recent;
	uint32_t bytes;         /* payload taken so far */
	uint32_t gen;
	uint16_t mss;
	uint16_t vlan_tci;
	uint16_t port;
	uint8_t snd_wscale, rcv_wscale;
	uint8_t sack_ok, ts_ok, fin, used;
	uint8_t peer_mac[6];
	/* Set when an event carried new bytes or the FIN: the event is then an
	 * exact snapshot, because later segments are held here (not ACKed) until
	 * the control thread hands the connection off or resumes it. */
	uint8_t frozen;
	uint8_t n_held;
	uint8_t announced;      /* an event told the control thread of it (it carried HS_EV_ACCEPTED) */
	uint32_t created_ms;    /* hs_ts_now() at accept (wraps: compared by difference) */
	struct rte_mbuf *held[HS_CONN_HOLD];
};

struct hs_accept {
	struct rte_hash *h;
	struct hs_conn *conns;
	uint32_t cap;
	uint32_t *free_idx;
	uint32_t n_free;
	uint32_t n_live;        /* mappings inserted and not deleted (rte_hash_count also counts the RCU defer queue) */
	uint32_t gen;
	uint32_t scan;          /* timeout scan cursor */
	uint64_t next_scan_tsc;
	/* Connections not yet announced, in accept order (so oldest first): slot
	 * and generation, a ring of cap entries. Entries of connections gone or
	 * announced since are skipped when they reach the head. */
	uint32_t *due_idx, *due_gen;
	uint32_t due_head, due_n;
	uint64_t next_due_tsc;
};

struct hs_worker {
	uint16_t idx;
	unsigned int lcore;
	struct rte_ring *cmd;      /* control thread -> this worker */
	struct hs_stats *stats;
	struct hs_hold *holds;
	uint32_t n_holds;
	uint32_t hold_free;        /* free list head */
	uint32_t held;             /* packets held now */
	uint32_t held_max;
	struct hs_accept acc;
	uint64_t rng;               /* fault injection random state */
	struct rte_mbuf *reorder_held;
	uint32_t stray_tokens;     /* HS_EXC_STRAY token bucket (one writer: this worker) */
	uint64_t stray_refill_tsc;
	uint32_t arp_tokens;       /* HS_EXC_ARP token bucket */
	uint64_t arp_refill_tsc;
	/* Hold buckets of this worker by entry index (idx % HS_HOLD_BLOOM): a
	 * flow whose counter is 0 has nothing held here, so its packets may take
	 * the fast path; a collision only sends a packet the slow way. */
	uint16_t hold_bloom[HS_HOLD_BLOOM];
	struct rte_mbuf *txb[HS_MAX_PORTS][HS_BURST];
	uint16_t txn[HS_MAX_PORTS];
	/* Idle sleep that the control thread can cut short (hs_worker_kick):
	 * work it queues (a blob, a command) goes out at once, not after the nap. */
	int wake_fd;               /* eventfd */
	uint32_t sleeping __rte_cache_aligned; /* atomic: 1 while in ppoll */
} __rte_cache_aligned;

struct hs_port {
	uint16_t port_id;
	uint16_t mtu;
	uint32_t ip;               /* network order */
	uint8_t mac[6];
	uint8_t is_ring;
	uint8_t started;
	struct rte_ring *ring_rx[HS_MAX_WORKERS];
	struct rte_ring *ring_tx[HS_MAX_WORKERS];
	struct rte_ring *ctl_tx;   /* control thread -> worker 0 */
	struct rte_ring *reinject; /* control thread -> worker 0: frames for the data path again */
};

struct hs_vip {
	uint32_t ip;     /* network order */
	uint16_t port;   /* network order */
	uint8_t proto;
};

struct hs_shim {
	int running;
	volatile int stop;
	struct hs_config cfg;
	struct rte_mempool *pool;
	uint32_t n_ports;
	struct hs_port ports[HS_MAX_PORTS];
	uint32_t n_vips;
	struct hs_vip vips[HS_MAX_VIPS];
	uint32_t hold_per_flow;
	uint32_t idle_spins;

	struct rte_hash *map;   /* every mapping: the control plane's index, and the workers' for the overflow */
	struct hs_flowtab ft;   /* the workers' index: most mappings, one cache line per hit */
	uint32_t n_overflow;    /* mappings in rte_hash only (atomic: workers skip rte_hash while 0) */
	struct rte_rcu_qsbr *rcu;
	struct hs_entry *entries;
	uint32_t n_entries;
	uint32_t *free_idx;
	uint32_t n_free;
	uint32_t n_live;        /* mappings inserted and not deleted (rte_hash_count also counts the RCU defer queue) */
	uint32_t n_pending;     /* of which PENDING: only the control thread makes or ends that state (telemetry) */
	uint32_t gen;

	struct hs_encap_tmpl *hosts[HS_MAX_HOSTS];
	struct hs_host_conf host_conf[HS_MAX_HOSTS]; /* as last set, for telemetry: templates may be freed under a reader */
	struct rte_ring *exc;
	int exc_pipe[2];        /* pipe: a byte wakes a parked waiter (hs_exc_wait, or Node's event loop on a dup of [0]) */
	volatile uint32_t exc_waiting;

	struct hs_fault fault;
	struct hs_cookie_secrets cookie;
	uint64_t tsc_per_ms;
	uint64_t clock_override_ms; /* tests: a fixed timestamp clock */
	int64_t wall_offset_ms;     /* CLOCK_REALTIME minus the TSC clock at start: cookie ticks agree across machines */

	uint32_t n_workers;
	struct hs_worker *workers;
	struct hs_stats *stats; /* n_workers + 1 rows; the last is the control thread's */
};

extern struct hs_shim hs;

static inline struct hs_stats *hs_ctl_stats(void) { return &hs.stats[hs.n_workers]; }

/* hs_mapping.c */
int hs_mapping_setup(void);
void hs_mapping_teardown(void);
void hs_hold_pool_free(struct hs_worker *w);

/* Wall-clock milliseconds (the TSC clock plus the offset taken at start):
 * the SYN cookie tick, which every balancer of a cluster must agree on. */
static inline uint64_t hs_wall_ms(void)
{
	if (unlikely(hs.clock_override_ms))
		return hs.clock_override_ms;
	return (uint64_t)((int64_t)(rte_get_tsc_cycles() / hs.tsc_per_ms) + hs.wall_offset_ms);
}

/* hs_worker.c */
int hs_worker_main(void *arg);
/* Control thread: after queueing work for @p w, wake it if it sleeps (a
 * syscall only then; counted as worker_wakeups). */
void hs_worker_kick(struct hs_worker *w);
void hs_tx(struct hs_worker *w, uint16_t port, struct rte_mbuf *m);
void hs_drop(struct hs_worker *w, struct rte_mbuf *m, int reason);
void hs_exception(struct hs_worker *w, struct rte_mbuf *m, uint16_t port, uint16_t reason);
/* A VIP packet whose flow has mapping @p e (the fast path's per-packet step). */
void hs_worker_mapped(struct hs_worker *w, uint16_t in, struct hs_entry *e, struct rte_mbuf *m, struct hs_parsed *p);

/* hs_fault.c: returns how many of *m (0, 1 or 2 with a duplicate in out2) go on. */
int hs_fault_apply(struct hs_worker *w, struct rte_mbuf **m, struct rte_mbuf **out2);

/* hs_accept.c */
int hs_accept_setup(struct hs_worker *w, uint32_t cap);
void hs_accept_teardown(struct hs_worker *w);
void hs_accept_segment(struct hs_worker *w, uint16_t port, struct rte_mbuf *m, const struct hs_parsed *p);
void hs_accept_command(struct hs_worker *w, const struct hs_cmd *c);
void hs_accept_scan(struct hs_worker *w, uint64_t now_tsc);

static inline uint32_t hs_ts_now(void)
{
	if (unlikely(hs.clock_override_ms))
		return (uint32_t)hs.clock_override_ms;
	return (uint32_t)(rte_get_tsc_cycles() / hs.tsc_per_ms);
}

#endif
