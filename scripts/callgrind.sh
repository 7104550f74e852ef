#!/usr/bin/env bash
# Counts the gateway's instructions per execute request with valgrind's callgrind, which, unlike
# timings, repeat on a noisy machine. The gateway runs under callgrind with instrumentation off
# (and a pool of 8 slots: valgrind cannot reserve the default pool's address space); `writ bench`
# loads it; once warm, instrumentation is switched on for a window, and the count is divided by
# the audit records written in it (one per execute). Needs valgrind and a release build
# (`cargo build --release -p writ` and the example policies, which `cargo test` builds).
# Usage: ./scripts/callgrind.sh [window seconds, default 30] [connections, default 16]
# Writes target/callgrind/callgrind.out and prints instructions per request, by crate and by
# function. Under callgrind each iteration of a `rep movs`/`rep stos` counts, so memcpy and
# memset are overstated against their real cost. Work that runs by the clock rather than per
# request (the session index written out about once a second, which splits sled leaves; sled's
# flusher; a policy reaching an epoch deadline) is spread over the 50-100 times fewer requests
# the instrumented gateway answers, so it is overstated too: sled's share most of all.
set -euo pipefail
cd "$(dirname "$0")/.."
WINDOW=${1:-30}
CONNS=${2:-16}
BIN=target/release/writ
POLICY=target/guests/wasm32-wasip2/guest/payments_limits.wasm
OUT=target/callgrind
for need in "$BIN" "$POLICY"; do
  [ -e "$need" ] || { echo "missing $need: build it first" >&2; exit 1; }
done
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }

rm -rf "$OUT" && mkdir -p "$OUT"
export WRIT_OPERATOR_KEY="wk_op_callgrind_$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/callgrind.out" \
  "$BIN" serve --listen=127.0.0.1:0 --data-dir "$OUT/data" --pool-slots 8 \
  >"$OUT/gateway.out" 2>"$OUT/gateway.err" &
VG=$!
BENCH=
cleanup() {
  [ -n "$BENCH" ] && kill "$BENCH" 2>/dev/null
  kill "$VG" 2>/dev/null
  wait 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 600); do grep -q "listening on" "$OUT/gateway.out" 2>/dev/null && break; sleep 0.5; done
URL=$(sed -n 's/^listening on //p' "$OUT/gateway.out")
[ -n "$URL" ] || { echo "the gateway did not start; see $OUT/gateway.err" >&2; exit 1; }
records() { curl -s -H "Authorization: Bearer $WRIT_OPERATOR_KEY" "$URL/metrics" | awk '/^writ_audit_batch_records_sum/ {print $2}'; }

# Enough load for the warm-up and the window: instrumented, the gateway is 50-100 times slower.
"$BIN" bench --gateway "$URL" --policy "$POLICY" --no-floor -c "$CONNS" \
  -d $((WINDOW + 60)) --warmup 30 >"$OUT/bench.out" 2>&1 &
BENCH=$!
until grep -q "loading the gateway" "$OUT/bench.out"; do sleep 1; done
sleep 20
callgrind_control -i on "$VG" >/dev/null
sleep 3 # let the instrumented code settle in before counting
callgrind_control -z "$VG" >/dev/null
R0=$(records)
sleep "$WINDOW"
R1=$(records)
callgrind_control -d "$VG" >/dev/null
callgrind_control -i off "$VG" >/dev/null
DUMP=$(ls "$OUT"/callgrind.out.* | tail -1)
N=$(awk -v a="$R0" -v b="$R1" 'BEGIN {print int(b - a)}')
echo "requests in the window: $N"
callgrind_annotate --auto=no --threshold=100 "$DUMP" >"$OUT/flat.txt"
python3 - "$OUT/flat.txt" "$N" <<'EOF'
import collections, re, sys
path, n = sys.argv[1], int(sys.argv[2])
by_crate, by_fn, total = collections.Counter(), collections.Counter(), 0
for line in open(path):
    m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(\S.*)", line)
    if not m or "PROGRAM TOTALS" in line:
        continue
    ir, where = int(m.group(1).replace(",", "")), m.group(2)
    total += ir
    crate = re.search(r"index\.crates\.io-[0-9a-f]+/([A-Za-z_\-0-9]+?)-\d+\.\d", where)
    if crate:
        key = crate.group(1)
    elif "/vendor/sled/" in where:
        key = "sled"
    elif "/host/src/" in where:
        key = "writ"
    elif "memset" in where or "memmove" in where or "memcpy" in where:
        key = "libc memset/memcpy"
    elif "jemalloc" in where:
        key = "jemalloc"
    elif "/rustc/" in where:
        key = "std, inlined into " + re.sub(r"^[<&]*([a-z_0-9]+).*", r"\1", where.split(":", 1)[-1])
    elif where.startswith("???"):
        key = "policy code and trampolines (JIT)"
    else:
        key = "other"
    by_crate[key] += ir
    by_fn[where.split(":", 1)[-1][:110]] += ir
print(f"instructions per request: {total / n:,.0f}")
print("\nby crate (self cost):")
for k, v in by_crate.most_common(20):
    print(f"{v / n:10,.0f}  {v / total * 100:5.1f}%  {k}")
print("\nby function (self cost):")
for k, v in by_fn.most_common(25):
    print(f"{v / n:10,.0f}  {v / total * 100:5.1f}%  {k}")
EOF
