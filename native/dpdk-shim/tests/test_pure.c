/* SPDX-License-Identifier: MIT
 * Unit tests of the pure stages (parse, ARP, VXLAN encapsulation) on plain
 * buffers. Prints TAP; exit status 1 when any check fails.
 */
#include <stdio.h>
#include <string.h>
#include <netinet/in.h>
#include <rte_ip.h>

#include "hs_arp.h"
#include "hs_counters.h"
#include "hs_encap.h"
#include "hs_parse.h"

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
	CHECK(hs_parse_frame(g, 60, 1, &p) == -HS_D_ARP_OP, "ARP reply is not a request");
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

int main(void)
{
	printf("TAP version 13\n");
	test_parse_ok();
	test_parse_bad();
	test_arp();
	test_encap();
	printf("1..%d\n", n_test);
	return n_fail ? 1 : 0;
}
