from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .. import _checks
from ._conv import conv2d
from ._embeddings import GaussianFourierEmbedding, SinusoidalEmbedding
from ._init import zero_output
from ._labels import LabelEmbedding, add_label, label_embedding


def _groups(ch):
    for g in (8, 4, 2, 1):
        if ch % g == 0:
            return g
    return 1


class _ResBlock(eqx.Module):
    norm1: eqx.nn.GroupNorm
    conv1: eqx.nn.Conv2d
    temb: eqx.nn.Linear
    norm2: eqx.nn.GroupNorm
    conv2: eqx.nn.Conv2d
    skip: eqx.nn.Conv2d | None

    def __init__(self, cin, cout, tdim, *, key):
        k1, k2, k3, k4 = jr.split(key, 4)
        self.norm1 = eqx.nn.GroupNorm(_groups(cin), cin)
        self.conv1 = eqx.nn.Conv2d(cin, cout, 3, padding=1, key=k1)
        self.temb = eqx.nn.Linear(tdim, cout, key=k2)
        self.norm2 = eqx.nn.GroupNorm(_groups(cout), cout)
        conv2 = eqx.nn.Conv2d(cout, cout, 3, padding=1, key=k3)
        # Zero-initialised last convolution: each block starts as the identity (Ho et al. 2020).
        self.conv2 = eqx.tree_at(lambda c: c.weight, conv2, jnp.zeros_like(conv2.weight))
        self.skip = None if cin == cout else eqx.nn.Conv2d(cin, cout, 1, key=k4)

    def __call__(self, x, e):
        h = conv2d(self.conv1, jax.nn.silu(self.norm1(x)))
        h = h + self.temb(e)[:, None, None]
        h = conv2d(self.conv2, jax.nn.silu(self.norm2(h)))
        return h + (x if self.skip is None else conv2d(self.skip, x))


def time_features(embed, temb, time_transform, t, dtype, label_embed=None, y=None):
    """The conditioning vector of a convolutional network: `temb(embed(c(t)) + label(y))`."""
    t = jnp.asarray(t).astype(dtype)
    c = t if time_transform is None else time_transform(t)
    return temb(add_label(embed(c), label_embed, y))


class UNet(eqx.Module):
    r"""A small time-conditioned U-Net for images `(channels, H, W)`, 8×8 up to 32×32.

    Ho et al. 2020's architecture without attention: a residual block (GroupNorm, SiLU,
    3×3 convolutions, additive time embedding) per resolution, stride-2 convolutions
    down, nearest-neighbour upsampling and skip concatenation up. `H` and `W` must be
    divisible by $2^{\text{len(channel\_mults)} - 1}$.

    With `num_classes` it is class-conditional, `(t, x, y)`: a learned label embedding
    (`LabelEmbedding`; `y=None` is the null label) is added to the time embedding before
    the time MLP, as in Ho & Salimans 2022 (arXiv:2207.12598). It does not change the
    parameters the other layers get from `key`.

    Args:
        data_shape: `(channels, H, W)`.
        base_channels: channels at full resolution.
        channel_mults: channel multiplier per resolution level.
        embed_dim: time embedding size (even).
        embedding: `"fourier"` or `"sinusoidal"`.
        embedding_scale: standard deviation of the Fourier frequencies.
        time_transform: map applied to $t$ before embedding; default identity.
        num_classes: number of classes of a class-conditional network, or `None`.
        key: PRNG key.
    """

    embed: Callable[[Array], Array]
    temb: eqx.nn.MLP
    conv_in: eqx.nn.Conv2d
    down: tuple[_ResBlock, ...]
    downsample: tuple[eqx.nn.Conv2d, ...]
    mid: _ResBlock
    up: tuple[_ResBlock, ...]
    norm_out: eqx.nn.GroupNorm
    conv_out: eqx.nn.Conv2d
    data_shape: tuple[int, int, int] = eqx.field(static=True)
    time_transform: Callable | None
    label_embed: LabelEmbedding | None

    def __init__(
        self,
        data_shape: tuple[int, int, int],
        base_channels: int = 32,
        channel_mults: tuple[int, ...] = (1, 2),
        embed_dim: int = 64,
        embedding: str = "fourier",
        embedding_scale: float = 16.0,
        time_transform: Callable | None = None,
        num_classes: int | None = None,
        *,
        key: PRNGKeyArray,
    ):
        if len(data_shape) != 3:
            raise ValueError(f"`data_shape` must be (channels, H, W), got {data_shape}.")
        if num_classes is not None:
            _checks.positive_int(num_classes, "num_classes")
        _checks.key(key)
        c, h, w = data_shape
        f = 2 ** (len(channel_mults) - 1)
        if h % f or w % f:
            raise ValueError(f"H and W of `data_shape` must be divisible by {f}, got {(h, w)}.")
        self.data_shape = (c, h, w)
        self.time_transform = time_transform
        keys = iter(jr.split(key, 4 + 3 * len(channel_mults) + 4))
        if embedding == "fourier":
            self.embed = GaussianFourierEmbedding(embed_dim, scale=embedding_scale, key=next(keys))
        elif embedding == "sinusoidal":
            self.embed = SinusoidalEmbedding(embed_dim)
        else:
            raise ValueError(f"`embedding` must be 'fourier' or 'sinusoidal', got {embedding!r}.")
        tdim = 4 * base_channels
        self.temb = eqx.nn.MLP(embed_dim, tdim, tdim, 1, activation=jax.nn.silu, key=next(keys))
        chans = [base_channels * m for m in channel_mults]
        self.conv_in = eqx.nn.Conv2d(c, chans[0], 3, padding=1, key=next(keys))
        down, downsample, up = [], [], []
        prev = chans[0]
        for i, ch in enumerate(chans):
            down.append(_ResBlock(prev, ch, tdim, key=next(keys)))
            if i < len(chans) - 1:
                downsample.append(eqx.nn.Conv2d(ch, ch, 3, stride=2, padding=1, key=next(keys)))
            prev = ch
        self.mid = _ResBlock(prev, prev, tdim, key=next(keys))
        for ch in reversed(chans):
            up.append(_ResBlock(prev + ch, ch, tdim, key=next(keys)))
            prev = ch
        self.down, self.downsample, self.up = tuple(down), tuple(downsample), tuple(up)
        self.norm_out = eqx.nn.GroupNorm(_groups(prev), prev)
        conv_out = eqx.nn.Conv2d(prev, c, 3, padding=1, key=next(keys))
        self.conv_out = zero_output(conv_out)
        self.label_embed = label_embedding(num_classes, embed_dim, key)

    @property
    def num_classes(self) -> int | None:
        """The number of classes of a class-conditional network, else `None`."""
        return None if self.label_embed is None else self.label_embed.num_classes

    def __call__(
        self, t: Float[Array, ""], x: Float[Array, "c h w"], y: Int[Array, ""] | int | None = None
    ) -> Float[Array, "c h w"]:
        """The output at one image; `y` the class label (`None`: the null label)."""
        if x.shape != self.data_shape:
            raise ValueError(f"`x` must have shape {self.data_shape}, got {x.shape}.")
        dtype = self.conv_in.weight.dtype
        e = time_features(self.embed, self.temb, self.time_transform, t, dtype, self.label_embed, y)
        h = conv2d(self.conv_in, x.astype(dtype))
        skips = []
        for i, block in enumerate(self.down):
            h = block(h, e)
            skips.append(h)
            if i < len(self.downsample):
                h = conv2d(self.downsample[i], h)
        h = self.mid(h, e)
        for block in self.up:
            s = skips.pop()
            if h.shape[1:] != s.shape[1:]:
                h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
            h = block(jnp.concatenate([h, s], 0), e)
        out = conv2d(self.conv_out, jax.nn.silu(self.norm_out(h)))
        return out.astype(x.dtype)
