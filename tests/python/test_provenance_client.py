"""The published provenance-client SDK, unmodified, against a live Writ gateway.

Run by tests/tests/sdk_provenance.rs, which starts the gateway and sets WRIT_URL,
WRIT_AGENT_KEY and WRIT_ADMIN_KEY. The tenant's active policy is payments-limits.
"""

import asyncio
import dataclasses
import os
import socket
import warnings

import httpx
import pytest
from provenance_client import Decision, ProvenanceClient, ProvenanceGateway
from provenance_client.services import GatewayError, PolicyBlockedError

URL = os.environ["WRIT_URL"]
AGENT_KEY = os.environ["WRIT_AGENT_KEY"]
ADMIN_KEY = os.environ["WRIT_ADMIN_KEY"]
REVIEWER_KEY = os.environ["WRIT_REVIEWER_KEY"]
# Where the reviewer decides: another node of the same store, in the several-nodes test.
REVIEWER_URL = os.environ.get("WRIT_REVIEWER_URL", URL)

# Every event id the SDK handed back, checked against the audit log at the end.
EVENT_IDS: list[str] = []


def gateway(url: str = URL, **kwargs) -> ProvenanceGateway:
    return ProvenanceGateway(
        ProvenanceClient(gateway_url=url, agent_id="sdk-agent", api_key=AGENT_KEY, **kwargs)
    )


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_direct_execute_allowed():
    result = gateway().execute(
        "payments.initiate",
        {"amount": 50, "currency": "GBP", "recipient_id": "rec_abc123"},
        decision=Decision.ALLOW,
    )
    assert result.decision == Decision.ALLOW
    assert result.allowed
    assert result.reason == "Payment within approved parameters"
    assert result.event_id.startswith("evt_")
    EVENT_IDS.append(result.event_id)


def test_direct_execute_blocked_raises_with_reason_and_event_id():
    with pytest.raises(PolicyBlockedError) as err:
        gateway().execute("github.repos.delete", {"owner": "acme", "repo": "old"})
    assert "not allowed" in err.value.reason
    assert err.value.event_id.startswith("evt_")
    assert err.value.action == "github.repos.delete"
    EVENT_IDS.append(err.value.event_id)


# provenance-client 0.1.0's guard assigns `result.tool_result` on ExecutionResult, a frozen
# dataclass, so after an allowed call's body has run the SDK itself raises FrozenInstanceError.
# That is a defect of the published SDK, not of the gateway: these tests check what the gateway
# controls (the body runs exactly when the policy allows) and pin the SDK's behaviour.
SDK_GUARD_DEFECT = dataclasses.FrozenInstanceError


def test_guard_runs_the_body_only_when_allowed():
    gw = gateway()
    ran = []

    @gw.guard("payments.initiate")
    def initiate_payment(amount: float, currency: str, recipient_id: str) -> dict:
        ran.append(amount)
        return {"paid": amount}

    with pytest.raises(SDK_GUARD_DEFECT):
        initiate_payment(50, "GBP", "rec_abc123")
    with pytest.raises(PolicyBlockedError):
        initiate_payment("fifty", "GBP", "rec_abc123")
    assert ran == [50]


def test_guard_on_async_functions():
    gw = gateway()
    ran = []

    @gw.guard("email.send")
    async def send_email(to: str, template: str) -> dict:
        ran.append(to)
        return {"sent": to}

    @gw.guard("repos.delete")
    async def delete_repo(name: str) -> None:
        ran.append(name)

    async def main():
        with pytest.raises(SDK_GUARD_DEFECT):
            await send_email("customer@example.com", "receipt")
        with pytest.raises(PolicyBlockedError):
            await delete_repo("old")

    asyncio.run(main())
    assert ran == ["customer@example.com"]


def test_session_context_manager_counts():
    gw = gateway()
    with gw.session("sess_checkout_flow") as sess:
        a = sess.execute(
            "payments.initiate",
            {"amount": 50, "currency": "GBP", "recipient_id": "rec_abc123"},
            decision=Decision.ALLOW,
        )
        b = sess.execute(
            "email.send",
            {"to": "customer@example.com", "template": "receipt"},
            decision=Decision.ALLOW,
        )
        assert sess.allowed_count == 2
        assert sess.blocked_count == 0
        assert [r.event_id for r in sess.results] == [a.event_id, b.event_id]
    EVENT_IDS.extend([a.event_id, b.event_id])
    summary = httpx.get(
        f"{URL}/v1/sessions/sess_checkout_flow", headers={"X-PROVENANCE-API-KEY": ADMIN_KEY}
    ).json()
    assert summary["allowed"] == 2


def test_async_execute():
    async def main():
        return await gateway().async_execute(
            "payments.initiate",
            {"amount": 50, "currency": "GBP", "recipient_id": "rec_abc123"},
            decision=Decision.ALLOW,
        )

    result = asyncio.run(main())
    assert result.allowed
    EVENT_IDS.append(result.event_id)


def test_fail_closed_when_the_gateway_is_down():
    with pytest.raises(GatewayError):
        gateway(dead_url()).execute("payments.initiate", {"amount": 50, "currency": "GBP"})


def test_fail_open_allows_with_a_warning_when_the_gateway_is_down():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = gateway(dead_url(), on_gateway_error="open").execute(
            "payments.initiate", {"amount": 50, "currency": "GBP"}
        )
    assert result.allowed
    assert any("failing open" in str(w.message) for w in caught)


async def decide_first_pending(verb: str, note: str) -> str:
    """A reviewer: waits for the held call to appear, then decides it through the API."""
    headers = {"X-PROVENANCE-API-KEY": REVIEWER_KEY}
    async with httpx.AsyncClient(base_url=REVIEWER_URL, headers=headers) as client:
        for _ in range(400):
            pending = (await client.get("/v1/escalations/pending")).json()["escalations"]
            if pending:
                escalation_id = pending[0]["escalation_id"]
                r = await client.post(f"/v1/escalations/{escalation_id}/{verb}", json={"note": note})
                assert r.status_code == 200, r.text
                return escalation_id
            await asyncio.sleep(0.05)
    raise AssertionError("no escalation appeared")


def test_escalation_approved_while_async_execute_is_held():
    holder = {}

    async def initiate_large_payment():
        holder["result"] = await gateway().async_execute(
            "payments.initiate",
            {"amount": 800, "currency": "GBP", "recipient_id": "rec_xyz789"},
            decision=Decision.ESCALATE,
        )

    async def main():
        _, escalation_id = await asyncio.gather(
            initiate_large_payment(), decide_first_pending("approve", "Verified with CFO")
        )
        return escalation_id

    escalation_id = asyncio.run(main())
    r = holder["result"]
    assert r.decision == Decision.ALLOW
    assert r.actor_human_id == "reviewer@example.com"
    assert r.escalation_id == escalation_id
    assert r.reason == "Verified with CFO"
    EVENT_IDS.append(r.event_id)


def test_escalation_rejected_raises_policy_blocked_with_the_note():
    holder = {}

    async def initiate_jpy_payment():
        try:
            holder["result"] = await gateway().async_execute(
                "payments.initiate",
                {"amount": 100, "currency": "JPY", "recipient_id": "rec_jpy001"},
                decision=Decision.ESCALATE,
            )
        except PolicyBlockedError as e:
            holder["result"] = e

    async def main():
        await asyncio.gather(initiate_jpy_payment(), decide_first_pending("reject", "JPY not authorised"))

    asyncio.run(main())
    assert isinstance(holder["result"], PolicyBlockedError)
    assert holder["result"].reason == "JPY not authorised"
    EVENT_IDS.append(holder["result"].event_id)


def test_zz_every_event_id_the_sdk_received_is_in_the_audit_log():
    assert len(EVENT_IDS) >= 5
    for event_id in EVENT_IDS:
        r = httpx.get(
            f"{URL}/v1/audit/events/{event_id}", headers={"X-PROVENANCE-API-KEY": ADMIN_KEY}
        )
        assert r.status_code == 200, event_id
        assert r.json()["event_id"] == event_id
