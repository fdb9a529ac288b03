#!/usr/bin/env bash
# Dashboard measurements of issue 13, for docs/PERFORMANCE.md. Not a test: it prints numbers.
#   cargo build --release --bin gkgw && bash tests/perf/dashboard.sh
# A demo with 200 meters and 7 pre-filled days; tests/browser/perf.mjs measures the pages in
# headless Chromium, then keeps 10 overview tabs open on live updates while this samples the
# gateway's CPU and RSS over 60 s (against 60 s with no dashboard open).
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/perf/common.sh
BIN=${BIN:-target/release/gkgw}
HTTP=$(free_port) MQTT=$(free_port)
"$BIN" demo --meters 200 --history-days 7 --state-dir "$WORK/state" --http "127.0.0.1:$HTTP" --mqtt "127.0.0.1:$MQTT" > "$WORK/demo.log" 2>"$WORK/demo.err" &
GW=$!; PIDS+=($GW)
wait_http "127.0.0.1:$HTTP/healthz" || { cat "$WORK/demo.log"; exit 1; }
sleep 20
t0=$(ticks $GW); sleep 60; t1=$(ticks $GW)
echo "gateway, no dashboard open: CPU $(echo "scale=1; ($t1 - $t0) * 100 / $hz / 60" | bc) % of one core over 60 s, RSS $(rss $GW) KiB"
PW=$(awk '/login:/ && $2 == "viewer" {print $4; exit}' "$WORK/demo.log")
node tests/browser/perf.mjs "http://127.0.0.1:$HTTP" 10 "$PW" > "$WORK/perf.out" &
NODE=$!; PIDS+=($NODE)
for _ in $(seq 600); do grep -q TABS-OPEN "$WORK/perf.out" 2>/dev/null && break; sleep 0.5; done
grep -v TABS-OPEN "$WORK/perf.out"
sleep 5
t0=$(ticks $GW); sleep 45; t1=$(ticks $GW)
echo "gateway, 10 overview tabs on live updates: CPU $(echo "scale=1; ($t1 - $t0) * 100 / $hz / 45" | bc) % of one core over 45 s, RSS $(rss $GW) KiB (peak $(hwm $GW) KiB)"
wait $NODE || true
