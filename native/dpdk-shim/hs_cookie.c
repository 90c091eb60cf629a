/* SPDX-License-Identifier: MIT */
#include <string.h>
#include "hs_cookie.h"
#include "hs_siphash.h"

/* Common MSS values at or below the 1410 bytes a 1500-byte underlay allows
 * after VXLAN (1500 - 40 - 50), plus the jumbo case. */
const uint16_t hs_cookie_msstab[HS_COOKIE_MSS_COUNT] = { 536, 1200, 1300, 1360, 1400, 1410, 1460, 8910 };

uint32_t hs_cookie_mss_index(uint32_t mss)
{
	uint32_t i = 0;
	for (uint32_t j = 0; j < HS_COOKIE_MSS_COUNT; j++)
		if (hs_cookie_msstab[j] <= mss)
			i = j;
	return i;
}

static uint32_t mac24(const uint64_t key[2], uint32_t saddr, uint32_t daddr, uint16_t sport, uint16_t dport,
		      uint32_t isn, uint32_t tick, uint32_t mss_idx)
{
	uint8_t m[24];
	memcpy(m, &saddr, 4);
	memcpy(m + 4, &daddr, 4);
	memcpy(m + 8, &sport, 2);
	memcpy(m + 10, &dport, 2);
	memcpy(m + 12, &isn, 4);
	memcpy(m + 16, &tick, 4);
	memcpy(m + 20, &mss_idx, 4);
	return (uint32_t)hs_siphash(key, m, sizeof(m)) & 0xffffff;
}

uint32_t hs_cookie_make(const struct hs_cookie_secrets *s, uint32_t saddr, uint32_t daddr, uint16_t sport,
			uint16_t dport, uint32_t client_isn, uint32_t tick, uint32_t mss_idx)
{
	return (tick & 0x1f) << 27 | (mss_idx & 7) << 24 |
	       mac24(s->cur, saddr, daddr, sport, dport, client_isn, tick, mss_idx & 7);
}

int hs_cookie_check(const struct hs_cookie_secrets *s, uint32_t saddr, uint32_t daddr, uint16_t sport,
		    uint16_t dport, uint32_t client_isn, uint32_t cookie, uint32_t now_tick, uint32_t *mss_idx)
{
	uint32_t idx = (cookie >> 24) & 7;
	uint32_t t5 = cookie >> 27;
	for (uint32_t age = 0; age < 2; age++) {
		uint32_t tick = now_tick - age;
		if ((tick & 0x1f) != t5)
			continue;
		uint32_t want = cookie & 0xffffff;
		if (mac24(s->cur, saddr, daddr, sport, dport, client_isn, tick, idx) == want ||
		    mac24(s->prev, saddr, daddr, sport, dport, client_isn, tick, idx) == want) {
			*mss_idx = idx;
			return 0;
		}
	}
	return -1;
}

uint32_t hs_cookie_ts_encode(uint32_t now, int wscale_ok, uint8_t client_wscale, int sack_ok)
{
	uint32_t opts = wscale_ok ? (client_wscale & HS_TS_OPT_WSCALE_MASK) : HS_TS_OPT_WSCALE_MASK;
	if (sack_ok)
		opts |= HS_TS_OPT_SACK;
	uint32_t ts = (now & ~((1u << HS_TS_OPT_BITS) - 1)) | opts;
	/* Never ahead of the clock: the host continues it after the handoff. */
	if (ts > now)
		ts -= 1u << HS_TS_OPT_BITS;
	return ts;
}

void hs_cookie_ts_decode(uint32_t tsecr, int *wscale_ok, uint8_t *client_wscale, int *sack_ok)
{
	uint8_t w = tsecr & HS_TS_OPT_WSCALE_MASK;
	*wscale_ok = w != HS_TS_OPT_WSCALE_MASK;
	*client_wscale = *wscale_ok ? w : 0;
	*sack_ok = (tsecr & HS_TS_OPT_SACK) != 0;
}
