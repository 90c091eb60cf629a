// SPDX-License-Identifier: GPL-2.0 OR MIT
/* The host's tunnel check (design.md §1, C11) as a tc classifier on the
 * ingress of the `vxlan external` device: a decapsulated packet goes up the
 * stack only if its VNI and inner 4-tuple are a flow this host injected
 * (hh_flows, filled by hh_tunnel_allow) and, when the allowlist is on, its
 * outer source is a balancer (hh_balancers). Everything else on the device
 * is dropped and counted (hh_counters, per CPU, enum hh_tunnel_counter):
 *
 *   no tunnel metadata                       -> refused_malformed, SHOT
 *   allowlist on, outer source not in it     -> refused_sender, SHOT
 *   inner not IPv4/TCP, a fragment, short    -> refused_malformed, SHOT
 *   (VNI, client, VIP, ports) not in flows   -> refused_flow, SHOT
 *   else                                     -> tunnelled, OK
 *
 * One decision function, two entry points: hh_tunnel_check (attached) reads
 * the metadata with bpf_skb_get_tunnel_key; hh_tunnel_test (loaded only for
 * tests, never attached) takes it from __sk_buff.cb so BPF_PROG_TEST_RUN can
 * drive the rest with crafted frames (hh_tunnel_prog.h).
 *
 * GPL: bpf_skb_get_tunnel_key is a GPL-only helper.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "hh_tunnel_key.h"
#include "hh_tunnel_prog.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HH_TUNNEL_MAX_FLOWS);
	/* Entries allocated on update: memory follows the live flows, not the capacity. */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct hh_flow_key);
	__type(value, __u32);
} hh_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HH_TUNNEL_MAX_BALANCERS);
	__type(key, __u32); /* outer source address, host order (bpf_tunnel_key.remote_ipv4) */
	__type(value, __u32);
} hh_balancers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, HH_CFG_COUNT);
	__type(key, __u32);
	__type(value, __u32);
} hh_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HH_TC_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} hh_counters SEC(".maps");

static __always_inline int verdict(__u32 counter, int action)
{
	__u64 *c = bpf_map_lookup_elem(&hh_counters, &counter);
	if (c)
		*c += 1; /* per CPU, and tc runs with migration disabled */
	return action;
}

static __always_inline int check(struct __sk_buff *skb, __u32 flags, __u32 vni, __u32 remote)
{
	if (!(flags & HH_TEST_HAS_KEY))
		return verdict(HH_TC_REFUSED_MALFORMED, TC_ACT_SHOT);

	__u32 slot = HH_CFG_CHECK_SENDER;
	__u32 *check_sender = bpf_map_lookup_elem(&hh_config, &slot);
	if (check_sender && *check_sender) {
		if ((flags & HH_TEST_IPV6) || !bpf_map_lookup_elem(&hh_balancers, &remote))
			return verdict(HH_TC_REFUSED_SENDER, TC_ACT_SHOT);
	}

	struct hh_flow_key k = {};
	int r = hh_parse_inner((const unsigned char *)(long)skb->data, (const unsigned char *)(long)skb->data_end, &k);
	if (r == HH_PARSE_SHORT) {
		/* Headers outside the linear part (or a truncated frame): pull them in, parse again. */
		__u32 want = skb->len < HH_PARSE_MAX_HEADERS ? skb->len : HH_PARSE_MAX_HEADERS;
		if (bpf_skb_pull_data(skb, want) == 0)
			r = hh_parse_inner((const unsigned char *)(long)skb->data,
					   (const unsigned char *)(long)skb->data_end, &k);
	}
	if (r != HH_PARSE_OK)
		return verdict(HH_TC_REFUSED_MALFORMED, TC_ACT_SHOT);

	k.vni = vni;
	if (!bpf_map_lookup_elem(&hh_flows, &k))
		return verdict(HH_TC_REFUSED_FLOW, TC_ACT_SHOT);
	return verdict(HH_TC_TUNNELLED, TC_ACT_OK);
}

SEC("tc")
int hh_tunnel_check(struct __sk_buff *skb)
{
	struct bpf_tunnel_key key = {};

	if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0) == 0)
		return check(skb, HH_TEST_HAS_KEY, key.tunnel_id, key.remote_ipv4);
	/* An IPv6 outer header (the external device listens on both families). */
	if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), BPF_F_TUNINFO_IPV6) == 0)
		return check(skb, HH_TEST_HAS_KEY | HH_TEST_IPV6, key.tunnel_id, 0);
	return check(skb, 0, 0, 0);
}

SEC("tc")
int hh_tunnel_test(struct __sk_buff *skb)
{
	return check(skb, skb->cb[0], skb->cb[1], skb->cb[2]);
}

char LICENSE[] SEC("license") = "GPL";
