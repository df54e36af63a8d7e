from collections.abc import Callable

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, Int

from .._custom_types import Key
from ..sde import (
    AbstractSDE,
    Prediction,
    ScalarNoiseTerm,
    probability_flow_term,
    reverse_sde_terms,
)
from ._brownian import GridBrownianPath
from ._grids import AbstractGrid, KarrasGrid, UniformGrid
from ._solvers import AbstractDiffusionSolver, DenoiserTerm, is_stochastic


class SampleResult(eqx.Module):
    """What a sampler returns.

    Attributes:
        samples: the samples, shaped like the initial noise.
        num_steps: solver steps attempted (accepted + rejected).
        nfe: network evaluations, the final denoise included; -1 for a solver whose
            cost per step scoreflow does not know.
        result: diffrax's result code (`diffrax.RESULTS.successful` on success).
        ts: the times of `trajectory`, when one was asked for.
        trajectory: the states at `ts`, when asked for.
    """

    samples: Array
    num_steps: Int[Array, ""]
    nfe: Int[Array, ""]
    result: dfx.RESULTS
    ts: Array | None = None
    trajectory: Array | None = None


def evals_per_step(solver: dfx.AbstractSolver) -> tuple[int, int] | None:
    """Network evaluations `(per step, once at the start)` of a diffrax solver.

    For explicit Runge–Kutta methods this is read off the Butcher tableau (an FSAL
    method reuses its last stage); `None` when unknown. A scoreflow solver states
    its own cost through an `evals_per_step` attribute.
    """
    own = getattr(type(solver), "evals_per_step", None)
    if own is not None:
        return own(solver) if callable(own) else own
    if isinstance(solver, (dfx.Euler, dfx.ReversibleHeun)):
        return (1, 1) if isinstance(solver, dfx.ReversibleHeun) else (1, 0)
    if isinstance(solver, dfx.AbstractERK):
        tableau = solver.tableau
        if isinstance(tableau, dfx.MultiButcherTableau):
            tableau = tableau.tableaus[0]
        if tableau.fsal:
            return tableau.num_stages - 1, 1
        return tableau.num_stages, 0
    return None


class _Batched(eqx.Module):
    # A module, not a `jax.vmap` closure, so the model's parameters stay pytree
    # leaves that gradients and diffrax's adjoints can see.
    fn: Callable

    def __call__(self, t, x):
        return jax.vmap(self.fn, in_axes=(None, 0))(t, x)


def _stepping(sde, grid, stepsize_controller, dt0, default_grid, max_steps, dtype):
    # Times share the state's dtype, so a float32 solve stays float32 even when
    # x64 is enabled (and strict dtype promotion does not trip).
    if grid is not None and stepsize_controller is not None:
        raise ValueError(
            "Pass either `grid` (fixed steps) or `stepsize_controller` (adaptive), not both."
        )
    if stepsize_controller is None:
        grid = default_grid if grid is None else grid
        if not isinstance(grid, AbstractGrid):
            raise ValueError(f"`grid` must be a scoreflow grid, got {type(grid)}.")
        ts = grid.times(sde).astype(dtype)
        return ts[0], ts[-1], None, dfx.StepTo(ts), grid.num_steps, ts
    if dt0 is None:
        dt0 = -(sde.T - sde.t_min) / 64
    cast = lambda v: jnp.asarray(v, dtype)
    return cast(sde.T), cast(sde.t_min), cast(dt0), stepsize_controller, max_steps, None


def _saveat(ts_save, solver_state=False):
    if ts_save is None:
        return dfx.SaveAt(t1=True, solver_state=solver_state)
    return dfx.SaveAt(ts=jnp.asarray(ts_save), t1=True, solver_state=solver_state)


def _finish(sde, prediction, sol, t_end, x_shape, denoise, solver, ts_save, term=None):
    x = sol.ys[-1]
    num_steps = sol.stats["num_steps"]
    cost = evals_per_step(solver)
    extra = 0
    if denoise:
        free = None
        if isinstance(solver, AbstractDiffusionSolver) and term is not None:
            free = solver.last_denoised(term, sol.solver_state, t_end, x)
        if free is None:
            x = _Batched(prediction.x0)(t_end, x)
            extra = 1
        else:
            x = free
    if cost is None:
        nfe = jnp.asarray(-1)
    else:
        nfe = num_steps * cost[0] + cost[1] + extra
    trajectory = None if ts_save is None else sol.ys[:-1]
    return SampleResult(
        samples=x.reshape(x_shape),
        num_steps=num_steps,
        nfe=nfe,
        result=sol.result,
        ts=None if ts_save is None else sol.ts[:-1],
        trajectory=trajectory,
    )


def _check_state(x_T):
    if not isinstance(x_T, jax.Array) or not jnp.issubdtype(x_T.dtype, jnp.floating):
        raise ValueError(f"`x_T` must be a floating-point JAX array, got {type(x_T)}.")
    if x_T.ndim < 2:
        raise ValueError(f"`x_T` must have shape (batch, *event_shape), got {x_T.shape}.")


@eqx.filter_jit
def solve_probability_flow(
    sde: AbstractSDE,
    model: Callable[..., Array],
    x_T: Float[Array, "batch ..."],
    *,
    parameterisation: str = "score",
    solver: dfx.AbstractSolver | None = None,
    grid: AbstractGrid | None = None,
    stepsize_controller: dfx.AbstractAdaptiveStepSizeController | None = None,
    dt0: float | None = None,
    denoise: bool = True,
    max_steps: int = 4096,
    adjoint: dfx.AbstractAdjoint = dfx.RecursiveCheckpointAdjoint(),
    ts_save: Float[Array, " k"] | None = None,
    throw: bool = True,
) -> SampleResult:
    r"""Map noise to data through the probability-flow ODE (Song et al. 2021, eq. 13).

    Solves $dx/dt = f(t)x - \tfrac12 g(t)^2 \nabla\log p_t(x)$, the model standing in
    for the score, from `T` to `t_min` with
    any diffrax ODE solver, then (if `denoise`) returns the model's $E[x_0 \mid x]$ at
    `t_min` (one more network call), as in Karras et al. 2022.

    Args:
        sde: the SDE.
        model: network on one example, `(t, x) -> array`; it is vmapped over the
            batch axis of `x_T`.
        x_T: `(batch, *event)` initial noise.
        parameterisation: what `model` predicts (`"score"`, `"eps"`, `"x0"`, `"v"`).
        solver: a diffrax ODE solver (default `diffrax.Heun()`) or a deterministic
            scoreflow diffusion solver (`DDIM()`, `DPMSolverPP(order)`, `EDMHeun()`,
            `ExponentialAdamsPC(order)`), which is given a `DenoiserTerm` built from the
            model's data prediction. A solver that keeps its last denoiser output
            (`ExponentialAdamsPC`) finishes the final denoise without another call.
        grid: fixed time grid (default `KarrasGrid(32)` when no
            `stepsize_controller` is given).
        stepsize_controller: an adaptive controller, e.g.
            `diffrax.PIDController(rtol=1e-5, atol=1e-5)`; excludes `grid`.
        dt0: first step of an adaptive solve (negative; default $-(T - t_{\min})/64$).
        denoise: apply the final denoising step.
        max_steps: step budget of an adaptive solve.
        adjoint: diffrax adjoint used when differentiating through the solve.
        ts_save: optional decreasing times at which to keep the trajectory.
        throw: raise if the solve fails (else inspect `result`).

    Returns:
        A `SampleResult`.
    """
    _check_state(x_T)
    solver = dfx.Heun() if solver is None else solver
    prediction = Prediction(sde, model, parameterisation)
    t0, t1, dt0, controller, max_steps, _ = _stepping(
        sde, grid, stepsize_controller, dt0, KarrasGrid(32), max_steps, x_T.dtype
    )
    ours = isinstance(solver, AbstractDiffusionSolver)
    if ours:
        if is_stochastic(solver):
            raise ValueError(
                f"`solver` {type(solver).__name__} with noise samples the reverse SDE; "
                "use `solve_reverse_sde` (or `sample(..., method='sde')`)."
            )
        term = DenoiserTerm(sde, _Batched(prediction.x0))
    else:
        term = probability_flow_term(sde, _Batched(prediction.score))
    sol = dfx.diffeqsolve(
        term,
        solver,
        t0,
        t1,
        dt0,
        x_T,
        stepsize_controller=controller,
        max_steps=max_steps,
        adjoint=adjoint,
        saveat=_saveat(ts_save, solver_state=ours),
        throw=throw,
    )
    return _finish(
        sde, prediction, sol, t1, x_T.shape, denoise, solver, ts_save, term if ours else None
    )


@eqx.filter_jit
def solve_reverse_sde(
    sde: AbstractSDE,
    model: Callable[..., Array],
    x_T: Float[Array, "batch ..."],
    *,
    parameterisation: str = "score",
    solver: dfx.AbstractSolver | None = None,
    grid: AbstractGrid | None = None,
    stepsize_controller: dfx.AbstractAdaptiveStepSizeController | None = None,
    dt0: float | None = None,
    denoise: bool = True,
    max_steps: int = 4096,
    brownian_tol: float = 1e-4,
    adjoint: dfx.AbstractAdjoint = dfx.RecursiveCheckpointAdjoint(),
    ts_save: Float[Array, " k"] | None = None,
    throw: bool = True,
    key: Key,
) -> SampleResult:
    r"""Sample by solving the reverse-time SDE (Anderson 1982; Song et al. 2021, eq. 6).

    On a fixed grid the Brownian motion is a `GridBrownianPath` (one normal draw per
    step, exact increments); an adaptive solve needs a
    `diffrax.VirtualBrownianTree` (tolerance `brownian_tol`), built only then.

    Args:
        sde: the SDE.
        model: network on one example, `(t, x) -> array`.
        x_T: `(batch, *event)` initial noise.
        parameterisation: what `model` predicts.
        solver: a diffrax SDE solver (default `diffrax.Euler()`: Euler–Maruyama) or a
            stochastic scoreflow diffusion solver (`DDPMAncestral()`, `DDIM(eta)`,
            `EDMHeun(churn)`), given `MultiTerm(DenoiserTerm, noise term)`.
        grid: fixed time grid (default `UniformGrid(1000)`).
        stepsize_controller: adaptive controller; excludes `grid`.
        dt0: first step of an adaptive solve.
        denoise: replace the final state by the model's $E[x_0 \mid x]$ at `t_min`
            (Song et al.'s "noise removal" step).
        max_steps: step budget of an adaptive solve.
        brownian_tol: Brownian tree tolerance for adaptive solves.
        adjoint: diffrax adjoint used when differentiating through the solve.
        ts_save: optional decreasing times at which to keep the trajectory.
        throw: raise if the solve fails.
        key: PRNG key of the Brownian motion.

    Returns:
        A `SampleResult`.
    """
    _check_state(x_T)
    solver = dfx.Euler() if solver is None else solver
    prediction = Prediction(sde, model, parameterisation)
    t0, t1, dt0, controller, max_steps, ts = _stepping(
        sde, grid, stepsize_controller, dt0, UniformGrid(1000), max_steps, x_T.dtype
    )
    levy = dfx.SpaceTimeLevyArea if isinstance(solver, dfx.AbstractSRK) else dfx.BrownianIncrement
    if ts is not None:
        path = GridBrownianPath(ts, x_T.shape, key=key, dtype=x_T.dtype, levy_area=levy)
    else:
        path = dfx.VirtualBrownianTree(
            jnp.asarray(sde.t_min, x_T.dtype),
            jnp.asarray(sde.T, x_T.dtype),
            tol=brownian_tol,
            shape=jax.ShapeDtypeStruct(x_T.shape, x_T.dtype),
            key=key,
            levy_area=levy,
        )
    if isinstance(solver, AbstractDiffusionSolver):
        if not is_stochastic(solver):
            raise ValueError(
                f"`solver` {type(solver).__name__} is deterministic (probability-flow ODE); "
                "use `solve_probability_flow`, or a stochastic solver such as "
                "`DDPMAncestral()` or `DDIM(eta=1.0)`."
            )
        terms = dfx.MultiTerm(
            DenoiserTerm(sde, _Batched(prediction.x0)), ScalarNoiseTerm(sde.diffusion, path)
        )
    else:
        terms = reverse_sde_terms(sde, _Batched(prediction.score), path)
    sol = dfx.diffeqsolve(
        terms,
        solver,
        t0,
        t1,
        dt0,
        x_T,
        stepsize_controller=controller,
        max_steps=max_steps,
        adjoint=adjoint,
        saveat=_saveat(ts_save),
        throw=throw,
    )
    return _finish(sde, prediction, sol, t1, x_T.shape, denoise, solver, ts_save)


def sample(
    sde: AbstractSDE,
    model: Callable[..., Array],
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
        model: network on one example, `(t, x) -> array` (an exact score such as
            `GaussianMixture(...).noised(sde).score` works too).
        shape: `(batch, *event_shape)`.
        method: `"ode"` (`solve_probability_flow`) or `"sde"` (`solve_reverse_sde`).
        dtype: floating dtype of the noise (default: JAX's default float).
        key: PRNG key.
        **kwargs: passed to the solve (`solver`, `grid`, `stepsize_controller`,
            `parameterisation`, `denoise`, ...).

    Returns:
        A `SampleResult`.

    Raises:
        ValueError: on an unknown `method` or a `shape` without a batch axis.
    """
    if method not in ("ode", "sde"):
        raise ValueError(f"`method` must be 'ode' or 'sde', got {method!r}.")
    shape = tuple(shape)
    if len(shape) < 2:
        raise ValueError(f"`shape` must be (batch, *event_shape), got {shape}.")
    k_prior, k_path = jr.split(key)
    x_T = sde.prior_sample(shape, key=k_prior, dtype=dtype)
    if method == "ode":
        return solve_probability_flow(sde, model, x_T, **kwargs)
    return solve_reverse_sde(sde, model, x_T, key=k_path, **kwargs)
