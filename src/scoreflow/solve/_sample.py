import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, Int

from .. import _checks
from .._custom_types import Key, RealScalarLike
from ..sde import (
    EDMSDE,
    AbstractPrediction,
    AbstractSDE,
    probability_flow_term,
    reverse_sde_terms,
)
from ._grids._grids import (
    AbstractGrid,
    KarrasGrid,
    UniformGrid,
    check_grid,
    check_range,
    grid_times,
)
from ._shared._brownian import GridBrownianPath
from ._shared._model import check_model
from ._shared._nfe import count_nfe
from ._shared._progress import progress_meter
from ._shared._result import finite_result
from ._shared._saveat import save_at
from ._solvers._base import AbstractDiffusionSolver, AbstractStochasticDiffusionSolver
from ._solvers._predictor_corrector import PredictorCorrector


def default_sde_grid(sde: AbstractSDE) -> AbstractGrid:
    r"""The reverse SDE's grid when none is given (1000 steps).

    Uniform in $t$ (the DDPM convention) for every SDE but `EDMSDE`: on the VP and
    sub-VP SDEs, whose log-SNR is smooth in $t$, and on the VE SDE, where uniform in $t$
    is already geometric in $\sigma$. On `EDMSDE` the time is the noise level itself
    ($t = \sigma$ from 80 to 0.002), so uniform steps of 0.08 leave a single step below
    $\sigma = 0.08$ and smear any component narrower than that; there the default is
    EDM's own `KarrasGrid(1000)`. Measured by `benchmarks/sde_default_grids.py` (a 2-d
    mixture with a component of standard deviation 0.05; mean log-density of the samples
    below that of exact samples, nats/dim): EDM 1.31 uniform, 0.03 Karras, 0.04
    log-SNR; uniform in $t$ on VP 0.02, sub-VP 0.02, VE 0.06, DDPM's discrete VP 0.03
    (Karras: 0.01, 0.05, 0.07, 0.01), not a trap, so it stays there.
    """
    return KarrasGrid(1000) if isinstance(sde, EDMSDE) else UniformGrid(1000)


class SampleResult(eqx.Module):
    """What a sampler returns.

    Attributes:
        samples: the samples, shaped like the initial noise.
        num_steps: solver steps attempted (accepted + rejected).
        nfe: network evaluations, the final denoise included; -1 for a solver whose
            cost per step scoreflow does not know.
        stats: diffrax's statistics dictionary.
        result: diffrax's result code (`diffrax.RESULTS.successful` on success).
        ts: the times of `trajectory`, when one was asked for.
        trajectory: the states at `ts`, when asked for.
    """

    samples: Array
    num_steps: Int[Array, ""]
    nfe: Int[Array, ""]
    stats: dict
    result: dfx.RESULTS
    ts: Array | None = None
    trajectory: Array | None = None


def _check_solve(sde, model, y0, grid, stepsize_controller, dt0, max_steps, ts_save):
    # The checks of both solves, on the concrete arguments before the trace: a
    # `CustomGrid`'s times and an adaptive solve's options are data inside it.
    check_model(sde, model)
    _checks.batch_array(y0, "y0")
    _checks.float_dtype(y0.dtype, "y0")
    if grid is not None and stepsize_controller is not None:
        raise ValueError(
            "Pass either `grid` (fixed steps) or `stepsize_controller` (adaptive), not both."
        )
    _checks.max_steps(max_steps)
    if ts_save is not None:
        ts_save = jnp.asarray(ts_save)
        if ts_save.ndim != 1 or not jnp.issubdtype(ts_save.dtype, jnp.floating):
            raise ValueError(
                f"`ts_save` must be a 1-d floating array of times, got shape {ts_save.shape} "
                f"and dtype {ts_save.dtype}."
            )
        check_range(ts_save, sde, "ts_save")
    if stepsize_controller is None:
        if dt0 is not None:
            raise ValueError(
                "`dt0` is the first step of an adaptive solve; a fixed grid sets every step. "
                "Pass `stepsize_controller=` to solve adaptively, or leave `dt0` out."
            )
        if grid is not None:
            check_grid(grid, sde)
        return
    if isinstance(stepsize_controller, dfx.PIDController):
        _checks.tolerances(
            stepsize_controller.rtol, stepsize_controller.atol, prefix="stepsize_controller."
        )
    if dt0 is not None:
        _checks.scalar(dt0, "dt0")
        _checks.sign(dt0, -1, "dt0", "the solve runs from T down to t_min")


def _stepping(sde, grid, stepsize_controller, dt0, default_grid, max_steps, dtype):
    # Times share the state's dtype, so a float32 solve stays float32 even when
    # x64 is enabled (and strict dtype promotion does not trip).
    if stepsize_controller is None:
        grid = default_grid if grid is None else grid
        ts = grid_times(grid, sde).astype(dtype)
        return ts[0], ts[-1], None, dfx.StepTo(ts), grid.num_steps, ts
    if dt0 is None:
        dt0 = -(sde.T - sde.t_min) / 64
    cast = lambda v: jnp.asarray(v, dtype)
    return cast(sde.T), cast(sde.t_min), cast(dt0), stepsize_controller, max_steps, None


def _finish(sol, term, solver, t_end, denoise, ts_save, throw):
    x = sol.ys[-1]
    extra = 0
    if denoise:
        free = None
        if isinstance(solver, AbstractDiffusionSolver):
            free = solver.last_denoised(term, sol.solver_state, t_end, x)
        if free is None:
            x = term.denoise(t_end, x)
            extra = 1
        else:
            x = free
    num_steps = sol.stats["num_steps"]
    result, x = finite_result(sol.result, x, throw)
    return SampleResult(
        samples=x,
        num_steps=num_steps,
        nfe=count_nfe(solver, num_steps, extra),
        stats=sol.stats,
        result=result,
        ts=None if ts_save is None else sol.ts[:-1],
        trajectory=None if ts_save is None else sol.ys[:-1],
    )


def _levy_area(solver):
    # The Brownian motion carries Lévy area only for the stochastic Runge–Kutta methods.
    if isinstance(solver, PredictorCorrector):
        return _levy_area(solver.predictor)
    return dfx.SpaceTimeLevyArea if isinstance(solver, dfx.AbstractSRK) else dfx.BrownianIncrement


def solve_probability_flow(
    sde: AbstractSDE,
    model: AbstractPrediction,
    y0: Float[Array, "batch ..."],
    *,
    solver: dfx.AbstractSolver | None = None,
    grid: AbstractGrid | None = None,
    stepsize_controller: dfx.AbstractAdaptiveStepSizeController | None = None,
    dt0: RealScalarLike | None = None,
    denoise: bool = True,
    max_steps: int = 4096,
    adjoint: dfx.AbstractAdjoint = dfx.RecursiveCheckpointAdjoint(),
    ts_save: Float[Array, " k"] | None = None,
    throw: bool = True,
    progress: bool = False,
) -> SampleResult:
    r"""Map noise to data through the probability-flow ODE (Song et al. 2021, eq. 13).

    Solves $dx/dt = f(t)x - \tfrac12 g(t)^2 \nabla\log p_t(x)$, the model standing in
    for the score (`scoreflow.sde.ProbabilityFlowTerm`), from `T` to `t_min` with any
    diffrax ODE solver, then (if `denoise`) returns the model's $E[x_0 \mid x]$ at
    `t_min` (one more network call), as in Karras et al. 2022.

    Args:
        sde: the SDE.
        model: what predicts the noisy data (a `scoreflow.sde.AbstractPrediction`: a
            scoreflow model, `mixture.noised(sde)`, or `Prediction(sde, network,
            parameterisation)`); it acts on one example and is vmapped over the batch.
        y0: `(batch, *event)` initial noise at `T`.
        solver: a diffrax ODE solver (default `diffrax.Heun()`), a deterministic
            scoreflow diffusion solver (`DDIM()`, `DPMSolverPP(order)`, `EDMHeun()`,
            `ExponentialAdamsPC(order)`), which reads the model's denoiser from the term,
            or a `PredictorCorrector` around one of these. A solver that keeps its last
            denoiser output (`ExponentialAdamsPC`) finishes the final denoise without
            another call.
        grid: fixed time grid (default `KarrasGrid(32)` when no
            `stepsize_controller` is given, on every SDE: Karras's grid is defined in the
            noise level $\sigma_t/\alpha_t$, so it is the same grid of noise levels
            whatever the SDE's time variable).
        stepsize_controller: an adaptive controller, e.g.
            `diffrax.PIDController(rtol=1e-5, atol=1e-5)`; excludes `grid`.
        dt0: first step of an adaptive solve (negative; default $-(T - t_{\min})/64$).
        denoise: apply the final denoising step.
        max_steps: step budget of an adaptive solve.
        adjoint: diffrax adjoint used when differentiating through the solve.
        ts_save: optional strictly decreasing times in `[sde.t_min, sde.T]` at which to
            keep the trajectory.
        throw: raise if the solve fails or its samples are not finite (else inspect
            `result`: `diffrax.RESULTS.nonfinite` for NaN or inf samples).
        progress: show diffrax's progress meter of the solve (a host callback per
            step; off by default, as inside `jax.vmap`).

    Returns:
        A `SampleResult`.

    Raises:
        ValueError: on a `model` that does not say what it predicts or belongs to
            another kind of SDE, a bad `y0` (half precision included), a `grid` whose
            times leave `[sde.t_min, sde.T]`, a bad `solver`, negative tolerances of a
            `diffrax.PIDController`, a positive `dt0` (or any `dt0` on a fixed grid),
            `ts_save` outside the SDE's range or not decreasing, or `max_steps < 1`.
    """
    _check_solve(sde, model, y0, grid, stepsize_controller, dt0, max_steps, ts_save)
    solver = dfx.Heun() if solver is None else solver
    if isinstance(solver, AbstractStochasticDiffusionSolver):
        raise ValueError(
            f"`solver` {type(solver).__name__} draws noise: it samples the reverse SDE; "
            "use `solve_reverse_sde` (or `sample(..., method='sde')`)."
        )
    return _solve_probability_flow(
        sde,
        model,
        y0,
        solver,
        grid,
        stepsize_controller,
        dt0,
        denoise,
        max_steps,
        adjoint,
        ts_save,
        throw,
        progress_meter(progress),
    )


@eqx.filter_jit
def _solve_probability_flow(
    sde,
    model,
    y0,
    solver,
    grid,
    stepsize_controller,
    dt0,
    denoise,
    max_steps,
    adjoint,
    ts_save,
    throw,
    meter,
):
    t0, t1, dt0, controller, max_steps, _ = _stepping(
        sde, grid, stepsize_controller, dt0, KarrasGrid(32), max_steps, y0.dtype
    )
    term = probability_flow_term(sde, model)
    sol = dfx.diffeqsolve(
        term,
        solver,
        t0,
        t1,
        dt0,
        y0,
        stepsize_controller=controller,
        max_steps=max_steps,
        adjoint=adjoint,
        saveat=save_at(ts_save, solver_state=isinstance(solver, AbstractDiffusionSolver)),
        throw=throw,
        progress_meter=meter,
    )
    return _finish(sol, term, solver, t1, denoise, ts_save, throw)


def solve_reverse_sde(
    sde: AbstractSDE,
    model: AbstractPrediction,
    y0: Float[Array, "batch ..."],
    *,
    solver: dfx.AbstractSolver | None = None,
    grid: AbstractGrid | None = None,
    stepsize_controller: dfx.AbstractAdaptiveStepSizeController | None = None,
    dt0: RealScalarLike | None = None,
    denoise: bool = True,
    max_steps: int = 4096,
    brownian_tol: float = 1e-4,
    adjoint: dfx.AbstractAdjoint = dfx.RecursiveCheckpointAdjoint(),
    ts_save: Float[Array, " k"] | None = None,
    throw: bool = True,
    progress: bool = False,
    key: Key,
) -> SampleResult:
    r"""Sample by solving the reverse-time SDE (Anderson 1982; Song et al. 2021, eq. 6).

    On a fixed grid the Brownian motion is a `GridBrownianPath` (one normal draw per
    step, exact increments); an adaptive solve needs a
    `diffrax.VirtualBrownianTree` (tolerance `brownian_tol`), built only then.

    Args:
        sde: the SDE.
        model: what predicts the noisy data (a `scoreflow.sde.AbstractPrediction`).
        y0: `(batch, *event)` initial noise at `T`.
        solver: a diffrax SDE solver (default `diffrax.Euler()`: Euler–Maruyama), a
            stochastic scoreflow diffusion solver (`StochasticDDIM(eta)`,
            `StochasticEDMHeun(churn)`), which reads the denoiser from the drift term, or
            a `PredictorCorrector`.
        grid: fixed time grid (default `UniformGrid(1000)`, uniform in $t$, except on
            `EDMSDE`, whose time is the noise level: `KarrasGrid(1000)` there; see
            `default_sde_grid`).
        stepsize_controller: adaptive controller; excludes `grid`.
        dt0: first step of an adaptive solve.
        denoise: replace the final state by the model's $E[x_0 \mid x]$ at `t_min`
            (Song et al.'s "noise removal" step).
        max_steps: step budget of an adaptive solve.
        brownian_tol: Brownian tree tolerance for adaptive solves.
        adjoint: diffrax adjoint used when differentiating through the solve.
        ts_save: optional strictly decreasing times in `[sde.t_min, sde.T]` at which to
            keep the trajectory.
        throw: raise if the solve fails.
        progress: show diffrax's progress meter of the solve.
        key: PRNG key of the Brownian motion.

    Returns:
        A `SampleResult`.

    Raises:
        ValueError: as `solve_probability_flow`, for a deterministic diffusion solver, a
            `key` that is not one PRNG key, or a non-positive `brownian_tol`.
    """
    _check_solve(sde, model, y0, grid, stepsize_controller, dt0, max_steps, ts_save)
    _checks.key(key)
    solver = dfx.Euler() if solver is None else solver
    if isinstance(solver, AbstractDiffusionSolver):
        raise ValueError(
            f"`solver` {type(solver).__name__} is deterministic (probability-flow ODE); "
            "use `solve_probability_flow`, or a stochastic solver such as "
            "`StochasticDDIM()` (DDPM's ancestral sampler)."
        )
    if stepsize_controller is not None:
        _checks.positive(brownian_tol, "brownian_tol")
    return _solve_reverse_sde(
        sde,
        model,
        y0,
        solver,
        grid,
        stepsize_controller,
        dt0,
        denoise,
        max_steps,
        brownian_tol,
        adjoint,
        ts_save,
        throw,
        progress_meter(progress),
        key,
    )


@eqx.filter_jit
def _solve_reverse_sde(
    sde,
    model,
    y0,
    solver,
    grid,
    stepsize_controller,
    dt0,
    denoise,
    max_steps,
    brownian_tol,
    adjoint,
    ts_save,
    throw,
    meter,
    key,
):
    t0, t1, dt0, controller, max_steps, ts = _stepping(
        sde, grid, stepsize_controller, dt0, default_sde_grid(sde), max_steps, y0.dtype
    )
    levy = _levy_area(solver)
    if ts is not None:
        path = GridBrownianPath(ts, y0.shape, key=key, dtype=y0.dtype, levy_area=levy)
    else:
        path = dfx.VirtualBrownianTree(
            jnp.asarray(sde.t_min, y0.dtype),
            jnp.asarray(sde.T, y0.dtype),
            tol=brownian_tol,
            shape=jax.ShapeDtypeStruct(y0.shape, y0.dtype),
            key=key,
            levy_area=levy,
        )
    terms = reverse_sde_terms(sde, model, path)
    sol = dfx.diffeqsolve(
        terms,
        solver,
        t0,
        t1,
        dt0,
        y0,
        stepsize_controller=controller,
        max_steps=max_steps,
        adjoint=adjoint,
        saveat=save_at(ts_save),
        throw=throw,
        progress_meter=meter,
    )
    return _finish(sol, terms.terms[0], solver, t1, denoise, ts_save, throw)


def sample(
    sde: AbstractSDE,
    model: AbstractPrediction,
    shape: tuple[int, ...],
    *,
    method: str = "ode",
    dtype=None,
    key: Key,
    **kwargs,
) -> SampleResult:
    """Draw `shape[0]` samples: prior noise, then the probability-flow ODE or reverse SDE.

    Args:
        sde: the SDE.
        model: what predicts the noisy data (a `scoreflow.sde.AbstractPrediction`, e.g.
            `GaussianMixture(...).noised(sde)` for the exact score).
        shape: `(batch, *event_shape)`.
        method: `"ode"` (`solve_probability_flow`) or `"sde"` (`solve_reverse_sde`).
        dtype: floating dtype of the noise (default: JAX's default float).
        key: PRNG key.
        **kwargs: passed to the solve (`solver`, `grid`, `stepsize_controller`,
            `denoise`, `progress`, ...).

    Returns:
        A `SampleResult`.

    Raises:
        ValueError: on an unknown `method`, a `shape` without a batch axis or with a
            negative size, a `dtype` other than float32 / float64, a `key` that is not
            one PRNG key, and as the solve.
    """
    if method not in ("ode", "sde"):
        raise ValueError(f"`method` must be 'ode' or 'sde', got {method!r}.")
    shape = _checks.shape(shape, "shape")
    if len(shape) < 2:
        raise ValueError(f"`shape` must be (batch, *event_shape), got {shape}.")
    dtype = _checks.float_dtype(dtype)
    _checks.key(key)
    k_prior, k_path = jr.split(key)
    y0 = sde.prior_sample(shape, key=k_prior, dtype=dtype)
    if method == "ode":
        return solve_probability_flow(sde, model, y0, **kwargs)
    return solve_reverse_sde(sde, model, y0, key=k_path, **kwargs)
