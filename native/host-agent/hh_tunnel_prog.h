/* SPDX-License-Identifier: MIT
 * What the tunnel check's BPF classifier (bpf/tunnel.bpf.c) shares with the
 * library (hh_tunnel.c) and the fuzz target (fuzz/fuzz_tunnel_parse.c)
 * beyond the map layout of hh_tunnel_key.h: the inner packet parser, the
 * config map's slots, and the test program's context layout.
 *
 * The parser is plain C over a [p, end) byte range, with every read behind
 * an explicit bounds check in the form the BPF verifier tracks (pointer +
 * constant or bounded offset > end): the same source is the classifier's
 * direct packet access and a userspace function libFuzzer runs under ASan.
 */
#ifndef HH_TUNNEL_PROG_H
#define HH_TUNNEL_PROG_H

#include "hh_tunnel_key.h"

#ifndef HH_ALWAYS_INLINE
#define HH_ALWAYS_INLINE static inline __attribute__((always_inline))
#endif

/** Bytes of the inner frame the parser may read: Ethernet, IPv4 with the longest options, a TCP header (what the classifier makes linear with bpf_skb_pull_data when they are not). */
#define HH_PARSE_MAX_HEADERS (14 + 60 + 20)

/** hh_parse_inner() results. */
enum hh_parse_result {
	HH_PARSE_OK = 0,
	HH_PARSE_SHORT = 1, /**< the headers go beyond @c end (truncated, or not in the skb's linear part) */
	HH_PARSE_BAD = 2,   /**< not untagged Ethernet / IPv4 / TCP, a fragment, an IHL or data offset below 5 */
};

/**
 * Parse an inner Ethernet frame into @p k's 4-tuple (k->vni is left alone).
 * Accepted: EtherType 0x0800 (no VLAN tag), IPv4 version 4 with IHL >= 5,
 * protocol TCP, not a fragment (MF clear, offset 0: a later fragment carries
 * no ports, and the balancer's clients send with DF), the whole TCP header
 * present with data offset >= 5. IPv4 total length and checksums are left
 * to the kernel's IP layer (a GRO-merged skb's data is mostly outside the
 * linear part the classifier sees).
 */
HH_ALWAYS_INLINE int hh_parse_inner(const unsigned char *p, const unsigned char *end, struct hh_flow_key *k)
{
	if (p + 14 + 20 > end)
		return HH_PARSE_SHORT;
	if (p[12] != 0x08 || p[13] != 0x00)
		return HH_PARSE_BAD;
	const unsigned char *ip = p + 14;
	if ((ip[0] >> 4) != 4)
		return HH_PARSE_BAD;
	unsigned int ihl = (unsigned int)(ip[0] & 0x0f) << 2;
	if (ihl < 20)
		return HH_PARSE_BAD;
	if (ip[9] != 6)
		return HH_PARSE_BAD;
	if ((ip[6] & 0x3f) || ip[7])
		return HH_PARSE_BAD;
	const unsigned char *th = ip + ihl;
	if (th + 20 > end)
		return HH_PARSE_SHORT;
	if ((th[12] >> 4) < 5)
		return HH_PARSE_BAD;
	__builtin_memcpy(&k->client_ip, ip + 12, 4);
	__builtin_memcpy(&k->vip, ip + 16, 4);
	__builtin_memcpy(&k->client_port, th, 2);
	__builtin_memcpy(&k->vip_port, th + 2, 2);
	return HH_PARSE_OK;
}

/** Slots of the config map (BPF_MAP_TYPE_ARRAY of __u32). */
enum hh_tunnel_config_slot {
	HH_CFG_CHECK_SENDER = 0, /**< nonzero: the outer source must be in the balancer allowlist */
	HH_CFG_COUNT
};

/**
 * The test program (hh_tunnel_test, loaded only with HH_TUNNEL_TEST_PROG)
 * runs the same check as the classifier with the tunnel metadata taken from
 * __sk_buff.cb instead of bpf_skb_get_tunnel_key(), which BPF_PROG_TEST_RUN
 * cannot supply: cb[0] flags (enum hh_tunnel_test_flag), cb[1] the VNI,
 * cb[2] the outer source address (host order, as bpf_tunnel_key has it).
 */
enum hh_tunnel_test_flag {
	HH_TEST_HAS_KEY = 1 << 0, /**< the skb has tunnel metadata (else: refused as malformed) */
	HH_TEST_IPV6 = 1 << 1,    /**< the outer header is IPv6 (never a listed balancer) */
};

#endif
