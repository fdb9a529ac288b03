#!/usr/bin/env bash
# Builds the Debian packages of gkgw: arm64 (Raspberry Pi OS Bookworm 64-bit, cross-built with
# Debian's gcc-aarch64-linux-gnu) and amd64, with cargo-deb (metadata in gateway/Cargo.toml).
#   bash gateway/debian/build-packages.sh [OUT_DIR]     (default: $CARGO_TARGET_DIR/debian)
# Installs what it needs when missing (idempotent): the rustup target, the cross gcc (apt) and
# cargo-deb (pinned). Run as root (uses sudo otherwise); Debian 12 x86-64.
# ARCHES="arm64" (or "amd64") builds one only; GKGW_DEB_PROFILE=dev packages the dev build
# (tests/package.sh does for amd64: quicker, same layout); GKGW_DEB_NO_BUILD=1 packages the
# binary already built for that profile (tests/run.sh's `cargo build --all-targets` made it;
# cargo deb's own `-p gkgw` build resolves features differently and rebuilds ~1 min).
# Prints the path of each package made.
set -euo pipefail
cd "$(dirname "$0")/../.."

CARGO_DEB_VERSION=3.8.0
AARCH64=aarch64-unknown-linux-gnu
ARCHES=${ARCHES:-"arm64 amd64"}
PROFILE=${GKGW_DEB_PROFILE:-release}
TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
OUT=${1:-$TARGET_DIR/debian}
export DEBIAN_FRONTEND=noninteractive

log() { echo "build-packages: $*" >&2; }
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi

# --- what the cross build needs -----------------------------------------------------------
if [[ " $ARCHES " == *" arm64 "* ]]; then
    if ! rustup target list --installed | grep -qx "$AARCH64"; then
        log "adding the rust target $AARCH64"
        rustup target add "$AARCH64"
    fi
    # package -> a file it must provide. The unstripped cross binutils (strip) come with gcc.
    declare -A APT_PKGS=(
        [gcc-aarch64-linux-gnu]=/usr/bin/aarch64-linux-gnu-gcc
        [libc6-dev-arm64-cross]=/usr/aarch64-linux-gnu/lib/libc.so
        [binutils-aarch64-linux-gnu]=/usr/bin/aarch64-linux-gnu-strip
    )
    missing=()
    for pkg in "${!APT_PKGS[@]}"; do
        [ -e "${APT_PKGS[$pkg]}" ] || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing apt packages: ${missing[*]}"
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
    fi
fi

if [ "$(cargo deb --version 2>/dev/null || true)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
    log "installing cargo-deb $CARGO_DEB_VERSION"
    # Its own build directory, not the project's (CARGO_TARGET_DIR would be shared).
    env -u CARGO_TARGET_DIR cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --quiet
fi

# --- the packages -------------------------------------------------------------------------
mkdir -p "$OUT"
for arch in $ARCHES; do
    case "$arch" in
    arm64) target=(--target "$AARCH64") ;;
    amd64) target=() ;;
    *) log "ERROR: unknown architecture $arch (arm64 or amd64)"; exit 1 ;;
    esac
    log "building the $arch package ($PROFILE profile)"
    start=$(date +%s)
    # Stripped (the release profile keeps line tables for backtraces in tests and benches);
    # no separate debug-symbol package.
    build=()
    if [ "${GKGW_DEB_NO_BUILD:-0}" = 1 ]; then build=(--no-build); fi
    deb=$(cargo deb -p gkgw "${target[@]}" "${build[@]}" --profile "$PROFILE" --strip --no-separate-debug-symbols --no-dbgsym \
        --output "$OUT" -- --locked | tail -n 1)
    if [ ! -f "$deb" ]; then
        log "ERROR: cargo deb made no package for $arch (last line: $deb)"
        exit 1
    fi
    log "$arch: $deb ($(stat -c %s "$deb") bytes, $(( $(date +%s) - start )) s)"
    echo "$deb"
done
