/* SPDX-License-Identifier: MIT
 * libFuzzer target: SYN cookies (hs_cookie_check and friends).
 *
 * Input: secrets, a 4-tuple, the client's ISN, an echoed cookie, the clock
 * and a client's options, read field by field (zeros when short).
 *
 * Properties:
 *  - an arbitrary echoed cookie is accepted exactly when it equals a cookie
 *    made for that flow at the current or previous tick under the current or
 *    previous secret (checked against hs_cookie_make), and then with the MSS
 *    index it carries;
 *  - a cookie made now checks now, at the next tick and after one secret
 *    rotation, with its MSS index; two ticks later it never does;
 *  - hs_cookie_mss_index picks the largest table MSS not above the client's;
 *  - the timestamp encoding is at most 63 ms behind the clock (mod 2^32),
 *    never ahead, and decodes to the client's window scale and SACK choice.
 */
#include "fuzz_common.h"
#include "hs_cookie.h"

struct flow {
	uint32_t saddr, daddr, isn;
	uint16_t sport, dport;
};

static uint32_t make(const uint64_t key[2], const struct flow *f, uint32_t tick, uint32_t idx)
{
	struct hs_cookie_secrets s;
	memcpy(s.cur, key, sizeof(s.cur));
	memset(s.prev, 0, sizeof(s.prev));
	return hs_cookie_make(&s, f->saddr, f->daddr, f->sport, f->dport, f->isn, tick, idx);
}

static int check(const struct hs_cookie_secrets *s, const struct flow *f, uint32_t cookie, uint32_t now,
		 uint32_t *idx)
{
	return hs_cookie_check(s, f->saddr, f->daddr, f->sport, f->dport, f->isn, cookie, now, idx);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size };
	struct hs_cookie_secrets s;
	for (int i = 0; i < 2; i++)
		s.cur[i] = (uint64_t)fuzz_u(&in, 4) << 32 | fuzz_u(&in, 4);
	for (int i = 0; i < 2; i++)
		s.prev[i] = (uint64_t)fuzz_u(&in, 4) << 32 | fuzz_u(&in, 4);
	struct flow f = { .saddr = fuzz_u(&in, 4), .daddr = fuzz_u(&in, 4), .isn = fuzz_u(&in, 4) };
	f.sport = (uint16_t)fuzz_u(&in, 2);
	f.dport = (uint16_t)fuzz_u(&in, 2);
	uint32_t echoed = fuzz_u(&in, 4);
	uint32_t now = fuzz_u(&in, 4);
	uint32_t mss = fuzz_u(&in, 2);
	uint32_t ws = fuzz_u(&in, 1), opts = fuzz_u(&in, 1);
	uint32_t clock = fuzz_u(&in, 4);

	/* An arbitrary cookie against the oracle. */
	uint32_t idx = 0xdead, e_idx = (echoed >> 24) & 7;
	int ok = check(&s, &f, echoed, now, &idx) == 0;
	int want = 0;
	for (uint32_t age = 0; age < 2; age++)
		want |= make(s.cur, &f, now - age, e_idx) == echoed || make(s.prev, &f, now - age, e_idx) == echoed;
	FUZZ_CHECK(ok == want, "accepted %d, oracle %d", ok, want);
	if (ok)
		FUZZ_CHECK(idx == e_idx, "MSS index %u, cookie carries %u", idx, e_idx);
	else
		FUZZ_CHECK(idx == 0xdead, "MSS index written on a refusal");

	/* Round trip of a cookie made now. */
	uint32_t m_idx = hs_cookie_mss_index(mss);
	FUZZ_CHECK(m_idx < HS_COOKIE_MSS_COUNT, "index %u", m_idx);
	for (uint32_t j = 0; j < HS_COOKIE_MSS_COUNT; j++)
		FUZZ_CHECK(!(hs_cookie_msstab[j] <= mss && j > m_idx), "index %u, but table[%u] = %u <= %u", m_idx, j,
			   hs_cookie_msstab[j], mss);
	FUZZ_CHECK(m_idx == 0 || hs_cookie_msstab[m_idx] <= mss, "MSS %u above the client's %u",
		   hs_cookie_msstab[m_idx], mss);
	uint32_t c = hs_cookie_make(&s, f.saddr, f.daddr, f.sport, f.dport, f.isn, now, m_idx);
	FUZZ_CHECK(c >> 27 == (now & 0x1f) && ((c >> 24) & 7) == m_idx, "cookie layout 0x%08x", c);
	FUZZ_CHECK(check(&s, &f, c, now, &idx) == 0 && idx == m_idx, "fresh cookie refused");
	FUZZ_CHECK(check(&s, &f, c, now + 1, &idx) == 0 && idx == m_idx, "cookie refused at the next tick");
	FUZZ_CHECK(check(&s, &f, c, now + 2, &idx) != 0, "cookie accepted two ticks later");
	struct hs_cookie_secrets rotated;
	memcpy(rotated.prev, s.cur, sizeof(rotated.prev));
	rotated.cur[0] = ~s.cur[0];
	rotated.cur[1] = s.cur[1] ^ 0x5555;
	FUZZ_CHECK(check(&rotated, &f, c, now, &idx) == 0 && idx == m_idx, "cookie refused after a rotation");

	/* Timestamp encoding of the client's choices. */
	int wok = opts & 1, sok = (opts >> 1) & 1;
	uint8_t cws = (uint8_t)(ws % 15); /* the option parser caps the shift at 14 */
	uint32_t ts = hs_cookie_ts_encode(clock, wok, cws, sok);
	FUZZ_CHECK((uint32_t)(clock - ts) < 64, "TSval 0x%x vs clock 0x%x", ts, clock);
	int d_wok, d_sok;
	uint8_t d_ws;
	hs_cookie_ts_decode(ts, &d_wok, &d_ws, &d_sok);
	FUZZ_CHECK(d_wok == wok && d_sok == sok && d_ws == (wok ? cws : 0), "TS options do not round-trip");
	return 0;
}
