#!/usr/bin/env bash
# The test command (README, .ci/run): installs the real peers when missing, builds once, runs
# every unit and black-box test. Needs root (or sudo) for apt on a fresh Debian 12 machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/peers/install.sh
# The habits the code keeps are kept by the machine: formatting and lints before any test.
cargo fmt --all --check
cargo clippy --workspace --locked --all-targets -- -D warnings
cargo build --workspace --locked --all-targets
cargo test --workspace --locked --no-fail-fast
bash tests/package.sh
