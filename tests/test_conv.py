"""`nn._conv.conv2d` (the matrix-product convolution the networks use) is Equinox's
convolution: same output for every stride, padding and kernel shape the networks take,
and a U-Net trained through it is the same network as before, up to rounding."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from scoreflow import nn
from scoreflow.nn._conv import conv2d


@pytest.mark.parametrize(
    "cin,cout,kernel,stride,padding,size",
    [
        (3, 4, 3, 1, 1, 8),
        (3, 5, 3, 2, 1, 8),
        (2, 3, 1, 1, 0, 5),
        (2, 3, 3, 2, 1, 7),
        (1, 2, 5, 1, 2, 6),
        (2, 2, (3, 1), (2, 1), ((1, 0), (0, 0)), 6),
    ],
)
def test_conv2d_is_equinox_conv(cin, cout, kernel, stride, padding, size):
    conv = eqx.nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, key=jr.key(0))
    x = jr.normal(jr.key(1), (cin, size, size))
    np.testing.assert_allclose(conv2d(conv, x), conv(x), rtol=1e-12, atol=1e-12)
    # and its gradients
    g = lambda f: jax.grad(lambda c, x: jnp.sum(jnp.sin(f(c, x))), argnums=(0, 1))(conv, x)
    (gc1, gx1), (gc2, gx2) = g(conv2d), g(lambda c, x: c(x))
    np.testing.assert_allclose(gx1, gx2, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gc1.weight, gc2.weight, rtol=1e-10, atol=1e-12)


def test_unet_output_unchanged():
    # The U-Net through conv2d against the same network evaluated with Equinox's layers.
    net = nn.UNet((1, 8, 8), base_channels=8, key=jr.key(0))
    # Non-zero last layers, so that every convolution reaches the output.
    params, static = eqx.partition(net, eqx.is_inexact_array)
    params = jax.tree_util.tree_map(lambda a: a + 0.1 * jr.normal(jr.key(2), a.shape), params)
    net = eqx.combine(params, static)
    x, t = jr.normal(jr.key(1), (1, 8, 8)), jnp.asarray(0.3)
    # Both jitted: op-by-op evaluation of a U-Net costs seconds of dispatch.
    ours = eqx.filter_jit(lambda n, t, x: n(t, x))(net, t, x)
    np.testing.assert_allclose(ours, eqx.filter_jit(_direct)(net, t, x), rtol=1e-10, atol=1e-12)


def _direct(net, t, x):
    # UNet.__call__ with every conv2d(c, h) replaced by c(h).
    import scoreflow.nn._conv as conv_module
    import scoreflow.nn._unet as unet_module

    original = unet_module.conv2d
    unet_module.conv2d = lambda c, h: c(h)
    try:
        return net(t, x)
    finally:
        unet_module.conv2d = original
        assert conv_module.conv2d is original
