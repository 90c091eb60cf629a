/* SPDX-License-Identifier: MIT
 * Stage: the tunnel check (design.md §1, C11). hh_tunnel.c loads
 * build/tunnel.bpf.o with libbpf, attaches its classifier to the VXLAN
 * device's tc ingress and keeps its maps: one bpf() call per flow allowed or
 * revoked. The functions are declared in handoff_host.h ("tunnel check").
 *
 * Where the filter sits: clsact ingress of the device, at a fixed handle and
 * priority, so an agent that crashed without hh_tunnel_close() leaves a
 * filter the next one replaces in place (BPF_TC_F_REPLACE) rather than a
 * second one in front of it.
 */
#ifndef HH_TUNNEL_H
#define HH_TUNNEL_H

/** tc filter handle of the classifier ('HD'), and its priority (`tc filter show` prints both). */
#define HH_TUNNEL_TC_HANDLE 0x4844
#define HH_TUNNEL_TC_PRIORITY 0x4844

/** Open instances at once (one per device and process is the normal case; tests open a few). */
#define HH_TUNNEL_MAX_HANDLES 16

/** The programs in tunnel.bpf.o (`tc filter show` prints the first as "hh_tunnel_check"). */
#define HH_TUNNEL_PROG "hh_tunnel_check"
#define HH_TUNNEL_TEST_PROG_NAME "hh_tunnel_test"

#endif
