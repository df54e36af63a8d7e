"""What the Langevin samplers share: their result record, checks and save points."""

import functools
from collections.abc import Callable

import diffrax as dfx
import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Int

from ... import _checks


class LangevinResult(eqx.Module):
    """What a Langevin sampler returns.

    Attributes:
        samples: the final states, shaped like the initial state `(chains, *event)`.
        num_steps: Langevin steps taken (per chain).
        nfe: target evaluations per chain (score, or log-density and score for MALA).
        stats: diffrax's statistics dictionary (summed over levels for annealed
            Langevin).
        result: diffrax's result code (the first failing level's, for annealed
            Langevin).
        acceptance_rate: `(chains,)` fraction of accepted proposals (MALA only).
        velocities: final velocities (underdamped Langevin only).
        ts: times (for annealed Langevin: the level times) of `trajectory`, when one
            was asked for.
        trajectory: saved states `(num_saved, chains, *event)`, when asked for.
    """

    samples: Array
    num_steps: Int[Array, ""]
    nfe: Int[Array, ""]
    stats: dict
    result: dfx.RESULTS
    acceptance_rate: Array | None = None
    velocities: Array | None = None
    ts: Array | None = None
    trajectory: Array | None = None


def boundary_jit(positive: tuple[str, ...] = (), check: Callable | None = None):
    """`eqx.filter_jit`, after checking hyperparameters on the concrete values.

    Arrays passed to a filter-jitted function are traced (so that a new step size does
    not recompile), which hides their values from checks made inside it; the named
    keyword arguments (positive scalars) and the `key` are therefore checked here,
    before the trace, and so is whatever `check(*args, **kwargs)` checks.
    """

    def decorator(fn):
        jitted = eqx.filter_jit(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            for name in positive:
                if name in kwargs:
                    _checks.scalar(kwargs[name], name)
                    _checks.positive(kwargs[name], name)
            if "key" in kwargs:
                _checks.key(kwargs["key"])
            if check is not None:
                check(*args, **kwargs)
            return jitted(*args, **kwargs)

        return wrapper

    return decorator


def check_ladder(ladder):
    """Raise `ValueError` unless a concrete `ladder` is 1-d, positive and decreasing."""
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


def check_save_every(save_every: int | None, num_steps: int, steps_name: str = "num_steps"):
    """Raise `ValueError` unless `save_every` is `None` or a positive divisor of the steps."""
    if save_every is None:
        return
    _checks.positive_int(save_every, "save_every")
    if num_steps % save_every:
        raise ValueError(
            f"`save_every` must divide `{steps_name}`, got save_every={save_every}, "
            f"{steps_name}={num_steps}."
        )


def step_grid(step_size, num_steps: int, dtype) -> Array:
    r"""The chain's times $0, h, 2h, \dots, nh$."""
    return jnp.asarray(step_size, dtype) * jnp.arange(num_steps + 1, dtype=dtype)


def save_every_at(ts: Array, save_every: int | None, solver_state: bool = False) -> dfx.SaveAt:
    """Every `save_every`-th point of the grid `ts` (or only the end)."""
    if save_every is None:
        return dfx.SaveAt(t1=True, solver_state=solver_state)
    return dfx.SaveAt(ts=ts[save_every::save_every], solver_state=solver_state)
