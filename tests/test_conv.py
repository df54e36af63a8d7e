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

    # Both convolutions and their gradients in one program (eagerly, each op compiles alone).
    @eqx.filter_jit
    def both(conv, x):
        def value_and_grads(f):
            loss = lambda c, x: jnp.sum(jnp.sin(f(c, x)))
            return f(conv, x), jax.grad(loss, argnums=(0, 1))(conv, x)

        return value_and_grads(conv2d), value_and_grads(lambda c, x: c(x))

    (y1, (gc1, gx1)), (y2, (gc2, gx2)) = both(conv, x)
    np.testing.assert_allclose(y1, y2, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gx1, gx2, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gc1.weight, gc2.weight, rtol=1e-10, atol=1e-12)


def test_unet_output_unchanged():
    # The U-Net through conv2d against the same network evaluated with Equinox's layers.
    # The network's structure without running its initialisers (eager, they compile one
    # program per parameter shape), then every parameter drawn from one normal vector: no
    # zero-initialised last layers, so that every convolution reaches the output.
    shapes = eqx.filter_eval_shape(nn.UNet, (1, 8, 8), base_channels=8, key=jr.key(0))
    is_shape = lambda a: isinstance(a, jax.ShapeDtypeStruct)
    leaves, treedef = jax.tree_util.tree_flatten(eqx.filter(shapes, is_shape), is_leaf=is_shape)
    sizes = [leaf.size for leaf in leaves]
    flat = 0.1 * jr.normal(jr.key(2), (sum(sizes),))
    chunks = jnp.split(flat, np.cumsum(sizes)[:-1])
    params = [c.reshape(leaf.shape) for c, leaf in zip(chunks, leaves)]
    net = eqx.combine(jax.tree_util.tree_unflatten(treedef, params), shapes)
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
