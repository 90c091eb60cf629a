/* SPDX-License-Identifier: MIT */
#include <string.h>
#include "hs_arp.h"

void hs_arp_make_reply(uint8_t *frame, const struct hs_parsed *p, const uint8_t my_mac[6])
{
	uint8_t *a = frame + p->l2_len;
	uint8_t asker_mac[6];

	memcpy(asker_mac, a + 8, 6);
	memcpy(frame, asker_mac, 6);
	memcpy(frame + 6, my_mac, 6);
	a[6] = 0; a[7] = 2;
	memcpy(a + 18, asker_mac, 6);
	memcpy(a + 24, &p->src_ip, 4);
	memcpy(a + 8, my_mac, 6);
	memcpy(a + 14, &p->dst_ip, 4);
}
