#!/usr/bin/env bash
# Short libFuzzer runs of the native targets, as CI does: the shim's
# (native/dpdk-shim/fuzz/) and the host library's (native/host-agent/fuzz/,
# the BPF tunnel check's parser). Build them (make fuzz -> build-fuzz/), replay every committed regression input, then
# fuzz each target for FUZZ_SECONDS (default 20) from its committed seed
# corpus. The committed corpora are read, never written: new inputs go to a
# temporary directory (FUZZ_WORK to keep them). Prints one TAP-like line per
# check and ends with "fuzz: N passed, N failed". Long campaigns: docs/fuzzing.md.
#
#   native/dpdk-shim/fuzz/run.sh [target...]      # default: every fuzz_*.c of both
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
shim=$(dirname "$here")
seconds=${FUZZ_SECONDS:-20}
work=${FUZZ_WORK:-$(mktemp -d /tmp/handoff-fuzz.XXXXXX)}
mkdir -p "$work"

if ! command -v clang >/dev/null; then
  echo "not ok - fuzz: clang is not installed (apt-get install clang libclang-rt-14-dev)"
  echo "fuzz: 0 passed, 1 failed"
  exit 1
fi
# Each library's fuzz folder: its sources, seed corpora and regressions; binaries in <lib>/build-fuzz/.
libs=("$shim" "$(cd "$shim/../host-agent" && pwd)")
for lib in "${libs[@]}"; do
  if ! make -s -C "$lib" fuzz; then
    echo "not ok - fuzz: the targets of $lib do not build"
    echo "fuzz: 0 passed, 1 failed"
    exit 1
  fi
done
lib_of() { for lib in "${libs[@]}"; do [ -f "$lib/fuzz/$1.c" ] && { echo "$lib"; return; }; done; echo "$shim"; }

if [ $# -gt 0 ]; then targets=("$@"); else
  targets=(); for lib in "${libs[@]}"; do for f in "$lib"/fuzz/fuzz_*.c; do targets+=("$(basename "$f" .c)"); done; done
fi

pass=0 fail=0
report() { # ok|not ok, text
  echo "$1 - $2"
  if [ "$1" = ok ]; then pass=$((pass + 1)); else fail=$((fail + 1)); fi
}
show_crash() { # a failing input, in hex, so the CI log alone is enough to reproduce it
  for a in "$1"/crash-* "$1"/leak-* "$1"/timeout-* "$1"/oom-*; do
    [ -f "$a" ] || continue
    echo "# failing input $a ($(stat -c %s "$a") bytes):"
    od -An -tx1 -v "$a" | head -n 64 | sed 's/^/#  /'
  done
}

for t in "${targets[@]}"; do
  lib=$(lib_of "$t")
  dir="$lib/fuzz"
  bin="$lib/build-fuzz/$t"
  log="$work/$t.log"
  art="$work/$t-artifacts"
  mkdir -p "$art" "$work/$t-corpus"
  # Regression inputs: each must run clean (one execution per file).
  regs=("$dir/regressions/$t"/*)
  if [ -e "${regs[0]}" ]; then
    if "$bin" -artifact_prefix="$art/" "${regs[@]}" >"$log.reg" 2>&1; then
      report ok "$t: ${#regs[@]} regression inputs replayed"
    else
      report "not ok" "$t: a regression input fails again (log $log.reg)"
      grep -E 'ERROR|property failed|runtime error|Running:' "$log.reg" | tail -n 5 | sed 's/^/# /'
    fi
  fi
  # A short campaign from the committed seeds.
  if "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$art/" "$work/$t-corpus" "$dir/corpus/$t" >"$log" 2>&1; then
    runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$')
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -n 1)
    report ok "$t: ${runs:-?} runs in ${seconds} s, ${cov:-cov: ?}, no crash"
  else
    report "not ok" "$t: crash or property failure (log $log)"
    grep -E 'ERROR|property failed|runtime error|SUMMARY' "$log" | head -n 8 | sed 's/^/# /'
    show_crash "$art"
    echo "# to keep it: cp $art/crash-* $dir/regressions/$t/ (see docs/fuzzing.md)"
  fi
done
echo "fuzz: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
