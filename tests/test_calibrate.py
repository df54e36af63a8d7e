"""`calibrate_grid`: other solvers, the fallback to a fixed rule, the pilot-size rule."""

import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest

import scoreflow as sf
from scoreflow.sde import probability_flow_term
from scoreflow.solve import DDIM, DPMSolverPP, EDMHeun, ExponentialAdamsPC
from scoreflow.solve._grids._calibrate import _flops_per_draw, _pilot_size

S = sf.solve


def _mixture_2d():
    # A small random 2-d mixture: not case A (the ring) nor any benchmark case.
    r = np.random.default_rng(5)
    mu = r.normal(0, 3.0, size=(4, 2))
    var = r.uniform(0.1, 0.6, size=(4, 2)) ** 2
    w = r.dirichlet(np.ones(4))
    return sf.GaussianMixture(jnp.asarray(w), jnp.asarray(mu), jnp.asarray(var))


def _rms(sde, model, solver, grid, x, ref):
    out = S.solve_probability_flow(sde, model, x, solver=solver, grid=grid).samples
    return float(jnp.sqrt(jnp.mean((out - ref) ** 2)))


def test_grid_calibrated_for_dpm_solver_pp_beats_its_karras_grid():
    sde = sf.EDMSDE()
    model = _mixture_2d().noised(sde, "x0")
    pilot = jnp.asarray(80 * np.random.default_rng(99).standard_normal((256, 2)))
    x = jnp.asarray(80 * np.random.default_rng(3).standard_normal((512, 2)))
    solver = DPMSolverPP(2)
    grid = S.calibrate_grid(sde, model, pilot, 9, solver=solver, optimise_steps=20)
    assert isinstance(grid, S.CalibratedGrid) and grid.num_steps == 9
    ts = np.asarray(grid.times(sde))
    assert ts[0] == sde.T and ts[-1] == sde.t_min and np.all(np.diff(ts) < 0)
    assert dict(grid.held_out_rms).keys() == {"calibrated", "karras", "log-snr"}
    ref = S.solve_probability_flow(
        sde, model, x, solver=ExponentialAdamsPC(3), grid=S.LogSNRGrid(400)
    ).samples
    # Measured on independent noise: about 3x below the Karras grid's error.
    assert _rms(sde, model, solver, grid, x, ref) < 0.7 * _rms(
        sde, model, solver, S.KarrasGrid(9), x, ref
    )


def test_calibration_that_cannot_help_falls_back_to_a_fixed_rule():
    # Stage 1 barely leaves a uniform-in-t grid (a bad grid for EDM) and Adam's step is
    # far too large to improve on it: the check must return a fixed rule, and say so.
    sde = sf.EDMSDE()
    model = _mixture_2d().noised(sde, "x0")
    pilot = jnp.asarray(80 * np.random.default_rng(99).standard_normal((64, 2)))
    kw = dict(solver=DDIM(), initial=S.UniformGrid(5), iterations=1, relaxation=1e-3)
    grid = S.calibrate_grid(sde, model, pilot, 5, optimise_steps=2, learning_rate=1e3, **kw)
    errs = dict(grid.held_out_rms)
    assert grid.source in ("karras", "log-snr")
    assert errs[grid.source] == min(errs.values()) < errs["calibrated"]
    fixed = {"karras": S.KarrasGrid(5), "log-snr": S.LogSNRGrid(5)}[grid.source]
    np.testing.assert_allclose(grid.times(sde), fixed.times(sde))
    off = S.calibrate_grid(sde, model, pilot, 5, optimise_steps=2, learning_rate=1e3,
                           fallback=False, **kw)  # fmt: skip
    assert off.source == "calibrated"


def test_pilot_size_rule():
    # Frequent flips need few draws, none seen asks for the cap, which falls with d.
    assert _pilot_size(8192, 16, 100, 1024) == 1024
    assert _pilot_size(8192, 16, 0, 1024) == 8192
    assert _pilot_size(8192, 64, 0, 1024) == 2048
    assert _pilot_size(8192, 2, 4, 1024) == 6567
    assert _pilot_size(500, 2, 0, 500) == 500


def test_flop_budget_bounds_the_adam_steps_of_a_costly_model():
    # XLA's count per draw grows with the model's arithmetic (full covariances: K d^2),
    # and the Adam steps follow F / (f N M), never below 10, never above the cap of B.
    r = np.random.default_rng(7)
    k, d = 6, 10
    mu, var = r.normal(0, 3, (k, d)), r.uniform(0.2, 1.0, (k, d))
    q = [np.linalg.qr(r.standard_normal((d, d)))[0] for _ in range(k)]
    cov = np.stack([(u * v) @ u.T for u, v in zip(q, var)])
    w = jnp.asarray(r.dirichlet(np.ones(k)))
    sde = sf.EDMSDE()
    diag = sf.GaussianMixture(w, jnp.asarray(mu), jnp.asarray(var)).noised(sde, "x0")
    full = sf.GaussianMixture(w, jnp.asarray(mu), jnp.asarray(cov)).noised(sde, "x0")
    x, t = jnp.ones((32, d)), jnp.asarray(1.0)
    f_diag = _flops_per_draw(probability_flow_term(sde, diag), t, x)
    f_full = _flops_per_draw(probability_flow_term(sde, full), t, x)
    assert f_diag is not None and f_full is not None
    assert 2 * k * d < f_diag < f_full and f_full > 2 * k * d * d
    pilot = jnp.asarray(80 * r.standard_normal((64, d)))
    kw = dict(optimise_steps=30, validations=2, iterations=1, fallback=False)
    n, mb = 5, 32  # num_steps; the minibatch is the fit half of 64 draws
    assert S.calibrate_grid(sde, full, pilot, n, flop_budget=None, **kw).adam_steps == 30
    budget = 12.5 * f_full * n * mb
    assert S.calibrate_grid(sde, full, pilot, n, flop_budget=budget, **kw).adam_steps == 12
    assert S.calibrate_grid(sde, full, pilot, n, flop_budget=1.0, **kw).adam_steps == 10
    # The evaluation budget still caps a cheap model.
    g = S.calibrate_grid(sde, diag, pilot, n, evaluation_budget=n * mb * 14, **kw)
    assert g.adam_steps == 14


def test_calibrate_grid_rejects_bad_solver_and_options():
    sde = sf.EDMSDE()
    model = _mixture_2d().noised(sde, "x0")
    pilot = jnp.ones((8, 2))
    cal = S.calibrate_grid
    with pytest.raises(ValueError, match="`solver` must be ExponentialAdamsPC"):
        cal(sde, model, pilot, 5, solver=EDMHeun())
    for name in ("minibatch", "evaluation_budget", "validations", "flop_budget"):
        with pytest.raises(ValueError, match=f"`{name}`"):
            cal(sde, model, pilot, 5, **{name: 0})


@pytest.mark.slow
def test_calibration_on_a_full_covariance_mixture_finishes_in_bounded_time():
    # Issue 19's hang: `optimise_steps=1` on a full-covariance mixture once waited
    # forever. Run it in a fresh process with a deadline, float64 and float32.
    code = textwrap.dedent(
        """
        import sys
        import jax
        jax.config.update("jax_enable_x64", sys.argv[1] == "64")
        import jax.numpy as jnp, numpy as np
        import scoreflow as sf
        r = np.random.default_rng(100)
        d, k = 12, 5
        q = [np.linalg.qr(r.standard_normal((d, d)))[0] for _ in range(k)]
        s = np.exp(r.uniform(np.log(0.2), np.log(1.5), (k, d)))
        cov = np.stack([(u * v**2) @ u.T for u, v in zip(q, s)])
        dt = jnp.float64 if sys.argv[1] == "64" else jnp.float32
        mix = sf.GaussianMixture(jnp.asarray(r.dirichlet(np.ones(k)), dt),
                                 jnp.asarray(r.normal(0, 3, (k, d)), dt), jnp.asarray(cov, dt))
        sde = sf.EDMSDE()
        y0 = jnp.asarray(80 * r.standard_normal((256, d)), dt)
        g = sf.solve.calibrate_grid(sde, mix.noised(sde, "x0"), y0, 9, optimise_steps=1)
        print(g.source, float(g.ts[1]))
        """
    )
    for bits in ("64", "32"):
        out = subprocess.run(
            [sys.executable, "-c", code, bits], capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 0, out.stderr[-2000:]
