#!/usr/bin/env bash
# The tap suite against an ASan+UBSan build of the shim (make san ->
# build-san/). Node is not instrumented, so the ASan runtime is preloaded into
# Node and its Node children only (san-preload.js; curl, for one, hangs with
# it preloaded). The shim is found through HANDOFF_SHIM_PATH (src/offload/native.ts),
# the host agent's library (native/host-agent, make san) through
# HANDOFF_HOST_LIB_PATH (src/host/native.ts).
# build-san/test_pure and the host library's build-san/test_inject (the C unit
# tests, instrumented) run first.
# Ends with "san: N passed, N failed, N skipped".
#
#   native/dpdk-shim/fuzz/san-suite.sh                  # the whole suite
#   native/dpdk-shim/fuzz/san-suite.sh dist/test/golden.test.js ...
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
shim=$(dirname "$here")
root=$(cd "$shim/../.." && pwd)
cd "$root"

fail_line() { echo "not ok - san: $1"; echo "san: 0 passed, 1 failed, 0 skipped"; exit 1; }
command -v clang >/dev/null || fail_line "clang is not installed (apt-get install clang libclang-rt-14-dev)"
make -s -C "$shim" san || fail_line "the sanitizer build failed"
host="$root/native/host-agent"
make -s -C "$host" san && make -s -C "$host/tests" SAN=1 || fail_line "the host library's sanitizer build failed"
rt=$(clang -print-file-name=libclang_rt.asan-x86_64.so)
[ -f "$rt" ] || fail_line "no ASan runtime at $rt (apt-get install libclang-rt-14-dev)"

export HANDOFF_SHIM_PATH="$shim/build-san/libhandoff_shim.so"
export HANDOFF_HOST_LIB_PATH="$host/build-san/libhandoff_host.so"
# detect_leaks=0: Node and V8 keep allocations until exit by design, which
# LeakSanitizer would report; use-after-free, overflows and UB still halt.
# abort_on_error: a report kills the process with SIGABRT, so the test that
# triggered it fails visibly instead of a worker thread exiting quietly.
# quarantine_size_mb=1: freed malloc memory is held back to catch a later use;
# the default 256 MB shows up as RSS growth in the tests that assert a flat
# footprint (100,000 SYNs), and the shim's packet memory is DPDK's, outside it.
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=1:detect_odr_violation=0:quarantine_size_mb=1:print_summary=1${ASAN_OPTIONS_EXTRA:+:$ASAN_OPTIONS_EXTRA}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:print_summary=1"
log=$(mktemp /tmp/handoff-san.XXXXXX.log)

pass=0 fail=0 skip=0
if "$shim/build-san/test_pure" >"$log.pure" 2>&1; then
  echo "ok - san: test_pure (pure-C unit tests under ASan+UBSan): $(grep -c '^ok' "$log.pure") checks"
  pass=$((pass + 1))
else
  echo "not ok - san: test_pure under ASan+UBSan (log $log.pure)"
  grep -E '^not ok|ERROR|runtime error' "$log.pure" | head -n 10 | sed 's/^/# /'
  fail=$((fail + 1))
fi
if "$host/build-san/test_inject" >"$log.inject" 2>&1; then
  echo "ok - san: test_inject (host library unit tests under ASan+UBSan): $(grep -c '^ok' "$log.inject") checks"
  pass=$((pass + 1))
else
  echo "not ok - san: test_inject under ASan+UBSan (log $log.inject)"
  grep -E '^not ok|ERROR|runtime error' "$log.inject" | head -n 10 | sed 's/^/# /'
  fail=$((fail + 1))
fi

# The runtime is preloaded into tap's Node and, through san-preload.js, into
# every Node child (test files, host agents), not into curl, ip or wrk.
tap_js=$(readlink -f "$root/node_modules/.bin/tap")
export HANDOFF_SAN_RUNTIME="$rt"
export NODE_OPTIONS="--require=$here/san-preload.js${NODE_OPTIONS:+ $NODE_OPTIONS}"
LD_PRELOAD="$rt" node "$tap_js" "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
if grep -qE 'ERROR: AddressSanitizer|runtime error:' "$log"; then
  echo "# sanitizer reports in $log:"
  grep -E 'ERROR: AddressSanitizer|runtime error:|SUMMARY: ' "$log" | sort | uniq -c | head -n 20 | sed 's/^/# /'
  # A report after a test's assertions passed (teardown, a child) still fails the stage.
  echo "not ok - san: sanitizer reports in the suite's output"
  fail=$((fail + 1))
fi
summary=$(grep -E '^# \{ total: [0-9]+' "$log" | tail -n 1)
field() { echo "$summary" | grep -oE "$1: [0-9]+" | grep -oE '[0-9]+' || echo 0; }
if [ -z "$summary" ]; then
  echo "not ok - san: no tap summary (the runner failed)"
  fail=$((fail + 1))
else
  pass=$((pass + $(field pass))); fail=$((fail + $(field fail))); skip=$((skip + $(field skip)))
  [ "$rc" -ne 0 ] && [ "$(field fail)" -eq 0 ] && fail=$((fail + 1))
fi
echo "san: $pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ] && [ "$rc" -eq 0 ]
