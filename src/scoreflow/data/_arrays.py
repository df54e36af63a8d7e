import os
import pathlib

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .. import _checks


def load_array(path: str | os.PathLike, *, name: str | None = None, dtype=None) -> Array:
    """Load a user dataset from `.npy` or `.npz` as a floating `(N, *event)` JAX array.

    Args:
        path: the file.
        name: the array inside an `.npz` (default: its only array, or `"x"`/`"data"`).
        dtype: floating dtype (default JAX's default float).

    Returns:
        The array.

    Raises:
        ValueError: on another suffix, an ambiguous `.npz`, non-numeric data, NaN, or
            fewer than two axes, or a `dtype` other than float32 / float64.
    """
    path = pathlib.Path(path)
    dtype = _checks.float_dtype(dtype)
    if path.suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
    elif path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            keys = list(f.keys())
            if name is None:
                common = [k for k in ("x", "data") if k in keys]
                if len(keys) == 1:
                    name = keys[0]
                elif common:
                    name = common[0]
                else:
                    raise ValueError(f"`{path}` holds {keys}; pass `name=` to choose one.")
            if name not in keys:
                raise ValueError(f"`name` {name!r} is not in {path} (it holds {keys}).")
            arr = f[name]
    else:
        raise ValueError(f"`path` must end in .npy or .npz, got {path.name!r}.")
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"The data in {path} must be numeric, got dtype {arr.dtype}.")
    if arr.ndim < 2:
        raise ValueError(f"The data in {path} must have shape (N, *event), got {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"The data in {path} contain NaN or infinite values.")
    return jnp.asarray(arr, dtype)


class Standardiser(eqx.Module):
    r"""Per-feature affine scaling $y = (x - \mu)/s$, fitted on training data.

    `log_det` converts densities back: $\log p_x(x) = \log p_y(y) - \sum\log s$.

    Args:
        mean: $\mu$, event-shaped.
        scale: $s > 0$, event-shaped.
    """

    mean: Float[Array, "..."]
    scale: Float[Array, "..."]

    @classmethod
    def fit(cls, x: Float[Array, "n ..."], eps: float = 1e-8) -> "Standardiser":
        """Fit mean and standard deviation over the batch axis."""
        return cls(jnp.mean(x, 0), jnp.std(x, 0) + eps)

    def transform(self, x: Float[Array, "n ..."]) -> Float[Array, "n ..."]:
        return (x - self.mean[None]) / self.scale[None]

    def inverse(self, y: Float[Array, "n ..."]) -> Float[Array, "n ..."]:
        return y * self.scale[None] + self.mean[None]

    def log_det(self) -> Float[Array, ""]:
        r"""$\log|\det\partial y/\partial x| = -\sum \log s$ per example."""
        return -jnp.sum(jnp.log(self.scale))
