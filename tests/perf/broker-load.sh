#!/usr/bin/env bash
# Field-broker benchmarks of issue 8, for docs/PERFORMANCE.md. Not a test: it prints numbers.
#   cargo build --release --bin gkgw && bash tests/perf/broker-load.sh
# GK_STORE_KEYS="channel_capacity = 4096" adds keys to the gateways' [store] table.
# BIN=path/to/gkgw measures another build (e.g. the rumqttd one before issue 8: OLD=1 makes the
# configs it understands: anonymous meters, no accounts). The load tools are always $LOAD
# (default: this tree's release build), mosquitto_pub and tests/peers/mqtt_raw.py.
# Scenarios (ONLY="F C" runs a subset):
#   F  flood: 20 mosquitto_pub -l publishers x 5,000 QoS 0 gas-meter messages, as fast as they go:
#      committed, skipped, CPU per 10k, peak RSS; the same into Mosquitto with one subscriber
#   C  1,000 msg/s from 500 meters for 60 s, QoS 1, InfluxDB writer on: CPU per 10k, peak RSS;
#      Mosquitto alone with the same load in the same run
#   I  idle RSS with 500 connected meters (and per meter)
#   L  1,000 wrong-password CONNECTs from 100 connections: RSS growth
#   N  descriptor flood: LimitNOFILE 1024, 1,100 half-open connections for 10 s: log bytes,
#      and whether a good meter still gets in
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/perf/common.sh
BIN=${BIN:-target/release/gkgw}
LOAD=${LOAD:-target/release/gkgw}
OLD=${OLD:-0}
[ -x "$BIN" ] && [ -x "$LOAD" ] || { echo "build first: cargo build --release --bin gkgw" >&2; exit 1; }

metric() { curl -s "127.0.0.1:$HTTP/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
per10k() { echo "scale=3; $1 / $hz / ($2 / 10000)" | bc; }
# sample_rss PID WATCHED_PID FILE: VmRSS of PID every 0.5 s while WATCHED_PID runs
sample_rss() { while kill -0 "$2" 2>/dev/null; do rss "$1" >> "$3"; sleep 0.5; done; }
max_of() { sort -n "$1" | tail -1; }
# heap_mib: glibc's heap in use and held, from /metrics (the program's own memory, also under
# qemu-user, whose translator is in the RSS); sample_heap WATCHED_PID FILE every 0.5 s
heap_mib() { echo "$(( $(metric gkgw_process_heap_bytes) / 1048576 )) MiB in use, $(( $(metric gkgw_process_heap_held_bytes) / 1048576 )) MiB held"; }
sample_heap() { while kill -0 "$1" 2>/dev/null; do metric gkgw_process_heap_held_bytes >> "$2"; sleep 0.5; done; }


# start_gkgw NAME INFLUX_PORT(or "") [anonymous: 1 = old-style anonymous meters] [prefix...]
# sets GK_PID MQTT HTTP DIR
start_gkgw() {
  DIR="$WORK/$1"; mkdir -p "$DIR"; MQTT=$(free_port); HTTP=$(free_port)
  local influx="" anon="${3:-$OLD}"
  [ -n "$2" ] && influx="[influx]
enabled = true
url = \"http://127.0.0.1:$2\"
version = 1
database = \"gkgw\"
max_backoff_ms = 1000"
  cat > "$DIR/gw.toml" <<TOML
[store]
state_dir = "$DIR"
${GK_STORE_KEYS:-}
[broker]
listen = "127.0.0.1:$MQTT"
allow_anonymous = $([ "$anon" = 1 ] && echo true || echo false)
credentials_file = "$DIR/meters.toml"
[http]
listen = "127.0.0.1:$HTTP"
$influx
TOML
  # /api/status needs a login (issue 13): a viewer's token (an older BIN has no `user`: none).
  AUTH=(); local token
  token=$(printf 'perf-password\n' | "$BIN" user add perf --role viewer --state-dir "$DIR" >/dev/null 2>&1 \
    && "$BIN" user token perf --state-dir "$DIR" 2>/dev/null) && AUTH=(-H "Authorization: Bearer $token")
  ${PRLIMIT:-} "$BIN" run --config "$DIR/gw.toml" 2>"$DIR/log" & GK_PID=$!; PIDS+=($GK_PID)
  wait_http "127.0.0.1:$HTTP/healthz"
}

# accounts IDS... -> "$DIR/pw" with "id password" lines (new broker only)
accounts() {
  "$BIN" meter add "$@" --credentials "$DIR/meters.toml" | awk '/^mqtt username/ {u=$3} /^mqtt password/ {print u, $3}' > "$DIR/pw"
  sleep 2.5 # the gateway reloads its accounts within 2 s
}
pw_of() { awk -v u="$1" '$1 == u {print $2}' "$DIR/pw"; }

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "gkgw: $($BIN --version) ($BIN, OLD=$OLD); mosquitto: $(mosquitto -h 2>/dev/null | head -1)"

flood_lines() { # meter -> 5,000 payload lines
  python3 -c "
import sys
m=sys.argv[1]
for s in range(1,5001):
    print('{\"meter_id\":\"%s\",\"seq\":%d,\"kind\":\"gas\",\"cum_kg\":%.2f,\"credit_kg\":2.5,\"valve\":\"open\",\"battery_v\":3.9,\"rssi\":-70,\"tamper\":false}' % (m, s, s*0.01))
" "$1"
}

if want F; then
echo "== F: QoS 0 flood, 20 mosquitto_pub -l x 5,000 messages"
start_gkgw flood ""
METERS=$(seq -f "GF-%04g" 1 20)
[ "$OLD" = 1 ] || accounts $METERS
for m in $METERS; do flood_lines "$m" > "$WORK/$m.lines"; done
# The publishers connect first (their logins are argon2-checked: left out of the CPU), then
# all 20 start sending at once.
rm -f "$WORK/go"
for m in $METERS; do
  if [ "$OLD" = 1 ]; then auth=(-i "$m"); else auth=(-u "$m" -P "$(pw_of "$m")" -i "$m"); fi
  (while [ ! -e "$WORK/go" ]; do sleep 0.05; done; cat "$WORK/$m.lines") |
    mosquitto_pub -h 127.0.0.1 -p "$MQTT" -V mqttv311 "${auth[@]}" -q 0 -l -t "meters/$m/state" &
done
sleep 3
t0=$(ticks $GK_PID)
touch "$WORK/go"
for _ in $(seq 300); do
  a=$(metric gkgw_readings_accepted_total); s=$(metric gkgw_broker_skipped_total); s=${s:-0}
  [ "$(( ${a%.*} + ${s%.*} ))" -ge 100000 ] && break; sleep 0.2
done
sleep 1
a=$(metric gkgw_readings_accepted_total); s=$(metric gkgw_broker_skipped_total)
echo "   gkgw: committed ${a}, skipped by the broker ${s:-0 (no such counter: nothing can be skipped)}, CPU $(per10k $(( $(ticks $GK_PID) - t0 )) 100000) s per 10k, peak RSS $(( $(hwm $GK_PID) / 1024 )) MiB"
kill -INT $GK_PID; wait $GK_PID 2>/dev/null || true

MP=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 1000000\n' "$MP" > "$WORK/mosqF.conf"
mosquitto -c "$WORK/mosqF.conf" >/dev/null 2>&1 & MQ=$!; PIDS+=($MQ); sleep 0.3
mosquitto_sub -h 127.0.0.1 -p "$MP" -V mqttv311 -t 'meters/+/state' -q 0 -C 100000 -W 120 > "$WORK/mosqF.out" 2>/dev/null & SUB=$!
rm -f "$WORK/go"
for m in $METERS; do
  (while [ ! -e "$WORK/go" ]; do sleep 0.05; done; cat "$WORK/$m.lines") |
    mosquitto_pub -h 127.0.0.1 -p "$MP" -V mqttv311 -i "$m" -q 0 -l -t "meters/$m/state" &
done
sleep 3
t0=$(ticks $MQ)
touch "$WORK/go"
wait $SUB 2>/dev/null || true
echo "   mosquitto alone: delivered $(wc -l < "$WORK/mosqF.out") to one subscriber, CPU $(per10k $(( $(ticks $MQ) - t0 )) 100000) s per 10k, peak RSS $(( $(hwm $MQ) / 1024 )) MiB"
kill $MQ; wait $MQ 2>/dev/null || true
fi

load_auth() { if [ "$OLD" = 1 ]; then echo ""; else echo "--credentials $DIR/meters.toml"; fi; }

if want C; then
echo "== C: 1,000 msg/s from 500 meters for 60 s, QoS 1, InfluxDB writer on"
IP=$(free_port); RP=$(free_port); mkdir -p "$WORK/influxC"
start_influx "$WORK/influxC" "$IP" "$RP"
start_gkgw steady "$IP"
# Logins (argon2, one at a time) are left out: the load prints "all 500 connected", pauses 5 s,
# and the CPU is counted from that line on.
"$LOAD" load --mqtt 127.0.0.1:$MQTT --connections 500 --messages 60000 --rate 1000 --qos 1 --acks --drain 30 --pause 5 --id-prefix S $(load_auth) > "$WORK/loadC.out" &
LP=$!
for _ in $(seq 1200); do grep -q "connected" "$WORK/loadC.out" 2>/dev/null && break; sleep 0.1; done
t0=$(ticks $GK_PID)
sample_rss $GK_PID $LP "$WORK/rssC" &
[ "$OLD" = 1 ] || sample_heap $LP "$WORK/heapC" &
wait $LP; grep -v connected "$WORK/loadC.out" | sed 's/^/   /'
[ "$OLD" = 1 ] || echo "   gkgw heap held under the load max $(( $(max_of "$WORK/heapC") / 1048576 )) MiB; at the end: $(heap_mib)"
for _ in $(seq 100); do [ "$(curl -s "${AUTH[@]}" 127.0.0.1:$HTTP/api/status | python3 -c 'import json,sys; c=json.load(sys.stdin)["consumers"]; print(c[0]["backlog"] if c else 0)')" = 0 ] && break; sleep 0.2; done
t1=$(ticks $GK_PID)
echo "   gkgw: CPU $(per10k $(( t1 - t0 )) 60000) s per 10k (broker, store, acks, InfluxDB writer; logins excluded), RSS under the load max $(( $(max_of "$WORK/rssC") / 1024 )) MiB (peak since start, logins included: $(( $(hwm $GK_PID) / 1024 )) MiB)"
kill -INT $GK_PID; wait $GK_PID 2>/dev/null || true; kill $INFLUX_PID; wait $INFLUX_PID 2>/dev/null || true

MP=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 1000000\n' "$MP" > "$WORK/mosqC.conf"
mosquitto -c "$WORK/mosqC.conf" >/dev/null 2>&1 & MQ=$!; PIDS+=($MQ); sleep 0.3
"$LOAD" load --mqtt 127.0.0.1:$MP --connections 500 --messages 60000 --rate 1000 --qos 1 --count-delivered --drain 30 --pause 5 --id-prefix MS > "$WORK/loadM.out" &
LP=$!
for _ in $(seq 1200); do grep -q "connected" "$WORK/loadM.out" 2>/dev/null && break; sleep 0.1; done
t0=$(ticks $MQ)
sample_rss $MQ $LP "$WORK/rssM" &
wait $LP; grep -v connected "$WORK/loadM.out" | sed 's/^/   /'
echo "   mosquitto alone (PUBACK + one subscriber): CPU $(per10k $(( $(ticks $MQ) - t0 )) 60000) s per 10k (connects excluded), RSS under the load max $(( $(max_of "$WORK/rssM") / 1024 )) MiB"
kill $MQ; wait $MQ 2>/dev/null || true
fi

if want I; then
echo "== I: idle RSS with 500 connected meters"
start_gkgw idle ""
sleep 1; r0=$(rss $GK_PID)
"$LOAD" load --mqtt 127.0.0.1:$MQTT --connections 500 --messages 500 --rate 200 --qos 1 --acks --hold 20 --id-prefix I $(load_auth) >/dev/null &
LP=$!
for _ in $(seq 600); do [ "$(metric gkgw_readings_accepted_total | cut -d. -f1)" -ge 500 ] 2>/dev/null && break; sleep 0.2; done
sleep 5; r1=$(rss $GK_PID)
echo "   gkgw RSS: ${r0} KiB with no meter, ${r1} KiB with 500 connected (one message each, acked) = $(( (r1 - r0) / 500 )) KiB per meter"
[ "$OLD" = 1 ] || echo "   gkgw heap with 500 connected: $(heap_mib)"
wait $LP || true
kill -INT $GK_PID; wait $GK_PID 2>/dev/null || true
fi

if want L; then
echo "== L: 1,000 wrong-password CONNECTs from 100 connections"
start_gkgw login "" 0
"$BIN" meter add GM-0001 --credentials "$DIR/meters.toml" >/dev/null
if [ "$OLD" = 1 ]; then kill -INT $GK_PID; wait $GK_PID 2>/dev/null || true; rm -f "$DIR/gkgw.lock"; "$BIN" run --config "$DIR/gw.toml" 2>"$DIR/log" & GK_PID=$!; PIDS+=($GK_PID); wait_http "127.0.0.1:$HTTP/healthz"; else sleep 2.5; fi
r0=$(rss $GK_PID)
python3 tests/peers/mqtt_raw.py --port "$MQTT" login-flood --user GM-0001 --connections 100 --attempts 10
echo "   gkgw RSS before ${r0} KiB, peak $(hwm $GK_PID) KiB: +$(( ($(hwm $GK_PID) - r0) / 1024 )) MiB"
kill -INT $GK_PID; wait $GK_PID 2>/dev/null || true
fi

if want N; then
echo "== N: 1,100 half-open connections for 10 s with LimitNOFILE=1024"
PRLIMIT="prlimit --nofile=1024:1024" start_gkgw fds ""
[ "$OLD" = 1 ] || accounts GM-0001
l0=$(stat -c %s "$DIR/log")
python3 tests/peers/mqtt_raw.py --port "$MQTT" hold --connections 1100 --seconds 10 &
HP=$!; sleep 4
if [ "$OLD" = 1 ]; then a=(); else a=(--user GM-0001 --password "$(pw_of GM-0001)"); fi
good=$(timeout 20 python3 tests/peers/meter.py --port "$MQTT" --meters GM-0001 --count 5 "${a[@]}" 2>&1 | tail -1 || true)
wait $HP || true
echo "   log grew by $(( $(stat -c %s "$DIR/log") - l0 )) bytes; a good meter during the flood: ${good:-nothing}"
kill -INT $GK_PID 2>/dev/null; wait $GK_PID 2>/dev/null || true
fi
