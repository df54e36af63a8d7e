"""Every bad input of the registry raises its error, naming the argument."""

import re

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jaxtyping
import numpy as np
import pytest

import scoreflow as sf
from scoreflow.solve import UniformGrid

from .bad_input_registry import ROWS, BadInput, NaNScore

VP = sf.VPSDE()

# The public namespaces the table must cover.
NAMESPACES = (
    "sde",
    "analytic",
    "solve",
    "losses",
    "models",
    "data",
    "guidance",
    "metrics",
    "bijections",
    "nn",
    "train",
    "cli",
)


@pytest.fixture
def no_runtime_typechecks():
    # Users run without jaxtyping's runtime checks, which under pytest would refuse many
    # of these calls first (a TypeCheckError) and hide scoreflow's own message.
    before = jaxtyping.config.jaxtyping_disable
    jaxtyping.config.update("jaxtyping_disable", True)
    yield
    jaxtyping.config.update("jaxtyping_disable", before)


@pytest.mark.parametrize("case", ROWS, ids=[row.id for row in ROWS])
def test_bad_input(case: BadInput, no_runtime_typechecks):
    with pytest.raises(case.error) as info:
        case.call()
    message = str(info.value)
    assert re.search(case.match, message), f"{case.id}: {message!r} lacks {case.match!r}"


def test_registry_covers_the_api():
    ids = [row.id for row in ROWS]
    assert len(ids) == len(set(ids)), "row ids must be unique"
    assert len(ROWS) >= 100
    covered = {row.namespace for row in ROWS}
    assert set(NAMESPACES) <= covered, f"no rows for {set(NAMESPACES) - covered}"
    assert covered <= set(NAMESPACES), f"unknown namespaces {covered - set(NAMESPACES)}"


# The silent classes the registry cannot express as an error: what a caller who asks
# for no exception gets, and checks that hold under a trace.


def test_nonfinite_fixed_grid_solve_is_not_successful():
    res = sf.sample(
        VP,
        NaNScore(VP),
        (2, 2),
        solver=dfx.Euler(),
        grid=UniformGrid(2),
        denoise=False,
        throw=False,
        key=jr.key(0),
    )
    assert res.result == dfx.RESULTS.nonfinite


def test_nonfinite_fixed_step_likelihood_is_not_successful():
    res = sf.solve.log_likelihood(
        VP,
        NaNScore(VP),
        jnp.zeros((2, 2)),
        solver=dfx.Euler(),
        stepsize_controller=dfx.ConstantStepSize(),
        dt0=0.5,
        throw=False,
    )
    assert res.result == dfx.RESULTS.nonfinite


def test_nonfinite_twisted_smc_is_not_successful():
    post = sf.guidance.PosteriorSampling(NaNScore(VP), jnp.array([True, False]), jnp.zeros(2))
    res = sf.guidance.twisted_smc(
        post, 4, grid=sf.solve.UniformGrid(2), throw=False, key=jax.random.key(0)
    )
    assert res.result == dfx.RESULTS.nonfinite


def test_traced_grid_is_checked_at_run_time():
    # Under the caller's jit a CustomGrid's times are traced: the range check moves to
    # run time (equinox.error_if) instead of disappearing.
    model = sf.GaussianMixture(jnp.ones(1), jnp.zeros((1, 2)), jnp.ones((1, 2))).noised(VP)

    @eqx.filter_jit
    def solve(ts):
        grid = sf.solve.CustomGrid(ts)
        return sf.solve.solve_probability_flow(VP, model, jnp.zeros((2, 2)), grid=grid).samples

    assert jnp.all(jnp.isfinite(solve(jnp.array([1.0, 0.5, 0.01]))))
    with pytest.raises(eqx.EquinoxRuntimeError, match="`grid` must lie in the SDE's range"):
        solve(jnp.array([2.0, 0.5, 0.01])).block_until_ready()


def test_legacy_keys_are_accepted():
    # jaxtyping's PRNGKeyArray, the annotation of every `key`, includes the raw uint32
    # keys of `jax.random.PRNGKey`; they keep working (new-style keys are the convention).
    mixture = sf.GaussianMixture(jnp.ones(1), jnp.zeros((1, 2)), jnp.ones((1, 2)))
    new, old = mixture.sample(3, key=jr.key(0)), mixture.sample(3, key=jr.PRNGKey(0))
    np.testing.assert_array_equal(np.asarray(new), np.asarray(old))


def test_parameter_checks_leave_traced_mixtures_alone():
    # NaN means are refused when concrete; a mixture built under jit is not inspected.
    @jax.jit
    def log_prob(means):
        return sf.GaussianMixture(jnp.ones(1), means, jnp.ones((1, 2))).log_prob(jnp.zeros(2))

    assert jnp.isnan(log_prob(jnp.full((1, 2), jnp.nan)))
    assert jnp.isfinite(log_prob(jnp.zeros((1, 2))))
