/* SPDX-License-Identifier: MIT
 * The tunnel check's map layout, shared by the BPF classifier
 * (bpf/tunnel.bpf.c) and the library (hh_tunnel.c).
 */
#ifndef HH_TUNNEL_KEY_H
#define HH_TUNNEL_KEY_H

#include <linux/types.h>

/** One flow a host injected: the VNI it is tunnelled with and its inner 4-tuple. Addresses and ports in network order. */
struct hh_flow_key {
	__u32 vni;         /**< flow ID, host order, 24 bits */
	__u32 client_ip;   /**< inner source address, network order */
	__u32 vip;         /**< inner destination address, network order */
	__u16 client_port; /**< network order */
	__u16 vip_port;    /**< network order */
};

/** Per-CPU counters (BPF_MAP_TYPE_PERCPU_ARRAY index). One list, the X-macro of the refusal reasons. */
#define HH_TUNNEL_COUNTERS(X)                                                     \
	X(TUNNELLED, "tunnelled")          /* a live flow's packet, let in */     \
	X(REFUSED_FLOW, "refused_flow")    /* VNI + 4-tuple is no live flow */    \
	X(REFUSED_SENDER, "refused_sender") /* outer source is not a balancer */  \
	X(REFUSED_MALFORMED, "refused_malformed") /* no tunnel key, not IPv4/TCP, truncated */

enum hh_tunnel_counter {
#define HH_X(id, name) HH_TC_##id,
	HH_TUNNEL_COUNTERS(HH_X)
#undef HH_X
	HH_TC_COUNT
};

/** Capacity of the flow map; the library refuses more (-ENOSPC), counted. */
#define HH_TUNNEL_MAX_FLOWS 262144
/** Capacity of the balancer allowlist (outer source addresses). */
#define HH_TUNNEL_MAX_BALANCERS 64

#endif
