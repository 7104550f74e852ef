"""The host a policy borrows while it evaluates one call: usage counters, the key id, the log.

In a component the host is the gateway, reached through the ``writ:policy/host`` import.
Natively (under pytest) it is the :class:`writ_policy.testing.FakeHost` of the call being
evaluated.
"""

from __future__ import annotations

import contextvars
import sys
from enum import Enum
from typing import Protocol


class Window(Enum):
    """A window over which :meth:`ToolCall.usage` sums a counter's charges.

    The minute, hour and day are fixed UTC windows containing the call's timestamp.
    """

    #: The call's session.
    SESSION = "session"
    #: The current UTC minute.
    MINUTE = "minute"
    #: The current UTC hour.
    HOUR = "hour"
    #: The current UTC day.
    DAY = "day"
    #: Everything ever charged to the counter by this tenant.
    ALL_TIME = "all-time"


class Level(Enum):
    """Severity of a :data:`log` line."""

    DEBUG = "debug"
    INFO = "info"
    WARN = "warn"
    ERROR = "error"


class Host(Protocol):
    """What a policy may ask of its host: the gateway in a component, a fake in tests."""

    def usage(self, counter: str, window: Window) -> float: ...

    def key_id(self) -> str: ...

    def log(self, level: Level, message: str) -> None: ...


# The host of the call being evaluated, set by `writ_policy.policy` for the call's duration.
_current: contextvars.ContextVar[Host | None] = contextvars.ContextVar("writ_host", default=None)

# In a component `writ_policy._wit` makes the gateway the host at import; natively there is
# none outside an evaluation.
_default: Host | None = None


def set_default(host: Host) -> None:
    global _default
    _default = host


def activate(host: Host) -> contextvars.Token[Host | None]:
    return _current.set(host)


def deactivate(token: contextvars.Token[Host | None]) -> None:
    _current.reset(token)


def current() -> Host | None:
    host = _current.get()
    return host if host is not None else _default


def usage(counter: str, window: Window) -> float:
    """Sum of the charges recorded against ``counter`` in the current ``window``, for this tenant
    (for :attr:`Window.SESSION`, for this call's session). A counter never charged reads 0.

    The same as :meth:`ToolCall.usage`, for code that has no call at hand.

    Raises:
        RuntimeError: natively, outside an evaluation (there is no host to ask).
    """
    host = current()
    if host is None:
        raise RuntimeError(
            "usage() was called outside an evaluation; natively, call the policy with a "
            "ToolCall made by ToolCall.build(...)"
        )
    return host.usage(counter, window)


class _Log:
    """Writes a line to the gateway's log, tagged with the tenant and policy.

    ``log(Level.INFO, "...")`` or ``log.info("...")``. The gateway keeps at most 64 lines per
    evaluation, each cut to 2048 bytes. Natively the line is captured by the call's
    :class:`~writ_policy.testing.FakeHost`, or, outside an evaluation, goes to standard error.
    """

    def __call__(self, level: Level, message: str) -> None:
        host = current()
        if host is None:
            print(f"[{level.name}] {message}", file=sys.stderr)
        else:
            host.log(level, message)

    def debug(self, message: str) -> None:
        """Detail for policy authors."""
        self(Level.DEBUG, message)

    def info(self, message: str) -> None:
        """Normal operation."""
        self(Level.INFO, message)

    def warn(self, message: str) -> None:
        """Something unexpected that the policy handled."""
        self(Level.WARN, message)

    def error(self, message: str) -> None:
        """Something the policy could not handle."""
        self(Level.ERROR, message)


log = _Log()
