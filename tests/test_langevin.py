"""The Langevin family against exact targets (`scoreflow.analytic`)."""

import functools
from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from numpy.testing import assert_allclose

import scoreflow as sf

from .helpers import brownian_increment, case_a

WEIGHTS = [0.3, 0.05, 0.1, 0.05, 0.2, 0.1, 0.1, 0.1]
MEAN = jnp.array([1.0, -1.0])
COV = jnp.array([[1.0, 0.3], [0.3, 0.5]])
PREC = jnp.linalg.inv(COV)
CHAINS = 2000
NUM_STEPS = 300
SMALL, LARGE = 0.05, 0.5


def _gauss_score(x):
    return -PREC @ (x - MEAN)


def _gauss_log_prob(x):
    r = x - MEAN
    return -0.5 * r @ (PREC @ r)


def _ula_stationary_cov(h):
    # ULA on N(mu, S) is the AR(1) x' = (I - h P / 2) x + sqrt(h) z: its stationary
    # covariance is S (I - h P / 4)^{-1} (exact, eigenvalue by eigenvalue).
    return np.asarray(COV @ jnp.linalg.inv(jnp.eye(2) - h * PREC / 4))


def _assert_moments(x, mean, cov, nsd=5.0):
    n = x.shape[0]
    x = np.asarray(x)
    cov = np.asarray(cov)
    se_mean = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(x.mean(0) - np.asarray(mean)) < nsd * se_mean), (x.mean(0), mean)
    # Standard error of a sample covariance entry: sqrt((S_ii S_jj + S_ij^2) / n).
    se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    assert np.all(np.abs(np.cov(x.T) - cov) < nsd * se_cov), (np.cov(x.T), cov)


@functools.cache
def _chains():
    x0 = jnp.zeros((CHAINS, 2))
    out = {}
    for i, h in enumerate([SMALL, LARGE]):
        step = jnp.asarray(h)
        out["ula", h] = sf.solve.ula(
            _gauss_score, x0, step_size=step, num_steps=NUM_STEPS, key=jr.key(i)
        )
        out["mala", h] = sf.solve.mala(
            _gauss_log_prob, x0, step_size=step, num_steps=NUM_STEPS, key=jr.key(10 + i)
        )
    return out


@pytest.mark.parametrize("method", ["ula", "mala"])
def test_small_step_reaches_gaussian(method):
    res = _chains()[method, SMALL]
    assert res.samples.shape == (CHAINS, 2) and int(res.num_steps) == NUM_STEPS
    _assert_moments(res.samples, MEAN, COV)


def test_ula_bias_grows_with_step_as_predicted():
    res = _chains()["ula", LARGE]
    biased = _ula_stationary_cov(LARGE)
    # ULA's law at this step is measurably not the target, and is the predicted one.
    assert np.max(np.abs(biased - np.asarray(COV))) > 0.1
    _assert_moments(res.samples, MEAN, biased)
    with pytest.raises(AssertionError):
        _assert_moments(res.samples, MEAN, COV)


def test_mala_is_unbiased_at_large_step():
    res = _chains()["mala", LARGE]
    _assert_moments(res.samples, MEAN, COV)
    small = _chains()["mala", SMALL]
    rate, rate_small = res.acceptance_rate, small.acceptance_rate
    assert rate.shape == (CHAINS,)
    assert bool(jnp.all((rate >= 0) & (rate <= 1)))
    # A larger step is paid for in acceptance, not in bias.
    assert 0.5 < float(rate.mean()) < float(rate_small.mean()) <= 1.0
    assert int(res.nfe) == 2 * (NUM_STEPS + 1)


@pytest.mark.slow
def test_underdamped_langevin_reaches_gaussian():
    x0 = jnp.zeros((CHAINS, 2))
    res = sf.solve.underdamped_langevin(
        _gauss_score, x0, step_size=jnp.asarray(0.1), num_steps=300, gamma=2.0, key=jr.key(4)
    )
    _assert_moments(res.samples, MEAN, COV)
    # The velocities are N(0, u I) at stationarity.
    _assert_moments(res.velocities, jnp.zeros(2), jnp.eye(2))


def _component_chi2(mix, x):
    comp = jnp.argmax(mix.component_log_probs(x), axis=-1)
    counts = np.bincount(np.asarray(comp), minlength=mix.weights.shape[0])
    expected = x.shape[0] * np.asarray(mix.weights)
    return float(np.sum((counts - expected) ** 2 / expected)), counts


VE = sf.VESDE(sigma_min=0.01, sigma_max=20.0)
_VE_MODEL = sf.Prediction(VE, lambda t, x: -x, "score")
LADDER = jnp.geomspace(10.0, 0.05, 10)
EPS = jnp.asarray(2.5e-3)  # alpha_i = sigma_i^2 at the last level
N_ANNEAL = 2000


def test_annealed_langevin_recovers_weights_where_plain_langevin_does_not():
    mix = case_a(weights=WEIGHTS)
    score = mix.noised(VE).score
    x0 = jr.uniform(jr.key(5), (N_ANNEAL, 2), minval=-8.0, maxval=8.0)
    res = sf.solve.annealed_langevin(
        VE,
        mix.noised(VE),
        x0,
        ladder=LADDER,
        step_size=EPS,
        steps_per_level=50,
        save_every=50,
        key=jr.key(6),
    )
    assert res.trajectory is not None and res.ts is not None
    assert int(res.nfe) == 10 * 50 and res.trajectory.shape == (10, N_ANNEAL, 2)
    assert res.result == dfx.RESULTS.successful
    assert_allclose(res.ts, sf.solve.ladder_times(VE, LADDER))
    assert_allclose(res.trajectory[-1], res.samples)
    chi2, counts = _component_chi2(mix, res.samples)
    assert chi2 < 24.3, (chi2, counts)  # chi-square, 7 dof, p = 1e-3
    # Plain Langevin at the smallest noise level, from the same start, as many steps
    # at a (larger, still stable) step: the chains stay in the basin they start in.
    t_small = VE.t_from_log_snr(-jnp.log(LADDER[-1]))
    plain = sf.solve.ula(
        lambda x: score(t_small, x), x0, step_size=jnp.asarray(0.01), num_steps=500, key=jr.key(7)
    )
    chi2_plain, counts_plain = _component_chi2(mix, plain.samples)
    assert chi2_plain > 100.0, (chi2_plain, counts_plain)


@pytest.mark.slow
def test_annealed_langevin_reads_every_parameterisation():
    mix = case_a(weights=WEIGHTS)
    target = mix.noised(VE)
    x0 = jr.normal(jr.key(8), (16, 2))
    kw: dict[str, Any] = dict(
        ladder=LADDER[:4], step_size=jnp.asarray(1e-3), steps_per_level=3, key=jr.key(9)
    )
    a = sf.solve.annealed_langevin(VE, target, x0, **kw)
    b = sf.solve.annealed_langevin(VE, sf.Prediction(VE, target.eps, "eps"), x0, **kw)
    assert_allclose(a.samples, b.samples, rtol=1e-9, atol=1e-9)


def test_inpainting_matches_exact_conditional():
    # A mixture whose conditional is bimodal but connected, so that Algorithm 2's
    # approximation vanishes as the ladder's last levels relax (see its docstring).
    mix = sf.GaussianMixture(
        jnp.array([0.35, 0.65]),
        jnp.array([[-1.0, -1.5], [1.0, 1.0]]),
        jnp.array([[1.0, 1.0], [0.5, 0.6]]),
    )
    y = jnp.array([0.2, 0.0])
    known = jnp.array([True, False])
    cond = sf.analytic.conditional(mix, known, y)
    x0 = jr.uniform(jr.key(10), (N_ANNEAL, 2), minval=-8.0, maxval=8.0)
    res = sf.solve.annealed_langevin(
        VE,
        mix.noised(VE),
        x0,
        ladder=LADDER,
        step_size=EPS,
        steps_per_level=50,
        mask=known,
        observation=y,
        key=jr.key(11),
    )
    x = res.samples
    assert bool(jnp.all(x[:, 0] == y[0]))  # exactly the observation
    _assert_moments(x[:, 1:], cond.mean(), cond.covariance())
    # Mass per conditional component (2 - 1 dof, p = 1e-3).
    chi2, counts = _component_chi2(cond, x[:, 1:])
    assert chi2 < 10.8, (chi2, counts, cond.weights)


def test_exact_conditional_against_bayes_rule():
    # Full covariance: the conditional density equals p(x_u, y_k) / p(y_k), numerically.
    from .helpers import full_cov_mixture

    mix = full_cov_mixture()
    known = jnp.array([True, False, True])
    y = jnp.array([0.5, 0.0, -1.0])
    grid = jnp.linspace(-12.0, 12.0, 1201)

    @eqx.filter_jit  # the whole comparison at once: op by op, every primitive compiles
    def densities(mix, y):
        cond = sf.analytic.conditional(mix, known, y)
        joint = jnp.stack([jnp.full_like(grid, y[0]), grid, jnp.full_like(grid, y[2])], -1)
        log_joint = mix.log_prob(joint)
        log_marg = jax.nn.logsumexp(log_joint) + jnp.log(grid[1] - grid[0])
        return cond.log_prob(grid[:, None]), log_joint - log_marg

    got, want = densities(mix, y)
    assert_allclose(got, want, atol=1e-6)


@pytest.mark.slow
def test_langevin_corrector_preserves_the_marginal():
    # The corrector alone, on exact samples of p_t, must leave p_t (nearly) invariant.
    mix = case_a(weights=WEIGHTS)
    target = mix.noised(VE)
    t = VE.t_from_log_snr(-jnp.log(jnp.asarray(1.0)))
    x = target.sample(t, 8000, key=jr.key(12))
    score = jax.vmap(target.score, in_axes=(None, 0))
    corr = sf.solve.LangevinCorrector(snr=0.16, num_steps=20)
    y = eqx.filter_jit(lambda t, x, k: corr.correct(score, t, x, jnp.asarray(1.0), key=k))(
        t, x, jr.key(13)
    )
    exact = mix.noised(VE).sample(t, 8000, key=jr.key(14))
    cov = np.cov(np.asarray(exact).T)
    _assert_moments(y, mix.mean(), cov, nsd=6.0)
    assert float(jnp.max(jnp.abs(y - x))) > 0.1  # it did move


def test_predictor_corrector_reproduces_mixture():
    mix = case_a(weights=WEIGHTS)
    # 2000 samples: at 60 steps the log-density gap is about -0.03 with a Monte Carlo
    # spread of 0.02 (measured over seeds); 1000 samples left it too close to 0.1.
    y0 = VE.prior_sample((N_ANNEAL, 2), key=jr.key(15))
    pc = sf.solve.PredictorCorrector(dfx.Euler(), sf.solve.LangevinCorrector(), key=jr.key(16))
    res = sf.solve.solve_reverse_sde(
        VE, mix.noised(VE), y0, solver=pc, grid=sf.solve.UniformGrid(60), key=jr.key(23)
    )
    assert int(res.nfe) == 60 * 2 + 1 and int(res.num_steps) == 60
    chi2, counts = _component_chi2(mix, res.samples)
    assert chi2 < 24.3, (chi2, counts)
    exact = mix.sample(50000, key=jr.key(17))
    gap = float(mix.log_prob(res.samples).mean() - mix.log_prob(exact).mean())
    assert abs(gap) < 0.1, gap


@pytest.mark.slow
def test_predictor_corrector_with_ode_heun_predictor():
    mix = case_a(weights=WEIGHTS)
    y0 = VE.prior_sample((N_ANNEAL, 2), key=jr.key(18))
    corrector = sf.solve.LangevinCorrector(num_steps=2)
    res = sf.solve.solve_probability_flow(
        VE,
        mix.noised(VE),
        y0,
        solver=sf.solve.PredictorCorrector(dfx.Heun(), corrector, key=jr.key(19)),
        grid=sf.solve.UniformGrid(60),
    )
    assert int(res.nfe) == 60 * (2 + 2) + 1
    chi2, counts = _component_chi2(mix, res.samples)
    assert chi2 < 24.3, (chi2, counts)


# Bad input: clear errors naming the argument.


def test_bad_step_size():
    x0 = jnp.zeros((4, 2))
    for fn, target in [(sf.solve.ula, _gauss_score), (sf.solve.mala, _gauss_log_prob)]:
        for bad in [0.0, -0.1, jnp.asarray(-1.0)]:
            with pytest.raises(ValueError, match="`step_size`"):
                fn(target, x0, step_size=bad, num_steps=3, key=jr.key(0))
    with pytest.raises(ValueError, match="`step_size`"):
        sf.solve.annealed_langevin(
            VE, _VE_MODEL, x0, ladder=LADDER, step_size=0.0, steps_per_level=2, key=jr.key(0)
        )
    with pytest.raises(ValueError, match="`gamma`"):
        sf.solve.underdamped_langevin(
            _gauss_score, x0, step_size=0.1, num_steps=3, gamma=0.0, key=jr.key(0)
        )


@pytest.mark.parametrize(
    "ladder", [jnp.array([0.1, 1.0, 10.0]), jnp.array([1.0, 1.0, 0.5]), jnp.array([1.0, -0.5])]
)
def test_bad_ladder(ladder):
    with pytest.raises(ValueError, match="`ladder`"):
        sf.solve.annealed_langevin(
            VE,
            _VE_MODEL,
            jnp.zeros((4, 2)),
            ladder=ladder,
            step_size=1e-3,
            steps_per_level=2,
            key=jr.key(0),
        )


@pytest.mark.parametrize(
    "sigmas", [[0.3], [1.2, 1.0], [2.0, 1.0, 0.7], list(sf.models.geometric_sigmas())]
)
def test_ladder_sde_covers_its_ladder(sigmas):
    # The VE marginal's sigma_T^2 = sigma_max^2 - sigma_min^2: a ladder whose levels are
    # close (a single level: the EBM's denoising score matching) must still map to times
    # inside [t_min, T], and back to its own noise levels.
    from scoreflow.models._ncsn import ladder_sde

    sigmas = jnp.asarray(sigmas)
    sde = ladder_sde(sigmas)
    times = sf.solve.ladder_times(sde, sigmas)
    assert jnp.all((times >= sde.t_min) & (times <= sde.T))
    assert_allclose(sde.marginal(times)[1], sigmas, rtol=1e-6)


@pytest.mark.parametrize("mask", [jnp.array([True, False, True]), jnp.ones((3, 2), bool)])
def test_bad_mask(mask):
    with pytest.raises(ValueError, match="`mask`"):
        sf.solve.annealed_langevin(
            VE,
            _VE_MODEL,
            jnp.zeros((4, 2)),
            ladder=LADDER,
            step_size=1e-3,
            steps_per_level=2,
            mask=mask,
            observation=jnp.zeros(2),
            key=jr.key(0),
        )
    with pytest.raises(ValueError, match="`mask`"):
        sf.analytic.conditional(case_a(), mask, jnp.zeros(2))


def test_bad_corrector_and_terms():
    with pytest.raises(ValueError, match="`snr`"):
        sf.solve.LangevinCorrector(snr=0.0)
    with pytest.raises(ValueError, match="`num_steps`"):
        sf.solve.LangevinCorrector(num_steps=0)
    # The corrector reads the score from scoreflow's terms; a bare ODE term has none.
    pc = sf.solve.PredictorCorrector(dfx.Euler(), sf.solve.LangevinCorrector(), key=jr.key(0))
    with pytest.raises(ValueError, match="reads the score"):
        dfx.diffeqsolve(dfx.ODETerm(lambda t, y, args: -y), pc, 1.0, 0.5, -0.1, jnp.zeros((4, 2)))


def test_predictor_corrector_takes_any_controller_and_reports_failures():
    # A plain diffrax solver: an adaptive predictor under a PID controller works, and a
    # step budget too small for the solve is a result code with `throw=False`.
    mix = case_a(weights=WEIGHTS)
    y0 = VE.prior_sample((64, 2), key=jr.key(30))
    pc = sf.solve.PredictorCorrector(dfx.Heun(), sf.solve.LangevinCorrector(), key=jr.key(31))
    ok = sf.solve.solve_probability_flow(
        VE,
        mix.noised(VE),
        y0,
        solver=pc,
        stepsize_controller=dfx.PIDController(rtol=1e-3, atol=1e-3),
    )
    assert ok.result == dfx.RESULTS.successful and int(ok.num_steps) > 0
    failed = sf.solve.solve_probability_flow(
        VE,
        mix.noised(VE),
        y0,
        solver=pc,
        max_steps=3,
        throw=False,
        stepsize_controller=dfx.PIDController(rtol=1e-3, atol=1e-3),
    )
    assert failed.result == dfx.RESULTS.max_steps_reached


class _ScaledScore(eqx.Module):
    """score(t, x) = c x, with c an array: every c shares one compiled solve."""

    c: jax.Array

    def __call__(self, t, x):
        return self.c * x


def test_annealed_langevin_reports_the_real_result_code():
    # A level whose score is NaN fails its solve: with throw=False the record says so.
    # The score NaN * x is NaN everywhere (at x = 0 too); -1 * x is `_VE_MODEL`'s.
    model = lambda c: sf.Prediction(VE, _ScaledScore(jnp.asarray(c)), "score")
    kw: dict[str, Any] = dict(
        ladder=LADDER[:3], step_size=jnp.asarray(1e-3), steps_per_level=2, key=jr.key(0)
    )
    res = sf.solve.annealed_langevin(VE, model(jnp.nan), jnp.zeros((4, 2)), throw=False, **kw)
    ok = sf.solve.annealed_langevin(VE, model(-1.0), jnp.zeros((4, 2)), throw=False, **kw)
    assert ok.result == dfx.RESULTS.successful
    assert res.result != dfx.RESULTS.successful
    assert res.stats["num_steps"].shape == (3,)


def test_langevin_step_is_diffrax_euler_on_the_langevin_terms():
    # The one Langevin step (MALA's proposal, the corrector) is bit for bit what
    # diffrax's Euler computes on `langevin_terms` (ULA, annealed Langevin).
    score = lambda t, x: -PREC @ (x - MEAN)
    ts = jnp.asarray([0.0, 0.37])
    x = jnp.asarray([0.3, -0.8])
    path = sf.solve.GridBrownianPath(ts, x.shape, key=jr.key(3))
    terms = sf.sde.langevin_terms(score, path)
    euler, *_ = dfx.Euler().step(terms, ts[0], ts[1], x, None, None, False)
    ours = sf.solve.langevin_step(
        terms, ts[0], x, ts[1] - ts[0], brownian_increment(path, ts[0], ts[1])
    )
    assert bool(jnp.all(euler == ours))


@pytest.mark.slow
def test_mala_rejects_proposals_outside_the_support():
    # log pi = -inf outside a box: chains started inside never leave it.
    def log_prob(x):
        return jnp.where(jnp.all(jnp.abs(x) < 1), 0.0, -jnp.inf)

    res = sf.solve.mala(
        log_prob,
        jnp.zeros((256, 2)),
        score=lambda x: jnp.zeros_like(x),
        step_size=jnp.asarray(1.0),
        num_steps=50,
        key=jr.key(20),
    )
    assert bool(jnp.all(jnp.abs(res.samples) < 1))
    assert res.acceptance_rate is not None
    assert 0.0 < float(res.acceptance_rate.mean()) < 0.9


@pytest.mark.slow
def test_annealed_langevin_on_a_vp_grid_ladder():
    # Any SDE and a scoreflow grid as the ladder: VP, log-SNR grid, eps-parameterised.
    sde = sf.VPSDE()
    mix = case_a(weights=WEIGHTS)
    target = mix.noised(sde)
    x0 = sde.prior_sample((N_ANNEAL, 2), key=jr.key(21))
    res = sf.solve.annealed_langevin(
        sde,
        sf.Prediction(sde, target.eps, "eps"),
        x0,
        ladder=sf.solve.LogSNRGrid(20),
        step_size=jnp.asarray(1e-4),
        steps_per_level=50,
        denoise=True,
        key=jr.key(22),
    )
    assert int(res.nfe) == 21 * 50 + 1
    chi2, counts = _component_chi2(mix, res.samples)
    assert chi2 < 24.3, (chi2, counts)
