"""The tool call a policy evaluates, and how native tests make one."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Mapping, TypeVar, overload

from ._host import Host, Window

T = TypeVar("T")


@dataclass(frozen=True)
class Target:
    """The downstream HTTP request a tool call resolves to, from the tenant's tool catalog."""

    #: The downstream service, e.g. ``github``.
    service: str
    #: HTTP method, upper case.
    method: str
    #: The fully resolved URL, arguments substituted.
    url: str
    #: Marked destructive in the tenant's tool catalog (e.g. a POST that moves money).
    destructive: bool


class ArgumentError(ValueError):
    """An argument is missing or not of the asked type, or the arguments or context are not a
    JSON object.

    Uncaught, it fails the evaluation like any other exception: the gateway blocks the call
    with code ``policy_trap`` and this message in the reason. Catch it to answer otherwise.
    """

    def __init__(self, message: str, name: str | None = None) -> None:
        super().__init__(message)
        #: The argument's name, or ``None`` when the whole arguments or context are at fault.
        self.name = name


# The Python types `ToolCall.arg(type=...)` accepts, each with the JSON values it takes.
_JSON_TYPES: dict[type, tuple[tuple[type, ...], str]] = {
    float: ((int, float), "a number"),
    int: ((int,), "an integer"),
    str: ((str,), "a string"),
    bool: ((bool,), "a boolean"),
    dict: ((dict,), "an object"),
    list: ((list,), "an array"),
}


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    for kinds, name in _JSON_TYPES.values():
        if isinstance(value, kinds):
            return name
    return type(value).__name__


def _parse_object(text: str, subject: str) -> dict[str, Any]:
    """Parses ``text`` as a JSON object; ``subject`` ("arguments are") starts the errors."""
    try:
        value = json.loads(text)
    except ValueError as e:
        raise ArgumentError(f"{subject} not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise ArgumentError(f"{subject} not a JSON object")
    return value


class _Required:
    def __repr__(self) -> str:
        return "<required>"


_REQUIRED: Any = _Required()


class ToolCall:
    """A tool call that an agent asks to perform.

    The SDK makes one for every call the gateway sends; a native test makes one with
    :meth:`ToolCall.build`.
    """

    def __init__(
        self,
        *,
        action: str,
        arguments_json: str,
        context_json: str,
        agent_id: str,
        session_id: str,
        tenant_id: str,
        target: Target | None,
        timestamp_ms: int,
        host: Host,
    ) -> None:
        #: The logical action, e.g. ``payments.initiate``.
        self.action = action
        #: The arguments as JSON text (an object).
        self.arguments_json = arguments_json
        #: The caller-supplied context as JSON text (an object, ``{}`` when none).
        self.context_json = context_json
        #: The agent making the call, as its request names it: checked by the gateway when the
        #: agent's key is bound to an agent id, otherwise the caller's word. Key per-caller
        #: limits by :attr:`key_id`.
        self.agent_id = agent_id
        #: The session the call belongs to, as named by the agent: a new session is the
        #: agent's choice, so per-session limits are not per-caller limits.
        self.session_id = session_id
        #: The tenant whose policy this is.
        self.tenant_id = tenant_id
        #: The downstream HTTP request, when the tenant's tool catalog knows the call.
        self.target = target
        #: Milliseconds since the Unix epoch, stamped by the gateway.
        self.timestamp_ms = timestamp_ms
        self._host = host

    @classmethod
    def build(
        cls,
        action: str,
        *,
        arguments: Mapping[str, Any] | None = None,
        arguments_json: str | None = None,
        context: Mapping[str, Any] | None = None,
        agent_id: str = "test-agent",
        session_id: str = "test-session",
        tenant_id: str = "test-tenant",
        target: Target | None = None,
        timestamp_ms: int = 0,
        usage: Mapping[tuple[str, Window], float] | None = None,
        key_id: str | None = None,
        host: Host | None = None,
    ) -> ToolCall:
        """Makes a call for a native test.

        Arguments and context default to ``{}``; ``arguments_json`` sets the arguments as raw
        text instead, to test malformed input. ``usage`` fixes what :meth:`usage` answers
        (unset counters read 0) and ``key_id`` what :attr:`key_id` answers (default
        ``key_test``): both go to a fresh :class:`~writ_policy.testing.FakeHost`. To read the
        lines the policy logs, or share counters between calls, pass your own ``host``
        instead.
        """
        from .testing import FakeHost

        if arguments is not None and arguments_json is not None:
            raise TypeError("pass arguments or arguments_json, not both")
        if host is not None and (usage is not None or key_id is not None):
            raise TypeError("pass usage and key_id to the FakeHost, not beside it")
        if host is None:
            host = FakeHost(usage=usage, key_id=key_id if key_id is not None else "key_test")
        if arguments_json is None:
            arguments_json = json.dumps(arguments if arguments is not None else {})
        return cls(
            action=action,
            arguments_json=arguments_json,
            context_json=json.dumps(context if context is not None else {}),
            agent_id=agent_id,
            session_id=session_id,
            tenant_id=tenant_id,
            target=target,
            timestamp_ms=timestamp_ms,
            host=host,
        )

    @cached_property
    def arguments(self) -> dict[str, Any]:
        """The arguments, parsed (once) from :attr:`arguments_json`.

        Raises:
            ArgumentError: the arguments are not a JSON object.
        """
        return _parse_object(self.arguments_json, "arguments are")

    @cached_property
    def context(self) -> dict[str, Any]:
        """The caller-supplied context, parsed (once) from :attr:`context_json`.

        Raises:
            ArgumentError: the context is not a JSON object.
        """
        return _parse_object(self.context_json, "context is")

    @overload
    def arg(self, name: str, default: Any = ..., *, type: None = None) -> Any: ...

    @overload
    def arg(self, name: str, default: T = ..., *, type: type[T]) -> T: ...

    def arg(self, name: str, default: Any = _REQUIRED, *, type: type | None = None) -> Any:
        """One argument by name.

        ``type`` checks the JSON value's kind: ``float`` takes any number (an integer becomes
        a float), ``int`` an integer, and ``str``, ``bool``, ``dict`` and ``list`` a string,
        boolean, object or array. Without ``type`` the value comes back as parsed.
        ``default`` answers for an absent argument only: a JSON ``null`` counts as present,
        and is of no ``type``.

        Raises:
            ArgumentError: the arguments are not a JSON object, the argument is absent and
                there is no ``default``, or it is not of ``type``.
        """
        if type is not None and type not in _JSON_TYPES:
            names = ", ".join(t.__name__ for t in _JSON_TYPES)
            raise TypeError(f"arg(type=...) takes one of {names}, not {type!r}")
        arguments = self.arguments
        if name not in arguments:
            if default is _REQUIRED:
                raise ArgumentError(f"argument `{name}` is missing", name)
            return default
        value = arguments[name]
        if type is None:
            return value
        kinds, expected = _JSON_TYPES[type]
        # bool is a subclass of int in Python, but not a number in JSON.
        if not isinstance(value, kinds) or (isinstance(value, bool) and type is not bool):
            raise ArgumentError(
                f"argument `{name}`: expected {expected}, got {_json_kind(value)}", name
            )
        return float(value) if type is float else value

    @property
    def key_id(self) -> str:
        """The id of the API key that made the call (``key_…``), as the gateway authenticated
        it. The caller cannot choose it: count per-caller usage under a counter named after it.
        """
        return self._host.key_id()

    def usage(self, counter: str, window: Window) -> float:
        """Sum of the charges recorded against ``counter`` in the current ``window``, for this
        tenant (for :attr:`Window.SESSION`, for this call's session). A counter never charged
        reads 0.

        The gateway remembers what a policy read: if a concurrent call changes a counter this
        evaluation read before this call's charges are committed, the call is evaluated again.
        """
        return self._host.usage(counter, window)

    def __repr__(self) -> str:
        return (
            f"ToolCall(action={self.action!r}, arguments_json={self.arguments_json!r}, "
            f"agent_id={self.agent_id!r}, session_id={self.session_id!r}, "
            f"tenant_id={self.tenant_id!r}, target={self.target!r}, "
            f"timestamp_ms={self.timestamp_ms})"
        )
