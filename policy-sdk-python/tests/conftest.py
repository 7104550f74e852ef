import sys
import types
from itertools import count

import pytest

from writ_policy import policy

_modules = count()


@pytest.fixture
def as_policy():
    """Decorates a function with @policy as if it were alone in its own app module (@policy
    defines `WitWorld` in the function's module, once)."""
    made = []

    def make(evaluate):
        module = types.ModuleType(f"writ_test_app_{next(_modules)}")
        sys.modules[module.__name__] = module
        made.append(module.__name__)
        evaluate.__module__ = module.__name__
        return policy(evaluate)

    yield make
    for name in made:
        del sys.modules[name]
