import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from jaxtyping import TypeCheckError
from numpy.testing import assert_allclose

import scoreflow as sf

from .helpers import SDES, case_a

GRIDS = [sf.solve.UniformGrid(8), sf.solve.LogSNRGrid(8), sf.solve.KarrasGrid(8)]


@pytest.mark.parametrize("sde_name", SDES)
@pytest.mark.parametrize("grid", GRIDS, ids=lambda g: type(g).__name__)
def test_grids_run_from_T_to_t_min(sde_name, grid):
    sde = SDES[sde_name]()
    ts = grid.times(sde)
    assert ts.shape == (9,)
    assert float(ts[0]) == sde.T and float(ts[-1]) == sde.t_min
    assert bool(jnp.all(jnp.diff(ts) < 0))


def test_karras_grid_is_edm_grid_for_edm_sde():
    sde = sf.EDMSDE()
    n, rho = 18, 7.0
    i = np.arange(n + 1) / n
    expected = (80 ** (1 / rho) + i * (0.002 ** (1 / rho) - 80 ** (1 / rho))) ** rho
    assert_allclose(sf.solve.KarrasGrid(n, rho).times(sde), expected, rtol=1e-12)


def _component_counts(mix, x):
    comp = jnp.argmax(mix.component_log_probs(x), axis=-1)
    return np.bincount(np.asarray(comp), minlength=mix.weights.shape[0])


def _check_reproduces_mixture(mix, x):
    n = x.shape[0]
    assert bool(jnp.all(jnp.isfinite(x)))
    cov = mix.covariance()
    se = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(np.asarray(x.mean(0) - mix.mean())) < 5 * se), x.mean(0)
    assert_allclose(jnp.cov(x.T), cov, rtol=0.06, atol=0.15)
    # Mass per component: chi-square against the weights (8 - 1 dof, p ~ 1e-4).
    counts = _component_counts(mix, x)
    expected = n * np.asarray(mix.weights)
    chi2 = float(np.sum((counts - expected) ** 2 / expected))
    assert chi2 < 29.0, (counts, chi2)


@pytest.mark.parametrize("sde_name", SDES)
def test_probability_flow_reproduces_mixture(sde_name, getkey):
    sde = SDES[sde_name]()
    mix = case_a(weights=[0.3, 0.05, 0.1, 0.05, 0.2, 0.1, 0.1, 0.1])
    res = sf.sample(
        sde,
        mix.noised(sde).score,
        (8000, 2),
        key=getkey(),
        grid=sf.solve.KarrasGrid(40),
        solver=dfx.Heun(),
    )
    assert res.nfe == 40 * 2 + 1 and res.num_steps == 40
    _check_reproduces_mixture(mix, res.samples)


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
def test_reverse_sde_reproduces_mixture(sde_name, getkey):
    sde = SDES[sde_name]()
    mix = case_a(weights=[0.3, 0.05, 0.1, 0.05, 0.2, 0.1, 0.1, 0.1])
    res = sf.sample(
        sde,
        mix.noised(sde).score,
        (8000, 2),
        method="sde",
        key=getkey(),
        grid=sf.solve.LogSNRGrid(300),
    )
    assert res.nfe == 301
    _check_reproduces_mixture(mix, res.samples)


def test_adaptive_solve_reports_steps(getkey):
    sde = sf.VPSDE()
    mix = case_a()
    x_T = sde.prior_sample((64, 2), key=getkey())
    score = mix.noised(sde).score
    loose = sf.solve.solve_probability_flow(
        sde,
        score,
        x_T,
        solver=dfx.Tsit5(),
        stepsize_controller=dfx.PIDController(rtol=1e-4, atol=1e-4),
    )
    tight = sf.solve.solve_probability_flow(
        sde,
        score,
        x_T,
        solver=dfx.Tsit5(),
        stepsize_controller=dfx.PIDController(rtol=1e-9, atol=1e-9),
    )
    assert loose.result == dfx.RESULTS.successful
    assert 0 < int(loose.num_steps) < int(tight.num_steps)
    assert int(tight.nfe) == 6 * int(tight.num_steps) + 1 + 1
    assert float(jnp.max(jnp.abs(loose.samples - tight.samples))) < 1e-2


def test_adaptive_reverse_sde_uses_brownian_tree(getkey):
    sde = sf.VPSDE()
    mix = case_a()
    res = sf.sample(
        sde,
        mix.noised(sde).score,
        (256, 2),
        method="sde",
        key=getkey(),
        solver=dfx.Heun(),
        stepsize_controller=dfx.PIDController(rtol=1e-2, atol=1e-2),
    )
    assert res.result == dfx.RESULTS.successful and int(res.num_steps) > 0
    assert bool(jnp.all(jnp.isfinite(res.samples)))


# Order of each diffrax solver on the probability-flow ODE of case A under the VP SDE,
# against a tight adaptive reference, measured as a log-log slope (float64).
ORDERS = [(dfx.Euler(), 1), (dfx.Heun(), 2), (dfx.Midpoint(), 2), (dfx.Bosh3(), 3)]


@pytest.mark.parametrize("solver, order", ORDERS, ids=lambda s: type(s).__name__)
def test_probability_flow_convergence_order(solver, order, getkey):
    sde = sf.VPSDE()
    score = case_a().noised(sde).score
    x_T = sde.prior_sample((32, 2), key=jr.key(0))
    ref = sf.solve.solve_probability_flow(
        sde,
        score,
        x_T,
        solver=dfx.Tsit5(),
        denoise=False,
        stepsize_controller=dfx.PIDController(rtol=1e-12, atol=1e-12),
        max_steps=100000,
    ).samples
    ns = np.array([32, 64, 128])
    errs = []
    for n in ns:
        x = sf.solve.solve_probability_flow(
            sde,
            score,
            x_T,
            solver=solver,
            grid=sf.solve.LogSNRGrid(int(n)),
            denoise=False,
        ).samples
        errs.append(float(jnp.sqrt(jnp.mean((x - ref) ** 2))))
    slope = -np.polyfit(np.log(ns), np.log(errs), 1)[0]
    assert abs(slope - order) < 0.25, (errs, slope)


def test_no_recompile_when_only_values_change(getkey):
    traces = []

    class Model(eqx.Module):
        w: jax.Array

        def __call__(self, t, x):
            traces.append(None)
            return self.w * x

    sde = sf.VPSDE()
    grid = sf.solve.UniformGrid(5)
    for w in (1.0, 2.0, 3.0):
        x_T = sde.prior_sample((16, 2), key=getkey())
        sf.solve.solve_probability_flow(sde, Model(jnp.asarray(-w)), x_T, grid=grid)
        sf.solve.solve_reverse_sde(sde, Model(jnp.asarray(-w)), x_T, grid=grid, key=getkey())
    n_first = len(traces)
    for w in (4.0, 5.0):
        x_T = sde.prior_sample((16, 2), key=getkey())
        sf.solve.solve_probability_flow(sde, Model(jnp.asarray(-w)), x_T, grid=grid)
        sf.solve.solve_reverse_sde(sde, Model(jnp.asarray(-w)), x_T, grid=grid, key=getkey())
    assert len(traces) == n_first


def test_sample_is_vmappable_over_keys():
    sde = sf.VPSDE()
    score = case_a().noised(sde).score
    keys = jr.split(jr.key(0), 3)
    batched = jax.vmap(
        lambda k: sf.sample(sde, score, (4, 2), grid=sf.solve.UniformGrid(10), key=k).samples
    )(keys)
    single = sf.sample(sde, score, (4, 2), grid=sf.solve.UniformGrid(10), key=keys[1]).samples
    assert batched.shape == (3, 4, 2)
    assert_allclose(batched[1], single, rtol=1e-10)


@pytest.mark.parametrize("method", ["ode", "sde"])
def test_sample_is_differentiable_in_model_parameters(method):
    class Tempered(eqx.Module):
        # A learnable temperature on the exact score.
        log_c: jax.Array
        score: sf.analytic.NoisyMixture

        def __call__(self, t, x):
            return jnp.exp(self.log_c) * self.score.score(t, x)

    sde = sf.VPSDE()
    noisy = case_a().noised(sde)

    def loss(log_c):
        model = Tempered(log_c, noisy)
        res = sf.sample(
            sde,
            model,
            (64, 2),
            method=method,
            grid=sf.solve.UniformGrid(20),
            key=jr.key(3),
        )
        return jnp.mean(res.samples**2)

    c = jnp.asarray(0.1)
    g = jax.grad(loss)(c)
    h = 1e-5
    fd = (loss(c + h) - loss(c - h)) / (2 * h)
    assert_allclose(g, fd, rtol=1e-5)


def test_float32_sampling_is_finite(getkey):
    # The two hardest float32 cases: VP's probability flow (alpha_T ~ 7e-3) and EDM's
    # reverse SDE down to sigma = 0.002; the diffusion solvers' float32 tests cover the rest.
    for sde, method in ((sf.VPSDE(), "ode"), (sf.EDMSDE(), "sde")):
        mix = case_a(jnp.float32)
        res = sf.sample(
            sde,
            mix.noised(sde).score,
            (512, 2),
            method=method,
            dtype=jnp.float32,
            grid=sf.solve.KarrasGrid(20),
            key=getkey(),
        )
        assert res.samples.dtype == jnp.float32
        assert bool(jnp.all(jnp.isfinite(res.samples)))


def test_trajectory_is_saved(getkey):
    sde = sf.VPSDE()
    ts = jnp.asarray([1.0, 0.5, 0.1])
    res = sf.sample(
        sde,
        case_a().noised(sde).score,
        (8, 2),
        grid=sf.solve.UniformGrid(10),
        ts_save=ts,
        key=getkey(),
    )
    assert res.trajectory.shape == (3, 8, 2)
    assert_allclose(res.ts, ts)


def test_bad_input(getkey):
    sde = sf.VPSDE()
    score = case_a().noised(sde).score
    with pytest.raises(ValueError, match="`shape`"):
        sf.sample(sde, score, (2,), key=getkey())
    with pytest.raises(ValueError, match="`method`"):
        sf.sample(sde, score, (2, 2), method="euler", key=getkey())
    with pytest.raises(ValueError, match="either `grid`"):
        sf.sample(
            sde,
            score,
            (2, 2),
            grid=sf.solve.UniformGrid(3),
            stepsize_controller=dfx.PIDController(rtol=1e-3, atol=1e-3),
            key=getkey(),
        )
    with pytest.raises(ValueError, match="`num_steps`"):
        sf.solve.UniformGrid(0)
    with pytest.raises(ValueError, match="`ts`"):
        sf.solve.CustomGrid(jnp.asarray([0.1, 0.5, 1.0]))
    with pytest.raises(ValueError, match="`x_T`"):
        sf.solve.solve_probability_flow(sde, score, jnp.zeros(2))
    # Integer noise: jaxtyping's check (under pytest) or ours, both naming `x_T`.
    with pytest.raises((ValueError, TypeCheckError), match="x_T"):
        sf.solve.solve_probability_flow(sde, score, jnp.zeros((2, 2), jnp.int32))
    with pytest.raises(ValueError, match="`parameterisation`"):
        sf.sample(sde, score, (2, 2), parameterisation="noise", key=getkey())
