import math
from collections.abc import Callable, Hashable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


def default_optimizer(
    learning_rate: float = 1e-3,
    *,
    num_steps: int | None = None,
    warmup_steps: int = 0,
    clip_norm: float | None = 1.0,
    weight_decay: float = 0.0,
) -> optax.GradientTransformation:
    """AdamW with global-norm gradient clipping and an optional warmup + cosine schedule.

    Args:
        learning_rate: peak learning rate.
        num_steps: total steps; when given the rate decays to 0 by a cosine
            (Loshchilov & Hutter 2017) after `warmup_steps` of linear warmup.
        warmup_steps: linear warmup steps.
        clip_norm: clip gradients to this global norm (`None`: no clipping).
        weight_decay: decoupled weight decay.

    Returns:
        An optax transformation.
    """
    if clip_norm is not None and not clip_norm > 0:
        raise ValueError(f"`clip_norm` must be positive (or None: no clipping), got {clip_norm}.")
    if num_steps is not None:
        lr = optax.warmup_cosine_decay_schedule(
            0.0, learning_rate, max(warmup_steps, 1), max(num_steps, warmup_steps + 1)
        )
    elif warmup_steps:
        lr = optax.linear_schedule(0.0, learning_rate, warmup_steps)
    else:
        lr = learning_rate
    parts = [] if clip_norm is None else [optax.clip_by_global_norm(clip_norm)]
    parts.append(optax.adamw(lr, weight_decay=weight_decay))
    return optax.chain(*parts)


class _TurnState(NamedTuple):
    step: jax.Array
    inner: optax.OptState


def _take_turn(inner: optax.GradientTransformation, turns: tuple[int, ...], period: int):
    def init_fn(params):
        return _TurnState(jnp.zeros((), jnp.int32), inner.init(params))

    def update_fn(updates, state, params=None):
        phase = state.step % period
        active = jnp.any(jnp.asarray(turns, jnp.int32) == phase)

        def run(_):
            return inner.update(updates, state.inner, params)

        def skip(_):
            return jax.tree_util.tree_map(jnp.zeros_like, updates), state.inner

        new_updates, new_inner = jax.lax.cond(active, run, skip, None)
        return new_updates, _TurnState(state.step + 1, new_inner)

    return optax.GradientTransformation(init_fn, update_fn)


def alternating(
    transforms: dict[str, optax.GradientTransformation],
    labels: Callable | object,
    order: Sequence[str],
) -> optax.GradientTransformation:
    r"""Alternating updates of parameter groups, e.g. a GAN's discriminator and generator.

    Step $k$ updates only the group `order[k % len(order)]`, with its own optimiser whose
    state (moments, step count) advances only on its turns; the other groups get a zero
    update. With a loss whose gradient for each group is that group's objective (for a
    GAN: $L = L_D(D, \mathrm{sg}(G)) + L_G(\mathrm{sg}(D), G)$ with stop-gradients
    `sg`), `fit` then performs the classic alternating GAN updates with the same loop as
    every other model. Repeat a label in `order` for several updates per turn
    (`("disc", "disc", "gen")`).

    Args:
        transforms: optimiser per group label.
        labels: the labels pytree (or a function of the parameters returning it), as
            for `optax.multi_transform`.
        order: the turn order of the labels.

    Returns:
        An optax transformation.
    """
    order = tuple(order)
    missing = set(order) - set(transforms)
    if missing:
        raise ValueError(f"`order` names labels without a transform: {sorted(missing)}.")
    if set(transforms) - set(order):
        raise ValueError("Every label of `transforms` must appear in `order`.")
    period = len(order)
    wrapped: dict[Hashable, optax.GradientTransformation] = {
        name: _take_turn(tx, tuple(i for i, o in enumerate(order) if o == name), period)
        for name, tx in transforms.items()
    }
    return optax.multi_transform(wrapped, labels)


class SkipState(NamedTuple):
    """The state of `skip_large_updates`: the inner optimiser's, and the skips so far."""

    inner: optax.OptState
    num_skipped: jax.Array


def skip_large_updates(
    inner: optax.GradientTransformation, max_norm: float
) -> optax.GradientTransformation:
    r"""Skip every step whose gradient norm is at least `max_norm` or not finite.

    VDVAE's guard against the rare exploding gradient of a deep hierarchical VAE (Child
    2021, "Very Deep VAEs", arXiv:2011.10650, sec. 3.3): the global norm of the raw
    gradient is measured *before* `inner` (which may clip); above the threshold, or
    NaN / inf, the update is zero and `inner`'s state (moments, step count, schedule)
    does not advance, so a skipped step leaves no trace beside the counter
    `SkipState.num_skipped`. Otherwise it is `inner`'s step, unchanged.

    Args:
        inner: the optimiser to guard (e.g. `default_optimizer(...)`, which clips).
        max_norm: the skip threshold on the gradient's global norm (> 0).

    Returns:
        An optax transformation.
    """
    if not (isinstance(max_norm, int | float) and math.isfinite(max_norm) and max_norm > 0):
        raise ValueError(f"`max_norm` must be a finite number > 0, got {max_norm!r}.")

    def init_fn(params):
        return SkipState(inner.init(params), jnp.zeros((), jnp.int32))

    def update_fn(updates, state, params=None):
        leaves = jax.tree_util.tree_leaves(updates)
        norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in leaves)) if leaves else jnp.zeros(())
        ok = jnp.isfinite(norm) & (norm < max_norm)
        new_updates, new_inner = inner.update(updates, state.inner, params)
        new_updates = jax.tree_util.tree_map(
            lambda u: jnp.where(ok, u, jnp.zeros_like(u)), new_updates
        )
        new_inner = jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new_inner, state.inner)
        return new_updates, SkipState(new_inner, state.num_skipped + (~ok).astype(jnp.int32))

    return optax.GradientTransformation(init_fn, update_fn)
