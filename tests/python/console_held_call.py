"""A call held by the published provenance-client SDK, unmodified, while a reviewer decides it
in the console (tests/tests/console.rs). Prints one JSON line: how the SDK answered."""

import asyncio
import json
import os

from provenance_client import Decision, ProvenanceClient, ProvenanceGateway
from provenance_client.services import PolicyBlockedError


async def main() -> dict:
    gateway = ProvenanceGateway(
        ProvenanceClient(
            gateway_url=os.environ["WRIT_URL"],
            agent_id="sdk-agent",
            api_key=os.environ["WRIT_AGENT_KEY"],
        )
    )
    try:
        r = await gateway.async_execute(
            "payments.initiate",
            {"amount": 100, "currency": "JPY", "recipient_id": "rec_jpy001"},
            decision=Decision.ESCALATE,
        )
        return {"decision": r.decision.value, "reason": r.reason, "actor_human_id": r.actor_human_id}
    except PolicyBlockedError as e:
        return {"raised": "PolicyBlockedError", "reason": e.reason, "event_id": e.event_id}


print(json.dumps(asyncio.run(main())))
