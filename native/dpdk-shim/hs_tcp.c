/* SPDX-License-Identifier: MIT */
#include <string.h>
#include <rte_byteorder.h>
#include <rte_ip.h>

#include "hs_tcp.h"

static inline uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3]; }
static inline void wr16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline void wr32(uint8_t *p, uint32_t v) { p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v; }

int hs_tcp_parse_options(const uint8_t *opt, uint32_t len, struct hs_tcp_opts *o)
{
	memset(o, 0, sizeof(*o));
	uint32_t i = 0;
	while (i < len) {
		uint8_t kind = opt[i];
		if (kind == 0) /* end of options */
			break;
		if (kind == 1) { /* NOP */
			i++;
			continue;
		}
		if (i + 1 >= len)
			return -1;
		uint8_t olen = opt[i + 1];
		if (olen < 2 || i + olen > len)
			return -1;
		const uint8_t *v = opt + i + 2;
		switch (kind) {
		case 2:
			if (olen != 4) return -1;
			o->mss = (uint16_t)(v[0] << 8 | v[1]);
			break;
		case 3:
			if (olen != 3) return -1;
			o->wscale_ok = 1;
			o->wscale = v[0] > 14 ? 14 : v[0]; /* RFC 7323 §2.3 */
			break;
		case 4:
			if (olen != 2) return -1;
			o->sack_ok = 1;
			break;
		case 8:
			if (olen != 10) return -1;
			o->ts_ok = 1;
			o->tsval = rd32(v);
			o->tsecr = rd32(v + 4);
			break;
		default:
			break; /* unknown options are skipped by length */
		}
		i += olen;
	}
	return 0;
}

uint32_t hs_tcp_build(uint8_t *out, const struct hs_tcp_seg *s)
{
	uint32_t o = 0;
	memcpy(out, s->dst_mac, 6);
	memcpy(out + 6, s->src_mac, 6);
	o = 12;
	if (s->vlan_tci) {
		wr16(out + o, 0x8100);
		wr16(out + o + 2, s->vlan_tci);
		o += 4;
	}
	wr16(out + o, 0x0800);
	o += 2;

	uint8_t *tcp = out + o + 20;
	uint8_t *op = tcp + 20;
	uint32_t ol = 0;
	if (s->mss) {
		op[ol++] = 2; op[ol++] = 4;
		wr16(op + ol, s->mss);
		ol += 2;
	}
	if (s->sack_ok && s->ts_ok) {
		op[ol++] = 4; op[ol++] = 2; /* SACK-permitted, then timestamps: 12 bytes, as Linux */
		op[ol++] = 8; op[ol++] = 10;
		wr32(op + ol, s->tsval); wr32(op + ol + 4, s->tsecr);
		ol += 8;
	} else if (s->ts_ok) {
		op[ol++] = 1; op[ol++] = 1;
		op[ol++] = 8; op[ol++] = 10;
		wr32(op + ol, s->tsval); wr32(op + ol + 4, s->tsecr);
		ol += 8;
	} else if (s->sack_ok) {
		op[ol++] = 1; op[ol++] = 1;
		op[ol++] = 4; op[ol++] = 2;
	}
	if (s->wscale >= 0) {
		op[ol++] = 1;
		op[ol++] = 3; op[ol++] = 3; op[ol++] = (uint8_t)s->wscale;
	}
	uint32_t tcp_len = 20 + ol;

	uint8_t *ip = out + o;
	memset(ip, 0, 20);
	ip[0] = 0x45;
	wr16(ip + 2, (uint16_t)(20 + tcp_len));
	ip[6] = 0x40;
	ip[8] = 64;
	ip[9] = 6;
	memcpy(ip + 12, &s->src_ip, 4);
	memcpy(ip + 16, &s->dst_ip, 4);
	uint16_t ipc = (uint16_t)~rte_raw_cksum(ip, 20);
	memcpy(ip + 10, &ipc, 2);

	memcpy(tcp, &s->src_port, 2);
	memcpy(tcp + 2, &s->dst_port, 2);
	wr32(tcp + 4, s->seq);
	wr32(tcp + 8, s->ack);
	tcp[12] = (uint8_t)((tcp_len / 4) << 4);
	tcp[13] = s->flags;
	wr16(tcp + 14, s->window);
	tcp[16] = tcp[17] = 0;
	tcp[18] = tcp[19] = 0;
	/* Pseudo-header sum, then the segment. */
	uint32_t sum = 0;
	sum = __rte_raw_cksum(ip + 12, 8, sum);
	uint16_t proto_len[2] = { rte_cpu_to_be_16(6), rte_cpu_to_be_16((uint16_t)tcp_len) };
	sum = __rte_raw_cksum(proto_len, 4, sum);
	sum = __rte_raw_cksum(tcp, tcp_len, sum);
	uint16_t tc = (uint16_t)~__rte_raw_cksum_reduce(sum);
	memcpy(tcp + 16, &tc, 2);
	return o + 20 + tcp_len;
}
