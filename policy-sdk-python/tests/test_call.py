import pytest

from writ_policy import ArgumentError, Target, ToolCall, Window
from writ_policy.testing import FakeHost


def call(**arguments):
    return ToolCall.build("payments.initiate", arguments=arguments)


def test_build_defaults():
    c = ToolCall.build("email.send")
    assert c.action == "email.send"
    assert c.arguments == {}
    assert c.context == {}
    assert (c.agent_id, c.session_id, c.tenant_id) == ("test-agent", "test-session", "test-tenant")
    assert c.target is None
    assert c.timestamp_ms == 0
    assert c.key_id == "key_test"


def test_build_sets_every_field():
    target = Target("bank", "POST", "https://bank.example/pay", True)
    c = ToolCall.build(
        "payments.initiate",
        arguments={"amount": 5},
        context={"ticket": "T-1"},
        agent_id="agent-7",
        session_id="s-9",
        tenant_id="acme",
        target=target,
        timestamp_ms=1_700_000_000_000,
        key_id="key_alice",
    )
    assert c.arguments == {"amount": 5}
    assert c.arguments_json == '{"amount": 5}'
    assert c.context == {"ticket": "T-1"}
    assert c.context_json == '{"ticket": "T-1"}'
    assert (c.agent_id, c.session_id, c.tenant_id) == ("agent-7", "s-9", "acme")
    assert c.target == target and c.target.destructive
    assert c.timestamp_ms == 1_700_000_000_000
    assert c.key_id == "key_alice"


def test_build_refuses_conflicting_options():
    with pytest.raises(TypeError):
        ToolCall.build("x", arguments={}, arguments_json="{}")
    with pytest.raises(TypeError):
        ToolCall.build("x", host=FakeHost(), key_id="key_other")
    with pytest.raises(TypeError):
        ToolCall.build("x", host=FakeHost(), usage={})


def test_arguments_are_parsed_once():
    c = call(amount=5)
    assert c.arguments is c.arguments


def test_arg_returns_the_parsed_value():
    c = call(amount=5, currency="GBP", meta={"a": [1]}, note=None)
    assert c.arg("amount") == 5
    assert c.arg("meta") == {"a": [1]}
    assert c.arg("note") is None


def test_missing_arg_raises_unless_defaulted():
    c = call()
    with pytest.raises(ArgumentError, match="argument `amount` is missing") as e:
        c.arg("amount")
    assert e.value.name == "amount"
    assert isinstance(e.value, ValueError)
    assert c.arg("amount", 0) == 0
    assert c.arg("amount", None, type=float) is None


def test_typed_args():
    c = call(i=5, f=2.5, s="x", b=True, d={}, l=[])
    assert c.arg("i", type=float) == 5.0 and isinstance(c.arg("i", type=float), float)
    assert c.arg("f", type=float) == 2.5
    assert c.arg("i", type=int) == 5
    assert c.arg("s", type=str) == "x"
    assert c.arg("b", type=bool) is True
    assert c.arg("d", type=dict) == {}
    assert c.arg("l", type=list) == []


@pytest.mark.parametrize(
    ("value", "kind", "message"),
    [
        ("fifty", float, "expected a number, got a string"),
        (None, float, "expected a number, got null"),
        (True, float, "expected a number, got a boolean"),
        (True, int, "expected an integer, got a boolean"),
        (2.5, int, "expected an integer, got a number"),
        (5, str, "expected a string, got an integer"),
        ([1], dict, "expected an object, got an array"),
        ({}, list, "expected an array, got an object"),
        (1, bool, "expected a boolean, got an integer"),
    ],
)
def test_mistyped_arg_raises(value, kind, message):
    with pytest.raises(ArgumentError, match=f"argument `v`: {message}"):
        call(v=value).arg("v", type=kind)


def test_default_does_not_cover_a_mistyped_arg():
    with pytest.raises(ArgumentError):
        call(v=None).arg("v", 0.0, type=float)


def test_unsupported_type_is_a_programming_error():
    with pytest.raises(TypeError, match="takes one of"):
        call(v=1).arg("v", type=tuple)


@pytest.mark.parametrize(
    ("text", "message"),
    [("[1, 2]", "arguments are not a JSON object"), ("{", "arguments are not valid JSON")],
)
def test_arguments_that_are_not_an_object(text, message):
    c = ToolCall.build("x", arguments_json=text)
    assert c.arguments_json == text
    with pytest.raises(ArgumentError, match=message):
        c.arguments
    with pytest.raises(ArgumentError, match=message):
        c.arg("amount", 0)


def test_usage_reads_fixed_counters():
    c = ToolCall.build(
        "x", usage={("spend", Window.SESSION): 80.0, ("spend", Window.DAY): 300.0}
    )
    assert c.usage("spend", Window.SESSION) == 80.0
    assert c.usage("spend", Window.DAY) == 300.0
    assert c.usage("spend", Window.HOUR) == 0.0
    assert c.usage("other", Window.ALL_TIME) == 0.0


def test_a_shared_host_sees_counter_changes():
    host = FakeHost(key_id="key_bob")
    c = ToolCall.build("x", host=host)
    assert c.usage("spend", Window.MINUTE) == 0.0
    host.counters[("spend", Window.MINUTE)] = 2.0
    assert c.usage("spend", Window.MINUTE) == 2.0
    assert c.key_id == "key_bob"


def test_usage_wants_a_window():
    with pytest.raises(TypeError):
        ToolCall.build("x").usage("spend", "session")


def test_context_that_is_not_an_object():
    c = ToolCall(
        action="x",
        arguments_json="{}",
        context_json="[]",
        agent_id="a",
        session_id="s",
        tenant_id="t",
        target=None,
        timestamp_ms=0,
        host=FakeHost(),
    )
    with pytest.raises(ArgumentError, match="context is not a JSON object"):
        c.context
