#!/usr/bin/env bash
# Builds the gateway and the payments-limits policy, then starts the gateway on the embedded
# store in ./writ-data with a `demo` tenant whose active policy is payments-limits. Prints the
# demo tenant's agent, reviewer and admin keys and a curl line that gets a decision.
# Usage: ./scripts/demo.sh   (WRIT_LISTEN and WRIT_DATA_DIR are honoured)
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2
cargo build --locked --profile guest --target wasm32-wasip2 -p payments-limits
cargo build --locked --release -p writ
exec ./target/release/writ serve --demo-policy target/wasm32-wasip2/guest/payments_limits.wasm
