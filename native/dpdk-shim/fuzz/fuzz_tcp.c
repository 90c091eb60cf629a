/* SPDX-License-Identifier: MIT
 * libFuzzer target: TCP options (hs_tcp_parse_options) and the segments the
 * balancer builds (hs_tcp_build).
 *
 * Input: byte 0 selects the part.
 *  - even: the rest is an options block, parsed from an exact-size copy. It
 *    is compared with an independent reference parser written from RFC 9293
 *    §3.1 and RFC 7323: same verdict, same values.
 *  - odd: the rest fills a struct hs_tcp_seg; the frame built from it must
 *    fit HS_TCP_SEG_MAX, parse (IPv4 checksum verified) with the same
 *    addresses, ports and flags, carry a valid TCP checksum, and its options
 *    must parse back to what was asked for.
 */
#include <netinet/in.h>

#include "fuzz_common.h"
#include "hs_counters.h"
#include "hs_parse.h"
#include "hs_tcp.h"

/* Reference: kinds 0 (EOL) and 1 (NOP) are single bytes; every other kind
 * has a length byte >= 2 that must fit; MSS 4, WS 3, SACK-permitted 2 and
 * timestamps 10 bytes exactly; unknown kinds are skipped. */
static int ref_parse(const uint8_t *b, uint32_t n, struct hs_tcp_opts *o)
{
	memset(o, 0, sizeof(*o));
	for (uint32_t i = 0; i < n;) {
		if (b[i] == 0)
			return 0;
		if (b[i] == 1) {
			i++;
			continue;
		}
		if (n - i < 2 || b[i + 1] < 2 || b[i + 1] > n - i)
			return -1;
		uint32_t k = b[i], l = b[i + 1];
		const uint8_t *v = b + i + 2;
		if ((k == 2 && l != 4) || (k == 3 && l != 3) || (k == 4 && l != 2) || (k == 8 && l != 10))
			return -1;
		if (k == 2)
			o->mss = (uint16_t)(v[0] << 8 | v[1]);
		else if (k == 3)
			o->wscale_ok = 1, o->wscale = v[0] < 14 ? v[0] : 14;
		else if (k == 4)
			o->sack_ok = 1;
		else if (k == 8)
			o->ts_ok = 1, o->tsval = (uint32_t)v[0] << 24 | v[1] << 16 | v[2] << 8 | v[3],
			o->tsecr = (uint32_t)v[4] << 24 | v[5] << 16 | v[6] << 8 | v[7];
		i += l;
	}
	return 0;
}

static void fuzz_options(const uint8_t *data, size_t size)
{
	uint8_t *b = fuzz_dup(data, size);
	struct hs_tcp_opts got, want;
	memset(&got, 0xa5, sizeof(got));
	int r = hs_tcp_parse_options(b, (uint32_t)size, &got);
	int rr = ref_parse(data, (uint32_t)size, &want);
	FUZZ_CHECK(r == rr, "verdict %d, reference %d", r, rr);
	if (r == 0)
		FUZZ_CHECK(got.mss == want.mss && got.wscale_ok == want.wscale_ok && got.wscale == want.wscale &&
			   got.sack_ok == want.sack_ok && got.ts_ok == want.ts_ok && got.tsval == want.tsval &&
			   got.tsecr == want.tsecr, "values differ from the reference");
	free(b);
}

static void fuzz_build(struct fuzz_in *in)
{
	struct hs_tcp_seg s;
	memset(&s, 0, sizeof(s));
	for (int i = 0; i < 6; i++)
		s.dst_mac[i] = (uint8_t)fuzz_u(in, 1);
	for (int i = 0; i < 6; i++)
		s.src_mac[i] = (uint8_t)fuzz_u(in, 1);
	s.vlan_tci = (uint16_t)fuzz_u(in, 2);
	s.src_ip = fuzz_u(in, 4);
	s.dst_ip = fuzz_u(in, 4);
	s.src_port = (uint16_t)fuzz_u(in, 2);
	s.dst_port = (uint16_t)fuzz_u(in, 2);
	s.seq = fuzz_u(in, 4);
	s.ack = fuzz_u(in, 4);
	s.flags = (uint8_t)fuzz_u(in, 1);
	s.window = (uint16_t)fuzz_u(in, 2);
	s.mss = (uint16_t)fuzz_u(in, 2);
	uint32_t ws = fuzz_u(in, 1);
	s.wscale = ws == 0xff ? -1 : (int16_t)ws;
	uint32_t bits = fuzz_u(in, 1);
	s.sack_ok = bits & 1;
	s.ts_ok = (bits >> 1) & 1;
	s.tsval = fuzz_u(in, 4);
	s.tsecr = fuzz_u(in, 4);

	uint8_t *f = malloc(HS_TCP_SEG_MAX);
	FUZZ_CHECK(f != NULL, "malloc");
	uint32_t len = hs_tcp_build(f, &s);
	FUZZ_CHECK(len <= HS_TCP_SEG_MAX, "built %u bytes", len);
	struct hs_parsed p;
	int cls = hs_parse_frame(f, len, 1, &p);
	FUZZ_CHECK(cls == HS_PKT_IPV4 && p.proto == IPPROTO_TCP, "built frame parses as %d", cls);
	FUZZ_CHECK((uint32_t)p.l2_len + p.ip_len == len, "length");
	FUZZ_CHECK(p.vlan_tci == s.vlan_tci && p.src_ip == s.src_ip && p.dst_ip == s.dst_ip &&
		   p.src_port == s.src_port && p.dst_port == s.dst_port && p.tcp_flags == s.flags, "fields");
	const uint8_t *ip = f + p.l2_len, *tcp = ip + 20;
	uint32_t tlen = p.ip_len - 20u;
	uint32_t sum = fuzz_sum16(ip + 12, 8, 0) + IPPROTO_TCP + tlen;
	FUZZ_CHECK(fuzz_fold(fuzz_sum16(tcp, tlen, sum)) == 0xffff, "TCP checksum");
	FUZZ_CHECK(((uint32_t)tcp[4] << 24 | tcp[5] << 16 | tcp[6] << 8 | tcp[7]) == s.seq, "seq");
	FUZZ_CHECK(((uint32_t)tcp[8] << 24 | tcp[9] << 16 | tcp[10] << 8 | tcp[11]) == s.ack, "ack");
	uint32_t doff = (uint32_t)(tcp[12] >> 4) * 4;
	FUZZ_CHECK(doff == tlen, "no payload expected");
	struct hs_tcp_opts o;
	FUZZ_CHECK(hs_tcp_parse_options(tcp + 20, doff - 20, &o) == 0, "built options do not parse");
	FUZZ_CHECK(o.mss == s.mss, "MSS %u, asked %u", o.mss, s.mss);
	FUZZ_CHECK(o.wscale_ok == (s.wscale >= 0) && o.wscale == (s.wscale < 0 ? 0 : s.wscale > 14 ? 14 : s.wscale),
		   "wscale");
	FUZZ_CHECK(o.sack_ok == s.sack_ok && o.ts_ok == s.ts_ok, "SACK/TS");
	if (s.ts_ok)
		FUZZ_CHECK(o.tsval == s.tsval && o.tsecr == s.tsecr, "timestamps");
	free(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	if (!(data[0] & 1)) {
		fuzz_options(data + 1, size - 1);
	} else {
		struct fuzz_in in = { data + 1, size - 1 };
		fuzz_build(&in);
	}
	return 0;
}
