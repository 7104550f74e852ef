import sys

import pytest

from writ_policy import (
    PANIC_LOG_PREFIX,
    ArgumentError,
    Decision,
    InvalidDecision,
    Level,
    ToolCall,
    Window,
    log,
    policy,
    usage,
)
from writ_policy.testing import FakeHost


def small_payments(call: ToolCall) -> Decision:
    """The package docstring's example."""
    if call.action != "payments.initiate":
        return Decision.block("only payments are allowed").code("action_not_allowed")
    try:
        amount = call.arg("amount", type=float)
    except ArgumentError:
        return Decision.block("amount must be a number").code("invalid_arguments")
    if call.usage("spend", Window.SESSION) + amount > 100:
        return Decision.escalate("session spend over 100").code("session_cap")
    return Decision.allow("small payment").charge("spend", amount)


def test_a_policy_runs_natively(as_policy):
    evaluate = as_policy(small_payments)
    call = ToolCall.build(
        "payments.initiate", arguments={"amount": 30}, usage={("spend", Window.SESSION): 80.0}
    )
    d = evaluate(call)
    assert d.is_escalate() and d.codes == ["session_cap"]
    d = evaluate(ToolCall.build("payments.initiate", arguments={"amount": 30}))
    assert d.is_allow() and d.charges[0].amount == 30.0
    assert evaluate(ToolCall.build("payments.initiate", arguments={"amount": "x"})).is_block()
    assert evaluate.__name__ == "small_payments"


def test_policy_defines_witworld_in_its_module(as_policy):
    evaluate = as_policy(small_payments)
    module = sys.modules[evaluate.__module__]
    assert isinstance(module.WitWorld, type)
    assert module.WitWorld.__module__ == module.__name__
    assert callable(module.WitWorld().evaluate)


def test_policy_refuses_a_second_export(as_policy):
    evaluate = as_policy(small_payments)

    def other(call):
        return Decision.allow("other")

    other.__module__ = evaluate.__module__
    with pytest.raises(RuntimeError, match="use @policy once"):
        policy(other)


def test_log_and_usage_reach_the_calls_host(as_policy):
    def evaluate(call):
        log.debug("d")
        log.info("i")
        log.warn("w")
        log.error("e")
        log(Level.INFO, f"spend {usage('spend', Window.DAY)}")
        return Decision.allow("ok")

    host = FakeHost(usage={("spend", Window.DAY): 12.5})
    as_policy(evaluate)(ToolCall.build("x", host=host))
    assert host.logs == [
        (Level.DEBUG, "d"),
        (Level.INFO, "i"),
        (Level.WARN, "w"),
        (Level.ERROR, "e"),
        (Level.INFO, "spend 12.5"),
    ]
    assert host.messages(Level.INFO) == ["i", "spend 12.5"]


def test_outside_an_evaluation_log_goes_to_stderr_and_usage_refuses(capsys):
    log.warn("loose")
    assert "[WARN] loose" in capsys.readouterr().err
    with pytest.raises(RuntimeError, match="outside an evaluation"):
        usage("spend", Window.SESSION)


def test_an_uncaught_exception_is_logged_and_raised(as_policy):
    def evaluate(call):
        raise KeyError("boom")

    host = FakeHost()
    with pytest.raises(KeyError, match="boom"):
        as_policy(evaluate)(ToolCall.build("x", host=host))
    [(level, message)] = host.logs
    assert level is Level.ERROR
    assert message.startswith(PANIC_LOG_PREFIX + "KeyError: 'boom' (at ")
    assert message.endswith("in evaluate)")


def test_an_argument_error_propagates(as_policy):
    def evaluate(call):
        return Decision.allow(str(call.arg("amount", type=float)))

    with pytest.raises(ArgumentError, match="argument `amount` is missing"):
        as_policy(evaluate)(ToolCall.build("x"))


def test_a_policy_must_return_a_decision(as_policy):
    with pytest.raises(TypeError, match="must return a Decision"):
        as_policy(lambda call: "allow")(ToolCall.build("x"))


def test_decisions_are_checked_natively(as_policy):
    evaluate = as_policy(lambda call: Decision.allow("x" * 5000))
    with pytest.raises(InvalidDecision, match="reason is over 4096 bytes"):
        evaluate(ToolCall.build("x"))
