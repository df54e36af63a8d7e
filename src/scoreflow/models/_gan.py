r"""Generative adversarial networks on the model contract."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PyTree

from .. import _checks, losses
from .._custom_types import Key, Scalar
from ._base import AbstractAdversarialModel, AbstractStatefulModel, check_event


def _stopped(tree):
    return jax.tree_util.tree_map(
        lambda a: jax.lax.stop_gradient(a) if eqx.is_inexact_array(a) else a, tree
    )


def _state_of(values: dict | None) -> eqx.nn.State:
    # The discriminator's `eqx.nn.State`, from the plain dict the training state keeps
    # (string keys: it saves, loads and resumes like any pytree of arrays).
    keys = tuple(values) if values else ()
    return eqx.nn.State.tree_unflatten(keys, tuple(values[k] for k in keys) if values else ())


def _values_of(state: eqx.nn.State) -> dict | None:
    values, keys = state.tree_flatten()
    return dict(zip(keys, values)) if keys else None


class GAN(AbstractAdversarialModel, AbstractStatefulModel):
    r"""A generative adversarial network (Goodfellow et al. 2014, arXiv:1406.2661).

    A generator $G$ maps $z \sim N(0, I)$ to samples and a discriminator $D$ scores
    examples with a logit (a critic value for the Wasserstein loss). `loss` chooses the
    game (`scoreflow.losses.discriminator_loss` / `generator_loss`):
    `"non_saturating"` (Goodfellow et al.'s practical generator loss), `"minimax"`
    (their eq. 1 as written), `"hinge"` (Miyato et al. 2018, eq. 16) or `"wasserstein"`
    (Arjovsky et al. 2017). The discriminator's loss adds $\lambda$ times the WGAN-GP
    penalty (Gulrajani et al. 2017, eq. 3; `gradient_penalty` $= \lambda$, 10 there) and
    $\gamma/2$ times R1 (Mescheder et al. 2018, eq. 9; `r1` $= \gamma$).

    `scoreflow.train.fit` trains it by alternating turns: `n_critic` discriminator
    updates, each on its own batch, then one generator update, with two optimisers
    (`optimizer={"disc": ..., "gen": ...}`), and keeps the EMA of the generator only
    (`FitResult.ema_model` samples with it). A discriminator with
    `eqx.nn.SpectralNorm` layers (`scoreflow.nn.MLPDiscriminator(...,
    spectral_norm=True)`) has a state, its power-iteration vectors: `init_state`
    returns it and `fit` keeps it in `TrainState.model_state`, so checkpoints and
    resumes carry it. GANs have no likelihood.

    Args:
        generator: $G$, `z -> x` on one example (e.g. `scoreflow.nn.MLPGenerator`).
        discriminator: $D$, `(x, state) -> (logit, state)` on one example with an
            `eqx.nn.State` (`scoreflow.nn.MLPDiscriminator`, `DCGANDiscriminator`).
        event_shape: the shape of one example.
        latent_dim: the size of $z$.
        loss: `"non_saturating"`, `"minimax"`, `"hinge"` or `"wasserstein"`.
        gradient_penalty: $\lambda$ of the WGAN-GP penalty (0: off).
        r1: $\gamma$ of the R1 penalty (0: off).
        n_critic: discriminator updates per generator update (5 for WGAN-GP).

    Raises:
        ValueError: on an unknown loss, a negative weight, `n_critic` < 1, or networks
            whose shapes do not fit `event_shape` and `latent_dim`.
    """

    generator: Callable[[Array], Array]
    discriminator: Callable
    event_shape: tuple[int, ...] = eqx.field(static=True)
    latent_dim: int = eqx.field(static=True)
    loss_kind: str = eqx.field(static=True)
    gradient_penalty: float = eqx.field(static=True)
    r1: float = eqx.field(static=True)
    n_critic: int = eqx.field(static=True)

    def __init__(
        self,
        generator: Callable[[Array], Array],
        discriminator: Callable,
        *,
        event_shape: tuple[int, ...],
        latent_dim: int,
        loss: str = "non_saturating",
        gradient_penalty: float = 0.0,
        r1: float = 0.0,
        n_critic: int = 1,
    ):
        if loss not in losses.ADVERSARIAL_LOSSES:
            raise ValueError(f"`loss` must be one of {losses.ADVERSARIAL_LOSSES}, got {loss!r}.")
        _checks.positive_int(latent_dim, "latent_dim")
        _checks.positive_int(n_critic, "n_critic")
        _checks.nonnegative(gradient_penalty, "gradient_penalty")
        _checks.nonnegative(r1, "r1")
        self.generator = generator
        self.discriminator = discriminator
        self.event_shape = _checks.shape(event_shape, "event_shape")
        self.latent_dim = latent_dim
        self.loss_kind = loss
        self.gradient_penalty = float(gradient_penalty)
        self.r1 = float(r1)
        self.n_critic = n_critic
        dtype = jnp.result_type(float)
        out = jax.eval_shape(generator, jax.ShapeDtypeStruct((latent_dim,), dtype))
        if getattr(out, "shape", None) != self.event_shape:
            raise ValueError(
                f"`generator` must map a latent ({latent_dim},) to one example of shape "
                f"{self.event_shape}, got {getattr(out, 'shape', type(out).__name__)}."
            )
        logit, _ = jax.eval_shape(
            lambda x: discriminator(x, eqx.nn.State(discriminator)),
            jax.ShapeDtypeStruct(self.event_shape, dtype),
        )
        if getattr(logit, "shape", None) != ():
            raise ValueError(
                "`discriminator` must map (x, state) to (a scalar logit, state), got "
                f"{getattr(logit, 'shape', type(logit).__name__)}."
            )

    # Sampling.

    def _generate(self, n, dtype, *, key):
        z = jr.normal(key, (n, self.latent_dim), dtype)
        return jax.vmap(self.generator)(z)

    def sample(
        self, sample_shape: int | tuple[int, ...] = (), *, dtype=None, key: Key
    ) -> Float[Array, "..."]:
        r"""`(*sample_shape, *event_shape)` samples $G(z)$, $z \sim N(0, I)$."""
        dtype = _checks.float_dtype(dtype)
        shape, n = self._flat_shape(sample_shape)
        _checks.key(key)
        x = self._generate(n, dtype, key=key).astype(dtype)
        return x.reshape(*shape, *self.event_shape)

    # The two players.

    def player_filter(self) -> PyTree:
        """`True` on the discriminator's leaves, `False` on the generator's."""
        mask = jax.tree_util.tree_map(lambda _: False, self)
        return eqx.tree_at(lambda m: m.discriminator, mask, True)

    def init_state(self, *, key: Key | None = None) -> dict | None:
        """The discriminator's initial `eqx.nn.State` as a dict (`None` when it has none)."""
        del key
        return _values_of(eqx.nn.State(self.discriminator))

    def logits(
        self, x: Float[Array, "batch ..."], state: dict | None = None
    ) -> tuple[Float[Array, " batch"], dict | None]:
        """$D$ of a batch, and the discriminator's next state."""
        disc = jax.vmap(self.discriminator, in_axes=(0, None), out_axes=(0, None))
        out, new = disc(x, _state_of(state))
        return out, _values_of(new)

    def _critic(self, state):
        def critic(xi):
            return self.discriminator(xi, _state_of(state))[0]

        return critic

    def discriminator_loss(
        self, x: Float[Array, "batch ..."], state: dict | None, *, key: Key
    ) -> tuple[Scalar, dict | None]:
        """$L_D$ on a batch with the generator held fixed, and the next state."""
        check_event(x, self.event_shape)
        k_z, k_gp = jr.split(key)
        fake = jax.lax.stop_gradient(self._generate(x.shape[0], x.dtype, key=k_z))
        real_logits, state = self.logits(x, state)
        fake_logits, state = self.logits(fake, state)
        loss = losses.discriminator_loss(real_logits, fake_logits, kind=self.loss_kind)
        if self.gradient_penalty:
            critic = self._critic(state)
            gp = losses.gradient_penalty(critic, x, fake, key=k_gp)
            loss = loss + self.gradient_penalty * gp
        if self.r1:
            loss = loss + 0.5 * self.r1 * losses.r1_penalty(self._critic(state), x)
        return loss, state

    def generator_loss(
        self, x: Float[Array, "batch ..."], state: dict | None, *, key: Key
    ) -> tuple[Scalar, dict | None]:
        """$L_G$ of `x.shape[0]` samples with the discriminator held fixed, and the state."""
        check_event(x, self.event_shape)
        fake = self._generate(x.shape[0], x.dtype, key=key)
        frozen = eqx.tree_at(lambda m: m.discriminator, self, _stopped(self.discriminator))
        fake_logits, state = frozen.logits(fake, state)
        return losses.generator_loss(fake_logits, kind=self.loss_kind), state

    # The contract's scalar.

    def loss(self, x: Float[Array, "batch ..."], *, key: Key) -> Scalar:
        r"""$L_D(D, \mathrm{sg}(G)) + L_G(\mathrm{sg}(D), G)$ with a fresh state."""
        return self.stateful_loss(x, self.init_state(), key=key)[0]

    def stateful_loss(
        self, x: Float[Array, "batch ..."], state: dict | None, *, key: Key
    ) -> tuple[Scalar, dict | None]:
        """Both players' losses, summed (each player's gradient is its own), and the state."""
        k_d, k_g = jr.split(key)
        loss_d, state = self.discriminator_loss(x, state, key=k_d)
        loss_g, state = self.generator_loss(x, state, key=k_g)
        return loss_d + loss_g, state
