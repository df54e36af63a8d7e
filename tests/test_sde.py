import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose

import scoreflow as sf

from .helpers import SDES, brownian_increment

fraction = st.floats(0.02, 0.98)


# Jitted, with the time an array: one compile per SDE, not one trace per example.
@eqx.filter_jit
def _generator(sde, t):
    dlog_alpha = jax.grad(lambda s: jnp.log(sde.marginal(s)[0]))(t)
    dvar = jax.grad(lambda s: sde.marginal(s)[1] ** 2)(t)
    _, sigma = sde.marginal(t)
    f = sde.drift_coefficient(t)
    return f, dlog_alpha, sde.diffusion(t) ** 2, dvar - 2 * f * sigma**2


@pytest.mark.parametrize("name", SDES)
@given(u=fraction)
def test_drift_and_diffusion_generate_the_marginal(name, u):
    # f = d log(alpha)/dt and g^2 = d sigma^2/dt - 2 f sigma^2 (the linear-SDE identity).
    sde = SDES[name]()
    t = jnp.asarray(sde.t_min + u * (sde.T - sde.t_min))
    f, dlog_alpha, g2, want_g2 = _generator(sde, t)
    assert_allclose(f, dlog_alpha, rtol=1e-10, atol=1e-12)
    assert_allclose(g2, want_g2, rtol=1e-9)


@eqx.filter_jit
def _log_snr_round_trip(sde, t):
    alpha, sigma = sde.marginal(t)
    return sde.t_from_log_snr(sde.log_snr(t)), sde.log_snr(t), jnp.log(alpha / sigma)


@pytest.mark.parametrize("name", SDES)
@given(u=fraction)
def test_log_snr_inverse(name, u):
    sde = SDES[name]()
    t = jnp.asarray(sde.t_min + u * (sde.T - sde.t_min))
    back, log_snr, want = _log_snr_round_trip(sde, t)
    assert_allclose(back, t, rtol=1e-10)
    assert_allclose(log_snr, want, rtol=1e-10)


@pytest.mark.parametrize("name", SDES)
def test_log_snr_decreases(name):
    sde = SDES[name]()
    ts = jnp.linspace(sde.t_min, sde.T, 200)
    assert bool(jnp.all(jnp.diff(jax.vmap(sde.log_snr)(ts)) < 0))


@pytest.mark.parametrize("name", SDES)
def test_forward_simulation_matches_marginal(name, getkey):
    # Many Euler–Maruyama paths of the forward SDE from two fixed points:
    # mean alpha_t x0 and variance sigma_t^2 within sampling error.
    sde = SDES[name]()
    n = 20000
    x0 = jnp.concatenate([jnp.full((n, 1), 1.5), jnp.full((n, 1), -0.5)], axis=1)
    t1 = 0.5 * sde.T
    ts = jnp.linspace(0.0, t1, 201)
    path = sf.solve.GridBrownianPath(ts, x0.shape, key=getkey())
    sol = dfx.diffeqsolve(
        sf.sde.forward_sde_terms(sde, path),
        dfx.Heun(),
        0.0,
        t1,
        None,
        x0,
        stepsize_controller=dfx.StepTo(ts),
        max_steps=200,
    )
    assert sol.ys is not None
    x = sol.ys[-1]
    alpha, sigma = sde.marginal(t1)
    se = sigma / np.sqrt(n)
    assert_allclose(x.mean(0), alpha * x0[0], atol=5 * se + 2e-3 * sigma)
    assert_allclose(x.var(0), np.full(2, sigma**2), rtol=5 * np.sqrt(2 / n) + 5e-3)


def test_prior(getkey):
    sde = sf.VESDE(sigma_min=0.1, sigma_max=5.0)
    x = sde.prior_sample((10000, 3), key=getkey())
    assert x.shape == (10000, 3)
    assert_allclose(x.std(), sde.prior_std(), rtol=0.03)
    z = jnp.asarray([0.3, -1.0, 2.0])
    s = float(sde.prior_std())
    expected = np.sum(-0.5 * (np.asarray(z) / s) ** 2 - np.log(s) - 0.5 * np.log(2 * np.pi))
    assert_allclose(sde.prior_log_prob(z), expected, rtol=1e-12)


@pytest.mark.parametrize(
    "build, name",
    [
        (lambda: sf.VPSDE(beta_min=-0.1), "beta_min"),
        (lambda: sf.VPSDE(beta_min=5.0, beta_max=1.0), "beta_min"),
        (lambda: sf.VPSDE(beta_max=float("nan")), "beta_max"),
        (lambda: sf.VPSDE(t_min=0.0), "t_min"),
        (lambda: sf.VPSDE(t_min=1.5), "t_min"),
        (lambda: sf.SubVPSDE(beta_max=0.0), "beta_max"),
        (lambda: sf.VESDE(sigma_min=0.0), "sigma_min"),
        (lambda: sf.VESDE(sigma_min=10.0, sigma_max=1.0), "sigma_min"),
        (lambda: sf.VESDE(T=-1.0), "T"),
        (lambda: sf.EDMSDE(t_min=100.0), "t_min"),
    ],
)
def test_invalid_hyperparameters(build, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        build()


def test_sde_is_a_pytree_usable_under_jit():
    # Hyperparameters may be traced (e.g. learned); validation then defers.
    @jax.jit
    def f(beta_max):
        return sf.VPSDE(beta_max=beta_max).marginal(0.5)[1]

    assert_allclose(f(jnp.asarray(20.0)), sf.VPSDE().marginal(0.5)[1])


def test_langevin_terms_sample_the_target(getkey):
    # ULA on N(1, 0.5^2) through the Langevin SDE's diffrax terms.
    target = sf.Gaussian(jnp.asarray([1.0]), jnp.asarray([0.25]))
    score = lambda t, x: -(x - 1.0) / 0.25
    # Relaxation rate 4: t = 2.5 is 10 relaxation times, the start's bias e^-10 ~ 5e-5
    # (the mean's standard error is 3.5e-3).
    ts = jnp.linspace(0.0, 2.5, 251)
    x0 = jnp.zeros((20000, 1))

    @jax.jit
    def run(key):
        path = sf.solve.GridBrownianPath(ts, x0.shape, key=key)
        sol = dfx.diffeqsolve(
            sf.sde.langevin_terms(score, path),
            dfx.Euler(),
            0.0,
            2.5,
            None,
            x0,
            stepsize_controller=dfx.StepTo(ts),
            max_steps=250,
        )
        assert sol.ys is not None
        return sol.ys[-1]

    x = run(getkey())
    assert_allclose(x.mean(), target.mean[0], atol=0.02)
    # ULA's stationary variance with step h on N(m, s^2) is s^2 / (1 - h / (4 s^2)).
    assert_allclose(x.var(), 0.25 / (1 - 0.01 / (4 * 0.25)), rtol=0.03)


def test_grid_brownian_path(getkey):
    ts = jnp.linspace(1.0, 0.0, 11)
    key = getkey()
    path = sf.solve.GridBrownianPath(ts, (50000,), key=key)
    # Times as arrays: `evaluate` compiles once, not once per pair of Python floats.
    a, b, m = jnp.asarray(0.3), jnp.asarray(0.4), jnp.asarray(0.35)
    w = brownian_increment(path, a, b)
    assert_allclose(w.var(), 0.1, rtol=0.03)
    # Deterministic and additive through the bridge point.
    assert_allclose(brownian_increment(path, a, b), w)
    assert_allclose(brownian_increment(path, a, m) + brownian_increment(path, m, b), w, atol=1e-12)
    assert_allclose(brownian_increment(path, a, m).var(), 0.05, rtol=0.03)
    # Different intervals are independent.
    w2 = brownian_increment(path, b, jnp.asarray(0.5))
    assert abs(float(jnp.corrcoef(w, w2)[0, 1])) < 0.02
    with pytest.raises(ValueError, match="levy_area"):
        sf.solve.GridBrownianPath(ts, (3,), key=key, levy_area=dfx.SpaceTimeTimeLevyArea)
