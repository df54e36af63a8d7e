"""Every loss is minimised by the exact score; sliced / implicit equal DSM up to a constant."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from numpy.testing import assert_allclose

import scoreflow as sf
from scoreflow import losses
from scoreflow.models import DiscreteVPSDE, linear_betas

KINDS = ("score", "eps", "x0", "v")
MEAN = jnp.asarray([1.0, -0.5])
VAR = jnp.asarray([0.5, 2.0])
GAUSS = sf.Gaussian(MEAN, VAR)


class Exact(eqx.Module):
    """The exact score of the noisy Gaussian, plus an offset, in any parameterisation."""

    sde: sf.sde.AbstractSDE
    kind: str = eqx.field(static=True)
    offset: float = 0.0

    def __call__(self, t, x):
        s = GAUSS.noised(self.sde).score(t, x) + self.offset
        return sf.sde.convert(self.sde, t, x, s, source="score", target=self.kind)


def _data(n=4096, key=jr.key(0)):
    return GAUSS.sample(n, key=key)


@eqx.filter_jit
def _dsm_pair(sde, kind, weighting, time_sampling, x, key):
    kw = dict(parameterisation=kind, weighting=weighting, time_sampling=time_sampling, key=key)
    exact = losses.denoising_score_matching(Exact(sde, kind), sde, x, **kw)
    off = losses.denoising_score_matching(Exact(sde, kind, 0.3), sde, x, **kw)
    return exact, off


COMBOS = [
    (kind, weighting, ts)
    for kind in KINDS
    for weighting in ("sigma2", "likelihood", "edm", "unit")
    for ts in ("uniform", "importance", "lognormal")
]
# The default run covers every parameterisation, weighting and time sampling once;
# the full product runs under -m slow.
FAST = [
    ("score", "sigma2", "uniform"),
    ("eps", "likelihood", "importance"),
    ("x0", "edm", "lognormal"),
    ("v", "unit", "uniform"),
]


@pytest.mark.parametrize(
    "kind,weighting,time_sampling",
    [c if c in FAST else pytest.param(*c, marks=pytest.mark.slow) for c in COMBOS],
)
def test_dsm_minimised_by_exact_score(kind, weighting, time_sampling):
    sde = sf.VPSDE()
    exact, off = _dsm_pair(sde, kind, weighting, time_sampling, _data(), jr.key(1))
    assert np.isfinite(exact) and np.isfinite(off)
    assert exact < off


@eqx.filter_jit
def _dsm_all_kinds(sde, x, key):
    # One network (exact score + offset) expressed in each parameterisation.
    return jnp.stack(
        [
            losses.denoising_score_matching(
                Exact(sde, kind, 0.3),
                sde,
                x,
                parameterisation=kind,
                weighting="likelihood",
                key=key,
            )
            for kind in KINDS
        ]
    )


@pytest.mark.parametrize(
    "sde",
    [sf.VPSDE(), pytest.param(sf.VESDE(sigma_min=0.01, sigma_max=20.0), marks=pytest.mark.slow)],
)
def test_dsm_independent_of_parameterisation(sde):
    # The weighting lives in score space, so the same function in any parameterisation
    # has the same loss: this checks the conversion slopes taken from `convert`.
    values = np.asarray(_dsm_all_kinds(sde, _data(256), jr.key(2)))
    assert_allclose(values, values[0], rtol=1e-8)


@jax.jit
def _eps_mse(x, key):
    sde = sf.VPSDE()
    net = lambda t, y: 0.1 * y
    got = losses.denoising_score_matching(net, sde, x, parameterisation="eps", key=key)
    k_t, k_eps = jr.split(key)
    t = jr.uniform(k_t, (64,), x.dtype, sde.t_min, sde.T)
    eps = jr.normal(k_eps, x.shape, x.dtype)
    a, s = sde.marginal(t)
    xt = a[:, None] * x + s[:, None] * eps
    return got, jnp.mean((0.1 * xt - eps) ** 2)


def test_eps_sigma2_is_plain_eps_mse():
    got, expected = _eps_mse(_data(64), jr.key(3))
    assert_allclose(got, expected, rtol=1e-10)


@pytest.mark.slow
def test_importance_sampling_is_unbiased():
    # With the likelihood weighting, uniform and log-SNR-importance sampling estimate the
    # same objective; importance sampling has the lower variance.
    sde = sf.VPSDE()
    x = _data(4096)
    f = eqx.filter_jit(
        lambda ts, key: losses.denoising_score_matching(
            Exact(sde, "score", 0.3),
            sde,
            x,
            parameterisation="score",
            weighting="likelihood",
            time_sampling=ts,
            key=key,
        )
    )
    keys = jr.split(jr.key(4), 8)
    uni = np.asarray(jax.vmap(lambda k: f("uniform", k))(keys))
    imp = np.asarray(jax.vmap(lambda k: f("importance", k))(keys))
    assert abs(uni.mean() - imp.mean()) < 4 * np.hypot(uni.std(), imp.std()) / np.sqrt(8)
    assert imp.std() < uni.std()


class Linear(eqx.Module):
    A: jax.Array
    b: jax.Array

    def __call__(self, t, x):
        return self.A @ x + self.b


@pytest.mark.parametrize(
    "name,kw",
    [
        ("implicit", dict(trace="exact")),
        pytest.param("implicit", dict(trace="hutchinson", num_probes=4), marks=pytest.mark.slow),
        ("sliced", dict(variance_reduction=True, num_slices=2)),
        pytest.param(
            "sliced",
            dict(variance_reduction=False, num_slices=2, probe="rademacher"),
            marks=pytest.mark.slow,
        ),
    ],
)
def test_plain_score_matching_closed_form(name, kw):
    # Without an SDE these are Hyvärinen's / Song et al.'s objectives on the data itself,
    # E[||s||^2 + 2 tr grad s] = E||s - grad log p||^2 - E||grad log p||^2 (sum reduction).
    # For s(x) = A x + b the Hyvärinen term is
    # E||(A + P)x - P m + b||^2 - tr P with x ~ N(m, V), written below.
    A = jnp.asarray([[-1.5, 0.3], [0.2, -0.4]])
    b = jnp.asarray([0.4, -0.1])
    x = _data(20000, jr.key(5))
    fn = losses.implicit_score_matching if name == "implicit" else losses.sliced_score_matching
    got = eqx.filter_jit(lambda m, x, k: fn(m, None, x, reduce="sum", key=k, **kw))(
        Linear(A, b), x, jr.key(6)
    )
    P = jnp.diag(1 / VAR)
    C = A + P
    r = A @ MEAN + b
    expected = jnp.trace(C @ jnp.diag(VAR) @ C.T) + r @ r - jnp.trace(P)
    assert_allclose(got, expected, rtol=0.05, atol=0.05)


@eqx.filter_jit
def _ism_dsm(sde, offset, x, key):
    m = Exact(sde, "score", offset)
    kw = dict(parameterisation="score", reduce="sum", key=key)
    return (
        losses.denoising_score_matching(m, sde, x, **kw),
        losses.implicit_score_matching(m, sde, x, trace="exact", **kw),
        losses.sliced_score_matching(m, sde, x, num_slices=4, **kw),
    )


def test_implicit_and_sliced_equal_dsm_up_to_a_constant():
    # DSM - ISM = E[lambda(t) d / sigma_t^2] = d for the sigma^2 weighting (sum reduction),
    # whatever the model: checked for the exact score and a perturbed one.
    sde = sf.VPSDE()
    x = _data(8192, jr.key(7))
    results = {offset: _ism_dsm(sde, offset, x, jr.key(8)) for offset in (0.0, 0.5)}
    for dsm, ism, ssm in results.values():
        assert_allclose(dsm - ism, 2.0, atol=0.1)
        assert_allclose(dsm - ssm, 2.0, atol=0.15)
    assert results[0.0][1] < results[0.5][1]


@jax.jit
def _ddpm_pair(x, key):
    sde = DiscreteVPSDE(linear_betas(100))
    exact = lambda t, y: GAUSS.noised(sde).eps(t, y)
    off = lambda t, y: exact(t, y) + 0.2
    ab = sde.alpha_bars()
    return (
        losses.ddpm_simple_loss(exact, ab, x, key=key),
        losses.ddpm_simple_loss(off, ab, x, key=key),
    )


def test_ddpm_simple_loss_minimised_by_exact_eps():
    l0, l1 = _ddpm_pair(_data(2048), jr.key(9))
    assert l0 < l1
    # At the exact eps the loss is the posterior variance of eps: below 1.
    assert l0 < 1.0


def test_ncsn_loss_minimised_by_exact_score():
    sigmas = jnp.geomspace(5.0, 0.05, 6)
    exact = lambda s, y: -(y - MEAN) / (VAR + s**2)
    off = lambda s, y: exact(s, y) + 0.3 / s
    f = jax.jit(
        lambda x, k: (
            losses.ncsn_loss(exact, sigmas, x, key=k),
            losses.ncsn_loss(off, sigmas, x, key=k),
        )
    )
    l0, l1 = f(_data(2048), jr.key(10))
    assert l0 < l1


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(weighting="sigma"), "weighting"),
        (dict(time_sampling="beta"), "time_sampling"),
        (dict(reduce="max"), "reduce"),
        (dict(parameterisation="noise"), "parameterisation"),
    ],
)
def test_bad_choices_raise(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        losses.denoising_score_matching(
            lambda t, y: y, sf.VPSDE(), _data(4), key=jr.key(0), **kwargs
        )


def test_bad_batch_raises():
    with pytest.raises(ValueError, match="batch"):
        losses.denoising_score_matching(lambda t, y: y, sf.VPSDE(), jnp.ones(3), key=jr.key(0))
    with pytest.raises(ValueError, match="num_probes"):
        losses.implicit_score_matching(
            lambda t, y: y, None, _data(4), trace="hutchinson", num_probes=0, key=jr.key(0)
        )
    with pytest.raises(ValueError, match="parameterisation"):
        losses.sliced_score_matching(
            lambda t, y: y, None, _data(4), parameterisation="eps", key=jr.key(0)
        )
