import os
import shutil
import tempfile

# The suite is dominated by XLA compilation of many small programs, each run a few
# times, on a CPU shared by the xdist workers: compile effort costs more than it saves.
# - LLVM's optimisation passes: off (about a sixth of the suite's time).
# - The MLIR fusion emitters: the classic elemental emitters instead, which compile the
#   same fusions about twice as fast.
# - Code generation in one piece, not split into parallel chunks (the split only adds
#   work when the workers already use every core).
# The programs' semantics are unchanged (no fast-math); only their machine code differs.
# Set before JAX creates its CPU backend; a flag already in XLA_FLAGS is left alone.
_XLA_FLAGS = {
    "xla_backend_optimization_level": "0",
    "xla_cpu_use_fusion_emitters": "false",
    "xla_cpu_parallel_codegen_split_count": "1",
}
for _flag, _value in _XLA_FLAGS.items():
    if _flag not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" --{_flag}={_value}").strip()

import jax  # noqa: E402  (after XLA_FLAGS is set)
import jax.random as jr  # noqa: E402  (after XLA_FLAGS is set)
import pytest  # noqa: E402  (after XLA_FLAGS is set)
from hypothesis import HealthCheck, settings  # noqa: E402  (after XLA_FLAGS is set)

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


# One on-disk compilation cache for the whole run, shared by the xdist workers and the
# tutorials' kernels: they compile many identical programs (parameter initialisers of the
# same shapes, the same small ops), which then compile once instead of once per process.
# A fresh directory per run, removed at the end: no result depends on an earlier run.
_CACHE = "JAX_COMPILATION_CACHE_DIR"


def pytest_configure(config):
    if _CACHE not in os.environ:  # the controller (or a run without xdist)
        config._scoreflow_cache = os.environ[_CACHE] = tempfile.mkdtemp(prefix="scoreflow-jax-")
        os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    jax.config.update("jax_compilation_cache_dir", os.environ[_CACHE])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def pytest_unconfigure(config):
    made = getattr(config, "_scoreflow_cache", None)
    if made is not None:
        shutil.rmtree(made, ignore_errors=True)
        del os.environ[_CACHE]
