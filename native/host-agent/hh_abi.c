/* SPDX-License-Identifier: MIT
 * ABI probes: the size and field offsets of every struct in handoff_host.h,
 * as JSON, so the koffi declarations can be checked against the compiler.
 */
#include <errno.h>
#include <string.h>

#include "handoff_host.h"
#include "abi_json.h"

int hh_abi_layout(char *buf, size_t len)
{
	struct out o = { buf, len, 0 }, *o_ = &o;

	put(&o, "{\"version\":%u,\"constants\":{\"HH_TUNNEL_MAX_FLOWS\":%u,\"HH_TUNNEL_MAX_BALANCERS\":%u,\"HH_TC_COUNT\":%u,\"HH_SPLICE_MAX_PAIRS\":%u},\"structs\":{",
	    HH_ABI_VERSION, HH_TUNNEL_MAX_FLOWS, HH_TUNNEL_MAX_BALANCERS, HH_TC_COUNT, HH_SPLICE_MAX_PAIRS);
	STRUCT(o_, 1, hh_conn,
	       F(client_ip) F(vip) F(client_port) F(vip_port) F(iss) F(irs) F(snd_nxt) F(rcv_nxt) F(snd_wnd)
		       F(rcv_wnd) F(ts_value) F(mss) F(snd_wscale) F(rcv_wscale) F(sack_ok) F(ts_ok) F(flags)
			       F(reserved));
	STRUCT(o_, 0, hh_flow_key, F(vni) F(client_ip) F(vip) F(client_port) F(vip_port));
	STRUCT(o_, 0, hh_inject_failure, F(step) F(err) F(level) F(optname) F(optval) F(queued));
	STRUCT(o_, 0, hh_frozen, F(snd_nxt) F(rcv_nxt) F(snd_wnd) F(rcv_wnd) F(ts_value) F(unread) F(fd) F(reserved));
	STRUCT(o_, 0, hh_splice_stats,
	       F(added) F(active) F(done) F(refused_full) F(upstream_failed) F(errors) F(bytes_to_upstream)
		       F(bytes_to_client));
	put(&o, "}}");
	if (buf && o.used >= len)
		return -ENOSPC;
	return (int)o.used;
}
