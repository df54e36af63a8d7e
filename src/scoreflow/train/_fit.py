import functools
import os
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jaxtyping import Array, PyTree

from .. import _checks
from .._custom_types import Key
from .._serialise import check_file_path
from ..data._disk import DiskDataset
from ..models import AbstractAdversarialModel, AbstractStatefulModel
from . import _sharding
from ._checkpoint import load_checkpoint_and_history, save_checkpoint
from ._optim import default_optimizer
from ._state import TrainState, init_state, is_player_pair, players


class TrainingDiverged(FloatingPointError):
    """Raised by `fit` when the loss becomes NaN or infinite.

    Attributes:
        step: the step whose loss was not finite.
        state: the last good `TrainState` (before the chunk that diverged).
    """

    def __init__(self, message, *, step, state):
        super().__init__(message)
        self.step = step
        self.state = state


class FitResult(eqx.Module):
    """What `fit` returns.

    Attributes:
        model: the trained model (last iterate).
        ema_model: the model with EMA parameters (use it to sample); equals `model`
            when EMA is off.
        state: the final `TrainState` (pass it back to `fit` to continue).
        losses: per-step losses of this call, `(steps_run,)` NumPy array.
        history: the whole run's record, resumed parts included (it is stored in the
            checkpoint): `"loss"` per step from step 1, and with validation
            `"validation_step"` and `"validation_loss"`.
        best_model: with validation, the evaluated model (EMA weights if kept) of the
            lowest validation loss seen in this call; `None` without validation.
        stopped_early: whether `patience` ended the run before `num_steps`.
    """

    model: PyTree
    ema_model: PyTree
    state: TrainState
    losses: np.ndarray
    history: dict = eqx.field(default_factory=dict)
    best_model: PyTree = None
    stopped_early: bool = False


# One object, so that repeated `fit` calls without an optimiser reuse the compiled chunk.
_DEFAULT_OPTIMIZER = default_optimizer(1e-3)
# Radford et al. 2016's Adam for both players (learning rate 2e-4, beta1 = 0.5).
_DEFAULT_GAN_OPTIMIZER = optax.adam(2e-4, b1=0.5, b2=0.999)


def _default_loss(model, x, *, key):
    return model.loss(x, key=key)


def _stateful_loss(model, x, state, *, key):
    return model.stateful_loss(x, state, key=key)


def _draw(data, batch_size, key):
    if callable(data) and not isinstance(data, jax.Array):
        return data(batch_size, key=key)
    # One draw of row indices for every leaf: the rows of `(x, y)` stay paired. An array
    # is a one-leaf pytree, so array data draws exactly what it always drew.
    n = jax.tree_util.tree_leaves(data)[0].shape[0]
    idx = jr.randint(key, (batch_size,), 0, n)
    return jax.tree_util.tree_map(lambda leaf: leaf[idx], data)


def _check_finite(leaves):
    for leaf in leaves:
        if jnp.issubdtype(leaf.dtype, jnp.inexact) and not bool(jnp.isfinite(leaf).all()):
            bad = int((~jnp.isfinite(leaf)).reshape(leaf.shape[0], -1).any(1).sum())
            raise ValueError(f"`data` has non-finite values (NaN or inf) in {bad} rows.")


def _check_data(data):
    # An array `(N, *event)`, or a pytree of arrays `(N, ...)` with one leading axis N.
    if isinstance(data, (jax.Array, np.ndarray)):
        data = jnp.asarray(data)
        if data.ndim < 2 or data.shape[0] < 1:
            raise ValueError(f"`data` must have shape (N, *event) with N >= 1, got {data.shape}.")
        _check_finite([data])
        return data
    leaves, treedef = jax.tree_util.tree_flatten(data)
    if not leaves:
        raise ValueError(f"`data` must hold at least one array, got {data!r}.")
    bad = [type(leaf).__name__ for leaf in leaves if not isinstance(leaf, (jax.Array, np.ndarray))]
    if bad:
        raise ValueError(
            "`data` must be an array, a pytree of arrays (such as `(x, y)`) or a sampler; "
            f"it has leaves of type {', '.join(sorted(set(bad)))}."
        )
    leaves = [jnp.asarray(leaf) for leaf in leaves]
    shapes = [leaf.shape for leaf in leaves]
    if any(len(s) < 1 for s in shapes) or len({s[0] for s in shapes}) != 1:
        raise ValueError(
            f"`data`'s arrays must share their leading axis (N rows), got shapes {shapes}."
        )
    if shapes[0][0] < 1:
        raise ValueError(f"`data` must have N >= 1 rows, got shapes {shapes}.")
    _check_finite(leaves)
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _ema_update(ema, params, step, ema_decay):
    if ema is None:
        return None
    # Warmed-up decay min(d, (1 + n)/(10 + n)) (the TensorFlow EMA's num_updates).
    n = step.astype(jnp.float32)
    d = jnp.minimum(ema_decay, (1 + n) / (10 + n))
    return jax.tree_util.tree_map(
        lambda e, p: d.astype(e.dtype) * e + (1 - d.astype(e.dtype)) * p, ema, params
    )


def _adversarial_step(optimizers, filter_spec, ema_decay, batch_size, mesh):
    # One step of the alternating mode: `n_critic` discriminator updates, each on its own
    # batch with the generator fixed, then one generator update with the discriminator
    # fixed; each player's optimiser sees only its own parameters.
    disc_opt, gen_opt = optimizers

    def one_step(state, data, total):
        key, k_critic, k_gen, k_batch = jr.split(state.key, 4)
        model = state.model
        params, static = eqx.partition(model, filter_spec)
        d_params, g_params = players(model, params)
        d_opt_state, g_opt_state = state.opt_state

        def critic_turn(carry, k):
            d_params, d_opt_state, model_state = carry
            k_b, k_l = jr.split(k)
            x = _sharding.constrain_batch(_draw(data, batch_size, k_b), mesh)

            def objective(p):
                m = eqx.combine(p, g_params, static)
                return m.discriminator_loss(x, model_state, key=k_l)

            (loss, model_state), grads = eqx.filter_value_and_grad(objective, has_aux=True)(
                d_params
            )
            with jax.numpy_dtype_promotion("standard"):
                updates, d_opt_state = disc_opt.update(grads, d_opt_state, d_params)
            return (eqx.apply_updates(d_params, updates), d_opt_state, model_state), loss

        (d_params, d_opt_state, model_state), d_losses = jax.lax.scan(
            critic_turn,
            (d_params, d_opt_state, state.model_state),
            jr.split(k_critic, model.n_critic),
        )
        x = _sharding.constrain_batch(_draw(data, batch_size, k_batch), mesh)

        def objective(p):
            m = eqx.combine(d_params, p, static)
            return m.generator_loss(x, model_state, key=k_gen)

        (g_loss, model_state), grads = eqx.filter_value_and_grad(objective, has_aux=True)(g_params)
        with jax.numpy_dtype_promotion("standard"):
            updates, g_opt_state = gen_opt.update(grads, g_opt_state, g_params)
        g_params = eqx.apply_updates(g_params, updates)
        new = TrainState(
            model=eqx.combine(d_params, g_params, static),
            opt_state=(d_opt_state, g_opt_state),
            ema=_ema_update(state.ema, g_params, state.step, ema_decay),
            step=state.step + 1,
            key_data=jr.key_data(key),
            model_state=model_state,
        )
        # The recorded loss is the discriminator's last; a non-finite generator loss
        # makes it NaN, so that the divergence check sees either player fail.
        loss = jnp.where(jnp.isfinite(g_loss), d_losses[-1], jnp.nan)
        return new, loss

    return one_step


@functools.lru_cache(maxsize=32)
def _make_chunk(
    optimizer, loss_fn, filter_spec, ema_decay, batch_size, chunk, data_is_fn, mesh=None
):
    adversarial = is_player_pair(optimizer)
    step_fn = (
        _adversarial_step(optimizer, filter_spec, ema_decay, batch_size, mesh)
        if adversarial
        else None
    )

    def plain_step(state, data, total, batch=None):
        key, k_batch, k_loss = jr.split(state.key, 3)
        # A `DiskDataset`'s batch was read on the host from the same `k_batch` draw.
        x = _draw(data, batch_size, k_batch) if batch is None else batch
        x = _sharding.constrain_batch(x, mesh)
        params, static = eqx.partition(state.model, filter_spec)

        model_state = state.model_state
        if model_state is None:

            def objective(p):
                return loss_fn(eqx.combine(p, static), x, key=k_loss)

            loss, grads = eqx.filter_value_and_grad(objective)(params)
        else:

            def objective(p):
                return _stateful_loss(eqx.combine(p, static), x, model_state, key=k_loss)

            (loss, model_state), grads = eqx.filter_value_and_grad(objective, has_aux=True)(params)
        # optax mixes Python floats with int32 step counts; allow that even when the
        # user runs JAX with strict dtype promotion.
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = optimizer.update(grads, state.opt_state, params)
        params = eqx.apply_updates(params, updates)
        new = TrainState(
            model=eqx.combine(params, static),
            opt_state=opt_state,
            ema=_ema_update(state.ema, params, state.step, ema_decay),
            step=state.step + 1,
            key_data=jr.key_data(key),
            model_state=model_state,
        )
        return new, loss

    def one_step(state, data, total, batch=None):
        # The alternating mode draws its own n_critic + 1 batches per step (in memory).
        new, loss = (
            step_fn(state, data, total) if step_fn else plain_step(state, data, total, batch)
        )
        # Steps past the end are no-ops, so every chunk is the same compiled program and
        # a resumed run repeats an uninterrupted one bit for bit.
        active = state.step < total
        new = jax.tree_util.tree_map(
            lambda a, b: jnp.where(active, a, b) if eqx.is_array(a) else a, new, state
        )
        return _sharding.constrain_replicated(new, mesh), loss

    @eqx.filter_jit
    def run(state, data, total):
        # Only arrays go through the scan carry; Python scalars (e.g. an SDE's floats)
        # stay static, or the carry would turn them into trainable-looking arrays.
        dynamic, static = eqx.partition(state, eqx.is_array)

        def body(d, batch):
            new, loss = one_step(eqx.combine(d, static), data, total, batch)
            return eqx.filter(new, eqx.is_array), loss

        # On-disk data arrives as `data`: the chunk's batches, one per step.
        batches, data = (data, None) if data_is_fn == "disk" else (None, data)
        dynamic, losses = jax.lax.scan(body, dynamic, batches, length=chunk)
        return eqx.combine(dynamic, static), _sharding.constrain_replicated(losses, mesh)

    return run


def fit(
    model: PyTree,
    data: PyTree | Callable[..., PyTree],
    *,
    num_steps: int,
    batch_size: int = 256,
    optimizer: optax.GradientTransformation | dict | None = None,
    ema_decay: float | None = 0.999,
    steps_per_chunk: int = 100,
    loss_fn: Callable[..., Array] | None = None,
    filter_spec=eqx.is_inexact_array,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    checkpoint_metadata: dict | None = None,
    resume: bool = True,
    strict_resume: bool = True,
    state: TrainState | None = None,
    validation: PyTree | float | None = None,
    validate_every: int | None = None,
    patience: int | None = None,
    progress: bool = True,
    mesh: jax.sharding.Mesh | None = None,
    key: Key,
) -> FitResult:
    r"""Train any module that has `loss(x, *, key)`, by one loop.

    Each step draws a batch (with replacement) from `data`, the same random rows of
    every array (so the pairs of a conditional model's `(x, y)` stay together),
    differentiates the loss with respect to the leaves selected by `filter_spec`, applies
    the optax `optimizer` and updates the EMA of the parameters. Steps run in jitted
    chunks of `steps_per_chunk` (`jax.lax.scan`), so Python is touched once per chunk:
    that is when the progress bar moves, losses are checked and checkpoints are written.

    **State** is an explicit `TrainState` (model, optimiser state, EMA, step, carry key).
    The carry key is split once per step, so a run resumed from a checkpoint (written at
    chunk boundaries, atomically) repeats the uninterrupted run exactly.

    **Divergence.** If a loss is NaN or infinite, `fit` raises `TrainingDiverged` naming
    the step; the chunk is discarded, the error carries the last good state and the
    checkpoint on disk is left as it was (the last good one).

    **Resuming** checks that the model and optimiser given are the ones the checkpoint
    was written for (classes, hyperparameters, parameterisation, shapes, dtypes) and
    raises `CheckpointMismatch` naming every differing field; `strict_resume=False`
    warns and continues with the checkpoint's values.

    **Validation** (flowjax's `fit_to_data` shape): `validation` is held-out data, or a
    fraction of the rows of `data` to hold out (a fixed permutation, so a rerun holds out
    the same rows). Every `validate_every` steps (rounded up to whole chunks; default
    every chunk) the evaluated model (EMA weights if kept) gets the mean loss over the
    held-out rows, with one fixed key so that the values are comparable. `patience`
    stops the run after that many validations without a new lowest loss.

    **Stateful models.** An `AbstractStatefulModel` (e.g. an `EBM` trained by persistent
    contrastive divergence, whose replay buffer is its state) gets its state from
    `model.init_state` at step 0 and is trained by `model.stateful_loss`; the state lives
    in `TrainState.model_state`, so it is checkpointed and resumed like the parameters.

    **Data parallel** (`mesh`): the batch is split along the mesh's `data` axis and the
    model, optimiser state and EMA are replicated (`equinox.filter_shard`), so XLA
    averages the gradients across devices. The global batch is the one a single device
    draws, so the losses are those of `mesh=None` up to the order of the batch mean's
    summation. The mesh may span several processes (`initialize_distributed`): every
    process calls `fit` alike, reads only its own shard of each batch, and only process
    0 writes the checkpoint and shows progress. Checkpoints hold plain arrays: one
    written on any mesh resumes on any other (or on none).

    **Data on disk** (a `scoreflow.data.DiskDataset`: memory-mapped `.npy`, `.npz`,
    IDX): each chunk's row indices are drawn on the host from the carry key, exactly
    as for an in-memory array, and only those rows are read.

    **Adversarial models** (`AbstractAdversarialModel`, a `GAN`) train in the alternating
    mode: each step makes `model.n_critic` discriminator updates on
    `model.discriminator_loss` (each on a fresh batch, the generator fixed), then one
    generator update on `model.generator_loss`, with two optimisers: `optimizer` is
    `{"disc": ..., "gen": ...}`, or one transformation that each player uses with its
    own state (default: Adam, learning rate $2 \cdot 10^{-4}$, $\beta_1 = 0.5$, Radford
    et al. 2016). The EMA is kept for the generator only; the recorded loss is the
    discriminator's (NaN if either player's loss is not finite). Checkpoints, resume,
    the NaN stop and the progress bar work as for every model.

    **Other models.** `loss_fn(model, x, *, key)` replaces `model.loss` (and, for a
    stateful model, trains it without a state; for an adversarial model, with one
    optimiser on the whole model: simultaneous gradient steps on `loss_fn`).

    Args:
        model: the module to train (a `ScoreSDE`, `DDPM`, `NCSN`, a flow, ...).
        data: `(N, *event)` array; a pytree of arrays with a common leading axis `N`,
            such as `(x, y)` with `(N, *event)` data and `(N,)` labels (the batch is
            the same pytree); a `scoreflow.data.DiskDataset` (rows read from disk as
            batches need them); or a sampler `data(batch_size, *, key) -> batch`.
        num_steps: total optimisation steps (counting those of a resumed state).
        batch_size: examples per step.
        optimizer: optax transformation (default `default_optimizer(1e-3)`: AdamW, global
            norm clipping at 1); for an adversarial model also `{"disc": ..., "gen": ...}`.
        ema_decay: EMA decay (None: no EMA).
        steps_per_chunk: steps per jitted chunk.
        loss_fn: alternative loss `(model, x, *, key) -> scalar`.
        filter_spec: equinox filter of the trained leaves.
        checkpoint: file to write the state to (and to resume from).
        checkpoint_every: steps between checkpoints (rounded up to whole chunks; default:
            only at the end).
        checkpoint_metadata: JSON-able notes stored in the checkpoint (the CLI stores
            its config); read them with `checkpoint_info`.
        resume: continue from `checkpoint` if it exists.
        strict_resume: raise when the checkpoint's model or optimiser differs from the
            one given (`False`: warn, and continue with the checkpoint's).
        state: continue from this state instead (takes precedence over `checkpoint`).
        validation: held-out data (same layout as `data`) or a fraction in (0, 1) of the
            rows of array / pytree `data` to hold out.
        validate_every: steps between validations (default: every chunk).
        patience: stop after this many validations without improvement (None: never).
        progress: show a tqdm progress bar with the loss.
        mesh: a `jax.sharding.Mesh` with a `data` axis to train data-parallel over
            (default: one device). `batch_size` must be divisible by its size.
        key: the run's key (ignored when resuming: the state carries its own).

    Returns:
        A `FitResult`.

    Raises:
        TrainingDiverged: on a non-finite loss.
        CheckpointMismatch: resuming a checkpoint of a different model or optimiser.
        ValueError: on bad arguments.
    """
    _checks.positive_int(num_steps, "num_steps", least=0)
    _checks.positive_int(batch_size, "batch_size")
    _checks.positive_int(steps_per_chunk, "steps_per_chunk")
    _checks.key(key)
    if checkpoint_every is not None:
        _checks.positive_int(checkpoint_every, "checkpoint_every")
        if checkpoint is None:
            raise ValueError("`checkpoint_every` needs a `checkpoint` file to write to.")
    if ema_decay is not None and not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"`ema_decay` must lie in [0, 1), got {ema_decay}.")
    if mesh is not None:
        _sharding.check_mesh(mesh, batch_size)
        mesh = _sharding.auto(mesh)
    on_disk = isinstance(data, DiskDataset)
    data_is_fn = on_disk or (callable(data) and not isinstance(data, jax.Array))
    if not data_is_fn:
        data = _check_data(data)
    data, val_data = _split_validation(data, validation, data_is_fn)
    if validate_every is not None:
        _checks.positive_int(validate_every, "validate_every")
    if patience is not None:
        _checks.positive_int(patience, "patience")
        if val_data is None:
            raise ValueError("`patience` needs `validation` data to watch.")
    adversarial = isinstance(model, AbstractAdversarialModel) and loss_fn is None
    tx: optax.GradientTransformation | tuple[optax.GradientTransformation, ...]
    if adversarial:
        if on_disk:
            raise ValueError(
                "`data`: an adversarial model draws n_critic + 1 batches per step from "
                "data in memory; load the `DiskDataset` into an array for it."
            )
        tx = _player_optimizers(optimizer)
    elif isinstance(optimizer, dict):
        raise ValueError(
            "`optimizer` as a dict of players is for an adversarial model (a GAN) trained "
            "by its own losses; pass one optax transformation."
        )
    else:
        tx = _DEFAULT_OPTIMIZER if optimizer is None else optimizer
    loss_fn = _default_loss if loss_fn is None else loss_fn
    model_state = None
    if isinstance(model, AbstractStatefulModel) and loss_fn is _default_loss:
        # Its own stream, so a stateless model's carry key is what it always was.
        model_state = model.init_state(key=jr.fold_in(key, 1))
    template = init_state(
        model,
        tx,  # pyright: ignore[reportArgumentType]
        ema=ema_decay is not None,
        filter_spec=filter_spec,
        model_state=model_state,
        key=key,
    )
    ckpt = None if checkpoint is None else check_file_path(checkpoint, "checkpoint")
    history: dict[str, np.ndarray] = {}
    if state is not None:
        current = state
    elif ckpt is not None and resume and ckpt.exists():
        current, history = load_checkpoint_and_history(ckpt, template, strict=strict_resume)
    else:
        current = template
    if not data_is_fn:
        _check_loss_accepts(loss_fn, current.model, data, batch_size, model_state is not None)
    mode = "disk" if on_disk else data_is_fn
    run = _make_chunk(
        tx, loss_fn, filter_spec, ema_decay or 0.0, batch_size, steps_per_chunk, mode, mesh
    )
    total = jnp.asarray(num_steps, jnp.int32)
    main = _sharding.is_main_process()
    if mesh is not None:
        current, total = _sharding.replicate((current, total), mesh)
        if not data_is_fn:
            data = _sharding.replicate(data, mesh)
    disk = data if isinstance(data, DiskDataset) else None
    start = int(_sharding.to_numpy(current.step))
    every = checkpoint_every
    last_saved = start
    bar = None
    if progress and main:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_steps, initial=min(start, num_steps), desc="fit", unit="step")
    losses = []
    past = history.get("loss", np.zeros((0,), np.float32))[: min(start, num_steps)]
    val_steps = list(history.get("validation_step", np.zeros((0,), np.int64)))
    val_losses = list(history.get("validation_loss", np.zeros((0,), np.float32)))
    val_every = steps_per_chunk if validate_every is None else validate_every
    best_model, stopped_early = None, False
    best = min(val_losses) if val_losses else np.inf
    since_best = len(val_losses) - 1 - int(np.argmin(val_losses)) if val_losses else 0

    def record():
        return {
            "loss": np.concatenate([past, *losses]).astype(np.float32),
            **(
                {
                    "validation_step": np.asarray(val_steps, np.int64),
                    "validation_loss": np.asarray(val_losses, np.float32),
                }
                if val_data is not None
                else {}
            ),
        }

    try:
        while (done := int(_sharding.to_numpy(current.step))) < num_steps:
            before = current
            if disk is not None:
                idx = _sharding.chunk_indices(
                    current.key_data, disk.num_rows, batch_size, steps_per_chunk
                )
                data = _sharding.host_batches(disk, idx, mesh)
            current, chunk_losses = run(current, data, total)
            n = min(steps_per_chunk, num_steps - done)
            chunk_losses = _sharding.to_numpy(chunk_losses)[:n]
            bad = np.flatnonzero(~np.isfinite(chunk_losses))
            if bad.size:
                step = done + int(bad[0]) + 1
                where = (
                    ""
                    if ckpt is None
                    else (
                        f" The last good checkpoint is {ckpt} (step {last_saved})."
                        if ckpt.exists()
                        else " No checkpoint had been written yet."
                    )
                )
                raise TrainingDiverged(
                    f"Training stopped: the loss was {chunk_losses[bad[0]]} at step {step}. "
                    f"The returned current is the last good one (step {done}).{where} "
                    "Lower the learning rate, clip gradients, or check the data for NaN.",
                    step=step,
                    state=before,
                )
            losses.append(chunk_losses)
            s = int(_sharding.to_numpy(current.step))
            postfix = {"loss": f"{float(chunk_losses.mean()):.4g}"}
            if val_data is not None and (
                s >= num_steps or s - (val_steps[-1] if val_steps else start) >= val_every
            ):
                evaluated = _sharding.local(current.ema_model())
                v = _validation_loss(loss_fn, evaluated, val_data, batch_size)
                val_steps.append(s)
                val_losses.append(v)
                postfix["val"] = f"{v:.4g}"
                if v < best:
                    best, since_best, best_model = v, 0, evaluated
                else:
                    since_best += 1
                stopped_early = patience is not None and since_best >= patience
            if bar is not None:
                bar.update(n)
                bar.set_postfix(postfix)
            if ckpt is not None and (
                s >= num_steps or stopped_early or (every is not None and s - last_saved >= every)
            ):
                if main:
                    save_checkpoint(
                        ckpt,
                        _sharding.local(current),
                        {"num_steps": num_steps, **(checkpoint_metadata or {})},
                        history=record(),
                    )
                _sharding.barrier("checkpoint")
                last_saved = s
            if stopped_early:
                break
    finally:
        if bar is not None:
            bar.close()
    full = record()
    losses = np.concatenate(losses) if losses else np.zeros((0,), np.float32)
    current = _sharding.local(current)
    return FitResult(
        model=current.model,
        ema_model=current.ema_model(),
        state=current,
        losses=losses,
        history=full,
        best_model=best_model,
        stopped_early=stopped_early,
    )


def _player_optimizers(optimizer) -> tuple[optax.GradientTransformation, ...]:
    # The alternating mode's pair (disc, gen): a dict of both, one transformation for
    # both (each player keeps its own state), or the default.
    if optimizer is None:
        return (_DEFAULT_GAN_OPTIMIZER, _DEFAULT_GAN_OPTIMIZER)
    if isinstance(optimizer, dict):
        if set(optimizer) != {"disc", "gen"}:
            raise ValueError(
                "`optimizer` for an adversarial model must be one optax transformation or "
                f"a dict with the keys 'disc' and 'gen', got keys {sorted(optimizer)}."
            )
        return (optimizer["disc"], optimizer["gen"])
    if isinstance(optimizer, optax.GradientTransformation):
        return (optimizer, optimizer)
    raise ValueError(
        "`optimizer` must be an optax transformation or {'disc': ..., 'gen': ...}, got "
        f"{type(optimizer).__name__}."
    )


def _split_validation(data, validation, data_is_fn):
    if validation is None:
        return data, None
    if isinstance(validation, float):
        if data_is_fn:
            raise ValueError("A `validation` fraction needs array data; pass held-out data.")
        if not 0.0 < validation < 1.0:
            raise ValueError(f"A `validation` fraction must lie in (0, 1), got {validation}.")
        n = jax.tree_util.tree_leaves(data)[0].shape[0]
        num_val = int(round(validation * n))
        if num_val < 1 or num_val >= n:
            raise ValueError(
                f"`validation={validation}` of {n} rows leaves {num_val} held out and "
                f"{n - num_val} to train on; both must be >= 1."
            )
        # A fixed permutation: the same rows are held out on every rerun and resume.
        perm = np.random.default_rng(0).permutation(n)
        take = lambda rows: jax.tree_util.tree_map(lambda leaf: leaf[rows], data)
        return take(perm[num_val:]), take(perm[:num_val])
    try:
        return data, _check_data(validation)
    except ValueError as e:
        raise ValueError(str(e).replace("`data`", "`validation`")) from None


@eqx.filter_jit
def _batch_loss(loss_fn, model, x):
    return loss_fn(model, x, key=jr.key(0))


def _validation_loss(loss_fn, model, val_data, batch_size) -> float:
    n = jax.tree_util.tree_leaves(val_data)[0].shape[0]
    total = 0.0
    for lo in range(0, n, batch_size):
        rows = slice(lo, min(lo + batch_size, n))
        batch = jax.tree_util.tree_map(lambda leaf: leaf[rows], val_data)
        total += float(_batch_loss(loss_fn, model, batch)) * (rows.stop - rows.start)
    return total / n


def _check_loss_accepts(loss_fn, model, data, batch_size, stateful):
    # Integer data reaching a float model fails deep inside the loss, naming a tracer;
    # try the loss once, abstractly, and say what is wrong in terms of `data`.
    leaves = jax.tree_util.tree_leaves(data)
    if stateful or not jnp.issubdtype(leaves[0].dtype, jnp.integer):
        return
    batch = jax.tree_util.tree_map(lambda leaf: leaf[: min(batch_size, leaf.shape[0])], data)
    try:
        eqx.filter_eval_shape(lambda m, x: loss_fn(m, x, key=jr.key(0)), model, batch)
    except Exception as e:
        raise ValueError(
            f"`data` has integer dtype {leaves[0].dtype}, which this model's loss does not "
            "take; convert it to floats (e.g. `data.astype(jnp.float32)`, or the "
            "dataset's bin centres)."
        ) from e
