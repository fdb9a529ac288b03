#!/usr/bin/env bash
# Installs the real peers used by gkgw's integration tests:
#   influxdb (Debian 1.6.7, provides influxd), victoria-metrics, mosquitto,
#   mosquitto-clients, socat, curl, and python3 paho-mqtt + pymodbus + pyserial
#   + jsonschema (the docs' examples against docs/schema) + cryptography (Ed25519
#   signatures of platform commands).
# pymodbus and pyserial are pinned (the Modbus peers are checked against these
# versions: tests/peers/MODBUS.md); paho-mqtt is not.
# Idempotent: installs only what is missing. Run as root (uses sudo otherwise); Debian 12.
# Package post-install scripts are prevented from starting system services
# (tests start every peer themselves on loopback; see tests/peers/NOTES.md).
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

log() { echo "peers/install: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
else
    SUDO=
fi

# --- Debian packages ---------------------------------------------------------
# package name -> a file it must provide (checked in addition to dpkg status)
declare -A APT_PKGS=(
    [influxdb]=/usr/bin/influxd
    [victoria-metrics]=/usr/bin/victoria-metrics
    [mosquitto]=/usr/sbin/mosquitto
    [mosquitto-clients]=/usr/bin/mosquitto_pub
    [socat]=/usr/bin/socat
    [curl]=/usr/bin/curl
    [chromium]=/usr/bin/chromium
    [nodejs]=/usr/bin/npm
    [openssl]=/usr/bin/openssl
)

missing=()
for pkg in "${!APT_PKGS[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [ "$status" != "install ok installed" ] || [ ! -x "${APT_PKGS[$pkg]}" ]; then
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -gt 0 ]; then
    log "installing apt packages: ${missing[*]}"
    # Keep post-install scripts from starting influxdb/mosquitto services
    # on their default ports (8086, 1883). Only add a policy if none exists.
    policy=/usr/sbin/policy-rc.d
    made_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
        $SUDO chmod +x "$policy"
        made_policy=1
    fi
    cleanup_policy() { if [ "$made_policy" = 1 ]; then $SUDO rm -f "$policy"; fi; }
    trap cleanup_policy EXIT

    aptlog=$(mktemp)
    if ! { $SUDO apt-get update -qq &&
           $SUDO apt-get install -y -qq --no-install-recommends \
               -o Dpkg::Use-Pty=0 "${missing[@]}"; } >"$aptlog" 2>&1; then
        cat "$aptlog" >&2
        rm -f "$aptlog"
        log "ERROR: apt-get failed"
        exit 1
    fi
    rm -f "$aptlog"

    cleanup_policy
    trap - EXIT
else
    log "apt packages already present"
fi

for pkg in "${!APT_PKGS[@]}"; do
    if [ ! -x "${APT_PKGS[$pkg]}" ]; then
        log "ERROR: $pkg installed but ${APT_PKGS[$pkg]} missing"
        exit 1
    fi
done

# --- Python packages ---------------------------------------------------------
PYMODBUS_VERSION=3.16.1
PYSERIAL_VERSION=3.5
# jsonschema: the test receiver of the uplink (tests/peers/receiver.py) validates every batch,
# and the docs' command examples are checked against docs/schema/command.schema.json;
# cryptography: tests/peers/command_peer.py signs platform commands (Ed25519).
py_check="import sys, paho.mqtt, pymodbus, serial, jsonschema, cryptography
sys.exit(pymodbus.__version__ != '$PYMODBUS_VERSION' or serial.__version__ != '$PYSERIAL_VERSION')"
if python3 -c "$py_check" >/dev/null 2>&1; then
    log "python packages already present"
else
    log "installing python packages: paho-mqtt jsonschema cryptography pymodbus==$PYMODBUS_VERSION pyserial==$PYSERIAL_VERSION"
    python3 -m pip install --quiet --disable-pip-version-check \
        --root-user-action=ignore paho-mqtt jsonschema cryptography \
        "pymodbus==$PYMODBUS_VERSION" "pyserial==$PYSERIAL_VERSION"
    python3 -c "$py_check"
fi

# --- the dashboard's browser tests: playwright-core driving Debian's chromium -----------
# (tests/browser/package-lock.json pins it; no browser is downloaded: there is no internet)
if [ -d "$(dirname "$0")/../browser/node_modules/playwright-core" ]; then
    log "playwright-core already present"
else
    log "installing playwright-core (npm ci in tests/browser)"
    (cd "$(dirname "$0")/../browser" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --silent)
fi

# --- cargo-nextest (optional) -------------------------------------------------
if command -v cargo >/dev/null 2>&1 && cargo nextest --version >/dev/null 2>&1; then
    log "cargo nextest: $(cargo nextest --version 2>/dev/null | head -n1)"
else
    log "cargo nextest not available (use plain cargo test)"
fi

log "ok: influxd $(/usr/bin/influxd version 2>/dev/null | head -n1 || true)"
