#!/usr/bin/env bash
# flowgate against Open vSwitch with DPDK (Debian's openvswitch-switch-dpdk) on the same
# traffic, the same virtual devices and the same core, in one run:
#
#   traffic  flowgate's fwd4 pcap: 64-byte IPv4/UDP frames, one flow per destination
#            (100.64.0.0 + i), replayed by net_pcap infinite_rx; forwarded to net_null
#   OVS      ovs-vswitchd-dpdk, one PMD thread on CPU 1 (its other threads on CPU 0), a
#            netdev bridge with the pcap and null vdevs as dpdk ports and one OpenFlow rule
#            per destination: set dl_src/dl_dst, dec_ttl, output (IPv4 routing)
#   flowgate `flowgate bench --scenario fwd4 --flows N`: one worker on CPU 1, same pcap
#
# Rates are read from port statistics over the same measured window. Everything runs from
# a private directory (no system service, no lasting state): ovsdb and ovs-vswitchd are
# children of this script and are stopped, and the ovs-vswitchd alternative and the
# hugepage reservation are put back, on exit.
#
#   bench/ovs-dpdk.sh [--flows N] [--seconds S] [--warmup S] [--json FILE]
#
# Needs root (apt, hugepages, DPDK). Not part of `npm test`.
set -eEuo pipefail

cd "$(dirname "$0")/.."
REPO=$(pwd)
# shellcheck source=bench/ovs-dpdk-lib.sh
source "$REPO/bench/ovs-dpdk-lib.sh"
# Whatever fails says so: a command substitution that may fail on purpose ends in `|| true`.
trap 'report_failure "$?" "$LINENO" "$BASH_COMMAND"' ERR

FLOWS=100000
MEASURE_SECONDS=5
WARMUP_SECONDS=5
JSON_OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --flows) FLOWS=$2; shift 2 ;;
    --seconds) MEASURE_SECONDS=$2; shift 2 ;;
    --warmup) WARMUP_SECONDS=$2; shift 2 ;;
    --json) JSON_OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "ovs-dpdk.sh: unknown option '$1' (--help lists them)" >&2; exit 2 ;;
  esac
done
[[ "$FLOWS" =~ ^[0-9]+$ ]] && [ "$FLOWS" -ge 1 ] && [ "$FLOWS" -le 4194304 ] || { echo "ovs-dpdk.sh: --flows: expected 1..4194304" >&2; exit 2; }
[[ "$MEASURE_SECONDS" =~ ^[0-9]+$ ]] && [ "$MEASURE_SECONDS" -ge 1 ] || { echo "ovs-dpdk.sh: --seconds: expected a whole number of seconds >= 1" >&2; exit 2; }
[[ "$WARMUP_SECONDS" =~ ^[0-9]+$ ]] || { echo "ovs-dpdk.sh: --warmup: expected a whole number of seconds" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "ovs-dpdk.sh: needs root (apt-get, hugepages, DPDK)" >&2; exit 1; }

readonly OVS_DPDK_BIN=/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk
readonly HUGEPAGES=/sys/kernel/mm/hugepages/hugepages-2048kB
# OVS-DPDK's shared mempool (up to 256 Ki mbufs of ~3 KB for MTU 1500) plus the pcap.
readonly OVS_SOCKET_MEM_MB=1536
readonly PMD_CPU=1
readonly HOUSEKEEPING_CPU=0
readonly BRIDGE_MAC_SRC=02:00:00:00:01:00 # as lib/bench/scenarios.ts TOPOLOGY.gatewayMac
readonly NEXT_HOP_MAC=02:00:00:00:00:01   # TOPOLOGY.nextHopMac

log() { printf 'ovs-dpdk: %s\n' "$*" >&2; }
die() { printf 'ovs-dpdk.sh: %s\n' "$*" >&2; exit 1; }

RUN_DIR=""
OVSDB_PID=""
VSWITCHD_PID=""
ALT_RESTORE=""
HUGEPAGES_RESTORE=""
POLICY_RC_CREATED=0

cleanup() {
  local rc=$?
  # Undoing is best effort: a step that fails here is not what failed.
  trap - ERR
  set +e
  if [ -n "$VSWITCHD_PID" ] && kill -0 "$VSWITCHD_PID" 2>/dev/null; then
    ovs-appctl -t "$RUN_DIR/ovs-vswitchd.ctl" exit --cleanup >/dev/null 2>&1 || kill "$VSWITCHD_PID"
    for _ in $(seq 50); do kill -0 "$VSWITCHD_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$VSWITCHD_PID" 2>/dev/null
    wait "$VSWITCHD_PID" 2>/dev/null
  fi
  if [ -n "$OVSDB_PID" ] && kill -0 "$OVSDB_PID" 2>/dev/null; then
    kill "$OVSDB_PID"
    wait "$OVSDB_PID" 2>/dev/null
  fi
  [ -n "$RUN_DIR" ] && rm -rf "$RUN_DIR"
  if [ -n "$ALT_RESTORE" ]; then
    if [ "$ALT_RESTORE" = auto ]; then update-alternatives --quiet --auto ovs-vswitchd
    else update-alternatives --quiet --set ovs-vswitchd "$ALT_RESTORE"; fi
  fi
  [ -n "$HUGEPAGES_RESTORE" ] && echo "$HUGEPAGES_RESTORE" > "$HUGEPAGES/nr_hugepages"
  [ "$POLICY_RC_CREATED" = 1 ] && rm -f /usr/sbin/policy-rc.d
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- Open vSwitch with DPDK, from Debian ------------------------------------------------

if [ ! -x "$OVS_DPDK_BIN" ]; then
  log "installing openvswitch-switch-dpdk"
  # Debian's maintainer scripts would start the system service; this benchmark runs its own.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    POLICY_RC_CREATED=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends openvswitch-switch-dpdk >&2
fi
alt_status=$(update-alternatives --query ovs-vswitchd | awk '/^Status:/ {print $2}')
alt_value=$(update-alternatives --query ovs-vswitchd | awk '/^Value:/ {print $2}')
if [ "$alt_value" != "$OVS_DPDK_BIN" ]; then
  [ "$alt_status" = auto ] && ALT_RESTORE=auto || ALT_RESTORE=$alt_value
  update-alternatives --quiet --set ovs-vswitchd "$OVS_DPDK_BIN"
fi
OVS_VERSION=$(ovs-vswitchd --version | awk 'NR==1 {print $NF}')

# ---- traffic ------------------------------------------------------------------------------

[ -f dist/lib/cli/main.js ] || die "flowgate is not built (run npm run build)"
FLOWGATE=(node "$REPO/dist/lib/cli/main.js")
PCAP=$("${FLOWGATE[@]}" bench --scenario fwd4 --flows "$FLOWS" --size 64 --generate-only)
[ -f "$PCAP" ] || die "flowgate did not produce a pcap (got '$PCAP')"
log "traffic: $PCAP"

free_pages=$(cat "$HUGEPAGES/free_hugepages")
want_pages=$(( OVS_SOCKET_MEM_MB / 2 + 64 ))
if [ "$free_pages" -lt "$want_pages" ]; then
  HUGEPAGES_RESTORE=$(cat "$HUGEPAGES/nr_hugepages")
  echo $(( HUGEPAGES_RESTORE + want_pages - free_pages )) > "$HUGEPAGES/nr_hugepages"
  log "raised 2 MiB hugepages from $HUGEPAGES_RESTORE to $(cat "$HUGEPAGES/nr_hugepages") (restored on exit)"
fi

# ---- a private OVS instance ---------------------------------------------------------------

RUN_DIR=$(mktemp -d /tmp/flowgate-ovs.XXXXXX)
export OVS_RUNDIR=$RUN_DIR OVS_LOGDIR=$RUN_DIR OVS_DBDIR=$RUN_DIR OVS_SYSCONFDIR=$RUN_DIR
DB="unix:$RUN_DIR/db.sock"
vsctl() { ovs-vsctl --db="$DB" --timeout=60 "$@"; }
appctl() { ovs-appctl -t "$RUN_DIR/ovs-vswitchd.ctl" "$@"; }

ovsdb-tool create "$RUN_DIR/conf.db" /usr/share/openvswitch/vswitch.ovsschema
# Children of this script rather than --detach'ed daemons, so that they are reaped here.
ovsdb-server "$RUN_DIR/conf.db" --remote="punix:$RUN_DIR/db.sock" --unixctl="$RUN_DIR/ovsdb-server.ctl" \
  --log-file="$RUN_DIR/ovsdb-server.log" --no-chdir >/dev/null 2>&1 &
OVSDB_PID=$!
for _ in $(seq 100); do [ -S "$RUN_DIR/db.sock" ] && break; sleep 0.1; done
[ -S "$RUN_DIR/db.sock" ] || die "ovsdb-server did not start (see $RUN_DIR/ovsdb-server.log)"
vsctl --no-wait init
vsctl --no-wait set Open_vSwitch . other_config:dpdk-init=true \
  "other_config:pmd-cpu-mask=$(printf '0x%x' $(( 1 << PMD_CPU )))" \
  "other_config:dpdk-socket-mem=$OVS_SOCKET_MEM_MB" \
  "other_config:dpdk-extra=--in-memory --no-pci --no-telemetry"

# Its main, handler and revalidator threads on CPU 0; the PMD thread pins itself to CPU 1.
# flowgate's worker has CPU 1 to itself in the same way.
taskset -c "$HOUSEKEEPING_CPU" ovs-vswitchd "$DB" --unixctl="$RUN_DIR/ovs-vswitchd.ctl" \
  --log-file="$RUN_DIR/ovs-vswitchd.log" --no-chdir >/dev/null 2>&1 &
VSWITCHD_PID=$!
for _ in $(seq 600); do
  [ "$(vsctl get Open_vSwitch . dpdk_initialized 2>/dev/null || true)" = true ] && break
  kill -0 "$VSWITCHD_PID" 2>/dev/null || die "ovs-vswitchd exited: $(tail -3 "$RUN_DIR/ovs-vswitchd.log" 2>/dev/null || true)"
  sleep 0.1
done
[ "$(vsctl get Open_vSwitch . dpdk_initialized)" = true ] || die "DPDK did not initialise in ovs-vswitchd (see $RUN_DIR/ovs-vswitchd.log)"
DPDK_VERSION=$(vsctl get Open_vSwitch . dpdk_version | tr -d '"' | sed 's/^DPDK //')

vsctl add-br br0 -- set bridge br0 datapath_type=netdev
vsctl add-port br0 out -- set Interface out type=dpdk "options:dpdk-devargs=net_null0,no-rx=1" ofport_request=2

# One rule per destination, installed before the traffic starts: flow i of flowgate's fwd4
# traffic goes to 100.64.0.0 + i (lib/bench/scenarios.ts, destination4).
awk -v n="$FLOWS" -v src="$BRIDGE_MAC_SRC" -v dst="$NEXT_HOP_MAC" 'BEGIN {
  for (i = 0; i < n; i++)
    printf "priority=10,ip,in_port=1,nw_dst=100.%d.%d.%d,actions=mod_dl_src:%s,mod_dl_dst:%s,dec_ttl,output:2\n",
      64 + int(i / 65536), int(i / 256) % 256, i % 256, src, dst
}' > "$RUN_DIR/flows.txt"
ovs-ofctl del-flows br0
ovs-ofctl --bundle add-flows br0 "$RUN_DIR/flows.txt"
installed=$(ovs-ofctl dump-aggregate br0 | sed -n 's/.*flow_count=\([0-9]*\).*/\1/p')
[ "$installed" = "$FLOWS" ] || die "expected $FLOWS OpenFlow rules in br0, found $installed"
log "OVS $OVS_VERSION (DPDK $DPDK_VERSION): $installed OpenFlow rules installed; starting the traffic"

vsctl add-port br0 in -- set Interface in type=dpdk "options:dpdk-devargs=net_pcap0,rx_pcap=$PCAP,infinite_rx=1" ofport_request=1

# Warm up: every destination needs its datapath (megaflow) entry from an upcall first.
dp_flows() { appctl dpctl/show | sed -n 's/^ *flows: *\([0-9]*\).*/\1/p'; }
for _ in $(seq 120); do
  [ "$(dp_flows)" -ge "$FLOWS" ] && break
  sleep 0.5
done
pmd_cpus=$(pmd_thread_cpus /proc/"$VSWITCHD_PID"/task)
[ "$pmd_cpus" = "$PMD_CPU" ] || die "the PMD thread runs on CPU(s) '$pmd_cpus', not $PMD_CPU"
log "datapath flows: $(dp_flows); PMD thread on CPU $pmd_cpus; warming up ${WARMUP_SECONDS}s"
sleep "$WARMUP_SECONDS"

# Straight from the ports (the database's Interface statistics lag by up to 5 s).
port_packets() { ovs-ofctl dump-ports br0 "$1" | sed -n "s/.*$2 pkts=\([0-9]*\).*/\1/p"; }
appctl dpif-netdev/pmd-stats-clear >/dev/null
t0=$(date +%s.%N); tx0=$(port_packets 2 tx); rx0=$(port_packets 1 rx)
sleep "$MEASURE_SECONDS"
t1=$(date +%s.%N); tx1=$(port_packets 2 tx); rx1=$(port_packets 1 rx)
pmd_stats=$(appctl dpif-netdev/pmd-stats-show)
pmd_value() { printf '%s\n' "$pmd_stats" | awk -v key="$1" -F': *' '$1 ~ key {split($2, v, " "); print v[1]; exit}'; }
OVS_CYCLES=$(pmd_value 'avg cycles per packet')
OVS_EMC=$(pmd_value 'emc hits')
OVS_SMC=$(pmd_value 'smc hits')
OVS_MEGAFLOW=$(pmd_value 'megaflow hits')
OVS_RECEIVED=$(pmd_value 'packets received')
[ -n "$tx0" ] && [ -n "$tx1" ] && [ "$tx1" -gt "$tx0" ] ||
  die "OVS forwarded nothing in ${MEASURE_SECONDS}s (out tx packets '$tx0' -> '$tx1'; see $RUN_DIR/ovs-vswitchd.log)"
OVS_MPPS=$(awk -v a="$tx0" -v b="$tx1" -v t0="$t0" -v t1="$t1" 'BEGIN {printf "%.3f", (b - a) / (t1 - t0) / 1e6}')
OVS_RX_MPPS=$(awk -v a="$rx0" -v b="$rx1" -v t0="$t0" -v t1="$t1" 'BEGIN {printf "%.3f", (b - a) / (t1 - t0) / 1e6}')
log "OVS-DPDK: $OVS_MPPS Mpps forwarded ($OVS_RX_MPPS Mpps received), $OVS_CYCLES cycles/packet"

# Stop OVS before flowgate takes CPU 1 and the hugepages.
cleanup_ovs() {
  appctl exit --cleanup >/dev/null 2>&1 || kill "$VSWITCHD_PID"
  wait "$VSWITCHD_PID" 2>/dev/null || true
  VSWITCHD_PID=""
  kill "$OVSDB_PID"; wait "$OVSDB_PID" 2>/dev/null || true
  OVSDB_PID=""
}
cleanup_ovs

# ---- flowgate on the same traffic ---------------------------------------------------------

FLOWGATE_ARGS=(bench --scenario fwd4 --flows "$FLOWS" --size 64 --seconds "$MEASURE_SECONDS" --warmup "$WARMUP_SECONDS" --json)
log "flowgate ${FLOWGATE_ARGS[*]}"
FG_JSON=$("${FLOWGATE[@]}" "${FLOWGATE_ARGS[@]}")
fg() { node -e 'const r = JSON.parse(process.argv[1]); const v = process.argv[2].split(".").reduce((o, k) => o?.[k], r); console.log(typeof v === "number" ? v.toFixed(3) : String(v))' "$FG_JSON" "$1"; }
FG_MPPS=$(fg mpps)
FG_CYCLES=$(fg cycles_per_packet)
FG_IO=$(fg baseline.io_mpps)
RATIO=$(awk -v f="$FG_MPPS" -v o="$OVS_MPPS" 'BEGIN {printf "%.2f", f / o}')
EMC_PCT=$(awk -v h="$OVS_EMC" -v n="$OVS_RECEIVED" 'BEGIN {printf "%.1f", n ? 100 * h / n : 0}')
MEGAFLOW_PCT=$(awk -v h="$OVS_MEGAFLOW" -v n="$OVS_RECEIVED" 'BEGIN {printf "%.1f", n ? 100 * h / n : 0}')

cat <<EOF
IPv4 routing, $FLOWS destinations, 64-byte frames, one core (CPU $PMD_CPU), ${MEASURE_SECONDS}s after ${WARMUP_SECONDS}s warmup:
  OVS-DPDK $OVS_VERSION (DPDK $DPDK_VERSION, defaults: EMC on, SMC off)
                 $OVS_MPPS Mpps  $OVS_CYCLES cycles/packet  (EMC hits $EMC_PCT %, megaflow hits $MEGAFLOW_PCT %)
  flowgate       $FG_MPPS Mpps  $FG_CYCLES cycles/packet  (testpmd io on the same traffic: $FG_IO Mpps)
  flowgate / OVS-DPDK: ${RATIO}x  (target >= 2x)
EOF

if [ -n "$JSON_OUT" ]; then
  node -e '
    const [file, fgJson, ...kv] = process.argv.slice(1);
    const o = {};
    for (let i = 0; i < kv.length; i += 2) o[kv[i]] = Number.isNaN(Number(kv[i + 1])) ? kv[i + 1] : Number(kv[i + 1]);
    o.flowgate = JSON.parse(fgJson);
    require("fs").writeFileSync(file, JSON.stringify(o, null, 2) + "\n");
  ' "$JSON_OUT" "$FG_JSON" \
    flows "$FLOWS" seconds "$MEASURE_SECONDS" warmup "$WARMUP_SECONDS" pmd_cpu "$PMD_CPU" \
    ovs_version "$OVS_VERSION" dpdk_version "$DPDK_VERSION" ovs_mpps "$OVS_MPPS" ovs_rx_mpps "$OVS_RX_MPPS" \
    ovs_cycles_per_packet "$OVS_CYCLES" ovs_emc_hits "$OVS_EMC" ovs_smc_hits "$OVS_SMC" ovs_megaflow_hits "$OVS_MEGAFLOW" \
    ovs_packets "$OVS_RECEIVED" flowgate_mpps "$FG_MPPS" flowgate_cycles_per_packet "$FG_CYCLES" ratio "$RATIO" \
    flowgate_command "flowgate ${FLOWGATE_ARGS[*]}"
  log "wrote $JSON_OUT"
fi
