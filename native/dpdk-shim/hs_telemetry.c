/* SPDX-License-Identifier: MIT
 * DPDK telemetry: /handoff/info, /handoff/stats, /handoff/drops,
 * /handoff/workers, /handoff/mappings, /handoff/accept, /handoff/hosts.
 *
 * Each worker is the only writer of its counter row and of its accept and
 * hold bookkeeping; the control thread is the only writer of the mapping
 * counts and the host table. Those values are word-sized, so relaxed atomic
 * loads give a consistent value each, as hs_stats_read does; figures taken
 * from different words may be a few packets apart. A mutex held by every
 * callback and by hs_telemetry_detach keeps hs_stop from freeing what a
 * callback is reading.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <rte_byteorder.h>
#include <rte_lcore.h>
#include <rte_log.h>
#include <rte_ring.h>
#include <rte_telemetry.h>
#include <rte_version.h>

#include "hs_common.h"
#include "hs_state.h"
#include "hs_telemetry.h"

#define LD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

static pthread_mutex_t tel_lock = PTHREAD_MUTEX_INITIALIZER;
static int attached;   /* under tel_lock: shim state may be read */
static int registered; /* under tel_lock: commands registered (once per process) */

/* Parameter of /handoff/stats and /handoff/drops: none (every row summed),
 * a worker index, or "control". @return the row, ROW_ALL, or -EINVAL. */
#define ROW_ALL (-1)
static int parse_row(const char *params)
{
	if (!params || !*params)
		return ROW_ALL;
	if (strcmp(params, "control") == 0)
		return (int)hs.n_workers;
	char *end;
	unsigned long v = strtoul(params, &end, 10);
	if (end == params || *end || v >= hs.n_workers)
		return -EINVAL;
	return (int)v;
}

/* Counters of one row, or of every row summed (workers and control). */
static void read_row(int row, uint64_t *v)
{
	memset(v, 0, sizeof(uint64_t) * HS_COUNTER_MAX);
	uint32_t first = row == ROW_ALL ? 0 : (uint32_t)row;
	uint32_t last = row == ROW_ALL ? hs.n_workers : (uint32_t)row;
	for (uint32_t r = first; r <= last; r++)
		for (uint32_t c = 0; c < HS_COUNTER_MAX; c++)
			v[c] += LD(hs.stats[r].c[c]);
}

static uint64_t drops_of(const uint64_t *v)
{
	uint64_t sum = 0;
	for (uint32_t c = HS_D_ZERO_LEN; c < HS_COUNTER_MAX; c++)
		sum += v[c];
	return sum;
}

static void fmt_ip(char *s, size_t n, uint32_t host_order)
{
	snprintf(s, n, "%u.%u.%u.%u", host_order >> 24, (host_order >> 16) & 0xff, (host_order >> 8) & 0xff,
		 host_order & 0xff);
}

static void fmt_mac(char *s, size_t n, const uint8_t m[6])
{
	snprintf(s, n, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
}

/* Attach a child container to dict @p d; it is freed with the reply, or here
 * if it cannot be attached. A failed allocation marks the reply incomplete
 * rather than failing it (a failing callback would leak its children). */
static struct rte_tel_data *new_dict(struct rte_tel_data *d)
{
	struct rte_tel_data *c = rte_tel_data_alloc();
	if (!c) {
		rte_tel_data_add_dict_int(d, "incomplete", 1);
		return NULL;
	}
	rte_tel_data_start_dict(c);
	return c;
}

static void attach_child(struct rte_tel_data *d, const char *name, struct rte_tel_data *c)
{
	if (c && rte_tel_data_add_dict_container(d, name, c, 0) != 0) {
		rte_tel_data_free(c);
		rte_tel_data_add_dict_int(d, "incomplete", 1);
	}
}

/* Every callback: take the lock, answer "not running" (null) when detached. */
#define BEGIN()                                                                                 \
	pthread_mutex_lock(&tel_lock);                                                          \
	if (!attached) {                                                                        \
		pthread_mutex_unlock(&tel_lock);                                                \
		return -ENOTCONN;                                                               \
	}
#define END(rc)                                                                                 \
	do {                                                                                    \
		pthread_mutex_unlock(&tel_lock);                                                \
		return (rc);                                                                    \
	} while (0)

static int cmd_info(const char *cmd, const char *params, struct rte_tel_data *d)
{
	char s[64];
	rte_tel_data_start_dict(d);
	rte_tel_data_add_dict_int(d, "abi_version", HS_ABI_VERSION);
	rte_tel_data_add_dict_string(d, "dpdk_version", rte_version());
	pthread_mutex_lock(&tel_lock);
	rte_tel_data_add_dict_int(d, "running", attached);
	if (!attached)
		END(0);
	rte_tel_data_add_dict_int(d, "control_lcore", (int)rte_get_main_lcore());
	rte_tel_data_add_dict_int(d, "workers", (int)hs.n_workers);
	struct rte_tel_data *lc = rte_tel_data_alloc();
	if (lc) {
		rte_tel_data_start_array(lc, RTE_TEL_INT_VAL);
		for (uint32_t i = 0; i < hs.n_workers; i++)
			rte_tel_data_add_array_int(lc, (int)hs.workers[i].lcore);
		if (rte_tel_data_add_dict_container(d, "worker_lcores", lc, 0) != 0)
			rte_tel_data_free(lc);
	}
	rte_tel_data_add_dict_int(d, "counters", HS_COUNTER_MAX);
	rte_tel_data_add_dict_u64(d, "mapping_capacity", hs.cfg.mapping_capacity);
	rte_tel_data_add_dict_u64(d, "accept_capacity", hs.cfg.accept_capacity);
	rte_tel_data_add_dict_u64(d, "accept_max_bytes", hs.cfg.accept_max_bytes);
	rte_tel_data_add_dict_u64(d, "accept_timeout_ms", hs.cfg.accept_timeout_ms);
	rte_tel_data_add_dict_u64(d, "announce_after_ms", hs.cfg.announce_after_ms);
	rte_tel_data_add_dict_u64(d, "hold_flows", hs.cfg.hold_flows);
	rte_tel_data_add_dict_u64(d, "hold_per_flow", hs.cfg.hold_per_flow);
	rte_tel_data_add_dict_u64(d, "hold_total", hs.cfg.hold_total);
	rte_tel_data_add_dict_u64(d, "mbufs", hs.cfg.mbufs);
	rte_tel_data_add_dict_u64(d, "idle_sleep_us", hs.cfg.idle_sleep_us);
	rte_tel_data_add_dict_int(d, "ports", (int)hs.n_ports);
	for (uint32_t i = 0; i < hs.n_ports; i++) {
		const struct hs_port *p = &hs.ports[i];
		struct rte_tel_data *pd = new_dict(d);
		if (!pd)
			break;
		rte_tel_data_add_dict_string(pd, "device", hs.cfg.ports[i].device);
		rte_tel_data_add_dict_int(pd, "port_id", p->port_id);
		fmt_mac(s, sizeof(s), p->mac);
		rte_tel_data_add_dict_string(pd, "mac", s);
		fmt_ip(s, sizeof(s), rte_be_to_cpu_32(p->ip));
		rte_tel_data_add_dict_string(pd, "ip", s);
		rte_tel_data_add_dict_int(pd, "mtu", p->mtu);
		rte_tel_data_add_dict_int(pd, "ring", p->is_ring);
		snprintf(s, sizeof(s), "port%u", i);
		attach_child(d, s, pd);
	}
	struct rte_tel_data *vd = rte_tel_data_alloc();
	if (vd) {
		rte_tel_data_start_array(vd, RTE_TEL_STRING_VAL);
		for (uint32_t i = 0; i < hs.n_vips; i++) {
			char ip[16];
			fmt_ip(ip, sizeof(ip), rte_be_to_cpu_32(hs.vips[i].ip));
			snprintf(s, sizeof(s), "%s:%u/%s", ip, rte_be_to_cpu_16(hs.vips[i].port),
				 hs.vips[i].proto == IPPROTO_TCP ? "tcp" : "udp");
			rte_tel_data_add_array_string(vd, s);
		}
		if (rte_tel_data_add_dict_container(d, "vips", vd, 0) != 0)
			rte_tel_data_free(vd);
	}
	END(0);
}

static int cmd_stats(const char *cmd, const char *params, struct rte_tel_data *d)
{
	uint64_t v[HS_COUNTER_MAX];
	BEGIN();
	int row = parse_row(params);
	if (row == -EINVAL)
		END(-EINVAL);
	read_row(row, v);
	rte_tel_data_start_dict(d);
	for (uint32_t c = 0; c < HS_COUNTER_MAX; c++)
		rte_tel_data_add_dict_u64(d, hs_counter_name(c), v[c]);
	END(0);
}

static int cmd_drops(const char *cmd, const char *params, struct rte_tel_data *d)
{
	uint64_t v[HS_COUNTER_MAX];
	BEGIN();
	int row = parse_row(params);
	if (row == -EINVAL)
		END(-EINVAL);
	read_row(row, v);
	rte_tel_data_start_dict(d);
	rte_tel_data_add_dict_u64(d, "total", drops_of(v));
	for (uint32_t c = HS_D_ZERO_LEN; c < HS_COUNTER_MAX; c++)
		rte_tel_data_add_dict_u64(d, hs_counter_name(c) + strlen("drop_"), v[c]);
	END(0);
}

static int cmd_workers(const char *cmd, const char *params, struct rte_tel_data *d)
{
	uint64_t v[HS_COUNTER_MAX];
	char name[32];
	BEGIN();
	rte_tel_data_start_dict(d);
	for (uint32_t i = 0; i < hs.n_workers; i++) {
		struct hs_worker *w = &hs.workers[i];
		struct rte_tel_data *wd = new_dict(d);
		if (!wd)
			break;
		read_row((int)i, v);
		rte_tel_data_add_dict_int(wd, "lcore", (int)w->lcore);
		rte_tel_data_add_dict_u64(wd, "rx_packets", v[HS_C_RX_PACKETS]);
		rte_tel_data_add_dict_u64(wd, "tx_packets", v[HS_C_TX_PACKETS]);
		rte_tel_data_add_dict_u64(wd, "encap_packets", v[HS_C_ENCAP_PACKETS]);
		rte_tel_data_add_dict_u64(wd, "exceptions", v[HS_C_EXC_MISS] + v[HS_C_EXC_LOCAL] + v[HS_C_EXC_CONN]);
		rte_tel_data_add_dict_u64(wd, "drops", drops_of(v));
		rte_tel_data_add_dict_u64(wd, "idle_sleeps", v[HS_C_IDLE_SLEEPS]);
		rte_tel_data_add_dict_u64(wd, "held_packets", LD(w->held));
		rte_tel_data_add_dict_u64(wd, "accept_live", w->acc.cap - RTE_MIN(LD(w->acc.n_free), w->acc.cap));
		rte_tel_data_add_dict_u64(wd, "commands_queued", rte_ring_count(w->cmd));
		snprintf(name, sizeof(name), "worker%u", i);
		attach_child(d, name, wd);
	}
	struct rte_tel_data *cd = new_dict(d);
	if (cd) {
		read_row((int)hs.n_workers, v);
		rte_tel_data_add_dict_int(cd, "lcore", (int)rte_get_main_lcore());
		rte_tel_data_add_dict_u64(cd, "control_tx", v[HS_C_CTL_TX]);
		rte_tel_data_add_dict_u64(cd, "drops", drops_of(v));
		rte_tel_data_add_dict_u64(cd, "exceptions_waiting", rte_ring_count(hs.exc));
		attach_child(d, "control", cd);
	}
	END(0);
}

static int cmd_mappings(const char *cmd, const char *params, struct rte_tel_data *d)
{
	BEGIN();
	uint32_t live = LD(hs.n_live), pending = LD(hs.n_pending), n_free = LD(hs.n_free);
	uint64_t held = 0;
	for (uint32_t i = 0; i < hs.n_workers; i++)
		held += LD(hs.workers[i].held);
	rte_tel_data_start_dict(d);
	rte_tel_data_add_dict_u64(d, "capacity", hs.cfg.mapping_capacity);
	rte_tel_data_add_dict_u64(d, "live", live);
	/* Only the control thread makes or ends PENDING, so this count is exact;
	 * workers move ACTIVE to CLOSING themselves, so those two are one figure. */
	rte_tel_data_add_dict_u64(d, "pending", RTE_MIN(pending, live));
	rte_tel_data_add_dict_u64(d, "active_or_closing", live - RTE_MIN(pending, live));
	/* Deleted, waiting for every worker to pass a quiescent state (RCU). */
	uint32_t used = hs.n_entries - RTE_MIN(n_free, hs.n_entries);
	rte_tel_data_add_dict_u64(d, "awaiting_reclaim", used > live ? used - live : 0);
	rte_tel_data_add_dict_u64(d, "held_packets", held);
	rte_tel_data_add_dict_u64(d, "hold_total", hs.cfg.hold_total);
	/* The workers' flat index: slots taken (live or awaiting reclaim), and
	 * live mappings that found no room in it (looked up in rte_hash). */
	rte_tel_data_add_dict_u64(d, "flat_buckets", hs.ft.mask + 1u);
	rte_tel_data_add_dict_u64(d, "flat_used", LD(hs.ft.used));
	rte_tel_data_add_dict_u64(d, "overflow", LD(hs.n_overflow));
	END(0);
}

static int cmd_accept(const char *cmd, const char *params, struct rte_tel_data *d)
{
	uint64_t v[HS_COUNTER_MAX];
	char name[32];
	uint64_t live = 0, cap = 0;
	BEGIN();
	rte_tel_data_start_dict(d);
	for (uint32_t i = 0; i < hs.n_workers; i++) {
		struct hs_worker *w = &hs.workers[i];
		uint32_t l = w->acc.cap - RTE_MIN(LD(w->acc.n_free), w->acc.cap);
		live += l;
		cap += w->acc.cap;
		struct rte_tel_data *wd = new_dict(d);
		if (!wd)
			continue;
		rte_tel_data_add_dict_u64(wd, "live", l);
		rte_tel_data_add_dict_u64(wd, "capacity", w->acc.cap);
		snprintf(name, sizeof(name), "worker%u", i);
		attach_child(d, name, wd);
	}
	read_row(ROW_ALL, v);
	rte_tel_data_add_dict_u64(d, "live", live);
	rte_tel_data_add_dict_u64(d, "capacity", cap);
	rte_tel_data_add_dict_u64(d, "syn_received", v[HS_C_SYN_RCVD]);
	rte_tel_data_add_dict_u64(d, "accepted", v[HS_C_ACCEPTED]);
	rte_tel_data_add_dict_u64(d, "handoffs_frozen", v[HS_C_FROZEN]);
	rte_tel_data_add_dict_u64(d, "timeouts", v[HS_C_ACCEPT_TIMEOUTS]);
	rte_tel_data_add_dict_u64(d, "drop_accept_table_full", v[HS_D_ACCEPT_FULL]);
	rte_tel_data_add_dict_u64(d, "drop_bad_cookie", v[HS_D_BAD_COOKIE]);
	END(0);
}

static int cmd_hosts(const char *cmd, const char *params, struct rte_tel_data *d)
{
	char s[32];
	BEGIN();
	if (params && *params) {
		char *end;
		unsigned long id = strtoul(params, &end, 10);
		if (end == params || *end || id >= HS_MAX_HOSTS || !LD(hs.hosts[id]))
			END(-EINVAL);
		/* The configuration as last set; never the template itself, which
		 * a concurrent hs_host_set may free. */
		struct hs_host_conf h = hs.host_conf[id];
		rte_tel_data_start_dict(d);
		rte_tel_data_add_dict_int(d, "id", (int)id);
		fmt_ip(s, sizeof(s), h.ip);
		rte_tel_data_add_dict_string(d, "ip", s);
		rte_tel_data_add_dict_int(d, "port", h.port);
		fmt_mac(s, sizeof(s), h.nexthop_mac);
		rte_tel_data_add_dict_string(d, "nexthop_mac", s);
		fmt_mac(s, sizeof(s), h.inner_mac);
		rte_tel_data_add_dict_string(d, "inner_mac", s);
		END(0);
	}
	uint32_t n = 0;
	struct rte_tel_data *ids = rte_tel_data_alloc();
	if (ids)
		rte_tel_data_start_array(ids, RTE_TEL_INT_VAL);
	rte_tel_data_start_dict(d);
	for (uint32_t i = 0; i < HS_MAX_HOSTS; i++) {
		if (!LD(hs.hosts[i]))
			continue;
		n++;
		if (ids && rte_tel_data_add_array_int(ids, (int)i) == -ENOSPC)
			rte_tel_data_add_dict_int(d, "ids_truncated", 1);
	}
	rte_tel_data_add_dict_u64(d, "defined", n);
	if (ids && rte_tel_data_add_dict_container(d, "ids", ids, 0) != 0)
		rte_tel_data_free(ids);
	END(0);
}

static const struct {
	const char *cmd;
	telemetry_cb fn;
	const char *help;
} commands[] = {
	{ "/handoff/info", cmd_info, "Handoff shim: ABI, DPDK version, lcores, ports, VIPs, table sizes. No parameters" },
	{ "/handoff/stats", cmd_stats, "Handoff counters and drops summed over lcores. Parameter: worker index or 'control' for one row" },
	{ "/handoff/drops", cmd_drops, "Handoff drop reasons and their total. Parameter: worker index or 'control' for one row" },
	{ "/handoff/workers", cmd_workers, "Handoff per-lcore summary: packets, drops, held packets, accept table, command queue" },
	{ "/handoff/mappings", cmd_mappings, "Handoff mapping table: capacity, live, pending, awaiting reclaim, held packets" },
	{ "/handoff/accept", cmd_accept, "Handoff accept tables: live connections and capacity per worker, SYNs, accepts, timeouts" },
	{ "/handoff/hosts", cmd_hosts, "Handoff hosts: defined IDs. Parameter: a host ID for its address, port and MACs" },
};

int hs_telemetry_attach(void)
{
	int rc = 0;
	pthread_mutex_lock(&tel_lock);
	if (!registered) {
		for (size_t i = 0; i < RTE_DIM(commands) && !rc; i++)
			rc = rte_telemetry_register_cmd(commands[i].cmd, commands[i].fn, commands[i].help);
		registered = rc == 0;
	}
	attached = rc == 0;
	pthread_mutex_unlock(&tel_lock);
	if (rc)
		return hs_fail(rc, "registering telemetry commands: %s", strerror(-rc));
	return 0;
}

void hs_telemetry_detach(void)
{
	pthread_mutex_lock(&tel_lock);
	attached = 0;
	pthread_mutex_unlock(&tel_lock);
}

void hs_telemetry_host_conf_set(uint32_t id, const struct hs_host_conf *h)
{
	pthread_mutex_lock(&tel_lock);
	hs.host_conf[id] = *h;
	pthread_mutex_unlock(&tel_lock);
}
