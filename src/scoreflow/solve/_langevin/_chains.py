r"""Langevin Markov chains on a fixed target: ULA, MALA and underdamped Langevin.

All three are diffrax solves of a Langevin SDE on a fixed grid of step `step_size`
(`diffrax.StepTo`) with a `GridBrownianPath` (one normal draw per step):

- ULA: Euler–Maruyama on the overdamped Langevin SDE of `scoreflow.sde.langevin_terms`,
  $dx = \tfrac12\nabla\log\pi(x)\,dt + dW$ (Roberts & Tweedie 1996).
- MALA: the same proposal, followed by a Metropolis–Hastings accept/reject step, written
  as the `diffrax.AbstractSolver` `MALA` (Roberts & Tweedie 1996; Besag 1994).
- Underdamped Langevin: diffrax's `UnderdampedLangevinDriftTerm` /
  `UnderdampedLangevinDiffusionTerm` with `diffrax.ALIGN` (or another of diffrax's
  underdamped-Langevin solvers).

Targets are per-example callables on one chain's state; every function here runs a
batch of independent chains, the leading axis of the initial state `y0`.
"""

from collections.abc import Callable

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float

from ... import _checks
from ..._custom_types import Key
from ...sde import langevin_terms
from .._shared._batch import Batched
from .._shared._brownian import GridBrownianPath
from .._shared._nfe import count_nfe
from .._shared._result import finite_result
from .._solvers._mala import MALA
from ._common import LangevinResult, boundary_jit, check_save_every, save_every_at, step_grid


class _IgnoreTime(eqx.Module):
    fn: Callable

    def __call__(self, t, x):
        del t
        return self.fn(x)


class _GradLogProb(eqx.Module):
    log_prob: Callable

    def __call__(self, x):
        return jax.grad(self.log_prob)(x)


class _BatchedLogProb(eqx.Module):
    log_prob: Callable

    def __call__(self, x):
        return jax.vmap(self.log_prob)(x)


def _check_chain(y0, num_steps, step_size, save_every):
    _checks.batch_array(y0, "y0", axis="chains")
    _checks.float_dtype(y0.dtype, "y0")
    _checks.positive_int(num_steps, "num_steps")
    _checks.positive(step_size, "step_size")
    check_save_every(save_every, num_steps)


def _run_chains(solver, score, y0, step_size, num_steps, save_every, solver_state, key):
    # The Langevin SDE of `score` on the chains' grid, with its Brownian path.
    ts = step_grid(step_size, num_steps, y0.dtype)
    path = GridBrownianPath(ts, y0.shape, key=key, dtype=y0.dtype)
    return dfx.diffeqsolve(
        langevin_terms(Batched(_IgnoreTime(score)), path),
        solver,
        ts[0],
        ts[-1],
        None,
        y0,
        stepsize_controller=dfx.StepTo(ts),
        saveat=save_every_at(ts, save_every, solver_state=solver_state),
        max_steps=num_steps,
    )


def _result(sol, solver, save_every, throw, **extra) -> LangevinResult:
    n = sol.stats["num_steps"]
    result, samples = finite_result(sol.result, sol.ys[-1], throw)
    return LangevinResult(
        samples=samples,
        num_steps=n,
        nfe=count_nfe(solver, n),
        stats=sol.stats,
        result=result,
        ts=None if save_every is None else sol.ts,
        trajectory=None if save_every is None else sol.ys,
        **extra,
    )


@boundary_jit(positive=("step_size",))
def ula(
    score: Callable[[Array], Array],
    y0: Float[Array, "chains ..."],
    *,
    step_size: float | Float[Array, ""],
    num_steps: int,
    save_every: int | None = None,
    throw: bool = True,
    key: Key,
) -> LangevinResult:
    r"""The unadjusted Langevin algorithm (ULA) on a batch of chains.

    Euler–Maruyama with step $h$ = `step_size` on the Langevin SDE
    $dx = \tfrac12\nabla\log\pi(x)\,dt + dW$ (`scoreflow.sde.langevin_terms`):
    $x_{k+1} = x_k + \tfrac h2\nabla\log\pi(x_k) + \sqrt h\,z_k$, the update of
    Song & Ermon 2019 (arXiv:1907.05600, eq. 4, with $\epsilon = h$). Its stationary
    law is biased by $O(h)$: for $\pi = N(\mu, s^2)$ it is $N(\mu, s^2/(1 - h/4s^2))$.
    Use `mala` for an unbiased chain.

    Args:
        score: $\nabla\log\pi$ on one chain's state, `x -> array`; vmapped over chains.
        y0: `(chains, *event)` initial states.
        step_size: $h > 0$. A Python float is static under `eqx.filter_jit`; pass a JAX
            scalar to reuse one compilation across step sizes.
        num_steps: number of steps.
        save_every: keep every `save_every`-th state (must divide `num_steps`).
        throw: raise if the chains end in NaN or inf (a step too large for the
            target, say); with `False` the `result` is `diffrax.RESULTS.nonfinite`.
        key: PRNG key of the Brownian motion.

    Returns:
        A `LangevinResult`; `nfe` = `num_steps` score evaluations.

    Raises:
        ValueError: on a non-positive `step_size`, a bad `num_steps` or `y0`.
    """
    _check_chain(y0, num_steps, step_size, save_every)
    solver = dfx.Euler()
    sol = _run_chains(solver, score, y0, step_size, num_steps, save_every, False, key)
    return _result(sol, solver, save_every, throw)


@boundary_jit(positive=("step_size",))
def mala(
    log_prob: Callable[[Array], Array],
    y0: Float[Array, "chains ..."],
    *,
    step_size: float | Float[Array, ""],
    num_steps: int,
    score: Callable[[Array], Array] | None = None,
    save_every: int | None = None,
    throw: bool = True,
    key: Key,
) -> LangevinResult:
    r"""The Metropolis-adjusted Langevin algorithm on a batch of chains.

    Solves the Langevin SDE of `scoreflow.sde.langevin_terms` with the `MALA` solver on
    a fixed grid of step $h$ = `step_size`; see `MALA` for the algorithm. Unlike `ula`,
    the chain's stationary law is exactly $\pi$ whatever $h$; a larger $h$ only lowers
    the acceptance rate (about 0.574 is optimal in high dimension, Roberts & Rosenthal
    1998).

    Args:
        log_prob: $\log\pi$ (up to a constant) on one chain's state, `x -> scalar`.
        y0: `(chains, *event)` initial states.
        step_size: $h > 0$.
        num_steps: number of steps.
        score: $\nabla\log\pi$ on one chain (default: `jax.grad(log_prob)`).
        save_every: keep every `save_every`-th state (must divide `num_steps`).
        throw: raise if the chains end in NaN or inf (a step too large for the
            target, say); with `False` the `result` is `diffrax.RESULTS.nonfinite`.
        key: PRNG key.

    Returns:
        A `LangevinResult` with `acceptance_rate` per chain; `nfe` counts log-density
        plus score evaluations, the initial ones included.

    Raises:
        ValueError: on a non-positive `step_size`, a bad `num_steps` or `y0`.
    """
    _check_chain(y0, num_steps, step_size, save_every)
    score = _GradLogProb(log_prob) if score is None else score
    k_path, k_accept = jr.split(key)
    solver = MALA(_BatchedLogProb(log_prob), key=k_accept)
    sol = _run_chains(solver, score, y0, step_size, num_steps, save_every, True, k_path)
    state = sol.solver_state
    assert state is not None  # saved: SaveAt(solver_state=True)
    rate = state.accepted / sol.stats["num_steps"]
    return _result(sol, solver, save_every, throw, acceptance_rate=rate)


class _NegScore(eqx.Module):
    score: Callable

    def __call__(self, x, args):
        return -jax.vmap(self.score)(x)


@boundary_jit(positive=("step_size", "gamma", "u"))
def underdamped_langevin(
    score: Callable[[Array], Array],
    y0: Float[Array, "chains ..."],
    *,
    step_size: float | Float[Array, ""],
    num_steps: int,
    gamma: float | Float[Array, ""] = 2.0,
    u: float | Float[Array, ""] = 1.0,
    v0: Float[Array, "chains ..."] | None = None,
    solver: dfx.AbstractSolver | None = None,
    save_every: int | None = None,
    throw: bool = True,
    key: Key,
) -> LangevinResult:
    r"""Underdamped (kinetic) Langevin dynamics, through diffrax's own terms and solvers.

    $dx = v\,dt$, $dv = -\gamma v\,dt + u\nabla\log\pi(x)\,dt + \sqrt{2\gamma u}\,dW$,
    whose stationary law is $\pi(x)\,N(v; 0, uI)$. Solved with
    `diffrax.UnderdampedLangevinDriftTerm` / `UnderdampedLangevinDiffusionTerm` and, by
    default, `diffrax.ALIGN` (Foster, Lyons & Oberhauser 2021, arXiv:2101.03446), a
    second-order splitting that needs space-time Lévy area: the Brownian motion is a
    `GridBrownianPath` with `diffrax.SpaceTimeLevyArea`. A solver that needs
    space-time-time Lévy area (`diffrax.ShOULD`, `diffrax.QUICSORT`) gets a
    `diffrax.VirtualBrownianTree` instead.

    Args:
        score: $\nabla\log\pi$ on one chain's state, `x -> array`.
        y0: `(chains, *event)` initial positions.
        step_size: $h > 0$.
        num_steps: number of steps.
        gamma: friction $\gamma > 0$.
        u: inverse mass $u > 0$.
        v0: initial velocities (default: drawn from $N(0, uI)$).
        solver: a diffrax underdamped-Langevin solver (default `diffrax.ALIGN()`).
        save_every: keep every `save_every`-th position (must divide `num_steps`).
        throw: raise if the chains end in NaN or inf; with `False` the `result` is
            `diffrax.RESULTS.nonfinite`.
        key: PRNG key.

    Returns:
        A `LangevinResult` with `velocities`.

    Raises:
        ValueError: on a non-positive `step_size`, `gamma` or `u`, or bad shapes.
    """
    _check_chain(y0, num_steps, step_size, save_every)
    _checks.positive(gamma, "gamma")
    _checks.positive(u, "u")
    if v0 is not None and v0.shape != y0.shape:
        raise ValueError(f"`v0` must have the shape of `y0` {y0.shape}, got {v0.shape}.")
    solver = dfx.ALIGN() if solver is None else solver
    k_v, k_path = jr.split(key)
    dtype = y0.dtype
    gamma = jnp.asarray(gamma, dtype)
    u = jnp.asarray(u, dtype)
    if v0 is None:
        v0 = jnp.sqrt(u) * jr.normal(k_v, y0.shape, dtype)
    ts = step_grid(step_size, num_steps, dtype)
    needs_time_levy = isinstance(solver, dfx.AbstractFosterLangevinSRK) and issubclass(
        solver.minimal_levy_area, dfx.AbstractSpaceTimeTimeLevyArea
    )
    if needs_time_levy:
        path = dfx.VirtualBrownianTree(
            ts[0],
            ts[-1],
            tol=jnp.asarray(step_size, dtype) / 8,
            shape=jax.ShapeDtypeStruct(y0.shape, dtype),
            key=k_path,
            levy_area=dfx.SpaceTimeTimeLevyArea,
        )
    else:
        path = GridBrownianPath(
            ts, y0.shape, key=k_path, dtype=dtype, levy_area=dfx.SpaceTimeLevyArea
        )
    terms = dfx.MultiTerm(
        dfx.UnderdampedLangevinDriftTerm(gamma, u, _NegScore(score)),
        dfx.UnderdampedLangevinDiffusionTerm(gamma, u, path),
    )
    sol = dfx.diffeqsolve(
        terms,
        solver,
        ts[0],
        ts[-1],
        None,
        (y0, v0),
        stepsize_controller=dfx.StepTo(ts),
        saveat=save_every_at(ts, save_every),
        max_steps=num_steps,
    )
    assert sol.ys is not None  # saved: SaveAt(t1=True) at least
    xs, vs = sol.ys
    n = sol.stats["num_steps"]
    result, (x, v) = finite_result(sol.result, (xs[-1], vs[-1]), throw)
    return LangevinResult(
        samples=x,
        num_steps=n,
        # One gradient per step and one at the start (diffrax's Foster SRKs cache it).
        nfe=n + 1,
        stats=sol.stats,
        result=result,
        velocities=v,
        ts=None if save_every is None else sol.ts,
        trajectory=None if save_every is None else xs,
    )
