"""The bridge to the bindings componentize-py generates for the ``policy`` world.

The bindings (``wit_world``) exist only inside a component; natively this module's
:data:`AVAILABLE` is false and nothing else here is used.
"""

from __future__ import annotations

from typing import Any

from . import _host
from ._call import Target, ToolCall
from ._decision import Decision
from ._host import Level, Window

try:
    import wit_world
    from wit_world.imports import host as wit_host
    from wit_world.imports import types as wit_types
except ImportError:
    AVAILABLE = False
    WorldBase: type = object
else:
    AVAILABLE = True
    WorldBase = wit_world.WitWorld


class GatewayHost:
    """The gateway, through the ``writ:policy/host`` import."""

    def usage(self, counter: str, window: Window) -> float:
        return wit_host.usage(counter, wit_types.Window[window.name])

    def key_id(self) -> str:
        return wit_host.key_id()

    def log(self, level: Level, message: str) -> None:
        wit_host.log(wit_host.Level[level.name], message)


GATEWAY = GatewayHost()


def call_from_wit(call: Any) -> ToolCall:
    """The SDK's :class:`ToolCall` for a generated ``types.ToolCall``, asking the gateway."""
    target = call.target
    return ToolCall(
        action=call.action,
        arguments_json=call.arguments,
        context_json=call.context,
        agent_id=call.agent_id,
        session_id=call.session_id,
        tenant_id=call.tenant_id,
        target=None
        if target is None
        else Target(target.service, target.method, target.url, target.destructive),
        timestamp_ms=call.timestamp_ms,
        host=GATEWAY,
    )


def decision_to_wit(decision: Decision) -> Any:
    """The generated ``types.Decision`` for ``decision``."""
    return wit_types.Decision(
        wit_types.Outcome[decision.outcome.name],
        decision.reason,
        list(decision.codes),
        [wit_types.Charge(c.counter, c.amount) for c in decision.charges],
    )


if AVAILABLE:
    _host.set_default(GATEWAY)
