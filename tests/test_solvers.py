from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.integrate import quad

import scoreflow as sf
from scoreflow.solve import (
    DDIM,
    DPMSolverPP,
    EDMHeun,
    ExponentialAdamsPC,
    StochasticDDIM,
    StochasticEDMHeun,
)

from .helpers import SDES, case_a
from .test_sample import _check_reproduces_mixture

S = sf.solve


@eqx.filter_jit
def _init(solver, term, t0, t1, x):
    return solver.init(term, t0, t1, x, None)


@eqx.filter_jit
def _step(solver, term, t0, t1, x, state):
    return solver.step(term, t0, t1, x, None, state, False)[::3]


def _run_steps(solver, sde, model, x, ts):
    """Step a deterministic solver along `ts` (one compilation per solver, any length)."""
    term = sf.sde.probability_flow_term(sde, model)
    state = _init(solver, term, ts[0], ts[1], x)
    for t0, t1 in zip(ts[:-1], ts[1:]):
        x, state = _step(solver, term, t0, t1, x, state)
    return x


ORDERS = [
    (DDIM(), 1),
    (DPMSolverPP(1), 1),
    (DPMSolverPP(2), 2),
    (DPMSolverPP(3), 3),
    (EDMHeun(), 2),
    (ExponentialAdamsPC(1), 2),
    (ExponentialAdamsPC(2), 3),
    (ExponentialAdamsPC(3), 4),
]


@pytest.mark.parametrize("sde_name", ["vp", pytest.param("edm", marks=pytest.mark.slow)])
@pytest.mark.parametrize("solver,order", ORDERS, ids=lambda v: repr(v))
def test_solver_reaches_its_order(solver, order, sde_name):
    # Richardson estimate on the exact mixture: with N, 2N, 4N log-SNR-uniform steps,
    # |x_N - x_2N| / |x_2N - x_4N| -> 2^p (float64; no reference solve needed).
    sde = SDES[sde_name]()
    mix = case_a(weights=[0.3, 0.05, 0.1, 0.05, 0.2, 0.1, 0.1, 0.1])
    noisy = mix.noised(sde, "x0")
    x = sde.prior_sample((16, 2), key=jax.random.key(0))
    # From the noise end (where a multistep method's lower-order warm start costs
    # nothing: x0_hat is nearly constant there) to log-SNR 2.
    lam0, lam1 = float(sde.log_snr(sde.T)), 2.0
    outs = []
    for n in (24, 48, 96):
        ts = sde.t_from_log_snr(jnp.linspace(lam0, lam1, n + 1))
        outs.append(_run_steps(solver, sde, noisy, x, ts))
    e1 = float(jnp.sqrt(jnp.mean((outs[0] - outs[1]) ** 2)))
    e2 = float(jnp.sqrt(jnp.mean((outs[1] - outs[2]) ** 2)))
    slope = np.log2(e1 / e2)
    assert abs(slope - order) < 0.35, (slope, order, e1, e2)


@pytest.mark.parametrize("sde_name", SDES)
def test_ddim_step_is_first_order_exponential_integrator(sde_name):
    sde = SDES[sde_name]()
    noisy = case_a().noised(sde, "x0")
    t0 = 0.3 * sde.T + 0.7 * sde.t_min
    t1 = 0.2 * sde.T + 0.8 * sde.t_min
    x = sf.GaussianMixture(jnp.array([1.0]), jnp.zeros((1, 2)), jnp.ones((1, 2))).sample(
        5, key=jax.random.key(1)
    )
    x = x * sde.marginal(t0)[1] * 2.0
    got = _run_steps(DDIM(), sde, noisy, x, jnp.stack([t0, t1]))
    d = np.asarray(noisy.denoise(t0, x))
    a0, s0 = (float(v) for v in sde.marginal(t0))
    a1, s1 = (float(v) for v in sde.marginal(t1))
    # DDIM, Song et al. 2021 eq. 12 (eta = 0): x1 = a1 x0_hat + s1 eps_hat.
    eps = (np.asarray(x) - a0 * d) / s0
    assert_allclose(got, a1 * d + s1 * eps, rtol=1e-10, atol=1e-12)
    # The exponential integrator with x0_hat frozen: x1 = (s1/s0) x + s1 int e^lam d lam x0_hat,
    # the integral done numerically.
    l0, l1 = float(sde.log_snr(t0)), float(sde.log_snr(t1))
    integral, _ = quad(np.exp, l0, l1, epsabs=1e-14, epsrel=1e-13)
    assert_allclose(got, (s1 / s0) * np.asarray(x) + s1 * integral * d, rtol=1e-9, atol=1e-12)


def test_exponential_weights_integrate_polynomials_exactly():
    # sigma_s int e^lam P(lam) dlam for P a cubic, against scipy quadrature.
    nodes = jnp.array([0.3, -0.1, -0.6, -1.2])
    coef = np.array([0.7, -1.3, 0.4, 0.25])
    P = lambda lam: np.polyval(coef, lam)
    lt, ls, alpha_s = 0.3, 1.4, 0.8
    sigma_s = alpha_s * np.exp(-ls)
    w = S.exponential_weights(nodes, jnp.asarray(lt), jnp.asarray(ls), jnp.asarray(alpha_s))
    exact = sigma_s * quad(lambda lam: np.exp(lam) * P(lam), lt, ls, epsabs=1e-14)[0]
    assert_allclose(float(jnp.sum(w * P(np.asarray(nodes)))), exact, rtol=1e-11)
    # Tiny steps in float32: no cancellation, the weights sum to alpha_s (1 - e^{-h}).
    h = float(np.float32(1e-6))
    f32 = jnp.float32
    w = S.exponential_weights(nodes.astype(f32), f32(0.0), f32(h), f32(alpha_s))
    assert w.dtype == f32
    assert_allclose(float(jnp.sum(w)), alpha_s * -np.expm1(-h), rtol=1e-5)


@pytest.mark.slow
def test_nfe_is_counted_and_final_denoise_is_free_for_pc(getkey):
    sde = sf.EDMSDE()
    noisy = case_a().noised(sde, "x0")
    y0 = sde.prior_sample((256, 2), key=getkey())
    kw: dict[str, Any] = dict(solver=ExponentialAdamsPC(3), grid=S.KarrasGrid(39))
    res = S.solve_probability_flow(sde, noisy, y0, **kw)
    raw = S.solve_probability_flow(sde, noisy, y0, denoise=False, **kw)
    assert int(res.nfe) == 40 and int(raw.nfe) == 40
    # The call-free finish equals the explicit final denoise at t_min up to
    # O(sigma_min^2 |x - x_pred|).
    explicit = noisy.denoise(sde.t_min, raw.samples)
    assert_allclose(res.samples, explicit, atol=1e-8)
    assert float(jnp.max(jnp.abs(res.samples - raw.samples))) > 1e-6


@pytest.mark.slow
def test_adaptive_pc_reports_nfe(getkey):
    sde = sf.VPSDE()
    mix = case_a()
    y0 = sde.prior_sample((256, 2), key=getkey())
    kw: dict[str, Any] = dict(solver=ExponentialAdamsPC(3))
    fine = S.solve_probability_flow(sde, mix.noised(sde, "x0"), y0, grid=S.LogSNRGrid(400), **kw)
    res = S.solve_probability_flow(
        sde,
        mix.noised(sde, "x0"),
        y0,
        stepsize_controller=dfx.PIDController(rtol=1e-5, atol=1e-5),
        **kw,
    )
    assert int(res.nfe) == int(res.num_steps) + 1
    assert 10 < int(res.num_steps) < 400
    err = float(jnp.sqrt(jnp.mean((res.samples - fine.samples) ** 2)))
    assert err < 1e-3, err


@pytest.mark.parametrize(
    "solver",
    [StochasticDDIM(), pytest.param(StochasticEDMHeun(churn=0.3), marks=pytest.mark.slow)],
    ids=repr,
)
def test_stochastic_solvers_reproduce_mixture(solver, getkey):
    sde = sf.VPSDE()
    mix = case_a(weights=[0.3, 0.05, 0.1, 0.05, 0.2, 0.1, 0.1, 0.1])
    res = sf.sample(
        sde,
        mix.noised(sde, "x0"),
        (6000, 2),
        method="sde",
        key=getkey(),
        solver=solver,
        grid=S.LogSNRGrid(200),
    )
    ev = solver.evals_per_step[0]
    assert int(res.nfe) == 200 * ev + 1
    _check_reproduces_mixture(mix, res.samples)


@pytest.mark.parametrize(
    "sde_name,solver",
    [
        ("vp", ExponentialAdamsPC(3)),
        pytest.param("ve", DPMSolverPP(3), marks=pytest.mark.slow),
        pytest.param("edm", StochasticDDIM(eta=0.5), marks=pytest.mark.slow),
    ],
    ids=str,
)
def test_float32_solves_stay_finite(sde_name, solver, getkey):
    sde = SDES[sde_name]()
    mix = case_a(dtype=jnp.float32)
    method = "sde" if isinstance(solver, S.AbstractStochasticDiffusionSolver) else "ode"
    res = sf.sample(
        sde,
        mix.noised(sde, "x0"),
        (512, 2),
        method=method,
        dtype=jnp.float32,
        key=getkey(),
        solver=solver,
        grid=S.KarrasGrid(30),
    )
    assert res.samples.dtype == jnp.float32
    assert solver.evals_per_step is not None
    ev, at_init = solver.evals_per_step
    free = isinstance(solver, ExponentialAdamsPC)
    assert int(res.nfe) == 30 * ev + at_init + (0 if free else 1)
    assert bool(jnp.all(jnp.isfinite(res.samples)))
    assert float(jnp.max(jnp.abs(res.samples))) < 10.0


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="`order` must be 1, 2 or 3"):
        DPMSolverPP(4)
    with pytest.raises(ValueError, match="`order` must be 1, 2, 3 or 4"):
        ExponentialAdamsPC(0)
    with pytest.raises(ValueError, match="`eta` must be a float in"):
        StochasticDDIM(eta=1.5)
    with pytest.raises(ValueError, match="`eta` must be a float in"):
        StochasticDDIM(eta=0.0)
    with pytest.raises(ValueError, match="`churn` must be a float > 0"):
        StochasticEDMHeun(churn=-0.1)
    sde = sf.VPSDE()
    score = case_a().noised(sde)
    x = jnp.zeros((4, 2))
    with pytest.raises(ValueError, match="use `solve_reverse_sde`"):
        S.solve_probability_flow(sde, score, x, solver=StochasticDDIM())
    with pytest.raises(ValueError, match="is deterministic"):
        S.solve_reverse_sde(sde, score, x, solver=DPMSolverPP(2), key=jax.random.key(0))


def _design_mixture():
    # A random mixture that is neither case A nor case B (those are the benchmark's).
    r = np.random.default_rng(17)
    k, d = int(r.integers(2, 9)), int(r.integers(2, 10))
    mu = r.normal(0, r.uniform(1, 5), size=(k, d))
    var = r.uniform(0.1, 1.5, size=(k, d)) ** 2
    w = r.dirichlet(np.ones(k))
    return sf.GaussianMixture(jnp.asarray(w), jnp.asarray(mu), jnp.asarray(var)), d


@pytest.mark.slow
def test_calibrated_grid_beats_fixed_rules():
    mix, d = _design_mixture()
    sde = sf.EDMSDE()
    denoise = mix.noised(sde, "x0")
    pilot = jnp.asarray(80 * np.random.default_rng(99).standard_normal((256, d)))
    x = jnp.asarray(80 * np.random.default_rng(3).standard_normal((512, d)))
    equi = sf.solve.calibrate_grid(sde, denoise, pilot, 19, optimise_steps=0)
    grid = sf.solve.calibrate_grid(sde, denoise, pilot, 19)
    for g in (equi, grid):
        ts = np.asarray(g.times(sde))
        assert ts.shape == (20,) and ts[0] == sde.T and ts[-1] == sde.t_min
        assert np.all(np.diff(ts) < 0)

    def solve(g):
        res = sf.solve.solve_probability_flow(sde, denoise, x, solver=ExponentialAdamsPC(3), grid=g)
        return np.asarray(res.samples)

    ref = solve(sf.solve.LogSNRGrid(400))
    rms = lambda g: np.sqrt(np.mean((solve(g) - ref) ** 2))
    fixed = min(rms(sf.solve.KarrasGrid(19)), rms(sf.solve.LogSNRGrid(19)))
    # Measured: equidistribution alone 0.017, against 0.038 (Karras) and 0.041
    # (log-SNR) at 20 NFE; the end-point optimisation improves on it.
    assert rms(equi) < 0.6 * fixed
    assert rms(grid) < rms(equi)


def test_calibrate_grid_bad_inputs():
    mix, d = _design_mixture()
    sde = sf.EDMSDE()
    pilot = jnp.zeros((4, d))
    den = mix.noised(sde, "x0")
    cal = sf.solve.calibrate_grid
    with pytest.raises(ValueError, match="relaxation"):
        cal(sde, den, pilot, 5, relaxation=0.0)
    with pytest.raises(ValueError, match="iterations"):
        cal(sde, den, pilot, 5, iterations=0)
    with pytest.raises(ValueError, match="initial"):
        cal(sde, den, pilot, 5, initial=sf.solve.KarrasGrid(4))
    with pytest.raises(ValueError, match="`y0`"):
        cal(sde, den, jnp.zeros((d,)), 5)
    with pytest.raises(ValueError, match="optimise_steps"):
        cal(sde, den, pilot, 5, optimise_steps=-1)
    with pytest.raises(ValueError, match="learning_rate"):
        cal(sde, den, pilot, 5, learning_rate=0.0)
    with pytest.raises(ValueError, match="`y0` needs at least 4"):
        cal(sde, den, pilot[:3], 5)
    # A valid stage-1 call (stage 2 is exercised by the slow test): ends pinned,
    # strictly decreasing.
    grid = cal(sde, den, 80 * pilot + 1.0, 5, optimise_steps=0)
    ts = np.asarray(grid.times(sde))
    assert ts.shape == (6,) and ts[0] == sde.T and ts[-1] == sde.t_min
    assert np.all(np.diff(ts) < 0)


def test_diffrax_reversed_time_is_unwrapped():
    # diffrax has no public name for the wrapper of a reversed-time solve's terms; this
    # pins the private import `real_time` relies on (a diffrax upgrade that moves it
    # fails here, not deep inside a solve).
    from diffrax._term import WrapTerm

    from scoreflow.solve._shared._time import real_time

    sde = sf.VPSDE()
    term = sf.sde.probability_flow_term(sde, case_a().noised(sde))
    wrapped = WrapTerm(term, jnp.asarray(-1))
    inner, t0, t1 = real_time(wrapped, jnp.asarray(-0.8), jnp.asarray(-0.3))
    assert inner is term and float(t0) == 0.8 and float(t1) == 0.3
    assert real_time(term, 0.8, 0.3)[0] is term
    # And the solvers see it: a diffrax solve from T down to t_min wraps the term.
    seen = []

    class Spy(sf.solve.AbstractDiffusionSolver):
        evals_per_step = (0, 0)

        def order(self, terms):
            return 1

        def init(self, terms, t0, t1, y0, args):
            seen.append(type(terms))
            return None

        def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
            return y0, None, dict(y0=y0, y1=y0), None, dfx.RESULTS.successful

    S.solve_probability_flow(
        sde,
        case_a().noised(sde),
        jnp.zeros((2, 2)),
        solver=Spy(),
        grid=S.UniformGrid(2),
        denoise=False,
    )
    assert seen == [WrapTerm]


def test_solver_capabilities_are_types():
    # A solver that does not state its cost cannot be made.
    class Forgetful(sf.solve.AbstractDiffusionSolver):
        def order(self, terms):
            return 1

        def init(self, terms, t0, t1, y0, args):
            return None

        def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
            raise NotImplementedError

    with pytest.raises(TypeError, match="evals_per_step"):
        Forgetful()
    for solver in (DDIM(), DPMSolverPP(2), EDMHeun(), ExponentialAdamsPC(3)):
        assert not isinstance(solver, S.AbstractStochasticDiffusionSolver)
        assert S.evals_per_step(solver) is not None
    for solver in (StochasticDDIM(), StochasticEDMHeun(churn=0.1)):
        assert isinstance(solver, S.AbstractStochasticDiffusionSolver)
    pc = S.PredictorCorrector(dfx.Heun(), S.LangevinCorrector(num_steps=2), key=jax.random.key(0))
    assert S.evals_per_step(pc) == (2 + 0 + 2, 0)
    assert S.evals_per_step(dfx.Tsit5()) == (6, 1)  # 7 stages, first same as last
    assert S.evals_per_step(dfx.Kvaerno5()) is None


def test_ddpm_ancestral_is_stochastic_ddim_at_eta_one(getkey):
    # Ho et al.'s Algorithm 2 on DDPM's own grid: x_{i-1} = (x_i - b/sqrt(1-ab) eps)/sqrt(a)
    # + sqrt(beta_tilde) z, with z the grid path's standard normal of that step.
    betas = sf.sde.linear_betas(20, 1e-3, 0.3)
    sde = sf.sde.DiscreteVPSDE(betas)
    model = sf.Gaussian(jnp.asarray([1.0, -1.0]), jnp.asarray([0.3, 0.5])).noised(sde, "eps")
    y0 = sde.prior_sample((5, 2), key=getkey())
    key = getkey()
    ts = sde.step_times()[::-1]
    grid = S.CustomGrid(ts)
    got = S.solve_reverse_sde(
        sde, model, y0, grid=grid, solver=StochasticDDIM(), denoise=False, key=key
    ).samples
    path = S.GridBrownianPath(grid.times(sde), y0.shape, key=key)
    b = np.asarray(betas)
    ab = np.cumprod(1 - b)
    x = np.asarray(y0)
    step = jax.jit(lambda t0, t1, x: (model(t0, x), path.evaluate(t0, t1)))
    for i in range(19, 0, -1):  # steps i+1 -> i (1-based), t = (i+1)/20 -> i/20
        t_hi, t_lo = ts[19 - i], ts[20 - i]
        eps, dw = (np.asarray(v) for v in step(t_hi, t_lo, jnp.asarray(x)))
        t_hi, t_lo = float(t_hi), float(t_lo)
        mean = (x - b[i] / np.sqrt(1 - ab[i]) * eps) / np.sqrt(1 - b[i])
        var = b[i] * (1 - ab[i - 1]) / (1 - ab[i])
        z = dw / np.sqrt(t_hi - t_lo)
        x = mean + np.sqrt(var) * z
    assert_allclose(got, x, rtol=1e-8, atol=1e-10)
