"""An independent verifier of a Writ audit export (JSON Lines), using only the Python standard
library and the `blake3` package from PyPI. It shares no code with the gateway: it is the proof
that the canonical encoding documented in ARCHITECTURE.md is real.

Usage: python verify_export.py EXPORT.jsonl [--tenant TENANT_ID]
Prints `ok <records> <head_seq> <head_hash>` and exits 0, or `broken <seq> <problem>` and exits 1.
"""

import json
import sys

from blake3 import blake3


def canonical(record: dict) -> bytes:
    # Keys sorted at every level, no whitespace, non-ASCII as raw UTF-8: ARCHITECTURE.md's
    # "canonical bytes".
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# The fields of each record format (ARCHITECTURE.md, "Record formats"). Format 1 records carry
# no `version`; format 2 adds the acting key (`key_id`, `key_subject`, null when no key acted)
# and `version: 2`. Every field of a record's format is present, and no other.
FORMAT_1 = {
    "action", "actor", "agent_id", "arguments", "charges", "client_hint", "codes", "detail",
    "escalation_id", "event_id", "fuel", "kind", "latency_us", "outcome", "policy_id",
    "prev_hash", "reason", "seq", "session_id", "tenant_id", "timestamp_ms",
}
FORMATS = {1: FORMAT_1, 2: FORMAT_1 | {"key_id", "key_subject", "version"}}


def record_format(record: dict):
    version = record.get("version", 1)
    fields = FORMATS.get(version) if isinstance(version, int) else None
    if fields is None or set(record) != fields:
        return None
    return version


def verify(lines, tenant=None):
    prev = bytes(32)
    count = 0
    for expected_seq, line in enumerate(lines):
        record = json.loads(line)
        stored_hash = record.pop("hash", None)
        if record_format(record) is None:
            return ("broken", expected_seq, "unknown_format")
        if record["seq"] != expected_seq:
            return ("broken", expected_seq, "seq_out_of_order_or_missing")
        if tenant is not None and record["tenant_id"] != tenant:
            return ("broken", expected_seq, "wrong_tenant")
        if record["prev_hash"] != prev.hex():
            return ("broken", expected_seq, "prev_hash_mismatch")
        digest = blake3(prev + canonical(record)).digest()
        if digest.hex() != stored_hash:
            return ("broken", expected_seq, "hash_mismatch")
        prev = digest
        count += 1
    return ("ok", count, count - 1, prev.hex())


def main():
    args = sys.argv[1:]
    tenant = None
    if "--tenant" in args:
        i = args.index("--tenant")
        tenant = args[i + 1]
        del args[i : i + 2]
    with open(args[0], encoding="utf-8") as f:
        result = verify((line for line in f if line.strip()), tenant)
    print(" ".join(str(x) for x in result))
    sys.exit(0 if result[0] == "ok" else 1)


if __name__ == "__main__":
    main()
