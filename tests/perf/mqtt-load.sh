#!/usr/bin/env bash
# MQTT ingest benchmark for docs/PERFORMANCE.md. Not a test: it prints numbers.
#   bash tests/perf/mqtt-load.sh            (needs a release build: cargo build --release --bin gkgw)
# The load's meters get accounts in the gateway's credentials file first (gkgw load --credentials).
# Scenarios:
#   A  peak accepted readings/s end to end (publish -> commit -> app ack), QoS 1 and QoS 0
#   B  drain rate store -> InfluxDB 1.6.7 (backlog built while InfluxDB is down, then started)
#   C  1,000 msg/s from 500 connected meters for 60 s with the InfluxDB writer on:
#      CPU-seconds of gkgw per 10,000 messages, peak RSS, bytes written to disk per reading
#   D  the same loads through Mosquitto alone
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/perf/common.sh
BIN=${BIN:-target/release/gkgw}
[ -x "$BIN" ] || { echo "build first: cargo build --release --bin gkgw" >&2; exit 1; }



start_gkgw() { # name influx_port(or empty) -> sets GK_PID MQTT HTTP GK_NAME
  GK_NAME=$1; local d="$WORK/$1"; mkdir -p "$d"; MQTT=$(free_port); HTTP=$(free_port)
  local influx=""
  [ -n "$2" ] && influx="[influx]
enabled = true
url = \"http://127.0.0.1:$2\"
version = 1
database = \"gkgw\"
max_backoff_ms = 1000
${INFLUX_EXTRA:-}"
  cat > "$d/gw.toml" <<TOML
[store]
state_dir = "$d"
[broker]
listen = "127.0.0.1:$MQTT"
allow_anonymous = false
credentials_file = "$d/meters.toml"
[http]
listen = "127.0.0.1:$HTTP"
$influx
TOML
  # /api/status needs a login (issue 13): a viewer's token (an older BIN has no `user`: none).
  AUTH=(); local token
  token=$(printf 'perf-password\n' | "$BIN" user add perf --role viewer --state-dir "$d" >/dev/null 2>&1 \
    && "$BIN" user token perf --state-dir "$d" 2>/dev/null) && AUTH=(-H "Authorization: Bearer $token")
  "$BIN" run --config "$d/gw.toml" 2>"$d/log" & GK_PID=$!; PIDS+=($GK_PID)
  wait_http "127.0.0.1:$HTTP/healthz"
}

backlog() { curl -s "${AUTH[@]}" "127.0.0.1:$HTTP/api/status" | python3 -c 'import json,sys; c=json.load(sys.stdin)["consumers"]; print(c[0]["backlog"] if c else 0)'; }


echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "gkgw: $($BIN --version)"

if want A; then
echo "== A: sustained accepted readings/s at fixed offered rates (100 connections, QoS 1, no InfluxDB)"
for rate in 50000 80000; do
  start_gkgw "rate$rate" ""
  "$BIN" load --mqtt 127.0.0.1:$MQTT --connections 100 --messages 400000 --rate $rate --qos 1 --acks --drain 30 --id-prefix R --credentials "$WORK/$GK_NAME/meters.toml"
  echo "   gkgw counted: $(curl -s 127.0.0.1:$HTTP/metrics | grep -E '^gkgw_(readings_accepted|mqtt_messages)_total' | tr '\n' ' ')"
  kill -INT $GK_PID; wait $GK_PID || true
done
fi

if want A2; then
echo "== A2: unthrottled burst (100 connections, 200,000 messages as fast as the publishers go)"
for qos in 1 0; do
  start_gkgw "peak$qos" ""
  t0=$(ticks $GK_PID)
  "$BIN" load --mqtt 127.0.0.1:$MQTT --connections 100 --messages 200000 --qos $qos --acks --drain 60 --id-prefix P$qos --credentials "$WORK/$GK_NAME/meters.toml"
  echo "   gkgw counted: $(curl -s 127.0.0.1:$HTTP/metrics | grep -E '^gkgw_(mqtt_messages|readings_accepted)_total' | tr '\n' ' ')"
  echo "   qos $qos: gkgw CPU $(echo "scale=2; ($(ticks $GK_PID)-$t0)/$hz" | bc) s, peak RSS $(( $(hwm $GK_PID) / 1024 )) MiB"
  kill -INT $GK_PID; wait $GK_PID || true
done
fi

if want B; then
echo "== B: drain rate store -> InfluxDB 1.6.7 (200,000 readings backlog)"
IP=$(free_port); RP=$(free_port); mkdir -p "$WORK/influxB"
start_gkgw drain "$IP"
"$BIN" load --mqtt 127.0.0.1:$MQTT --connections 50 --messages 200000 --rate 40000 --qos 1 --acks --drain 60 --id-prefix D --credentials "$WORK/$GK_NAME/meters.toml" >/dev/null
N=$(backlog)
echo "   backlog before InfluxDB starts: $N"
start_influx "$WORK/influxB" "$IP" "$RP"
s=$(date +%s.%N)
while [ "$(backlog)" != 0 ]; do sleep 0.2; done
e=$(date +%s.%N)
echo "   drained $N in $(echo "$e - $s" | bc) s = $(echo "$N / ($e - $s)" | bc) readings/s (includes backoff wake-up <= 1 s)"
kill -INT $GK_PID; wait $GK_PID || true; kill $INFLUX_PID; wait $INFLUX_PID 2>/dev/null || true
fi

if want C; then
echo "== C: 1,000 msg/s from 500 meters for 60 s, InfluxDB writer on"
IP=$(free_port); RP=$(free_port); mkdir -p "$WORK/influxC"
start_influx "$WORK/influxC" "$IP" "$RP"
start_gkgw steady "$IP"
# Logins (argon2) are left out of the CPU: counted from the load's "all 500 connected" line.
"$BIN" load --mqtt 127.0.0.1:$MQTT --connections 500 --messages 60000 --rate 1000 --qos 1 --acks --drain 30 --pause 5 --id-prefix S --credentials "$WORK/$GK_NAME/meters.toml" > "$WORK/loadC.out" &
LP=$!
for _ in $(seq 1200); do grep -q connected "$WORK/loadC.out" 2>/dev/null && break; sleep 0.1; done
commits() { curl -s "127.0.0.1:$HTTP/metrics" | awk '/^gkgw_store_commits_total/ {print $2}'; }
t0=$(ticks $GK_PID); w0=$(wbytes $GK_PID); c0=$(commits)
wait $LP; grep -v connected "$WORK/loadC.out"
while [ "$(backlog)" != 0 ]; do sleep 0.2; done
t1=$(ticks $GK_PID); w1=$(wbytes $GK_PID); c1=$(commits)
echo "   gkgw CPU: $(echo "scale=3; ($t1-$t0)/$hz" | bc) s for 60000 msgs = $(echo "scale=3; ($t1-$t0)/$hz/6" | bc) s per 10,000"
echo "   gkgw peak RSS: $(( $(hwm $GK_PID) / 1024 )) MiB"
echo "   disk written by gkgw: $(( w1 - w0 )) bytes = $(( (w1 - w0) / 60000 )) bytes per reading (7 fields each), $(( c1 - c0 )) store commits"
[ -n "${KEEP_STATE:-}" ] && cp -a "$WORK/$GK_NAME" "$KEEP_STATE"
kill -INT $GK_PID; wait $GK_PID || true; kill $INFLUX_PID; wait $INFLUX_PID 2>/dev/null || true
fi

if want D; then
echo "== D: Mosquitto alone (same publisher; a subscriber counts deliveries)"
MP=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 1000000\n' "$MP" > "$WORK/mosq.conf"
mosquitto -c "$WORK/mosq.conf" >/dev/null 2>&1 & MQ=$!; PIDS+=($MQ); sleep 0.3
for qos in 1 0; do
  t0=$(ticks $MQ)
  "$BIN" load --mqtt 127.0.0.1:$MP --connections 100 --messages 200000 --qos $qos --count-delivered --drain 60 --id-prefix M$qos
  echo "   qos $qos: mosquitto CPU $(echo "scale=2; ($(ticks $MQ)-$t0)/$hz" | bc) s"
done
kill $MQ; wait $MQ 2>/dev/null || true
fi

if want D2; then
echo "== D2: Mosquitto alone, 1,000 msg/s from 500 publishers (fresh process, so the peak RSS is this load's)"
MP=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 1000000\n' "$MP" > "$WORK/mosq2.conf"
mosquitto -c "$WORK/mosq2.conf" >/dev/null 2>&1 & MQ=$!; PIDS+=($MQ); sleep 0.3
t0=$(ticks $MQ)
"$BIN" load --mqtt 127.0.0.1:$MP --connections 500 --messages 60000 --rate 1000 --qos 1 --count-delivered --drain 30 --id-prefix MS
echo "   1,000 msg/s from 500: mosquitto CPU $(echo "scale=3; ($(ticks $MQ)-$t0)/$hz/6" | bc) s per 10,000, peak RSS $(( $(hwm $MQ) / 1024 )) MiB"
fi
