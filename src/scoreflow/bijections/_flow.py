import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float

from .. import _checks
from .._custom_types import Key
from ._base import AbstractBijection, check_event
from ._batch import batch_transform_and_log_det


class StandardNormal(eqx.Module):
    r"""The standard normal $N(0, I)$ on events of `shape`: a flow's usual base.

    Args:
        shape: event shape.
    """

    shape: tuple[int, ...] = eqx.field(static=True)

    def log_prob(self, x: Float[Array, "..."]) -> Float[Array, ""]:
        """Log-density of one event."""
        x = check_event(x, self.shape, "x")
        n = math.prod(self.shape)
        return -0.5 * jnp.sum(x**2) - 0.5 * n * jnp.log(jnp.asarray(2 * jnp.pi, x.dtype))

    def sample(self, sample_shape: tuple[int, ...], *, dtype=None, key: Key) -> Array:
        """Draw `(*sample_shape, *shape)` samples."""
        sample_shape = _checks.shape(sample_shape, "sample_shape")
        dtype = _checks.float_dtype(dtype)
        _checks.key(key)
        return jr.normal(key, (*sample_shape, *self.shape), dtype)


class Flow(eqx.Module):
    r"""A normalizing flow: the law of $T(z)$, $z \sim$ `base`.

    $\log p(x) = \log p_{\text{base}}(T^{-1}(x)) + \log|\det \partial T^{-1}/\partial x|$
    (Rezende & Mohamed 2015, arXiv:1505.05770, eq. 1; Dinh et al. 2017, eq. 3).

    Args:
        base: a distribution with `shape`, per-event `log_prob(x)` and
            `sample(sample_shape, *, dtype, key)` (e.g. `StandardNormal`).
        bijection: $T$, mapping base samples to data.

    Raises:
        ValueError: if the event shapes of `base` and `bijection` differ.
    """

    base: StandardNormal
    bijection: AbstractBijection

    def __check_init__(self):
        if tuple(self.base.shape) != tuple(self.bijection.shape):
            raise ValueError(
                f"`base` and `bijection` must share one event shape, got {self.base.shape} "
                f"and {self.bijection.shape}."
            )

    @property
    def shape(self) -> tuple[int, ...]:
        return self.bijection.shape

    def _batch_shape(self, x):
        n = len(self.shape)
        if x.ndim < n or x.shape[x.ndim - n :] != tuple(self.shape):
            raise ValueError(f"`x` must have shape (*batch, *{self.shape}), got {x.shape}.")
        return x.shape[: x.ndim - n]

    def log_prob(self, x: Float[Array, "..."], *, key: Key | None = None) -> Float[Array, "..."]:
        """Log-density of `x` of shape `(*batch, *event)`; returns shape `(*batch,)`."""
        x = jnp.asarray(x)
        batch = self._batch_shape(x)
        flat = x.reshape(-1, *self.shape)
        z, ld = batch_transform_and_log_det(self.bijection, flat, inverse=True, key=key)
        return (jax.vmap(self.base.log_prob)(z) + ld).reshape(batch)

    def sample(self, sample_shape: tuple[int, ...], *, dtype=None, key: Key) -> Array:
        """Draw `(*sample_shape, *event)` samples."""
        return self.sample_and_log_prob(sample_shape, key=key, dtype=dtype)[0]

    def sample_and_log_prob(
        self, sample_shape: tuple[int, ...], *, dtype=None, key: Key
    ) -> tuple[Array, Array]:
        """Samples and their log-densities, with one pass through the bijection."""
        sample_shape = _checks.shape(sample_shape, "sample_shape")
        _checks.key(key)
        k_base, k_bij = jr.split(key)
        z = self.base.sample(tuple(sample_shape), key=k_base, dtype=dtype)
        flat = z.reshape(-1, *self.shape)
        x, ld = batch_transform_and_log_det(self.bijection, flat, key=k_bij)
        lp = jax.vmap(self.base.log_prob)(flat) - ld
        return x.reshape(z.shape), lp.reshape(tuple(sample_shape))
