/* SPDX-License-Identifier: MIT
 * Stage 2a: ARP replies for the VIPs and the balancer's own addresses. Pure.
 */
#ifndef HS_ARP_H
#define HS_ARP_H

#include <stdint.h>
#include "hs_parse.h"

/**
 * Turn a parsed ARP request (in @p frame) into the reply from @p my_mac, in
 * place. Any VLAN tag and trailing padding are kept.
 */
void hs_arp_make_reply(uint8_t *frame, const struct hs_parsed *p, const uint8_t my_mac[6]);

#endif
