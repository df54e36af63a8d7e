r"""The one contract every generative model of scoreflow keeps.

A model is an immutable `equinox.Module` with

- `event_shape`, the shape of one example;
- `loss(x, *, key)`, the scalar training objective of a batch `(batch, *event_shape)`,
  which `scoreflow.train.fit` minimises;
- `sample(sample_shape=(), *, key, ...)`, returning `(*sample_shape, *event_shape)`
  samples (`sample_shape` an int or a tuple), the one shape rule of every model; the
  models that sample by solving dynamics name their choice with `method` (`"ode"`, the
  probability-flow ODE; `"sde"`, the reverse-time SDE; `"langevin"`, annealed Langevin
  dynamics) and pass solver options through;

and declares its likelihood by type, never by an attribute to probe for:
`AbstractExactLikelihood` (an exact `log_prob`: flows, continuous flows,
probability-flow models), `AbstractLikelihoodBound` (a lower bound, `elbo`: DDPM's
discrete bound, the VAE family), an unnormalised density whose normaliser is
estimated (`AbstractUnnormalisedLikelihood`: energy-based models, $\log Z$ by annealed
importance sampling), or neither (NCSN, GANs). A model may be both exact and bounded.

An exact likelihood over integer events (PixelCNN's pixel levels) is an
`AbstractDiscreteLikelihood`: its `log_prob` is a log-probability mass, not a density,
so its bits/dim need no dequantisation.

A two-player model (a GAN) is an `AbstractAdversarialModel`: `scoreflow.train.fit`
trains it by alternating turns, `n_critic` discriminator updates per generator update,
each player with its own optimiser.

A model whose training carries state beside its parameters (the replay buffer of
persistent contrastive divergence; batch statistics) is an `AbstractStatefulModel`:
`scoreflow.train.fit` keeps that state in its `TrainState`, checkpoints it and resumes it.
"""

import abc
import math

import equinox as eqx
from jaxtyping import Array, Float, PyTree

from .._custom_types import Key, Scalar
from ..solve import AISResult

METHODS: tuple[str, ...] = ("ode", "sde", "langevin")


def sample_shape_of(sample_shape: int | tuple[int, ...]) -> tuple[int, ...]:
    """`sample_shape` as a tuple of non-negative ints (an int `n` is `(n,)`)."""
    shape = (sample_shape,) if isinstance(sample_shape, int) else tuple(sample_shape)
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        raise ValueError(
            f"`sample_shape` must be an int or a tuple of ints >= 0, got {sample_shape!r}."
        )
    return shape


def check_method(method: str, supported: tuple[str, ...]) -> None:
    """Raise `ValueError` unless `method` is one of this model's `supported` methods."""
    if method not in supported:
        raise ValueError(f"`method` must be one of {supported} for this model, got {method!r}.")


def check_event(x: Array, event_shape: tuple[int, ...], name: str = "x") -> Array:
    """Raise `ValueError` unless `x` is a batch `(batch, *event_shape)`."""
    if x.ndim != len(event_shape) + 1 or tuple(x.shape[1:]) != tuple(event_shape):
        raise ValueError(f"`{name}` must have shape (batch, *{tuple(event_shape)}), got {x.shape}.")
    return x


class AbstractGenerativeModel(eqx.Module):
    """A generative model: a loss to train it, samples of a fixed event shape.

    See the module docstring for the contract.
    """

    event_shape: eqx.AbstractVar[tuple[int, ...]]

    @abc.abstractmethod
    def loss(self, x: Float[Array, "batch ..."], *, key: Key) -> Scalar:
        """The training objective of a batch, a scalar."""

    @abc.abstractmethod
    def sample(self, sample_shape: int | tuple[int, ...] = (), *, key: Key) -> Array:
        """`(*sample_shape, *event_shape)` samples."""

    def _flat_shape(self, sample_shape) -> tuple[tuple[int, ...], int]:
        # The batch shape and its size: models draw `size` samples and reshape.
        shape = sample_shape_of(sample_shape)
        return shape, math.prod(shape)


class AbstractExactLikelihood(AbstractGenerativeModel):
    """A model with an exact (or exactly unbiased) log-density."""

    @abc.abstractmethod
    def log_prob(self, x: Float[Array, "batch ..."], *, key: Key | None = None) -> Array:
        r"""$\log p(x)$ per example, `(batch,)`; `key` for stochastic trace estimates."""


class AbstractLikelihoodBound(AbstractGenerativeModel):
    """A model with a lower bound on its log-likelihood (an evidence lower bound)."""

    @abc.abstractmethod
    def elbo(self, x: Float[Array, "batch ..."], *, key: Key) -> Array:
        r"""A lower bound on $\log p(x)$ per example, `(batch,)`, in nats."""


class AbstractUnnormalisedLikelihood(AbstractGenerativeModel):
    r"""A model with a density known up to its normaliser, $p(x) = \tilde p(x) / Z$.

    `log_prob` is $\log\tilde p(x) - c$ for the model's current constant $c$ (a learned
    or plugged-in estimate of $\log Z$, zero by default); `log_normaliser` estimates
    $\log Z$ with a standard error. `scoreflow.evaluation` turns the two into bits/dim
    labelled as an estimate.
    """

    @abc.abstractmethod
    def log_prob(self, x: Float[Array, "batch ..."], *, key: Key | None = None) -> Array:
        r"""$\log\tilde p(x) - c$ per example, `(batch,)`."""

    @abc.abstractmethod
    def log_normaliser(self, *, key: Key) -> AISResult:
        r"""An estimate of $\log Z$ of $\tilde p$ with ``log_z`` and ``stderr`` (nats).

        Models add their own keyword options (chains, temperatures, kernel).
        """

    @abc.abstractmethod
    def with_log_normaliser(self, log_z) -> "AbstractUnnormalisedLikelihood":
        r"""The same model with $c$ = `log_z`, so that `log_prob` is normalised by it."""


class AbstractStatefulModel(AbstractGenerativeModel):
    """A model whose training carries a state beside its parameters.

    `scoreflow.train.fit` calls `init_state(key=...)` once, then
    `stateful_loss(x, state, key=...)` every step and keeps the returned state in its
    `TrainState` (so it is checkpointed, and a resumed run repeats an uninterrupted one).
    `loss(x, *, key)` remains the contract's loss: the objective with a fresh state.
    """

    @abc.abstractmethod
    def init_state(self, *, key: Key) -> PyTree:
        """The training state at step 0 (`None` when this configuration needs none)."""

    @abc.abstractmethod
    def stateful_loss(
        self, x: Float[Array, "batch ..."], state: PyTree, *, key: Key
    ) -> tuple[Scalar, PyTree]:
        """The training objective of a batch and the next state."""


class AbstractDiscreteLikelihood(AbstractExactLikelihood):
    r"""An exact probability mass over integer events in $\{0, \dots, L - 1\}$.

    `log_prob(x)` of integer `x` is $\log P(x)$ (a mass, in nats), `sample` returns
    integers and `num_levels` is $L$. Bits/dim are $-\log_2 P(x) / D$ exactly, with no
    dequantisation (the continuous models' dequantised figures bound the same quantity
    from above).
    """

    num_levels: eqx.AbstractVar[int]


class AbstractAdversarialModel(AbstractGenerativeModel):
    r"""A two-player model: a generator and a discriminator (critic) trained in turns.

    `scoreflow.train.fit` runs `n_critic` updates of the discriminator on
    `discriminator_loss` (the generator held fixed), then one update of the generator on
    `generator_loss`, each with its own optimiser; `player_filter` says which parameters
    belong to whom. `loss` remains the contract's scalar: $L_D(D, \mathrm{sg}(G)) +
    L_G(\mathrm{sg}(D), G)$, whose gradient with respect to each player is that player's
    objective (plain gradient descent on it is simultaneous training).
    """

    n_critic: eqx.AbstractVar[int]

    @abc.abstractmethod
    def player_filter(self) -> PyTree:
        """A pytree prefix of the model: `True` on the discriminator, `False` elsewhere."""

    @abc.abstractmethod
    def discriminator_loss(
        self, x: Float[Array, "batch ..."], state: PyTree, *, key: Key
    ) -> tuple[Scalar, PyTree]:
        """The discriminator's objective on a batch (generator fixed) and the next state."""

    @abc.abstractmethod
    def generator_loss(
        self, x: Float[Array, "batch ..."], state: PyTree, *, key: Key
    ) -> tuple[Scalar, PyTree]:
        """The generator's objective (discriminator fixed) and the next state."""
