from typing import TypeVar

import equinox as eqx
import jax.numpy as jnp

_Layer = TypeVar("_Layer", eqx.nn.Linear, eqx.nn.Conv2d)


def zero_output(layer: _Layer) -> _Layer:
    """The layer with its weight and bias set to zero (an output layer that predicts 0).

    For a score network this is a stable start in every parameterisation (zero eps is a
    unit Gaussian's); for a coupling it is the identity (Glow, Kingma & Dhariwal 2018).
    """
    if layer.bias is None:
        return eqx.tree_at(lambda m: m.weight, layer, jnp.zeros_like(layer.weight))
    zeros = (jnp.zeros_like(layer.weight), jnp.zeros_like(layer.bias))
    return eqx.tree_at(lambda m: (m.weight, m.bias), layer, zeros)
