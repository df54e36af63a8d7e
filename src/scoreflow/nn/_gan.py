r"""Generators and discriminators of GANs: MLPs for vectors, DCGAN-style convolutions.

A discriminator is called as `disc(x, state) -> (logit, state)` on one example, with an
`equinox.nn.State` that holds the power-iteration vectors of its spectrally normalised
layers (`eqx.nn.SpectralNorm`, Miyato et al. 2018, arXiv:1802.05957); without spectral
normalisation the state is empty and passes through unchanged. The state's keys are
names built from the layers' paths (as `eqx.nn.make_with_state` builds them), so a
saved state matches its network after `scoreflow.load`.
"""

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
from jaxtyping import Array, Float, PRNGKeyArray

from .. import _checks


def _leaky_relu(x):
    return jax.nn.leaky_relu(x, 0.2)


def _is_index(x) -> bool:
    return isinstance(x, eqx.nn.StateIndex)


def _named(tree, prefix: str):
    # Give every StateIndex a stable string marker (its path), keeping its initial value
    # so that `eqx.nn.State(network)` rebuilds the initial state at any time.
    leaves, treedef = jtu.tree_flatten_with_path(tree, is_leaf=_is_index)
    out = []
    for path, leaf in leaves:
        if _is_index(leaf):
            named = eqx.nn.StateIndex(leaf.init)
            object.__setattr__(named, "marker", prefix + jtu.keystr(path))
            leaf = named
        out.append(leaf)
    return jtu.tree_unflatten(treedef, out)


def _maybe_sn(layer, spectral_norm: bool, key):
    return eqx.nn.SpectralNorm(layer, "weight", key=key) if spectral_norm else layer


def _apply(layer, x, state):
    if isinstance(layer, eqx.nn.SpectralNorm):
        return layer(x, state)
    return layer(x), state


def _check_event(event_shape, name="event_shape") -> tuple[int, ...]:
    shape = _checks.shape(event_shape, name)
    if not shape or any(n < 1 for n in shape):
        raise ValueError(f"`{name}` must be a non-empty shape of sizes >= 1, got {event_shape!r}.")
    return shape


def _check_image(event_shape) -> tuple[int, int, int]:
    shape = _check_event(event_shape)
    if len(shape) != 3 or shape[1] % 4 or shape[2] % 4:
        raise ValueError(
            "`event_shape` must be (channels, height, width) with height and width "
            f"multiples of 4 (two stride-2 stages), got {event_shape!r}."
        )
    return shape  # pyright: ignore[reportReturnType]


class MLPGenerator(eqx.Module):
    r"""A generator $G: z \mapsto x$, an MLP from `latent_dim` to `event_shape`.

    Args:
        latent_dim: size of $z$.
        event_shape: the shape of one sample.
        width: hidden width.
        depth: hidden layers.
        activation: hidden nonlinearity.
        tanh_output: squash the output to $(-1, 1)$ (image data on $[-1, 1]$).
        key: PRNG key.
    """

    layers: tuple[eqx.nn.Linear, ...]
    latent_dim: int = eqx.field(static=True)
    event_shape: tuple[int, ...] = eqx.field(static=True)
    activation: Callable = eqx.field(static=True)
    tanh_output: bool = eqx.field(static=True)

    def __init__(
        self,
        latent_dim: int,
        event_shape: tuple[int, ...],
        *,
        width: int = 128,
        depth: int = 2,
        activation: Callable = jax.nn.relu,
        tanh_output: bool = False,
        key: PRNGKeyArray,
    ):
        _checks.positive_int(latent_dim, "latent_dim")
        _checks.positive_int(width, "width")
        _checks.positive_int(depth, "depth")
        _checks.key(key)
        self.event_shape = _check_event(event_shape)
        sizes = [latent_dim] + [width] * depth + [math.prod(self.event_shape)]
        keys = jr.split(key, len(sizes) - 1)
        self.layers = tuple(eqx.nn.Linear(a, b, key=k) for a, b, k in zip(sizes, sizes[1:], keys))
        self.latent_dim = latent_dim
        self.activation = activation
        self.tanh_output = tanh_output

    def __call__(self, z: Float[Array, " latent"]) -> Float[Array, "..."]:
        h = z
        for layer in self.layers[:-1]:
            h = self.activation(layer(h))
        out = self.layers[-1](h)
        out = jnp.tanh(out) if self.tanh_output else out
        return out.reshape(self.event_shape)


class MLPDiscriminator(eqx.Module):
    r"""A discriminator (critic) $D: x \mapsto$ one logit, an MLP on the flattened example.

    Args:
        event_shape: the shape of one example.
        width: hidden width.
        depth: hidden layers.
        spectral_norm: wrap every linear layer in `eqx.nn.SpectralNorm`.
        activation: hidden nonlinearity (default leaky ReLU, slope 0.2).
        key: PRNG key.
    """

    layers: tuple
    event_shape: tuple[int, ...] = eqx.field(static=True)
    activation: Callable = eqx.field(static=True)

    def __init__(
        self,
        event_shape: tuple[int, ...],
        *,
        width: int = 128,
        depth: int = 2,
        spectral_norm: bool = False,
        activation: Callable = _leaky_relu,
        key: PRNGKeyArray,
    ):
        _checks.positive_int(width, "width")
        _checks.positive_int(depth, "depth")
        _checks.key(key)
        self.event_shape = _check_event(event_shape)
        sizes = [math.prod(self.event_shape)] + [width] * depth + [1]
        keys = jr.split(key, 2 * (len(sizes) - 1))
        layers = tuple(
            _maybe_sn(eqx.nn.Linear(a, b, key=k1), spectral_norm, k2)
            for a, b, k1, k2 in zip(sizes, sizes[1:], keys[0::2], keys[1::2])
        )
        self.layers = _named(layers, "MLPDiscriminator.layers")
        self.activation = activation

    def __call__(self, x: Float[Array, "..."], state: eqx.nn.State) -> tuple[Array, eqx.nn.State]:
        if x.shape != self.event_shape:
            raise ValueError(f"`x` must have shape {self.event_shape}, got {x.shape}.")
        h = x.reshape(-1)
        for layer in self.layers[:-1]:
            h, state = _apply(layer, h, state)
            h = self.activation(h)
        out, state = _apply(self.layers[-1], h, state)
        return out[0], state


class DCGANGenerator(eqx.Module):
    r"""A DCGAN-style generator for small images (Radford et al. 2016, arXiv:1511.06434).

    $z \to$ a linear layer to `2 width` maps at a quarter of the size, then two
    fractionally-strided $4 \times 4$ convolutions (stride 2) with ReLU between, and a
    $\tanh$ output on $[-1, 1]$. Batch normalisation is left out (it would put batch
    statistics in the sampler).

    Args:
        latent_dim: size of $z$.
        event_shape: `(channels, height, width)`, height and width multiples of 4.
        width: feature maps of the last hidden stage.
        key: PRNG key.
    """

    project: eqx.nn.Linear
    up1: eqx.nn.ConvTranspose2d
    up2: eqx.nn.ConvTranspose2d
    latent_dim: int = eqx.field(static=True)
    event_shape: tuple[int, int, int] = eqx.field(static=True)
    width: int = eqx.field(static=True)

    def __init__(
        self,
        latent_dim: int,
        event_shape: tuple[int, ...],
        *,
        width: int = 32,
        key: PRNGKeyArray,
    ):
        _checks.positive_int(latent_dim, "latent_dim")
        _checks.positive_int(width, "width")
        _checks.key(key)
        c, h, w = _check_image(event_shape)
        k1, k2, k3 = jr.split(key, 3)
        self.project = eqx.nn.Linear(latent_dim, 2 * width * (h // 4) * (w // 4), key=k1)
        self.up1 = eqx.nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1, key=k2)
        self.up2 = eqx.nn.ConvTranspose2d(width, c, 4, stride=2, padding=1, key=k3)
        self.latent_dim = latent_dim
        self.event_shape = (c, h, w)
        self.width = width

    def __call__(self, z: Float[Array, " latent"]) -> Float[Array, "c h w"]:
        _, h, w = self.event_shape
        x = jax.nn.relu(self.project(z)).reshape(2 * self.width, h // 4, w // 4)
        x = jax.nn.relu(self.up1(x))
        return jnp.tanh(self.up2(x))


class DCGANDiscriminator(eqx.Module):
    r"""A DCGAN-style discriminator for small images (Radford et al. 2016).

    Two $4 \times 4$ convolutions of stride 2 (`width`, then `2 width` maps) with leaky
    ReLU (slope 0.2), then a linear layer to one logit; `spectral_norm` wraps every layer
    in `eqx.nn.SpectralNorm` (Miyato et al. 2018).

    Args:
        event_shape: `(channels, height, width)`, height and width multiples of 4.
        width: feature maps of the first stage.
        spectral_norm: spectrally normalise every layer.
        key: PRNG key.
    """

    layers: tuple
    event_shape: tuple[int, int, int] = eqx.field(static=True)

    def __init__(
        self,
        event_shape: tuple[int, ...],
        *,
        width: int = 32,
        spectral_norm: bool = False,
        key: PRNGKeyArray,
    ):
        _checks.positive_int(width, "width")
        _checks.key(key)
        c, h, w = _check_image(event_shape)
        k = jr.split(key, 6)
        layers = (
            _maybe_sn(
                eqx.nn.Conv2d(c, width, 4, stride=2, padding=1, key=k[0]), spectral_norm, k[1]
            ),
            _maybe_sn(
                eqx.nn.Conv2d(width, 2 * width, 4, stride=2, padding=1, key=k[2]),
                spectral_norm,
                k[3],
            ),
            _maybe_sn(
                eqx.nn.Linear(2 * width * (h // 4) * (w // 4), 1, key=k[4]), spectral_norm, k[5]
            ),
        )
        self.layers = _named(layers, "DCGANDiscriminator.layers")
        self.event_shape = (c, h, w)

    def __call__(self, x: Float[Array, "c h w"], state: eqx.nn.State) -> tuple[Array, eqx.nn.State]:
        if x.shape != self.event_shape:
            raise ValueError(f"`x` must have shape {self.event_shape}, got {x.shape}.")
        h, state = _apply(self.layers[0], x, state)
        h, state = _apply(self.layers[1], _leaky_relu(h), state)
        out, state = _apply(self.layers[2], _leaky_relu(h).reshape(-1), state)
        return out[0], state
