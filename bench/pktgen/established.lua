-- Handoff: established flows to the VIP, forwarded (VXLAN) by the balancer.
--   pcap mode (default): pktgen ... -- -s 0:established.pcap -f established.lua
--     1,000,000 flows, one ACK each, in turn (bench/pktgen/pcaps.ts);
--   range mode: HANDOFF_MODE=range, established.pkt (24,576 of them per TX queue).
-- The balancer needs an ACTIVE mapping per flow: bench/pktgen/balancer.ts.
-- Pktgen's RX counts what comes back: the VXLAN packets, when the balancer's
-- host entry points at this port (lb-veth.yaml, lb-bare-metal.yaml).
local h = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "handoff.lua")
h.measure("established", h.configure("established", "established.pkt", "pcap"))
