"""PixelCNN: the autoregressive property read off the Jacobian, exact mass, exact sampler."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from numpy.testing import assert_allclose

import scoreflow as sf
from scoreflow import evaluation, models, nn


def _order(c, h, w):
    # Raster position of (channel, row, column): pixels in raster order, channels within.
    ch, i, j = np.meshgrid(np.arange(c), np.arange(h), np.arange(w), indexing="ij")
    return ((i * w + j) * c + ch).reshape(-1)


def dependence(f, shape, key=jr.key(0)) -> np.ndarray:
    """`dep[t, s]`: does output position t depend on input position s (raster order)?

    `f` maps a `(c, h, w)` float input to an output whose leading axes are `(c, h, w)`
    (colour, row, column), any trailing axes being parameters of that position.
    """
    c, h, w = shape
    x = jr.normal(key, shape)
    # Jitted: eagerly every primitive of the Jacobian's vmapped VJP compiles on its own.
    jac = jax.jit(jax.jacobian(f))(x)  # (c, h, w, ..., c, h, w)
    jac = np.abs(np.asarray(jac)).reshape(c * h * w, -1, c * h * w).max(1)
    order = _order(c, h, w)
    dep = np.zeros_like(jac)
    dep[np.ix_(order, order)] = jac
    return dep


def _check_causal(dep):
    # Exactly zero on and above the diagonal: position t never sees s >= t.
    upper = np.triu(np.ones_like(dep, bool))
    assert np.all(dep[upper] == 0.0), np.argwhere(dep * upper)


def _masked_conv_as_colours(conv, c):
    # A masked conv's output channels regrouped by colour: (c, h, w, maps per colour).
    def f(x):
        out = conv(x)
        return jnp.moveaxis(out.reshape(c, -1, *out.shape[1:]), 1, -1)

    return f


@pytest.mark.parametrize("mask_type", ["A", "B"])
def test_masked_convolution_sees_only_the_past(mask_type):
    c, shape = 3, (3, 4, 5)
    conv = nn.MaskedConv2d(c, 2 * c, 3, mask_type=mask_type, num_groups=c, key=jr.key(1))
    dep = dependence(_masked_conv_as_colours(conv, c), shape)
    if mask_type == "A":
        _check_causal(dep)
    else:
        # B adds each colour's own input at its own position (the diagonal), nothing later.
        assert np.all(np.diag(dep) > 0)
        _check_causal(dep - np.diag(np.diag(dep)))
    # The mask is what it claims: the centre tap of colour g sees colours < g (A), <= g (B).
    centre = conv.mask[:, :, 1, 1].reshape(c, 2, c)[:, 0, :]
    want = np.tril(np.ones((c, c)), k=-1 if mask_type == "A" else 0)
    np.testing.assert_array_equal(centre, want)


NETS = {
    "plain": lambda c, k: nn.PixelCNNNetwork(
        (c, 4, 4), 2, num_levels=4, width=2 * c, depth=3, kernel_size=3, key=k
    ),
    "gated": lambda c, k: nn.GatedPixelCNNNetwork(
        (c, 4, 4), 2, num_levels=4, width=2 * c, depth=4, kernel_size=3, key=k
    ),
}


# Two of the four pairs by default (each architecture once, each channel count once).
@pytest.mark.parametrize(
    "architecture, channels",
    [
        ("plain", 1),
        ("gated", 3),
        pytest.param("plain", 3, marks=pytest.mark.slow),
        pytest.param("gated", 1, marks=pytest.mark.slow),
    ],
)
def test_network_is_autoregressive_and_the_gated_one_has_no_blind_spot(architecture, channels):
    net = NETS[architecture](channels, jr.key(2))
    dep = dependence(net, (channels, 4, 4))
    _check_causal(dep)
    lower = np.tril(np.ones_like(dep, bool), k=-1)
    blind = lower & (dep == 0)
    order = _order(channels, 4, 4).reshape(channels, 4, 4)
    if architecture == "gated":
        # Every earlier position reaches every later one.
        assert not blind.any(), np.argwhere(blind)
    else:
        # The blind spot of stacked masks: pixel (1, 0) never sees pixel (0, 2), above
        # and two to the right, however deep the stack.
        assert blind[order[0, 1, 0], order[0, 0, 2]]
        assert blind.sum() > 0


def test_uniform_head_gives_log_levels_bits_and_mass_is_the_sum_of_conditionals():
    model = models.PixelCNN((1, 4, 4), head=nn.Categorical(5), width=4, depth=1, key=jr.key(3))
    # A zero output layer: every conditional is uniform over 5 levels.
    out = model.network.head.out.conv
    zero = eqx.tree_at(
        lambda m: (m.network.head.out.conv.weight, m.network.head.out.conv.bias),
        model,
        (jnp.zeros_like(out.weight), jnp.zeros_like(out.bias)),
    )
    x = jr.randint(jr.key(4), (6, 1, 4, 4), 0, 5)
    # One compiled program for both models (only their values differ).
    scores = eqx.filter_jit(lambda m, x: (m.log_prob(x), m.loss(x), m.conditionals(x)))
    zero_lp, zero_loss, _ = scores(zero, x)
    assert_allclose(zero_lp, -16 * np.log(5.0), rtol=1e-12)
    assert_allclose(zero_loss, np.log(5.0), rtol=1e-12)
    model_lp, _, lp = scores(model, x)
    assert lp.shape == (6, 1, 4, 4)
    assert_allclose(model_lp, lp.reshape(6, -1).sum(-1), rtol=1e-12)


@pytest.mark.parametrize("architecture", ["gated", "plain"])
def test_sampler_draws_the_model_distribution(architecture):
    # 2 x 2 binary images: 16 events, whose exact probabilities come from `log_prob`.
    model = models.PixelCNN(
        (1, 2, 2),
        head=nn.Categorical(2),
        architecture=architecture,
        width=4,
        depth=2,
        key=jr.key(5),
    )
    events = jnp.asarray(
        ((np.arange(16)[:, None] >> np.arange(4)[None, ::-1]) & 1).reshape(16, 1, 2, 2),
        jnp.int32,
    )
    p = np.exp(np.asarray(eqx.filter_jit(lambda m, x: m.log_prob(x))(model, events)))
    assert_allclose(p.sum(), 1.0, rtol=1e-10)
    n = 10_000
    s = eqx.filter_jit(lambda m, k: m.sample(n, key=k))(model, jr.key(6))
    codes = np.asarray(s.reshape(n, 4)) @ (1 << np.arange(4)[::-1])
    freq = np.bincount(codes, minlength=16) / n
    se = np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(freq - p) < 5 * se + 1e-3), (freq, p)


def test_discretised_logistic_head_and_conditioning():
    model = models.PixelCNN(
        (1, 4, 4),
        head=nn.DiscretisedLogisticMixture(17, 2),
        width=4,
        depth=1,
        num_classes=3,
        key=jr.key(7),
    )
    assert model.num_levels == 17
    x = jr.randint(jr.key(8), (5, 1, 4, 4), 0, 17)
    y = jnp.asarray([0, 1, 2, 0, 1])
    a, b, loss, s = eqx.filter_jit(
        lambda m, x, y: (
            m.log_prob(x, y=y),
            m.log_prob(x, y=jnp.zeros(5, jnp.int32)),
            m.loss((x, y)),
            m.sample(4, y=2, key=jr.key(9)),
        )
    )(model, x, y)
    assert a.shape == (5,) and bool(jnp.all(jnp.isfinite(a)))
    assert not np.allclose(a, b)  # the label changes the density
    assert np.isfinite(float(loss))
    assert s.shape == (4, 1, 4, 4) and s.dtype == jnp.int32
    with pytest.raises(ValueError, match="`y`"):
        model.log_prob(x)


def test_discrete_bits_per_dim_are_the_mass_itself():
    from scoreflow.evaluation._digits import _discrete_bpd

    model = models.PixelCNN((1, 8, 8), width=2, depth=1, key=jr.key(10))
    raw = sf.data.digits_raw("test")[:8]
    want = -np.asarray(eqx.filter_jit(model.log_prob)(raw)) / (64 * np.log(2.0))
    mean, se = _discrete_bpd(model, raw, {}, 4)
    assert_allclose(mean, want.mean(), rtol=1e-9)
    assert_allclose(se, want.std(ddof=1) / np.sqrt(8), rtol=1e-9)


@pytest.mark.slow  # the whole protocol, sample metrics included
def test_bits_per_dim_of_the_digits_are_exact_and_labelled_so():
    # evaluate_digits reads a discrete model's mass directly: bits/dim = -log2 P(x) / 64,
    # with no dequantisation noise (so no key changes it).
    model = models.PixelCNN((1, 8, 8), width=4, depth=1, key=jr.key(10))
    raw = sf.data.digits_raw("test")[:20]
    report = evaluation.evaluate_digits(model, num_samples=150, num_test=20, key=jr.key(11))
    want = -np.asarray(model.log_prob(raw)) / (64 * np.log(2.0))
    assert_allclose(report.bits_per_dim, want.mean(), rtol=1e-9)
    assert report.likelihood == "exact (discrete)"


def test_bad_inputs_name_their_argument():
    with pytest.raises(ValueError, match="`mask_type`"):
        nn.MaskedConv2d(1, 2, 3, mask_type="C", key=jr.key(0))
    with pytest.raises(ValueError, match="`event_shape`"):
        models.PixelCNN((8, 8), key=jr.key(0))
    with pytest.raises(ValueError, match="`width`"):
        models.PixelCNN((3, 4, 4), width=4, key=jr.key(0))
    model = models.PixelCNN((1, 4, 4), width=2, depth=1, key=jr.key(0))
    with pytest.raises(ValueError, match="`x`"):
        model.log_prob(jnp.full((1, 1, 4, 4), 17))
    with pytest.raises(ValueError, match="`x`"):
        model.log_prob(jnp.zeros((1, 1, 4, 4)))
    with pytest.raises(ValueError, match="`head`"):
        models.PixelCNN((1, 4, 4), head=nn.Gaussian(False), key=jr.key(0))
