#!/usr/bin/env bash
# Runs every check and test of the workspace on a fresh machine: installs what the tests need
# (the wasm32-wasip2 target), then lints and tests. Usage: ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# The toolchain and the policy target (rust-toolchain.toml pins both).
rustup show active-toolchain >/dev/null 2>&1 || rustup toolchain install
rustup target add wasm32-wasip2

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
