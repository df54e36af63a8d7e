from collections.abc import Sequence

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from ._base import AbstractBijection


class Permute(AbstractBijection):
    r"""Permute the entries of a vector event: $T(x)_i = x_{\pi(i)}$; log-det zero.

    Args:
        permutation: a permutation of `range(dim)`.

    Raises:
        ValueError: if `permutation` is not a permutation (the map would not be
            invertible).
    """

    permutation: tuple[int, ...] = eqx.field(static=True)
    shape: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, permutation: Sequence[int] | np.ndarray):
        perm = np.asarray(permutation)
        if perm.ndim != 1 or perm.size == 0 or not np.issubdtype(perm.dtype, np.integer):
            raise ValueError(f"`permutation` must be a 1-d integer sequence, got {permutation}.")
        if not np.array_equal(np.sort(perm), np.arange(perm.size)):
            raise ValueError(
                f"`permutation` must be a permutation of range({perm.size}) (else the map is "
                f"not invertible), got {perm.tolist()}."
            )
        self.permutation = tuple(int(i) for i in perm)
        self.shape = (perm.size,)

    def _transform_and_log_det(self, x, key):
        return x[jnp.asarray(self.permutation)], jnp.zeros((), x.dtype)

    def _inverse_and_log_det(self, y, key):
        inv = np.argsort(np.asarray(self.permutation))
        return y[jnp.asarray(inv)], jnp.zeros((), y.dtype)
