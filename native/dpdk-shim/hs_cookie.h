/* SPDX-License-Identifier: MIT
 * Stage 2c: SYN cookies (design.md §3.1). Pure functions of a secret, the
 * 4-tuple, the client's ISN and a coarse time counter.
 *
 * ISN layout: tick (5 bits) | MSS index (3 bits) | MAC (24 bits), where the
 * MAC is SipHash-2-4 of the 4-tuple, the client's ISN, the full tick and the
 * MSS index. A cookie is valid during its tick and the next one, under the
 * current or the previous secret, so rotating the secret never breaks a
 * handshake in progress. Window scale and SACK-permitted travel in the low
 * six bits of our timestamp, as Linux does, so no state is kept for a SYN.
 */
#ifndef HS_COOKIE_H
#define HS_COOKIE_H

#include <stdint.h>

#define HS_COOKIE_MSS_COUNT 8
extern const uint16_t hs_cookie_msstab[HS_COOKIE_MSS_COUNT];

struct hs_cookie_secrets {
	uint64_t cur[2];
	uint64_t prev[2];
};

/** Largest table index whose MSS does not exceed @p mss (0 if none). */
uint32_t hs_cookie_mss_index(uint32_t mss);

/** Addresses and ports in network order, as they appear in the SYN. */
uint32_t hs_cookie_make(const struct hs_cookie_secrets *s, uint32_t saddr, uint32_t daddr, uint16_t sport,
			uint16_t dport, uint32_t client_isn, uint32_t tick, uint32_t mss_idx);

/**
 * Check the cookie echoed in a handshake ACK (ack - 1).
 * @return 0 and *mss_idx set, or -1 when forged, for another flow or expired.
 */
int hs_cookie_check(const struct hs_cookie_secrets *s, uint32_t saddr, uint32_t daddr, uint16_t sport,
		    uint16_t dport, uint32_t client_isn, uint32_t cookie, uint32_t now_tick, uint32_t *mss_idx);

/* The timestamp's low bits, as in Linux's cookie_init_timestamp(). */
#define HS_TS_OPT_WSCALE_MASK 0x0f
#define HS_TS_OPT_SACK 0x10
#define HS_TS_OPT_BITS 6

/** Our TSval for a SYN-ACK: @p now with the client's choices in the low bits. */
uint32_t hs_cookie_ts_encode(uint32_t now, int wscale_ok, uint8_t client_wscale, int sack_ok);

/** Decode TSecr of the handshake ACK: wscale (0xf: none) and SACK-permitted. */
void hs_cookie_ts_decode(uint32_t tsecr, int *wscale_ok, uint8_t *client_wscale, int *sack_ok);

#endif
