/* SPDX-License-Identifier: MIT
 * ABI probes: the size and field offsets of every struct in handoff_shim.h,
 * as JSON, so the koffi declarations can be checked against the compiler.
 */
#include <errno.h>
#include <string.h>

#include "handoff_shim.h"
#include "abi_json.h"

int hs_abi_layout(char *buf, size_t len)
{
	struct out o = { buf, len, 0 }, *o_ = &o;

	put(&o, "{\"version\":%u,\"constants\":{\"HS_MAX_PORTS\":%u,\"HS_MAX_VIPS\":%u,\"HS_MAX_WORKERS\":%u,"
		"\"HS_MAX_HOSTS\":%u,\"HS_PKT_MAX\":%u,\"HS_DEVICE_NAME_LEN\":%u},\"structs\":{",
	    HS_ABI_VERSION, HS_MAX_PORTS, HS_MAX_VIPS, HS_MAX_WORKERS, HS_MAX_HOSTS, HS_PKT_MAX,
	    HS_DEVICE_NAME_LEN);
	STRUCT(o_, 1, hs_port_conf, F(device) F(ip) F(mtu) F(ring) F(promisc) F(rx_desc) F(tx_desc) F(mac) F(reserved));
	STRUCT(o_, 0, hs_vip_conf, F(ip) F(port) F(proto) F(reserved));
	STRUCT(o_, 0, hs_config,
	       F(n_ports) F(n_vips) F(n_workers) F(mbufs) F(mapping_capacity) F(hold_flows) F(hold_per_flow)
		       F(hold_total) F(exc_ring_size) F(tx_ring_size) F(idle_sleep_us) F(idle_sleep_max_us) F(idle_spins) F(accept_capacity)
			       F(accept_max_bytes) F(accept_timeout_ms) F(cookie_tick_s) F(rcv_wscale) F(reset_bad_ack)
			       F(reserved) F(cookie_secret) F(stray_rate) F(stray_burst) F(announce_after_ms) F(ports)
			       F(vips));
	STRUCT(o_, 0, hs_host_conf, F(ip) F(port) F(nexthop_mac) F(inner_mac) F(reserved));
	STRUCT(o_, 0, hs_mapping,
	       F(client_ip) F(vip) F(client_port) F(vip_port) F(proto) F(state) F(host_id) F(flow_id)
		       F(reserved) F(packets) F(bytes));
	STRUCT(o_, 0, hs_pkt_meta, F(offset) F(len) F(port) F(reason) F(worker) F(reserved));
	STRUCT(o_, 0, hs_conn_event,
	       F(type) F(worker) F(port) F(conn_id) F(conn_gen) F(client_ip) F(vip) F(client_port) F(vip_port)
		       F(iss) F(irs) F(snd_nxt) F(rcv_nxt) F(snd_wnd) F(rcv_wnd) F(ts_val) F(ts_ecr) F(data_seq)
			       F(payload_off) F(payload_len) F(mss) F(snd_wscale) F(rcv_wscale) F(sack_ok) F(ts_ok)
				       F(vlan_tci) F(peer_mac));
	STRUCT(o_, 0, hs_fault, F(drop_pm) F(corrupt_pm) F(duplicate_pm) F(reorder_pm) F(seed));
	STRUCT(o_, 0, hs_port_info, F(port_id) F(mac) F(ip) F(mtu) F(reserved));
	put(&o, "}}");
	if (buf && o.used >= len)
		return -ENOSPC;
	return (int)o.used;
}
