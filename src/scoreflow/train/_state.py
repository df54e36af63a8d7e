import typing

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax
from jaxtyping import Array, PyTree, UInt

from .._custom_types import Key
from ..models import AbstractAdversarialModel


class TrainState(eqx.Module):
    """Everything that evolves during training, as one explicit value (optax style).

    Attributes:
        model: the module being trained (parameters and static structure).
        opt_state: the optax optimiser state (for an `AbstractAdversarialModel`, the
            pair of the discriminator's and the generator's states).
        ema: exponential moving average of the trainable leaves of `model`, a pytree of
            the same structure with `None` at non-trainable leaves (or `None` when EMA
            is off); an adversarial model keeps the average of its generator only.
        step: number of completed optimisation steps.
        key_data: raw data of the carry PRNG key (raw so that it serialises); one
            split per step, so a resumed run draws exactly the same numbers.
        model_state: the training state of an `AbstractStatefulModel` (a replay buffer,
            batch statistics), or `None`.
    """

    model: PyTree
    opt_state: PyTree
    ema: PyTree | None
    step: Array
    key_data: UInt[Array, "..."]
    model_state: PyTree = None

    @property
    def key(self) -> Key:
        return jr.wrap_key_data(self.key_data)

    def ema_model(self) -> PyTree:
        """The model with its trainable leaves replaced by their moving average."""
        if self.ema is None:
            return self.model
        return eqx.combine(self.ema, self.model)


def is_player_pair(optimizer) -> bool:
    """Whether `optimizer` is the alternating mode's pair `(disc, gen)` of transformations.

    (An optax transformation is itself a named pair of functions: test the members.)
    """
    return (
        isinstance(optimizer, tuple)
        and len(optimizer) == 2
        and all(isinstance(o, optax.GradientTransformation) for o in optimizer)
    )


def players(model: AbstractAdversarialModel, params: PyTree) -> tuple[PyTree, PyTree]:
    """`params` split into the discriminator's and the generator's (`None` elsewhere)."""
    return eqx.partition(params, model.player_filter())


def init_state(
    model: PyTree,
    optimizer: optax.GradientTransformation
    | tuple[optax.GradientTransformation, optax.GradientTransformation],
    *,
    ema: bool = True,
    filter_spec=eqx.is_inexact_array,
    model_state: PyTree = None,
    key: Key,
) -> TrainState:
    """The state at step 0.

    Args:
        model: the module to train.
        optimizer: an optax transformation.
        ema: keep an exponential moving average of the parameters.
        filter_spec: which leaves are trained (an equinox filter; default every
            floating array).
        model_state: the model's own training state (see `TrainState`).
        key: the carry key of the run.

    An `AbstractAdversarialModel` with a pair `(disc, gen)` of optimisers (`fit`'s
    alternating mode) gets one optimiser state per player and the EMA of its generator.

    Returns:
        A `TrainState`.
    """
    params = eqx.filter(model, filter_spec)
    averaged = params
    if isinstance(model, AbstractAdversarialModel) and is_player_pair(optimizer):
        disc, gen = players(model, params)
        disc_tx, gen_tx = typing.cast(tuple[optax.GradientTransformation, ...], optimizer)
        opt_state = (disc_tx.init(disc), gen_tx.init(gen))
        averaged = gen
    else:
        assert isinstance(optimizer, optax.GradientTransformation)
        opt_state = optimizer.init(params)
    return TrainState(
        model=model,
        opt_state=opt_state,
        ema=jax.tree_util.tree_map(jnp.copy, averaged) if ema else None,
        step=jnp.zeros((), jnp.int32),
        key_data=jr.key_data(key),
        model_state=model_state,
    )
