#!/usr/bin/env bash
# The uplink fleet simulation of issue 12, for docs/PERFORMANCE.md. Not a test: it prints numbers.
#   bash tests/perf/uplink-fleet.sh            (GATEWAYS=500 BATCHES=6 METERS=20 by default)
# Runs the uplink_fleet bench (N gateways' real uplink senders in one process, each with its own
# outbox holding a backlog) against the test receiver (tests/peers/receiver.py), over HTTP with
# and without schema validation, and over MQTT through Mosquitto; prints the bench's numbers and
# the receiver's (and Mosquitto's) CPU. ONLY="H F M" runs a subset:
#   H  HTTP, the receiver validating every batch against the JSON Schema
#   F  HTTP, the receiver only parsing and de-duplicating (--no-validate)
#   M  MQTT: Mosquitto as the central broker, the receiver subscribed (validating)
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/perf/common.sh
GATEWAYS=${GATEWAYS:-500} BATCHES=${BATCHES:-6} METERS=${METERS:-20}
cargo build --release -p gkgw --bench uplink_fleet >/dev/null 2>&1
BENCH=$(ls -t target/release/deps/uplink_fleet-* | grep -v '\.d$' | head -1)
ulimit -n 65536 2>/dev/null || true

receiver() { # receiver PORT [ARGS…]: sets RECV_PID
  local port=$1; shift
  python3 tests/peers/receiver.py --port "$port" --schema docs/schema/batch.schema.json "$@" > "$WORK/recv.$port" 2>&1 &
  RECV_PID=$!; PIDS+=($RECV_PID)
  for _ in $(seq 100); do grep -q READY "$WORK/recv.$port" 2>/dev/null && return 0; sleep 0.1; done
  echo "receiver did not start" >&2; cat "$WORK/recv.$port" >&2; exit 1
}
cpu_of() { echo "scale=1; $(ticks "$1") / $hz" | bc; }
accepted() { curl -s "127.0.0.1:$1/stats" | python3 -c 'import json,sys; s=json.load(sys.stdin); t=s["last_accepted_at"]-s["first_accepted_at"]; print(s["accepted"], "accepted,", s["invalid"], "invalid,", s["duplicates"], "duplicates; first to last in %.1f s: %.1f batches/s" % (t, s["accepted"]/max(t, 1e-9)))'; }

count() { curl -s "127.0.0.1:$1/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["accepted"])'; }
run() { # run NAME URL RECV_HTTP_PORT
  echo "== $1"
  local r0 total; r0=$(ticks "$RECV_PID"); total=$((GATEWAYS * BATCHES))
  "$BENCH" "url=$2" "gateways=$GATEWAYS" "batches=$BATCHES" "meters=$METERS"
  # Over MQTT the broker's PUBACK confirms a batch; the receiver may still be behind.
  for _ in $(seq 1200); do [ "$(count "$3")" -ge "$total" ] && break; sleep 0.5; done
  echo "receiver: $(accepted "$3"); its CPU $(echo "scale=1; ($(ticks "$RECV_PID") - $r0) / $hz" | bc) s"
}

if want H; then
  P=$(free_port); receiver "$P"
  run "HTTP, receiver validating" "http://127.0.0.1:$P/batches" "$P"
  kill -9 "$RECV_PID"
fi
if want F; then
  P=$(free_port); receiver "$P" --no-validate
  run "HTTP, receiver parsing only" "http://127.0.0.1:$P/batches" "$P"
  kill -9 "$RECV_PID"
fi
if want M; then
  MP=$(free_port)
  mkdir -p "$WORK/mosq" && chmod 777 "$WORK/mosq"
  printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\nmax_inflight_messages 100\npersistence false\n' "$MP" > "$WORK/mosq/m.conf"
  mosquitto -c "$WORK/mosq/m.conf" > "$WORK/mosq/log" 2>&1 & MOSQ=$!; PIDS+=($MOSQ)
  sleep 0.5
  P=$(free_port); receiver "$P" --mqtt-port "$MP"
  m0=$(ticks "$MOSQ")
  run "MQTT via Mosquitto, receiver subscribed (validating)" "mqtt://127.0.0.1:$MP" "$P"
  echo "mosquitto CPU during the run $(echo "scale=1; ($(ticks "$MOSQ") - $m0) / $hz" | bc) s"
fi
