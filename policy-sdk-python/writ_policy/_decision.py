"""The decision a policy returns, and its builders."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from enum import Enum

# The contract's limits (wit/policy.wit, record `decision`).
MAX_REASON_BYTES = 4096
MAX_CODES = 32
MAX_CHARGES = 32
MAX_COUNTER_BYTES = 128
_CODE = re.compile(r"[a-z0-9_.\-]{1,64}")


class Outcome(Enum):
    """What the gateway should do with a call."""

    #: Let the call go ahead.
    ALLOW = "allow"
    #: Refuse the call.
    BLOCK = "block"
    #: Hold the call until a human reviewer approves or rejects it.
    ESCALATE = "escalate"


@dataclass(frozen=True)
class Charge:
    """An amount added to a named usage counter if, and only if, the call goes ahead."""

    #: The counter's name, e.g. ``spend:GBP`` (1 to 128 bytes).
    counter: str
    #: The amount: finite and not negative, or the gateway blocks the call as invalid.
    amount: float


class InvalidDecision(ValueError):
    """A decision breaks the contract's limits; the gateway would block the call with code
    ``policy_invalid_result``. Raised by :meth:`Decision.validate`."""


@dataclass
class Decision:
    """A policy's answer for one call.

    Make one with :meth:`allow`, :meth:`block` or :meth:`escalate`, then add codes and
    charges; each adder returns the decision, so they chain::

        Decision.escalate("amount over 500").code("amount_over_limit").charge("spend:GBP", 800)

    Limits, beyond which the gateway blocks the call with code ``policy_invalid_result``:
    ``reason`` at most 4096 bytes (UTF-8); at most 32 codes, each 1 to 64 characters of
    ``a-z``, ``0-9``, ``_``, ``.`` or ``-``; at most 32 charges, each counter 1 to 128 bytes,
    each amount finite and not negative. :meth:`validate` checks them.
    """

    #: Allow, block or escalate.
    outcome: Outcome
    #: Human-readable explanation, shown to agents and reviewers.
    reason: str
    #: Machine-readable codes, e.g. ``amount_over_limit``.
    codes: list[str] = field(default_factory=list)
    #: Recorded when the call is allowed, or when a human later approves it.
    charges: list[Charge] = field(default_factory=list)

    @classmethod
    def allow(cls, reason: str) -> Decision:
        """Lets the call go ahead."""
        return cls(Outcome.ALLOW, reason)

    @classmethod
    def block(cls, reason: str) -> Decision:
        """Refuses the call."""
        return cls(Outcome.BLOCK, reason)

    @classmethod
    def escalate(cls, reason: str) -> Decision:
        """Holds the call for a human reviewer."""
        return cls(Outcome.ESCALATE, reason)

    def code(self, code: str) -> Decision:
        """Adds a machine-readable code; returns this decision."""
        self.codes.append(code)
        return self

    def charge(self, counter: str, amount: float) -> Decision:
        """Adds a charge to ``counter``, recorded only if the call goes ahead; returns this
        decision."""
        self.charges.append(Charge(counter, float(amount)))
        return self

    def is_allow(self) -> bool:
        """Whether the outcome is :attr:`Outcome.ALLOW`."""
        return self.outcome is Outcome.ALLOW

    def is_block(self) -> bool:
        """Whether the outcome is :attr:`Outcome.BLOCK`."""
        return self.outcome is Outcome.BLOCK

    def is_escalate(self) -> bool:
        """Whether the outcome is :attr:`Outcome.ESCALATE`."""
        return self.outcome is Outcome.ESCALATE

    def has_code(self, code: str) -> bool:
        """Whether the decision carries ``code``."""
        return code in self.codes

    def validate(self) -> Decision:
        """Checks the contract's limits; returns this decision.

        :func:`~writ_policy.policy` runs it on every decision in native tests, so that a test
        fails where the gateway would block the call. In a component the gateway checks.

        Raises:
            InvalidDecision: naming every limit broken.
        """
        problems = []
        if not isinstance(self.outcome, Outcome):
            problems.append(f"outcome {self.outcome!r} is not an Outcome")
        if not isinstance(self.reason, str):
            problems.append(f"reason {self.reason!r} is not a string")
        elif len(self.reason.encode()) > MAX_REASON_BYTES:
            problems.append(f"reason is over {MAX_REASON_BYTES} bytes")
        if len(self.codes) > MAX_CODES:
            problems.append(f"{len(self.codes)} codes, over {MAX_CODES}")
        problems += [
            f"code {c!r} is not 1 to 64 of a-z 0-9 _ . -"
            for c in self.codes
            if not (isinstance(c, str) and _CODE.fullmatch(c))
        ]
        if len(self.charges) > MAX_CHARGES:
            problems.append(f"{len(self.charges)} charges, over {MAX_CHARGES}")
        for c in self.charges:
            if not 1 <= len(c.counter.encode()) <= MAX_COUNTER_BYTES:
                problems.append(f"counter {c.counter!r} is not 1 to {MAX_COUNTER_BYTES} bytes")
            if not (math.isfinite(c.amount) and c.amount >= 0):
                problems.append(f"charge to {c.counter!r} of {c.amount} is not finite and >= 0")
        if problems:
            raise InvalidDecision("invalid decision: " + "; ".join(problems))
        return self
