import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

import scoreflow as sf

from .helpers import SDES, case_a, case_b, full_cov_mixture

MIXTURES = {"case_a": case_a, "case_b": case_b, "full": full_cov_mixture}


@pytest.mark.parametrize("mix_name", MIXTURES)
@pytest.mark.parametrize("sde_name", SDES)
@settings(max_examples=10)
@given(u=st.floats(0.0, 1.0), seed=st.integers(0, 2**16))
def test_score_is_grad_log_prob(mix_name, sde_name, u, seed):
    sde = SDES[sde_name]()
    target = MIXTURES[mix_name]().noised(sde)
    t = jnp.asarray(sde.t_min + u * (sde.T - sde.t_min))
    score, grad, denoise, tweedie, alpha = _score_quantities(target, t, jax.random.key(seed))
    assert_allclose(score, grad, rtol=1e-8, atol=1e-10)
    assert_allclose(denoise, tweedie, rtol=1e-6, atol=1e-6 * float(1 / alpha))


@eqx.filter_jit
def _score_quantities(target, t, key):
    x = target.sample(t, 3, key=key)
    grad = jax.vmap(jax.grad(lambda y: target.log_prob(t, y)))(x)
    score = target.score(t, x)
    # Tweedie: E[x0 | x_t] = (x + sigma^2 score) / alpha.
    alpha, sigma = target.sde.marginal(t)
    tweedie = (x + sigma**2 * score) / alpha
    return score, grad, target.denoise(t, x), tweedie, alpha


@pytest.mark.parametrize("mix_name", MIXTURES)
def test_log_prob_at_zero_is_the_data_density(mix_name):
    mix = MIXTURES[mix_name]()
    sde = sf.VESDE()
    x = mix.sample(5, key=jax.random.key(0))
    # sigma_t -> 0 as t -> 0 for the VE kernel sigma^2 = sigma_min^2 (r^{2t} - 1).
    assert_allclose(mix.noised(sde).log_prob(0.0, x), mix.log_prob(x), rtol=1e-12)
    # Against a direct computation with scipy's multivariate normal.
    from scipy.stats import multivariate_normal

    covs = np.asarray(mix.full_covariances())
    dens = sum(
        float(w) * multivariate_normal(np.asarray(m), c).pdf(np.asarray(x))
        for w, m, c in zip(mix.weights, mix.means, covs)
    )
    assert_allclose(mix.log_prob(x), np.log(dens), rtol=1e-10)


def test_sample_moments(getkey):
    mix = full_cov_mixture()
    x = mix.sample(200000, key=getkey())
    assert_allclose(x.mean(0), mix.mean(), atol=0.03)
    assert_allclose(jnp.cov(x.T), mix.covariance(), atol=0.1)


def test_noisy_sample_moments(getkey):
    mix = case_a()
    sde = sf.VPSDE()
    t = 0.4
    x = mix.noised(sde).sample(t, 200000, key=getkey())
    alpha, sigma = sde.marginal(t)
    expected = alpha**2 * mix.covariance() + sigma**2 * jnp.eye(2)
    assert_allclose(jnp.cov(x.T), expected, rtol=0.02, atol=0.02)


def test_gaussian_is_closed_form():
    g = sf.Gaussian(jnp.asarray([1.0, -2.0]), jnp.asarray([[2.0, 0.5], [0.5, 1.0]]))
    sde = sf.VPSDE()
    t = 0.3
    alpha, sigma = sde.marginal(t)
    cov = alpha**2 * g.covariance() + sigma**2 * jnp.eye(2)
    x = jnp.asarray([0.1, 0.7])
    expected = -jnp.linalg.solve(cov, x - alpha * g.mean)
    assert_allclose(g.noised(sde).score(t, x), expected, rtol=1e-10)


@pytest.mark.parametrize(
    "args, name",
    [
        (([0.5, 0.5], [[0.0], [1.0]], [[1.0], [-1.0]]), "covariances"),
        (([0.5, 0.6], [[0.0], [1.0]], [[1.0], [1.0]]), "weights"),
        (([0.5, 0.5], [[0.0, 1.0]], [[1.0], [1.0]]), "means"),
        (([0.5, 0.5], [[0.0], [1.0]], [[1.0, 2.0, 3.0]]), "covariances"),
        (([[1.0]], [[0.0]], [[1.0]]), "weights"),
    ],
)
def test_bad_mixture(args, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        sf.GaussianMixture(*[jnp.asarray(a) for a in args])


def test_bad_event_shape():
    with pytest.raises(ValueError, match="`x` must have shape"):
        case_a().log_prob(jnp.zeros((4, 3)))
