/* SPDX-License-Identifier: MIT */
#include <string.h>
#include <rte_byteorder.h>
#include <rte_ip.h>

#include "hs_encap.h"

#define OFF_IP 14
#define OFF_UDP 34
#define OFF_VXLAN 42
#define OFF_INNER 50

void hs_encap_tmpl_init(struct hs_encap_tmpl *t, const uint8_t src_mac[6], uint32_t src_ip,
			const uint8_t nexthop_mac[6], uint32_t dst_ip, const uint8_t inner_mac[6],
			uint16_t port, uint16_t mtu)
{
	uint8_t *h = t->hdr;
	memset(t, 0, sizeof(*t));
	memcpy(h, nexthop_mac, 6);
	memcpy(h + 6, src_mac, 6);
	h[12] = 0x08; h[13] = 0x00;
	uint8_t *ip = h + OFF_IP;
	ip[0] = 0x45;
	ip[6] = 0x40; /* DF: the MSS clamp guarantees the underlay never fragments */
	ip[8] = 64;
	ip[9] = 17;
	memcpy(ip + 12, &src_ip, 4);
	memcpy(ip + 16, &dst_ip, 4);
	uint8_t *udp = h + OFF_UDP;
	udp[2] = HS_VXLAN_PORT >> 8; udp[3] = HS_VXLAN_PORT & 0xff;
	/* UDP checksum stays 0: allowed for VXLAN over IPv4 (RFC 7348 §5). */
	h[OFF_VXLAN] = 0x08; /* I flag: VNI valid */
	uint8_t *in = h + OFF_INNER;
	memcpy(in, inner_mac, 6);
	memcpy(in + 6, src_mac, 6);
	in[12] = 0x08; in[13] = 0x00;
	t->csum_base = __rte_raw_cksum(ip, 20, 0);
	t->port = port;
	t->mtu = mtu;
}

void hs_encap_write(uint8_t *dst, const struct hs_encap_tmpl *t, uint16_t inner_ip_len,
		    uint16_t udp_sport, uint32_t vni)
{
	uint16_t ip_tot = rte_cpu_to_be_16((uint16_t)(inner_ip_len + 50));
	uint16_t udp_len = rte_cpu_to_be_16((uint16_t)(inner_ip_len + 30));
	uint32_t vni_be = rte_cpu_to_be_32(vni << 8);

	memcpy(dst, t->hdr, HS_ENCAP_HDR_LEN);
	memcpy(dst + OFF_IP + 2, &ip_tot, 2);
	uint16_t csum = (uint16_t)~__rte_raw_cksum_reduce(t->csum_base + ip_tot);
	memcpy(dst + OFF_IP + 10, &csum, 2);
	memcpy(dst + OFF_UDP, &udp_sport, 2);
	memcpy(dst + OFF_UDP + 4, &udp_len, 2);
	memcpy(dst + OFF_VXLAN + 4, &vni_be, 4);
}

uint16_t hs_encap_sport(uint32_t flow_hash)
{
	return rte_cpu_to_be_16((uint16_t)(49152 | ((flow_hash ^ (flow_hash >> 16)) & 0x3fff)));
}
