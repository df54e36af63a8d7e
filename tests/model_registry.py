"""The registry of every generative model: one small case each, for the generic tests.

A new model is added to scoreflow by adding its case here (`tests/test_models.py` fails
while a model of `scoreflow.models` has none). A case builds a small instance whose
density is not trivial (random, non-zero output layers), a training batch, and the
cheapest sampler settings; `tests/test_models.py` then checks the model contract: loss
finite and differentiable, a few steps of `scoreflow.train.fit` lower it, sample shape /
dtype / finiteness, an exact `log_prob` integrates to one by quadrature (a discrete one
sums to one over every event of its tiny image), jit and vmap agree with eager, save ->
load is bit-exact, no recompilation when only values change.
"""

import dataclasses
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr

import scoreflow as sf
from scoreflow import models, nn


def data(key, n=64):
    """A training batch of the 2-d ring of eight Gaussians, scaled to unit spread."""
    return sf.data.ring_mixture().sample(n, key=key) / 4


def labelled_data(key, n=64):
    """The ring's batch with labels `(x, y)`: each point's component index mod 3."""
    ring = sf.data.ring_mixture()
    k1, k2 = jr.split(key)
    component = jr.randint(k1, (n,), 0, 8)
    x = ring.means[component] + 0.5 * jr.normal(k2, (n, 2), ring.means.dtype)
    return x / 4, component % 3


@dataclasses.dataclass(frozen=True)
class ModelCase:
    """How the generic tests make and use one model.

    Attributes:
        build: `key -> model`, a small instance on 2-d events.
        sample_options: keyword arguments that make `sample` cheap.
        log_prob_options: keyword arguments of `log_prob` (exact models).
        quadrature: `(low, high, points per axis)` of the grid on which an exact
            density must integrate to one.
        lr: learning rate of the few optimiser steps that must lower the loss.
        frozen: `model -> pytree` of what training must leave bit-for-bit alone (the
            schedule, a noise ladder, a fixed standardisation).
        data: `(key, n) -> batch`, the model's training batch (`(x, y)` for a
            conditional model).
        objective: `(model, batch, key) -> scalar` that a few training steps must lower
            (default `model.loss`; a GAN's loss is a game, not an objective, and its
            case lowers the discriminator's loss with the generator fixed).
    """

    build: Callable
    sample_options: dict = dataclasses.field(default_factory=dict)
    log_prob_options: dict = dataclasses.field(default_factory=dict)
    quadrature: tuple[float, float, int] = (-6.0, 6.0, 41)
    lr: float = 1e-2
    frozen: Callable = lambda model: None
    data: Callable = data
    objective: Callable | None = None


def _randomise_last(net, key, scale=0.3):
    # TimeMLP starts with a zero output layer; the tests need a non-trivial model.
    last = net.last
    w = scale * jr.normal(key, last.weight.shape, last.weight.dtype)
    return eqx.tree_at(lambda n: n.last.weight, net, w)


class _NearStandardNormal(eqx.Module):
    # eps of standard normal data (sigma_t x under a VP SDE, whose marginals are all
    # N(0, I)) plus a small random network: a normalised density concentrated near the
    # origin, where a quadrature grid can see it (a bare random eps network puts the
    # mass of p_{t_min} at |x| ~ alpha_{t_min} / alpha_T, hundreds).
    # With a class-conditional net it is conditional: `(t, x, y)`.
    sde: sf.sde.AbstractSDE
    net: nn.TimeMLP

    def __call__(self, t, x, *y):
        sde = jax.lax.stop_gradient(self.sde)  # the schedule is not a parameter
        return sde.marginal(t)[1] * x + self.net(t, x, *y)


def _score_sde(key):
    k1, k2 = jr.split(key)
    sde = sf.VPSDE(t_min=1e-3)
    net = _randomise_last(nn.TimeMLP((2,), width=16, depth=2, key=k1), k2, scale=0.1)
    return models.ScoreSDE(
        sde, _NearStandardNormal(sde, net), parameterisation="eps", event_shape=(2,)
    )


def _ddpm(key):
    k1, k2 = jr.split(key)
    betas = sf.sde.linear_betas(20, 1e-3, 0.3)
    net = _randomise_last(nn.TimeMLP((2,), width=16, depth=2, key=k1), k2, scale=0.1)
    near = _NearStandardNormal(sf.sde.DiscreteVPSDE(betas), net)
    return models.DDPM(near, event_shape=(2,), betas=betas)


def _conditional_net(key):
    k1, k2 = jr.split(key)
    net = nn.TimeMLP((2,), width=16, depth=2, num_classes=3, key=k1)
    return _randomise_last(net, k2, scale=0.1)


def _conditional_score_sde(key):
    sde = sf.VPSDE(t_min=1e-3)
    near = _NearStandardNormal(sde, _conditional_net(key))
    return models.ConditionalScoreSDE(
        sde, near, parameterisation="eps", event_shape=(2,), num_classes=3
    )


def _conditional_ddpm(key):
    betas = sf.sde.linear_betas(20, 1e-3, 0.3)
    near = _NearStandardNormal(sf.sde.DiscreteVPSDE(betas), _conditional_net(key))
    return models.ConditionalDDPM(near, event_shape=(2,), num_classes=3, betas=betas)


class _SigmaMLP(eqx.Module):
    # A small sigma-conditioned score network for NCSN.
    net: nn.TimeMLP

    def __call__(self, sigma, x):
        return self.net(jnp.log(sigma), x) / sigma


def _ncsn(key):
    k1, k2 = jr.split(key)
    net = _randomise_last(nn.TimeMLP((2,), width=16, depth=2, embedding_scale=1.0, key=k1), k2)
    return models.NCSN(
        _SigmaMLP(net), event_shape=(2,), sigmas=models.geometric_sigmas(3.0, 0.1, 5)
    )


def _realnvp(key):
    return models.RealNVP(2, num_layers=2, width=8, depth=1, key=key)


def _ffjord(key):
    return models.FFJORD(2, width=8, depth=1, activation=jnp.tanh, rtol=1e-6, atol=1e-6, key=key)


def _ebm(key):
    # Persistent CD: `loss` runs its chains from fresh noise, `fit` from the buffer.
    k1, k2 = jr.split(key)
    energy = nn.EnergyMLP((2,), width=16, depth=2, key=k1)
    training = models.ContrastiveDivergence(num_steps=5, step_size=1e-2, buffer_size=128)
    return models.EBM(energy, event_shape=(2,), training=training, low=-2.0, high=2.0)


def _gmm(key):
    # Three full-covariance components with random weights, means and covariances.
    k1, k2, k3 = jr.split(key, 3)
    weights = jax.nn.softmax(jr.normal(k1, (3,)))
    means = jr.uniform(k2, (3, 2), minval=-2.0, maxval=2.0)
    a = 0.3 * jr.normal(k3, (3, 2, 2))
    covariances = 0.3 * jnp.eye(2)[None] + a @ jnp.swapaxes(a, -1, -2)
    return models.GMM(weights, means, covariances, covariance_type="full")


def pixel_data(key, n=64):
    """Integer images `(n, 1, 3, 3)` of 3 levels, with more mass on level 0."""
    return jnp.minimum(jr.randint(key, (n, 1, 3, 3), 0, 4), 2)


def _pixelcnn(key):
    # A tiny gated PixelCNN: 3^9 = 19683 events, few enough to sum its mass over all.
    return models.PixelCNN(
        (1, 3, 3), head=nn.Categorical(3), width=4, depth=1, kernel_size=3, key=key
    )


def _gan(key):
    # An MLP GAN on the ring with a spectrally normalised discriminator (it has a state).
    k1, k2 = jr.split(key)
    generator = nn.MLPGenerator(2, (2,), width=16, depth=1, key=k1)
    discriminator = nn.MLPDiscriminator((2,), width=16, depth=1, spectral_norm=True, key=k2)
    return models.GAN(generator, discriminator, event_shape=(2,), latent_dim=2, r1=0.1)


def _discriminator_objective(model, x, key):
    return model.discriminator_loss(x, model.init_state(), key=key)[0]


def _vae(key, num_samples=1):
    # A Gaussian decoder with a learned (bounded) variance on the 2-d ring.
    head = nn.Gaussian(learn_variance=True)
    return models.VAE((2,), 2, head=head, width=16, depth=1, num_samples=num_samples, key=key)


def _hvae(key):
    head = nn.Gaussian(learn_variance=True)
    return models.HierarchicalVAE((2,), (2, 2), head=head, width=16, depth=1, key=key)


def _vdm(key):
    # A learned schedule (its end points; the monotone network's shape is tested in
    # test_vdm.py, and costs this file's compile time); the eps network is near the
    # standard normal's, so the probability-flow density sits where the quadrature sees it.
    k1, k2 = jr.split(key)
    sde = sf.sde.LearnedVPSDE(-6.0, 5.0)
    net = _randomise_last(nn.TimeMLP((2,), width=16, depth=2, key=k1), k2, scale=0.1)
    return models.VDM(_NearStandardNormal(sde, net), event_shape=(2,), sde=sde)


# The densities near N(0, I) (`_NearStandardNormal`): a Riemann sum of a smooth density
# of unit scale at spacing 0.5 is exact to far below the test's 1e-2 (for N(0, 1) the
# error is ~2 exp(-2 pi^2 / 0.5^2)), and the mass beyond |x| = 6 is ~1e-9; few points
# keep the probability-flow solve over the grid cheap.
NEAR_NORMAL_GRID = (-6.0, 6.0, 25)


MODELS: dict[str, ModelCase] = {
    "score_sde": ModelCase(
        _score_sde,
        sample_options=dict(grid=sf.solve.UniformGrid(4)),
        log_prob_options=dict(rtol=1e-6, atol=1e-6),
        frozen=lambda m: m.sde,
    ),
    "conditional_score_sde": ModelCase(
        _conditional_score_sde,
        sample_options=dict(grid=sf.solve.UniformGrid(4)),
        log_prob_options=dict(rtol=1e-6, atol=1e-6),
        frozen=lambda m: m.sde,
        data=labelled_data,
    ),
    "conditional_ddpm": ModelCase(
        _conditional_ddpm,
        sample_options=dict(num_steps=5),
        log_prob_options=dict(rtol=1e-6, atol=1e-6),
        quadrature=NEAR_NORMAL_GRID,
        frozen=lambda m: m.sde,
        data=labelled_data,
    ),
    "ddpm": ModelCase(
        _ddpm,
        sample_options=dict(num_steps=5),
        log_prob_options=dict(rtol=1e-6, atol=1e-6),
        quadrature=NEAR_NORMAL_GRID,
        frozen=lambda m: m.sde,
    ),
    "ncsn": ModelCase(
        _ncsn,
        sample_options=dict(steps_per_level=2, step_size=1e-3),
        frozen=lambda m: (m.sigmas, m.sde),
    ),
    "realnvp": ModelCase(_realnvp, quadrature=(-8.0, 8.0, 81)),
    "ebm": ModelCase(_ebm, sample_options=dict(num_steps=5, step_size=1e-2)),
    "ffjord": ModelCase(_ffjord, frozen=lambda m: m.flow.bijection.bijections[1]),
    "gmm": ModelCase(_gmm),
    "pixelcnn": ModelCase(_pixelcnn, data=pixel_data),
    "gan": ModelCase(_gan, objective=_discriminator_objective),
    "vae": ModelCase(_vae),
    "iwae": ModelCase(lambda key: _vae(key, num_samples=3)),
    "hvae": ModelCase(_hvae),
    "vdm": ModelCase(
        _vdm,
        sample_options=dict(grid=sf.solve.UniformGrid(4)),
        log_prob_options=dict(rtol=1e-6, atol=1e-6),
        quadrature=NEAR_NORMAL_GRID,
    ),
}


def model_classes() -> set[type]:
    """Every concrete generative model that `scoreflow.models` exports."""
    found = set()
    for value in vars(models).values():
        if (
            isinstance(value, type)
            and issubclass(value, models.AbstractGenerativeModel)
            and not value.__name__.startswith("Abstract")
        ):
            found.add(value)
    return found


def registered_classes() -> set[type]:
    return {type(case.build(jax.random.key(0))) for case in MODELS.values()}
