"""The output heads: normalised over their support, sampled with their own probabilities,
equal to the closed forms, and finite (with finite gradients) at extreme parameters."""

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.scipy.stats as jstats
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scoreflow import nn

_params = st.floats(-30.0, 30.0, allow_nan=False, width=64)


@pytest.mark.parametrize("num_levels,num_components", [(2, 1), (17, 3), (256, 2)])
def test_discretised_logistic_mixture_sums_to_one(num_levels, num_components):
    # Any parameters, scales from the clipped floor e^-7 to e^30: the L probabilities of
    # the levels sum to one, and every log-probability and its gradient is finite.
    head = nn.DiscretisedLogisticMixture(num_levels, num_components)
    levels = jnp.arange(num_levels)

    def log_p(p):
        return head.log_prob(jnp.broadcast_to(p, (num_levels, p.size)), levels)

    log_p_and_grad = jax.jit(lambda p: (log_p(p), jax.jacobian(log_p)(p)))

    @settings(max_examples=30, deadline=None)
    @given(hnp.arrays(np.float64, (head.num_params,), elements=_params))
    def check(params):
        lp, grads = log_p_and_grad(jnp.asarray(params))
        assert jnp.all(jnp.isfinite(lp)) and jnp.all(jnp.isfinite(grads))
        np.testing.assert_allclose(jnp.exp(jax.nn.logsumexp(lp)), 1.0, rtol=1e-12)

    check()


@settings(max_examples=25, deadline=None)
@given(hnp.arrays(np.float64, (17,), elements=_params))
def test_categorical_sums_to_one(logits):
    num_levels = 17
    head = nn.Categorical(num_levels)
    logits = jnp.asarray(logits)
    levels = jnp.arange(num_levels)
    lp = head.log_prob(jnp.broadcast_to(logits, (num_levels, num_levels)), levels)
    np.testing.assert_allclose(jnp.exp(jax.nn.logsumexp(lp)), 1.0, rtol=1e-12)
    np.testing.assert_allclose(lp, jax.nn.log_softmax(logits), rtol=1e-12)


def test_discretised_logistic_one_component_is_the_logistic_cdf_difference():
    # One component, by the logistic CDF directly: interior bins are differences of the
    # CDF at the bin edges, edge bins open.
    head = nn.DiscretisedLogisticMixture(5, 1)
    mean, log_scale = 0.3, -1.2
    params = jnp.broadcast_to(jnp.array([0.0, mean, log_scale]), (5, 3))
    edges = jnp.array([-jnp.inf, -0.75, -0.25, 0.25, 0.75, jnp.inf])
    cdf = jax.nn.sigmoid((edges - mean) / jnp.exp(log_scale))
    np.testing.assert_allclose(jnp.exp(head.log_prob(params, jnp.arange(5))), jnp.diff(cdf))


@pytest.mark.parametrize(
    "head",
    [nn.Categorical(5), nn.DiscretisedLogisticMixture(5, 3)],
    ids=["categorical", "logistic_mixture"],
)
def test_samples_follow_the_probabilities(head):
    params = jr.normal(jr.key(0), (head.num_params,))
    n = 40_000
    draws = head.sample(jnp.broadcast_to(params, (n, head.num_params)), key=jr.key(1))
    assert draws.shape == (n,) and jnp.issubdtype(draws.dtype, jnp.integer)
    probs = jnp.exp(head.log_prob(jnp.broadcast_to(params, (5, head.num_params)), jnp.arange(5)))
    counts = jnp.bincount(draws, length=5).astype(probs.dtype)
    # Each level's count within 5 binomial standard deviations.
    sd = jnp.sqrt(n * probs * (1 - probs))
    assert jnp.all(jnp.abs(counts - n * probs) < 5 * sd + 1)


def test_bernoulli_and_gaussian_are_the_closed_forms():
    logit = jnp.array([[-2.0], [0.5], [40.0]])
    x = jnp.array([1.0, 0.0, 1.0])
    p = jax.nn.sigmoid(logit[:, 0])
    expected = jnp.log(jnp.where(x == 1, p, 1 - p))
    np.testing.assert_allclose(nn.Bernoulli().log_prob(logit, x), expected, rtol=1e-6, atol=1e-15)

    head = nn.Gaussian(True, log_variance_bounds=(-3.0, 2.0))
    params = jnp.array([[0.2, -100.0], [0.2, 0.0], [0.2, 100.0]])
    log_var = head.log_variance(params)
    np.testing.assert_allclose(log_var, [-3.0, -0.5, 2.0])  # squashed into the bounds
    np.testing.assert_allclose(
        head.log_prob(params, jnp.ones(3)),
        jstats.norm.logpdf(1.0, 0.2, jnp.exp(0.5 * log_var)),
        rtol=1e-6,
    )
    fixed = nn.Gaussian(variance=0.25)
    np.testing.assert_allclose(
        fixed.log_prob(jnp.zeros((1, 1)), jnp.ones(1)), jstats.norm.logpdf(1.0, 0.0, 0.5)
    )


def test_check_data_refuses_traced_data_at_run_time():
    head = nn.Categorical(4)
    check = jax.jit(head.check_data)
    assert jnp.array_equal(check(jnp.array([0, 3])), jnp.array([0, 3]))
    with pytest.raises(Exception, match="pixel levels in 0..3"):
        jax.block_until_ready(check(jnp.array([4])))
