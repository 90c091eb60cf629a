-- Handoff: handshake plus request, as far as a generator without a TCP stack
-- can go: pktgen ... -- -s 0:mix.pcap -f mix.lua
-- Per client a SYN, then an ACK carrying an HTTP GET. The ACK cannot echo the
-- balancer's cookie (its secret and clock are the balancer's), so each ACK is
-- checked and dropped (drop_bad_cookie): this measures SYN-ACK generation
-- plus the cookie check of a data-carrying ACK, i.e. the stateless cost of a
-- connection attempt. Completed handshakes and handoffs need real TCP
-- clients (wrk, curl) and host agents: docs/benchmarks.md.
local h = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "handoff.lua")
h.measure("mix", h.configure("mix", nil, "pcap"))
