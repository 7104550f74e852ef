#!/usr/bin/env python3
"""Prints criterion's medians (with their 95 % intervals) from the last `cargo bench` run, and
for each policy of the `evaluate` bench its sandboxed median as a multiple of its native one.

criterion's `time:` line is its slope estimate (or the mean), not the median; on a VM whose speed
drifts within a run the two can differ by 10-30 %. The medians are in
target/criterion/<group>/<bench>/new/estimates.json.

Usage: scripts/criterion-medians.py [target/criterion]
"""

import json
import pathlib
import sys

WASM = "wasm_ fresh instance + evaluate"
NATIVE = "native floor"


def fmt(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")
    medians = {}
    for path in sorted(root.glob("*/*/new/estimates.json")):
        group, bench = path.parts[-4], path.parts[-3]
        median = json.loads(path.read_text())["median"]
        low, high = (median["confidence_interval"][k] for k in ("lower_bound", "upper_bound"))
        medians[(group, bench)] = median["point_estimate"]
        print(f"{group}/{bench}: median {fmt(median['point_estimate'])} [{fmt(low)}, {fmt(high)}]")
    if not medians:
        sys.exit(f"no criterion estimates under {root}: run `cargo bench` first")
    for (group, bench), wasm in medians.items():
        native = medians.get((group, NATIVE))
        if bench == WASM and native:
            print(f"{group}: sandbox / native = {wasm / native:.1f}x")


if __name__ == "__main__":
    main()
