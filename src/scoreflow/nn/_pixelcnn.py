r"""Masked and gated convolutions of PixelCNN (van den Oord et al. 2016).

The autoregressive order is raster order over pixels, and within a pixel over the
colour channels: output $(c, i, j)$ may depend on input $(c', i', j')$ only if
$(i', j', c')$ comes strictly before $(i, j, c)$ in that order. Hidden feature maps are
split into as many contiguous groups as there are colour channels, group $g$ carrying
the information that colour $g$ may use (van den Oord et al. 2016a, arXiv:1601.06759,
section 3.4, figure 2).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .. import _checks
from ._conv import conv2d

MASK_TYPES: tuple[str, ...] = ("A", "B")


def _groups(n: int, num_groups: int) -> np.ndarray:
    # Contiguous groups: channel k of n belongs to group floor(k * G / n).
    return np.arange(n) * num_groups // n


def causal_mask(
    kernel_size: tuple[int, int],
    in_channels: int,
    out_channels: int,
    mask_type: str,
    num_groups: int = 1,
) -> np.ndarray:
    r"""The `(out, in, kh, kw)` mask of a raster-order masked convolution.

    Taps below the centre row, and right of the centre in the centre row, are zero. At
    the centre an output of group $g$ sees inputs of groups $< g$ (type A, the first
    layer: a pixel never sees itself) or $\le g$ (type B, later layers).
    """
    kh, kw = kernel_size
    ch, cw = kh // 2, kw // 2
    mask = np.ones((out_channels, in_channels, kh, kw), np.float32)
    mask[:, :, ch + 1 :, :] = 0
    mask[:, :, ch, cw + 1 :] = 0
    g_out = _groups(out_channels, num_groups)[:, None]
    g_in = _groups(in_channels, num_groups)[None, :]
    mask[:, :, ch, cw] = (g_in < g_out) if mask_type == "A" else (g_in <= g_out)
    return mask


def _check_groups(channels: int, num_groups: int, name: str) -> None:
    if channels % num_groups:
        raise ValueError(
            f"`{name}` must be a multiple of the {num_groups} colour channels (one group "
            f"of feature maps per colour), got {channels}."
        )


class MaskedConv2d(eqx.Module):
    r"""A 2-d convolution masked to raster order (van den Oord et al. 2016a, figure 2).

    Type `"A"` (the first layer) excludes the centre pixel's own colour and the later
    ones; type `"B"` (every later layer) includes its own colour group. The mask is
    rebuilt from the static settings at each call (it is not a parameter), and the
    padding keeps the spatial size.

    Args:
        in_channels: input feature maps (a multiple of `num_groups`).
        out_channels: output feature maps (a multiple of `num_groups`).
        kernel_size: an odd int or a pair of odd ints.
        mask_type: `"A"` or `"B"`.
        num_groups: colour channels of the image ($1$ for grey digits).
        key: PRNG key.

    Raises:
        ValueError: on a mask type that is not A or B, an even kernel, or channel
            counts that are not multiples of `num_groups`.
    """

    conv: eqx.nn.Conv2d
    mask_type: str = eqx.field(static=True)
    num_groups: int = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        *,
        mask_type: str,
        num_groups: int = 1,
        key: PRNGKeyArray,
    ):
        if mask_type not in MASK_TYPES:
            raise ValueError(f"`mask_type` must be 'A' or 'B', got {mask_type!r}.")
        _checks.positive_int(num_groups, "num_groups")
        _checks.positive_int(in_channels, "in_channels")
        _checks.positive_int(out_channels, "out_channels")
        _check_groups(in_channels, num_groups, "in_channels")
        _check_groups(out_channels, num_groups, "out_channels")
        ks = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        if len(ks) != 2 or not all(isinstance(k, int) and k >= 1 and k % 2 == 1 for k in ks):
            raise ValueError(f"`kernel_size` must be odd (an int or a pair), got {kernel_size!r}.")
        _checks.key(key)
        self.conv = eqx.nn.Conv2d(
            in_channels, out_channels, ks, padding=(ks[0] // 2, ks[1] // 2), key=key
        )
        self.mask_type = mask_type
        self.num_groups = num_groups

    @property
    def mask(self) -> np.ndarray:
        """The `(out, in, kh, kw)` mask of zeros and ones."""
        w = self.conv.weight
        return causal_mask(
            (w.shape[2], w.shape[3]), w.shape[1], w.shape[0], self.mask_type, self.num_groups
        )

    def __call__(self, x: Float[Array, "c h w"]) -> Float[Array, "o h w"]:
        w = self.conv.weight * jnp.asarray(self.mask, self.conv.weight.dtype)
        return conv2d(eqx.tree_at(lambda c: c.weight, self.conv, w), x)


def _shift_down(v):
    # Row i receives row i - 1 (zeros in row 0): the vertical stack then only ever
    # reaches the horizontal one from strictly above.
    return jnp.pad(v, ((0, 0), (1, 0), (0, 0)))[:, :-1, :]


def _gate(a, cond):
    # tanh(W_f * x) * sigmoid(W_g * x), van den Oord et al. 2016b eq. (2); the filter and
    # gate halves are interleaved so that both of a pair fall in one colour group.
    if cond is not None:
        a = a + cond[:, None, None]
    return jnp.tanh(a[0::2]) * jax.nn.sigmoid(a[1::2])


def _label_embedding(num_classes, dim, key):
    return None if num_classes is None else eqx.nn.Embedding(num_classes, dim, key=key)


class _GatedLayer(eqx.Module):
    # One layer of the gated PixelCNN (van den Oord et al. 2016b, figure 2).
    vertical: eqx.nn.Conv2d
    link: eqx.nn.Conv2d
    horizontal: MaskedConv2d
    residual: MaskedConv2d | None
    skip: MaskedConv2d
    v_label: eqx.nn.Embedding | None
    h_label: eqx.nn.Embedding | None

    def __init__(self, c_in, width, kernel_size, first, num_groups, num_classes, key):
        k = jr.split(key, 7)
        p = kernel_size // 2
        # Rows i - p .. i of every column j - p .. j + p: with the shift below, strictly
        # above the pixel, and no blind spot.
        self.vertical = eqx.nn.Conv2d(
            c_in, 2 * width, (p + 1, kernel_size), padding=((p, 0), (p, p)), key=k[0]
        )
        self.link = eqx.nn.Conv2d(2 * width, 2 * width, 1, key=k[1])
        self.horizontal = MaskedConv2d(
            c_in,
            2 * width,
            (1, kernel_size),
            mask_type="A" if first else "B",
            num_groups=num_groups,
            key=k[2],
        )
        self.residual = (
            None
            if first
            else MaskedConv2d(width, width, 1, mask_type="B", num_groups=num_groups, key=k[3])
        )
        self.skip = MaskedConv2d(width, width, 1, mask_type="B", num_groups=num_groups, key=k[4])
        self.v_label = _label_embedding(num_classes, 2 * width, k[5])
        self.h_label = _label_embedding(num_classes, 2 * width, k[6])

    def __call__(self, v, h, y):
        v_pre = conv2d(self.vertical, v)
        cv = None if self.v_label is None else self.v_label(y)
        ch = None if self.h_label is None else self.h_label(y)
        h_pre = self.horizontal(h) + conv2d(self.link, _shift_down(v_pre))
        v_out = _gate(v_pre, cv)
        gated = _gate(h_pre, ch)
        h_out = gated if self.residual is None else h + self.residual(gated)
        return v_out, h_out, self.skip(gated)


def _check_image(event_shape, num_params, width):
    shape = tuple(event_shape)
    if len(shape) != 3 or not all(isinstance(n, int) and n >= 1 for n in shape):
        raise ValueError(f"`event_shape` must be (channels, height, width), got {event_shape!r}.")
    _checks.positive_int(num_params, "num_params")
    _checks.positive_int(width, "width")
    _check_groups(width, shape[0], "width")
    return shape


class _OutputHead(eqx.Module):
    # Two masked 1x1 convolutions to `num_params` outputs per colour channel.
    hidden: MaskedConv2d
    out: MaskedConv2d
    channels: int = eqx.field(static=True)
    num_params: int = eqx.field(static=True)

    def __init__(self, width, channels, num_params, key):
        k1, k2 = jr.split(key)
        self.hidden = MaskedConv2d(width, width, 1, mask_type="B", num_groups=channels, key=k1)
        self.out = MaskedConv2d(
            width, channels * num_params, 1, mask_type="B", num_groups=channels, key=k2
        )
        self.channels = channels
        self.num_params = num_params

    def __call__(self, h):
        out = self.out(jax.nn.elu(self.hidden(jax.nn.elu(h))))
        c, hh, ww = self.channels, h.shape[1], h.shape[2]
        return jnp.moveaxis(out.reshape(c, self.num_params, hh, ww), 1, -1)


def _scaled(x, num_levels, dtype):
    # Integer level k -> -1 + 2k / (L - 1) on [-1, 1]; floats are taken as already scaled.
    if jnp.issubdtype(x.dtype, jnp.integer):
        return (2.0 * x.astype(dtype) / (num_levels - 1) - 1.0).astype(dtype)
    return x.astype(dtype)


class GatedPixelCNNNetwork(eqx.Module):
    r"""The gated PixelCNN: vertical and horizontal stacks (van den Oord et al. 2016b).

    "Conditional Image Generation with PixelCNN Decoders" (arXiv:1606.05328), figure 2:
    the vertical stack sees the rows above (through a one-row shift), the horizontal
    stack the pixels to the left in the row (a masked $1 \times k$ convolution, type A in
    the first layer), each layer gated, $\tanh(W_f * x) \odot \sigma(W_g * x)$ (eq. 2),
    with a label embedding added to both halves (eq. 4) when `num_classes` is given, and
    residual and skip connections in the horizontal stack. The receptive field of a
    pixel is every pixel before it within reach (no blind spot).

    Args:
        event_shape: `(channels, height, width)`.
        num_params: outputs per colour channel and pixel (an output head's
            `num_params`).
        num_levels: pixel levels, used to scale integer input to $[-1, 1]$.
        width: feature maps per stack (a multiple of `channels`).
        depth: gated layers (the first has type-A masks).
        kernel_size: odd size of the vertical window and of the horizontal row.
        num_classes: labels of a class-conditional network (`None`: unconditional).
        key: PRNG key.

    Returns (when called on `x` `(channels, height, width)` and optional label `y`):
        `(channels, height, width, num_params)` parameters of the pixel distributions.
    """

    layers: tuple[_GatedLayer, ...]
    head: _OutputHead
    event_shape: tuple[int, int, int] = eqx.field(static=True)
    num_levels: int = eqx.field(static=True)
    num_classes: int | None = eqx.field(static=True)

    def __init__(
        self,
        event_shape: tuple[int, ...],
        num_params: int,
        *,
        num_levels: int,
        width: int = 32,
        depth: int = 4,
        kernel_size: int = 3,
        num_classes: int | None = None,
        key: PRNGKeyArray,
    ):
        shape = _check_image(event_shape, num_params, width)
        _checks.positive_int(depth, "depth")
        _checks.positive_int(num_levels, "num_levels", least=2)
        if not (isinstance(kernel_size, int) and kernel_size >= 1 and kernel_size % 2 == 1):
            raise ValueError(f"`kernel_size` must be an odd int, got {kernel_size!r}.")
        if num_classes is not None:
            _checks.positive_int(num_classes, "num_classes")
        _checks.key(key)
        keys = jr.split(key, depth + 1)
        c = shape[0]
        self.layers = tuple(
            _GatedLayer(c if i == 0 else width, width, kernel_size, i == 0, c, num_classes, k)
            for i, k in enumerate(keys[:-1])
        )
        self.head = _OutputHead(width, c, num_params, keys[-1])
        self.event_shape = shape  # pyright: ignore[reportAttributeAccessIssue]
        self.num_levels = num_levels
        self.num_classes = num_classes

    def __call__(self, x: Array, y: Int[Array, ""] | int | None = None) -> Float[Array, "c h w p"]:
        if x.shape != self.event_shape:
            raise ValueError(f"`x` must have shape {self.event_shape}, got {x.shape}.")
        dtype = self.head.out.conv.weight.dtype
        v = h = _scaled(x, self.num_levels, dtype)
        skip = 0.0
        for layer in self.layers:
            v, h, s = layer(v, h, y)
            skip = skip + s
        return self.head(skip)


class _PlainBlock(eqx.Module):
    conv: MaskedConv2d
    label: eqx.nn.Embedding | None

    def __call__(self, h, y):
        out = self.conv(jax.nn.elu(h))
        if self.label is not None:
            out = out + self.label(y)[:, None, None]
        return h + out


class PixelCNNNetwork(eqx.Module):
    r"""The original PixelCNN: a stack of masked convolutions (van den Oord et al. 2016a).

    "Pixel Recurrent Neural Networks" (arXiv:1601.06759), section 3.4: a $k \times k$
    type-A masked convolution, then `depth` residual blocks of $k \times k$ type-B masked
    convolutions, then two $1 \times 1$ type-B convolutions to the output. Its
    receptive field has a blind spot: pixels above and to the right that no stack of
    such masks reaches (`GatedPixelCNNNetwork` removes it).

    Args:
        event_shape: `(channels, height, width)`.
        num_params: outputs per colour channel and pixel.
        num_levels: pixel levels, used to scale integer input to $[-1, 1]$.
        width: feature maps (a multiple of `channels`).
        depth: residual type-B blocks.
        kernel_size: odd kernel size of every masked convolution.
        num_classes: labels of a class-conditional network (`None`: unconditional).
        key: PRNG key.
    """

    first: MaskedConv2d
    blocks: tuple[_PlainBlock, ...]
    head: _OutputHead
    event_shape: tuple[int, int, int] = eqx.field(static=True)
    num_levels: int = eqx.field(static=True)
    num_classes: int | None = eqx.field(static=True)

    def __init__(
        self,
        event_shape: tuple[int, ...],
        num_params: int,
        *,
        num_levels: int,
        width: int = 32,
        depth: int = 4,
        kernel_size: int = 3,
        num_classes: int | None = None,
        key: PRNGKeyArray,
    ):
        shape = _check_image(event_shape, num_params, width)
        _checks.positive_int(depth, "depth", least=0)
        _checks.positive_int(num_levels, "num_levels", least=2)
        if num_classes is not None:
            _checks.positive_int(num_classes, "num_classes")
        _checks.key(key)
        c = shape[0]
        keys = jr.split(key, 2 * depth + 2)
        self.first = MaskedConv2d(c, width, kernel_size, mask_type="A", num_groups=c, key=keys[0])
        self.blocks = tuple(
            _PlainBlock(
                MaskedConv2d(
                    width, width, kernel_size, mask_type="B", num_groups=c, key=keys[1 + 2 * i]
                ),
                _label_embedding(num_classes, width, keys[2 + 2 * i]),
            )
            for i in range(depth)
        )
        self.head = _OutputHead(width, c, num_params, keys[-1])
        self.event_shape = shape  # pyright: ignore[reportAttributeAccessIssue]
        self.num_levels = num_levels
        self.num_classes = num_classes

    def __call__(self, x: Array, y: Int[Array, ""] | int | None = None) -> Float[Array, "c h w p"]:
        if x.shape != self.event_shape:
            raise ValueError(f"`x` must have shape {self.event_shape}, got {x.shape}.")
        dtype = self.head.out.conv.weight.dtype
        h = self.first(_scaled(x, self.num_levels, dtype))
        for block in self.blocks:
            h = block(h, y)
        return self.head(h)
