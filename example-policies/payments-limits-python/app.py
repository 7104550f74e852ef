"""payments-limits in Python: the Provenance seed's payment scenario, as the Rust
example-policies/payments-limits decides it.

- ``payments.initiate`` in GBP, EUR or USD up to 500 is allowed;
- above 500 is escalated (``amount_over_limit``);
- any other currency is escalated for a human (``currency_not_preapproved``);
- a missing or non-numeric amount, or a missing currency, is blocked (``invalid_arguments``);
- ``email.send`` is allowed;
- any other action is blocked (``action_not_allowed``).
"""

import math

from writ_policy import ArgumentError, Decision, ToolCall, policy

#: The largest payment allowed without a human.
LIMIT = 500.0

#: Currencies that need no human.
PREAPPROVED = ("GBP", "EUR", "USD")


@policy
def evaluate(call: ToolCall) -> Decision:
    match call.action:
        case "payments.initiate":
            return payment(call)
        case "email.send":
            return Decision.allow("Email sending is allowed")
        case other:
            return Decision.block(f"Action `{other}` is not allowed by this policy").code(
                "action_not_allowed"
            )


def payment(call: ToolCall) -> Decision:
    try:
        amount = call.arg("amount", type=float)
    except ArgumentError as e:
        return Decision.block(f"Malformed payment arguments: {e}").code("invalid_arguments")
    if not (math.isfinite(amount) and amount > 0):
        return Decision.block("Payment amount must be a positive number").code(
            "invalid_arguments"
        )
    try:
        currency = call.arg("currency", type=str)
    except ArgumentError as e:
        return Decision.block(f"Malformed payment arguments: {e}").code("invalid_arguments")

    decision = None
    if currency not in PREAPPROVED:
        decision = Decision.escalate(
            f"Currency {currency} is not pre-approved: a human must review"
        ).code("currency_not_preapproved")
    if amount > LIMIT:
        decision = decision or Decision.escalate(
            f"Payment of {number(amount)} {currency} is over the {number(LIMIT)} limit: "
            "a human must review"
        )
        decision.code("amount_over_limit")
    return decision or Decision.allow("Payment within approved parameters")


def number(x: float) -> str:
    """``x`` as Rust prints an f64 (800.0 as ``800``), so both policies give the same reasons."""
    return str(int(x)) if x.is_integer() else repr(x)
