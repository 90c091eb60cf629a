/* SPDX-License-Identifier: MIT
 * Lifecycle and the control-thread API: EAL and port set-up, exception and
 * TX bursts, ring ports, counters. Runs on the Node thread (EAL main lcore).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pipe2 */
#endif
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/random.h>
#include <time.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_eth_ring.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>

#include "hs_common.h"
#include "hs_state.h"
#include "hs_telemetry.h"

struct hs_shim hs;
static char last_error[512];
static int eal_used;

int hs_fail(int err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(last_error, sizeof(last_error), fmt, ap);
	va_end(ap);
	return err;
}

const char *hs_last_error(void) { return last_error; }

uint32_t hs_abi_version(void) { return HS_ABI_VERSION; }

int hs_running(void) { return hs.running; }

static int is_pow2(uint32_t v) { return v && !(v & (v - 1)); }

static int check_config(const struct hs_config *c)
{
	if (c->n_ports == 0 || c->n_ports > HS_MAX_PORTS)
		return hs_fail(-EINVAL, "n_ports must be 1..%u, got %u", HS_MAX_PORTS, c->n_ports);
	if (c->n_vips > HS_MAX_VIPS)
		return hs_fail(-EINVAL, "n_vips must be at most %u, got %u", HS_MAX_VIPS, c->n_vips);
	if (c->n_workers == 0 || c->n_workers > HS_MAX_WORKERS)
		return hs_fail(-EINVAL, "n_workers must be 1..%u, got %u", HS_MAX_WORKERS, c->n_workers);
	if (c->hold_per_flow > HS_MAX_HOLD_PER_FLOW)
		return hs_fail(-EINVAL, "hold_per_flow must be at most %u, got %u", HS_MAX_HOLD_PER_FLOW,
			       c->hold_per_flow);
	if (c->exc_ring_size && !is_pow2(c->exc_ring_size))
		return hs_fail(-EINVAL, "exc_ring_size must be a power of two, got %u", c->exc_ring_size);
	if (c->tx_ring_size && !is_pow2(c->tx_ring_size))
		return hs_fail(-EINVAL, "tx_ring_size must be a power of two, got %u", c->tx_ring_size);
	if (c->rcv_wscale > 14)
		return hs_fail(-EINVAL, "rcv_wscale must be at most 14, got %u", c->rcv_wscale);
	if (c->accept_max_bytes > (1u << 30))
		return hs_fail(-EINVAL, "accept_max_bytes must be at most 2^30, got %u", c->accept_max_bytes);
	for (uint32_t i = 0; i < c->n_ports; i++) {
		const struct hs_port_conf *p = &c->ports[i];
		if (!memchr(p->device, 0, sizeof(p->device)) || !p->device[0])
			return hs_fail(-EINVAL, "ports[%u].device is empty or not terminated", i);
		if (p->mtu && (p->mtu < 576 || p->mtu > 9000))
			return hs_fail(-EINVAL, "ports[%u].mtu must be 576..9000, got %u", i, p->mtu);
	}
	for (uint32_t i = 0; i < c->n_vips; i++) {
		const struct hs_vip_conf *v = &c->vips[i];
		if (v->proto != IPPROTO_TCP && v->proto != IPPROTO_UDP)
			return hs_fail(-EINVAL, "vips[%u].proto must be 6 (TCP) or 17 (UDP), got %u", i, v->proto);
		if (!v->ip || !v->port)
			return hs_fail(-EINVAL, "vips[%u] needs an address and a port", i);
	}
	return 0;
}

static void apply_defaults(struct hs_config *c)
{
#define DEF(f, v) if (!c->f) c->f = (v)
	DEF(mbufs, 8191);
	DEF(mapping_capacity, 65536);
	DEF(hold_flows, 1024);
	DEF(hold_per_flow, 8);
	DEF(hold_total, 4096);
	DEF(exc_ring_size, 4096);
	DEF(tx_ring_size, 4096);
	DEF(idle_spins, 64);
	DEF(idle_sleep_max_us, 1000);
	if (c->idle_sleep_max_us < c->idle_sleep_us)
		c->idle_sleep_max_us = c->idle_sleep_us;
	DEF(accept_capacity, 65536);
	DEF(accept_max_bytes, 65535);
	DEF(accept_timeout_ms, 10000);
	DEF(cookie_tick_s, 64);
	DEF(rcv_wscale, 7);
	if (c->stray_rate)
		DEF(stray_burst, c->stray_rate / 10 + 1);
	for (uint32_t i = 0; i < c->n_ports; i++) {
		DEF(ports[i].mtu, 1500);
		DEF(ports[i].rx_desc, 1024);
		DEF(ports[i].tx_desc, 1024);
	}
#undef DEF
}

static int ring_port_create(uint32_t i, const struct hs_port_conf *pc, struct hs_port *p)
{
	char name[RTE_RING_NAMESIZE];
	int socket = (int)rte_socket_id();
	for (uint32_t q = 0; q < hs.n_workers; q++) {
		snprintf(name, sizeof(name), "hsr%u_rx%u", i, q);
		p->ring_rx[q] = rte_ring_create(name, 4096, socket, RING_F_SP_ENQ | RING_F_SC_DEQ);
		snprintf(name, sizeof(name), "hsr%u_tx%u", i, q);
		p->ring_tx[q] = rte_ring_create(name, 4096, socket, RING_F_SP_ENQ | RING_F_SC_DEQ);
		if (!p->ring_rx[q] || !p->ring_tx[q])
			return hs_fail(-ENOMEM, "ports[%u]: rings: %s", i, rte_strerror(rte_errno));
	}
	int id = rte_eth_from_rings(pc->device, p->ring_rx, hs.n_workers, p->ring_tx, hs.n_workers, socket);
	if (id < 0)
		return hs_fail(-EIO, "ports[%u]: ring port %s: %s", i, pc->device, rte_strerror(rte_errno));
	p->port_id = (uint16_t)id;
	return 0;
}

static int port_setup(uint32_t i)
{
	const struct hs_port_conf *pc = &hs.cfg.ports[i];
	struct hs_port *p = &hs.ports[i];
	struct rte_eth_dev_info info;
	struct rte_eth_conf conf;
	int rc;

	if (pc->ring) {
		if ((rc = ring_port_create(i, pc, p)))
			return rc;
		p->is_ring = 1;
	} else if (rte_eth_dev_get_port_by_name(pc->device, &p->port_id) != 0) {
		return hs_fail(-ENODEV, "ports[%u]: no DPDK device named '%s' (add it with --vdev or bind the NIC)",
			       i, pc->device);
	}
	if ((rc = rte_eth_dev_info_get(p->port_id, &info)))
		return hs_fail(-EIO, "ports[%u] %s: device info: %s", i, pc->device, strerror(-rc));
	if (info.max_rx_queues < hs.n_workers || info.max_tx_queues < hs.n_workers)
		return hs_fail(-EINVAL, "ports[%u] %s: %u workers need as many queues; the device has %u rx, %u tx",
			       i, pc->device, hs.n_workers, info.max_rx_queues, info.max_tx_queues);
	memset(&conf, 0, sizeof(conf));
	if (info.rx_offload_capa & RTE_ETH_RX_OFFLOAD_IPV4_CKSUM)
		conf.rxmode.offloads |= RTE_ETH_RX_OFFLOAD_IPV4_CKSUM;
	if (hs.n_workers > 1) {
		conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
		conf.rx_adv_conf.rss_conf.rss_hf = (RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP) &
						   info.flow_type_rss_offloads;
	}
	if ((rc = rte_eth_dev_configure(p->port_id, (uint16_t)hs.n_workers, (uint16_t)hs.n_workers, &conf)))
		return hs_fail(-EIO, "ports[%u] %s: configure: %s", i, pc->device, strerror(-rc));
	uint16_t rxd = pc->rx_desc, txd = pc->tx_desc;
	rte_eth_dev_adjust_nb_rx_tx_desc(p->port_id, &rxd, &txd);
	for (uint16_t q = 0; q < hs.n_workers; q++) {
		rc = rte_eth_rx_queue_setup(p->port_id, q, rxd, rte_eth_dev_socket_id(p->port_id), NULL, hs.pool);
		if (rc)
			return hs_fail(-EIO, "ports[%u] %s: rx queue %u (%u descriptors): %s", i, pc->device, q, rxd,
				       strerror(-rc));
		rc = rte_eth_tx_queue_setup(p->port_id, q, txd, rte_eth_dev_socket_id(p->port_id), NULL);
		if (rc)
			return hs_fail(-EIO, "ports[%u] %s: tx queue %u: %s", i, pc->device, q, strerror(-rc));
	}
	if ((rc = rte_eth_dev_start(p->port_id)))
		return hs_fail(-EIO, "ports[%u] %s: start: %s", i, pc->device, strerror(-rc));
	p->started = 1;
	if (pc->promisc)
		rte_eth_promiscuous_enable(p->port_id);
	static const uint8_t zero[6];
	struct rte_ether_addr mac;
	if (memcmp(pc->mac, zero, 6) != 0) {
		memcpy(mac.addr_bytes, pc->mac, 6);
		/* Ring ports have no address filter: the configured MAC is simply ours. */
		if (!p->is_ring && (rc = rte_eth_dev_default_mac_addr_set(p->port_id, &mac)))
			return hs_fail(-EIO, "ports[%u] %s: setting MAC: %s", i, pc->device, strerror(-rc));
	} else if (p->is_ring) {
		const uint8_t def[6] = { 0x02, 0, 0, 0, 0, (uint8_t)(i + 1) };
		memcpy(mac.addr_bytes, def, 6);
	} else {
		rte_eth_macaddr_get(p->port_id, &mac);
	}
	memcpy(p->mac, mac.addr_bytes, 6);
	p->ip = rte_cpu_to_be_32(pc->ip);
	p->mtu = pc->mtu;

	char name[RTE_RING_NAMESIZE];
	snprintf(name, sizeof(name), "hs_ctl_tx%u", i);
	p->ctl_tx = rte_ring_create(name, hs.cfg.tx_ring_size, (int)rte_socket_id(), RING_F_SP_ENQ | RING_F_SC_DEQ);
	if (!p->ctl_tx)
		return hs_fail(-ENOMEM, "ports[%u]: control TX ring: %s", i, rte_strerror(rte_errno));
	snprintf(name, sizeof(name), "hs_reinj%u", i);
	p->reinject = rte_ring_create(name, hs.cfg.tx_ring_size, (int)rte_socket_id(), RING_F_SP_ENQ | RING_F_SC_DEQ);
	if (!p->reinject)
		return hs_fail(-ENOMEM, "ports[%u]: reinjection ring: %s", i, rte_strerror(rte_errno));
	return 0;
}

static int workers_setup(void)
{
	hs.workers = rte_zmalloc("hs_workers", sizeof(struct hs_worker) * hs.n_workers, RTE_CACHE_LINE_SIZE);
	hs.stats = rte_zmalloc("hs_stats", sizeof(struct hs_stats) * (hs.n_workers + 1), RTE_CACHE_LINE_SIZE);
	if (!hs.workers || !hs.stats)
		return hs_fail(-ENOMEM, "worker state");
	uint32_t flows = RTE_MAX(hs.cfg.hold_flows / hs.n_workers, 1u);
	uint32_t total = RTE_MAX(hs.cfg.hold_total / hs.n_workers, 1u);
	unsigned int lcore = rte_get_next_lcore(-1, 1, 0);
	for (uint32_t i = 0; i < hs.n_workers; i++) {
		struct hs_worker *w = &hs.workers[i];
		char name[RTE_RING_NAMESIZE];
		if (lcore >= RTE_MAX_LCORE)
			return hs_fail(-EINVAL, "%u workers need %u worker lcores; EAL has %u (use -l or --lcores)",
				       hs.n_workers, hs.n_workers, rte_lcore_count() - 1);
		w->idx = (uint16_t)i;
		w->lcore = lcore;
		w->stats = &hs.stats[i];
		snprintf(name, sizeof(name), "hs_cmd%u", i);
		w->cmd = rte_ring_create_elem(name, sizeof(struct hs_cmd), 65536, (int)rte_socket_id(),
					      RING_F_SP_ENQ | RING_F_SC_DEQ);
		w->holds = rte_zmalloc("hs_holds", sizeof(struct hs_hold) * flows, RTE_CACHE_LINE_SIZE);
		if (!w->cmd || !w->holds)
			return hs_fail(-ENOMEM, "worker %u rings and hold buckets", i);
		w->n_holds = flows;
		for (uint32_t b = 0; b < flows; b++)
			w->holds[b].next_free = b + 1 < flows ? b + 1 : HS_HOLD_NONE;
		w->hold_free = 0;
		w->held_max = total;
		w->rng = 0x853c49e6748fea9bULL + i;
		w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (w->wake_fd < 0) {
			int e = errno;
			w->wake_fd = -1;
			return hs_fail(-e, "worker %u: eventfd: %s", i, strerror(e));
		}
		int rc = hs_accept_setup(w, RTE_MAX(hs.cfg.accept_capacity / hs.n_workers, 64u));
		if (rc)
			return rc;
		lcore = rte_get_next_lcore(lcore, 1, 0);
	}
	return 0;
}

static void teardown(void)
{
	if (hs.workers) {
		for (uint32_t i = 0; i < hs.n_workers; i++) {
			hs_hold_pool_free(&hs.workers[i]);
			hs_accept_teardown(&hs.workers[i]);
			rte_free(hs.workers[i].holds);
			rte_ring_free(hs.workers[i].cmd);
			if (hs.workers[i].wake_fd > 0)
				close(hs.workers[i].wake_fd);
		}
	}
	for (uint32_t i = 0; i < hs.n_ports; i++) {
		struct hs_port *p = &hs.ports[i];
		if (p->started) {
			rte_eth_dev_stop(p->port_id);
			rte_eth_dev_close(p->port_id);
		}
		for (uint32_t q = 0; q < HS_MAX_WORKERS; q++) {
			rte_ring_free(p->ring_rx[q]); /* frees nothing it still holds: mbufs go with the pool */
			rte_ring_free(p->ring_tx[q]);
		}
		rte_ring_free(p->ctl_tx);
		rte_ring_free(p->reinject);
	}
	rte_ring_free(hs.exc);
	for (int i = 0; i < 2; i++)
		if (hs.exc_pipe[i] > 0)
			close(hs.exc_pipe[i]);
	hs.exc_pipe[0] = hs.exc_pipe[1] = -1;
	hs_mapping_teardown();
	rte_free(hs.workers);
	rte_free(hs.stats);
	if (hs.pool)
		rte_mempool_free(hs.pool);
	memset(&hs, 0, sizeof(hs));
}

int hs_init(int argc, const char *const *argv, const struct hs_config *cfg)
{
	int rc;

	if (hs.running || eal_used)
		return hs_fail(-EALREADY, "EAL was already initialised in this process");
	if (!cfg || argc < 1 || !argv)
		return hs_fail(-EINVAL, "hs_init needs an argument list and a configuration");
	memset(&hs, 0, sizeof(hs));
	hs.cfg = *cfg;
	if ((rc = check_config(&hs.cfg)))
		return rc;
	apply_defaults(&hs.cfg);

	/* EAL may permute argv and keep pointers into it: give it a copy for life. */
	char **args = calloc((size_t)argc + 1, sizeof(char *));
	if (!args)
		return hs_fail(-ENOMEM, "argument copy");
	for (int i = 0; i < argc; i++)
		args[i] = strdup(argv[i] ? argv[i] : "");
	eal_used = 1;
	if (rte_eal_init(argc, args) < 0) {
		int err = rte_errno ? rte_errno : EINVAL;
		return hs_fail(-err, "EAL initialisation failed: %s (see EAL messages on stderr)", rte_strerror(err));
	}

	hs.n_workers = hs.cfg.n_workers;
	hs.n_ports = hs.cfg.n_ports;
	hs.hold_per_flow = hs.cfg.hold_per_flow;
	hs.idle_spins = hs.cfg.idle_spins;
	hs.n_vips = hs.cfg.n_vips;
	for (uint32_t i = 0; i < hs.n_vips; i++) {
		hs.vips[i].ip = rte_cpu_to_be_32(hs.cfg.vips[i].ip);
		hs.vips[i].port = rte_cpu_to_be_16(hs.cfg.vips[i].port);
		hs.vips[i].proto = hs.cfg.vips[i].proto;
	}
	hs.tsc_per_ms = rte_get_tsc_hz() / 1000;
	struct timespec wall;
	clock_gettime(CLOCK_REALTIME, &wall);
	hs.wall_offset_ms = (int64_t)wall.tv_sec * 1000 + wall.tv_nsec / 1000000 -
			    (int64_t)(rte_get_tsc_cycles() / hs.tsc_per_ms);
	static const uint8_t zero16[16];
	if (memcmp(hs.cfg.cookie_secret, zero16, 16) == 0 &&
	    getrandom(hs.cfg.cookie_secret, 16, 0) != 16) {
		rc = hs_fail(-EIO, "no randomness for the SYN cookie secret");
		goto fail;
	}
	memcpy(hs.cookie.cur, hs.cfg.cookie_secret, 16);
	memcpy(hs.cookie.prev, hs.cfg.cookie_secret, 16);
	/* A pipe rather than an eventfd: libuv can watch a pipe (Node's event
	 * loop then wakes the control thread with no thread-pool round trip). */
	if (pipe2(hs.exc_pipe, O_NONBLOCK | O_CLOEXEC) != 0) {
		hs.exc_pipe[0] = hs.exc_pipe[1] = -1;
		rc = hs_fail(-errno, "pipe2: %s", strerror(errno));
		goto fail;
	}
	/* Each mbuf's private area carries its connection event up to TypeScript. */
	hs.pool = rte_pktmbuf_pool_create("hs_mbufs", hs.cfg.mbufs, 256,
					  RTE_ALIGN(sizeof(struct hs_conn_event), RTE_MBUF_PRIV_ALIGN),
					  RTE_MBUF_DEFAULT_BUF_SIZE, (int)rte_socket_id());
	if (!hs.pool) {
		rc = hs_fail(-ENOMEM, "mbuf pool of %u: %s (more memory: -m, or hugepages)", hs.cfg.mbufs,
			     rte_strerror(rte_errno));
		goto fail;
	}
	if ((rc = workers_setup()))
		goto fail;
	for (uint32_t i = 0; i < hs.n_ports; i++)
		if ((rc = port_setup(i)))
			goto fail;
	if ((rc = hs_mapping_setup()))
		goto fail;
	hs.exc = rte_ring_create("hs_exc", hs.cfg.exc_ring_size, (int)rte_socket_id(), RING_F_SC_DEQ);
	if (!hs.exc) {
		rc = hs_fail(-ENOMEM, "exception ring: %s", rte_strerror(rte_errno));
		goto fail;
	}
	hs.running = 1;
	for (uint32_t i = 0; i < hs.n_workers; i++) {
		if ((rc = rte_eal_remote_launch(hs_worker_main, &hs.workers[i], hs.workers[i].lcore))) {
			hs.stop = 1;
			rte_eal_mp_wait_lcore();
			rc = hs_fail(-EIO, "launching worker %u on lcore %u: %s", i, hs.workers[i].lcore,
				     strerror(-rc));
			goto fail;
		}
	}
	/* Not fatal: the data path runs on without /handoff/ telemetry. */
	if (hs_telemetry_attach() != 0)
		RTE_LOG(WARNING, EAL, "handoff: %s\n", last_error);
	return 0;
fail:
	teardown();
	rte_eal_cleanup();
	return rc;
}

int hs_stop(void)
{
	if (!hs.running)
		return hs_fail(-ENOTCONN, "shim not running");
	hs_telemetry_detach(); /* waits out a telemetry callback still reading */
	hs.stop = 1;
	rte_eal_mp_wait_lcore();
	hs.running = 0;
	/* The exception ring still holds mbufs: return them before the pool goes. */
	void *m;
	while (rte_ring_dequeue(hs.exc, &m) == 0)
		rte_pktmbuf_free(m);
	for (uint32_t i = 0; i < hs.n_ports; i++) {
		struct hs_port *p = &hs.ports[i];
		while (p->ctl_tx && rte_ring_dequeue(p->ctl_tx, &m) == 0)
			rte_pktmbuf_free(m);
		while (p->reinject && rte_ring_dequeue(p->reinject, &m) == 0)
			rte_pktmbuf_free(m);
	}
	teardown();
	rte_eal_cleanup();
	return 0;
}

int hs_worker_count(void)
{
	return hs.running ? (int)hs.n_workers : hs_fail(-ENOTCONN, "shim not running");
}

int hs_port_info(uint32_t port, struct hs_port_info *out)
{
	if (!hs.running)
		return hs_fail(-ENOTCONN, "shim not running");
	if (port >= hs.n_ports || !out)
		return hs_fail(-EINVAL, "port %u out of range (%u ports)", port, hs.n_ports);
	memset(out, 0, sizeof(*out));
	out->port_id = hs.ports[port].port_id;
	memcpy(out->mac, hs.ports[port].mac, 6);
	out->ip = rte_be_to_cpu_32(hs.ports[port].ip);
	out->mtu = hs.ports[port].mtu;
	return 0;
}

/* Copy mbufs out into a burst buffer of HS_PKT_MAX slots and free them. */
static uint32_t copy_out(struct rte_mbuf **ms, uint32_t n, uint8_t *buf, struct hs_pkt_meta *meta,
			 struct hs_conn_event *events, uint32_t first, int exc)
{
	for (uint32_t i = 0; i < n; i++) {
		struct rte_mbuf *m = ms[i];
		struct hs_pkt_meta *d = &meta[first + i];
		uint32_t len = RTE_MIN(m->pkt_len, (uint32_t)HS_PKT_MAX);
		d->offset = (first + i) * HS_PKT_MAX;
		d->len = (uint16_t)len;
		const void *src = rte_pktmbuf_read(m, 0, len, buf + d->offset);
		if (src != buf + d->offset)
			memcpy(buf + d->offset, src, len);
		if (exc) {
			d->reason = (uint16_t)(m->hash.usr & 0xff);
			d->port = (uint16_t)((m->hash.usr >> 8) & 0xff);
			d->worker = (uint16_t)(m->hash.usr >> 16);
			if (events) {
				if (d->reason == HS_EXC_CONN)
					memcpy(&events[first + i], rte_mbuf_to_priv(m), sizeof(*events));
				else
					memset(&events[first + i], 0, sizeof(*events));
			}
		}
		d->reserved = 0;
		rte_pktmbuf_free(m);
	}
	return n;
}

int hs_exc_burst(uint8_t *buf, uint32_t buf_len, struct hs_pkt_meta *meta, struct hs_conn_event *events,
		 uint32_t max)
{
	struct rte_mbuf *ms[HS_BURST];
	uint32_t got = 0;

	if (!hs.running)
		return hs_fail(-ENOTCONN, "shim not running");
	if (!buf || !meta || buf_len < HS_PKT_MAX)
		return hs_fail(-EINVAL, "exception buffer needs at least %u bytes", HS_PKT_MAX);
	max = RTE_MIN(max, buf_len / HS_PKT_MAX);
	while (got < max) {
		unsigned int n = rte_ring_sc_dequeue_burst(hs.exc, (void **)ms, RTE_MIN(max - got, (uint32_t)HS_BURST), NULL);
		if (!n)
			break;
		got += copy_out(ms, n, buf, meta, events, got, 1);
	}
	return (int)got;
}

static int check_descs(const uint8_t *buf, uint32_t buf_len, const struct hs_pkt_meta *meta, uint32_t n, uint32_t min_len,
		       int need_port)
{
	if (!buf || !meta)
		return hs_fail(-EINVAL, "burst: NULL buffer or descriptors");
	for (uint32_t i = 0; i < n; i++) {
		const struct hs_pkt_meta *d = &meta[i];
		if (d->len < min_len || d->len > HS_PKT_MAX || (uint64_t)d->offset + d->len > buf_len)
			return hs_fail(-EINVAL, "burst[%u]: frame of %u bytes at %u does not fit (%u..%u bytes, buffer %u)",
				       i, d->len, d->offset, min_len, HS_PKT_MAX, buf_len);
		if (need_port && d->port >= hs.n_ports)
			return hs_fail(-EINVAL, "burst[%u]: port %u out of range (%u ports)", i, d->port, hs.n_ports);
	}
	return 0;
}

static struct rte_mbuf *mbuf_from(const uint8_t *buf, const struct hs_pkt_meta *d)
{
	struct rte_mbuf *m = rte_pktmbuf_alloc(hs.pool);
	if (!m)
		return NULL;
	char *p = rte_pktmbuf_append(m, d->len);
	if (!p) {
		rte_pktmbuf_free(m);
		return NULL;
	}
	memcpy(p, buf + d->offset, d->len);
	return m;
}

int hs_tx_burst(const uint8_t *buf, uint32_t buf_len, const struct hs_pkt_meta *meta, uint32_t n)
{
	int rc;
	uint32_t queued = 0;

	if (!hs.running)
		return hs_fail(-ENOTCONN, "shim not running");
	if ((rc = check_descs(buf, buf_len, meta, n, 14, 1)))
		return rc;
	struct hs_stats *s = hs_ctl_stats();
	for (uint32_t i = 0; i < n; i++) {
		struct rte_mbuf *m = mbuf_from(buf, &meta[i]);
		if (!m) {
			s->c[HS_D_CTL_TX_NOMBUF]++;
			continue;
		}
		if (rte_ring_sp_enqueue(hs.ports[meta[i].port].ctl_tx, m) != 0) {
			rte_pktmbuf_free(m);
			s->c[HS_D_CTL_TX_FULL]++;
			continue;
		}
		queued++;
	}
	if (queued)
		hs_worker_kick(&hs.workers[0]);
	return (int)queued;
}

int hs_reinject_burst(const uint8_t *buf, uint32_t buf_len, const struct hs_pkt_meta *meta, uint32_t n)
{
	int rc;
	uint32_t queued = 0;

	if (!hs.running)
		return hs_fail(-ENOTCONN, "shim not running");
	if ((rc = check_descs(buf, buf_len, meta, n, 14, 1)))
		return rc;
	struct hs_stats *s = hs_ctl_stats();
	for (uint32_t i = 0; i < n; i++) {
		struct rte_mbuf *m = mbuf_from(buf, &meta[i]);
		if (!m) {
			s->c[HS_D_CTL_TX_NOMBUF]++;
			continue;
		}
		if (rte_ring_sp_enqueue(hs.ports[meta[i].port].reinject, m) != 0) {
			rte_pktmbuf_free(m);
			s->c[HS_D_CTL_TX_FULL]++;
			continue;
		}
		queued++;
	}
	if (queued)
		hs_worker_kick(&hs.workers[0]);
	return (int)queued;
}

int hs_ring_port_inject(uint32_t port, const uint8_t *buf, uint32_t buf_len, const struct hs_pkt_meta *meta,
			uint32_t n)
{
	int rc;
	uint32_t done = 0;

	if (!hs.running)
		return hs_fail(-ENOTCONN, "shim not running");
	if (port >= hs.n_ports || !hs.ports[port].is_ring)
		return hs_fail(-EINVAL, "port %u is not a ring port", port);
	if ((rc = check_descs(buf, buf_len, meta, n, 0, 0)))
		return rc;
	for (; done < n; done++) {
		struct rte_mbuf *m = mbuf_from(buf, &meta[done]);
		if (!m)
			return done ? (int)done : hs_fail(-ENOMEM, "no mbufs left");
		if (rte_ring_sp_enqueue(hs.ports[port].ring_rx[0], m) != 0) {
			rte_pktmbuf_free(m);
			break;
		}
	}
	if (done)
		hs_worker_kick(&hs.workers[0]);
	return (int)done;
}

int hs_ring_port_drain(uint32_t port, uint8_t *buf, uint32_t buf_len, struct hs_pkt_meta *meta, uint32_t max)
{
	struct rte_mbuf *ms[HS_BURST];
	uint32_t got = 0;

	if (!hs.running)
		return hs_fail(-ENOTCONN, "shim not running");
	if (port >= hs.n_ports || !hs.ports[port].is_ring)
		return hs_fail(-EINVAL, "port %u is not a ring port", port);
	if (!buf || !meta || buf_len < HS_PKT_MAX)
		return hs_fail(-EINVAL, "drain buffer needs at least %u bytes", HS_PKT_MAX);
	max = RTE_MIN(max, buf_len / HS_PKT_MAX);
	for (uint32_t q = 0; q < hs.n_workers && got < max; q++) {
		for (;;) {
			unsigned int n = rte_ring_sc_dequeue_burst(hs.ports[port].ring_tx[q], (void **)ms,
								   RTE_MIN(max - got, (uint32_t)HS_BURST), NULL);
			if (!n)
				break;
			uint32_t first = got;
			got += copy_out(ms, n, buf, meta, NULL, first, 0);
			for (uint32_t i = first; i < got; i++) {
				meta[i].port = (uint16_t)port;
				meta[i].reason = 0;
				meta[i].worker = (uint16_t)q;
			}
		}
	}
	return (int)got;
}

static const char *const counter_names[HS_COUNTER_MAX] = {
#define HS_X(id, name) name,
	HS_COUNTERS(HS_X)
#undef HS_X
#define HS_X(id, name) "drop_" name,
	HS_DROP_REASONS(HS_X)
#undef HS_X
};

uint32_t hs_counter_count(void) { return HS_COUNTER_MAX; }

const char *hs_counter_name(uint32_t i) { return i < HS_COUNTER_MAX ? counter_names[i] : NULL; }

int hs_stats_read(uint64_t *out, uint32_t n)
{
	if (!hs.running)
		return hs_fail(-ENOTCONN, "shim not running");
	uint32_t rows = hs.n_workers + 1;
	if (!out || n < rows * HS_COUNTER_MAX)
		return hs_fail(-ENOSPC, "stats need %u values", rows * HS_COUNTER_MAX);
	for (uint32_t r = 0; r < rows; r++)
		for (uint32_t c = 0; c < HS_COUNTER_MAX; c++)
			out[r * HS_COUNTER_MAX + c] = __atomic_load_n(&hs.stats[r].c[c], __ATOMIC_RELAXED);
	return (int)rows;
}

int hs_exc_wait(uint32_t timeout_ms)
{
	if (!hs.running)
		return hs_fail(-ENOTCONN, "shim not running");
	if (hs_exc_arm() == 1)
		return 1;
	struct pollfd pfd = { .fd = hs.exc_pipe[0], .events = POLLIN };
	int rc = poll(&pfd, 1, (int)timeout_ms);
	__atomic_store_n(&hs.exc_waiting, 0, __ATOMIC_SEQ_CST);
	if (rc < 0)
		return hs_fail(-errno, "poll: %s", strerror(errno));
	uint8_t drain[64];
	while (read(hs.exc_pipe[0], drain, sizeof(drain)) > 0)
		;
	return rte_ring_count(hs.exc) ? 1 : 0;
}

int hs_exc_wake(void)
{
	if (!hs.running)
		return hs_fail(-ENOTCONN, "shim not running");
	hs_exc_signal();
	return 0;
}

void hs_exc_signal(void)
{
	const uint8_t one = 1;
	/* EAGAIN: the pipe is full of earlier wake-ups, which wake the reader as well. */
	(void)!write(hs.exc_pipe[1], &one, 1);
}

int hs_exc_notify_fd(void)
{
	if (!hs.running)
		return hs_fail(-ENOTCONN, "shim not running");
	int fd = fcntl(hs.exc_pipe[0], F_DUPFD_CLOEXEC, 0);
	if (fd < 0)
		return hs_fail(-errno, "dup of the exception pipe: %s", strerror(errno));
	return fd;
}

int hs_exc_arm(void)
{
	if (!hs.running)
		return hs_fail(-ENOTCONN, "shim not running");
	if (rte_ring_count(hs.exc))
		return 1;
	__atomic_store_n(&hs.exc_waiting, 1, __ATOMIC_SEQ_CST);
	/* Re-check after announcing ourselves: a worker that enqueued in between saw no waiter. */
	if (rte_ring_count(hs.exc)) {
		__atomic_store_n(&hs.exc_waiting, 0, __ATOMIC_SEQ_CST);
		return 1;
	}
	return 0;
}

static int conn_command(uint32_t op, uint32_t worker, uint32_t conn_id, uint32_t gen)
{
	if (!hs.running)
		return hs_fail(-ENOTCONN, "shim not running");
	if (worker >= hs.n_workers)
		return hs_fail(-EINVAL, "worker %u out of range (%u workers)", worker, hs.n_workers);
	struct hs_cmd c = { .op = op, .idx = conn_id, .gen = gen };
	if (rte_ring_sp_enqueue_elem(hs.workers[worker].cmd, &c, sizeof(c)) != 0)
		return hs_fail(-EAGAIN, "worker %u command ring is full", worker);
	hs_worker_kick(&hs.workers[worker]);
	return 0;
}

int hs_conn_freeze(uint32_t worker, uint32_t conn_id, uint32_t conn_gen)
{
	return conn_command(HS_CMD_FREEZE, worker, conn_id, conn_gen);
}

int hs_conn_handoff(uint32_t worker, uint32_t conn_id, uint32_t conn_gen)
{
	return conn_command(HS_CMD_HANDOFF, worker, conn_id, conn_gen);
}

int hs_conn_resume(uint32_t worker, uint32_t conn_id, uint32_t conn_gen)
{
	return conn_command(HS_CMD_RESUME, worker, conn_id, conn_gen);
}

int hs_conn_reset(uint32_t worker, uint32_t conn_id, uint32_t conn_gen)
{
	return conn_command(HS_CMD_RESET, worker, conn_id, conn_gen);
}

int hs_cookie_rotate(const uint8_t secret[16])
{
	if (!hs.running)
		return hs_fail(-ENOTCONN, "shim not running");
	if (!secret)
		return hs_fail(-EINVAL, "secret: NULL");
	/* Not atomic with respect to workers: a cookie checked during the copy
	 * may fail once, and the client's retransmission succeeds. */
	memcpy(hs.cookie.prev, hs.cookie.cur, 16);
	memcpy(hs.cookie.cur, secret, 16);
	return 0;
}

int hs_cookie_set(const uint8_t gen[16], const uint8_t alt[16])
{
	if (!hs.running)
		return hs_fail(-ENOTCONN, "shim not running");
	if (!gen || !alt)
		return hs_fail(-EINVAL, "secret: NULL");
	/* As hs_cookie_rotate: a check racing the copy may fail once. */
	memcpy(hs.cookie.prev, alt, 16);
	memcpy(hs.cookie.cur, gen, 16);
	return 0;
}

int hs_clock_override(uint64_t ms)
{
	hs.clock_override_ms = ms;
	return 0;
}
