import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from .. import _checks


def _check_even(dim):
    if not isinstance(dim, int) or dim < 2 or dim % 2:
        raise ValueError(f"`dim` must be an even int >= 2, got {dim!r}.")


class GaussianFourierEmbedding(eqx.Module):
    r"""Random Fourier features of a scalar: $[\sin 2\pi W t, \cos 2\pi W t]$.

    $W \sim N(0, s^2)$ is fixed at construction and not trained (gradients are
    stopped), as in Song et al. 2021 (arXiv:2011.13456, app. H.2; Tancik et al. 2020).
    Feed it the log noise level (e.g. $\log\sigma_t$) rather than $t$ for VE SDEs.

    Args:
        dim: output size (even).
        scale: standard deviation $s$ of the frequencies.
        key: PRNG key for $W$.
    """

    weights: Float[Array, " half"]
    dim: int = eqx.field(static=True)

    def __init__(self, dim: int, scale: float = 16.0, *, key: PRNGKeyArray):
        _check_even(dim)
        _checks.key(key)
        self.dim = dim
        self.weights = scale * jr.normal(key, (dim // 2,))

    def __call__(self, t: Float[Array, ""]) -> Float[Array, " {self.dim}"]:
        w = jax.lax.stop_gradient(self.weights)
        arg = 2 * math.pi * w * jnp.asarray(t).astype(w.dtype)
        return jnp.concatenate([jnp.sin(arg), jnp.cos(arg)])


class SinusoidalEmbedding(eqx.Module):
    r"""Transformer sinusoidal features of a scalar (Vaswani et al. 2017; Ho et al. 2020).

    $[\sin(c\,t\,\omega_k), \cos(c\,t\,\omega_k)]$ with
    $\omega_k = P^{-k/(h-1)}$, $k < h = $ `dim`/2, and a multiplier $c$ (1000 for
    $t\in[0,1]$, as DDPM feeds its step index).

    Args:
        dim: output size (even).
        max_period: $P$.
        multiplier: $c$.
    """

    dim: int = eqx.field(static=True)
    max_period: float = eqx.field(static=True, default=10000.0)
    multiplier: float = eqx.field(static=True, default=1000.0)

    def __check_init__(self):
        _check_even(self.dim)

    def __call__(self, t: Float[Array, ""]) -> Float[Array, " {self.dim}"]:
        t = jnp.asarray(t)
        dtype = t.dtype if jnp.issubdtype(t.dtype, jnp.floating) else jnp.result_type(float)
        half = self.dim // 2
        freqs = jnp.exp(
            -math.log(self.max_period) * jnp.arange(half, dtype=dtype) / max(half - 1, 1)
        )
        arg = self.multiplier * t.astype(dtype) * freqs
        return jnp.concatenate([jnp.sin(arg), jnp.cos(arg)])
