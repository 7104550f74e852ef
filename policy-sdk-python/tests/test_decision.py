import math

import pytest

from writ_policy import Charge, Decision, InvalidDecision, Outcome


def test_constructors():
    assert Decision.allow("a") == Decision(Outcome.ALLOW, "a", [], [])
    assert Decision.block("b").outcome is Outcome.BLOCK
    assert Decision.escalate("e").outcome is Outcome.ESCALATE


def test_codes_and_charges_chain():
    d = Decision.escalate("amount over 500").code("amount_over_limit").charge("spend:GBP", 800)
    assert d.is_escalate() and not d.is_allow() and not d.is_block()
    assert d.codes == ["amount_over_limit"]
    assert d.has_code("amount_over_limit") and not d.has_code("other")
    assert d.charges == [Charge("spend:GBP", 800.0)]
    assert isinstance(d.charges[0].amount, float)


def test_adders_return_the_same_decision():
    d = Decision.allow("ok")
    assert d.code("a") is d
    assert d.charge("c", 1) is d
    assert d.codes == ["a"] and len(d.charges) == 1


def test_decisions_do_not_share_lists():
    Decision.allow("a").code("x")
    assert Decision.allow("b").codes == []


def test_a_decision_within_the_limits_is_valid():
    d = Decision.allow("é" * 2048).charge("c" * 128, 0.0)
    for i in range(32):
        d.code(f"code.{i}-x_y")
    assert d.validate() is d


@pytest.mark.parametrize(
    ("decision", "problem"),
    [
        (Decision.allow("x" * 4097), "reason is over 4096 bytes"),
        (Decision.allow("é" * 2049), "reason is over 4096 bytes"),
        (Decision.allow("ok").code("Not Valid"), "code 'Not Valid'"),
        (Decision.allow("ok").code(""), "code ''"),
        (Decision.allow("ok").code("a" * 65), "is not 1 to 64"),
        (Decision.allow("ok").charge("spend", -1), "is not finite and >= 0"),
        (Decision.allow("ok").charge("spend", math.nan), "is not finite and >= 0"),
        (Decision.allow("ok").charge("spend", math.inf), "is not finite and >= 0"),
        (Decision.allow("ok").charge("", 1), "is not 1 to 128 bytes"),
        (Decision.allow("ok").charge("c" * 129, 1), "is not 1 to 128 bytes"),
        (Decision("allow", "ok"), "is not an Outcome"),
    ],
)
def test_limits(decision, problem):
    with pytest.raises(InvalidDecision, match=problem):
        decision.validate()


def test_too_many_codes_and_charges():
    d = Decision.allow("ok")
    for i in range(33):
        d.code(f"c{i}").charge(f"c{i}", 1)
    with pytest.raises(InvalidDecision, match="33 codes, over 32; 33 charges, over 32"):
        d.validate()
