#!/usr/bin/env bash
# Idempotent set-up for flowgate, run before `npm start` and `npm test` (npm pre-scripts).
# Installs the Debian packages flowgate and its tests need, reserves hugepages, installs the
# npm dependencies and builds the native addon and the TypeScript. Each step checks first and
# does nothing when its work is already done, so a second run takes a second or two.
#
#   scripts/setup.sh              everything
#   scripts/setup.sh --build-only  npm dependencies and the build, no system changes
set -euo pipefail

cd "$(dirname "$0")/.."
build_only=0
[ "${1:-}" = "--build-only" ] && build_only=1

log() { printf 'setup: %s\n' "$*" >&2; }

# Runtime: DPDK 22.11 and the build chain for the addon. Tests: independent packet decoders
# (scapy, tshark), network-namespace tooling, qemu for interop with the kernel's ip6tnl, and
# clang-14 with libFuzzer and the sanitizer runtimes: the fast path's fuzz target (test/fuzz) and the
# ThreadSanitizer build of the concurrency tests (test/tsan).
readonly DEBIAN_PACKAGES=(
  dpdk dpdk-dev libdpdk-dev pkg-config g++ make python3 libnetfilter-conntrack-dev libmnl-dev libpcap-dev
  iproute2 nftables iputils-ping procps kmod ethtool conntrack tcpdump socat iperf3
  python3-scapy tshark python3-pyftpdlib ftp curl
  qemu-system-x86 busybox-static cpio gcc libc6-dev
  clang-14 libclang-rt-14-dev
)
readonly MIN_FREE_HUGEPAGES=1024
readonly HUGEPAGES_SYSFS=/sys/kernel/mm/hugepages/hugepages-2048kB

install_debian_packages() {
  local missing=()
  for pkg in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    log "missing Debian packages (${missing[*]}) and not root: install them with apt-get"
    return 1
  fi
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # tshark asks whether non-root users may capture; answer it before apt does.
  echo 'wireshark-common wireshark-common/install-setuid boolean false' | debconf-set-selections
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}

reserve_hugepages() {
  [ -d "$HUGEPAGES_SYSFS" ] || { log "warning: no 2 MiB hugepage support; the dataplane will run with --no-huge (slower)"; return 0; }
  local total free want
  total=$(cat "$HUGEPAGES_SYSFS/nr_hugepages")
  free=$(cat "$HUGEPAGES_SYSFS/free_hugepages")
  [ "$free" -ge "$MIN_FREE_HUGEPAGES" ] && return 0
  want=$((total + MIN_FREE_HUGEPAGES - free))
  if [ "$(id -u)" -ne 0 ] || ! echo "$want" > "$HUGEPAGES_SYSFS/nr_hugepages" 2>/dev/null; then
    log "warning: could not reserve $MIN_FREE_HUGEPAGES free 2 MiB hugepages; the dataplane will fall back to --no-huge (slower)"
    return 0
  fi
  free=$(cat "$HUGEPAGES_SYSFS/free_hugepages")
  [ "$free" -ge "$MIN_FREE_HUGEPAGES" ] || log "warning: only $free free 2 MiB hugepages (memory is fragmented); the dataplane may fall back to --no-huge"
}

install_npm_dependencies() {
  local stamp=node_modules/.flowgate-lock.sha256 want
  want=$(sha256sum package-lock.json | cut -d' ' -f1)
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && return 0
  log "installing npm dependencies (npm ci)"
  # Scripts are skipped: the addon is built below, after the Debian packages are in place.
  npm ci --ignore-scripts --no-audit --no-fund >&2
  echo "$want" > "$stamp"
}

# Node's headers: where npm is set to find them, else the distribution's (node-gyp would
# otherwise download them, and this machine may have no route to nodejs.org).
node_headers() {
  local dir
  dir=$(npm config get nodedir 2>/dev/null || true)
  if [ -n "$dir" ] && [ "$dir" != "undefined" ] && [ "$dir" != "null" ]; then echo "$dir"; return; fi
  [ -f /usr/include/node/node_api.h ] && echo /usr
}

build() {
  local gyp=node_modules/.bin/node-gyp nodedir
  nodedir=$(node_headers)
  if [ ! -f build/Makefile ] || [ binding.gyp -nt build/Makefile ]; then
    log "configuring the native addon"
    "$gyp" configure ${nodedir:+--nodedir="$nodedir"} >&2
  fi
  "$gyp" build --jobs "$(nproc)" >&2
  node_modules/.bin/tsc -p . >&2
}

if [ "$build_only" -eq 0 ]; then
  install_debian_packages
  reserve_hugepages
fi
install_npm_dependencies
build
