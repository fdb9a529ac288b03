#!/usr/bin/env bash
# Bytes written to storage per reading on the demo plant, by store.commit_interval_ms (issue
# 14, SD-card care), for docs/PERFORMANCE.md. Not a test: it prints numbers.
#   cargo build --release --bin gkgw && bash tests/perf/card-writes.sh [INTERVAL_MS ...]
# For each interval: the default demo (20 meters every 5 s, the simulated plant over Modbus
# TCP, GPIO), 60 s to settle, then the increase of the gateway's own counters over MEASURE_S
# (default 300): /proc/PID/io write_bytes (what it caused to be written, WAL checkpoints
# included), readings committed and commits, and the meters' acks (PUBACK latency is at
# most one interval).
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/perf/common.sh
BIN=${BIN:-target/release/gkgw}
MEASURE_S=${MEASURE_S:-300}
metric() { curl -s -H "Authorization: Bearer $2" "http://127.0.0.1:$1/metrics" | awk -v m="$3" '$1 == m {print $2}'; }
echo "interval_ms  readings/s  commits/s  bytes/s  bytes/reading  MB/hour"
for ms in "${@:-500 1000 5000 15000 30000 60000}"; do
  HTTP=$(free_port) MQTT=$(free_port)
  "$BIN" demo --commit-interval-ms "$ms" --state-dir "$WORK/s$ms" --http "127.0.0.1:$HTTP" --mqtt "127.0.0.1:$MQTT" > "$WORK/demo$ms.log" 2>&1 &
  GW=$!; PIDS+=($GW)
  wait_http "127.0.0.1:$HTTP/healthz" || { cat "$WORK/demo$ms.log"; exit 1; }
  sleep 60
  TOKEN=$(cat "$WORK/s$ms/demo-viewer.token")
  w0=$(wbytes $GW) r0=$(metric $HTTP "$TOKEN" gkgw_readings_accepted_total) c0=$(metric $HTTP "$TOKEN" gkgw_store_commits_total)
  sleep "$MEASURE_S"
  w1=$(wbytes $GW) r1=$(metric $HTTP "$TOKEN" gkgw_readings_accepted_total) c1=$(metric $HTTP "$TOKEN" gkgw_store_commits_total)
  kill $GW; wait $GW 2>/dev/null || true
  awk -v ms="$ms" -v w=$((w1 - w0)) -v r=$((r1 - r0)) -v c=$((c1 - c0)) -v t="$MEASURE_S" \
    'BEGIN { printf "%11d  %10.2f  %9.3f  %7.0f  %13.0f  %7.1f\n", ms, r/t, c/t, w/t, w/r, w/t*3600/1e6 }'
done
