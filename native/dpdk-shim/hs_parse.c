/* SPDX-License-Identifier: MIT */
#include <string.h>
#include <netinet/in.h>
#include <rte_byteorder.h>
#include <rte_ip.h>

#include "hs_common.h"
#include "hs_counters.h"
#include "hs_parse.h"

#define ETH_HLEN 14
#define VLAN_HLEN 4
#define ETHERTYPE_IPV4 0x0800
#define ETHERTYPE_ARP 0x0806
#define ETHERTYPE_VLAN 0x8100
#define ARP_LEN 28

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

static int parse_arp(const uint8_t *a, uint32_t len, struct hs_parsed *p)
{
	if (unlikely(len < ARP_LEN))
		return -HS_D_TRUNC_ARP;
	/* Ethernet hardware, IPv4 protocol, 6- and 4-byte addresses only. */
	if (rd16(a) != 1 || rd16(a + 2) != ETHERTYPE_IPV4 || a[4] != 6 || a[5] != 4)
		return -HS_D_ARP_FORMAT;
	uint16_t op = rd16(a + 6);
	if (op != 1 && op != 2)
		return -HS_D_ARP_OP;
	memcpy(&p->src_ip, a + 14, 4);
	memcpy(&p->dst_ip, a + 24, 4);
	return op == 1 ? HS_PKT_ARP : HS_PKT_ARP_REPLY;
}

int hs_parse_frame(const uint8_t *buf, uint32_t len, int check_ip_csum, struct hs_parsed *p)
{
	uint32_t off = ETH_HLEN;
	uint16_t et;

	if (unlikely(len == 0))
		return -HS_D_ZERO_LEN;
	if (unlikely(len < ETH_HLEN))
		return -HS_D_TRUNC_ETH;
	et = rd16(buf + 12);
	p->vlan_tci = 0;
	if (et == ETHERTYPE_VLAN) {
		if (unlikely(len < ETH_HLEN + VLAN_HLEN))
			return -HS_D_TRUNC_VLAN;
		p->vlan_tci = rd16(buf + 14);
		et = rd16(buf + 16);
		off += VLAN_HLEN;
	}
	p->l2_len = (uint16_t)off;
	p->ethertype = et;
	p->src_port = p->dst_port = 0;
	p->tcp_flags = 0;
	p->proto = 0;

	if (et == ETHERTYPE_ARP)
		return parse_arp(buf + off, len - off, p);
	if (unlikely(et != ETHERTYPE_IPV4))
		return -HS_D_ETHERTYPE;

	const uint8_t *ip = buf + off;
	uint32_t avail = len - off;
	if (unlikely(avail < 20))
		return -HS_D_TRUNC_IP;
	if (unlikely((ip[0] >> 4) != 4))
		return -HS_D_IP_VERSION;
	uint32_t ihl = (uint32_t)(ip[0] & 0x0f) * 4;
	if (unlikely(ihl < 20))
		return -HS_D_IP_IHL;
	/* Options are legal but never needed by clients of a VIP; refusing them
	 * keeps the fast path to one header shape. */
	if (unlikely(ihl > 20))
		return -HS_D_IP_OPTIONS;
	uint32_t tot = rd16(ip + 2);
	if (unlikely(tot < ihl || tot > avail))
		return -HS_D_IP_LEN;
	if (check_ip_csum && unlikely(rte_raw_cksum(ip, ihl) != 0xffff))
		return -HS_D_IP_CHECKSUM;
	/* MF set or a non-zero offset: a fragment. */
	if (unlikely(rd16(ip + 6) & 0x3fff))
		return -HS_D_IP_FRAGMENT;

	p->l3_len = (uint16_t)ihl;
	p->ip_len = (uint16_t)tot;
	p->proto = ip[9];
	memcpy(&p->src_ip, ip + 12, 4);
	memcpy(&p->dst_ip, ip + 16, 4);

	const uint8_t *l4 = ip + ihl;
	uint32_t l4len = tot - ihl;
	if (p->proto == IPPROTO_TCP) {
		if (unlikely(l4len < 20))
			return -HS_D_TRUNC_L4;
		uint32_t doff = (uint32_t)(l4[12] >> 4) * 4;
		if (unlikely(doff < 20 || doff > l4len))
			return -HS_D_TCP_DOFF;
		p->tcp_flags = l4[13];
	} else if (p->proto == IPPROTO_UDP) {
		if (unlikely(l4len < 8))
			return -HS_D_TRUNC_L4;
	} else {
		return HS_PKT_IPV4;
	}
	memcpy(&p->src_port, l4, 2);
	memcpy(&p->dst_port, l4 + 2, 2);
	return HS_PKT_IPV4;
}
