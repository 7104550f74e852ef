"""The published tenet-python SDK, unmodified, against a live Writ gateway: the seed's
quickstart. Run by tests/tests/sdk_tenet.rs, which starts the gateway and a downstream service,
gives the tenant payments-limits, a catalog and a credential, and sets TENET_API_URL,
TENET_API_KEY and WRIT_DOWNSTREAM_SEEN (a URL listing what the downstream received).
"""

import json
import os
import time
import urllib.request

import pytest
from tenet import TenetClient
from tenet.errors import TenetAuthError


def client(**kwargs) -> TenetClient:
    return TenetClient(poll_interval=0.05, poll_timeout=20, **kwargs)


def test_allowed_call_is_executed_and_returns_the_downstream_body():
    decision = client().execute(
        service="mail",
        tool_name="email.send",
        arguments={"to": "customer@example.com", "template": "receipt"},
        context={"env": "production"},
    )
    assert decision.allowed
    assert decision.executed, decision
    assert decision.execution["status"] == 200
    body = json.loads(decision.execution["body"])
    assert body["received"]["to"] == "customer@example.com"
    assert decision.decision_id.startswith("evt_")


def test_blocked_call_has_reason_codes():
    decision = client().execute(
        service="github",
        tool_name="github.repos.delete",
        arguments={"owner": "acme", "repo": "old-experiment"},
        context={"env": "production"},
    )
    assert decision.blocked
    assert decision.reason_codes == ["action_not_allowed"]
    assert not decision.executed


def test_escalated_call_has_a_review_id():
    decision = client().execute(
        service="payments",
        tool_name="payments.initiate",
        arguments={"amount": 800, "currency": "GBP", "recipient_id": "rec_xyz789"},
    )
    assert decision.escalated
    assert decision.review_id.startswith("esc_")
    assert "amount_over_limit" in decision.reason_codes


def test_wait_false_then_get_job():
    decision = client().execute(
        service="mail", tool_name="email.send", arguments={"to": "a@b.c", "template": "t"}, wait=False
    )
    assert decision.allowed and decision.job_id
    deadline = time.monotonic() + 20
    while True:
        job = client().get_job(decision.job_id)
        if job["status"] in ("completed", "failed"):
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert job["status"] == "completed"
    assert job["execution"]["status"] == 200


def test_bad_key_raises_tenet_auth_error():
    with pytest.raises(TenetAuthError):
        client(api_key="tnt_not_a_key").execute(service="mail", tool_name="email.send", arguments={})


def test_blocked_and_escalated_calls_never_reached_the_downstream():
    with urllib.request.urlopen(os.environ["WRIT_DOWNSTREAM_SEEN"]) as r:
        seen = json.loads(r.read())
    assert seen, "the allowed calls did reach it"
    assert all(s["path"] == "/send" for s in seen), seen
