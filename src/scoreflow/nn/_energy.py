from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from .. import _checks


def _spectral(weight):
    # W / sigma_max(W): the exact largest singular value (Miyato et al. 2018 estimate
    # it by power iteration with a state; for these small matrices the SVD is cheap and
    # needs no state to checkpoint).
    return weight / jnp.linalg.norm(weight, ord=2)


class EnergyMLP(eqx.Module):
    r"""An energy network $E(x) = f(x) + \|x\|^2 / (2 s^2)$: an MLP plus a Gaussian envelope.

    $f$ is an MLP with a smooth activation (its gradient drives Langevin dynamics, so it
    should not be piecewise constant). Such an $f$ grows at most linearly, so the envelope
    of scale $s$ makes $e^{-E}$ integrable whatever the weights: the model always has a
    normaliser for annealed importance sampling to estimate. `spectral_norm` divides
    every weight matrix by its largest singular value (spectral normalisation, Miyato et
    al. 2018, arXiv:1802.05957, computed exactly rather than by power iteration), which
    bounds the Lipschitz constant of $f$ and is a common stabiliser of contrastive
    divergence.

    Args:
        event_shape: the shape of one example; it is flattened on entry.
        width: hidden width.
        depth: number of hidden layers.
        scale: $s$ of the envelope (`None`: no envelope, and then nothing guarantees
            that $e^{-E}$ is integrable).
        spectral_norm: spectrally normalise the weights.
        activation: smooth nonlinearity.
        key: PRNG key.
    """

    layers: tuple[eqx.nn.Linear, ...]
    event_shape: tuple[int, ...] = eqx.field(static=True)
    scale: float | None = eqx.field(static=True)
    spectral_norm: bool = eqx.field(static=True)
    activation: Callable = eqx.field(static=True)

    def __init__(
        self,
        event_shape: tuple[int, ...],
        width: int = 128,
        depth: int = 2,
        *,
        scale: float | None = 3.0,
        spectral_norm: bool = False,
        activation: Callable = jax.nn.silu,
        key: PRNGKeyArray,
    ):
        _checks.positive_int(width, "width")
        _checks.positive_int(depth, "depth")
        _checks.key(key)
        if scale is not None:
            _checks.positive(scale, "scale")
        self.event_shape = tuple(event_shape)
        d = 1
        for s in self.event_shape:
            d *= s
        sizes = [d] + [width] * depth + [1]
        keys = jr.split(key, len(sizes) - 1)
        self.layers = tuple(
            eqx.nn.Linear(a, b, key=k) for a, b, k in zip(sizes[:-1], sizes[1:], keys)
        )
        self.scale = None if scale is None else float(scale)
        self.spectral_norm = spectral_norm
        self.activation = activation

    def __call__(self, x: Float[Array, "..."]) -> Float[Array, ""]:
        if x.shape != self.event_shape:
            raise ValueError(f"`x` must have shape {self.event_shape}, got {x.shape}.")
        dtype = self.layers[0].weight.dtype
        h = x.reshape(-1).astype(dtype)
        flat = h
        for i, layer in enumerate(self.layers):
            w = _spectral(layer.weight) if self.spectral_norm else layer.weight
            h = w @ h + (0 if layer.bias is None else layer.bias)
            if i < len(self.layers) - 1:
                h = self.activation(h)
        e = h[0]
        if self.scale is not None:
            e = e + 0.5 * jnp.sum(flat**2) / self.scale**2
        return e.astype(x.dtype)
