/* SPDX-License-Identifier: MIT
 * Stage: connection injection (design.md §5, claim step C6). hh_inject()
 * (handoff_host.h) re-creates a handed-off connection with TCP_REPAIR in one
 * call: the 12 steps described in src/host/repair.ts, which is the spec.
 *
 * The pure parts, the values the steps pass to the kernel, are here so the
 * unit test (tests/test_inject.c) checks them without privileges.
 */
#ifndef HH_INJECT_H
#define HH_INJECT_H

#include <netinet/tcp.h>
#include <stdint.h>

#include "handoff_host.h"

/** TCP_MAXSEG's range in the kernel (TCP_MIN_MSS..MAX_TCP_WINDOW). */
#define HH_TCP_MIN_MSS 88
#define HH_TCP_MAX_MAXSEG 32767

/** The most TCP_REPAIR_OPTIONS entries hh_inject passes (MSS, WINDOW, SACK_PERM, TIMESTAMP). */
#define HH_REPAIR_OPTS_MAX 4

/**
 * The TCP_MAXSEG value set before connect (step 5): @p mss capped at 32767,
 * or 0 (do not set it) when below 88, which leaves the 536 default clamp.
 */
uint32_t hh_inject_maxseg(uint16_t mss);

/**
 * The TCP_REPAIR_OPTIONS array (step 7): MSS, WINDOW (always, also 0/0),
 * then SACK_PERM and TIMESTAMP if negotiated, both with value 0.
 * @return the number of entries written to @p out.
 */
unsigned hh_inject_repair_opts(const struct hh_conn *c, struct tcp_repair_opt out[HH_REPAIR_OPTS_MAX]);

/** The TCP_REPAIR_WINDOW value (step 10): snd_wl1 = rcv_nxt - 1, rcv_wup = rcv_nxt. */
void hh_inject_repair_window(const struct hh_conn *c, struct tcp_repair_window *out);

#endif
