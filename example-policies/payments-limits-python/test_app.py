"""payments-limits' decisions, natively: the Rust example's unit tests, case for case."""

import pytest

from app import PREAPPROVED, evaluate
from writ_policy import Decision, Outcome, ToolCall


def pay(**arguments) -> Decision:
    return evaluate(ToolCall.build("payments.initiate", arguments=arguments))


@pytest.mark.parametrize("currency", PREAPPROVED)
def test_allows_small_payments_in_preapproved_currencies(currency):
    d = pay(amount=500, currency=currency, recipient_id="rec_abc123")
    assert d.outcome is Outcome.ALLOW
    assert d.reason == "Payment within approved parameters"
    assert d.codes == []


def test_escalates_payments_over_the_limit():
    d = pay(amount=800, currency="GBP", recipient_id="rec_xyz789")
    assert d.outcome is Outcome.ESCALATE
    assert d.codes == ["amount_over_limit"]
    assert d.reason == "Payment of 800 GBP is over the 500 limit: a human must review"


def test_escalates_other_currencies():
    d = pay(amount=100, currency="JPY", recipient_id="rec_jpy001")
    assert d.outcome is Outcome.ESCALATE
    assert d.codes == ["currency_not_preapproved"]
    assert d.reason == "Currency JPY is not pre-approved: a human must review"


def test_large_payment_in_other_currency_carries_both_codes():
    d = pay(amount=9000, currency="JPY")
    assert d.outcome is Outcome.ESCALATE
    assert d.codes == ["currency_not_preapproved", "amount_over_limit"]


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        ('{"currency": "GBP"}', "Malformed payment arguments: argument `amount` is missing"),
        ('{"amount": "fifty", "currency": "GBP"}', "expected a number, got a string"),
        ('{"amount": null, "currency": "GBP"}', "expected a number, got null"),
        ('{"amount": -5, "currency": "GBP"}', "Payment amount must be a positive number"),
        ('{"amount": 0, "currency": "GBP"}', "Payment amount must be a positive number"),
        ('{"amount": 10}', "argument `currency` is missing"),
        ("[1, 2]", "Malformed payment arguments: arguments are not a JSON object"),
    ],
)
def test_blocks_malformed_amounts(arguments, reason):
    d = evaluate(ToolCall.build("payments.initiate", arguments_json=arguments))
    assert d.outcome is Outcome.BLOCK
    assert d.codes == ["invalid_arguments"]
    assert reason in d.reason


def test_allows_email():
    assert evaluate(ToolCall.build("email.send")).outcome is Outcome.ALLOW


def test_blocks_unknown_actions():
    d = evaluate(ToolCall.build("github.repos.delete"))
    assert d.outcome is Outcome.BLOCK
    assert d.codes == ["action_not_allowed"]
    assert d.reason == "Action `github.repos.delete` is not allowed by this policy"
