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
        mix.noised(sde),
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
        mix.noised(sde),
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
    y0 = sde.prior_sample((64, 2), key=getkey())
    score = mix.noised(sde)
    loose = sf.solve.solve_probability_flow(
        sde,
        score,
        y0,
        solver=dfx.Tsit5(),
        stepsize_controller=dfx.PIDController(rtol=1e-4, atol=1e-4),
    )
    tight = sf.solve.solve_probability_flow(
        sde,
        score,
        y0,
        solver=dfx.Tsit5(),
        stepsize_controller=dfx.PIDController(rtol=1e-9, atol=1e-9),
    )
    assert loose.result == dfx.RESULTS.successful
    assert 0 < int(loose.num_steps) < int(tight.num_steps)
    assert int(tight.nfe) == 6 * int(tight.num_steps) + 1 + 1
    assert float(jnp.max(jnp.abs(loose.samples - tight.samples))) < 1e-2


@eqx.filter_jit
def _by_hand(sde, model, y0, path, solver, controller, dt0):
    # The reverse SDE solved directly with diffrax on a given Brownian path (jitted
    # whole: eager, every operation around the solve compiles on its own).
    terms = sf.sde.reverse_sde_terms(sde, model, path)
    sol = dfx.diffeqsolve(
        terms, solver, sde.T, sde.t_min, dt0, y0, stepsize_controller=controller, max_steps=4096
    )
    assert sol.ys is not None
    return terms.terms[0].denoise(sde.t_min, sol.ys[-1])


def test_adaptive_reverse_sde_uses_brownian_tree(getkey):
    # The adaptive solve's Brownian motion is exactly a VirtualBrownianTree of the
    # documented tolerance on [t_min, T] (the same samples as that tree by hand). A fixed
    # grid's is the GridBrownianPath of that grid: test_solvers.py's
    # test_ddpm_ancestral_is_stochastic_ddim_at_eta_one checks that by hand.
    sde = sf.VPSDE()
    model = case_a().noised(sde)
    y0 = sde.prior_sample((32, 2), key=getkey())
    key = getkey()
    controller = dfx.PIDController(rtol=1e-2, atol=1e-2)
    res = sf.solve.solve_reverse_sde(
        sde, model, y0, solver=dfx.Heun(), stepsize_controller=controller, key=key
    )
    assert res.result == dfx.RESULTS.successful and int(res.num_steps) > 0
    # VPSDE's default times are Python floats (what the by-hand tree must be given).
    assert isinstance(sde.t_min, float) and isinstance(sde.T, float)
    tree = dfx.VirtualBrownianTree(
        sde.t_min, sde.T, tol=1e-4, shape=jax.ShapeDtypeStruct(y0.shape, y0.dtype), key=key
    )
    dt0 = -(sde.T - sde.t_min) / 64
    want = _by_hand(sde, model, y0, tree, dfx.Heun(), controller, dt0)
    assert_allclose(res.samples, want, rtol=1e-12, atol=1e-12)


# Order of each diffrax solver on the probability-flow ODE of case A under the VP SDE,
# by Richardson: with N, 2N, 4N log-SNR-uniform steps |x_N - x_2N| / |x_2N - x_4N| -> 2^p
# (float64; no reference solve needed). From 64 steps: at 32 the estimate is still
# preasymptotic (Midpoint 1.72, Bosh3 2.74; from 64: 1.04, 1.94, 1.85, 2.88).
# (Midpoint and Bosh3 under `slow`: the default run checks a first- and a second-order one.)
ORDERS = [
    (dfx.Euler(), 1),
    (dfx.Heun(), 2),
    pytest.param(dfx.Midpoint(), 2, marks=pytest.mark.slow),
    pytest.param(dfx.Bosh3(), 3, marks=pytest.mark.slow),
]


@pytest.mark.parametrize("solver, order", ORDERS, ids=lambda s: type(s).__name__)
def test_probability_flow_convergence_order(solver, order):
    sde = sf.VPSDE()
    score = case_a().noised(sde)
    y0 = sde.prior_sample((32, 2), key=jr.key(0))
    outs = [
        sf.solve.solve_probability_flow(
            sde, score, y0, solver=solver, grid=sf.solve.LogSNRGrid(n), denoise=False
        ).samples
        for n in (64, 128, 256)
    ]
    e1 = float(jnp.sqrt(jnp.mean((outs[0] - outs[1]) ** 2)))
    e2 = float(jnp.sqrt(jnp.mean((outs[1] - outs[2]) ** 2)))
    slope = np.log2(e1 / e2)
    assert abs(slope - order) < 0.25, (e1, e2, slope)


def test_no_recompile_when_only_values_change(getkey):
    traces = []

    class Model(eqx.Module):
        w: jax.Array

        def __call__(self, t, x):
            traces.append(None)
            return self.w * x

    sde = sf.VPSDE()
    grid = sf.solve.UniformGrid(5)

    def run(w):
        model = sf.Prediction(sde, Model(jnp.asarray(-w)), "score")
        y0 = sde.prior_sample((16, 2), key=getkey())
        sf.solve.solve_probability_flow(sde, model, y0, grid=grid)
        sf.solve.solve_reverse_sde(sde, model, y0, grid=grid, key=getkey())

    for w in (1.0, 2.0, 3.0):
        run(w)
    n_first = len(traces)
    for w in (4.0, 5.0):
        run(w)
    assert len(traces) == n_first


def test_sample_is_vmappable_over_keys():
    sde = sf.VPSDE()
    score = case_a().noised(sde)
    keys = jr.split(jr.key(0), 3)
    batched = jax.vmap(
        lambda k: sf.sample(sde, score, (4, 2), grid=sf.solve.UniformGrid(10), key=k).samples
    )(keys)
    single = sf.sample(sde, score, (4, 2), grid=sf.solve.UniformGrid(10), key=keys[1]).samples
    assert batched.shape == (3, 4, 2)
    assert_allclose(batched[1], single, rtol=1e-10)


@pytest.mark.parametrize("method", ["ode", pytest.param("sde", marks=pytest.mark.slow)])
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
        model = sf.Prediction(sde, Tempered(log_c, noisy), "score")
        res = sf.sample(
            sde,
            model,
            (64, 2),
            method=method,
            grid=sf.solve.UniformGrid(20),
            key=jr.key(3),
        )
        return jnp.mean(res.samples**2)

    # Jitted whole: eager, the prior draw and the loss compile op by op, under the
    # gradient's trace as well.
    c = jnp.asarray(0.1)
    g = jax.jit(jax.grad(loss))(c)
    h = 1e-5
    value = jax.jit(loss)
    fd = (value(c + h) - value(c - h)) / (2 * h)
    assert_allclose(g, fd, rtol=1e-5)


def test_float32_sampling_is_finite(getkey):
    # The two hardest float32 cases: VP's probability flow (alpha_T ~ 7e-3) and EDM's
    # reverse SDE down to sigma = 0.002; the diffusion solvers' float32 tests cover the rest.
    for sde, method in ((sf.VPSDE(), "ode"), (sf.EDMSDE(), "sde")):
        mix = case_a(jnp.float32)
        res = sf.sample(
            sde,
            mix.noised(sde),
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
        case_a().noised(sde),
        (8, 2),
        grid=sf.solve.UniformGrid(10),
        ts_save=ts,
        key=getkey(),
    )
    assert res.trajectory is not None and res.ts is not None
    assert res.trajectory.shape == (3, 8, 2)
    assert_allclose(res.ts, ts)


def test_bad_input(getkey):
    sde = sf.VPSDE()
    score = case_a().noised(sde)
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
    with pytest.raises(ValueError, match="`y0`"):
        sf.solve.solve_probability_flow(sde, score, jnp.zeros(2))
    # Integer noise: jaxtyping's check (under pytest) or ours, both naming `y0`.
    with pytest.raises((ValueError, TypeCheckError), match="y0"):
        sf.solve.solve_probability_flow(sde, score, jnp.zeros((2, 2), jnp.int32))
    with pytest.raises(TypeError):
        sf.sample(sde, score, (2, 2), parameterisation="score", key=getkey())


# A network of known output, read as each parameterisation: every entry point must
# honour what the model says it predicts, and refuse a bare function or a model of
# another SDE instead of guessing.
def _entry_points(sde, key):
    y0 = sde.prior_sample((8, 2), key=key)
    grid = sf.solve.UniformGrid(6)
    yield (
        "solve_probability_flow",
        lambda m: sf.solve.solve_probability_flow(sde, m, y0, grid=grid).samples,
    )
    yield (
        "solve_reverse_sde",
        lambda m: sf.solve.solve_reverse_sde(sde, m, y0, grid=grid, key=key).samples,
    )
    yield "sample", lambda m: sf.sample(sde, m, (8, 2), grid=grid, key=key).samples
    yield (
        "predictor_corrector",
        lambda m: (
            sf.sample(
                sde,
                m,
                (8, 2),
                method="sde",
                grid=grid,
                solver=sf.solve.PredictorCorrector(
                    dfx.Euler(), sf.solve.LangevinCorrector(), key=key
                ),
                key=key,
            ).samples
        ),
    )
    yield "log_likelihood", lambda m: sf.solve.log_likelihood(sde, m, y0 / 4).log_prob
    yield (
        "annealed_langevin",
        lambda m: (
            sf.solve.annealed_langevin(
                sde, m, y0, ladder=grid, step_size=jnp.asarray(1e-3), steps_per_level=2, key=key
            ).samples
        ),
    )
    yield (
        "calibrate_grid",
        lambda m: sf.solve.calibrate_grid(sde, m, y0, 3, optimise_steps=0, iterations=1).ts,
    )
    yield (
        "denoising_score_matching",
        lambda m: sf.losses.denoising_score_matching(sde, m, y0, key=key),
    )
    yield "sliced_score_matching", lambda m: sf.losses.sliced_score_matching(sde, m, y0, key=key)
    yield (
        "implicit_score_matching",
        lambda m: sf.losses.implicit_score_matching(sde, m, y0, key=key),
    )


# The samplers that share the probability-flow and reverse-SDE paths, and cost most to
# compile, run under `slow`; every other entry point runs by default.
_SLOW_ENTRIES = ("solve_reverse_sde", "predictor_corrector", "annealed_langevin")


@pytest.mark.parametrize(
    "entry",
    [
        pytest.param(name, marks=pytest.mark.slow) if name in _SLOW_ENTRIES else name
        for name, _ in _entry_points(sf.VPSDE(), jr.key(0))
    ],
)
def test_a_model_is_read_as_what_it_predicts(entry):
    sde = sf.VPSDE()
    run = dict(_entry_points(sde, jr.key(0)))[entry]
    exact = case_a().noised(sde)
    # The same exact model, handed over as an eps network and as a score network:
    # identical results. Read as the wrong quantity, different ones.
    as_eps = sf.Prediction(sde, exact.eps, "eps")
    as_score = sf.Prediction(sde, exact.score, "score")
    mislabelled = sf.Prediction(sde, exact.eps, "score")
    a, b, c = run(as_eps), run(as_score), run(mislabelled)
    assert_allclose(a, b, rtol=1e-6, atol=1e-8)
    assert not np.allclose(a, c, rtol=1e-3)
    # A bare function: our check, or jaxtyping's on the annotation (under pytest).
    with pytest.raises((ValueError, TypeCheckError), match="model"):
        run(exact.score)
    with pytest.raises(ValueError, match="predicts under a VESDE"):
        run(case_a().noised(sf.VESDE()))


def test_check_model_names_the_fix():
    from scoreflow.solve._shared._model import check_model

    with pytest.raises(ValueError, match=r"`model` must say what it predicts.*Prediction\(sde"):
        check_model(sf.VPSDE(), lambda t, x: x)


def test_progress_meter_changes_nothing_but_the_output(capfd):
    mix = sf.data.ring_mixture()
    sde = sf.VPSDE()
    kw = dict(grid=sf.solve.KarrasGrid(4), key=jr.key(0))
    quiet = sf.sample(sde, mix.noised(sde), (8, 2), **kw).samples
    shown = sf.sample(sde, mix.noised(sde), (8, 2), progress=True, **kw).samples
    assert "100.00%" in capfd.readouterr().err
    np.testing.assert_array_equal(quiet, shown)
    x = mix.sample(4, key=jr.key(1))
    sf.solve.log_likelihood(sde, mix.noised(sde), x, progress=True)
    assert "100.00%" in capfd.readouterr().err
    # The tests' runtime type checks catch it first; without them, the ValueError does.
    with pytest.raises((ValueError, TypeCheckError), match="progress"):
        sf.sample(sde, mix.noised(sde), (8, 2), progress="yes", **kw)
