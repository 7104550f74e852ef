"""Holds N escalated calls at once against a running gateway, reports the gateway's RSS idle and
with them held (read from /proc/PID/status), then resolves them with a reviewer loop and checks
every caller got the right outcome.

Usage: python held_escalations.py URL AGENT_KEY REVIEWER_KEY GATEWAY_PID [N]
"""

import asyncio
import sys
import time

import httpx


def rss_kib(pid: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def main(url, agent, reviewer, pid, n):
    idle = rss_kib(pid)
    limits = httpx.Limits(max_connections=n + 10)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        async def call(i):
            r = await client.post(
                "/v1/gateway/execute",
                headers={"X-PROVENANCE-API-KEY": agent},
                json={"session_id": f"s{i}", "agent_id": "a", "action": "payments.initiate",
                      "parameters": {"amount": 600 + i, "currency": "GBP"}},
            )
            return i, r.json()

        calls = [asyncio.create_task(call(i)) for i in range(n)]
        headers = {"X-PROVENANCE-API-KEY": reviewer}
        started = time.monotonic()
        while True:
            pending = (await client.get("/v1/escalations/pending", headers=headers)).json()["escalations"]
            if len(pending) >= n:
                break
            await asyncio.sleep(0.1)
        opened = time.monotonic() - started
        held = rss_kib(pid)
        started = time.monotonic()
        for e in pending:
            verb = "approve" if e["parameters"]["amount"] % 2 == 0 else "reject"
            r = await client.post(f"/v1/escalations/{e['escalation_id']}/{verb}", headers=headers, json={"note": verb})
            assert r.status_code == 200, r.text
        results = await asyncio.gather(*calls)
        resolved = time.monotonic() - started
    for i, body in results:
        expected = "ALLOW" if (600 + i) % 2 == 0 else "BLOCK"
        assert body["decision"] == expected, body
    print(f"{n} held: gateway RSS idle {idle} KiB, with them held {held} KiB (+{held - idle} KiB); "
          f"opened in {opened:.2f} s, resolved by one reviewer loop in {resolved:.2f} s; all outcomes right")


if __name__ == "__main__":
    url, agent, reviewer, pid = sys.argv[1:5]
    n = int(sys.argv[5]) if len(sys.argv) > 5 else 1000
    asyncio.run(main(url, agent, reviewer, pid, n))
