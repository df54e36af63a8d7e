"""A 2-d convolution computed as one matrix product over image patches (im2col).

XLA:CPU runs a convolution inside a loop body (`lax.scan`, `while_loop`: every jitted
training chunk of `train.fit`, every diffrax solve) 15-20 times slower than the same
convolution outside one (jax-ml/jax#12868, open; measured here with jax 0.10.2: a 3×3,
32-channel convolution on 64 images of 8×8 and its gradient, 1.6 ms alone and 23 ms per
iteration of a `scan`), while a matrix product runs at full speed in both. The networks
here keep their `equinox.nn.Conv2d` layers (parameters, initialisation and checkpoints
unchanged) and evaluate them through `conv2d`, which gathers the `kh * kw` shifted views
of the padded image and multiplies them by the reshaped kernel: the same sums in another
order, equal to the direct convolution up to rounding.
"""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float


def conv2d(conv: eqx.nn.Conv2d, x: Float[Array, "c h w"]) -> Float[Array, "o oh ow"]:
    """`conv(x)` for one image, as a matrix product (zero padding, no dilation or groups)."""
    padding = conv.padding
    if (
        conv.groups != 1
        or conv.dilation != (1, 1)
        or conv.padding_mode != "ZEROS"
        or not all(isinstance(p, int) for pair in padding for p in pair)
    ):
        return conv(x)
    weight = conv.weight
    out_c, in_c, kh, kw = weight.shape
    (ph0, ph1), (pw0, pw1) = [(int(lo), int(hi)) for lo, hi in padding]
    sh, sw = conv.stride
    x = jnp.pad(x, ((0, 0), (ph0, ph1), (pw0, pw1)))
    oh = (x.shape[1] - kh) // sh + 1
    ow = (x.shape[2] - kw) // sw + 1
    views = [
        x[:, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw]
        for i in range(kh)
        for j in range(kw)
    ]
    # (c, kh * kw, oh * ow): rows in the (c, kh, kw) order of the kernel's last axes.
    patches = jnp.stack(views, axis=1).reshape(in_c * kh * kw, oh * ow)
    out = (weight.reshape(out_c, in_c * kh * kw) @ patches).reshape(out_c, oh, ow)
    return out if conv.bias is None else out + conv.bias
