/* SPDX-License-Identifier: MIT
 * Stage 4: the worker lcore loop. Receive bursts, classify each frame, answer
 * ARP, look VIP flows up in bulk, tunnel, hold or pass up, transmit.
 */
#define _GNU_SOURCE /* ppoll */
#include <errno.h>
#include <poll.h>
#include <time.h>
#include <netinet/in.h>
#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_hash_crc.h>
#include <rte_prefetch.h>

#include "hs_arp.h"
#include "hs_common.h"
#include "hs_parse.h"
#include "hs_state.h"
#include <unistd.h>

#define TCP_FIN 0x01
#define TCP_RST 0x04
#define TCP_SYN 0x02
#define TCP_ACK 0x10

static inline void count(struct hs_worker *w, int c) { w->stats->c[c]++; }

void hs_drop(struct hs_worker *w, struct rte_mbuf *m, int reason)
{
	w->stats->c[reason]++;
	rte_pktmbuf_free(m);
}

#define drop hs_drop

static void tx_flush(struct hs_worker *w, uint16_t port)
{
	uint16_t n = w->txn[port];
	if (!n)
		return;
	struct rte_mbuf **b = w->txb[port];
	uint64_t bytes = 0;
	for (uint16_t i = 0; i < n; i++)
		bytes += b[i]->pkt_len;
	uint16_t sent = rte_eth_tx_burst(hs.ports[port].port_id, w->idx, b, n);
	for (uint16_t i = sent; i < n; i++) {
		bytes -= b[i]->pkt_len;
		drop(w, b[i], HS_D_TX_FULL);
	}
	w->stats->c[HS_C_TX_PACKETS] += sent;
	w->stats->c[HS_C_TX_BYTES] += bytes;
	w->txn[port] = 0;
}

void hs_tx(struct hs_worker *w, uint16_t port, struct rte_mbuf *m)
{
	w->txb[port][w->txn[port]++] = m;
	if (unlikely(w->txn[port] == HS_BURST))
		tx_flush(w, port);
}

/* The frame's IPv4 packet length and L2 header length travel with a held
 * mbuf so release needs no second parse. */
static inline void stash(struct rte_mbuf *m, uint16_t l2, uint16_t ip_len)
{
	m->hash.usr = (uint32_t)l2 << 16 | ip_len;
}

/* A flat slot's counts near their limit: into the entry (rare, atomic: the
 * control thread reads it, another worker may fold the same slot). */
static void __rte_noinline fold_counts(uint32_t slot, struct hs_entry *e)
{
	uint64_t c = __atomic_exchange_n(hs_ft_cnt_ptr(&hs.ft, slot), 0, __ATOMIC_RELAXED);
	__atomic_fetch_add(&e->packets, hs_ft_cnt_packets(c), __ATOMIC_RELAXED);
	__atomic_fetch_add(&e->bytes, hs_ft_cnt_bytes(c), __ATOMIC_RELAXED);
}

/* Encapsulate @p m for host @p host_id under VNI @p flow_id, count it on its
 * flow (in its flat slot, or in @p e for an overflow key) and queue it.
 * @p e is touched only for an overflow key or a fold. */
static inline void tunnel(struct hs_worker *w, uint16_t host_id, uint16_t sport, uint32_t flow_id, uint32_t slot,
			  struct hs_entry *e, struct rte_mbuf *m)
{
	uint16_t l2 = (uint16_t)(m->hash.usr >> 16);
	uint16_t ip_len = (uint16_t)m->hash.usr;
	const struct hs_encap_tmpl *t = __atomic_load_n(&hs.hosts[host_id], __ATOMIC_ACQUIRE);

	if (unlikely(!t))
		return drop(w, m, HS_D_HOST_INVALID);
	if (unlikely(ip_len + HS_ENCAP_OVERHEAD > t->mtu))
		return drop(w, m, HS_D_ENCAP_TOO_BIG);
	/* Ethernet padding of short frames must not reach the tunnel. */
	if (m->data_len > l2 + ip_len)
		rte_pktmbuf_trim(m, (uint16_t)(m->data_len - l2 - ip_len));
	uint8_t *hdr = (uint8_t *)rte_pktmbuf_prepend(m, (uint16_t)(HS_ENCAP_HDR_LEN - l2));
	if (unlikely(!hdr))
		return drop(w, m, HS_D_ENCAP_TOO_BIG);
	hs_encap_write(hdr, t, ip_len, sport, flow_id);
	m->ol_flags = 0;
	if (likely(slot != HS_FT_NONE)) {
		if (unlikely(hs_ft_count(hs_ft_cnt_ptr(&hs.ft, slot), ip_len)))
			fold_counts(slot, e);
	} else {
		e->packets++; /* an overflow key: one worker per flow, as RSS sends it */
		e->bytes += ip_len;
	}
	w->stats->c[HS_C_ENCAP_PACKETS]++;
	w->stats->c[HS_C_ENCAP_BYTES] += m->pkt_len;
	hs_tx(w, t->port, m);
}

static void encap_send(struct hs_worker *w, struct hs_entry *e, struct rte_mbuf *m)
{
	tunnel(w, e->host_id, e->sport, e->flow_id, e->slot, e, m);
}

/* FIN or RST from the client: the mapping goes CLOSING (removed after a timeout). */
static void saw_fin_rst(struct hs_worker *w, struct hs_entry *e)
{
	uint8_t active = HS_STATE_ACTIVE;
	if (__atomic_compare_exchange_n(&e->state, &active, HS_STATE_CLOSING, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED))
		count(w, HS_C_FIN_RST);
}

static void hold_free_bucket(struct hs_worker *w, struct hs_entry *e, uint32_t b)
{
	w->holds[b].n = 0;
	w->holds[b].fin_rst = 0;
	w->hold_bloom[w->holds[b].idx % HS_HOLD_BLOOM]--;
	w->holds[b].next_free = w->hold_free;
	w->hold_free = b;
	e->hold_ref = HS_HOLD_NONE;
}

static void hold_flush(struct hs_worker *w, struct hs_entry *e, uint32_t b)
{
	struct hs_hold *h = &w->holds[b];
	for (uint16_t i = 0; i < h->n; i++)
		drop(w, h->pkts[i], HS_D_HELD_FLUSHED);
	w->held -= h->n;
	hold_free_bucket(w, e, b);
}

static void hold_release(struct hs_worker *w, struct hs_entry *e, uint32_t b)
{
	struct hs_hold *h = &w->holds[b];
	w->stats->c[HS_C_RELEASED] += h->n;
	w->held -= h->n;
	for (uint16_t i = 0; i < h->n; i++)
		encap_send(w, e, h->pkts[i]);
	if (h->fin_rst)
		saw_fin_rst(w, e);
	hold_free_bucket(w, e, b);
}

static inline int hold_mine(const struct hs_worker *w, uint32_t ref)
{
	return ref != HS_HOLD_NONE && (ref >> 24) == w->idx;
}

/* Held packets of a previous user of this entry slot are dropped, never
 * sent to the new flow's host. */
static void hold_settle(struct hs_worker *w, struct hs_entry *e)
{
	uint32_t b = e->hold_ref & 0xffffff;
	if (w->holds[b].gen != e->gen || w->holds[b].idx != (uint32_t)(e - hs.entries))
		hold_flush(w, e, b);
	else
		hold_release(w, e, b);
}

static void hold(struct hs_worker *w, struct hs_entry *e, struct rte_mbuf *m, uint8_t tcp_flags)
{
	uint32_t ref = e->hold_ref;
	uint32_t idx = (uint32_t)(e - hs.entries);

	if (ref != HS_HOLD_NONE && !hold_mine(w, ref))
		return drop(w, m, HS_D_HOLD_WRONG_WORKER);
	if (ref != HS_HOLD_NONE && (w->holds[ref & 0xffffff].gen != e->gen)) {
		hold_flush(w, e, ref & 0xffffff);
		ref = HS_HOLD_NONE;
	}
	if (w->held >= w->held_max)
		return drop(w, m, HS_D_HOLD_TOTAL_FULL);
	if (ref == HS_HOLD_NONE) {
		if (w->hold_free == HS_HOLD_NONE)
			return drop(w, m, HS_D_HOLD_TOTAL_FULL);
		uint32_t b = w->hold_free;
		w->hold_free = w->holds[b].next_free;
		w->holds[b].idx = idx;
		w->hold_bloom[idx % HS_HOLD_BLOOM]++;
		w->holds[b].gen = e->gen;
		w->holds[b].n = 0;
		w->holds[b].fin_rst = 0;
		ref = (uint32_t)w->idx << 24 | b;
		e->hold_ref = ref;
	}
	struct hs_hold *h = &w->holds[ref & 0xffffff];
	if (h->n >= hs.hold_per_flow)
		return drop(w, m, HS_D_HOLD_FLOW_FULL);
	h->pkts[h->n++] = m;
	h->fin_rst |= (tcp_flags & (TCP_FIN | TCP_RST)) != 0;
	w->held++;
	count(w, HS_C_HELD);
}

/*
 * A client reuses its port soon after a connection closed (the host closed
 * first, so the client has no TIME_WAIT). Its SYN must start a new handoff,
 * not be tunnelled to the old host, whose kernel would answer with a RST:
 * a pure SYN on a CLOSING mapping marks it REOPENED, and from then on the
 * mapping is treated as absent until the control plane replaces or removes it.
 */
static inline int reopened(struct hs_worker *w, struct hs_entry *e, uint8_t state, uint8_t tcp_flags)
{
	if (state == HS_STATE_REOPENED)
		return 1;
	/* The same test as the accept path's for a connection request. */
	if ((tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST)) != TCP_SYN)
		return 0;
	uint8_t closing = HS_STATE_CLOSING;
	if (__atomic_compare_exchange_n(&e->state, &closing, HS_STATE_REOPENED, 0, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
		count(w, HS_C_REOPENED);
		/* The flow's next packets (the new handshake's ACK) must not take the fast path. */
		uint32_t slot = __atomic_load_n(&e->slot, __ATOMIC_RELAXED);
		if (slot != HS_FT_NONE)
			hs_ft_val_derive(&hs.ft, slot, &e->state, hs_state_fast);
	}
	return 1;
}

void hs_worker_mapped(struct hs_worker *w, uint16_t in, struct hs_entry *e, struct rte_mbuf *m, struct hs_parsed *p)
{
	uint8_t state = __atomic_load_n(&e->state, __ATOMIC_ACQUIRE);
	uint8_t tcp_flags = p->tcp_flags;

	if (unlikely(state == HS_STATE_PENDING))
		return hold(w, e, m, tcp_flags);
	if (unlikely(state >= HS_STATE_CLOSING) && reopened(w, e, state, tcp_flags))
		return hs_accept_segment(w, in, m, p);
	if (unlikely(hold_mine(w, e->hold_ref)))
		hold_settle(w, e);
	if (unlikely(tcp_flags & (TCP_FIN | TCP_RST)))
		saw_fin_rst(w, e);
	encap_send(w, e, m);
}

void hs_exception(struct hs_worker *w, struct rte_mbuf *m, uint16_t port, uint16_t reason)
{
	m->hash.usr = (uint32_t)reason | (uint32_t)port << 8 | (uint32_t)w->idx << 16;
	if (unlikely(rte_ring_mp_enqueue(hs.exc, m) != 0))
		return drop(w, m, HS_D_EXC_RING_FULL);
	if (reason != HS_EXC_CONN)
		count(w, reason == HS_EXC_MISS ? HS_C_EXC_MISS : reason == HS_EXC_STRAY ? HS_C_EXC_STRAY : HS_C_EXC_LOCAL);
	/* A syscall only when the control thread is parked (hs_exc_wait or hs_exc_arm). */
	if (unlikely(__atomic_load_n(&hs.exc_waiting, __ATOMIC_SEQ_CST)) &&
	    __atomic_exchange_n(&hs.exc_waiting, 0, __ATOMIC_SEQ_CST))
		hs_exc_signal();
}

/* The VIP service a packet is for: 1 served, 0 the address is a VIP but not
 * the service, -1 not a VIP at all. */
static inline int vip_match(uint32_t ip, uint8_t proto, uint16_t port)
{
	int is_vip = -1;
	for (uint32_t i = 0; i < hs.n_vips; i++) {
		if (hs.vips[i].ip != ip)
			continue;
		if (hs.vips[i].proto == proto && hs.vips[i].port == port)
			return 1;
		is_vip = 0;
	}
	return is_vip;
}

static inline int arp_is_ours(uint32_t ip, const struct hs_port *p)
{
	if (ip == p->ip)
		return 1;
	for (uint32_t i = 0; i < hs.n_vips; i++)
		if (hs.vips[i].ip == ip)
			return 1;
	return 0;
}

/* Token bucket for HS_EXC_ARP: an ARP flood on the segment costs the control
 * thread at most HS_ARP_RATE frames a second per worker. */
#define HS_ARP_RATE 1000
#define HS_ARP_BURST 64
static int arp_admit(struct hs_worker *w)
{
	uint64_t now = rte_get_tsc_cycles(), hz = rte_get_tsc_hz();
	uint64_t dt = now - w->arp_refill_tsc;
	if (dt > hz)
		dt = hz;
	uint64_t add = dt * HS_ARP_RATE / hz;
	if (add) {
		w->arp_tokens = (uint32_t)RTE_MIN(w->arp_tokens + add, (uint64_t)HS_ARP_BURST);
		w->arp_refill_tsc = now;
	}
	if (!w->arp_tokens)
		return 0;
	w->arp_tokens--;
	return 1;
}

/* What the control thread learns next hops from: replies to our own requests
 * (target = this port's address) and gratuitous ARP (sender = target). */
static void arp_up(struct hs_worker *w, uint16_t in, struct rte_mbuf *m)
{
	if (unlikely(!arp_admit(w)))
		return drop(w, m, HS_D_ARP_RATE);
	count(w, HS_C_EXC_ARP);
	hs_exception(w, m, in, HS_EXC_ARP);
}

/* What the flat table does not have: the overflow's keys (rte_hash), and
 * what is no mapping at all (the accept path, or up as a miss). */
static void __rte_noinline lookup_missed(struct hs_worker *w, uint16_t in, const struct hs_flow_key *keys,
					 const uint16_t *miss, uint16_t nm, struct rte_mbuf **vm, struct hs_parsed *vp)
{
	const void *kp[HS_BURST];
	void *data[HS_BURST];
	uint64_t hits = 0;

	if (__atomic_load_n(&hs.n_overflow, __ATOMIC_ACQUIRE)) {
		for (uint16_t i = 0; i < nm; i++)
			kp[i] = &keys[miss[i]];
		rte_hash_lookup_bulk_data(hs.map, kp, nm, &hits, data);
	}
	for (uint16_t i = 0; i < nm; i++) {
		uint16_t j = miss[i];
		if (hits & (1ULL << i)) {
			count(w, HS_C_OVERFLOW_HITS);
			hs_worker_mapped(w, in, data[i], vm[j], &vp[j]);
		} else if (vp[j].proto == IPPROTO_TCP)
			hs_accept_segment(w, in, vm[j], &vp[j]);
		else
			hs_exception(w, vm[j], in, HS_EXC_MISS);
	}
}

/*
 * The burst's VIP packets, their buckets already on the way (process_rx):
 * a hit whose slot says FAST, on a packet that is no SYN, FIN or RST, of a
 * flow with nothing held here, is tunnelled from the slot alone: one cache
 * line per packet. Everything else goes through the entry as before.
 */
static void lookup_and_send(struct hs_worker *w, uint16_t in, const struct hs_flow_key *keys, const uint32_t *sig,
			    struct rte_mbuf **vm, struct hs_parsed *vp, uint16_t nv)
{
	const struct hs_flowtab *ft = &hs.ft;
	uint16_t miss[HS_BURST], nm = 0;

	for (uint16_t j = 0; j < nv; j++) {
		uint64_t v;
		uint32_t slot = hs_ft_find(ft, &keys[j], sig[j], &v);
		if (unlikely(slot == HS_FT_NONE)) {
			miss[nm++] = j;
			continue;
		}
		uint32_t idx = hs_ft_val_idx(v);
		if (likely((v & HS_FT_FAST) && !(vp[j].tcp_flags & (TCP_SYN | TCP_FIN | TCP_RST)) &&
			   !w->hold_bloom[idx % HS_HOLD_BLOOM])) {
			count(w, HS_C_ENCAP_FAST);
			tunnel(w, hs_ft_val_host(v), hs_encap_sport(sig[j]), hs_ft_val_flow(v), slot, &hs.entries[idx], vm[j]);
		} else {
			hs_worker_mapped(w, in, &hs.entries[idx], vm[j], &vp[j]);
		}
	}
	if (nm)
		lookup_missed(w, in, keys, miss, nm, vm, vp);
}

static void process_rx(struct hs_worker *w, uint16_t in, struct rte_mbuf **pkts, uint16_t n)
{
	struct hs_flow_key keys[HS_BURST];
	uint32_t sig[HS_BURST];
	struct rte_mbuf *vm[HS_BURST];
	struct hs_parsed vp[HS_BURST];
	uint16_t nv = 0;
	const struct hs_port *port = &hs.ports[in];
	const uint32_t max_frame = (uint32_t)port->mtu + 18;

	for (uint16_t i = 0; i < HS_PREFETCH_AHEAD && i < n; i++)
		rte_prefetch0(rte_pktmbuf_mtod(pkts[i], void *));
	for (uint16_t i = 0; i < n; i++) {
		struct rte_mbuf *m = pkts[i];
		struct hs_parsed p;

		if (i + HS_PREFETCH_AHEAD < n)
			rte_prefetch0(rte_pktmbuf_mtod(pkts[i + HS_PREFETCH_AHEAD], void *));
		w->stats->c[HS_C_RX_PACKETS]++;
		w->stats->c[HS_C_RX_BYTES] += m->pkt_len;
		if (unlikely(m->nb_segs != 1)) {
			drop(w, m, HS_D_MULTISEG);
			continue;
		}
		if (unlikely(m->data_len > max_frame)) {
			drop(w, m, HS_D_OVERSIZE);
			continue;
		}
		uint64_t csum = m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK;
		if (unlikely(csum == RTE_MBUF_F_RX_IP_CKSUM_BAD)) {
			drop(w, m, HS_D_IP_CHECKSUM);
			continue;
		}
		int cls = hs_parse_frame(rte_pktmbuf_mtod(m, uint8_t *), m->data_len,
					 csum != RTE_MBUF_F_RX_IP_CKSUM_GOOD, &p);
		if (unlikely(cls < 0)) {
			drop(w, m, -cls);
			continue;
		}
		if (unlikely(cls == HS_PKT_ARP_REPLY)) {
			if (p.dst_ip == port->ip || p.src_ip == p.dst_ip)
				arp_up(w, in, m);
			else
				drop(w, m, HS_D_ARP_REPLY_NOT_OURS);
			continue;
		}
		if (unlikely(cls == HS_PKT_ARP)) {
			if (p.src_ip == p.dst_ip && !arp_is_ours(p.dst_ip, port)) {
				arp_up(w, in, m); /* gratuitous: a neighbour announces its (new) MAC */
				continue;
			}
			if (!arp_is_ours(p.dst_ip, port)) {
				drop(w, m, HS_D_ARP_NOT_OURS);
				continue;
			}
			hs_arp_make_reply(rte_pktmbuf_mtod(m, uint8_t *), &p, port->mac);
			count(w, HS_C_ARP_REPLIES);
			hs_tx(w, in, m);
			continue;
		}
		int svc = vip_match(p.dst_ip, p.proto, p.dst_port);
		if (likely(svc == 1)) {
			struct hs_flow_key *k = &keys[nv];
			k->client_ip = p.src_ip;
			k->vip = p.dst_ip;
			k->client_port = p.src_port;
			k->vip_port = p.dst_port;
			k->proto = p.proto;
			k->pad[0] = k->pad[1] = k->pad[2] = 0;
			/* Hash and fetch the bucket now: the rest of the burst's parsing hides the miss. */
			sig[nv] = hs_ft_hash(k, HS_MAP_HASH_INIT);
			stash(m, p.l2_len, p.ip_len);
			vp[nv] = p;
			vm[nv++] = m;
		} else if (svc == 0) {
			drop(w, m, HS_D_VIP_NO_SERVICE);
		} else if (p.dst_ip == port->ip) {
			struct rte_mbuf *m2;
			int k = hs_fault_apply(w, &m, &m2);
			if (k >= 1)
				hs_exception(w, m, in, HS_EXC_LOCAL);
			if (k == 2)
				hs_exception(w, m2, in, HS_EXC_LOCAL);
		} else {
			drop(w, m, HS_D_NOT_OURS);
		}
	}
	if (!nv)
		return;
	for (uint16_t j = 0; j < nv; j++)
		rte_prefetch0(&hs.ft.b[hs_ft_bucket1(&hs.ft, sig[j])]);
	lookup_and_send(w, in, keys, sig, vm, vp, nv);
}

static unsigned int run_commands(struct hs_worker *w)
{
	struct hs_cmd cmds[HS_BURST];
	unsigned int n = rte_ring_sc_dequeue_burst_elem(w->cmd, cmds, sizeof(cmds[0]), HS_BURST, NULL);

	for (unsigned int i = 0; i < n; i++) {
		if (cmds[i].op >= HS_CMD_FREEZE) {
			hs_accept_command(w, &cmds[i]);
			continue;
		}
		struct hs_entry *e = &hs.entries[cmds[i].idx];
		uint32_t ref = e->hold_ref;
		if (!hold_mine(w, ref))
			continue;
		uint32_t b = ref & 0xffffff;
		if (w->holds[b].gen != cmds[i].gen)
			continue;
		if (cmds[i].op == HS_CMD_RELEASE && e->gen == cmds[i].gen)
			hold_release(w, e, b);
		else
			hold_flush(w, e, b);
	}
	w->stats->c[HS_C_COMMANDS] += n;
	return n;
}

/* Worker 0 transmits what the control thread queued (blob fragments, SYN-ACKs). */
static unsigned int run_control_tx(struct hs_worker *w)
{
	struct rte_mbuf *b[HS_BURST];
	unsigned int total = 0;

	for (uint16_t p = 0; p < hs.n_ports; p++) {
		unsigned int n = rte_ring_sc_dequeue_burst(hs.ports[p].ctl_tx, (void **)b, HS_BURST, NULL);
		for (unsigned int i = 0; i < n; i++) {
			struct rte_mbuf *m = b[i], *m2;
			int k = hs_fault_apply(w, &m, &m2);
			if (k >= 1)
				hs_tx(w, p, m);
			if (k == 2)
				hs_tx(w, p, m2);
		}
		w->stats->c[HS_C_CTL_TX] += n;
		total += n;
	}
	return total;
}

/* Frames the control thread held while it found their flow's owner: the
 * mapping is in place now, so they take the fast path; one that still
 * misses is dropped here rather than going round the exception ring again. */
static unsigned int run_reinject(struct hs_worker *w)
{
	struct rte_mbuf *b[HS_BURST];
	unsigned int total = 0;

	for (uint16_t p = 0; p < hs.n_ports; p++) {
		unsigned int n = rte_ring_sc_dequeue_burst(hs.ports[p].reinject, (void **)b, HS_BURST, NULL);
		for (unsigned int i = 0; i < n; i++) {
			struct rte_mbuf *m = b[i];
			struct hs_parsed pr;
			void *data;
			int cls = hs_parse_frame(rte_pktmbuf_mtod(m, uint8_t *), m->data_len, 0, &pr);
			if (cls < 0) {
				drop(w, m, -cls);
				continue;
			}
			struct hs_flow_key k = {
				.client_ip = pr.src_ip, .vip = pr.dst_ip, .client_port = pr.src_port,
				.vip_port = pr.dst_port, .proto = pr.proto,
			};
			if (cls == HS_PKT_ARP || rte_hash_lookup_data(hs.map, &k, &data) < 0) {
				drop(w, m, HS_D_REINJECT_MISS);
				continue;
			}
			count(w, HS_C_REINJECTED);
			stash(m, pr.l2_len, pr.ip_len);
			hs_worker_mapped(w, p, data, m, &pr);
		}
		total += n;
	}
	return total;
}

/* Work the control thread queued for this worker (checked after announcing the nap). */
static int control_work_queued(const struct hs_worker *w)
{
	if (rte_ring_count(w->cmd))
		return 1;
	if (w->idx == 0)
		for (uint16_t p = 0; p < hs.n_ports; p++)
			if (rte_ring_count(hs.ports[p].ctl_tx) || rte_ring_count(hs.ports[p].reinject))
				return 1;
	return 0;
}

/** Idle this long before the naps start growing, in µs. */
#define HS_IDLE_BACKOFF_US 20000

static void idle_sleep(struct hs_worker *w, uint32_t nap_us)
{
	const struct timespec nap = { .tv_sec = nap_us / 1000000, .tv_nsec = (long)(nap_us % 1000000) * 1000 };

	__atomic_store_n(&w->sleeping, 1, __ATOMIC_SEQ_CST);
	if (control_work_queued(w)) {
		__atomic_store_n(&w->sleeping, 0, __ATOMIC_SEQ_CST);
		return;
	}
	struct pollfd pfd = { .fd = w->wake_fd, .events = POLLIN };
	int woken = ppoll(&pfd, 1, &nap, NULL) > 0;
	__atomic_store_n(&w->sleeping, 0, __ATOMIC_SEQ_CST);
	if (woken) {
		uint64_t v;
		(void)!read(w->wake_fd, &v, sizeof(v));
	}
}

void hs_worker_kick(struct hs_worker *w)
{
	if (likely(!__atomic_load_n(&w->sleeping, __ATOMIC_SEQ_CST)))
		return;
	if (!__atomic_exchange_n(&w->sleeping, 0, __ATOMIC_SEQ_CST))
		return;
	const uint64_t one = 1;
	(void)!write(w->wake_fd, &one, sizeof(one));
	hs_ctl_stats()->c[HS_C_WORKER_WAKEUPS]++;
}

int hs_worker_asleep(uint32_t worker)
{
	if (!hs.running)
		return hs_fail(-ENOTCONN, "shim not running");
	if (worker >= hs.n_workers)
		return hs_fail(-EINVAL, "worker %u out of range (%u workers)", worker, hs.n_workers);
	return (int)__atomic_load_n(&hs.workers[worker].sleeping, __ATOMIC_RELAXED);
}

int hs_worker_main(void *arg)
{
	struct hs_worker *w = arg;
	struct rte_mbuf *pkts[HS_BURST];
	uint32_t idle = 0;
	/* After HS_IDLE_BACKOFF_US with nothing to do the nap doubles (an idle
	 * balancer costs one wake-up a millisecond, not ten); traffic brings it
	 * back at once. Not sooner: a connection's next packet, a host's answer,
	 * arrive within that, and a long nap would delay them. */
	uint32_t nap_us = hs.cfg.idle_sleep_us;
	const uint64_t backoff_after = rte_get_tsc_hz() / 1000000 * HS_IDLE_BACKOFF_US;
	uint64_t busy_tsc = rte_get_tsc_cycles();

	rte_rcu_qsbr_thread_register(hs.rcu, w->idx);
	rte_rcu_qsbr_thread_online(hs.rcu, w->idx);
	while (likely(!hs.stop)) {
		unsigned int work = run_commands(w);
		if (w->idx == 0)
			work += run_control_tx(w) + run_reinject(w);
		for (uint16_t p = 0; p < hs.n_ports; p++) {
			uint16_t n = rte_eth_rx_burst(hs.ports[p].port_id, w->idx, pkts, HS_BURST);
			if (n) {
				process_rx(w, p, pkts, n);
				work += n;
			}
		}
		const uint64_t now = rte_get_tsc_cycles();
		hs_accept_scan(w, now);
		for (uint16_t p = 0; p < hs.n_ports; p++)
			tx_flush(w, p);
		rte_rcu_qsbr_quiescent(hs.rcu, w->idx);
		if (likely(work)) {
			idle = 0;
			nap_us = hs.cfg.idle_sleep_us;
			busy_tsc = now;
		} else if (hs.cfg.idle_sleep_us && ++idle >= hs.idle_spins) {
			/* Back off so several shims and the tests share two cores. */
			idle_sleep(w, nap_us);
			count(w, HS_C_IDLE_SLEEPS);
			if (now - busy_tsc > backoff_after)
				nap_us = RTE_MIN(nap_us * 2, hs.cfg.idle_sleep_max_us);
		}
	}
	if (w->reorder_held)
		rte_pktmbuf_free(w->reorder_held);
	rte_rcu_qsbr_thread_offline(hs.rcu, w->idx);
	rte_rcu_qsbr_thread_unregister(hs.rcu, w->idx);
	return 0;
}

void hs_hold_pool_free(struct hs_worker *w)
{
	if (!w->holds)
		return;
	for (uint32_t b = 0; b < w->n_holds; b++)
		for (uint16_t i = 0; i < w->holds[b].n; i++)
			rte_pktmbuf_free(w->holds[b].pkts[i]);
}
