import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .. import _checks
from ._base import AbstractBijection


class Affine(AbstractBijection):
    r"""Elementwise affine map $T(x) = \mu + s \odot x$; log-det $\sum \log|s|$.

    Args:
        loc: $\mu$, an array of the event shape.
        scale: $s$, the same shape, no zero entry.

    Raises:
        ValueError: if the shapes differ, or `scale` has a zero or non-finite entry
            (the map would not be invertible).
    """

    loc: Float[Array, "..."]
    scale: Float[Array, "..."]
    shape: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, loc: Float[ArrayLike, "..."], scale: Float[ArrayLike, "..."]):
        self.loc = jnp.asarray(loc)
        self.scale = jnp.asarray(scale)
        self.shape = self.loc.shape

    def __check_init__(self):
        if self.loc.shape != self.scale.shape:
            raise ValueError(
                f"`loc` and `scale` must have one shape, got {self.loc.shape} and "
                f"{self.scale.shape}."
            )
        s = _checks.concrete(self.scale)
        if s is not None:
            _checks.check(
                bool(np.all(np.isfinite(s)) and np.all(s != 0)),
                "scale",
                "must be finite and non-zero (else the map is not invertible).",
            )

    def _log_det(self, dtype):
        return jnp.sum(jnp.log(jnp.abs(self.scale))).astype(dtype)

    def _transform_and_log_det(self, x, key):
        loc, scale = self.loc.astype(x.dtype), self.scale.astype(x.dtype)
        return loc + scale * x, self._log_det(x.dtype)

    def _inverse_and_log_det(self, y, key):
        loc, scale = self.loc.astype(y.dtype), self.scale.astype(y.dtype)
        return (y - loc) / scale, -self._log_det(y.dtype)
