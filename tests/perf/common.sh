# Shared by the benchmark scripts in tests/perf (sourced, not run). Sets WORK (a temporary
# directory removed at exit) and PIDS (processes killed at exit).
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# user + system clock ticks of a process, and the ticks per second
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
wbytes() { awk '/^write_bytes/ {print $2}' "/proc/$1/io"; }
hwm() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
wait_http() { for _ in $(seq 200); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; return 1; }

# start_influx DIR PORT RPC_PORT: InfluxDB 1.6.7 with database gkgw; sets INFLUX_PID
start_influx() {
  sed -e "s|@DIR@|$1|g" -e "s|@HTTP_PORT@|$2|g" -e "s|@RPC_PORT@|$3|g" tests/peers/influxdb.conf.template > "$1/influxdb.conf"
  influxd -config "$1/influxdb.conf" >/dev/null 2>&1 & INFLUX_PID=$!; PIDS+=($INFLUX_PID)
  for _ in $(seq 100); do [ "$(curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:$2/ping)" = 204 ] && break; sleep 0.1; done
  curl -s -XPOST "127.0.0.1:$2/query" --data-urlencode 'q=CREATE DATABASE gkgw' >/dev/null
}

# ONLY="C D2" runs a subset of the scenarios.
want() { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $1 "* ]]; }
