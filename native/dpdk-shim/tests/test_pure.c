/* SPDX-License-Identifier: MIT
 * Unit tests of the pure stages (parse, ARP, VXLAN encapsulation) on plain
 * buffers. Prints TAP; exit status 1 when any check fails.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <netinet/in.h>
#include <rte_ip.h>

#include "hs_arp.h"
#include "hs_counters.h"
#include "hs_encap.h"
#include "hs_parse.h"
#include "hs_siphash.h"
#include "hs_cookie.h"
#include "hs_tcp.h"
#include "hs_flowtab.h"
#include <stdlib.h>
#include <rte_hash_crc.h>

static int n_test, n_fail;

#define CHECK(cond, ...)                                                        \
	do {                                                                    \
		n_test++;                                                       \
		if (cond) {                                                     \
			printf("ok %d - ", n_test);                             \
		} else {                                                        \
			n_fail++;                                               \
			printf("not ok %d - ", n_test);                         \
		}                                                               \
		printf(__VA_ARGS__);                                            \
		printf("\n");                                                   \
	} while (0)

static const uint8_t mac_a[6] = { 2, 0, 0, 0, 0, 1 }, mac_b[6] = { 2, 0, 0, 0, 0, 2 };

/* Ethernet + IPv4 + TCP (20-byte header) with @p payload bytes; returns length. */
static uint32_t make_tcp(uint8_t *f, int vlan, uint32_t payload)
{
	uint32_t o = 0;
	memcpy(f, mac_b, 6);
	memcpy(f + 6, mac_a, 6);
	o = 12;
	if (vlan) {
		f[o++] = 0x81; f[o++] = 0x00; f[o++] = 0x00; f[o++] = 0x2a;
	}
	f[o++] = 0x08; f[o++] = 0x00;
	uint8_t *ip = f + o;
	uint16_t tot = (uint16_t)(20 + 20 + payload);
	memset(ip, 0, tot);
	ip[0] = 0x45; ip[2] = tot >> 8; ip[3] = tot & 0xff; ip[6] = 0x40; ip[8] = 64; ip[9] = 6;
	ip[12] = 10; ip[13] = 0; ip[14] = 0; ip[15] = 1;
	ip[16] = 10; ip[17] = 0; ip[18] = 0; ip[19] = 100;
	uint16_t c = (uint16_t)~rte_raw_cksum(ip, 20);
	memcpy(ip + 10, &c, 2);
	uint8_t *tcp = ip + 20;
	tcp[0] = 0x9c; tcp[1] = 0x40; tcp[2] = 0; tcp[3] = 80; tcp[12] = 0x50; tcp[13] = 0x18;
	return o + tot;
}

static void fix_ip_csum(uint8_t *ip)
{
	ip[10] = ip[11] = 0;
	uint16_t c = (uint16_t)~rte_raw_cksum(ip, (ip[0] & 15) * 4);
	memcpy(ip + 10, &c, 2);
}

static void test_parse_ok(void)
{
	uint8_t f[256];
	struct hs_parsed p;
	uint32_t len = make_tcp(f, 0, 10);
	int r = hs_parse_frame(f, len, 1, &p);
	CHECK(r == HS_PKT_IPV4, "plain TCP parses as IPv4 (%d)", r);
	CHECK(p.l2_len == 14 && p.l3_len == 20 && p.ip_len == 50 && p.proto == 6, "TCP lengths and proto");
	CHECK(p.src_port == htons(40000) && p.dst_port == htons(80) && p.tcp_flags == 0x18, "TCP ports and flags");
	CHECK(p.dst_ip == htonl(0x0a000064), "destination address");

	len = make_tcp(f, 1, 10);
	r = hs_parse_frame(f, len, 1, &p);
	CHECK(r == HS_PKT_IPV4 && p.l2_len == 18 && p.vlan_tci == 42, "802.1Q frame parses with its tag");

	/* Ethernet padding after a short IP packet is tolerated, ip_len excludes it. */
	len = make_tcp(f, 0, 0);
	memset(f + len, 0, 6);
	r = hs_parse_frame(f, 60, 1, &p);
	CHECK(r == HS_PKT_IPV4 && p.ip_len == 40, "padded minimum frame keeps ip_len 40");
}

static void test_parse_bad(void)
{
	uint8_t f[256], g[256];
	struct hs_parsed p;
	uint32_t len = make_tcp(f, 0, 10);

	CHECK(hs_parse_frame(f, 0, 1, &p) == -HS_D_ZERO_LEN, "zero length");
	/* Truncation at every byte inside the headers gives a truncation reason. */
	int all_trunc = 1;
	for (uint32_t cut = 1; cut < 14 + 20 + 20; cut++) {
		int r = hs_parse_frame(f, cut, 1, &p);
		int want = cut < 14 ? -HS_D_TRUNC_ETH : cut < 34 ? -HS_D_TRUNC_IP : -HS_D_IP_LEN;
		if (r != want) {
			all_trunc = 0;
			printf("# cut %u: got %d want %d\n", cut, r, want);
		}
	}
	CHECK(all_trunc, "truncated at every header byte: refused with the right reason");

	uint32_t vlen = make_tcp(g, 1, 0);
	CHECK(hs_parse_frame(g, 15, 1, &p) == -HS_D_TRUNC_VLAN, "truncated VLAN tag");
	(void)vlen;

	memcpy(g, f, len); g[14] = 0x65; fix_ip_csum(g + 14);
	CHECK(hs_parse_frame(g, len, 1, &p) == -HS_D_IP_VERSION, "IP version 6 in an IPv4 frame");
	memcpy(g, f, len); g[14] = 0x44; fix_ip_csum(g + 14);
	CHECK(hs_parse_frame(g, len, 1, &p) == -HS_D_IP_IHL, "IHL 4");
	memcpy(g, f, len); g[14] = 0x46; fix_ip_csum(g + 14);
	CHECK(hs_parse_frame(g, len, 1, &p) == -HS_D_IP_OPTIONS, "IP options (IHL 6)");
	memcpy(g, f, len); g[16] = 0x0f; g[17] = 0xff; fix_ip_csum(g + 14);
	CHECK(hs_parse_frame(g, len, 1, &p) == -HS_D_IP_LEN, "total length beyond the frame");
	memcpy(g, f, len); g[17] = 19; fix_ip_csum(g + 14);
	CHECK(hs_parse_frame(g, len, 1, &p) == -HS_D_IP_LEN, "total length below the header");
	memcpy(g, f, len); g[24] ^= 1;
	CHECK(hs_parse_frame(g, len, 1, &p) == -HS_D_IP_CHECKSUM, "bad IP checksum");
	CHECK(hs_parse_frame(g, len, 0, &p) == HS_PKT_IPV4, "checksum not checked when offloaded");
	memcpy(g, f, len); g[20] = 0x20; fix_ip_csum(g + 14);
	CHECK(hs_parse_frame(g, len, 1, &p) == -HS_D_IP_FRAGMENT, "more-fragments flag");
	memcpy(g, f, len); g[20] = 0x40; g[21] = 0x10; fix_ip_csum(g + 14);
	CHECK(hs_parse_frame(g, len, 1, &p) == -HS_D_IP_FRAGMENT, "fragment offset");
	memcpy(g, f, len); g[46] = 0x40;
	CHECK(hs_parse_frame(g, len, 1, &p) == -HS_D_TCP_DOFF, "TCP data offset 4");
	memcpy(g, f, len); g[46] = 0xf0;
	CHECK(hs_parse_frame(g, len, 1, &p) == -HS_D_TCP_DOFF, "TCP data offset past the packet");
	memcpy(g, f, len); g[12] = 0x86; g[13] = 0xdd;
	CHECK(hs_parse_frame(g, len, 1, &p) == -HS_D_ETHERTYPE, "unknown EtherType (IPv6)");
	/* UDP shorter than its header. */
	memcpy(g, f, len); g[23] = 17; g[16] = 0; g[17] = 24; fix_ip_csum(g + 14);
	CHECK(hs_parse_frame(g, len, 1, &p) == -HS_D_TRUNC_L4, "UDP header truncated");
}

static void test_arp(void)
{
	uint8_t f[60] = { 0 };
	const uint8_t mine[6] = { 2, 0xaa, 0, 0, 0, 9 };
	memset(f, 0xff, 6);
	memcpy(f + 6, mac_a, 6);
	f[12] = 0x08; f[13] = 0x06;
	uint8_t req[28] = { 0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 100 };
	memcpy(f + 14, req, 28);
	struct hs_parsed p;
	CHECK(hs_parse_frame(f, 60, 1, &p) == HS_PKT_ARP, "ARP request parses");
	CHECK(p.dst_ip == htonl(0x0a000064) && p.src_ip == htonl(0x0a000001), "ARP addresses");
	hs_arp_make_reply(f, &p, mine);
	const uint8_t want[42] = { 2, 0, 0, 0, 0, 1, 2, 0xaa, 0, 0, 0, 9, 8, 6, 0, 1, 8, 0, 6, 4, 0, 2,
				   2, 0xaa, 0, 0, 0, 9, 10, 0, 0, 100, 2, 0, 0, 0, 0, 1, 10, 0, 0, 1 };
	CHECK(memcmp(f, want, 42) == 0, "ARP reply bytes");
	uint8_t g[60];
	memcpy(g, f, 60);
	CHECK(hs_parse_frame(g, 60, 1, &p) == HS_PKT_ARP_REPLY, "ARP reply parses as a reply");
	CHECK(p.src_ip == htonl(0x0a000064) && p.dst_ip == htonl(0x0a000001), "ARP reply: sender and target");
	g[21] = 3; /* RARP request */
	CHECK(hs_parse_frame(g, 60, 1, &p) == -HS_D_ARP_OP, "ARP op 3 is refused");
	g[21] = 2;
	g[15] = 6;
	CHECK(hs_parse_frame(g, 60, 1, &p) == -HS_D_ARP_FORMAT, "ARP with non-Ethernet hardware");
	CHECK(hs_parse_frame(g, 30, 1, &p) == -HS_D_TRUNC_ARP, "truncated ARP");
}

static void test_encap(void)
{
	struct hs_encap_tmpl t;
	const uint8_t inner[6] = { 0x02, 0x11, 0x22, 0x33, 0x44, 0x55 };
	hs_encap_tmpl_init(&t, mac_a, htonl(0x0a000002), mac_b, htonl(0x0a000065), inner, 0, 1500);
	uint8_t h[64];
	hs_encap_write(h, &t, 100, htons(50000), 0x123456);
	const uint8_t want[64] = {
		2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 8, 0,                /* outer Ethernet */
		0x45, 0, 0, 150, 0, 0, 0x40, 0, 64, 17, 0, 0,             /* IPv4, checksum below */
		10, 0, 0, 2, 10, 0, 0, 101,
		0xc3, 0x50, 0x12, 0xb5, 0, 130, 0, 0,                     /* UDP 50000 -> 4789, len 130 */
		8, 0, 0, 0, 0x12, 0x34, 0x56, 0,                          /* VXLAN, VNI 0x123456 */
		2, 0x11, 0x22, 0x33, 0x44, 0x55, 2, 0, 0, 0, 0, 1, 8, 0, /* inner Ethernet */
	};
	uint8_t cmp[64];
	memcpy(cmp, h, 64);
	cmp[24] = cmp[25] = 0;
	CHECK(memcmp(cmp, want, 64) == 0, "VXLAN header bytes");
	CHECK(rte_raw_cksum(h + 14, 20) == 0xffff, "outer IPv4 checksum valid");
	int all_ok = 1;
	for (uint32_t len = 20; len <= 9000; len += 7) {
		hs_encap_write(h, &t, (uint16_t)len, htons(60000), len);
		if (rte_raw_cksum(h + 14, 20) != 0xffff)
			all_ok = 0;
	}
	CHECK(all_ok, "incremental checksum valid for every length");
	int in_range = 1;
	for (uint32_t i = 0; i < 100000; i++) {
		uint16_t s = ntohs(hs_encap_sport(i * 2654435761u));
		if (s < 49152)
			in_range = 0;
	}
	CHECK(in_range, "source ports in 49152-65535");
}

static void test_siphash(void)
{
	/* Reference vector from the SipHash paper: key 00..0f, message 00..0e. */
	uint64_t key[2];
	uint8_t k[16], msg[15];
	for (int i = 0; i < 16; i++) k[i] = (uint8_t)i;
	for (int i = 0; i < 15; i++) msg[i] = (uint8_t)i;
	memcpy(key, k, 16);
	CHECK(hs_siphash(key, msg, 15) == 0xa129ca6149be45e5ULL, "SipHash-2-4 reference vector");
	uint8_t empty = 0;
	CHECK(hs_siphash(key, &empty, 0) == 0x726fdb47dd0e0e31ULL, "SipHash-2-4 of the empty message");
}

static void test_cookie(void)
{
	struct hs_cookie_secrets s = { { 1, 2 }, { 3, 4 } };
	uint32_t sa = htonl(0x0a000001), da = htonl(0x0a000064);
	uint16_t sp = htons(40000), dp = htons(80);
	uint32_t idx = 99;
	uint32_t c = hs_cookie_make(&s, sa, da, sp, dp, 1000, 500, 5);
	CHECK((c >> 27) == (500 & 31) && ((c >> 24) & 7) == 5, "cookie layout: tick and MSS index");
	CHECK(hs_cookie_check(&s, sa, da, sp, dp, 1000, c, 500, &idx) == 0 && idx == 5, "valid in its tick");
	CHECK(hs_cookie_check(&s, sa, da, sp, dp, 1000, c, 501, &idx) == 0, "valid in the next tick");
	CHECK(hs_cookie_check(&s, sa, da, sp, dp, 1000, c, 502, &idx) < 0, "expired two ticks later");
	CHECK(hs_cookie_check(&s, sa, da, sp, dp, 1001, c, 500, &idx) < 0, "bound to the client's ISN");
	CHECK(hs_cookie_check(&s, sa, da, htons(40001), dp, 1000, c, 500, &idx) < 0, "bound to the 4-tuple");
	CHECK(hs_cookie_check(&s, sa, da, sp, dp, 1000, c ^ 1, 500, &idx) < 0, "a flipped bit is refused");
	CHECK(hs_cookie_check(&s, sa, da, sp, dp, 1000, c ^ (1u << 24), 500, &idx) < 0, "a forged MSS index is refused");
	struct hs_cookie_secrets r = { { 7, 8 }, { 1, 2 } }; /* rotated: the old secret is now previous */
	CHECK(hs_cookie_check(&r, sa, da, sp, dp, 1000, c, 500, &idx) == 0, "valid after one rotation");
	struct hs_cookie_secrets r2 = { { 9, 9 }, { 7, 8 } };
	CHECK(hs_cookie_check(&r2, sa, da, sp, dp, 1000, c, 500, &idx) < 0, "refused after two rotations");
	int forged = 0;
	for (uint32_t guess = 0; guess < 100000; guess++)
		if (hs_cookie_check(&s, sa, da, sp, dp, 1000, (500u & 31) << 27 | guess, 500, &idx) == 0)
			forged++;
	CHECK(forged <= 1, "100000 guesses forge at most one cookie (%d)", forged);
	CHECK(hs_cookie_mss_index(1460) == 6 && hs_cookie_mss_index(1410) == 5 && hs_cookie_mss_index(100) == 0,
	      "MSS table index rounds down");
	uint32_t ts = hs_cookie_ts_encode(123456, 1, 9, 1);
	int wok, sok;
	uint8_t ws;
	hs_cookie_ts_decode(ts, &wok, &ws, &sok);
	CHECK(ts <= 123456 && wok && ws == 9 && sok, "timestamp carries wscale 9 and SACK");
	hs_cookie_ts_decode(hs_cookie_ts_encode(123456, 0, 0, 0), &wok, &ws, &sok);
	CHECK(!wok && !sok, "timestamp carries no wscale, no SACK");
}

static void test_tcp(void)
{
	struct hs_tcp_opts o;
	const uint8_t linux_syn[] = { 2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 1, 0, 0, 0, 0, 0, 1, 3, 3, 7 };
	CHECK(hs_tcp_parse_options(linux_syn, sizeof(linux_syn), &o) == 0 && o.mss == 1460 && o.sack_ok && o.ts_ok &&
	      o.tsval == 256 && o.wscale_ok && o.wscale == 7, "Linux SYN options");
	const uint8_t big_ws[] = { 3, 3, 20 };
	CHECK(hs_tcp_parse_options(big_ws, 3, &o) == 0 && o.wscale == 14, "window scale capped at 14");
	const uint8_t bad_len[] = { 2, 4, 5 };
	CHECK(hs_tcp_parse_options(bad_len, 3, &o) < 0, "option running past the end");
	const uint8_t zero_len[] = { 8, 0, 0, 0 };
	CHECK(hs_tcp_parse_options(zero_len, 4, &o) < 0, "option length 0");
	const uint8_t bad_mss[] = { 2, 3, 5 };
	CHECK(hs_tcp_parse_options(bad_mss, 3, &o) < 0, "MSS with the wrong length");
	const uint8_t eol[] = { 0, 0xff, 0xff };
	CHECK(hs_tcp_parse_options(eol, 3, &o) == 0 && o.mss == 0, "end-of-options stops parsing");

	struct hs_tcp_seg s;
	memset(&s, 0, sizeof(s));
	memcpy(s.dst_mac, mac_a, 6);
	memcpy(s.src_mac, mac_b, 6);
	s.src_ip = htonl(0x0a000064); s.dst_ip = htonl(0x0a000001);
	s.src_port = htons(80); s.dst_port = htons(40000);
	s.seq = 0xdeadbeef; s.ack = 1001; s.flags = HS_TCP_SYN | HS_TCP_ACK; s.window = 65535;
	s.mss = 1410; s.wscale = 7; s.sack_ok = 1; s.ts_ok = 1; s.tsval = 5; s.tsecr = 6;
	uint8_t f[HS_TCP_SEG_MAX];
	uint32_t len = hs_tcp_build(f, &s);
	struct hs_parsed p;
	CHECK(len == 14 + 20 + 40 && hs_parse_frame(f, len, 1, &p) == HS_PKT_IPV4, "SYN-ACK parses (%u bytes)", len);
	uint8_t *tcp = f + 34;
	uint32_t sum = __rte_raw_cksum(f + 26, 8, 0);
	uint16_t pl[2] = { htons(6), htons(40) };
	sum = __rte_raw_cksum(pl, 4, sum);
	sum = __rte_raw_cksum(tcp, 40, sum);
	CHECK(__rte_raw_cksum_reduce(sum) == 0xffff, "TCP checksum valid");
	CHECK(hs_tcp_parse_options(tcp + 20, 20, &o) == 0 && o.mss == 1410 && o.wscale == 7 && o.sack_ok && o.ts_ok &&
	      o.tsval == 5 && o.tsecr == 6, "built options read back");
	s.vlan_tci = 42; s.mss = 0; s.wscale = -1; s.sack_ok = 0; s.flags = HS_TCP_RST; s.ts_ok = 0;
	len = hs_tcp_build(f, &s);
	CHECK(len == 18 + 40 && hs_parse_frame(f, len, 1, &p) == HS_PKT_IPV4 && p.vlan_tci == 42 && p.tcp_flags == HS_TCP_RST,
	      "tagged RST without options");
}

static int fast_active(uint8_t s) { return s == 2; }

/* The flat flow table on plain memory: the workers' index (hs_flowtab.h). */
static void test_flowtab(void)
{
	struct hs_flowtab t;
	uint32_t nb = 8;
	void *mem = aligned_alloc(64, hs_ft_memsize(nb));
	memset(mem, 0, hs_ft_memsize(nb));
	CHECK(hs_ft_init(&t, mem, 6) == -EINVAL, "flowtab: a bucket count that is no power of two is refused");
	CHECK(hs_ft_init(&t, mem, nb) == 0, "flowtab: init over 8 buckets");
	CHECK(sizeof(struct hs_ft_bucket) == 64, "flowtab: a bucket is one cache line");
	CHECK(hs_ft_buckets_for(65536) == 131072 && hs_ft_buckets_for(1000000) == 2097152 &&
	      hs_ft_buckets_for(1u << 30) == (1u << 24), "flowtab: twice the capacity in buckets, a power of two, at most 2^24");

	uint64_t v = hs_ft_val(HS_FT_MAX_IDX - 1, 4095, 0xabcdef, 1);
	CHECK(hs_ft_val_idx(v) == HS_FT_MAX_IDX - 1 && hs_ft_val_host(v) == 4095 && hs_ft_val_flow(v) == 0xabcdef &&
	      (v & HS_FT_VALID) && (v & HS_FT_FAST), "flowtab: value word fields round-trip at their limits");
	v = hs_ft_val(7, 3, 0, 0);
	CHECK(hs_ft_val_idx(v) == 7 && hs_ft_val_host(v) == 3 && !(v & HS_FT_FAST), "flowtab: value word without FAST");

	/* Keys whose first bucket is the same: the third goes to its second bucket, a fifth finds no room. */
	struct hs_flow_key k[64];
	uint32_t sig[64], n = 0;
	memset(k, 0, sizeof(k));
	for (uint32_t i = 0; n < 64 && i < 100000; i++) {
		struct hs_flow_key c = { .client_ip = 0x0a000000u + i, .vip = 0x0a0000fe, .client_port = 1000, .vip_port = 80, .proto = 6 };
		uint32_t h = rte_hash_crc(&c, sizeof(c), 0x5eed);
		if ((h & t.mask) != 0)
			continue;
		k[n] = c;
		sig[n++] = h;
	}
	CHECK(n == 64, "flowtab: 64 keys hashing to bucket 0");
	uint32_t s0 = hs_ft_reserve(&t, &k[0], sig[0]);
	uint64_t got = 0;
	CHECK(s0 == 0 && hs_ft_find(&t, &k[0], sig[0], &got) == HS_FT_NONE, "flowtab: a reserved slot is not visible");
	hs_ft_publish(&t, s0, hs_ft_val(1, 1, 101, 1));
	CHECK(hs_ft_find(&t, &k[0], sig[0], &got) == s0 && hs_ft_val_flow(got) == 101, "flowtab: published, found in its first bucket");
	uint32_t s1 = hs_ft_reserve(&t, &k[1], sig[1]);
	hs_ft_publish(&t, s1, hs_ft_val(2, 1, 102, 1));
	CHECK(s1 == 1, "flowtab: second key in the first bucket's other way");
	/* The third and fourth keys: bucket 0 is full, so each goes to its second bucket, if that has room. */
	uint32_t placed = 0, over = 0, wrong = 0;
	for (uint32_t i = 2; i < 64; i++) {
		uint32_t s = hs_ft_reserve(&t, &k[i], sig[i]);
		if (s == HS_FT_NONE) {
			over++;
			continue;
		}
		hs_ft_publish(&t, s, hs_ft_val(10 + i, 1, 100 + i, 1));
		got = 0;
		wrong += s / HS_FT_WAYS != hs_ft_bucket2(&t, sig[i]) || hs_ft_find(&t, &k[i], sig[i], &got) != s ||
			 hs_ft_val_flow(got) != 100 + i;
		placed++;
	}
	CHECK(wrong == 0, "flowtab: each later key in its second bucket, and found there");
	CHECK(placed == 2 * (nb - 1) && over == 62 - placed, "flowtab: the other buckets filled (%u placed), the rest refused (%u)", placed, over);
	CHECK(hs_ft_bucket2(&t, sig[0]) != hs_ft_bucket1(&t, sig[0]), "flowtab: the second bucket is never the first");

	/* Removal: gone for readers, slot still taken until reclaimed. */
	hs_ft_remove(&t, s0);
	CHECK(hs_ft_find(&t, &k[0], sig[0], &got) == HS_FT_NONE, "flowtab: a removed key is not found");
	CHECK(hs_ft_reserve(&t, &k[0], sig[0]) == HS_FT_NONE, "flowtab: a removed slot is not reused before reclaim");
	uint32_t used = t.used;
	hs_ft_reclaim(&t, s0);
	CHECK(t.used == used - 1, "flowtab: reclaim frees the slot");
	uint32_t s0b = hs_ft_reserve(&t, &k[0], sig[0]);
	CHECK(s0b == s0, "flowtab: a reclaimed slot is taken again");
	hs_ft_reclaim(&t, s0b);
	CHECK(t.used == used - 1 && hs_ft_find(&t, &k[0], sig[0], &got) == HS_FT_NONE, "flowtab: a reserved slot never published is given back by reclaim");

	/* FAST follows the state; the host is replaced in place. */
	uint8_t state = 3;
	hs_ft_val_derive(&t, s1, &state, fast_active);
	hs_ft_find(&t, &k[1], sig[1], &got);
	CHECK(!(got & HS_FT_FAST) && hs_ft_val_flow(got) == 102, "flowtab: FAST cleared for a state that may not forward");
	state = 2;
	hs_ft_val_derive(&t, s1, &state, fast_active);
	hs_ft_val_set_host(&t, s1, 77);
	hs_ft_find(&t, &k[1], sig[1], &got);
	CHECK((got & HS_FT_FAST) && hs_ft_val_host(got) == 77 && hs_ft_val_idx(got) == 2, "flowtab: FAST set again, host replaced, rest kept");

	/* Counts: packets low, bytes high; the fold is asked for at 2^23 packets. */
	uint64_t *c = hs_ft_cnt_ptr(&t, s1);
	CHECK(*c == 0 && !hs_ft_count(c, 1500) && !hs_ft_count(c, 40), "flowtab: counting");
	CHECK(hs_ft_cnt_packets(*c) == 2 && hs_ft_cnt_bytes(*c) == 1540, "flowtab: 2 packets, 1540 bytes");
	*c = (HS_FT_CNT_FOLD - 2) | (uint64_t)123 << HS_FT_CNT_PKT_BITS;
	CHECK(!hs_ft_count(c, 65535), "flowtab: no fold below 2^23 packets");
	CHECK(hs_ft_count(c, 65535), "flowtab: fold at 2^23 packets");
	CHECK(hs_ft_cnt_bytes(*c) == 123 + 2 * 65535ull, "flowtab: bytes intact next to a full packet field");
	free(mem);
}

int main(void)
{
	printf("TAP version 13\n");
	test_parse_ok();
	test_parse_bad();
	test_arp();
	test_encap();
	test_siphash();
	test_cookie();
	test_tcp();
	test_flowtab();
	printf("1..%d\n", n_test);
	return n_fail ? 1 : 0;
}
