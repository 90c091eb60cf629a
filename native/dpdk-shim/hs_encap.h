/* SPDX-License-Identifier: MIT
 * Stage 3: VXLAN encapsulation (RFC 7348, design.md §3.6). Pure functions.
 *
 * The 64 bytes in front of the client's IP packet are
 *   outer Ethernet (14) | outer IPv4 (20) | UDP (8) | VXLAN (8) | inner Ethernet (14)
 * and are precomputed per host; per packet only the lengths, the IPv4
 * checksum (incrementally), the UDP source port and the VNI are written.
 */
#ifndef HS_ENCAP_H
#define HS_ENCAP_H

#include <stdint.h>

#define HS_ENCAP_HDR_LEN 64
/** Bytes added to the client's IP packet on the underlay (IP level). */
#define HS_ENCAP_OVERHEAD 50
#define HS_VXLAN_PORT 4789

struct hs_encap_tmpl {
	uint8_t hdr[HS_ENCAP_HDR_LEN];
	uint32_t csum_base; /**< ones-complement sum of the outer IPv4 header with length and checksum zero */
	uint16_t port;      /**< shim port index to send on */
	uint16_t mtu;       /**< underlay MTU of that port */
};

/**
 * Build a host's template. Addresses in network order.
 */
void hs_encap_tmpl_init(struct hs_encap_tmpl *t, const uint8_t src_mac[6], uint32_t src_ip,
			const uint8_t nexthop_mac[6], uint32_t dst_ip, const uint8_t inner_mac[6],
			uint16_t port, uint16_t mtu);

/**
 * Write the 64 header bytes for an inner IP packet of @p inner_ip_len bytes.
 * @param udp_sport network order (flow entropy for ECMP)
 * @param vni 24-bit flow ID
 */
void hs_encap_write(uint8_t *dst, const struct hs_encap_tmpl *t, uint16_t inner_ip_len,
		    uint16_t udp_sport, uint32_t vni);

/**
 * UDP source port for a flow, from its hash, in the range 49152-65535 (network order).
 */
uint16_t hs_encap_sport(uint32_t flow_hash);

#endif
