"""Conditional generation: labelled data in `fit`, conditional losses, models and networks."""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
from numpy.testing import assert_allclose

import scoreflow as sf
from scoreflow import losses, models, nn, train

from .model_registry import MODELS, labelled_data


def _assert_tree_equal(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    for u, v in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


class _Probe(eqx.Module):
    w: jax.Array

    def loss(self, batch, *, key):
        return jnp.sum(self.w**2)


def _probe_fit(data, loss_fn, **kw):
    return train.fit(
        _Probe(jnp.ones(1)),
        data,
        num_steps=12,
        batch_size=8,
        optimizer=optax.sgd(0.1),
        ema_decay=None,
        steps_per_chunk=6,
        loss_fn=loss_fn,
        progress=False,
        key=jr.key(0),
        **kw,
    )


def test_fit_draws_the_same_rows_of_every_array():
    x = jnp.arange(40.0).reshape(20, 2)
    y = jnp.arange(20)
    # Each batch's x and y are the same rows: x[:, 0] / 2 == y everywhere.
    gap = lambda u, v: jnp.max(jnp.abs(u[:, 0] / 2 - v.astype(u.dtype)))
    mismatch = lambda m, b, *, key: gap(*b) + 0 * m.w[0]
    assert np.all(_probe_fit((x, y), mismatch).losses == 0)
    as_dict = lambda m, b, *, key: gap(b["x"], b["y"]) + 0 * m.w[0]
    assert np.all(_probe_fit({"x": x, "y": y}, as_dict).losses == 0)
    # And the rows an array alone would have drawn (array data keeps its key usage).
    first = lambda m, b, *, key: jnp.mean(b[0]) + 0 * m.w[0]
    alone = lambda m, b, *, key: jnp.mean(b) + 0 * m.w[0]
    pair = _probe_fit((x, y), first).losses
    np.testing.assert_array_equal(pair, _probe_fit(x, alone).losses)
    assert np.std(pair) > 0  # the rows change from step to step


def _conditional(net=None, label_dropout=0.1):
    net = nn.TimeMLP((2,), width=8, depth=1, num_classes=3, key=jr.key(0)) if net is None else net
    return models.ConditionalScoreSDE(
        sf.VPSDE(t_min=1e-3),
        net,
        parameterisation="eps",
        event_shape=(2,),
        num_classes=3,
        label_dropout=label_dropout,
    )


def test_fit_on_labelled_data_resumes_bit_exactly(tmp_path):
    data = labelled_data(jr.key(1), 128)
    path = tmp_path / "run.eqx"
    kw: dict[str, Any] = dict(batch_size=16, steps_per_chunk=5, progress=False, key=jr.key(2))
    full = train.fit(_conditional(), data, num_steps=20, **kw)
    first = train.fit(_conditional(), data, num_steps=10, checkpoint=path, **kw)
    assert int(first.state.step) == 10
    resumed = train.fit(_conditional(), data, num_steps=20, checkpoint=path, **kw)
    _assert_tree_equal(resumed.state, full.state)
    np.testing.assert_array_equal(resumed.losses, full.losses[10:])
    assert np.all(np.isfinite(full.losses))


def test_dsm_with_labels_is_dsm_of_the_conditioned_model():
    model = MODELS["conditional_score_sde"].build(jr.key(1))
    x, _ = labelled_data(jr.key(2), 32)
    key = jr.key(3)

    # One program for every label (traced), not an eager op-by-op run per label.
    @eqx.filter_jit
    def both(model, x, y):
        labels = jnp.full((32,), y)
        got = losses.denoising_score_matching(model.sde, model, x, labels=labels, key=key)
        want = losses.denoising_score_matching(model.sde, model.condition(y), x, key=key)
        return got, want

    values = []
    for y in range(4):  # three classes and the null label
        got, want = both(model, x, jnp.asarray(y))
        assert_allclose(got, want, rtol=1e-12)
        values.append(float(got))
    # The null label is the model's unconditional reading, and the classes differ.
    plain = eqx.filter_jit(losses.denoising_score_matching)(model.sde, model, x, key=key)
    assert_allclose(values[3], plain, rtol=1e-12)
    assert len(set(values)) == 4


def test_label_dropout_one_trains_only_the_null_label():
    x, y = labelled_data(jr.key(2), 32)
    key = jr.key(3)
    network = MODELS["conditional_score_sde"].build(jr.key(1)).network

    @eqx.filter_jit  # the four losses in one program, not op by op
    def read(network):
        model = _conditional(network)
        plain = losses.denoising_score_matching(model.sde, model, x, key=key)
        labelled = losses.denoising_score_matching(model.sde, model, x, labels=y, key=key)
        dropped = _conditional(network, 1.0).loss((x, y), key=key)
        kept = _conditional(network, 0.0).loss((x, y), key=key)
        return plain, labelled, dropped, kept

    plain, labelled, dropped, kept = read(network)
    assert_allclose(dropped, plain, rtol=1e-12)
    assert_allclose(kept, labelled, rtol=1e-12)
    assert not np.isclose(float(labelled), float(plain), rtol=1e-6)

    # The gradient reaches the null row of the label table alone (and with no dropout,
    # the class rows alone).
    def table_gradient(label_dropout):
        loss = lambda m: _conditional(m, label_dropout).loss((x, y), key=key)
        grad = eqx.filter_jit(eqx.filter_grad(loss))(network)
        return jnp.abs(grad.net.label_embed.embedding.weight).sum(-1)

    rows = table_gradient(1.0)
    assert np.all(rows[:3] == 0) and rows[3] > 0
    rows = table_gradient(0.0)
    assert np.all(rows[:3] > 0) and rows[3] == 0
    # ConditionalDDPM: at dropout 1 its loss is L_simple of the unconditional reading.
    built = MODELS["conditional_ddpm"].build(jr.key(1))
    ddpm = models.ConditionalDDPM(
        built.network, event_shape=(2,), num_classes=3, label_dropout=1.0, betas=built.sde.betas
    )

    @eqx.filter_jit
    def ddpm_losses(ddpm):
        steps = losses.DiscreteTime(ddpm.sde.step_times())
        want = losses.denoising_score_matching(ddpm.sde, ddpm, x, time_sampling=steps, key=key)
        return ddpm.loss((x, y), key=key), want

    got, want = ddpm_losses(ddpm)
    assert_allclose(got, want, rtol=1e-12)


class _ExactClassNoise(eqx.Module):
    # The exact eps of class k ~ N(mu_k, s^2 I) under a VP SDE; the null label (last
    # row) is N(0, I).
    sde: sf.VPSDE
    means: jax.Array
    stds: jax.Array

    def __call__(self, t, x, y):
        alpha, sigma = self.sde.marginal(t)
        mu, s = self.means[y], self.stds[y]
        return sigma * (x - alpha * mu) / (alpha**2 * s**2 + sigma**2)


def test_condition_with_a_traced_label_samples_each_class():
    sde = sf.VPSDE()
    means = jnp.asarray([[2.0, 0.0], [-1.0, 1.5], [0.0, -2.0], [0.0, 0.0]])
    stds = jnp.asarray([0.3, 0.3, 0.3, 1.0])
    model = models.ConditionalScoreSDE(
        sde,
        _ExactClassNoise(sde, means, stds),
        parameterisation="eps",
        event_shape=(2,),
        num_classes=3,
    )
    opts: dict[str, Any] = dict(grid=sf.solve.KarrasGrid(12), key=jr.key(4))
    # One compiled sampler for every label: the three classes and the null label.
    draw = eqx.filter_jit(jax.vmap(lambda y: model.sample(400, y=y, **opts)))
    s = draw(jnp.arange(4))
    assert s.shape == (4, 400, 2)
    assert_allclose(s.mean(1), means, atol=0.08)
    assert_allclose(s.std(1), np.repeat(stds[:, None], 2, 1), rtol=0.15)
    # Its class-conditional density is the class's Gaussian.
    x = means[2][None] + jnp.asarray([[0.0, 0.0], [0.3, -0.2]])
    want = jax.scipy.stats.norm.logpdf(x, means[2][None], 0.3).sum(-1)
    assert_allclose(model.log_prob(x, y=2), want, atol=2e-2)


@pytest.mark.slow  # a few hundred training steps; the digits benchmark trains one in full
def test_noisy_classifier_is_sharp_at_small_t_and_at_chance_at_large_t():
    sde = sf.VPSDE()
    k1, k2, k3 = jr.split(jr.key(5), 3)
    y = jr.randint(k1, (1024,), 0, 2)
    centres = jnp.asarray([[-2.0, 0.0], [2.0, 0.0]])
    x = centres[y] + 0.5 * jr.normal(k2, (1024, 2))
    net = nn.TimeMLP((2,), width=32, depth=2, out_size=2, key=k3)
    classifier = models.NoisyClassifier(sde, net, num_classes=2, event_shape=(2,))
    res = train.fit(
        classifier,
        (x, y),
        num_steps=300,
        batch_size=128,
        optimizer=train.default_optimizer(3e-3),
        steps_per_chunk=100,
        progress=False,
        key=jr.key(6),
    )
    trained = res.ema_model
    # The untrained classifier is uniform (a zero last layer): its loss is log 2.
    assert_allclose(res.losses[0], np.log(2), rtol=1e-12)
    assert res.losses[-50:].mean() < res.losses[:50].mean()

    def accuracy_and_confidence(t, key):
        # On fresh noisy data: the fraction classified right, and the mean top probability.
        alpha, sigma = sde.marginal(jnp.asarray(t))
        xt = alpha * x + sigma * jr.normal(key, x.shape)
        top = jnp.exp(jax.vmap(trained, in_axes=(None, 0))(t, xt).max(-1))
        return float(trained.accuracy(t, xt, y)), float(top.mean())

    acc, confidence = accuracy_and_confidence(0.01, jr.key(7))
    assert acc > 0.97 and confidence > 0.9, (acc, confidence)
    # At t = T (alpha_T ~ 0.007) the classes are indistinguishable, and it knows it.
    acc, confidence = accuracy_and_confidence(1.0, jr.key(8))
    assert abs(acc - 0.5) < 0.06 and confidence < 0.7, (acc, confidence)


def test_network_options_keep_the_old_parameters():
    key = jr.key(3)
    old = nn.TimeMLP((2,), width=8, depth=2, key=key)
    new = nn.TimeMLP((2,), width=8, depth=2, num_classes=3, key=key)
    assert new.num_classes == 3 and old.num_classes is None
    assert eqx.tree_equal(eqx.tree_at(lambda n: n.label_embed, new, None), old)
    small: dict[str, Any] = dict(base_channels=4, channel_mults=(1,), embed_dim=16)
    old_u = nn.UNet((1, 4, 4), key=key, **small)
    new_u = nn.UNet((1, 4, 4), num_classes=3, key=key, **small)
    assert eqx.tree_equal(eqx.tree_at(lambda n: n.label_embed, new_u, None), old_u)
    # None is the null label; a class changes the output once the last layer is not zero.
    net = eqx.tree_at(lambda n: n.last.weight, new, jnp.ones_like(new.last.weight))
    t, x0 = jnp.asarray(0.3), jnp.ones(2)
    # One program for the four readings, not an eager op-by-op run of each.
    null, three, zero, one = eqx.filter_jit(
        lambda net: [net(t, x0, *y) for y in ((), (3,), (0,), (1,))]
    )(net)
    assert_allclose(null, three, rtol=0)
    assert not np.allclose(zero, one)
    with pytest.raises(ValueError, match="`y`"):
        old(t, x0, 1)
    # Vector outputs: a classifier's logits.
    assert nn.TimeMLP((2,), width=8, depth=1, out_size=5, key=key)(t, x0).shape == (5,)
    conv = nn.TimeConvClassifier((1, 4, 4), 3, key=key, **small)
    logits = eqx.filter_jit(lambda c, x: c(t, x))(conv, jnp.ones((1, 4, 4)))
    assert logits.shape == (3,) and np.all(logits == 0)  # zero last layer: uniform start


class _WrongShape(sf.sde.AbstractNoisyClassifier):
    sde: sf.sde.AbstractSDE
    num_classes: int = 2

    def __call__(self, t, x):
        return jnp.zeros(3)


def test_bad_inputs_raise_naming_the_argument():
    model = MODELS["conditional_score_sde"].build(jr.key(1))
    x, y = labelled_data(jr.key(2), 8)
    k = jr.key(0)
    with pytest.raises(ValueError, match="`y`"):
        model.loss((x, y.at[0].set(3)), key=k)  # out of range (3 is the null label)
    with pytest.raises(ValueError, match="`y`"):
        model.loss((x, y.at[0].set(-1)), key=k)
    with pytest.raises(ValueError, match="`y`"):
        model.loss((x, y.astype(x.dtype)), key=k)  # float labels
    with pytest.raises(ValueError, match="`y`"):
        model.loss((x, y[:-1]), key=k)  # another batch
    with pytest.raises(ValueError, match="`x`"):
        model.loss(x, key=k)  # no labels
    with pytest.raises(ValueError, match="`x`"):
        model.loss((x[:, :1], y), key=k)
    with pytest.raises(ValueError, match="`y`"):
        model.condition(4)
    with pytest.raises(ValueError, match="`y`"):
        sf.sde.Conditioned(model, 1.0)
    with pytest.raises(ValueError, match="`y`"):
        sf.sde.Conditioned(model, jnp.asarray([0, 1]))  # one label, not one per sample
    with pytest.raises(ValueError, match="`labels`"):
        losses.denoising_score_matching(model.sde, model, x, labels=y[:-1], key=k)
    with pytest.raises(ValueError, match="`model`"):
        unconditional = sf.Prediction(model.sde, lambda t, x: x, "eps")
        losses.denoising_score_matching(model.sde, unconditional, x, labels=y, key=k)
    net = lambda t, x, y: x
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="`label_dropout`"):
            models.ConditionalScoreSDE(
                sf.VPSDE(),
                net,
                parameterisation="eps",
                event_shape=(2,),
                num_classes=3,
                label_dropout=bad,
            )
        with pytest.raises(ValueError, match="`label_dropout`"):
            models.ConditionalDDPM(net, event_shape=(2,), num_classes=3, label_dropout=bad)
    with pytest.raises(ValueError, match="`num_classes`"):
        models.ConditionalScoreSDE(
            sf.VPSDE(), net, parameterisation="eps", event_shape=(2,), num_classes=0
        )
    with pytest.raises(ValueError, match="`num_classes`"):
        models.NoisyClassifier(sf.VPSDE(), net, num_classes=0, event_shape=(2,))
    with pytest.raises(ValueError, match="`num_classes`"):
        nn.TimeMLP((2,), num_classes=0, key=k)
    # A classifier whose network returns the wrong number of logits.
    wide = lambda t, x: jnp.zeros(3, x.dtype)
    classifier = models.NoisyClassifier(sf.VPSDE(), wide, num_classes=2, event_shape=(2,))
    with pytest.raises(ValueError, match="`network`"):
        classifier.loss((x, y % 2), key=k)
    with pytest.raises(ValueError, match="`classifier`"):
        losses.noisy_classifier_loss(sf.VPSDE(), _WrongShape(sf.VPSDE()), x, y % 2, key=k)
    with pytest.raises(ValueError, match="`classifier`"):
        losses.noisy_classifier_loss(sf.VESDE(), _WrongShape(sf.VPSDE()), x, y % 2, key=k)
    with pytest.raises(ValueError, match="`y`"):
        losses.noisy_classifier_loss(sf.VPSDE(), _WrongShape(sf.VPSDE()), x, y.at[0].set(2), key=k)
    # Labelled data for `fit`: one leading axis, arrays only, at least one row.
    fit = lambda data: train.fit(model, data, num_steps=1, progress=False, key=k)
    for bad in ((x, y[:-1]), (x, 3), (x[:0], y[:0]), ()):
        with pytest.raises(ValueError, match="`data`"):
            fit(bad)
