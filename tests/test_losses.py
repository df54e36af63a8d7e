"""Every loss is minimised by the exact score; sliced / implicit equal DSM up to a constant."""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from jaxtyping import TypeCheckError
from numpy.testing import assert_allclose
from scipy.integrate import quad

import scoreflow as sf
from scoreflow import losses

KINDS = ("score", "eps", "x0", "v")
MEAN = jnp.asarray([1.0, -0.5])
VAR = jnp.asarray([0.5, 2.0])
GAUSS = sf.Gaussian(MEAN, VAR)


class Exact(sf.AbstractPrediction):
    """The exact score of the noisy Gaussian, plus an offset, in any parameterisation."""

    sde: sf.sde.AbstractSDE
    parameterisation: str = eqx.field(static=True)
    offset: float = 0.0

    def __call__(self, t, x):
        s = GAUSS.noised(self.sde).score(t, x) + self.offset
        return sf.sde.convert(self.sde, t, x, s, source="score", target=self.parameterisation)


def _data(n=4096, key=jr.key(0)):
    return GAUSS.sample(n, key=key)


WEIGHTINGS = {
    "sigma2": losses.SigmaSquaredWeighting(),
    "likelihood": losses.LikelihoodWeighting(),
    "edm": losses.EDMWeighting(0.5),
    "unit": losses.UnitWeighting(),
}
TIME_SAMPLINGS = {
    "uniform": losses.UniformTime(),
    "importance": losses.LogSNRUniformTime(),
    "lognormal": losses.LogNormalTime(),
}


def _closed_form(sde, weighting, time_sampling, offset):
    r"""E_t[lambda(t) (1/d) sum_d (1/sigma^2 - 1/(alpha^2 V_d + sigma^2) + c^2)] by quadrature.

    DSM at a model s = s* + c (score space): E||s* - target||^2 + c^2 per coordinate, and
    E||s* + eps/sigma||^2 = d/sigma^2 - E||grad log p_t||^2 with the Gaussian's Fisher
    information sum_d 1/(alpha^2 V_d + sigma^2). Importance sampling estimates the
    uniform-time objective; the log-normal one defines its own.
    """
    var = np.asarray(VAR)

    def f(t):
        a, s = (float(v) for v in sde.marginal(t))
        lam = float(weighting(sde, jnp.asarray(t)))
        return lam * (np.mean(1 / s**2 - 1 / (a**2 * var + s**2)) + offset**2)

    t0, t1 = float(sde.t_min), float(sde.T)
    if time_sampling != "lognormal":
        return quad(f, t0, t1, limit=200, epsrel=1e-8)[0] / (t1 - t0)
    ln = TIME_SAMPLINGS["lognormal"]

    def g(u):
        t = float(jnp.clip(sde.t_from_log_snr(-jnp.asarray(u)), t0, t1))
        return (
            f(t)
            * np.exp(-0.5 * ((u - ln.p_mean) / ln.p_std) ** 2)
            / (ln.p_std * np.sqrt(2 * np.pi))
        )

    lo, hi = ln.p_mean - 9 * ln.p_std, ln.p_mean + 9 * ln.p_std
    return quad(g, lo, hi, limit=400, epsrel=1e-8)[0]


@eqx.filter_jit
def _dsm_repeats(sde, kind, weighting, time_sampling, offset, x, keys):
    model = Exact(sde, kind, offset)
    kw = dict(weighting=weighting, time_sampling=time_sampling)
    return jax.vmap(lambda k: losses.denoising_score_matching(sde, model, x, key=k, **kw))(keys)


COMBOS = [
    (kind, weighting, ts) for kind in KINDS for weighting in WEIGHTINGS for ts in TIME_SAMPLINGS
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
def test_dsm_equals_its_closed_form(kind, weighting, time_sampling):
    # The loss of the exact score, and of the exact score plus an offset, against the
    # closed-form expectation: within 4 standard errors of 16 independent estimates.
    sde = sf.VPSDE()
    x = _data(4096)
    keys = jr.split(jr.key(1), 16)
    for offset in (0.0, 0.3):
        values = np.asarray(
            _dsm_repeats(
                sde, kind, WEIGHTINGS[weighting], TIME_SAMPLINGS[time_sampling], offset, x, keys
            )
        )
        want = _closed_form(sde, WEIGHTINGS[weighting], time_sampling, offset)
        se = values.std(ddof=1) / np.sqrt(values.size)
        assert abs(values.mean() - want) < 4 * se + 1e-3 * abs(want), (values.mean(), want, se)


@eqx.filter_jit
def _dsm_all_kinds(sde, x, key):
    # One network (exact score + offset) expressed in each parameterisation.
    return jnp.stack(
        [
            losses.denoising_score_matching(
                sde,
                Exact(sde, kind, 0.3),
                x,
                weighting=losses.LikelihoodWeighting(),
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
    net = sf.Prediction(sde, lambda t, y: 0.1 * y, "eps")
    got = losses.denoising_score_matching(sde, net, x, key=key)
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
            sde,
            Exact(sde, "score", 0.3),
            x,
            weighting=losses.LikelihoodWeighting(),
            time_sampling=ts,
            key=key,
        )
    )
    keys = jr.split(jr.key(4), 8)
    uni = np.asarray(jax.vmap(lambda k: f(losses.UniformTime(), k))(keys))
    imp = np.asarray(jax.vmap(lambda k: f(losses.LogSNRUniformTime(), k))(keys))
    assert abs(uni.mean() - imp.mean()) < 4 * np.hypot(uni.std(), imp.std()) / np.sqrt(8)
    assert imp.std() < uni.std()


class Linear(eqx.Module):
    A: jax.Array
    b: jax.Array

    def __call__(self, x):
        return self.A @ x + self.b


@pytest.mark.parametrize(
    "name,kw",
    [
        ("implicit", dict(trace=sf.solve.Exact())),
        pytest.param(
            "implicit", dict(trace=sf.solve.Hutchinson(num_probes=4)), marks=pytest.mark.slow
        ),
        ("sliced", dict(variance_reduction=True, slices=sf.solve.Hutchinson(2, "gaussian"))),
        pytest.param(
            "sliced",
            dict(variance_reduction=False, slices=sf.solve.Hutchinson(2, "rademacher")),
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
    got = eqx.filter_jit(lambda m, x, k: fn(None, m, x, reduce="sum", key=k, **kw))(
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
    kw: dict[str, Any] = dict(reduce="sum", key=key)
    return (
        losses.denoising_score_matching(sde, m, x, **kw),
        losses.implicit_score_matching(sde, m, x, trace=sf.solve.Exact(), **kw),
        losses.sliced_score_matching(sde, m, x, slices=sf.solve.Hutchinson(4, "gaussian"), **kw),
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


class _DDPMExactEps(eqx.Module):
    # E[eps | x_i] of the Gaussian data, from the test's own cumulative products of the
    # betas (not the library's schedule): a library that noised step i with another
    # alpha-bar than the network is given would no longer meet the closed form below.
    alpha_bars: tuple[float, ...] = eqx.field(static=True)
    offset: float = 0.0

    def __call__(self, t, x):
        N = len(self.alpha_bars)
        i = jnp.round(t * N).astype(int) - 1
        ab = jnp.asarray(self.alpha_bars)[i]
        a, s = jnp.sqrt(ab), jnp.sqrt(1 - ab)
        return s * (x - a * MEAN) / (a**2 * VAR + s**2) + self.offset


@pytest.mark.parametrize("offset", [0.0, 0.2])
def test_ddpm_loss_equals_its_closed_form(offset):
    # L_simple at E[eps | x_i] + c: the posterior variance of eps, averaged over DDPM's
    # N steps, plus c^2: mean_i mean_d a_i^2 V_d / (a_i^2 V_d + s_i^2) + c^2.
    betas = np.linspace(0.02, 0.6, 10)
    ab = np.cumprod(1 - betas)
    model = sf.DDPM(
        _DDPMExactEps(tuple(ab.tolist()), offset), event_shape=(2,), betas=jnp.asarray(betas)
    )
    keys = jr.split(jr.key(9), 16)
    x = _data(4096)
    values = np.asarray(jax.jit(jax.vmap(lambda k: model.loss(x, key=k)))(keys))
    var = np.asarray(VAR)
    want = np.mean(ab[:, None] * var / (ab[:, None] * var + 1 - ab[:, None])) + offset**2
    se = values.std(ddof=1) / np.sqrt(values.size)
    assert abs(values.mean() - want) < 4 * se, (values.mean(), want, se)
    # One step off (alpha-bar of i + 1 at step i) is far outside: the test can fail.
    off_by_one = np.mean(ab[1:, None] * var / (ab[1:, None] * var + 1 - ab[1:, None])) + offset**2
    assert abs(off_by_one - want) > 20 * se


@pytest.mark.parametrize("offset", [0.0, 0.3])
def test_ncsn_loss_equals_its_closed_form(offset):
    # sigma^2 ||s(sigma, x~) + z / sigma||^2 at s = exact + c / sigma: the mean over the
    # ladder of mean_d V_d / (V_d + sigma_i^2), plus c^2.
    sigmas = np.geomspace(5.0, 0.05, 6)
    exact = lambda s, y: -(y - MEAN) / (VAR + s**2) + offset / s
    model = sf.NCSN(exact, event_shape=(2,), sigmas=jnp.asarray(sigmas))
    keys = jr.split(jr.key(10), 16)
    x = _data(4096)
    values = np.asarray(jax.jit(jax.vmap(lambda k: model.loss(x, key=k)))(keys))
    var = np.asarray(VAR)
    want = np.mean(var / (var + sigmas[:, None] ** 2)) + offset**2
    se = values.std(ddof=1) / np.sqrt(values.size)
    assert abs(values.mean() - want) < 4 * se + 1e-6, (values.mean(), want, se)


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(weighting="sigma"), "weighting"),
        (dict(time_sampling="beta"), "time_sampling"),
        (dict(reduce="max"), "reduce"),
    ],
)
def test_bad_choices_raise(kwargs, name):
    sde = sf.VPSDE()
    with pytest.raises((ValueError, TypeCheckError), match=f"`?{name}`?"):
        losses.denoising_score_matching(sde, Exact(sde, "eps"), _data(4), key=jr.key(0), **kwargs)


def test_bad_options_raise():
    with pytest.raises(ValueError, match="`sigma_data`"):
        losses.EDMWeighting(0.0)
    with pytest.raises(ValueError, match="`p_std`"):
        losses.LogNormalTime(p_std=-1.0)
    with pytest.raises((ValueError, TypeCheckError), match="times"):
        losses.DiscreteTime(jnp.ones((2, 2)))


def test_bad_batch_raises():
    sde = sf.VPSDE()
    with pytest.raises(ValueError, match="batch"):
        losses.denoising_score_matching(sde, Exact(sde, "eps"), jnp.ones(3), key=jr.key(0))
    with pytest.raises(ValueError, match="callable `x -> score`"):
        losses.sliced_score_matching(None, Exact(sde, "eps"), _data(4), key=jr.key(0))
