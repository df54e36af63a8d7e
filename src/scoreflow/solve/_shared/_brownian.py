import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float

from ... import _checks
from ..._custom_types import Key


class GridBrownianPath(dfx.AbstractBrownianPath):
    r"""Brownian motion sampled on a fixed grid: $O(1)$ memory, one normal per step.

    Over a grid interval $[a, b]$ (width $h$) the increment is $\sqrt h\,z_i$ with
    $z_i$ drawn from `fold_in(key, i)`, so a solver stepping exactly along the grid
    (`diffrax.StepTo` with the same times) sees exact, independent Brownian
    increments at the cost of one normal draw per step, and no
    `VirtualBrownianTree` bisection. Evaluating the same interval twice gives the
    same value, so checkpointed reverse-mode autodiff is consistent.

    A point inside an interval is filled in with the Brownian bridge,
    $W(a+s) - W(a) = \tfrac{s}{h}\sqrt h z_i + \sqrt{s(h-s)/h}\,z_i'$: exact in law
    for one interior point per interval (midpoint-type SDE solvers); the joint law of
    two or more interior points of one interval is not that of Brownian motion.
    An evaluation must not span more than one grid interval.

    With `levy_area=diffrax.SpaceTimeLevyArea`, a whole-interval evaluation also
    returns the space-time Lévy area $H \sim N(0, h/12)$, independent of $W$, as the
    stochastic Runge–Kutta solvers need.

    Args:
        ts: the grid (any monotone order).
        shape: shape of the Brownian motion (that of the SDE's state).
        dtype: floating dtype (default: JAX's default float).
        levy_area: `diffrax.BrownianIncrement` or `diffrax.SpaceTimeLevyArea`.
        key: PRNG key.
    """

    grid: Float[Array, " n"]
    # Fields, as in diffrax's own paths (which declares them abstract in `AbstractPath`).
    t0: Float[Array, ""]  # pyright: ignore[reportIncompatibleVariableOverride]
    t1: Float[Array, ""]  # pyright: ignore[reportIncompatibleVariableOverride]
    shape: tuple[int, ...] = eqx.field(static=True)
    key: Key
    dtype: jnp.dtype = eqx.field(static=True)
    levy_area: type = eqx.field(static=True)

    def __init__(
        self,
        ts,
        shape: tuple[int, ...],
        *,
        dtype=None,
        levy_area: type = dfx.BrownianIncrement,
        key: Key,
    ):
        ts = jnp.asarray(ts)
        if ts.ndim != 1 or ts.shape[0] < 2:
            raise ValueError(f"`ts` must be a 1-d array of >= 2 times, got shape {ts.shape}.")
        _checks.key(key)
        self.grid = jnp.sort(ts)
        self.t0 = self.grid[0]  # pyright: ignore[reportIncompatibleVariableOverride]
        self.t1 = self.grid[-1]  # pyright: ignore[reportIncompatibleVariableOverride]
        self.shape = tuple(shape)
        self.key = key
        self.dtype = _checks.float_dtype(dtype)
        if levy_area not in (dfx.BrownianIncrement, dfx.SpaceTimeLevyArea):
            raise ValueError(
                "`levy_area` must be diffrax.BrownianIncrement or "
                f"diffrax.SpaceTimeLevyArea, got {levy_area}."
            )
        self.levy_area = levy_area

    def _normals(self, i, which):
        return jr.normal(jr.fold_in(jr.fold_in(self.key, i), which), self.shape, self.dtype)

    def _increment(self, i, s0, s1, h):
        # B(s) = (s/h) sqrt(h) z + sqrt(s (h - s) / h) z', so a whole interval costs a
        # single normal draw and only a partial one pays for the bridge's second draw.
        def whole():
            return (jnp.sqrt(h) * self._normals(i, 0)).astype(self.dtype)

        def partial():
            c0 = jnp.clip(s0, 0, h)
            c1 = jnp.clip(s1, 0, h)
            safe_h = jnp.where(h > 0, h, 1.0)
            bridge = jnp.sqrt(jnp.maximum(c1 * (h - c1), 0) / safe_h) - jnp.sqrt(
                jnp.maximum(c0 * (h - c0), 0) / safe_h
            )
            drift = (c1 - c0) / jnp.sqrt(safe_h)
            return (drift * self._normals(i, 0) + bridge * self._normals(i, 1)).astype(self.dtype)

        is_whole = (s0 <= 0) & (s1 >= h)
        return jax.lax.cond(is_whole, whole, partial)

    @eqx.filter_jit
    def evaluate(self, t0, t1=None, left: bool = True, use_levy: bool = False):
        del left
        if t1 is None:
            raise NotImplementedError(
                "GridBrownianPath gives increments W(t1) - W(t0); pass both times."
            )
        t0 = jax.lax.stop_gradient(jnp.asarray(t0, self.grid.dtype))
        t1 = jax.lax.stop_gradient(jnp.asarray(t1, self.grid.dtype))
        n = self.grid.shape[0] - 1
        mid = 0.5 * (t0 + t1)
        i = jnp.clip(jnp.searchsorted(self.grid, mid, side="right") - 1, 0, n - 1)
        a, b = self.grid[i], self.grid[i + 1]
        dw = self._increment(i, t0 - a, t1 - a, b - a)
        if not use_levy:
            return dw
        if self.levy_area is not dfx.SpaceTimeLevyArea:
            raise ValueError("This solver needs `levy_area=diffrax.SpaceTimeLevyArea`.")
        dt = t1 - t0
        H = (jnp.sqrt(dt / 12) * self._normals(i, 2)).astype(self.dtype)
        return dfx.SpaceTimeLevyArea(dt=dt, W=dw, H=H)
