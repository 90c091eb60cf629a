/* SPDX-License-Identifier: MIT
 * Handoff DPDK shim: the public ABI bound by src/offload with koffi.
 *
 * Every struct here crosses the FFI boundary. Its size and field offsets are
 * published by hs_abi_layout() and checked against the koffi declarations by
 * test/offload-abi.test.ts, so change both sides and bump HS_ABI_VERSION.
 *
 * Conventions: addresses and ports are in host byte order at this boundary;
 * functions return 0 (or a count) on success and -errno on failure, with a
 * human-readable reason in hs_last_error(). Nothing here exits the process.
 */
#ifndef HANDOFF_SHIM_H
#define HANDOFF_SHIM_H

#include <stdint.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HS_ABI_VERSION 7

#define HS_MAX_PORTS 8
#define HS_MAX_WORKERS 16
#define HS_MAX_VIPS 64
#define HS_MAX_HOSTS 4096
#define HS_MAX_HOLD_PER_FLOW 64
/** Largest frame carried through the exception and TX bursts. */
#define HS_PKT_MAX 2048
#define HS_DEVICE_NAME_LEN 64

/** Mapping states (design.md §3.4-7). */
enum hs_flow_state {
	HS_STATE_PENDING = 1, /**< blob in flight: packets are held */
	HS_STATE_ACTIVE = 2,  /**< host has the socket: packets are tunnelled */
	HS_STATE_CLOSING = 3, /**< FIN or RST seen: still tunnelled until removed */
	HS_STATE_REOPENED = 4, /**< a new SYN on a CLOSING flow's 4-tuple: the data path ignores the
				    mapping (the new connection is accepted as any other); set by
				    workers only, removed by the control plane */
};

/** Why a packet reached the exception ring. */
enum hs_exc_reason {
	HS_EXC_MISS = 1,  /**< VIP service traffic with no mapping */
	HS_EXC_LOCAL = 2, /**< traffic to the balancer's own address */
	HS_EXC_CONN = 3,  /**< a connection event; see struct hs_conn_event */
	HS_EXC_STRAY = 4, /**< a non-SYN TCP segment of a flow this balancer has neither a mapping
			       nor a connection for (another balancer's, before a rehash or a restart):
			       rate-limited per worker by stray_rate / stray_burst */
	HS_EXC_ARP = 5,   /**< an ARP reply to one of the balancer's addresses, or a gratuitous ARP
			       (sender address = target address): what the control thread resolves
			       next hops from; at most 1000 a second per worker (burst 64) */
};

/** Connection events (bit mask: one packet may carry several). */
enum hs_conn_event_type {
	HS_EV_ACCEPTED = 1, /**< handshake completed with a valid cookie; with announce_after_ms set, on the
				 connection's first event instead (most often with HS_EV_DATA) */
	HS_EV_DATA = 2,     /**< new in-order bytes: payload_len at payload_off of the frame; freezes (see hs_conn_handoff) */
	HS_EV_FIN = 4,      /**< the client closed its side; freezes too */
	HS_EV_RESET = 8,    /**< the client reset the connection; it is gone */
	HS_EV_TIMEOUT = 16, /**< never classified: the shim reset it; it is gone */
	HS_EV_FROZEN = 32,  /**< answer to hs_conn_freeze: final state; the shim forgot it */
	HS_EV_SILENT = 64,  /**< no byte within announce_after_ms of the handshake: announced now (with
				 HS_EV_ACCEPTED), still accepted; decide it without bytes */
};

struct hs_port_conf {
	/** DPDK device name ("net_tap0", "0000:01:00.0"), or with ring=1 the
	 *  name of an in-process ring port the shim creates (tests). */
	char device[HS_DEVICE_NAME_LEN];
	uint32_t ip;      /**< the balancer's own address on this port */
	uint16_t mtu;     /**< underlay MTU (IP bytes); 0 means 1500 */
	uint8_t ring;     /**< 1: create a ring port fed by hs_ring_port_inject */
	uint8_t promisc;  /**< 1: enable promiscuous mode */
	uint16_t rx_desc; /**< 0 means 1024 */
	uint16_t tx_desc; /**< 0 means 1024 */
	uint8_t mac[6];   /**< all zero: the device's own; ring ports get 02:00:00:00:00:<n+1> */
	uint16_t reserved;
};

struct hs_vip_conf {
	uint32_t ip;
	uint16_t port;
	uint8_t proto; /**< IPPROTO_TCP or IPPROTO_UDP */
	uint8_t reserved;
};

struct hs_config {
	uint32_t n_ports;
	uint32_t n_vips;
	uint32_t n_workers;        /**< worker lcores used, taken in EAL order */
	uint32_t mbufs;            /**< mempool size; 0 means 8191 */
	uint32_t mapping_capacity; /**< 0 means 65536 */
	uint32_t hold_flows;       /**< PENDING flows that may hold packets; 0 means 1024 */
	uint32_t hold_per_flow;    /**< 0 means 8; at most HS_MAX_HOLD_PER_FLOW */
	uint32_t hold_total;       /**< held packets, all flows; 0 means 4096 */
	uint32_t exc_ring_size;    /**< power of two; 0 means 4096 */
	uint32_t tx_ring_size;     /**< power of two; 0 means 4096 */
	uint32_t idle_sleep_us;    /**< 0: pure busy-poll */
	uint32_t idle_spins;       /**< empty polls before sleeping; 0 means 64 */
	uint32_t accept_capacity;  /**< accepted, unclassified connections; 0 means 65536 */
	uint32_t accept_max_bytes; /**< bytes taken per connection before the window closes; 0 means 65535 */
	uint32_t accept_timeout_ms;/**< unclassified connections are reset after this; 0 means 10000 */
	uint32_t cookie_tick_s;    /**< SYN cookie time step; valid for two; 0 means 64 */
	uint8_t rcv_wscale;        /**< our window scale when the client offers one; 0 means 7 */
	uint8_t reset_bad_ack;     /**< 1: answer an ACK with a bad cookie with RST; 0: drop it */
	uint8_t reserved[2];
	uint8_t cookie_secret[16]; /**< all zero: random */
	uint32_t stray_rate;       /**< stray segments per second and worker passed up (HS_EXC_STRAY); 0: none, they are dropped as before */
	uint32_t stray_burst;      /**< token bucket depth for stray_rate; 0 means stray_rate / 10 + 1 */
	uint32_t idle_sleep_max_us;/**< after 20 ms with nothing to do, idle naps double from idle_sleep_us up to this; 0 means 1000 */
	uint32_t announce_after_ms;/**< 0: an HS_EV_ACCEPTED event as each handshake completes. Else a connection is
				        announced by its first event (bytes, FIN, reset, timeout), or by HS_EV_SILENT
				        after this many ms without one: one event per connection fewer */
	struct hs_port_conf ports[HS_MAX_PORTS];
	struct hs_vip_conf vips[HS_MAX_VIPS];
};

struct hs_host_conf {
	uint32_t ip;              /**< the host's underlay address (VTEP) */
	uint16_t port;            /**< shim port index the host is reached through */
	uint8_t nexthop_mac[6];   /**< outer Ethernet destination */
	uint8_t inner_mac[6];     /**< the host's VXLAN device MAC */
	uint16_t reserved;
};

/** A mapping record: 5-tuple to host and flow ID (design.md §1, C8). */
struct hs_mapping {
	uint32_t client_ip;
	uint32_t vip;
	uint16_t client_port;
	uint16_t vip_port;
	uint8_t proto;
	uint8_t state;   /**< enum hs_flow_state */
	uint16_t host_id;
	uint32_t flow_id; /**< VXLAN VNI: 24 bits */
	uint32_t reserved;
	uint64_t packets; /**< tunnelled so far (lookup only) */
	uint64_t bytes;
};

/** Per-packet descriptor of a burst buffer: no JS object per packet. */
struct hs_pkt_meta {
	uint32_t offset; /**< frame start within the burst buffer */
	uint16_t len;
	uint16_t port;   /**< shim port index */
	uint16_t reason; /**< enum hs_exc_reason (exception bursts) */
	uint16_t worker;
	uint32_t reserved;
};

/**
 * A connection event, delivered with its frame through the exception ring.
 * Addresses and ports in host order; sequence numbers are the balancer's view.
 */
struct hs_conn_event {
	uint32_t type;       /**< enum hs_conn_event_type bits */
	uint16_t worker;     /**< owning worker: commands go to it */
	uint16_t port;       /**< shim port the connection arrived on */
	uint32_t conn_id;
	uint32_t conn_gen;   /**< conn_id and conn_gen name the connection in commands */
	uint32_t client_ip;
	uint32_t vip;
	uint16_t client_port;
	uint16_t vip_port;
	uint32_t iss;        /**< our initial sequence number (the cookie) */
	uint32_t irs;        /**< the client's initial sequence number */
	uint32_t snd_nxt;    /**< iss + 1: the balancer never sends data */
	uint32_t rcv_nxt;    /**< next byte expected from the client (after this event) */
	uint32_t snd_wnd;    /**< the client's window in bytes (scaled) */
	uint32_t rcv_wnd;    /**< the window we advertise, in bytes */
	uint32_t ts_val;     /**< our timestamp clock now (ms) */
	uint32_t ts_ecr;     /**< the client's last TSval */
	uint32_t data_seq;   /**< sequence number of the first payload byte */
	uint16_t payload_off;/**< payload offset within the frame */
	uint16_t payload_len;
	uint16_t mss;        /**< MSS granted in our SYN-ACK */
	uint8_t snd_wscale;  /**< the client's window scale */
	uint8_t rcv_wscale;  /**< ours */
	uint8_t sack_ok;
	uint8_t ts_ok;
	uint16_t vlan_tci;   /**< the client's 802.1Q tag, 0 when untagged */
	uint8_t peer_mac[6]; /**< the client's (or its gateway's) MAC, to reach it directly */
};

/**
 * Fault injection on the blob path (tests): applied to frames the control
 * thread transmits and to frames for the balancer's own address. Rates in
 * parts per thousand.
 */
struct hs_fault {
	uint16_t drop_pm;
	uint16_t corrupt_pm;   /**< flip one random bit past the Ethernet header */
	uint16_t duplicate_pm;
	uint16_t reorder_pm;   /**< hold a frame back behind the next one */
	uint32_t seed;         /**< 0: keep the current random state */
};

struct hs_port_info {
	uint16_t port_id; /**< DPDK port id */
	uint8_t mac[6];
	uint32_t ip;
	uint16_t mtu;
	uint16_t reserved;
};

/** @return HS_ABI_VERSION. */
uint32_t hs_abi_version(void);

/**
 * Write the ABI layout (every struct's size and field offsets) as JSON.
 * With @p buf NULL, only measure.
 * @return bytes written (or needed) excluding the NUL; -ENOSPC if @p len is
 *   too small.
 */
int hs_abi_layout(char *buf, size_t len);

/** The reason for the last failure, or "" (never NULL). */
const char *hs_last_error(void);

/**
 * Initialise EAL from @p argv, configure ports, tables and rings, and launch
 * the workers.
 * @return 0, or -EALREADY (already running or EAL used in this process),
 *   -EINVAL (bad argument or configuration), -ENODEV (device not found),
 *   -ENOMEM (allocation failed), -EIO (device refused its configuration),
 *   or the negated rte_errno of rte_eal_init.
 */
int hs_init(int argc, const char *const *argv, const struct hs_config *cfg);

/**
 * Stop workers, close ports, free everything and clean EAL up. EAL cannot be
 * initialised again in the same process.
 * @return 0, or -ENOTCONN when not running.
 */
int hs_stop(void);

/** @return 1 while the workers run, else 0. */
int hs_running(void);

/**
 * @return 0 and *out filled, -ENOTCONN, or -EINVAL (bad port index).
 */
int hs_port_info(uint32_t port, struct hs_port_info *out);

/**
 * Define or replace host @p id. Safe while workers run (RCU).
 * @return 0, -ENOTCONN, -EINVAL (id or port out of range), -ENOMEM.
 */
int hs_host_set(uint32_t id, const struct hs_host_conf *host);

/**
 * Insert a mapping. The flow ID must fit 24 bits and the host be defined.
 * @return 0, -ENOTCONN, -EINVAL, -EEXIST, -ENOSPC (table full).
 */
int hs_mapping_insert(const struct hs_mapping *m);

/**
 * Insert @p n mappings, stopping at the first failure.
 * @return how many were inserted; on a failure, -errno if none was.
 */
int hs_mapping_insert_bulk(const struct hs_mapping *m, uint32_t n);

/**
 * Change a mapping's state. PENDING to ACTIVE releases the held packets in
 * order.
 * @return 0, -ENOTCONN, -EINVAL, -ENOENT, -EAGAIN (state set, but a worker's
 *   command ring was full: held packets go with the flow's next packet).
 */
int hs_mapping_set_state(const struct hs_mapping *key, uint32_t state);

/**
 * Remove a mapping; its held packets are dropped (counted).
 * @return 0, -ENOTCONN, -ENOENT.
 */
int hs_mapping_delete(const struct hs_mapping *key);

/** @return 0 and *out filled, -ENOTCONN, -ENOENT. */
int hs_mapping_lookup(const struct hs_mapping *key, struct hs_mapping *out);

/** @return the number of mappings, or -ENOTCONN. */
int hs_mapping_count(void);

/**
 * Move up to @p max exception packets into @p buf (HS_PKT_MAX bytes per
 * packet slot) with their descriptors in @p meta and, when @p events is not
 * NULL, their connection events (zeroed for other exceptions).
 * @return packets moved, -ENOTCONN, -EINVAL (buffer smaller than a slot).
 */
int hs_exc_burst(uint8_t *buf, uint32_t buf_len, struct hs_pkt_meta *meta, struct hs_conn_event *events,
		 uint32_t max);

/**
 * Block until the exception ring has packets or @p timeout_ms passes. Meant
 * for a thread-pool call (koffi async), so Node sleeps when idle and wakes at
 * once when busy; workers signal an eventfd only when a waiter is parked.
 * @return 1 if packets are waiting, 0 on timeout, -ENOTCONN, -EINTR.
 */
int hs_exc_wait(uint32_t timeout_ms);

/** Wake a blocked hs_exc_wait (shutdown). @return 0 or -ENOTCONN. */
int hs_exc_wake(void);

/**
 * A descriptor that becomes readable when a parked control thread should
 * look at the exception ring: a duplicate of the read end of the shim's
 * wake-up pipe, owned (and closed) by the caller. Node watches it in its
 * event loop (a net.Socket on the pipe), so waking costs one write by the
 * worker and no thread-pool round trip. Bytes read from it mean nothing.
 * @return the descriptor, -ENOTCONN, or -errno of the dup.
 */
int hs_exc_notify_fd(void);

/**
 * Park without blocking: announce that the control thread is about to sleep
 * in its own event loop, so the next exception makes a worker write to the
 * wake-up pipe (hs_exc_notify_fd). Returns 1 instead, and parks nothing,
 * when exceptions are already waiting: the caller takes them first.
 * @return 0 parked, 1 packets waiting, -ENOTCONN.
 */
int hs_exc_arm(void);

/**
 * Hand an accepted connection to its mapping, without an answer. An event
 * with HS_EV_DATA or HS_EV_FIN froze the connection: the worker has held
 * its later segments since (unACKed, at most 8; pure ACKs are consumed), so
 * that event's state is exact. The worker forgets the connection and moves
 * what it held to the mapping's hold. Call after inserting the PENDING
 * mapping. A stale conn_gen is counted (drop_stale_command) and ignored.
 * @return 0, -ENOTCONN, -EINVAL (worker out of range), -EAGAIN (command ring full).
 */
int hs_conn_handoff(uint32_t worker, uint32_t conn_id, uint32_t conn_gen);

/**
 * As hs_conn_handoff, for a connection no event froze (it sent nothing, or
 * was resumed since): the worker answers with an HS_EV_FROZEN event carrying
 * the final state.
 * @return 0, -ENOTCONN, -EINVAL, -EAGAIN.
 */
int hs_conn_freeze(uint32_t worker, uint32_t conn_id, uint32_t conn_gen);

/**
 * The bytes so far do not decide the connection: unfreeze it. The segments
 * held meanwhile are taken as if they arrived now; the next new byte freezes
 * it again with a new event. A connection not frozen: drop_stale_command.
 * @return 0, -ENOTCONN, -EINVAL, -EAGAIN.
 */
int hs_conn_resume(uint32_t worker, uint32_t conn_id, uint32_t conn_gen);

/**
 * Reset an accepted connection (RST to the client) and forget it.
 * @return 0, -ENOTCONN, -EINVAL, -EAGAIN.
 */
int hs_conn_reset(uint32_t worker, uint32_t conn_id, uint32_t conn_gen);

/**
 * Replace the SYN cookie secret; the previous one stays valid for checks.
 * @return 0, -ENOTCONN, -EINVAL.
 */
int hs_cookie_rotate(const uint8_t secret[16]);

/**
 * Set both SYN cookie secrets at once: @p gen makes new cookies, and a
 * cookie checks against @p gen or @p alt. A cluster of balancers derives
 * both from the cluster key and the clock, so a handshake whose ACK reaches
 * another balancer than its SYN still completes.
 * @return 0, -ENOTCONN, -EINVAL (NULL).
 */
int hs_cookie_set(const uint8_t gen[16], const uint8_t alt[16]);

/**
 * Run frames through the data path again, as if port @c meta[i].port had
 * received them: worker 0 looks each up in the mapping table and tunnels,
 * holds or drops it (drop_reinject_miss when it has no mapping; it never
 * returns to the exception ring). For packets the control thread held while
 * it found their flow's owner (HS_EXC_STRAY).
 * @return frames queued, -ENOTCONN, -EINVAL (a descriptor is out of range:
 *   nothing queued). Frames that find no mbuf or no ring room are counted
 *   (control_tx_no_mbuf, control_tx_ring_full), not queued.
 */
int hs_reinject_burst(const uint8_t *buf, uint32_t buf_len, const struct hs_pkt_meta *meta, uint32_t n);

/**
 * Point a mapping at another host (failover while PENDING).
 * @return 0, -ENOTCONN, -EINVAL (host undefined), -ENOENT.
 */
int hs_mapping_set_host(const struct hs_mapping *key, uint32_t host_id);

/**
 * Queue @p n frames described by @p meta (offset, len, port) from @p buf for
 * transmission by the workers.
 * @return frames queued (the rest are counted as control drops),
 *   -ENOTCONN, -EINVAL (a descriptor is out of range: nothing queued).
 */
int hs_tx_burst(const uint8_t *buf, uint32_t buf_len, const struct hs_pkt_meta *meta, uint32_t n);

/**
 * Feed frames to a ring port's receive side (tests, benchmarks).
 * @return frames enqueued, -ENOTCONN, -EINVAL (not a ring port or bad
 *   descriptor), -ENOMEM (no mbufs).
 */
int hs_ring_port_inject(uint32_t port, const uint8_t *buf, uint32_t buf_len,
			const struct hs_pkt_meta *meta, uint32_t n);

/**
 * Take what a ring port transmitted.
 * @return frames moved, -ENOTCONN, -EINVAL.
 */
int hs_ring_port_drain(uint32_t port, uint8_t *buf, uint32_t buf_len,
		       struct hs_pkt_meta *meta, uint32_t max);

/**
 * Set fault injection (all zero: off).
 * @return 0, -ENOTCONN, -EINVAL (a rate above 1000).
 */
int hs_fault_set(const struct hs_fault *f);

/**
 * Tests only: fix the timestamp clock (and so the cookie tick) at @p ms; 0
 * returns to the real clock. @return 0.
 */
int hs_clock_override(uint64_t ms);

/** @return how many counters each stats row has. */
uint32_t hs_counter_count(void);

/** @return counter @p i's name ("rx_packets", "drop_bad_ihl", ...) or NULL. */
const char *hs_counter_name(uint32_t i);

/**
 * Copy the counters: one row of hs_counter_count() values per worker, then
 * one row for the control thread.
 * @return rows written, -ENOTCONN, -ENOSPC (@p n too small).
 */
int hs_stats_read(uint64_t *out, uint32_t n);

/** @return workers running, or -ENOTCONN. */
int hs_worker_count(void);

/**
 * Accepted connections awaiting classification, all workers (a snapshot:
 * workers change it as they run). Bounded by accept_capacity per worker.
 * @return the count, or -ENOTCONN.
 */
int hs_accept_count(void);

/**
 * Whether a worker is in its idle sleep now (a snapshot): work the control
 * thread queues for it wakes it at once (counted as worker_wakeups).
 * @return 1 asleep, 0 polling, -ENOTCONN, -EINVAL (worker out of range).
 */
int hs_worker_asleep(uint32_t worker);

#ifdef __cplusplus
}
#endif

#endif
