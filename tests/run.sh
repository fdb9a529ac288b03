#!/usr/bin/env bash
# The test command (README, .ci/run): installs the real peers when missing, builds once, runs
# every unit and black-box test. Needs root (or sudo) for apt on a fresh Debian 12 machine.
# Each step's start is printed with the seconds since the start (where a slow CI run went).
set -euo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
step() { echo "tests/run: [$(( $(date +%s) - T0 )) s] $*" >&2; }
step "peers"
bash tests/peers/install.sh
# The habits the code keeps are kept by the machine: formatting and lints before any test.
step "fmt, clippy"
cargo fmt --all --check
cargo clippy --workspace --locked --all-targets -- -D warnings
step "build"
cargo build --workspace --locked --all-targets
# Four tests at a time on two cores: the black-box tests mostly wait on their peers and
# processes (505 s with two at a time, 285 s with four, on this 2-core VM).
# GKGW_TEST_THREADS=N to change it.
step "tests"
cargo test --workspace --locked --no-fail-fast -- --test-threads "${GKGW_TEST_THREADS:-4}"
step "package"
bash tests/package.sh
step "done"
