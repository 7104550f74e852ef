"""Native testing: a fake host to run a policy under plain pytest.

:meth:`ToolCall.build <writ_policy.ToolCall.build>` gives every call a fresh
:class:`FakeHost` from its ``usage`` and ``key_id``. Make one yourself to read what the policy
logged, or to change counters between calls::

    host = FakeHost(usage={("spend", Window.SESSION): 80.0}, key_id="key_alice")
    decision = evaluate(ToolCall.build("payments.initiate", arguments={"amount": 30}, host=host))
    assert decision.is_escalate()
    assert (Level.INFO, "session spend 80.0") in host.logs
"""

from __future__ import annotations

import sys
from typing import Mapping

from ._host import Level, Window


class FakeHost:
    """Answers a policy's host requests from fixed values, and keeps what it logs."""

    def __init__(
        self,
        usage: Mapping[tuple[str, Window], float] | None = None,
        key_id: str = "key_test",
    ) -> None:
        #: What :meth:`usage` answers, by ``(counter, window)``; unset counters read 0.
        self.counters: dict[tuple[str, Window], float] = dict(usage or {})
        #: Every line logged, in order, as ``(level, message)``.
        self.logs: list[tuple[Level, str]] = []
        self._key_id = key_id

    def usage(self, counter: str, window: Window) -> float:
        if not isinstance(window, Window):
            raise TypeError(f"window must be a Window, not {window!r}")
        return self.counters.get((counter, window), 0.0)

    def key_id(self) -> str:
        return self._key_id

    def log(self, level: Level, message: str) -> None:
        self.logs.append((level, message))
        # pytest shows captured standard error when a test fails.
        print(f"[{level.name}] {message}", file=sys.stderr)

    def messages(self, level: Level | None = None) -> list[str]:
        """The logged messages, all or those of ``level``."""
        return [m for lvl, m in self.logs if level is None or lvl is level]
