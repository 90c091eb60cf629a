-- Handoff: a SYN flood to the VIP; the balancer answers each SYN with a
-- SYN-ACK carrying a cookie and keeps no state (counters syn_received,
-- synack_sent). Pktgen's RX counts the SYN-ACKs.
--   range mode (default): syn-flood.pkt, no TCP options;
--   pcap mode: HANDOFF_MODE=pcap, pktgen ... -- -s 0:syn-flood.pcap (Linux SYN options).
local h = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "handoff.lua")
h.measure("syn-flood", h.configure("syn-flood", "syn-flood.pkt", "range"))
