"""{{name}}'s decisions, natively, against the SDK's fake host."""

from app import evaluate
from writ_policy import Outcome, ToolCall, Window


def refund(amount, issued_this_minute=0):
    call = ToolCall.build(
        "refunds.issue",
        arguments={"amount": amount},
        key_id="key_a",
        usage={("refunds:key_a", Window.MINUTE): issued_this_minute},
    )
    return evaluate(call)


def test_a_small_refund_is_allowed_and_counted():
    d = refund(20)
    assert d.outcome is Outcome.ALLOW
    assert len(d.charges) == 1


def test_a_large_refund_is_escalated():
    assert refund(250).codes == ["refund_over_limit"]


def test_the_sixth_refund_of_a_minute_is_blocked():
    assert refund(20, issued_this_minute=5).codes == ["rate_limited"]
