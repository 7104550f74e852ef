"""Write Writ policies in Python.

A Writ policy decides whether an AI agent's tool call may go ahead. It is compiled to a
WebAssembly component with ``componentize-py`` and uploaded to the gateway, which runs it in a
sandbox: a fresh instance for every call, with fuel, deadline and memory limits.

A policy is one module with one decorated function::

    from writ_policy import ArgumentError, Decision, ToolCall, Window, policy

    @policy
    def evaluate(call: ToolCall) -> Decision:
        \"\"\"Allows payments of at most 100 per session, charged to `spend`.\"\"\"
        if call.action != "payments.initiate":
            return Decision.block("only payments are allowed").code("action_not_allowed")
        try:
            amount = call.arg("amount", type=float)
        except ArgumentError:
            return Decision.block("amount must be a number").code("invalid_arguments")
        if call.usage("spend", Window.SESSION) + amount > 100:
            return Decision.escalate("session spend over 100").code("session_cap")
        return Decision.allow("small payment").charge("spend", amount)

The same code runs natively under pytest, against a fake host::

    call = ToolCall.build("payments.initiate", arguments={"amount": 30},
                          usage={("spend", Window.SESSION): 80.0})
    decision = evaluate(call)
    assert decision.is_escalate() and decision.codes == ["session_cap"]

See README.md for building, testing and uploading the component.
"""

from ._call import ArgumentError, Target, ToolCall
from ._decision import Charge, Decision, InvalidDecision, Outcome
from ._export import PANIC_LOG_PREFIX, policy
from ._host import Level, Window, log, usage

__all__ = [
    "PANIC_LOG_PREFIX",
    "ArgumentError",
    "Charge",
    "Decision",
    "InvalidDecision",
    "Level",
    "Outcome",
    "Target",
    "ToolCall",
    "Window",
    "log",
    "policy",
    "usage",
]
