/* SPDX-License-Identifier: MIT
 * Stage 2d: TCP options and the segments the balancer sends itself (SYN-ACK,
 * ACK, RST). Pure functions on buffers.
 */
#ifndef HS_TCP_H
#define HS_TCP_H

#include <stdint.h>

#define HS_TCP_FIN 0x01
#define HS_TCP_SYN 0x02
#define HS_TCP_RST 0x04
#define HS_TCP_PSH 0x08
#define HS_TCP_ACK 0x10

struct hs_tcp_opts {
	uint16_t mss;       /**< 0 when absent */
	uint8_t wscale_ok;
	uint8_t wscale;
	uint8_t sack_ok;
	uint8_t ts_ok;
	uint32_t tsval;     /**< host order */
	uint32_t tsecr;
};

/**
 * Parse TCP options (@p opt, @p len bytes after the fixed header).
 * @return 0, or -1 when an option's length runs past the end or is invalid.
 */
int hs_tcp_parse_options(const uint8_t *opt, uint32_t len, struct hs_tcp_opts *o);

/** What to put in a segment we build. Addresses and ports in network order. */
struct hs_tcp_seg {
	uint8_t dst_mac[6];
	uint8_t src_mac[6];
	uint16_t vlan_tci;  /**< 0: untagged */
	uint32_t src_ip, dst_ip;
	uint16_t src_port, dst_port;
	uint32_t seq, ack;  /**< host order */
	uint8_t flags;
	uint16_t window;    /**< the raw 16-bit field */
	/* Options: MSS and window scale only on a SYN-ACK. */
	uint16_t mss;       /**< 0: none */
	int16_t wscale;     /**< -1: none */
	uint8_t sack_ok;
	uint8_t ts_ok;
	uint32_t tsval, tsecr;
};

/** Upper bound of a built frame: Ethernet+VLAN, IPv4, TCP with 20 option bytes. */
#define HS_TCP_SEG_MAX (18 + 20 + 40)

/**
 * Build a complete Ethernet frame into @p out (at least HS_TCP_SEG_MAX bytes),
 * checksums included.
 * @return the frame length.
 */
uint32_t hs_tcp_build(uint8_t *out, const struct hs_tcp_seg *s);

#endif
