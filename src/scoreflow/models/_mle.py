"""A minimal maximum-likelihood training loop for modules with `loss(x, *, key)`.

Kept deliberately small: `scoreflow.train.fit` (the training issue) supersedes it and
trains the same modules through the same `loss(x, *, key)` interface.
"""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax
from jaxtyping import Array, Float

from .._custom_types import Key


def fit_maximum_likelihood(
    model: eqx.Module,
    data: Float[Array, "n ..."],
    *,
    optimizer: optax.GradientTransformation,
    num_steps: int,
    batch_size: int,
    steps_per_call: int = 100,
    callback: Callable[[int, eqx.Module], None] | None = None,
    key: Key,
) -> tuple[eqx.Module, Float[Array, " num_steps"]]:
    """Minimise `model.loss(batch, key=...)` over random minibatches of `data`.

    Steps run in jitted chunks of `steps_per_call` (a `lax.scan`), so Python overhead is
    paid once per chunk.

    Args:
        model: a module with `loss(x, *, key) -> scalar`.
        data: `(n, *event)` training data.
        optimizer: an optax transformation.
        num_steps: total optimiser steps (rounded up to a multiple of `steps_per_call`).
        batch_size: minibatch size (sampled with replacement).
        steps_per_call: steps per jitted chunk.
        callback: called as `callback(steps_done, model)` after every chunk (outside
            `jit`), e.g. to evaluate held-out likelihood during training.
        key: PRNG key.

    Returns:
        The trained model and the loss at every step.

    Raises:
        ValueError: on non-positive sizes.
    """
    for name, value in (
        ("num_steps", num_steps),
        ("batch_size", batch_size),
        ("steps_per_call", steps_per_call),
    ):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    params, static = eqx.partition(model, eqx.is_inexact_array)
    opt_state = optimizer.init(params)
    n = data.shape[0]

    @eqx.filter_jit
    def chunk(params, opt_state, key):
        def step(carry, k):
            params, opt_state = carry
            k_idx, k_loss = jr.split(k)
            idx = jr.randint(k_idx, (batch_size,), 0, n)
            loss_fn = lambda p: eqx.combine(p, static).loss(data[idx], key=k_loss)
            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (eqx.apply_updates(params, updates), opt_state), loss

        (params, opt_state), losses = jax.lax.scan(
            step, (params, opt_state), jr.split(key, steps_per_call)
        )
        return params, opt_state, losses

    losses = []
    for i, k in enumerate(jr.split(key, -(-num_steps // steps_per_call))):
        params, opt_state, chunk_losses = chunk(params, opt_state, k)
        losses.append(chunk_losses)
        if callback is not None:
            callback((i + 1) * steps_per_call, eqx.combine(params, static))
    return eqx.combine(params, static), jnp.concatenate(losses)
