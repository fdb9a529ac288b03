#!/usr/bin/env bash
# The Raspberry Pi package (issue 14), checked on this x86-64 machine:
#  1. gateway/debian/build-packages.sh builds the arm64 and the amd64 .deb;
#  2. the arm64 binary runs under qemu-aarch64-static: `gkgw check` on the packaged config, and a
#     short `gkgw demo` that commits (and acknowledges) one meter message and answers /healthz;
#  3. the amd64 package: control fields, conffiles, file layout, then a real dpkg install,
#     upgrade (the site's edits and the state are kept), remove (config and state kept) and
#     purge (both gone) into a throwaway root (dpkg --root, maintainer scripts chrootless with
#     DPKG_ROOT; user tools shimmed so that nothing can touch this machine's users);
#  4. `systemd-analyze verify` on the unit, and the settings issue 14 asks of it.
# Each check fails loudly. Run from tests/run.sh (which installs the peers first), or alone.
# PACKAGE_TEST_AMD64_PROFILE (default dev): the amd64 package of this test is made from the
# binary `cargo build` already built (its layout and scripts are what is checked here); the
# arm64 one is the real release package.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
WORK=$TARGET_DIR/package-test
AMD64_PROFILE=${PACKAGE_TEST_AMD64_PROFILE:-dev}
T0=$(date +%s)

log() { echo "package-test: $*" >&2; }
fail() { echo "package-test: FAILED: $*" >&2; exit 1; }
step() { log "[$(( $(date +%s) - T0 )) s] $*"; }
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi

# --- what the test itself needs (the builds' needs are the build script's) ----------------
declare -A NEED=([qemu-user-static]=/usr/bin/qemu-aarch64-static
                 [mosquitto-clients]=/usr/bin/mosquitto_sub
                 [curl]=/usr/bin/curl
                 [file]=/usr/bin/file)
missing=()
for pkg in "${!NEED[@]}"; do [ -x "${NEED[$pkg]}" ] || missing+=("$pkg"); done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    { $SUDO apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
          -o Dpkg::Use-Pty=0 "${missing[@]}"; } >/dev/null || fail "apt-get install ${missing[*]}"
fi

rm -rf "$WORK"
mkdir -p "$WORK"
DEMO_PID=
cleanup() {
    if [ -n "$DEMO_PID" ]; then kill "$DEMO_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT

# --- 1. build ---------------------------------------------------------------------------
step "building the packages (arm64 release; amd64 $AMD64_PROFILE)"
ARCHES=arm64 bash gateway/debian/build-packages.sh "$WORK/debs" >"$WORK/arm64.path"
# The dev binary tests/run.sh built and the e2e tests ran, when it is there and newer than the
# sources (packaged as it is: no second build).
NO_BUILD=0
if [ "$AMD64_PROFILE" = dev ] && [ -x "$TARGET_DIR/debug/gkgw" ] &&
    [ -z "$(find gateway/src gateway/Cargo.toml Cargo.lock -newer "$TARGET_DIR/debug/gkgw" -print -quit)" ]; then
    NO_BUILD=1
fi
ARCHES=amd64 GKGW_DEB_PROFILE=$AMD64_PROFILE GKGW_DEB_NO_BUILD=$NO_BUILD \
    bash gateway/debian/build-packages.sh "$WORK/debs" >"$WORK/amd64.path"
ARM_DEB=$(cat "$WORK/arm64.path")
AMD_DEB=$(cat "$WORK/amd64.path")
VERSION=$(dpkg-deb -f "$AMD_DEB" Version)
[ "$(basename "$ARM_DEB")" = "gkgw_${VERSION}_arm64.deb" ] || fail "arm64 package is named $(basename "$ARM_DEB")"
[ "$(basename "$AMD_DEB")" = "gkgw_${VERSION}_amd64.deb" ] || fail "amd64 package is named $(basename "$AMD_DEB")"
step "built $(basename "$ARM_DEB") ($(stat -c %s "$ARM_DEB") bytes), $(basename "$AMD_DEB")"

# rustls + ring only: no OpenSSL anywhere in the dependency graph of either target.
for t in aarch64-unknown-linux-gnu x86_64-unknown-linux-gnu; do
    if cargo tree --locked -p gkgw --target "$t" -e normal,build --prefix none 2>/dev/null |
        grep -E '^(openssl|openssl-sys|native-tls) ' >&2; then
        fail "OpenSSL is in the dependency graph for $t (rustls only)"
    fi
done

# --- 2. the arm64 package and its binary under qemu ----------------------------------------
ARM=$WORK/arm64-root
dpkg-deb -x "$ARM_DEB" "$ARM"
[ "$(dpkg-deb -f "$ARM_DEB" Architecture)" = arm64 ] || fail "arm64 package has Architecture $(dpkg-deb -f "$ARM_DEB" Architecture)"
BIN=$ARM/usr/bin/gkgw
info=$(file -b "$BIN")
case "$info" in
*"ARM aarch64"*", stripped"*) ;;
*) fail "usr/bin/gkgw in the arm64 package is not a stripped aarch64 binary: $info" ;;
esac
# What the binary links must be what Depends names (libc6, libgcc-s1) and no more.
needed=$(aarch64-linux-gnu-readelf -d "$BIN" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort | tr '\n' ' ')
for lib in $needed; do
    case "$lib" in
    libc.so.6|libm.so.6|libgcc_s.so.1|ld-linux-aarch64.so.1) ;;
    *) fail "the arm64 binary links $lib, which Depends does not cover (NEEDED: $needed)" ;;
    esac
done
depends=$(dpkg-deb -f "$ARM_DEB" Depends)
glibc_min=$(sed -n 's/.*libc6 (>= \([0-9.]*\)).*/\1/p' <<<"$depends")
glibc_used=$(aarch64-linux-gnu-objdump -T "$BIN" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
[ -n "$glibc_min" ] || fail "Depends names no libc6 version: $depends"
if [ "$(printf '%s\n%s\n' "$glibc_used" "$glibc_min" | sort -V | tail -n 1)" != "$glibc_min" ]; then
    fail "the arm64 binary needs GLIBC_$glibc_used but Depends says libc6 (>= $glibc_min)"
fi

QEMU=(qemu-aarch64-static -L /usr/aarch64-linux-gnu)
out=$("${QEMU[@]}" "$BIN" check --config "$ARM/etc/gkgw/gateway.toml" 2>&1) ||
    { echo "$out" >&2; fail "gkgw check on the packaged config (arm64, under qemu)"; }
grep -q "^$ARM/etc/gkgw/gateway.toml: ok$" <<<"$out" || { echo "$out" >&2; fail "gkgw check did not say ok"; }
step "arm64: gkgw check on the packaged config passes under qemu"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
HTTP_PORT=$(free_port)
MQTT_PORT=$(free_port)
[ "$HTTP_PORT" != "$MQTT_PORT" ] || MQTT_PORT=$(free_port)
STATE=$WORK/demo-state
mkdir -p "$STATE"
# A meter account of our own in the demo's accounts file (the demo adds its simulated ones).
pw=$("${QEMU[@]}" "$BIN" meter add PKG-0001 --credentials "$STATE/meters.toml" |
     sed -n 's/^mqtt password: //p')
[ -n "$pw" ] || fail "gkgw meter add printed no password (arm64, under qemu)"
started=$(date +%s.%N)
"${QEMU[@]}" "$BIN" demo --state-dir "$STATE" --http "127.0.0.1:$HTTP_PORT" \
    --mqtt "127.0.0.1:$MQTT_PORT" --meters 2 >"$WORK/demo.log" 2>&1 &
DEMO_PID=$!
healthy=
for _ in $(seq 1 240); do
    if ! kill -0 "$DEMO_PID" 2>/dev/null; then cat "$WORK/demo.log" >&2; fail "the arm64 demo exited early"; fi
    if [ "$(curl -s -m 2 "http://127.0.0.1:$HTTP_PORT/healthz" || true)" = ok ]; then healthy=1; break; fi
    sleep 0.25
done
[ -n "$healthy" ] || { tail -n 30 "$WORK/demo.log" >&2; fail "the arm64 demo did not answer /healthz with ok within 60 s"; }
ready_s=$(python3 -c "import time; print(f'{time.time() - $started:.1f}')")
step "arm64 demo answers /healthz ok (${ready_s} s after the start, under qemu)"

# One meter message, acknowledged on meters/PKG-0001/ack once committed to the store.
seq=$(( (RANDOM % 9000) + 1000 ))
mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -V mqttv311 -t meters/PKG-0001/ack -C 1 -W 30 \
    >"$WORK/ack.out" 2>&1 &
SUB_PID=$!
sleep 1
mosquitto_pub -h 127.0.0.1 -p "$MQTT_PORT" -V mqttv311 -u PKG-0001 -P "$pw" -i PKG-0001 -q 1 \
    -t meters/PKG-0001/state \
    -m "{\"meter_id\":\"PKG-0001\",\"seq\":$seq,\"kind\":\"gas\",\"cum_kg\":1.5,\"credit_kg\":2.0}" ||
    fail "mosquitto_pub to the arm64 demo's broker (user PKG-0001) failed"
wait "$SUB_PID" || { cat "$WORK/ack.out" >&2; fail "no ack on meters/PKG-0001/ack within 30 s: the meter message was not committed"; }
grep -qx "{\"seq\":$seq}" "$WORK/ack.out" || fail "the ack was $(cat "$WORK/ack.out"), not {\"seq\":$seq}"
curl -s "http://127.0.0.1:$HTTP_PORT/metrics" | grep -qx 'gkgw_up 1' || fail "/metrics of the arm64 demo does not say gkgw_up 1"
kill -TERM "$DEMO_PID"
rc=0
wait "$DEMO_PID" || rc=$?
DEMO_PID=
[ "$rc" = 0 ] || { tail -n 20 "$WORK/demo.log" >&2; fail "the arm64 demo exited $rc on SIGTERM"; }
grep -q 'gateway stopped' "$WORK/demo.log" || fail "the arm64 demo did not log 'gateway stopped'"
step "arm64 demo committed and acknowledged a meter message (seq $seq) and stopped cleanly"

# --- 3. the amd64 package: metadata, layout, and dpkg into a throwaway root ----------------
CTRL=$WORK/amd64-control
dpkg-deb -e "$AMD_DEB" "$CTRL"
for f in Package:gkgw Architecture:amd64; do
    [ "$(dpkg-deb -f "$AMD_DEB" "${f%%:*}")" = "${f#*:}" ] || fail "amd64 package: ${f%%:*} is not ${f#*:}"
done
for dep in libc6 passwd; do
    grep -q "$dep" <<<"$(dpkg-deb -f "$AMD_DEB" Depends)" || fail "amd64 package does not depend on $dep"
done
[ "$(cat "$CTRL/conffiles")" = /etc/gkgw/gateway.toml ] ||
    fail "conffiles should be exactly /etc/gkgw/gateway.toml, are: $(tr '\n' ' ' <"$CTRL/conffiles")"
for s in postinst prerm postrm; do
    [ -x "$CTRL/$s" ] || fail "maintainer script $s is missing or not executable"
    sh -n "$CTRL/$s" || fail "maintainer script $s: sh -n"
done

dpkg-deb -c "$AMD_DEB" | awk '{print $1, $2, $6}' >"$WORK/amd64.contents"
expect_file() { # mode path
    grep -qx -- "$1 0/0 ./$2" "$WORK/amd64.contents" ||
        fail "amd64 package: expected $1 0/0 (root) ./$2; it has: $(grep -F "./$2" "$WORK/amd64.contents" || echo nothing)"
}
expect_file -rwxr-xr-x usr/bin/gkgw
expect_file -rw-r--r-- etc/gkgw/gateway.toml
expect_file -rw-r--r-- lib/systemd/system/gkgw.service
expect_file -rw-r--r-- usr/share/doc/gkgw/copyright
for p in sensors/*.toml; do expect_file -rw-r--r-- "usr/share/gkgw/sensors/$(basename "$p")"; done
# The Grafana dashboards and their provisioning files, to copy into Grafana (dashboards/README.md).
for p in dashboards/*.json; do expect_file -rw-r--r-- "usr/share/gkgw/dashboards/$(basename "$p")"; done
expect_file -rw-r--r-- usr/share/gkgw/dashboards/provisioning/datasources/gkgw.yaml
expect_file -rw-r--r-- usr/share/gkgw/dashboards/provisioning/dashboards/gkgw.yaml
# The config names the profiles directory the package fills.
AMD=$WORK/amd64-root
dpkg-deb -x "$AMD_DEB" "$AMD"
cmp -s "$AMD/etc/gkgw/gateway.toml" gateway/src/default-config.toml || fail "packaged gateway.toml is not gateway/src/default-config.toml"
# It is `gkgw generate-config` without the default alarm rules, which apply while the config
# names none: so an upgrade brings a site the improved defaults without a conffile prompt.
"$AMD/usr/bin/gkgw" generate-config | head -c "$(stat -c %s "$AMD/etc/gkgw/gateway.toml")" |
    cmp -s - "$AMD/etc/gkgw/gateway.toml" || fail "packaged gateway.toml is not the start of gkgw generate-config"
grep -qx 'profiles_dir = "/usr/share/gkgw/sensors"' "$AMD/etc/gkgw/gateway.toml" || fail "the packaged config does not read profiles from /usr/share/gkgw/sensors"
grep -qx 'state_dir = "/var/lib/gkgw"' "$AMD/etc/gkgw/gateway.toml" || fail "the packaged config does not keep its state in /var/lib/gkgw"
cmp -s "$AMD/lib/systemd/system/gkgw.service" systemd/gkgw.service || fail "packaged unit is not systemd/gkgw.service"
step "amd64 package: control, conffiles, layout ok"

# A throwaway root: an empty dpkg database and the base system's account files (no gpio group:
# plain Debian has none; the postinst must make it).
ROOT=$WORK/root
mkdir -p "$ROOT"/var/lib/dpkg/{info,updates,triggers} "$ROOT"/etc
: >"$ROOT/var/lib/dpkg/status"
: >"$ROOT/var/lib/dpkg/available"
printf 'root:x:0:0:root:/root:/bin/bash\n' >"$ROOT/etc/passwd"
printf 'root:*:19000:0:99999:7:::\n' >"$ROOT/etc/shadow"
printf 'root:x:0:\ndialout:x:20:\n' >"$ROOT/etc/group"
printf 'root:*::\ndialout:*::\n' >"$ROOT/etc/gshadow"
chmod 0640 "$ROOT/etc/shadow" "$ROOT/etc/gshadow"
# Shims: the user tools only with --prefix into the throwaway root, systemd tools never.
SHIMS=$WORK/shims
mkdir -p "$SHIMS"
for tool in useradd groupadd usermod; do
    cat >"$SHIMS/$tool" <<EOF
#!/bin/sh
case " \$* " in *" --prefix $ROOT "*) exec /usr/sbin/$tool "\$@" ;; esac
echo "package-test shim: refusing '$tool \$*' outside the throwaway root" >&2
exit 99
EOF
done
for tool in deb-systemd-helper deb-systemd-invoke systemctl adduser; do
    printf '#!/bin/sh\necho "package-test shim: %s $* called in a throwaway-root install" >&2\nexit 99\n' "$tool" >"$SHIMS/$tool"
done
chmod 755 "$SHIMS"/*
DPKG=(env "PATH=$SHIMS:/usr/sbin:/usr/bin:/sbin:/bin" dpkg --root="$ROOT" --force-script-chrootless
      --force-depends --log="$WORK/dpkg.log")
"${DPKG[@]}" -i "$AMD_DEB" >"$WORK/dpkg-install.out" 2>&1 || { cat "$WORK/dpkg-install.out" >&2; fail "dpkg -i into the throwaway root"; }
status() { "${DPKG[@]}" -s gkgw 2>/dev/null | sed -n 's/^Status: //p'; }
[ "$(status)" = "install ok installed" ] || fail "after install, status is '$(status)'"
[ -x "$ROOT/usr/bin/gkgw" ] || fail "install: no /usr/bin/gkgw"
grep -q '^gkgw:x:[0-9]*:[0-9]*:.*:/var/lib/gkgw:/usr/sbin/nologin$' "$ROOT/etc/passwd" || fail "install: no gkgw system user: $(cat "$ROOT/etc/passwd")"
uid=$(awk -F: '$1=="gkgw"{print $3}' "$ROOT/etc/passwd")
gid=$(awk -F: '$1=="gkgw"{print $3}' "$ROOT/etc/group")
[ "$uid" -lt 1000 ] || fail "install: gkgw has uid $uid, not a system uid"
for g in dialout gpio; do
    grep -Eq "^$g:x:[0-9]+:(.*,)?gkgw(,.*)?$" "$ROOT/etc/group" || fail "install: gkgw is not in group $g: $(grep "^$g:" "$ROOT/etc/group" || echo "no group $g")"
done
[ "$(stat -c '%u:%g %a' "$ROOT/var/lib/gkgw")" = "$uid:$gid 750" ] || fail "install: /var/lib/gkgw is $(stat -c '%u:%g %a' "$ROOT/var/lib/gkgw"), not gkgw:gkgw 750"
[ "$(stat -c '%u:%g %a' "$ROOT/etc/gkgw/meters.toml")" = "0:$gid 640" ] || fail "install: /etc/gkgw/meters.toml is not root:gkgw 640"
"$ROOT/usr/bin/gkgw" check --config "$ROOT/etc/gkgw/gateway.toml" >/dev/null || fail "gkgw check on the installed config"
step "amd64: installed into a throwaway root (user, groups, state dir, accounts file)"

# Upgrade (the same version again: dpkg runs the upgrade path): the site's edits and the state stay.
echo '# edited on site' >>"$ROOT/etc/gkgw/gateway.toml"
echo 'state' >"$ROOT/var/lib/gkgw/marker"
echo '# a meter' >>"$ROOT/etc/gkgw/meters.toml"
"${DPKG[@]}" -i "$AMD_DEB" >"$WORK/dpkg-upgrade.out" 2>&1 || { cat "$WORK/dpkg-upgrade.out" >&2; fail "dpkg -i (upgrade) into the throwaway root"; }
[ "$(status)" = "install ok installed" ] || fail "after upgrade, status is '$(status)'"
tail -n 1 "$ROOT/etc/gkgw/gateway.toml" | grep -qx '# edited on site' || fail "upgrade lost the site's edit of gateway.toml"
tail -n 1 "$ROOT/etc/gkgw/meters.toml" | grep -qx '# a meter' || fail "upgrade lost meters.toml"
[ -f "$ROOT/var/lib/gkgw/marker" ] || fail "upgrade lost the state"
[ "$(grep -c '^gkgw:' "$ROOT/etc/passwd")" = 1 ] || fail "upgrade duplicated the gkgw user"
step "amd64: upgrade kept the edited config, the accounts and the state"

"${DPKG[@]}" -r gkgw >"$WORK/dpkg-remove.out" 2>&1 || { cat "$WORK/dpkg-remove.out" >&2; fail "dpkg -r"; }
[ "$(status)" = "deinstall ok config-files" ] || fail "after remove, status is '$(status)'"
[ ! -e "$ROOT/usr/bin/gkgw" ] || fail "remove left /usr/bin/gkgw"
[ -f "$ROOT/etc/gkgw/gateway.toml" ] && [ -f "$ROOT/etc/gkgw/meters.toml" ] || fail "remove took the config"
[ -f "$ROOT/var/lib/gkgw/marker" ] || fail "remove took the state"
"${DPKG[@]}" -P gkgw >"$WORK/dpkg-purge.out" 2>&1 || { cat "$WORK/dpkg-purge.out" >&2; fail "dpkg -P"; }
[ -z "$(status)" ] || fail "after purge, status is '$(status)'"
[ ! -e "$ROOT/etc/gkgw" ] || fail "purge left /etc/gkgw: $(ls -A "$ROOT/etc/gkgw")"
[ ! -e "$ROOT/var/lib/gkgw" ] || fail "purge left /var/lib/gkgw"
step "amd64: remove kept config and state, purge removed them"

# --- 4. the unit ---------------------------------------------------------------------------
UNIT=systemd/gkgw.service
setting() { sed -n "s/^$1=//p" "$UNIT"; }
[ "$(setting Type)" = notify ] || fail "$UNIT: Type is not notify"
[ "$(setting Restart)" = on-failure ] || fail "$UNIT: Restart is not on-failure"
[ -n "$(setting WatchdogSec)" ] || fail "$UNIT: no WatchdogSec"
grep -qx 'CapabilityBoundingSet=' "$UNIT" || fail "$UNIT: the capability bounding set is not empty"
for g in dialout gpio; do grep -Eq "^SupplementaryGroups=.*\\b$g\\b" "$UNIT" || fail "$UNIT: SupplementaryGroups lacks $g"; done
for s in ProtectSystem=strict NoNewPrivileges=yes PrivateTmp=yes User=gkgw StateDirectory=gkgw; do
    grep -qx "$s" "$UNIT" || fail "$UNIT: no $s"
done
grep -q '^ReadWritePaths=.*/var/lib/gkgw' "$UNIT" || fail "$UNIT: no ReadWritePaths for the state"
! grep -q '^After=.*time-sync.target' "$UNIT" || fail "$UNIT: ordered after time-sync.target"
# TimeoutStopSec must outlast the gateway's own shutdown deadline (topology::run).
deadline=$(sed -n 's/.*gw\.stop(Duration::from_secs(\([0-9]*\))).*/\1/p' gateway/src/topology.rs)
[ -n "$deadline" ] || fail "cannot find the shutdown deadline in gateway/src/topology.rs"
[ "$(setting TimeoutStopSec)" -gt "$deadline" ] || fail "$UNIT: TimeoutStopSec=$(setting TimeoutStopSec) is not longer than the $deadline s shutdown deadline"
# systemd-analyze verify needs the binaries it names to exist: a copy naming the packaged one.
mkdir -p "$WORK/unit"
sed "s#/usr/bin/gkgw#$AMD/usr/bin/gkgw#g" "$UNIT" >"$WORK/unit/gkgw.service"
out=$(systemd-analyze verify "$WORK/unit/gkgw.service" 2>&1) || { echo "$out" >&2; fail "systemd-analyze verify $UNIT"; }
[ -z "$out" ] || { echo "$out" >&2; fail "systemd-analyze verify $UNIT warned"; }
step "unit: issue 14's settings present, systemd-analyze verify clean"

log "ok: packages, qemu run, dpkg install/upgrade/remove/purge and unit checks passed in $(( $(date +%s) - T0 )) s"
