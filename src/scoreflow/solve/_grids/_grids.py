"""Fixed time grids from `T` down to `t_min`, for `diffrax.StepTo`."""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ... import _checks
from ...sde import AbstractSDE


class AbstractGrid(eqx.Module):
    """A rule giving `num_steps + 1` decreasing times from `sde.T` to `sde.t_min`."""

    num_steps: eqx.AbstractVar[int]

    @abc.abstractmethod
    def times(self, sde: AbstractSDE) -> Float[Array, " n"]:
        """The grid, `times[0] == sde.T` and `times[-1] == sde.t_min`."""


def pin_ends(ts, sde):
    # Inverting the log-SNR in floating point moves the ends by an ulp or so;
    # the solve must start and stop exactly at T and t_min.
    ts = ts.at[0].set(sde.T)
    return ts.at[-1].set(sde.t_min)


class UniformGrid(AbstractGrid):
    """Equally spaced in $t$."""

    num_steps: int = eqx.field(static=True)

    def __check_init__(self):
        _checks.positive_int(self.num_steps, "num_steps")

    def times(self, sde: AbstractSDE) -> Float[Array, " n"]:
        return jnp.linspace(sde.T, sde.t_min, self.num_steps + 1)


class LogSNRGrid(AbstractGrid):
    r"""Equally spaced in the log-SNR $\lambda_t$ (Lu et al. 2022, DPM-Solver, sec. 3.3)."""

    num_steps: int = eqx.field(static=True)

    def __check_init__(self):
        _checks.positive_int(self.num_steps, "num_steps")

    def times(self, sde: AbstractSDE) -> Float[Array, " n"]:
        lam = jnp.linspace(sde.log_snr(sde.T), sde.log_snr(sde.t_min), self.num_steps + 1)
        return pin_ends(sde.t_from_log_snr(lam), sde)


class KarrasGrid(AbstractGrid):
    r"""Karras et al. 2022 (arXiv:2206.00364, eq. 5) in the noise level $e^{-\lambda}$.

    $\tilde\sigma_i = (\tilde\sigma_{\max}^{1/\rho} + \tfrac iN(\tilde\sigma_{\min}^{1/\rho}
    - \tilde\sigma_{\max}^{1/\rho}))^\rho$ with $\tilde\sigma = \sigma_t/\alpha_t$, mapped
    back to times through the SDE's inverse log-SNR; for `EDMSDE` this is exactly EDM's
    grid.

    Args:
        num_steps: number of steps $N$.
        rho: the exponent $\rho > 0$ (7 in EDM).
    """

    num_steps: int = eqx.field(static=True)
    rho: float = 7.0

    def __check_init__(self):
        _checks.positive_int(self.num_steps, "num_steps")
        _checks.positive(self.rho, "rho")

    def times(self, sde: AbstractSDE) -> Float[Array, " n"]:
        smax = jnp.exp(-sde.log_snr(sde.T))
        smin = jnp.exp(-sde.log_snr(sde.t_min))
        i = jnp.linspace(0.0, 1.0, self.num_steps + 1)
        inv = 1.0 / self.rho
        sig = (smax**inv + i * (smin**inv - smax**inv)) ** self.rho
        return pin_ends(sde.t_from_log_snr(-jnp.log(sig)), sde)


class CustomGrid(AbstractGrid):
    """A user-given strictly decreasing grid; its ends replace `T` and `t_min`.

    Args:
        ts: `(num_steps + 1,)` strictly decreasing times inside `[t_min, T]`.
    """

    ts: Float[Array, " n"]
    num_steps: int = eqx.field(static=True)

    def __init__(self, ts):
        ts = jnp.asarray(ts)
        if ts.ndim != 1 or ts.shape[0] < 2:
            raise ValueError(f"`ts` must be a 1-d array of >= 2 times, got {ts.shape}.")
        if not jnp.issubdtype(ts.dtype, jnp.floating):
            raise ValueError(f"`ts` must hold floating-point times, got dtype {ts.dtype}.")
        v = _checks.concrete(ts)
        if v is not None:
            _checks.check(bool(np.all(np.isfinite(v))), "ts", f"must be finite, got {v}.")
            if not bool(np.all(np.diff(v) < 0)):
                raise ValueError("`ts` must be strictly decreasing (from noise to data).")
        self.ts = ts
        self.num_steps = ts.shape[0] - 1

    def times(self, sde: AbstractSDE) -> Float[Array, " n"]:
        return self.ts


def check_range(ts, sde: AbstractSDE, name: str):
    """`ts`, checked to decrease strictly inside `[sde.t_min, sde.T]`.

    Up to a few ulps of the times' dtype at the scale of `T` (a float32 grid rounds the
    SDE's float64 ends; a time computed from a noise level, as `t_from_log_snr` does, is
    off by rounding of the order of eps * T, which near a small `t_min` is far more than
    an ulp of `t_min` itself). Concrete times raise `ValueError` at once; traced ones
    raise at run time.
    """
    eps = 4 * float(jnp.finfo(ts.dtype).eps)
    v, lo, hi = _checks.concrete(ts), _checks.concrete(sde.t_min), _checks.concrete(sde.T)
    if v is not None and lo is not None and hi is not None:
        lo, hi = float(lo), float(hi)
        tol = eps * max(abs(lo), abs(hi))
        inside = bool(np.all(v >= lo - tol) and np.all(v <= hi + tol))
        _checks.check(
            inside,
            name,
            f"must lie in the SDE's range [t_min, T] = [{lo}, {hi}], got times from "
            f"{v.min()} to {v.max()}.",
        )
        _checks.check(
            bool(np.all(np.diff(v) < 0)), name, "must be strictly decreasing (from noise to data)."
        )
        return ts
    lo, hi = jnp.asarray(sde.t_min, ts.dtype), jnp.asarray(sde.T, ts.dtype)
    tol = eps * jnp.maximum(jnp.abs(lo), jnp.abs(hi))
    bad = jnp.any(ts < lo - tol) | jnp.any(ts > hi + tol) | jnp.any(jnp.diff(ts) >= 0)
    return eqx.error_if(
        ts, bad, f"`{name}` must lie in the SDE's range [t_min, T] and strictly decrease."
    )


def check_grid(grid, sde: AbstractSDE, name: str = "grid") -> AbstractGrid:
    """Check `grid` at a public boundary, before any trace.

    A `CustomGrid` holds its times as data: they are checked against the SDE's range
    here, while concrete. A rule-based grid computes its times from the SDE and is
    checked when resolved (`grid_times`).

    Raises:
        ValueError: if `grid` is not a scoreflow grid, or a `CustomGrid`'s times leave
            `[sde.t_min, sde.T]`.
    """
    if not isinstance(grid, AbstractGrid):
        raise ValueError(f"`{name}` must be a `scoreflow.solve` grid, got {type(grid).__name__}.")
    if isinstance(grid, CustomGrid):
        check_range(grid.ts, sde, name)
    return grid


def grid_times(grid: AbstractGrid, sde: AbstractSDE, name: str = "grid") -> Float[Array, " n"]:
    """Resolve `grid` on `sde`: its times, checked to decrease strictly inside `[t_min, T]`.

    Every solve resolves its grid here. A time below `t_min` (or below 0) evaluates the
    schedule where it is not defined, one above `T` starts the solve outside the prior's
    support: either would return a wrong sample, so both raise (`ValueError` on
    concrete times, at run time through `equinox.error_if` on traced ones).
    """
    if not isinstance(grid, AbstractGrid):
        raise ValueError(f"`{name}` must be a `scoreflow.solve` grid, got {type(grid).__name__}.")
    # A grid and SDE with concrete parameters give constant times: computed at trace time
    # they leave the compiled solve (their ops and a run-time range check, about half a
    # second of XLA compile on CPU), and a bad grid raises at once. Traced parameters (a
    # learned schedule, a grid being calibrated) are traced as before.
    with jax.ensure_compile_time_eval():
        ts = grid.times(sde)
    if ts.shape != (grid.num_steps + 1,):
        raise ValueError(
            f"`{name}` must give num_steps + 1 = {grid.num_steps + 1} times, got shape {ts.shape}."
        )
    return check_range(ts, sde, name)
