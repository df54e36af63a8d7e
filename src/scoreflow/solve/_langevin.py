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
batch of independent chains, the leading axis of the initial state.
"""

import functools
from collections.abc import Callable
from typing import ClassVar

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .. import _checks
from .._custom_types import Key
from ..sde import langevin_terms
from ._brownian import GridBrownianPath


class LangevinResult(eqx.Module):
    """What a Langevin sampler returns.

    Attributes:
        samples: the final states, shaped like the initial state `(chains, *event)`.
        num_steps: Langevin steps taken (per chain).
        nfe: target evaluations per chain (score, or log-density and score for MALA).
        result: diffrax's result code.
        acceptance_rate: `(chains,)` fraction of accepted proposals (MALA only).
        velocities: final velocities (underdamped Langevin only).
        ts: times (or noise-level indices) of `trajectory`, when one was asked for.
        trajectory: saved states `(num_saved, chains, *event)`, when asked for.
    """

    samples: Array
    num_steps: Int[Array, ""]
    nfe: Int[Array, ""]
    result: dfx.RESULTS
    acceptance_rate: Array | None = None
    velocities: Array | None = None
    ts: Array | None = None
    trajectory: Array | None = None


class _Batched(eqx.Module):
    # `(t, x)` per example -> `(t, x)` over a batch of chains. A module, not a closure,
    # so parameters of the wrapped model stay pytree leaves.
    fn: Callable

    def __call__(self, t, x):
        return jax.vmap(self.fn, in_axes=(None, 0))(t, x)


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


def _boundary_jit(positive: tuple[str, ...] = (), ladder: bool = False):
    """`eqx.filter_jit`, after checking hyperparameters on the concrete values.

    Arrays passed to a filter-jitted function are traced (so that a new step size does
    not recompile), which hides their values from checks made inside it; the named
    keyword arguments are therefore checked here, before the trace.
    """

    def decorator(fn):
        jitted = eqx.filter_jit(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            for name in positive:
                if name in kwargs:
                    _checks.positive(kwargs[name], name)
            if ladder and "ladder" in kwargs:
                _check_ladder(kwargs["ladder"])
            return jitted(*args, **kwargs)

        return wrapper

    return decorator


def _check_ladder(ladder):
    v = _checks.concrete(ladder)
    if v is None or isinstance(ladder, eqx.Module):
        return
    if v.ndim != 1 or v.shape[0] < 1:
        raise ValueError(f"`ladder` must be a 1-d array of noise levels, got shape {v.shape}.")
    _checks.check(bool(np.all(v > 0)), "ladder", f"must be positive, got {v}.")
    _checks.check(
        bool(np.all(np.diff(v) < 0)),
        "ladder",
        f"must be strictly decreasing (from noise to data), got {v}.",
    )


def _check_state(x, name):
    if not isinstance(x, jax.Array) or not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"`{name}` must be a floating-point JAX array, got {type(x)}.")
    if x.ndim < 2:
        raise ValueError(f"`{name}` must have shape (chains, *event_shape), got {x.shape}.")


def _check_num(n, name):
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"`{name}` must be a positive int, got {n!r}.")


def _check_save_every(save_every, num_steps):
    if save_every is None:
        return
    _check_num(save_every, "save_every")
    if num_steps % save_every:
        raise ValueError(
            f"`save_every` must divide `num_steps`, got save_every={save_every}, "
            f"num_steps={num_steps}."
        )


def _grid(step_size, num_steps, dtype):
    return jnp.asarray(step_size, dtype) * jnp.arange(num_steps + 1, dtype=dtype)


def _saveat(ts, save_every, solver_state=False):
    if save_every is None:
        return dfx.SaveAt(t1=True, solver_state=solver_state)
    return dfx.SaveAt(ts=ts[save_every::save_every], solver_state=solver_state)


def _trajectory(sol, save_every):
    if save_every is None:
        return sol.ys[-1], None, None
    return sol.ys[-1], sol.ts, sol.ys


def _euler_maruyama_langevin(score, x0, step_size, num_steps, save_every, key):
    # `score` acts on the whole batch of chains, `(t, x) -> array`.
    ts = _grid(step_size, num_steps, x0.dtype)
    path = GridBrownianPath(ts, x0.shape, key=key, dtype=x0.dtype)
    return dfx.diffeqsolve(
        langevin_terms(score, path),
        dfx.Euler(),
        ts[0],
        ts[-1],
        None,
        x0,
        stepsize_controller=dfx.StepTo(ts),
        saveat=_saveat(ts, save_every),
        max_steps=num_steps,
    )


@_boundary_jit(positive=("step_size",))
def ula(
    score: Callable[[Array], Array],
    x0: Float[Array, "chains ..."],
    *,
    step_size: float | Float[Array, ""],
    num_steps: int,
    save_every: int | None = None,
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
        x0: `(chains, *event)` initial states.
        step_size: $h > 0$. A Python float is static under `eqx.filter_jit`; pass a JAX
            scalar to reuse one compilation across step sizes.
        num_steps: number of steps.
        save_every: keep every `save_every`-th state (must divide `num_steps`).
        key: PRNG key of the Brownian motion.

    Returns:
        A `LangevinResult`; `nfe` = `num_steps` score evaluations.

    Raises:
        ValueError: on a non-positive `step_size`, a bad `num_steps` or `x0`.
    """
    _check_state(x0, "x0")
    _check_num(num_steps, "num_steps")
    _checks.positive(step_size, "step_size")
    _check_save_every(save_every, num_steps)
    sol = _euler_maruyama_langevin(
        _Batched(_IgnoreTime(score)), x0, step_size, num_steps, save_every, key
    )
    x, ts, traj = _trajectory(sol, save_every)
    return LangevinResult(
        samples=x,
        num_steps=sol.stats["num_steps"],
        nfe=sol.stats["num_steps"],
        result=sol.result,
        ts=ts,
        trajectory=traj,
    )


class _MALAState(eqx.Module):
    # A step counter, not a typed key: diffrax's error checks cannot carry key dtypes.
    step: Int[Array, ""]
    log_prob: Array
    drift: Array
    accepted: Array


class MALA(dfx.AbstractItoSolver):
    r"""Metropolis-adjusted Langevin as a `diffrax.AbstractSolver`.

    Each step from $t_0$ to $t_1$ ($h = t_1 - t_0$) proposes the Euler–Maruyama step of
    an additive-noise Langevin SDE $dx = b(x)\,dt + g\,dW$ with $b = \tfrac{g^2}{2}
    \nabla\log\pi$ (e.g. `scoreflow.sde.langevin_terms`, $g = 1$),
    $x' = x + h\,b(x) + g\,\Delta W$, and accepts it with probability
    $\min\{1, \pi(x')q(x \mid x')/(\pi(x)q(x' \mid x))\}$,
    $q(x' \mid x) = N(x'; x + h\,b(x), g^2 h\,I)$ (Roberts & Tweedie 1996, "Exponential
    convergence of Langevin distributions and their discrete approximations", sec. 1.4;
    Besag 1994). The chain is exactly $\pi$-invariant at every step size.

    The state's leading axis holds independent chains, each accepted or rejected on its
    own. For vanishing $h$ the acceptance rate tends to one and the chain to the Itô
    (Euler–Maruyama) solution, hence an Itô solver. The solver state caches $\log\pi$
    and $b$ at the current point, so a step costs one log-density and one drift
    evaluation; it also counts acceptances per chain:
    solve with `diffrax.SaveAt(..., solver_state=True)` and read
    `sol.solver_state.accepted`.

    Args:
        log_prob: $\log\pi$ (up to a constant) on the whole batch,
            `(chains, *event) -> (chains,)`.
        key: PRNG key of the accept/reject uniforms (the proposal noise comes from the
            terms' Brownian path).
    """

    log_prob: Callable[[Array], Array]
    key: PRNGKeyArray

    term_structure: ClassVar = dfx.MultiTerm[tuple[dfx.AbstractTerm, dfx.AbstractTerm]]
    interpolation_cls: ClassVar = dfx.LocalLinearInterpolation

    def order(self, terms):
        return None

    def strong_order(self, terms):
        return None

    def init(self, terms, t0, t1, y0, args):
        drift, _ = terms.terms
        return _MALAState(
            step=jnp.zeros((), jnp.int32),
            log_prob=self.log_prob(y0),
            drift=drift.vf(t0, y0, args),
            accepted=jnp.zeros(y0.shape[:1], jnp.int32),
        )

    def _log_q(self, to, frm, drift_frm, h, g2):
        # log N(to; frm + h b(frm), g^2 h I) up to a constant shared by both directions.
        r = to - frm - h * drift_frm
        return -jnp.sum((r**2 / (2 * g2 * h)).reshape(r.shape[0], -1), axis=-1)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del made_jump
        drift_term, noise_term = terms.terms
        h = t1 - t0
        st = solver_state
        dw = noise_term.contr(t0, t1)
        g = noise_term.vf(t0, y0, args)
        proposal = y0 + h * st.drift + noise_term.prod(g, dw)
        log_p_new = self.log_prob(proposal)
        drift_new = drift_term.vf(t1, proposal, args)
        g2 = g**2
        log_ratio = (
            log_p_new
            - st.log_prob
            + self._log_q(y0, proposal, drift_new, h, g2)
            - self._log_q(proposal, y0, st.drift, h, g2)
        )
        u = jr.uniform(jr.fold_in(self.key, st.step), log_ratio.shape, log_ratio.dtype)
        # A NaN ratio (proposal out of the support) is a rejection.
        accept = jnp.log(u) < log_ratio
        sel = lambda a, b: jnp.where(accept.reshape(accept.shape + (1,) * (a.ndim - 1)), a, b)
        y1 = sel(proposal, y0)
        new_state = _MALAState(
            step=st.step + 1,
            log_prob=jnp.where(accept, log_p_new, st.log_prob),
            drift=sel(drift_new, st.drift),
            accepted=st.accepted + accept.astype(jnp.int32),
        )
        return y1, None, dict(y0=y0, y1=y1), new_state, dfx.RESULTS.successful

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)


@_boundary_jit(positive=("step_size",))
def mala(
    log_prob: Callable[[Array], Array],
    x0: Float[Array, "chains ..."],
    *,
    step_size: float | Float[Array, ""],
    num_steps: int,
    score: Callable[[Array], Array] | None = None,
    save_every: int | None = None,
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
        x0: `(chains, *event)` initial states.
        step_size: $h > 0$.
        num_steps: number of steps.
        score: $\nabla\log\pi$ on one chain (default: `jax.grad(log_prob)`).
        save_every: keep every `save_every`-th state (must divide `num_steps`).
        key: PRNG key.

    Returns:
        A `LangevinResult` with `acceptance_rate` per chain; `nfe` counts log-density
        plus score evaluations, the initial ones included.

    Raises:
        ValueError: on a non-positive `step_size`, a bad `num_steps` or `x0`.
    """
    _check_state(x0, "x0")
    _check_num(num_steps, "num_steps")
    _checks.positive(step_size, "step_size")
    _check_save_every(save_every, num_steps)
    score = _GradLogProb(log_prob) if score is None else score
    k_path, k_accept = jr.split(key)
    ts = _grid(step_size, num_steps, x0.dtype)
    path = GridBrownianPath(ts, x0.shape, key=k_path, dtype=x0.dtype)
    terms = langevin_terms(_Batched(_IgnoreTime(score)), path)
    sol = dfx.diffeqsolve(
        terms,
        MALA(_BatchedLogProb(log_prob), k_accept),
        ts[0],
        ts[-1],
        None,
        x0,
        stepsize_controller=dfx.StepTo(ts),
        saveat=_saveat(ts, save_every, solver_state=True),
        max_steps=num_steps,
    )
    x, ts_saved, traj = _trajectory(sol, save_every)
    n = sol.stats["num_steps"]
    return LangevinResult(
        samples=x,
        num_steps=n,
        nfe=2 * (n + 1),
        result=sol.result,
        acceptance_rate=sol.solver_state.accepted / n,
        ts=ts_saved,
        trajectory=traj,
    )


class _NegScore(eqx.Module):
    score: Callable

    def __call__(self, x, args):
        return -jax.vmap(self.score)(x)


@_boundary_jit(positive=("step_size", "gamma", "u"))
def underdamped_langevin(
    score: Callable[[Array], Array],
    x0: Float[Array, "chains ..."],
    *,
    step_size: float | Float[Array, ""],
    num_steps: int,
    gamma: float | Float[Array, ""] = 2.0,
    u: float | Float[Array, ""] = 1.0,
    v0: Float[Array, "chains ..."] | None = None,
    solver: dfx.AbstractSolver | None = None,
    save_every: int | None = None,
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
        x0: `(chains, *event)` initial positions.
        step_size: $h > 0$.
        num_steps: number of steps.
        gamma: friction $\gamma > 0$.
        u: inverse mass $u > 0$.
        v0: initial velocities (default: drawn from $N(0, uI)$).
        solver: a diffrax underdamped-Langevin solver (default `diffrax.ALIGN()`).
        save_every: keep every `save_every`-th position (must divide `num_steps`).
        key: PRNG key.

    Returns:
        A `LangevinResult` with `velocities`.

    Raises:
        ValueError: on a non-positive `step_size`, `gamma` or `u`, or bad shapes.
    """
    _check_state(x0, "x0")
    _check_num(num_steps, "num_steps")
    _checks.positive(step_size, "step_size")
    _checks.positive(gamma, "gamma")
    _checks.positive(u, "u")
    _check_save_every(save_every, num_steps)
    if v0 is not None and v0.shape != x0.shape:
        raise ValueError(f"`v0` must have the shape of `x0` {x0.shape}, got {v0.shape}.")
    solver = dfx.ALIGN() if solver is None else solver
    k_v, k_path = jr.split(key)
    dtype = x0.dtype
    gamma = jnp.asarray(gamma, dtype)
    u = jnp.asarray(u, dtype)
    if v0 is None:
        v0 = jnp.sqrt(u) * jr.normal(k_v, x0.shape, dtype)
    ts = _grid(step_size, num_steps, dtype)
    if getattr(solver, "minimal_levy_area", None) is dfx.SpaceTimeTimeLevyArea:
        path = dfx.VirtualBrownianTree(
            ts[0],
            ts[-1],
            tol=jnp.asarray(step_size, dtype) / 8,
            shape=jax.ShapeDtypeStruct(x0.shape, dtype),
            key=k_path,
            levy_area=dfx.SpaceTimeTimeLevyArea,
        )
    else:
        path = GridBrownianPath(
            ts, x0.shape, key=k_path, dtype=dtype, levy_area=dfx.SpaceTimeLevyArea
        )
    terms = dfx.MultiTerm(
        dfx.UnderdampedLangevinDriftTerm(gamma, u, _NegScore(score)),
        dfx.UnderdampedLangevinDiffusionTerm(gamma, u, path),
    )
    saveat = (
        dfx.SaveAt(t1=True) if save_every is None else dfx.SaveAt(ts=ts[save_every::save_every])
    )
    sol = dfx.diffeqsolve(
        terms,
        solver,
        ts[0],
        ts[-1],
        None,
        (x0, v0),
        stepsize_controller=dfx.StepTo(ts),
        saveat=saveat,
        max_steps=num_steps,
    )
    xs, vs = sol.ys
    return LangevinResult(
        samples=xs[-1],
        num_steps=sol.stats["num_steps"],
        nfe=sol.stats["num_steps"] + 1,
        result=sol.result,
        velocities=vs[-1],
        ts=None if save_every is None else sol.ts,
        trajectory=None if save_every is None else xs,
    )
