/* SPDX-License-Identifier: MIT
 * Counters and drop reasons: one X-macro list each, so names and indices
 * cannot drift. Each worker owns one cache-aligned row (single writer).
 */
#ifndef HS_COUNTERS_H
#define HS_COUNTERS_H

#include <stdint.h>
#include <rte_common.h>

#define HS_COUNTERS(X)                                                         \
	X(RX_PACKETS, "rx_packets")                                            \
	X(RX_BYTES, "rx_bytes")                                                \
	X(TX_PACKETS, "tx_packets")                                            \
	X(TX_BYTES, "tx_bytes")                                                \
	X(ARP_REPLIES, "arp_replies")                                          \
	X(ENCAP_PACKETS, "encap_packets")                                      \
	X(ENCAP_BYTES, "encap_bytes")                                          \
	X(HELD, "held")                                                        \
	X(RELEASED, "released")                                                \
	X(EXC_MISS, "exception_miss")                                          \
	X(EXC_LOCAL, "exception_local")                                        \
	X(CTL_TX, "control_tx")                                                \
	X(FIN_RST, "fin_rst_seen")                                             \
	X(REOPENED, "reopened_by_syn")                                         \
	X(COMMANDS, "commands")                                                \
	X(IDLE_SLEEPS, "idle_sleeps")                                          \
	X(WORKER_WAKEUPS, "worker_wakeups")                                    \
	X(SYN_RCVD, "syn_received")                                            \
	X(SYNACK_SENT, "synack_sent")                                          \
	X(ACCEPTED, "accepted")                                                \
	X(CONN_DATA, "conn_data_segments")                                     \
	X(CONN_BYTES, "conn_bytes")                                            \
	X(CONN_RETRANS, "conn_retransmits")                                    \
	X(CONN_OOO, "conn_out_of_order")                                       \
	X(CONN_FIN, "conn_fins")                                               \
	X(CONN_HELD, "conn_held")                                              \
	X(CONN_RESET_RCVD, "conn_resets_received")                             \
	X(ACK_SENT, "acks_sent")                                               \
	X(RST_SENT, "resets_sent")                                             \
	X(EXC_CONN, "conn_events")                                             \
	X(ACCEPT_TIMEOUTS, "accept_timeouts")                                  \
	X(FROZEN, "handoffs_frozen")                                           \
	X(FAULT_CORRUPTED, "fault_corrupted")                                  \
	X(FAULT_DUPLICATED, "fault_duplicated")                                \
	X(FAULT_REORDERED, "fault_reordered")                                  \
	X(EXC_STRAY, "exception_stray")                                        \
	X(REINJECTED, "reinjected")                                            \
	X(ANNOUNCED_SILENT, "accept_announced_silent")                         \
	X(ANNOUNCED_EAGER, "accept_announced_eager")                           \
	X(EXC_ARP, "exception_arp")                                            \
	X(ENCAP_FAST, "encap_fast")                                            \
	X(OVERFLOW_HITS, "overflow_hits")

/* Every reason a packet is dropped; counted as "drop_<name>". */
#define HS_DROP_REASONS(X)                                                     \
	X(ZERO_LEN, "zero_length")                                             \
	X(MULTISEG, "multi_segment")                                           \
	X(OVERSIZE, "oversize")                                                \
	X(TRUNC_ETH, "truncated_ethernet")                                     \
	X(TRUNC_VLAN, "truncated_vlan")                                        \
	X(ETHERTYPE, "unknown_ethertype")                                      \
	X(TRUNC_ARP, "truncated_arp")                                          \
	X(ARP_FORMAT, "arp_unsupported_format")                                \
	X(ARP_OP, "arp_unsupported_op")                                           \
	X(ARP_NOT_OURS, "arp_not_for_us")                                      \
	X(TRUNC_IP, "truncated_ipv4")                                          \
	X(IP_VERSION, "bad_ip_version")                                        \
	X(IP_IHL, "bad_ihl")                                                   \
	X(IP_OPTIONS, "ip_options")                                            \
	X(IP_LEN, "bad_ip_total_length")                                       \
	X(IP_CHECKSUM, "bad_ip_checksum")                                      \
	X(IP_FRAGMENT, "ip_fragment")                                          \
	X(TRUNC_L4, "truncated_l4")                                            \
	X(TCP_DOFF, "bad_tcp_data_offset")                                     \
	X(NOT_OURS, "not_for_us")                                              \
	X(VIP_NO_SERVICE, "vip_service_unknown")                               \
	X(HOST_INVALID, "host_undefined")                                      \
	X(ENCAP_TOO_BIG, "encap_exceeds_mtu")                                  \
	X(HOLD_FLOW_FULL, "hold_flow_full")                                    \
	X(HOLD_TOTAL_FULL, "hold_total_full")                                  \
	X(HOLD_WRONG_WORKER, "hold_other_worker")                              \
	X(HELD_FLUSHED, "held_flushed")                                        \
	X(EXC_RING_FULL, "exception_ring_full")                                \
	X(TX_FULL, "tx_queue_full")                                            \
	X(CTL_TX_FULL, "control_tx_ring_full")                                 \
	X(CTL_TX_NOMBUF, "control_tx_no_mbuf")                                 \
	X(BAD_COOKIE, "bad_cookie")                                            \
	X(ACCEPT_FULL, "accept_table_full")                                    \
	X(NO_CONN, "no_connection")                                            \
	X(TCP_OPTS, "bad_tcp_options")                                         \
	X(CONN_BAD_ACK, "conn_bad_ack")                                        \
	X(CONN_SYN, "syn_on_connection")                                       \
	X(RST_WINDOW, "rst_out_of_window")                                     \
	X(NOMBUF, "no_mbuf")                                                   \
	X(STALE_COMMAND, "stale_command")                                      \
	X(FAULT_DROPPED, "fault_injected")                                     \
	X(STRAY_RATE, "stray_rate_limited")                                    \
	X(REINJECT_MISS, "reinject_miss")                                      \
	X(ARP_RATE, "arp_rate_limited")                                        \
	X(ARP_REPLY_NOT_OURS, "arp_reply_not_for_us")

enum hs_counter {
#define HS_X(id, name) HS_C_##id,
	HS_COUNTERS(HS_X)
#undef HS_X
#define HS_X(id, name) HS_D_##id,
	HS_DROP_REASONS(HS_X)
#undef HS_X
	HS_COUNTER_MAX
};

/* Drop reasons as returned by the parser: the counter index itself. */
typedef int hs_drop_t;

struct hs_stats {
	uint64_t c[HS_COUNTER_MAX];
} __rte_cache_aligned;

#endif
