"""GANs: the losses against closed forms, the alternating mode of `fit`, exact resume."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
from numpy.testing import assert_allclose
from scipy.stats import norm

import scoreflow as sf
from scoreflow import losses, models, nn, train


def test_optimal_discriminator_value_is_log4_minus_twice_js():
    # Goodfellow et al. 2014, Theorem 1: with D* = log p/q (the logit of p / (p + q)),
    # the discriminator loss is log 4 - 2 JS(p || q). Two 1-d Gaussians, JS by quadrature.
    p, q = norm(0.0, 1.0), norm(1.5, 0.7)
    g = np.linspace(-10, 12, 200_001)
    pp, qq = p.pdf(g), q.pdf(g)
    m = 0.5 * (pp + qq)
    kl = lambda a: np.sum(np.where(a > 0, a * np.log(np.maximum(a, 1e-300) / m), 0.0))
    js = 0.5 * (kl(pp) + kl(qq)) * (g[1] - g[0])
    xs = jnp.asarray(p.rvs(200_000, random_state=0))
    xq = jnp.asarray(q.rvs(200_000, random_state=1))
    logit = lambda x: jnp.asarray(p.logpdf(np.asarray(x)) - q.logpdf(np.asarray(x)))
    value = float(losses.discriminator_loss(logit(xs), logit(xq)))
    assert_allclose(value, np.log(4) - 2 * js, atol=5e-3)
    # Any other discriminator does worse.
    worse = float(losses.discriminator_loss(1.3 * logit(xs), 1.3 * logit(xq)))
    assert worse > value


def test_loss_kinds_and_penalties_in_closed_form():
    real, fake = jnp.asarray([2.0, -0.5]), jnp.asarray([0.3, -3.0])
    sp = jax.nn.softplus
    assert_allclose(
        losses.discriminator_loss(real, fake, kind="hinge"),
        np.mean(np.maximum(0, 1 - real)) + np.mean(np.maximum(0, 1 + fake)),
    )
    assert_allclose(
        losses.discriminator_loss(real, fake, kind="wasserstein"), fake.mean() - real.mean()
    )
    assert_allclose(losses.generator_loss(fake), np.mean(sp(-fake)))
    assert_allclose(losses.generator_loss(fake, kind="minimax"), -np.mean(sp(fake)))
    assert_allclose(losses.generator_loss(fake, kind="hinge"), -fake.mean())
    # A linear critic w.x has gradient w everywhere: GP = (|w| - 1)^2, R1 = |w|^2.
    w = jnp.asarray([0.6, -1.2, 2.0])
    critic = lambda x: jnp.dot(w, x)
    x, y = jr.normal(jr.key(0), (7, 3)), jr.normal(jr.key(1), (7, 3))
    norm_w = float(jnp.linalg.norm(w))
    assert_allclose(losses.gradient_penalty(critic, x, y, key=jr.key(2)), (norm_w - 1) ** 2)
    assert_allclose(losses.r1_penalty(critic, x), norm_w**2, rtol=1e-12)
    with pytest.raises(ValueError, match="`kind`"):
        losses.generator_loss(fake, kind="least_squares")


def _gan(loss="non_saturating", spectral_norm=True, n_critic=2, **kw):
    k1, k2 = jr.split(jr.key(0))
    gen = nn.MLPGenerator(2, (2,), width=16, depth=1, key=k1)
    disc = nn.MLPDiscriminator((2,), width=16, depth=1, spectral_norm=spectral_norm, key=k2)
    return models.GAN(gen, disc, event_shape=(2,), latent_dim=2, loss=loss, n_critic=n_critic, **kw)


def _ring(n=256):
    return sf.data.ring_mixture().sample(n, key=jr.key(1)) / 4


def _fit(num_steps, model=None, **kw):
    return train.fit(
        _gan() if model is None else model,
        _ring(),
        num_steps=num_steps,
        batch_size=32,
        steps_per_chunk=5,
        progress=False,
        key=jr.key(2),
        **kw,
    )


def test_alternating_fit_resumes_exactly_with_the_spectral_norm_state(tmp_path):
    full = _fit(15)
    state = full.state
    assert isinstance(state.opt_state, tuple) and len(state.opt_state) == 2
    # The power-iteration vectors moved, and the EMA covers the generator only.
    start = _gan().init_state()
    assert start is not None and state.model_state is not None
    moved = [
        not np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(
            jax.tree_util.tree_leaves(state.model_state), jax.tree_util.tree_leaves(start)
        )
    ]
    assert any(moved)
    assert state.ema is not None and jax.tree_util.tree_leaves(state.ema.discriminator) == []
    ema = full.ema_model
    assert not bool(eqx.tree_equal(ema.generator, full.model.generator))
    assert bool(eqx.tree_equal(ema.discriminator, full.model.discriminator))
    path = tmp_path / "gan.eqx"
    _fit(10, checkpoint=path)
    resumed = _fit(15, checkpoint=path)
    for a, b in zip(
        jax.tree_util.tree_leaves(resumed.state), jax.tree_util.tree_leaves(full.state)
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(resumed.losses, full.losses[10:])
    loaded = sf.load(path)
    assert bool(eqx.tree_equal(loaded.generator, ema.generator))


def test_each_player_moves_only_on_its_own_turn():
    # A frozen discriminator optimiser leaves D bit-for-bit alone while G moves, and the
    # reverse; `n_critic` discriminator steps run per generator step.
    model = _gan(spectral_norm=False, n_critic=3)
    frozen, moving = optax.sgd(0.0), optax.sgd(1e-2)
    res = _fit(5, model=model, optimizer={"disc": frozen, "gen": moving}, ema_decay=None)
    assert bool(eqx.tree_equal(res.model.discriminator, model.discriminator))
    assert not bool(eqx.tree_equal(res.model.generator, model.generator))
    res = _fit(5, model=model, optimizer={"disc": moving, "gen": frozen}, ema_decay=None)
    assert bool(eqx.tree_equal(res.model.generator, model.generator))
    assert not bool(eqx.tree_equal(res.model.discriminator, model.discriminator))
    # Adam's step counter of the discriminator advances n_critic times per fit step.
    res = _fit(5, model=model, ema_decay=None)
    assert int(res.state.opt_state[0][0].count) == 15
    assert int(res.state.opt_state[1][0].count) == 5


def test_divergence_stops_the_alternating_mode():
    with pytest.raises(train.TrainingDiverged):
        _fit(10, optimizer=optax.sgd(jnp.inf))


@pytest.mark.parametrize(
    "loss, extra", [("hinge", {}), ("wasserstein", {"gradient_penalty": 10.0})]
)
def test_every_loss_trains_and_samples(loss, extra):
    res = _fit(5, model=_gan(loss=loss, n_critic=2, **extra))
    assert np.all(np.isfinite(res.losses))
    s = res.ema_model.sample(7, key=jr.key(3))
    assert s.shape == (7, 2) and bool(jnp.all(jnp.isfinite(s)))


def test_dcgan_networks_on_8x8_images():
    gen = nn.DCGANGenerator(8, (1, 8, 8), width=4, key=jr.key(0))
    disc = nn.DCGANDiscriminator((1, 8, 8), width=4, spectral_norm=True, key=jr.key(1))
    gan = models.GAN(gen, disc, event_shape=(1, 8, 8), latent_dim=8)

    @eqx.filter_jit  # both networks in one program: op by op, every conv compiles apart
    def run(gan, key):
        x = gan.sample(3, key=key)
        return x, *gan.logits(x, gan.init_state())

    x, logits, state = run(gan, jr.key(2))
    assert x.shape == (3, 1, 8, 8) and float(jnp.abs(x).max()) < 1
    assert logits.shape == (3,) and state is not None
    with pytest.raises(ValueError, match="`event_shape`"):
        nn.DCGANGenerator(8, (1, 6, 6), key=jr.key(0))
    with pytest.raises(ValueError, match="`event_shape`"):
        nn.DCGANDiscriminator((8, 8), key=jr.key(0))


def test_bad_gan_settings_name_their_argument():
    with pytest.raises(ValueError, match="`n_critic`"):
        _gan(n_critic=0)
    with pytest.raises(ValueError, match="`loss`"):
        _gan(loss="least_squares")
    with pytest.raises(ValueError, match="`gradient_penalty`"):
        _gan(gradient_penalty=-1.0)
    with pytest.raises(ValueError, match="`generator`"):
        models.GAN(
            nn.MLPGenerator(2, (3,), key=jr.key(0)),
            nn.MLPDiscriminator((2,), key=jr.key(1)),
            event_shape=(2,),
            latent_dim=2,
        )
    with pytest.raises(ValueError, match="`optimizer`"):
        _fit(1, optimizer={"critic": optax.sgd(1e-3)})
