#!/usr/bin/env bash
# Set up Handoff on Debian 12 (or Ubuntu): system packages, npm dependencies,
# the DPDK shim and the TypeScript build. Idempotent; run by `npm start`,
# `npm test` and CI. Not root, or not Debian/Ubuntu: prints what to run.
set -euo pipefail
cd "$(dirname "$0")/.."

# What the balancer, the tests and the benchmarks use from the distribution.
APT_PACKAGES=(
  build-essential pkg-config libdpdk-dev dpdk dpdk-dev libpcap-dev
  iproute2 nftables curl ethtool openssl wrk
  haproxy hping3 clang libclang-rt-14-dev llvm libbpf-dev bird2 nginx python3 dpdk-doc
)

say() { printf 'setup: %s\n' "$*" >&2; }

is_debian_like() {
  [ -r /etc/os-release ] && . /etc/os-release && case " ${ID:-} ${ID_LIKE:-} " in
    *" debian "*|*" ubuntu "*) return 0 ;;
  esac
  return 1
}

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
fi

if ! is_debian_like || ! command -v apt-get >/dev/null 2>&1; then
  if ! pkg-config --exists libdpdk 2>/dev/null; then
    say "this is not Debian or Ubuntu, and DPDK's development files are not found by pkg-config."
    say "Install DPDK 22.11 (libdpdk with pkg-config metadata, its net_ring/net_pcap/net_tap/net_af_packet PMDs and dpdk-testpmd),"
    say "libpcap, pkg-config, a C compiler and make, iproute2, nftables and curl; then run: npm run setup"
    exit 1
  fi
elif [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    say "missing packages: ${missing[*]}"
    say "run as root:"
    printf '  sudo apt-get update && sudo apt-get install -y --no-install-recommends %s\n' "${missing[*]}" >&2
    say "then run this command again (the balancer and its tests also need root: DPDK, namespaces, TCP_REPAIR)."
    exit 1
  fi
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# npm dependencies: install when absent or older than the lock file.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "installing npm dependencies"
  npm ci --no-audit --no-fund --loglevel=error
fi

make -s -C native/dpdk-shim
make -s -C native/host-agent
npx --no-install tsc -p .
