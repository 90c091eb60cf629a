/* SPDX-License-Identifier: MIT
 * libFuzzer target: the frame parser (hs_parse_frame) and what the worker does
 * with a frame it accepted, on the same bytes: the TCP options the accept
 * stage parses, the payload bounds it computes, the ARP reply written in place
 * and the VXLAN encapsulation of the IP packet.
 *
 * Input: byte 0 bit 0 = verify the IPv4 checksum in software (as without
 * hardware offload); the rest is the Ethernet frame.
 *
 * Properties beyond "no crash, no out-of-bounds access, no UB":
 *  - a refusal is a drop counter index; an accepted frame's parsed fields lie
 *    inside the frame and match its bytes;
 *  - the ARP reply parses back as an ARP non-request with the roles swapped;
 *  - the encapsulated frame parses as VXLAN/UDP with a valid outer checksum,
 *    and its inner packet parses to the same addresses, ports and flags.
 */
#include <netinet/in.h>

#include "fuzz_common.h"
#include "hs_arp.h"
#include "hs_counters.h"
#include "hs_encap.h"
#include "hs_parse.h"
#include "hs_tcp.h"

static const uint8_t my_mac[6] = { 2, 0, 0, 0, 0, 0xaa };

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

static void check_arp(const uint8_t *frame, uint32_t len, int check, int cls, const struct hs_parsed *p)
{
	FUZZ_CHECK(p->ethertype == 0x0806, "ethertype 0x%x", p->ethertype);
	FUZZ_CHECK(p->l2_len + 28u <= len, "l2 %u + ARP 28 > %u", p->l2_len, len);
	const uint8_t *a = frame + p->l2_len;
	FUZZ_CHECK(rd16(a + 6) == (cls == HS_PKT_ARP ? 1 : 2), "op %u as class %d", rd16(a + 6), cls);
	FUZZ_CHECK(!memcmp(&p->src_ip, a + 14, 4) && !memcmp(&p->dst_ip, a + 24, 4), "addresses");
	if (cls == HS_PKT_ARP_REPLY)
		return; /* passed up as it is (HS_EXC_ARP): nothing built from it */

	uint8_t *r = fuzz_dup(frame, len);
	hs_arp_make_reply(r, p, my_mac);
	struct hs_parsed q;
	int rcls = hs_parse_frame(r, len, check, &q);
	FUZZ_CHECK(rcls == HS_PKT_ARP_REPLY, "reply parses as %d", rcls);
	FUZZ_CHECK(q.src_ip == p->dst_ip && q.dst_ip == p->src_ip, "reply parses back: sender and target swapped");
	const uint8_t *ra = r + p->l2_len;
	FUZZ_CHECK(!memcmp(r, a + 8, 6) && !memcmp(r + 6, my_mac, 6), "reply Ethernet addresses");
	FUZZ_CHECK(!memcmp(ra + 8, my_mac, 6) && !memcmp(ra + 14, &p->dst_ip, 4), "reply sender");
	FUZZ_CHECK(!memcmp(ra + 18, a + 8, 6) && !memcmp(ra + 24, &p->src_ip, 4), "reply target");
	FUZZ_CHECK(!memcmp(r + p->l2_len + 28, frame + p->l2_len + 28, len - p->l2_len - 28), "padding kept");
	free(r);
}

static void check_ipv4(const uint8_t *frame, uint32_t len, int check, const struct hs_parsed *p)
{
	FUZZ_CHECK(p->ethertype == 0x0800, "ethertype 0x%x", p->ethertype);
	FUZZ_CHECK(p->l3_len == 20, "l3_len %u", p->l3_len);
	FUZZ_CHECK(p->ip_len >= 20 && (uint32_t)p->l2_len + p->ip_len <= len, "ip_len %u l2 %u len %u", p->ip_len,
		   p->l2_len, len);
	const uint8_t *ip = frame + p->l2_len;
	FUZZ_CHECK(ip[0] == 0x45, "version/IHL 0x%x", ip[0]);
	FUZZ_CHECK((rd16(ip + 6) & 0x3fff) == 0, "fragment accepted");
	FUZZ_CHECK(p->proto == ip[9], "proto");
	if (check)
		FUZZ_CHECK(fuzz_fold(fuzz_sum16(ip, 20, 0)) == 0xffff, "bad IPv4 checksum accepted");

	const uint8_t *l4 = ip + 20;
	uint32_t l4len = p->ip_len - 20u;
	if (p->proto == IPPROTO_TCP) {
		FUZZ_CHECK(l4len >= 20, "TCP of %u bytes", l4len);
		uint32_t doff = (uint32_t)(l4[12] >> 4) * 4;
		FUZZ_CHECK(doff >= 20 && doff <= l4len, "doff %u of %u", doff, l4len);
		FUZZ_CHECK(p->tcp_flags == l4[13], "flags");
		/* As hs_accept_segment: options on an exact copy, so reading past
		 * the data offset is an ASan report, not a silent read of payload. */
		uint8_t *opt = fuzz_dup(l4 + 20, doff - 20);
		struct hs_tcp_opts o;
		if (hs_tcp_parse_options(opt, doff - 20, &o) == 0)
			FUZZ_CHECK(o.wscale <= 14, "wscale %u", o.wscale);
		free(opt);
		/* As conn_segment: payload offset and length stay inside the frame. */
		uint32_t plen = p->ip_len - p->l3_len - doff;
		uint32_t poff = p->l2_len + p->l3_len + doff;
		FUZZ_CHECK(plen <= 0xffff && poff + plen <= len, "payload %u+%u of %u", poff, plen, len);
	} else if (p->proto == IPPROTO_UDP) {
		FUZZ_CHECK(l4len >= 8, "UDP of %u bytes", l4len);
	} else {
		FUZZ_CHECK(p->src_port == 0 && p->dst_port == 0 && p->tcp_flags == 0, "ports without TCP/UDP");
	}
	if (p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP)
		FUZZ_CHECK(!memcmp(&p->src_port, l4, 2) && !memcmp(&p->dst_port, l4 + 2, 2), "ports");

	/* The ACTIVE path: VXLAN in front of the IP packet (padding dropped). */
	static const uint8_t nh[6] = { 2, 0, 0, 0, 1, 0x11 }, inner_mac[6] = { 2, 0, 0, 0, 0, 0x0b };
	struct hs_encap_tmpl t;
	hs_encap_tmpl_init(&t, my_mac, htonl(0xc6120002), nh, htonl(0xc612000b), inner_mac, 0, 9000);
	uint32_t olen = HS_ENCAP_HDR_LEN + p->ip_len;
	uint8_t *out = malloc(olen);
	FUZZ_CHECK(out != NULL, "malloc");
	memcpy(out + HS_ENCAP_HDR_LEN, ip, p->ip_len);
	hs_encap_write(out, &t, p->ip_len, hs_encap_sport(p->src_ip ^ p->dst_ip), 0xabcdef);
	struct hs_parsed outer, inner;
	int cls = hs_parse_frame(out, olen, 1, &outer);
	FUZZ_CHECK(cls == HS_PKT_IPV4 && outer.proto == IPPROTO_UDP, "outer parses as %d", cls);
	FUZZ_CHECK(outer.ip_len == p->ip_len + HS_ENCAP_OVERHEAD, "outer length %u", outer.ip_len);
	FUZZ_CHECK(outer.dst_port == htons(HS_VXLAN_PORT) && ntohs(outer.src_port) >= 49152, "outer ports");
	FUZZ_CHECK(rd16(out + 38) == p->ip_len + 30u, "UDP length");
	FUZZ_CHECK((rd16(out + 46) << 8 | out[48]) == 0xabcdef, "VNI");
	cls = hs_parse_frame(out + 50, olen - 50, check, &inner);
	FUZZ_CHECK(cls == HS_PKT_IPV4, "inner parses as %d", cls);
	FUZZ_CHECK(inner.src_ip == p->src_ip && inner.dst_ip == p->dst_ip && inner.src_port == p->src_port &&
		   inner.dst_port == p->dst_port && inner.proto == p->proto && inner.tcp_flags == p->tcp_flags &&
		   inner.ip_len == p->ip_len, "inner packet differs");
	free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 0xffff)
		return 0;
	int check = data[0] & 1;
	uint32_t len = (uint32_t)size - 1;
	uint8_t *frame = fuzz_dup(data + 1, len);
	struct hs_parsed p, p2;
	memset(&p, 0xa5, sizeof(p));
	int cls = hs_parse_frame(frame, len, check, &p);
	int cls2 = hs_parse_frame(frame, len, check, &p2);
	FUZZ_CHECK(cls == cls2, "not deterministic: %d then %d", cls, cls2);
	if (cls < 0) {
		FUZZ_CHECK(-cls >= HS_D_ZERO_LEN && -cls < HS_COUNTER_MAX, "refusal %d is no drop reason", cls);
	} else {
		FUZZ_CHECK(cls == HS_PKT_ARP || cls == HS_PKT_ARP_REPLY || cls == HS_PKT_IPV4, "class %d", cls);
		FUZZ_CHECK(p.l2_len == (rd16(frame + 12) == 0x8100 ? 18 : 14), "l2_len %u", p.l2_len);
		FUZZ_CHECK(p.vlan_tci == (p.l2_len == 18 ? rd16(frame + 14) : 0), "VLAN TCI");
		if (cls == HS_PKT_ARP || cls == HS_PKT_ARP_REPLY)
			check_arp(frame, len, check, cls, &p);
		else
			check_ipv4(frame, len, check, &p);
	}
	free(frame);
	return 0;
}
