#!/usr/bin/env bash
# Runs every check and test of the workspace on a fresh machine. Installs what the tests need
# (the wasm32-wasip2 target; a Python virtualenv in .venv with the published SDKs the
# compatibility tests drive and componentize-py; the npm packages the TypeScript policies
# build with; Debian's Chromium and ChromeDriver for the browser tests; Debian's
# PostgreSQL server, which the tests run as a private cluster of their own), then lints and
# tests. Usage: ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# The toolchain and the policy target (rust-toolchain.toml pins both).
rustup show active-toolchain >/dev/null 2>&1 || rustup toolchain install
rustup target add wasm32-wasip2

# The published Python SDKs, unmodified (provenance-client declares Python 3.13 but runs on
# 3.11), the official MCP SDK with a published MCP server for the MCP proxy's tests, and
# componentize-py, which builds the Python policies (tests/artifacts/build.rs).
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check --ignore-requires-python \
  'provenance-client==0.1.0' 'tenet-python==0.1.0' 'pytest>=8,<9' 'blake3>=1,<2' \
  'mcp==2.3.0' 'mcp-server-time==2026.10.19' 'componentize-py==0.25.1'

# The JavaScript toolchain the TypeScript policies build with (typescript, rolldown,
# componentize-js) and the TypeScript SDK's own test dependencies, from their lockfiles.
npm ci --prefix policy-sdk-typescript --no-audit --no-fund --loglevel=error
npm ci --prefix example-policies/payments-limits-typescript --no-audit --no-fund --loglevel=error

# Debian's headless Chromium and its ChromeDriver, which the browser tests drive
# (tests/src/browser.rs), and Debian's PostgreSQL server: the tests start a private cluster
# (initdb into a temporary directory, a free loopback port; tests/src/postgres.rs), never the
# package's own.
if ! { command -v chromium && command -v chromedriver && ls /usr/lib/postgresql/*/bin/initdb; } >/dev/null 2>&1; then
  sudo=$([ "$(id -u)" -eq 0 ] || echo sudo)
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    chromium chromium-driver postgresql >/dev/null
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
