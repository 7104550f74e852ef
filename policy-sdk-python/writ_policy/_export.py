"""``@policy``: turns a function into the component's exported ``evaluate``."""

from __future__ import annotations

import functools
import sys
import traceback
from typing import Any, Callable

from . import _host, _wit
from ._call import ToolCall
from ._decision import Decision

#: How the error line logged for an uncaught exception starts. The gateway recognises it and
#: puts the line in the BLOCK's reason (the Rust SDK logs a panic the same way).
PANIC_LOG_PREFIX = "policy panicked: "

Evaluate = Callable[[ToolCall], Decision]


def _describe(error: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(error), error)).strip()
    frames = traceback.extract_tb(error.__traceback__)
    if frames:
        where = frames[-1]
        text += f" (at {where.filename}:{where.lineno} in {where.name})"
    return PANIC_LOG_PREFIX + text


def policy(evaluate: Evaluate) -> Evaluate:
    """Makes ``evaluate`` the policy: the function the gateway calls for every tool call.

    Use it once, in the app module given to ``componentize-py componentize``::

        from writ_policy import Decision, ToolCall, policy

        @policy
        def evaluate(call: ToolCall) -> Decision:
            return Decision.allow("ok")

    It defines ``WitWorld`` in that module, the class componentize-py looks for, so the module
    needs nothing else. The decorated function stays callable: a native test passes it a
    :meth:`ToolCall.build` call and gets the :class:`Decision` back.

    While ``evaluate`` runs, :data:`~writ_policy.log` and :func:`~writ_policy.usage` talk to
    the call's host. An exception it does not catch is logged (as an error line starting
    ``policy panicked:``) and raised again: in a component the instance traps and the gateway
    blocks the call with code ``policy_trap``, the logged line as its reason. Natively the
    decision is also checked against the contract's limits (:meth:`Decision.validate`).
    """
    module = sys.modules[evaluate.__module__]
    if hasattr(module, "WitWorld"):
        raise RuntimeError(f"{module.__name__} already defines WitWorld: use @policy once")

    @functools.wraps(evaluate)
    def run(call: ToolCall) -> Decision:
        token = _host.activate(call._host)
        try:
            decision = evaluate(call)
            if not isinstance(decision, Decision):
                raise TypeError(f"a policy must return a Decision, not {decision!r}")
            if not _wit.AVAILABLE:
                decision.validate()
            return decision
        except BaseException as e:
            call._host.log(_host.Level.ERROR, _describe(e))
            raise
        finally:
            _host.deactivate(token)

    class WitWorld(_wit.WorldBase):  # type: ignore[misc, valid-type]
        """The ``policy`` world's export, as componentize-py expects it."""

        def evaluate(self, call: Any) -> Any:
            return _wit.decision_to_wit(run(_wit.call_from_wit(call)))

    WitWorld.__module__ = module.__name__
    module.WitWorld = WitWorld  # type: ignore[attr-defined]
    return run
