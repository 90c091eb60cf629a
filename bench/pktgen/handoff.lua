-- Handoff benchmark helpers for Pktgen-DPDK 23.03 (built with -Denable_lua=true).
-- Loaded by established.lua, syn-flood.lua and mix.lua with dofile; not run
-- directly. Settings come from the environment, defaults in brackets:
--   HANDOFF_PORT     Pktgen port number                              [0]
--   HANDOFF_MODE     'range' (a .pkt file) or 'pcap' (-s P:FILE)      [per script]
--   HANDOFF_LB_MAC   the balancer port's MAC (range mode only; a pcap
--                    has its MACs written in by bench/pktgen/pcaps.ts)  [the .pkt's]
--   HANDOFF_RATE     percent of line rate                            [100]
--   HANDOFF_SECONDS  measured seconds, after HANDOFF_WARMUP          [10]
--   HANDOFF_WARMUP   seconds sent before measuring                   [2]
--   HANDOFF_QUIT     '0' stays in Pktgen's prompt afterwards         [quit]
-- Output: lines starting 'handoff-pktgen': the window's edges (mark=start,
-- mark=end) and its rates (scenario=... tx_pps=... rx_pps=...), read by
-- bench/pktgen/veth-check.ts and by people.
local M = {}

M.dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"

local function env(name, default)
    local v = os.getenv(name)
    if v == nil or v == "" then return default end
    return v
end

local function number(name, default)
    local v = tonumber(env(name, tostring(default)))
    if v == nil or v < 0 then error(name .. " must be a non-negative number") end
    return v
end

M.port = env("HANDOFF_PORT", "0")

-- Configure the port for `scenario`: `pkt` is the range-mode command file
-- (nil: the scenario needs a pcap); returns the mode used.
function M.configure(scenario, pkt, default_mode)
    local mode = env("HANDOFF_MODE", default_mode)
    if mode == "range" then
        if pkt == nil then error(scenario .. ": range mode cannot send this; start Pktgen with -s " .. M.port .. ":mix.pcap") end
        pktgen.load(M.dir .. pkt)
        local mac = env("HANDOFF_LB_MAC", nil)
        if mac then pktgen.range.dst_mac(M.port, "start", mac) end
    elseif mode == "pcap" then
        -- Pktgen loads the pcap at start-up (-s P:FILE); without one this
        -- sends its single default packet: check the balancer's counters.
        pktgen.load(M.dir .. "pcap.pkt")
    else
        error("HANDOFF_MODE must be 'range' or 'pcap', got '" .. mode .. "'")
    end
    pktgen.set(M.port, "rate", number("HANDOFF_RATE", 100))
    return mode
end

-- Wall-clock seconds: Lua has none finer than os.time(), and pktgen.delay()
-- overruns (it runs Pktgen's timers between 10 ms sleeps).
local function now()
    local p = io.popen("date +%s.%N")
    local t = p and tonumber(p:read("*l"))
    if p then p:close() end
    return t or os.time()
end

local function stats()
    return pktgen.portStats(M.port, "port")[tonumber(M.port)]
end

-- The window's edges with Pktgen's counters, so a driver can read the
-- balancer's counters at the same moments and time the window itself
-- (pktgen.delay sleeps in 10 ms steps and may run a little long).
local function mark(what, s)
    print(string.format("handoff-pktgen mark=%s opackets=%d ipackets=%d obytes=%d ibytes=%d",
        what, s.opackets, s.ipackets, s.obytes, s.ibytes))
    io.stdout:flush()
end

-- Send for warm-up plus the measured window; print the rates of the window.
function M.measure(scenario, mode)
    local seconds = number("HANDOFF_SECONDS", 10)
    local warmup = number("HANDOFF_WARMUP", 2)
    pktgen.screen("off") -- no redraws: less work for the main lcore, plain output
    pktgen.clr()
    pktgen.start(M.port)
    pktgen.delay(math.floor(warmup * 1000))
    local a = stats()
    local t0 = now()
    mark("start", a)
    pktgen.delay(math.floor(seconds * 1000))
    local b = stats()
    local t1 = now()
    mark("end", b)
    pktgen.stop(M.port)
    seconds = t1 - t0
    local tx = (b.opackets - a.opackets) / seconds
    local rx = (b.ipackets - a.ipackets) / seconds
    local line = string.format(
        "handoff-pktgen scenario=%s mode=%s seconds=%.2f tx_pps=%.0f rx_pps=%.0f tx_mbps=%.1f rx_mbps=%.1f " ..
        "rx_missed=%d tx_errors=%d",
        scenario, mode, seconds, tx, rx, (b.obytes - a.obytes) * 8 / seconds / 1e6,
        (b.ibytes - a.ibytes) * 8 / seconds / 1e6, b.imissed - a.imissed, b.oerrors - a.oerrors)
    print(line)
    io.stdout:flush()
    pktgen.delay(500) -- let the last packets drain before the next step
    if env("HANDOFF_QUIT", "1") ~= "0" then pktgen.quit() end
end

return M
