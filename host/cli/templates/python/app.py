"""``{{name}}``, a Writ policy: refunds up to 100 go ahead, larger ones wait for a human, and
each API key may issue at most five refunds a minute. Other actions are allowed."""

from writ_policy import ArgumentError, Decision, ToolCall, Window, policy

#: The largest refund that needs no human.
LIMIT = 100.0

#: Refunds one key may issue in a minute.
PER_MINUTE = 5


@policy
def evaluate(call: ToolCall) -> Decision:
    if call.action != "refunds.issue":
        return Decision.allow("not a refund")
    try:
        amount = call.arg("amount", type=float)
    except ArgumentError:
        return Decision.block("a refund needs a numeric amount").code("invalid_arguments")
    # Counted per key: an agent chooses its session and agent id, not its key.
    counter = f"refunds:{call.key_id}"
    if call.usage(counter, Window.MINUTE) >= PER_MINUTE:
        return Decision.block("this key has issued its refunds for the minute").code(
            "rate_limited"
        )
    if amount > LIMIT:
        return (
            Decision.escalate(f"a refund of {amount:g} needs a human")
            .code("refund_over_limit")
            .charge(counter, 1)
        )
    return Decision.allow("refund within limits").charge(counter, 1)
