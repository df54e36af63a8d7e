import os

import jax
import jax.random as jr
import pytest
from hypothesis import HealthCheck, settings

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

# A fixed, small set of shapes keeps hypothesis from recompiling on every example.
settings.register_profile(
    "default",
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile("ci", parent=settings.get_profile("default"), derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.fixture
def getkey():
    """Return a function that hands out fresh, deterministic PRNG keys."""
    state = {"key": jr.key(1234)}

    def _getkey():
        state["key"], sub = jr.split(state["key"])
        return sub

    return _getkey


def pytest_collection_modifyitems(config, items):
    """Run the tutorials (the longest tests) first, so xdist balances them across workers."""
    items.sort(key=lambda item: 0 if "test_tutorials.py" in item.nodeid else 1)
