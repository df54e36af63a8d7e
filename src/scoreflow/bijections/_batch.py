"""Applying a bijection to a batch: event by event, or all at once where that is cheaper."""

import abc

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array

from .._custom_types import Key
from ._base import AbstractBijection
from ._chain import Chain
from ._invert import Invert


class AbstractBatchBijection(AbstractBijection):
    """A bijection that also acts on a whole batch `(batch, *shape)` at once.

    For a continuous flow one adaptive solve of the batch is several times cheaper
    than a solve per event under `jax.vmap` (every vmapped solve runs as long as its
    slowest member, and pays for a batched `while_loop`). `Flow` and `Chain` use the
    batch methods where a bijection has them.
    """

    @abc.abstractmethod
    def transform_and_log_det_batch(
        self, x: Array, *, key: Key | None = None
    ) -> tuple[Array, Array]:
        """`(T(x), log|det|)` for a batch; log-dets of shape `(batch,)`."""

    @abc.abstractmethod
    def inverse_and_log_det_batch(self, y: Array, *, key: Key | None = None) -> tuple[Array, Array]:
        """`(T^{-1}(y), log|det|)` for a batch; log-dets of shape `(batch,)`."""


def batch_transform_and_log_det(
    bijection: AbstractBijection, x: Array, *, inverse: bool = False, key: Key | None = None
) -> tuple[Array, Array]:
    """Apply `bijection` (or its inverse) to a batch `(batch, *event)`.

    A `Chain` or `Invert` is unfolded so that every member that is an
    `AbstractBatchBijection` sees the whole batch; the others are vmapped over events.
    """
    if isinstance(bijection, Invert):
        return batch_transform_and_log_det(bijection.bijection, x, inverse=not inverse, key=key)
    if isinstance(bijection, Chain):
        members = bijection.bijections
        keys = [None] * len(members) if key is None else list(jr.split(key, len(members)))
        order = list(zip(members, keys))
        total = jnp.zeros(x.shape[:1], x.dtype)
        for b, k in reversed(order) if inverse else order:
            x, ld = batch_transform_and_log_det(b, x, inverse=inverse, key=k)
            total = total + ld
        return x, total
    if isinstance(bijection, AbstractBatchBijection):
        if inverse:
            return bijection.inverse_and_log_det_batch(x, key=key)
        return bijection.transform_and_log_det_batch(x, key=key)
    one = bijection.inverse_and_log_det if inverse else bijection.transform_and_log_det
    if key is None:
        return jax.vmap(lambda xi: one(xi))(x)
    return jax.vmap(lambda xi, ki: one(xi, key=ki))(x, jr.split(key, x.shape[0]))
