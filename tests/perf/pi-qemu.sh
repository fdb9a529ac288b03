#!/usr/bin/env bash
# Rough Raspberry Pi figures on this x86-64 machine: the aarch64 build under qemu-aarch64-static.
#   bash tests/perf/pi-qemu.sh [BINARY] [SECONDS]
# BINARY: an aarch64 gkgw (default: the release build in $CARGO_TARGET_DIR, stripped into a
# temporary copy, as the package ships it); SECONDS: how long the demo runs (default 60).
# Prints the demo's RSS (peak and at the end, of the qemu process: the emulator's own memory is
# included) and CPU (share of one host core, translation included: NOT the Pi's figure), then
# the time from the start of `gkgw run` to READY=1, the first watchdog ping and the shutdown
# (tests/perf/notify-ready.py plays systemd).
set -euo pipefail
cd "$(dirname "$0")/../.."
TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
SRC=${1:-$TARGET_DIR/aarch64-unknown-linux-gnu/release/gkgw}
SECS=${2:-60}
WORK=$(mktemp -d /tmp/gkgw-pi-qemu.XXXXXX)
trap 'kill "${PID:-}" 2>/dev/null || true; rm -rf "$WORK"' EXIT
BIN=$WORK/gkgw
aarch64-linux-gnu-strip -o "$BIN" "$SRC"
QEMU=(qemu-aarch64-static -L /usr/aarch64-linux-gnu)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
echo "binary: $(stat -c %s "$BIN") bytes stripped ($(file -b "$BIN" | cut -d, -f1-2))"

# --- the demo (20 simulated meters every 5 s, the Modbus plant, GPIO) for SECS seconds ----
HTTP=$(free_port); MQTT=$(free_port)
"${QEMU[@]}" "$BIN" demo --state-dir "$WORK/demo" --http "127.0.0.1:$HTTP" --mqtt "127.0.0.1:$MQTT" \
    >"$WORK/demo.log" 2>&1 &
PID=$!
for _ in $(seq 1 240); do
    [ "$(curl -s -m 2 "http://127.0.0.1:$HTTP/healthz" || true)" = ok ] && break
    sleep 0.25
done
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
rss() { awk '/^VmRSS/ {print $2}' "/proc/$PID/status"; }
c0=$(cpu); peak=0
for _ in $(seq 1 "$SECS"); do
    sleep 1
    r=$(rss); [ "$r" -gt "$peak" ] && peak=$r
done
c1=$(cpu); last=$(rss)
accepted=$(curl -s "http://127.0.0.1:$HTTP/metrics" | awk '$1 == "gkgw_readings_accepted_total" {print $2}')
kill -TERM "$PID"; wait "$PID" || true; PID=
echo "demo under qemu, ${SECS} s after /healthz: RSS peak $((peak / 1024)) MiB, at the end $((last / 1024)) MiB; CPU $(( (c1 - c0) * 100 / ticks / SECS )) % of one host core; $accepted readings accepted"

# --- start to READY, watchdog, shutdown of `gkgw run` ----------------------------------------
mkdir -p "$WORK/state"
cat >"$WORK/gateway.toml" <<EOF
[store]
state_dir = "$WORK/state"
[broker]
listen = "127.0.0.1:$(free_port)"
credentials_file = "$WORK/meters.toml"
[http]
listen = "127.0.0.1:$(free_port)"
EOF
for i in 1 2 3; do
    echo "gkgw run under qemu (run $i): $(python3 tests/perf/notify-ready.py --watchdog-s 4 --run-s 5 -- "${QEMU[@]}" "$BIN" run --config "$WORK/gateway.toml")"
done
