"""The instantaneous change of variables, PF-ODE likelihoods and bits/dim."""

from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import scipy.linalg
from jaxtyping import TypeCheckError

import scoreflow as sf
from scoreflow import bijections as bij

from .helpers import case_a, case_b, full_cov_mixture

A = jnp.asarray([[-0.4, 1.2, 0.3], [-0.8, 0.2, 0.5], [0.1, -0.6, 0.3]])


class _Linear(eqx.Module):
    A: jax.Array

    def __call__(self, t, z):
        return self.A @ z


class _Square(eqx.Module):
    def __call__(self, t, z, args):
        return z**2


@eqx.filter_jit
def _linear_cnf(cnf, z, key):
    return cnf.solve(z, key=key)


def test_linear_cnf_log_det_is_t_trace(getkey):
    # f(z) = A z: the flow map is expm(tA) and log|det| = t tr(A) exactly.
    t1 = 0.8
    z = jr.normal(getkey(), (64, 3))
    cnf = bij.CNF(_Linear(A), (3,), t1=t1, rtol=1e-10, atol=1e-10)
    sol = _linear_cnf(cnf, z, None)
    np.testing.assert_allclose(sol.log_det, t1 * jnp.trace(A), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sol.std_error, 0.0)
    expm = scipy.linalg.expm(t1 * np.asarray(A))
    np.testing.assert_allclose(sol.z, z @ expm.T, rtol=1e-8, atol=1e-8)
    # Finlay et al.'s regularisers: ∫||Az||^2 dt by quadrature, ∫||A||_F^2 dt = t ||A||_F^2.
    ts = np.linspace(0.0, t1, 2001)
    traj = np.stack([np.asarray(z) @ scipy.linalg.expm(t * np.asarray(A)).T for t in ts])
    ke = np.trapezoid(np.sum((traj @ np.asarray(A).T) ** 2, -1), ts, axis=0)
    np.testing.assert_allclose(sol.kinetic, ke, rtol=1e-5)
    np.testing.assert_allclose(sol.frobenius, t1 * jnp.sum(A**2), rtol=1e-10)


@pytest.mark.slow
def test_linear_cnf_inverse(getkey):
    # The inverse solve negates the log-det and undoes the map.
    z = jr.normal(getkey(), (16, 3))
    cnf = bij.CNF(_Linear(A), (3,), t1=0.8, rtol=1e-10, atol=1e-10)
    back = cnf.solve(cnf.solve(z).z, inverse=True)
    np.testing.assert_allclose(back.log_det, -0.8 * jnp.trace(A), rtol=1e-12)
    np.testing.assert_allclose(back.z, z, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("probe", ["rademacher", pytest.param("gaussian", marks=pytest.mark.slow)])
@pytest.mark.parametrize("symmetric", [True, False])
def test_hutchinson_within_standard_error(probe, symmetric, getkey):
    # The standard error is the plug-in of one probe's variance from the integrated
    # vector-Jacobian products: calibrated for a symmetric Jacobian (a score's), an upper
    # bound for a non-symmetric one (whose antisymmetric part the estimate never sees).
    t1 = 0.8
    mat = (A + A.T) / 2 if symmetric else A
    z = jr.normal(getkey(), (64, 3))
    trace = sf.solve.Hutchinson(num_probes=16, probe=probe)
    cnf = bij.CNF(_Linear(mat), (3,), t1=t1, trace=trace)
    sol = _linear_cnf(cnf, z, getkey())
    score = (sol.log_det - t1 * jnp.trace(mat)) / sol.std_error
    assert bool(jnp.all(sol.std_error > 0))
    # 64 independent z-scores of a mean of 16 probes: nearly standard normal.
    assert float(jnp.max(jnp.abs(score))) < 4.5
    assert (0.5 if symmetric else 0.05) < float(jnp.std(score)) < 1.6
    # Frobenius estimate is unbiased for ||A||_F^2 (averaged over examples and probes).
    np.testing.assert_allclose(jnp.mean(sol.frobenius), t1 * jnp.sum(mat**2), rtol=0.15)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
@pytest.mark.parametrize("k", [1, 2])
def test_hutchinson_standard_error_is_finite_and_positive_for_few_probes(probe, k, getkey):
    # One probe used to give NaN, and few Rademacher probes in 2-d often gave exactly 0.
    case = case_a()
    sde = sf.VPSDE(t_min=1e-3)
    x = case.sample(32, key=getkey())
    trace = sf.solve.Hutchinson(num_probes=k, probe=probe)
    res = sf.solve.log_likelihood(
        sde, case.noised(sde), x, trace=trace, rtol=1e-3, atol=1e-3, key=getkey()
    )
    assert bool(jnp.all(jnp.isfinite(res.std_error)))
    assert bool(jnp.all(res.std_error > 0))
    if k > 1:  # without the integrated products: the spread of the K estimates
        cheap = sf.solve.Hutchinson(num_probes=k, probe=probe, std_error=False)
        res2 = sf.solve.log_likelihood(
            sde, case.noised(sde), x, trace=cheap, rtol=1e-3, atol=1e-3, key=getkey()
        )
        assert bool(jnp.all(jnp.isfinite(res2.std_error)))


@pytest.mark.slow
@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
@pytest.mark.parametrize("k", [1, 4])
def test_hutchinson_standard_error_covers_the_exact_trace(probe, k):
    # Estimate +- 2 SE against the exact-trace likelihood over many points (the full
    # check, 2000 points of cases A and B, is benchmarks/likelihood_coverage.py).
    case = case_b()
    sde = sf.VPSDE(t_min=1e-5)
    noisy = case.noised(sde)
    x = case.sample(400, key=jr.key(0))
    kw: dict[str, Any] = dict(rtol=1e-6, atol=1e-6)
    exact = sf.solve.log_likelihood(sde, noisy, x, **kw).log_prob
    trace = sf.solve.Hutchinson(num_probes=k, probe=probe)
    res = sf.solve.log_likelihood(sde, noisy, x, trace=trace, key=jr.key(3), **kw)
    err = np.asarray(res.log_prob - exact)
    se = np.asarray(res.std_error)
    assert np.all(se > 0)
    assert np.mean(np.abs(err) <= 2 * se) > 0.9
    assert 0.4 < np.sqrt(np.mean(err**2) / np.mean(se**2)) < 1.3


@pytest.mark.slow
def test_nonlinear_exact_and_hutchinson_agree(getkey):
    net = sf.nn.ConcatSquashMLP(3, 16, 2, jnp.tanh, zero_init=False, key=getkey())
    z = jr.normal(getkey(), (32, 3))
    exact = bij.CNF(net, (3,), rtol=1e-8, atol=1e-8).solve(z)
    hutch = bij.CNF(net, (3,), trace=sf.solve.Hutchinson(16), rtol=1e-8, atol=1e-8)
    est = hutch.solve(z, key=getkey())
    np.testing.assert_allclose(est.z, exact.z, rtol=1e-6, atol=1e-6)
    score = (est.log_det - exact.log_det) / est.std_error
    assert float(jnp.max(jnp.abs(score))) < 4.5


@pytest.fixture(scope="module")
def exact_cases():
    return {
        "vp": sf.VPSDE(t_min=1e-5),
        "ve": sf.VESDE(sigma_min=0.01, sigma_max=20.0),
    }


# Each (SDE, case) pair compiles its own solve; one pair runs by default, all with -m slow.
@pytest.mark.parametrize(
    "sde_name, case",
    [
        ("vp", "A"),
        pytest.param("vp", "B", marks=pytest.mark.slow),
        pytest.param("ve", "A", marks=pytest.mark.slow),
        pytest.param("ve", "B", marks=pytest.mark.slow),
    ],
)
def test_pf_ode_log_likelihood_is_exact(case, sde_name, exact_cases):
    # Exact score + exact p_T prior: the PF-ODE likelihood is the analytic log p_{t_min}.
    sde = exact_cases[sde_name]
    mixture = case_a() if case == "A" else case_b()
    noisy = mixture.noised(sde)
    x = mixture.sample(8, key=jr.key(0))
    res = sf.solve.log_likelihood(
        sde,
        noisy,
        x,
        prior_log_prob=lambda z: noisy.log_prob(sde.T, z),
        rtol=1e-8,
        atol=1e-8,
    )
    assert res.result == dfx.RESULTS.successful
    ref = noisy.log_prob(sde.t_min, x)
    np.testing.assert_allclose(res.log_prob, ref, rtol=0, atol=1e-6 * mixture.dim)
    np.testing.assert_allclose(res.log_prob, res.prior_log_prob + res.delta_log_prob)
    assert int(res.nfe) > 0 and int(res.nfe) == 6 * int(res.num_steps) + 1


@pytest.fixture(scope="module")
def vp_case_a_in_t(exact_cases):
    # The exact-prior solve in t of case A under the VP SDE, which the other time
    # variables are compared with: every solve compiles its own program, so it is shared.
    sde = exact_cases["vp"]
    noisy = case_a().noised(sde)
    x = case_a().sample(8, key=jr.key(0))
    kw: dict[str, Any] = dict(
        prior_log_prob=lambda z: noisy.log_prob(sde.T, z), rtol=1e-8, atol=1e-8
    )
    return sde, noisy, x, kw, sf.solve.log_likelihood(sde, noisy, x, **kw)


def test_pf_ode_log_likelihood_in_log_snr_time(vp_case_a_in_t):
    # Integrating in lambda = log(alpha/sigma) rescales the field and the trace by
    # dt/dlambda: the same log-likelihood as in t, and the analytic one.
    sde, noisy, x, kw, in_t = vp_case_a_in_t
    in_lambda = sf.solve.log_likelihood(sde, noisy, x, time_variable="log_snr", **kw)
    assert in_lambda.result == dfx.RESULTS.successful
    np.testing.assert_allclose(in_lambda.log_prob, in_t.log_prob, rtol=0, atol=2e-6)
    ref = noisy.log_prob(sde.t_min, x)
    np.testing.assert_allclose(in_lambda.log_prob, ref, rtol=0, atol=1e-6 * x.shape[1])
    np.testing.assert_allclose(in_lambda.z, in_t.z, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "sde, case",
    [
        (sf.EDMSDE(), "A"),
        pytest.param(sf.EDMSDE(), "full", marks=pytest.mark.slow),
        pytest.param(sf.VESDE(sigma_min=0.01, sigma_max=20.0), "A", marks=pytest.mark.slow),
    ],
)
def test_pf_ode_log_likelihood_in_vp_time(sde, case):
    # In the reference VP SDE's time and state (x / sqrt(alpha^2 + sigma^2)) the
    # likelihood and the encoding are those of the solve in t, and the exact density.
    mixture = case_a() if case == "A" else full_cov_mixture()
    noisy = mixture.noised(sde)
    x = mixture.sample(8, key=jr.key(0))
    kw: dict[str, Any] = dict(
        prior_log_prob=lambda z: noisy.log_prob(sde.T, z), rtol=1e-8, atol=1e-8
    )
    in_vp = sf.solve.log_likelihood(sde, noisy, x, time_variable="vp", **kw)
    in_t = sf.solve.log_likelihood(sde, noisy, x, time_variable="t", **kw)
    assert in_vp.result == dfx.RESULTS.successful
    ref = noisy.log_prob(sde.t_min, x)
    np.testing.assert_allclose(in_vp.log_prob, ref, rtol=0, atol=1e-6 * mixture.dim)
    np.testing.assert_allclose(in_vp.log_prob, in_t.log_prob, rtol=0, atol=1e-6 * mixture.dim)
    np.testing.assert_allclose(in_vp.z, in_t.z, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(in_vp.log_prob, in_vp.prior_log_prob + in_vp.delta_log_prob)


def test_vp_time_of_the_reference_vp_sde_is_its_own_time(vp_case_a_in_t):
    # On Song et al.'s VP SDE (beta 0.1 -> 20) the reference is the SDE itself: the
    # same ODE as in t, step for step.
    sde, noisy, x, kw, in_t = vp_case_a_in_t
    in_vp = sf.solve.log_likelihood(sde, noisy, x, time_variable="vp", **kw)
    assert int(in_vp.nfe) == int(in_t.nfe)
    np.testing.assert_allclose(in_vp.log_prob, in_t.log_prob, rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="dt0"):
        sf.solve.log_likelihood(sde, noisy, x, time_variable="vp", dt0=-0.01)


@pytest.mark.slow
def test_pf_ode_parameterisation_and_default_prior(exact_cases):
    # An eps-model reads through `Prediction`: the same likelihood as the score.
    sde = exact_cases["vp"]
    mixture = case_a()
    noisy = mixture.noised(sde)
    x = mixture.sample(8, key=jr.key(1))
    kw: dict[str, Any] = dict(rtol=1e-7, atol=1e-7)
    by_eps = sf.solve.log_likelihood(sde, sf.Prediction(sde, noisy.eps, "eps"), x, **kw)
    by_score = sf.solve.log_likelihood(sde, noisy, x, **kw)
    np.testing.assert_allclose(by_eps.log_prob, by_score.log_prob, rtol=1e-9)
    # With the SDE's N(0, I) prior the VP likelihood is still accurate: p_T is near N(0, I).
    np.testing.assert_allclose(by_score.log_prob, noisy.log_prob(sde.t_min, x), atol=1e-3)


def test_bad_input_and_options():
    sde = sf.VPSDE()
    noisy = case_a().noised(sde)
    x = jnp.zeros((4, 2))
    with pytest.raises((ValueError, TypeCheckError), match="`?trace`?"):
        sf.solve.log_likelihood(sde, noisy, x, trace="exactly")  # pyright: ignore
    with pytest.raises(ValueError, match="`probe`"):
        sf.solve.Hutchinson(4, probe="bernoulli")
    with pytest.raises(ValueError, match="`num_probes`"):
        sf.solve.Hutchinson(0)
    with pytest.raises(ValueError, match="`key`"):
        sf.solve.log_likelihood(sde, noisy, x, trace=sf.solve.Hutchinson(2))
    with pytest.raises(ValueError, match="batch"):
        sf.solve.log_likelihood(sde, noisy, jnp.zeros(2))
    with pytest.raises(ValueError, match="time_variable"):
        sf.solve.log_likelihood(sde, noisy, x, time_variable="sigma")
    with pytest.raises(ValueError, match="non-finite"):
        sf.solve.log_likelihood(sde, noisy, x.at[1, 0].set(jnp.nan))


def test_a_score_model_is_its_own_likelihood_model():
    # `log_likelihood(sde, model, x)` with a ScoreSDE: the model says what it predicts.
    sde = sf.VPSDE(t_min=1e-5)
    noisy = case_a().noised(sde)
    model = sf.ScoreSDE(sde, noisy.eps, parameterisation="eps", event_shape=(2,))
    x = case_a().sample(4, key=jr.key(2))
    kw: dict[str, Any] = dict(rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(
        sf.solve.log_likelihood(sde, model, x, **kw).log_prob,
        sf.solve.log_likelihood(sde, noisy, x, **kw).log_prob,
        rtol=1e-8,
    )
    np.testing.assert_allclose(model.log_prob(x, **kw), noisy.log_prob(sde.t_min, x), atol=1e-3)


def test_diverging_solve_surfaces_failure():
    # dz/dt = z^2 blows up at t = 1/z0 = 0.5 < t1: never a silent NaN.
    z = jnp.full((2, 1), 2.0)
    sol = sf.solve.solve_augmented(_Square(), z, 0.0, 1.0, max_steps=256, throw=False)
    assert sol.result != dfx.RESULTS.successful


@pytest.mark.slow
def test_failures_raise_or_report():
    z = jnp.full((2, 1), 2.0)
    with pytest.raises(Exception, match="max_steps|step size|unsuccessful|NaN|nan"):
        sf.solve.solve_augmented(_Square(), z, 0.0, 1.0, max_steps=256)
    # Non-finite input under jit raises at run time.
    f = eqx.filter_jit(lambda z: sf.solve.solve_augmented(_Square(), z, 0.0, 0.1).z)
    with pytest.raises(Exception, match="non-finite"):
        f(z.at[0, 0].set(jnp.inf))
    # A model that returns NaN is reported the same way by `log_likelihood`.
    sde = sf.VPSDE()
    nan = sf.Prediction(sde, lambda t, x: x * jnp.nan, "score")
    res = sf.solve.log_likelihood(sde, nan, jnp.ones((2, 2)), max_steps=64, throw=False)
    assert res.result != dfx.RESULTS.successful


class _UniformModel(eqx.Module):
    # The uniform density on [-1, 1]^D: every dequantised point has log p = -D log 2.
    def __call__(self, y, *, key):
        return jnp.full(y.shape[:1], -y[0].size * jnp.log(2.0))


@pytest.mark.parametrize("levels", [2, 17, 32, 256])
def test_bits_per_dim_of_uniform_model_is_log2_levels(levels, getkey):
    # Any number of levels: 2**n for n-bit images, 17 for the digits.
    x = jr.randint(getkey(), (16, 3, 4), 0, levels)
    res = sf.metrics.bits_per_dim(_UniformModel(), x, levels=levels, key=getkey())
    np.testing.assert_allclose(res.bits_per_dim, np.log2(levels), rtol=1e-12)
    # On [0, 1] the same model (density 1) gives the same answer.
    res01 = sf.metrics.bits_per_dim(
        lambda y, *, key: jnp.zeros(y.shape[:1]),
        x,
        levels=levels,
        data_range=(0.0, 1.0),
        key=getkey(),
    )
    np.testing.assert_allclose(res01.bits_per_dim, np.log2(levels), rtol=1e-12)


def test_bits_per_dim_dequantises_the_digits_like_a_gaussian_quadrature(getkey):
    # Against an independent computation of the same bound: a standard normal density
    # on the [-1, 1] scale, the digits' 17 bins, the dequantised point drawn by hand.
    x = sf.data.digits_raw("test")[:8]
    key = getkey()
    log_prob = lambda y, *, key: jnp.sum(jax.scipy.stats.norm.logpdf(y.reshape(y.shape[0], -1)), -1)
    res = sf.metrics.bits_per_dim(log_prob, x, levels=17, key=key)
    u = jr.uniform(jr.split(key)[0], x.shape, jnp.float64)
    y = 2 * (x.astype(jnp.float64) + u) / 17 - 1
    want = -(log_prob(y, key=None) + 64 * np.log(2 / 17)) / (64 * np.log(2))
    np.testing.assert_allclose(res.bits_per_dim, want, rtol=1e-12)


def test_variational_dequantiser_hook(getkey):
    # q(u) = prod 2u_i on [0, 1)^D; the ELBO subtracts log q.
    def dequantiser(x, *, key):
        u = jnp.sqrt(jr.uniform(key, x.shape, jnp.float64))
        return u, jnp.sum(jnp.log(2 * u).reshape(x.shape[0], -1), -1)

    x = jr.randint(getkey(), (16, 6), 0, 256)
    key = getkey()
    res = sf.metrics.bits_per_dim(_UniformModel(), x, dequantiser=dequantiser, key=key)
    u, log_q = dequantiser(x, key=jr.split(key)[0])
    np.testing.assert_allclose(res.bits_per_dim, 8.0 + log_q / (6 * np.log(2.0)), rtol=1e-12)


def test_bits_per_dim_bad_input(getkey):
    x = jnp.zeros((4, 2), jnp.int32)
    model = _UniformModel()
    with pytest.raises(ValueError, match="integers"):
        sf.metrics.bits_per_dim(model, x.astype(jnp.float64), key=getkey())
    with pytest.raises(ValueError, match="`levels`"):
        sf.metrics.bits_per_dim(model, x, levels=1, key=getkey())
    with pytest.raises(ValueError, match="`data_range`"):
        sf.metrics.bits_per_dim(model, x, data_range=(1.0, -1.0), key=getkey())
    with pytest.raises(Exception, match=r"\[0, 16\]"):
        sf.metrics.bits_per_dim(model, x.at[0, 0].set(40), levels=17, key=getkey())
