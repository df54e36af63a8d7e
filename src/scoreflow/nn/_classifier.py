from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from .. import _checks
from ._conv import conv2d
from ._init import zero_output
from ._mlp import _embedding
from ._unet import _groups, _ResBlock, time_features


class TimeConvClassifier(eqx.Module):
    r"""A small time-conditioned convolutional classifier of noisy images, `(t, x) -> logits`.

    The downsampling half of `UNet`: residual blocks (GroupNorm, SiLU, 3×3 convolutions,
    additive time embedding) with a stride-2 convolution between resolutions, then global
    average pooling and a linear layer to `num_classes` logits, zero-initialised (the
    untrained classifier is uniform). It is the noise-aware classifier of classifier
    guidance, Dhariwal & Nichol 2021 (arXiv:2105.05233, sec. 4), who use the U-Net's
    encoder with attention pooling.

    Args:
        data_shape: `(channels, H, W)`.
        num_classes: number of classes.
        base_channels: channels at full resolution.
        channel_mults: channel multiplier per resolution level.
        embed_dim: time embedding size (even).
        embedding: `"fourier"` or `"sinusoidal"`.
        embedding_scale: standard deviation of the Fourier frequencies.
        time_transform: map applied to $t$ before embedding; default identity.
        key: PRNG key.
    """

    embed: Callable[[Array], Array]
    temb: eqx.nn.MLP
    conv_in: eqx.nn.Conv2d
    blocks: tuple[_ResBlock, ...]
    downsample: tuple[eqx.nn.Conv2d, ...]
    norm_out: eqx.nn.GroupNorm
    out: eqx.nn.Linear
    data_shape: tuple[int, int, int] = eqx.field(static=True)
    num_classes: int = eqx.field(static=True)
    time_transform: Callable | None

    def __init__(
        self,
        data_shape: tuple[int, int, int],
        num_classes: int,
        base_channels: int = 16,
        channel_mults: tuple[int, ...] = (1, 2),
        embed_dim: int = 32,
        embedding: str = "fourier",
        embedding_scale: float = 16.0,
        time_transform: Callable | None = None,
        *,
        key: PRNGKeyArray,
    ):
        if len(data_shape) != 3:
            raise ValueError(f"`data_shape` must be (channels, H, W), got {data_shape}.")
        _checks.positive_int(num_classes, "num_classes")
        _checks.positive_int(base_channels, "base_channels")
        _checks.key(key)
        if len(channel_mults) < 1:
            raise ValueError(f"`channel_mults` must not be empty, got {channel_mults}.")
        self.data_shape = tuple(data_shape)  # pyright: ignore[reportAttributeAccessIssue]
        self.num_classes = num_classes
        self.time_transform = time_transform
        k_embed, k_temb, k_in, k_out, k_blocks = jr.split(key, 5)
        self.embed = _embedding(embedding, embed_dim, k_embed, embedding_scale)
        tdim = 4 * base_channels
        self.temb = eqx.nn.MLP(embed_dim, tdim, tdim, 1, activation=jax.nn.silu, key=k_temb)
        chans = [base_channels * m for m in channel_mults]
        self.conv_in = eqx.nn.Conv2d(data_shape[0], chans[0], 3, padding=1, key=k_in)
        keys = jr.split(k_blocks, 2 * len(chans))
        blocks, downsample = [], []
        prev = chans[0]
        for i, ch in enumerate(chans):
            blocks.append(_ResBlock(prev, ch, tdim, key=keys[2 * i]))
            if i < len(chans) - 1:
                conv = eqx.nn.Conv2d(ch, ch, 3, stride=2, padding=1, key=keys[2 * i + 1])
                downsample.append(conv)
            prev = ch
        self.blocks, self.downsample = tuple(blocks), tuple(downsample)
        self.norm_out = eqx.nn.GroupNorm(_groups(prev), prev)
        self.out = zero_output(eqx.nn.Linear(prev, num_classes, key=k_out))

    def __call__(self, t: Float[Array, ""], x: Float[Array, "c h w"]) -> Float[Array, " classes"]:
        """The `(num_classes,)` logits of one noisy image at time `t`."""
        if x.shape != self.data_shape:
            raise ValueError(f"`x` must have shape {self.data_shape}, got {x.shape}.")
        dtype = self.conv_in.weight.dtype
        e = time_features(self.embed, self.temb, self.time_transform, t, dtype)
        h = conv2d(self.conv_in, x.astype(dtype))
        for i, block in enumerate(self.blocks):
            h = block(h, e)
            if i < len(self.downsample):
                h = conv2d(self.downsample[i], h)
        h = jnp.mean(jax.nn.silu(self.norm_out(h)), axis=(1, 2))
        return self.out(h).astype(x.dtype)
