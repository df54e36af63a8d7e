r"""Time-conditioned ConcatSquash layers (Grathwohl et al. 2019, FFJORD).

A ConcatSquash linear layer is $h' = (W h + b) \odot \sigma(U t + c) + V t$: the time
gates and shifts every unit (Grathwohl et al. 2019, "FFJORD", arXiv:1810.01367,
appendix B.1, "ConcatSquash"; reference implementation `ConcatSquashLinear`).
"""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float

from .. import _checks
from .._custom_types import Key, ScalarLike


class ConcatSquashLinear(eqx.Module):
    r"""One ConcatSquash layer $(t, h) \mapsto (Wh + b)\,\sigma(Ut + c) + Vt$.

    Args:
        in_size: input width.
        out_size: output width.
        dtype: parameter dtype.
        key: PRNG key.
    """

    linear: eqx.nn.Linear
    gate: eqx.nn.Linear
    shift: eqx.nn.Linear

    def __init__(self, in_size: int, out_size: int, *, dtype=None, key: Key):
        _checks.positive_int(in_size, "in_size")
        _checks.positive_int(out_size, "out_size")
        dtype = _checks.float_dtype(dtype)
        _checks.key(key)
        k1, k2, k3 = jr.split(key, 3)
        self.linear = eqx.nn.Linear(in_size, out_size, key=k1, dtype=dtype)
        self.gate = eqx.nn.Linear(1, out_size, key=k2, dtype=dtype)
        self.shift = eqx.nn.Linear(1, out_size, use_bias=False, key=k3, dtype=dtype)

    def __call__(self, t: ScalarLike, h: Float[Array, " in_size"]) -> Float[Array, " out_size"]:
        tt = jnp.reshape(jnp.asarray(t, h.dtype), (1,))
        return self.linear(h) * jax.nn.sigmoid(self.gate(tt)) + self.shift(tt)


class ConcatSquashMLP(eqx.Module):
    """A time-conditioned MLP of ConcatSquash layers: `(t, x) -> array` of `x`'s shape.

    The vector field of a continuous normalizing flow (FFJORD's default architecture).
    The last layer starts at zero, so the flow starts as the identity map.

    Args:
        dim: size of the input and output.
        width: hidden width.
        depth: number of hidden layers (>= 1).
        activation: elementwise non-linearity (default `jax.nn.softplus`; smooth, as
            the trace of the Jacobian must be differentiable).
        zero_init: start the last layer at zero (the identity flow).
        dtype: parameter dtype.
        key: PRNG key.

    Raises:
        ValueError: on a non-positive `dim`, `width` or `depth`.
    """

    layers: tuple[ConcatSquashLinear, ...]
    activation: Callable = eqx.field(static=True)

    def __init__(
        self,
        dim: int,
        width: int = 64,
        depth: int = 2,
        activation: Callable = jax.nn.softplus,
        zero_init: bool = True,
        dtype=None,
        *,
        key: Key,
    ):
        for name, value in (("dim", dim), ("width", width), ("depth", depth)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        dtype = _checks.float_dtype(dtype)
        _checks.key(key)
        sizes = [dim] + [width] * depth + [dim]
        keys = jr.split(key, len(sizes) - 1)
        layers = [
            ConcatSquashLinear(a, b, dtype=dtype, key=k)
            for a, b, k in zip(sizes[:-1], sizes[1:], keys)
        ]
        if not zero_init:
            self.layers = tuple(layers)
            self.activation = activation
            return
        last = layers[-1]
        zero = lambda a: jnp.zeros_like(a)
        last = eqx.tree_at(
            lambda m: (m.linear.weight, m.linear.bias, m.shift.weight),
            last,
            (zero(last.linear.weight), zero(last.linear.bias), zero(last.shift.weight)),
        )
        self.layers = (*layers[:-1], last)
        self.activation = activation

    def __call__(self, t: ScalarLike, x: Float[Array, " dim"]) -> Float[Array, " dim"]:
        h = x
        for layer in self.layers[:-1]:
            h = self.activation(layer(t, h))
        return self.layers[-1](t, h)
