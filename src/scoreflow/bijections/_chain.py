from collections.abc import Sequence

import jax.numpy as jnp
import jax.random as jr

from ._base import AbstractBijection


def _keys(key, n):
    return [None] * n if key is None else list(jr.split(key, n))


class Chain(AbstractBijection):
    r"""The composition $T = T_n \circ \dots \circ T_1$: `bijections[0]` is applied first.

    The log-det is the sum of the log-dets (chain rule).

    Args:
        bijections: a non-empty sequence of bijections of one event shape.

    Raises:
        ValueError: if `bijections` is empty or the event shapes differ.
    """

    bijections: tuple[AbstractBijection, ...]
    shape: tuple[int, ...]

    def __init__(self, bijections: Sequence[AbstractBijection]):
        bijections = tuple(bijections)
        if not bijections:
            raise ValueError("`bijections` must not be empty.")
        shapes = [tuple(b.shape) for b in bijections]
        if any(s != shapes[0] for s in shapes):
            raise ValueError(f"`bijections` must share one event shape, got shapes {shapes}.")
        self.bijections = bijections
        self.shape = shapes[0]

    def _transform_and_log_det(self, x, key):
        total = jnp.zeros((), x.dtype)
        for b, k in zip(self.bijections, _keys(key, len(self.bijections))):
            x, ld = b.transform_and_log_det(x, key=k)
            total = total + ld
        return x, total

    def _inverse_and_log_det(self, y, key):
        total = jnp.zeros((), y.dtype)
        keys = _keys(key, len(self.bijections))
        for b, k in zip(reversed(self.bijections), reversed(keys)):
            y, ld = b.inverse_and_log_det(y, key=k)
            total = total + ld
        return y, total
