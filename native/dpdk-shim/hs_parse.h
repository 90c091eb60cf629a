/* SPDX-License-Identifier: MIT
 * Stage 1: frame parsing. Pure: reads (buf, len), touches nothing else.
 */
#ifndef HS_PARSE_H
#define HS_PARSE_H

#include <stdint.h>

enum hs_pkt_class {
	HS_PKT_ARP = 1,  /**< ARP request (Ethernet/IPv4) */
	HS_PKT_IPV4 = 2, /**< unfragmented IPv4 without options, L4 checked */
	HS_PKT_ARP_REPLY = 3, /**< ARP reply (Ethernet/IPv4) */
};

struct hs_parsed {
	uint16_t l2_len;    /**< 14, or 18 with an 802.1Q tag */
	uint16_t ethertype; /**< host order, after any VLAN tag */
	uint16_t vlan_tci;  /**< host order; 0 when untagged */
	uint16_t l3_len;    /**< IPv4 header bytes */
	uint16_t ip_len;    /**< IPv4 total length (frame padding excluded) */
	uint8_t proto;
	uint8_t tcp_flags;
	uint32_t src_ip;    /**< network order; ARP: sender address */
	uint32_t dst_ip;    /**< network order; ARP: target address */
	uint16_t src_port;  /**< network order; 0 unless TCP or UDP */
	uint16_t dst_port;
};

/**
 * Parse an Ethernet frame.
 * @param check_ip_csum verify the IPv4 header checksum in software
 * @return HS_PKT_ARP, HS_PKT_ARP_REPLY or HS_PKT_IPV4, or the negated drop counter index
 *   (-HS_D_TRUNC_ETH, -HS_D_IP_IHL, ...) saying why the frame is refused.
 */
int hs_parse_frame(const uint8_t *buf, uint32_t len, int check_ip_csum, struct hs_parsed *p);

#endif
