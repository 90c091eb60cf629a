/* SPDX-License-Identifier: MIT
 * Stage 2e: accepting connections (design.md §3.1-2, claim steps C1-C3).
 *
 * A SYN to a VIP service is answered statelessly with a SYN cookie. A
 * handshake ACK with a valid cookie creates an entry in this worker's bounded
 * table; its data is ACKed in order and passed up with the connection's state
 * as events. Each worker owns its table alone (packets of a flow stay on one
 * queue), so there are no locks: the control thread reaches it only through
 * the worker's command ring.
 */
#include <errno.h>
#include <string.h>
#include <rte_byteorder.h>
#include <rte_hash_crc.h>
#include <rte_malloc.h>

#include "hs_common.h"
#include "hs_state.h"
#include "hs_tcp.h"

static inline uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3]; }
static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
/* Sequence-space comparison (RFC 1982 style). */
static inline int seq_after(uint32_t a, uint32_t b) { return (int32_t)(a - b) > 0; }

/* Wall-clock ticks: every balancer of a cluster checks another's cookies. */
static inline uint32_t now_tick(void) { return (uint32_t)(hs_wall_ms() / (hs.cfg.cookie_tick_s * 1000u)); }

/* Token bucket for HS_EXC_STRAY: a flood of stray ACKs costs the control
 * thread at most stray_rate lookups per second per worker. */
static int stray_admit(struct hs_worker *w)
{
	uint64_t now = rte_get_tsc_cycles(), hz = rte_get_tsc_hz();
	uint64_t dt = now - w->stray_refill_tsc;
	if (dt > hz)
		dt = hz; /* a full bucket after a second: no overflow below */
	uint64_t add = dt * hs.cfg.stray_rate / hz;
	if (add) {
		uint64_t t = w->stray_tokens + add;
		w->stray_tokens = (uint32_t)RTE_MIN(t, (uint64_t)hs.cfg.stray_burst);
		w->stray_refill_tsc = now;
	}
	if (!w->stray_tokens)
		return 0;
	w->stray_tokens--;
	return 1;
}

/* A segment of a flow this balancer does not know (another balancer's, after
 * a rehash or this one's restart): up to the control thread, which asks the
 * hosts for its owner, or dropped and counted when stray recovery is off or
 * over its rate. */
static void stray(struct hs_worker *w, uint16_t port, struct rte_mbuf *m, int reason_if_off)
{
	if (!hs.cfg.stray_rate)
		return hs_drop(w, m, reason_if_off);
	if (!stray_admit(w))
		return hs_drop(w, m, HS_D_STRAY_RATE);
	hs_exception(w, m, port, HS_EXC_STRAY);
}

int hs_accept_setup(struct hs_worker *w, uint32_t cap)
{
	char name[RTE_HASH_NAMESIZE];
	snprintf(name, sizeof(name), "hs_acc%u", w->idx);
	struct rte_hash_parameters hp = {
		.name = name,
		.entries = cap,
		.key_len = sizeof(struct hs_flow_key),
		.hash_func = rte_hash_crc,
		.hash_func_init_val = 0x600d,
		.socket_id = (int)rte_socket_id(),
		.extra_flag = RTE_HASH_EXTRA_FLAGS_EXT_TABLE,
	};
	struct hs_accept *a = &w->acc;
	a->h = rte_hash_create(&hp);
	a->conns = rte_zmalloc("hs_conns", sizeof(struct hs_conn) * cap, RTE_CACHE_LINE_SIZE);
	a->free_idx = rte_malloc("hs_conn_free", sizeof(uint32_t) * cap, 0);
	a->due_idx = rte_malloc("hs_conn_due", sizeof(uint32_t) * cap, 0);
	a->due_gen = rte_malloc("hs_conn_due_gen", sizeof(uint32_t) * cap, 0);
	if (!a->h || !a->conns || !a->free_idx || !a->due_idx || !a->due_gen)
		return hs_fail(-ENOMEM, "worker %u: accept table of %u connections", w->idx, cap);
	a->cap = cap;
	for (uint32_t i = 0; i < cap; i++)
		a->free_idx[i] = cap - 1 - i;
	a->n_free = cap;
	return 0;
}

void hs_accept_teardown(struct hs_worker *w)
{
	struct hs_accept *a = &w->acc;
	if (a->h)
		rte_hash_free(a->h);
	rte_free(a->conns);
	rte_free(a->free_idx);
	rte_free(a->due_idx);
	rte_free(a->due_gen);
	memset(a, 0, sizeof(*a));
}

static uint32_t rcv_wnd(const struct hs_conn *c) { return hs.cfg.accept_max_bytes - c->bytes; }

static uint16_t wnd_field(const struct hs_conn *c)
{
	uint32_t w = rcv_wnd(c) >> c->rcv_wscale;
	return (uint16_t)(w > 0xffff ? 0xffff : w);
}

/* A segment from us to the connection's client. */
static void conn_seg(const struct hs_conn *c, struct hs_tcp_seg *s, uint8_t flags)
{
	memset(s, 0, sizeof(*s));
	memcpy(s->dst_mac, c->peer_mac, 6);
	memcpy(s->src_mac, hs.ports[c->port].mac, 6);
	s->vlan_tci = c->vlan_tci;
	s->src_ip = c->key.vip;
	s->dst_ip = c->key.client_ip;
	s->src_port = c->key.vip_port;
	s->dst_port = c->key.client_port;
	s->seq = c->iss + 1;
	s->ack = c->rcv_nxt;
	s->flags = flags;
	s->window = flags & HS_TCP_RST ? 0 : wnd_field(c);
	s->wscale = -1;
	s->ts_ok = c->ts_ok && !(flags & HS_TCP_RST);
	s->tsval = hs_ts_now();
	s->tsecr = c->ts_recent;
}

/* Build @p s into @p m (reused) or a fresh mbuf and send it on @p port. */
static void send_seg(struct hs_worker *w, uint16_t port, struct rte_mbuf *m, const struct hs_tcp_seg *s, int counter)
{
	if (!m && !(m = rte_pktmbuf_alloc(hs.pool))) {
		w->stats->c[HS_D_NOMBUF]++;
		return;
	}
	rte_pktmbuf_reset(m);
	uint8_t *out = (uint8_t *)rte_pktmbuf_append(m, HS_TCP_SEG_MAX);
	if (!out) {
		hs_drop(w, m, HS_D_NOMBUF);
		return;
	}
	uint32_t len = hs_tcp_build(out, s);
	rte_pktmbuf_trim(m, (uint16_t)(HS_TCP_SEG_MAX - len));
	w->stats->c[counter]++;
	hs_tx(w, port, m);
}

/* Every event of a connection not yet announced carries HS_EV_ACCEPTED: the
 * control thread learns of a connection from its first event, whatever it is. */
static void fill_event(struct hs_conn_event *ev, const struct hs_worker *w, struct hs_conn *c, uint32_t type)
{
	memset(ev, 0, sizeof(*ev));
	if (!c->announced) {
		type |= HS_EV_ACCEPTED;
		c->announced = 1;
	}
	ev->type = type;
	ev->worker = w->idx;
	ev->port = c->port;
	ev->conn_id = (uint32_t)(c - w->acc.conns);
	ev->conn_gen = c->gen;
	ev->client_ip = rte_be_to_cpu_32(c->key.client_ip);
	ev->vip = rte_be_to_cpu_32(c->key.vip);
	ev->client_port = rte_be_to_cpu_16(c->key.client_port);
	ev->vip_port = rte_be_to_cpu_16(c->key.vip_port);
	ev->iss = c->iss;
	ev->irs = c->irs;
	ev->snd_nxt = c->iss + 1;
	ev->rcv_nxt = c->rcv_nxt;
	ev->snd_wnd = c->snd_wnd;
	ev->rcv_wnd = rcv_wnd(c);
	ev->ts_val = hs_ts_now();
	ev->ts_ecr = c->ts_recent;
	ev->data_seq = c->rcv_nxt;
	ev->mss = c->mss;
	ev->snd_wscale = c->snd_wscale;
	ev->rcv_wscale = c->rcv_wscale;
	ev->sack_ok = c->sack_ok;
	ev->ts_ok = c->ts_ok;
	ev->vlan_tci = c->vlan_tci;
	memcpy(ev->peer_mac, c->peer_mac, 6);
}

/* An event with no frame of its own (timeout, frozen). */
static void emit_bare(struct hs_worker *w, struct hs_conn *c, uint32_t type)
{
	struct rte_mbuf *m = rte_pktmbuf_alloc(hs.pool);
	if (!m) {
		w->stats->c[HS_D_NOMBUF]++;
		return;
	}
	fill_event(rte_mbuf_to_priv(m), w, c, type);
	w->stats->c[HS_C_EXC_CONN]++;
	hs_exception(w, m, c->port, HS_EXC_CONN);
}

/* Segments held by a frozen connection: counted as held while kept, dropped
 * (and counted) when the connection ends here. */
static void conn_hold(struct hs_worker *w, struct hs_conn *c, struct rte_mbuf *m, int pure_ack)
{
	if (pure_ack) {
		rte_pktmbuf_free(m); /* nothing to carry: the host learns the window from the next ACK */
		return;
	}
	if (c->n_held >= HS_CONN_HOLD)
		return hs_drop(w, m, HS_D_HOLD_FLOW_FULL);
	if (w->held >= w->held_max)
		return hs_drop(w, m, HS_D_HOLD_TOTAL_FULL);
	c->held[c->n_held++] = m;
	w->held++;
	w->stats->c[HS_C_CONN_HELD]++; /* "held" counts them again if a mapping takes them */
}

/* Take @p c's held segments out (to pass on or drop); returns how many. */
static uint8_t conn_unhold(struct hs_worker *w, struct hs_conn *c, struct rte_mbuf **out)
{
	uint8_t n = c->n_held;
	memcpy(out, c->held, n * sizeof(*out));
	c->n_held = 0;
	w->held -= n;
	return n;
}

static void forget(struct hs_worker *w, struct hs_conn *c)
{
	struct rte_mbuf *held[HS_CONN_HOLD];
	for (uint8_t i = 0, n = conn_unhold(w, c, held); i < n; i++)
		hs_drop(w, held[i], HS_D_HELD_FLUSHED);
	rte_hash_del_key(w->acc.h, &c->key);
	c->used = 0;
	w->acc.free_idx[w->acc.n_free++] = (uint32_t)(c - w->acc.conns);
}

static void syn(struct hs_worker *w, uint16_t port, struct rte_mbuf *m, const struct hs_parsed *p, uint32_t seq,
		const struct hs_tcp_opts *o)
{
	const uint8_t *f = rte_pktmbuf_mtod(m, const uint8_t *);
	uint32_t clamp = hs.ports[port].mtu - 40u - HS_ENCAP_OVERHEAD;
	uint32_t client_mss = o->mss ? o->mss : 536;
	uint32_t idx = hs_cookie_mss_index(RTE_MIN(client_mss, clamp));
	uint32_t now = hs_ts_now();
	struct hs_tcp_seg s;

	w->stats->c[HS_C_SYN_RCVD]++;
	memset(&s, 0, sizeof(s));
	memcpy(s.dst_mac, f + 6, 6);
	memcpy(s.src_mac, hs.ports[port].mac, 6);
	s.vlan_tci = p->vlan_tci;
	s.src_ip = p->dst_ip;
	s.dst_ip = p->src_ip;
	s.src_port = p->dst_port;
	s.dst_port = p->src_port;
	s.seq = hs_cookie_make(&hs.cookie, p->src_ip, p->dst_ip, p->src_port, p->dst_port, seq, now_tick(), idx);
	s.ack = seq + 1;
	s.flags = HS_TCP_SYN | HS_TCP_ACK;
	s.window = (uint16_t)RTE_MIN(hs.cfg.accept_max_bytes, 65535u);
	s.mss = hs_cookie_msstab[idx];
	/* As Linux: without timestamps there is nowhere to keep the client's
	 * window scale and SACK choice, so neither is offered. */
	s.ts_ok = o->ts_ok;
	s.wscale = o->ts_ok && o->wscale_ok ? hs.cfg.rcv_wscale : -1;
	s.sack_ok = o->ts_ok && o->sack_ok;
	s.tsval = hs_cookie_ts_encode(now, o->wscale_ok, o->wscale, o->sack_ok);
	s.tsecr = o->tsval;
	send_seg(w, port, m, &s, HS_C_SYNACK_SENT);
}

/* Refuse a handshake ACK with a reset (RFC 793: its sequence is SEG.ACK),
 * reusing @p m; counted under @p reason and resets_sent. */
static void reset_unaccepted(struct hs_worker *w, uint16_t port, struct rte_mbuf *m, const struct hs_parsed *p,
			     uint32_t ack, int reason)
{
	const uint8_t *f = rte_pktmbuf_mtod(m, const uint8_t *);
	struct hs_tcp_seg s;
	memset(&s, 0, sizeof(s));
	memcpy(s.dst_mac, f + 6, 6);
	memcpy(s.src_mac, hs.ports[port].mac, 6);
	s.vlan_tci = p->vlan_tci;
	s.src_ip = p->dst_ip; s.dst_ip = p->src_ip;
	s.src_port = p->dst_port; s.dst_port = p->src_port;
	s.seq = ack; s.flags = HS_TCP_RST; s.wscale = -1;
	w->stats->c[reason]++;
	send_seg(w, port, m, &s, HS_C_RST_SENT);
}

static struct hs_conn *accept_ack(struct hs_worker *w, uint16_t port, struct rte_mbuf *m, const struct hs_parsed *p,
				  const struct hs_flow_key *k, uint32_t seq, uint32_t ack, const struct hs_tcp_opts *o,
				  int *announce_now)
{
	struct hs_accept *a = &w->acc;
	uint32_t idx;

	if (hs_cookie_check(&hs.cookie, p->src_ip, p->dst_ip, p->src_port, p->dst_port, seq - 1, ack - 1, now_tick(),
			    &idx) < 0) {
		if (hs.cfg.stray_rate)
			stray(w, port, m, HS_D_BAD_COOKIE);
		else if (hs.cfg.reset_bad_ack)
			reset_unaccepted(w, port, m, p, ack, HS_D_BAD_COOKIE);
		else
			hs_drop(w, m, HS_D_BAD_COOKIE);
		return NULL;
	}
	if (unlikely(a->n_free == 0)) {
		/* Full (a flood of idle handshakes, or undersized): the client
		 * hears so at once rather than retransmitting into a table that
		 * may stay full; counted under both counters. */
		reset_unaccepted(w, port, m, p, ack, HS_D_ACCEPT_FULL);
		return NULL;
	}
	struct hs_conn *c = &a->conns[a->free_idx[a->n_free - 1]];
	memset(c, 0, sizeof(*c));
	c->key = *k;
	c->iss = ack - 1;
	c->irs = seq - 1;
	c->rcv_nxt = seq;
	c->mss = hs_cookie_msstab[idx];
	c->port = port;
	c->vlan_tci = p->vlan_tci;
	memcpy(c->peer_mac, rte_pktmbuf_mtod(m, const uint8_t *) + 6, 6);
	c->created_ms = hs_ts_now();
	c->gen = ++a->gen;
	if (o->ts_ok) {
		int wok, sok;
		uint8_t ws;
		hs_cookie_ts_decode(o->tsecr, &wok, &ws, &sok);
		c->ts_ok = 1;
		c->ts_recent = o->tsval;
		c->sack_ok = (uint8_t)sok;
		c->snd_wscale = wok ? ws : 0;
		c->rcv_wscale = wok ? hs.cfg.rcv_wscale : 0;
	}
	if (rte_hash_add_key_data(a->h, &c->key, c) < 0) {
		reset_unaccepted(w, port, m, p, ack, HS_D_ACCEPT_FULL);
		return NULL;
	}
	a->n_free--;
	c->used = 1;
	w->stats->c[HS_C_ACCEPTED]++;
	if (hs.cfg.announce_after_ms && likely(a->due_n < a->cap)) {
		/* Its first event announces it; if none comes in time, announce_due() does. */
		uint32_t t = a->due_head + a->due_n;
		t = t >= a->cap ? t - a->cap : t;
		a->due_idx[t] = (uint32_t)(c - a->conns);
		a->due_gen[t] = c->gen;
		a->due_n++;
		*announce_now = 0;
	} else {
		/* Without announce_after_ms; or the ring is full of entries of connections
		 * gone since (more accepted within announce_after_ms than the table holds). */
		if (hs.cfg.announce_after_ms)
			w->stats->c[HS_C_ANNOUNCED_EAGER]++;
		*announce_now = 1;
	}
	return c;
}

static void conn_segment(struct hs_worker *w, struct hs_conn *c, struct rte_mbuf *m, const struct hs_parsed *p,
			 uint32_t ev, uint32_t seq, uint32_t ack, uint16_t win, const struct hs_tcp_opts *o)
{
	const uint8_t *tcp = rte_pktmbuf_mtod(m, const uint8_t *) + p->l2_len + p->l3_len;
	uint32_t doff = (uint32_t)(tcp[12] >> 4) * 4;
	uint32_t plen = p->ip_len - p->l3_len - doff;
	uint32_t poff = p->l2_len + p->l3_len + doff;
	uint8_t fl = p->tcp_flags;
	uint32_t take = 0, trim = 0;
	int need_ack = 0;

	if (fl & HS_TCP_RST) {
		/* Only a reset inside the window counts (RFC 5961 §3, without the challenge ACK). */
		if (seq - c->rcv_nxt > rcv_wnd(c))
			return hs_drop(w, m, HS_D_RST_WINDOW);
		w->stats->c[HS_C_CONN_RESET_RCVD]++;
		fill_event(rte_mbuf_to_priv(m), w, c, ev | HS_EV_RESET);
		forget(w, c);
		w->stats->c[HS_C_EXC_CONN]++;
		return hs_exception(w, m, c->port, HS_EXC_CONN);
	}
	if (fl & HS_TCP_SYN)
		return hs_drop(w, m, HS_D_CONN_SYN);
	if (!(fl & HS_TCP_ACK) || ack != c->iss + 1)
		return hs_drop(w, m, HS_D_CONN_BAD_ACK);
	if (c->frozen) {
		/* The last event is the exact state: nothing here may change it. A
		 * reset (above) still ends the connection, a repeat still gets its
		 * duplicate ACK; new bytes or a FIN wait for the verdict. */
		if (plen && !(fl & HS_TCP_FIN) && !seq_after(seq + plen, c->rcv_nxt)) {
			struct hs_tcp_seg s;
			w->stats->c[HS_C_CONN_RETRANS]++;
			conn_seg(c, &s, HS_TCP_ACK);
			return send_seg(w, c->port, m, &s, HS_C_ACK_SENT);
		}
		return conn_hold(w, c, m, !plen && !(fl & HS_TCP_FIN));
	}
	c->snd_wnd = (uint32_t)win << c->snd_wscale;
	if (c->ts_ok && o->ts_ok && !seq_after(seq, c->rcv_nxt))
		c->ts_recent = o->tsval;
	if (plen) {
		need_ack = 1;
		if (seq_after(seq, c->rcv_nxt)) {
			w->stats->c[HS_C_CONN_OOO]++; /* dropped: the duplicate ACK asks again */
		} else if (!seq_after(seq + plen, c->rcv_nxt)) {
			w->stats->c[HS_C_CONN_RETRANS]++;
		} else {
			trim = c->rcv_nxt - seq;
			take = RTE_MIN(plen - trim, rcv_wnd(c));
			c->rcv_nxt += take;
			c->bytes += take;
			if (take) {
				ev |= HS_EV_DATA;
				w->stats->c[HS_C_CONN_DATA]++;
				w->stats->c[HS_C_CONN_BYTES] += take;
			}
		}
	}
	if ((fl & HS_TCP_FIN) && !c->fin) {
		need_ack = 1;
		if (seq + plen == c->rcv_nxt) {
			c->rcv_nxt++;
			c->fin = 1;
			ev |= HS_EV_FIN;
			w->stats->c[HS_C_CONN_FIN]++;
		}
	}
	if (need_ack) {
		struct hs_tcp_seg s;
		conn_seg(c, &s, HS_TCP_ACK);
		send_seg(w, c->port, NULL, &s, HS_C_ACK_SENT);
	}
	if (!ev) {
		rte_pktmbuf_free(m); /* a pure ACK or a repeat: consumed, nothing to pass up */
		return;
	}
	if (ev & (HS_EV_DATA | HS_EV_FIN))
		c->frozen = 1;
	struct hs_conn_event *e = rte_mbuf_to_priv(m);
	fill_event(e, w, c, ev);
	e->data_seq = seq + trim;
	e->payload_off = (uint16_t)(poff + trim);
	e->payload_len = (uint16_t)take;
	w->stats->c[HS_C_EXC_CONN]++;
	hs_exception(w, m, c->port, HS_EXC_CONN);
}

void hs_accept_segment(struct hs_worker *w, uint16_t port, struct rte_mbuf *m, const struct hs_parsed *p)
{
	const uint8_t *tcp = rte_pktmbuf_mtod(m, const uint8_t *) + p->l2_len + p->l3_len;
	uint32_t doff = (uint32_t)(tcp[12] >> 4) * 4;
	uint32_t seq = rd32(tcp + 4), ack = rd32(tcp + 8);
	struct hs_tcp_opts o;

	if (hs_tcp_parse_options(tcp + 20, doff - 20, &o) < 0)
		return hs_drop(w, m, HS_D_TCP_OPTS);
	if ((p->tcp_flags & (HS_TCP_SYN | HS_TCP_ACK | HS_TCP_RST)) == HS_TCP_SYN)
		return syn(w, port, m, p, seq, &o);

	struct hs_flow_key k = {
		.client_ip = p->src_ip, .vip = p->dst_ip, .client_port = p->src_port, .vip_port = p->dst_port,
		.proto = p->proto,
	};
	void *data;
	struct hs_conn *c;
	uint32_t ev = 0;
	if (rte_hash_lookup_data(w->acc.h, &k, &data) >= 0) {
		c = data;
	} else {
		if (p->tcp_flags & HS_TCP_SYN)
			return hs_drop(w, m, HS_D_NO_CONN);
		if ((p->tcp_flags & HS_TCP_RST) || !(p->tcp_flags & HS_TCP_ACK))
			return stray(w, port, m, HS_D_NO_CONN); /* a RST of a flow on a host must reach it */
		int announce_now;
		c = accept_ack(w, port, m, p, &k, seq, ack, &o, &announce_now);
		if (!c)
			return;
		if (announce_now)
			ev = HS_EV_ACCEPTED;
	}
	conn_segment(w, c, m, p, ev, seq, ack, rd16(tcp + 14), &o);
}

void hs_accept_command(struct hs_worker *w, const struct hs_cmd *cmd)
{
	struct hs_accept *a = &w->acc;
	if (cmd->idx >= a->cap || !a->conns[cmd->idx].used || a->conns[cmd->idx].gen != cmd->gen) {
		w->stats->c[HS_D_STALE_COMMAND]++;
		return;
	}
	struct hs_conn *c = &a->conns[cmd->idx];
	struct rte_mbuf *held[HS_CONN_HOLD];
	struct hs_parsed p;
	uint8_t n;

	uint16_t port = c->port;

	switch (cmd->op) {
	case HS_CMD_FREEZE:
	case HS_CMD_HANDOFF: {
		/* FREEZE answers with the final state (the control thread has no
		 * exact snapshot: no event froze the connection); HANDOFF needs no
		 * answer. Either way the PENDING mapping was inserted first, so
		 * what this connection held joins what the mapping holds, in order. */
		if (cmd->op == HS_CMD_FREEZE)
			emit_bare(w, c, HS_EV_FROZEN);
		void *data;
		struct hs_entry *e = rte_hash_lookup_data(hs.map, &c->key, &data) >= 0 ? data : NULL;
		n = conn_unhold(w, c, held);
		forget(w, c);
		w->stats->c[HS_C_FROZEN]++;
		for (uint8_t i = 0; i < n; i++) {
			if (unlikely(!e || hs_parse_frame(rte_pktmbuf_mtod(held[i], uint8_t *), held[i]->data_len, 0, &p) < 0))
				hs_drop(w, held[i], HS_D_HELD_FLUSHED);
			else
				hs_worker_mapped(w, port, e, held[i], &p);
		}
		return;
	}
	case HS_CMD_RESUME:
		if (!c->frozen) {
			w->stats->c[HS_D_STALE_COMMAND]++;
			return;
		}
		/* More bytes are needed: take what was held as if it came now (each
		 * new byte freezes the connection again, with a new event). */
		c->frozen = 0;
		n = conn_unhold(w, c, held);
		for (uint8_t i = 0; i < n; i++) {
			if (hs_parse_frame(rte_pktmbuf_mtod(held[i], uint8_t *), held[i]->data_len, 0, &p) < 0)
				hs_drop(w, held[i], HS_D_HELD_FLUSHED);
			else
				hs_accept_segment(w, port, held[i], &p); /* a held RST may end @p c midway */
		}
		return;
	default: {
		struct hs_tcp_seg s;
		conn_seg(c, &s, HS_TCP_RST | HS_TCP_ACK);
		send_seg(w, port, NULL, &s, HS_C_RST_SENT);
		forget(w, c);
	}
	}
}

/* Announce, oldest first, the connections that sent nothing for announce_after_ms. */
static void announce_due(struct hs_worker *w, uint64_t now)
{
	struct hs_accept *a = &w->acc;
	if (!a->due_n || now < a->next_due_tsc)
		return;
	a->next_due_tsc = now + hs.tsc_per_ms;
	uint32_t now_ms = hs_ts_now();
	while (a->due_n) {
		uint32_t i = a->due_head;
		struct hs_conn *c = &a->conns[a->due_idx[i]];
		int waiting = c->used && c->gen == a->due_gen[i] && !c->announced;
		if (waiting && now_ms - c->created_ms < hs.cfg.announce_after_ms)
			break;
		a->due_head = i + 1 < a->cap ? i + 1 : 0;
		a->due_n--;
		if (waiting) {
			w->stats->c[HS_C_ANNOUNCED_SILENT]++;
			emit_bare(w, c, HS_EV_SILENT);
		}
	}
}

void hs_accept_scan(struct hs_worker *w, uint64_t now)
{
	struct hs_accept *a = &w->acc;
	announce_due(w, now);
	if (now < a->next_scan_tsc || a->n_free == a->cap)
		return;
	a->next_scan_tsc = now + hs.tsc_per_ms * 10;
	/* Ages on the timestamp clock, so the tests' clock override moves timeouts too. */
	uint32_t now_ms = hs_ts_now();
	for (uint32_t n = 0; n < 1024 && n < a->cap; n++) {
		struct hs_conn *c = &a->conns[a->scan];
		a->scan = a->scan + 1 < a->cap ? a->scan + 1 : 0;
		if (!c->used || now_ms - c->created_ms < hs.cfg.accept_timeout_ms)
			continue;
		struct hs_tcp_seg s;
		conn_seg(c, &s, HS_TCP_RST | HS_TCP_ACK);
		send_seg(w, c->port, NULL, &s, HS_C_RST_SENT);
		emit_bare(w, c, HS_EV_TIMEOUT);
		w->stats->c[HS_C_ACCEPT_TIMEOUTS]++;
		forget(w, c);
	}
}

int hs_accept_count(void)
{
	if (!hs.running)
		return hs_fail(-ENOTCONN, "shim not running");
	uint32_t n = 0;
	/* Each worker writes its own n_free; a relaxed read is a snapshot. */
	for (uint32_t i = 0; i < hs.n_workers; i++) {
		const struct hs_accept *a = &hs.workers[i].acc;
		n += a->cap - RTE_MIN(__atomic_load_n(&a->n_free, __ATOMIC_RELAXED), a->cap);
	}
	return (int)n;
}
