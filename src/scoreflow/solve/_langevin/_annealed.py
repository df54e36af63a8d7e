r"""Annealed Langevin dynamics over a noise ladder, and inpainting with it.

Song & Ermon 2019, "Generative Modeling by Estimating Gradients of the Data
Distribution" (NCSN, arXiv:1907.05600): Algorithm 1 (sampling) and Algorithm 2 of the
appendix (inpainting). Each level of the ladder is a diffrax solve of the Langevin SDE
of the noisy marginal $p_{t_i}$ (Euler–Maruyama on a fixed grid, `GridBrownianPath`);
the levels are a `jax.lax.scan`.
"""

from collections.abc import Callable

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Bool, Float

from ... import _checks
from ..._custom_types import Key
from ...sde import AbstractPrediction, AbstractSDE, langevin_terms
from .._grids._grids import AbstractGrid, check_range, grid_times
from .._shared._batch import Batched
from .._shared._brownian import GridBrownianPath
from .._shared._model import check_model
from .._shared._result import finite_result
from ._common import LangevinResult, boundary_jit, check_ladder, check_save_every


def ladder_times(sde: AbstractSDE, ladder: AbstractGrid | Float[Array, " L"]) -> Array:
    r"""The times $t_1 > \dots > t_L$ of a noise ladder under `sde`.

    Args:
        sde: the SDE the score model was trained under.
        ladder: a scoreflow grid (its times, `T` down to `t_min`), or strictly
            decreasing noise levels $\tilde\sigma_1 > \dots > \tilde\sigma_L > 0$ with
            $\tilde\sigma = \sigma_t/\alpha_t = e^{-\lambda_t}$: NCSN's $\sigma_i$ for a
            variance-exploding SDE (`VESDE`, `EDMSDE`), mapped to times through
            `sde.t_from_log_snr`.

    Returns:
        `(L,)` times.

    Raises:
        ValueError: if `ladder` is not a 1-d, positive, strictly decreasing array, or
            its times leave the SDE's range `[sde.t_min, sde.T]` (a noise level the
            SDE does not reach: the score would be read where it was not trained).
    """
    if isinstance(ladder, AbstractGrid):
        return grid_times(ladder, sde, "ladder")
    ladder = jnp.asarray(ladder)
    if ladder.ndim != 1 or ladder.shape[0] < 1:
        raise ValueError(f"`ladder` must be a 1-d array of noise levels, got {ladder.shape}.")
    if not jnp.issubdtype(ladder.dtype, jnp.floating):
        raise ValueError(f"`ladder` must be floating point, got {ladder.dtype}.")
    check_ladder(ladder)
    return check_range(sde.t_from_log_snr(-jnp.log(ladder)), sde, "ladder")


class _AtLevel(eqx.Module):
    # The score of the fixed level t, whatever the Langevin chain's own time.
    score: Callable
    t: Array

    def __call__(self, t, x):
        del t
        return self.score(self.t, x)


class _Known(eqx.Module):
    # Inpainting's known coordinates (True) and their observed values, batch-shaped.
    mask: Bool[Array, "batch ..."]
    observation: Float[Array, "batch ..."]


def _check_mask(mask, observation, y0) -> _Known | None:
    if mask is None and observation is None:
        return None
    if mask is None or observation is None:
        raise ValueError("Pass both `mask` and `observation` for inpainting, or neither.")
    mask = jnp.asarray(mask)
    observation = jnp.asarray(observation)
    shape, event = y0.shape, y0.shape[1:]
    if mask.shape not in (shape, event):
        raise ValueError(
            f"`mask` must have the event shape {event} or the shape of `y0` {shape}, "
            f"got {mask.shape}."
        )
    if mask.dtype != jnp.bool_:
        raise ValueError(f"`mask` must be boolean (True = known), got {mask.dtype}.")
    if observation.shape not in (shape, event):
        raise ValueError(
            f"`observation` must have the event shape {event} or the shape of `y0` "
            f"{shape}, got {observation.shape}."
        )
    return _Known(
        jnp.broadcast_to(mask, shape), jnp.broadcast_to(observation.astype(y0.dtype), shape)
    )


def _check_ladder_on(sde, *args, ladder=None, **kwargs):
    # Before the trace: the ladder's values, and its times against the SDE's range.
    if ladder is not None and isinstance(sde, AbstractSDE):
        ladder_times(sde, ladder)


@boundary_jit(positive=("step_size",), check=_check_ladder_on)
def annealed_langevin(
    sde: AbstractSDE,
    model: AbstractPrediction,
    y0: Float[Array, "batch ..."],
    *,
    ladder: AbstractGrid | Float[Array, " L"],
    step_size: float | Float[Array, ""],
    steps_per_level: int,
    mask: Bool[Array, "..."] | None = None,
    observation: Float[Array, "..."] | None = None,
    denoise: bool = False,
    save_every: int | None = None,
    throw: bool = True,
    key: Key,
) -> LangevinResult:
    r"""Annealed Langevin dynamics (Song & Ermon 2019, arXiv:1907.05600, Algorithm 1).

    For each level $i = 1, \dots, L$ of the ladder (times $t_1 > \dots > t_L$), run
    `steps_per_level` $= T$ steps of Langevin dynamics on the noisy marginal
    $p_{t_i}$ with step $\alpha_i = \epsilon\,\sigma_{t_i}^2/\sigma_{t_L}^2$:
    $x \leftarrow x + \tfrac{\alpha_i}{2} s_{\theta}(t_i, x) + \sqrt{\alpha_i}\,z$. With
    $\alpha_i \propto \sigma_i^2$ the signal-to-noise ratio of the update is the same at
    every level (sec. 4.3). Each level is Euler–Maruyama on
    `scoreflow.sde.langevin_terms` over a `GridBrownianPath` (`langevin_step`'s
    arithmetic); $\sigma_t$ is the SDE's marginal standard deviation (NCSN's $\sigma_i$
    for a variance-exploding SDE).

    **Inpainting** (Algorithm 2 of the paper's appendix B.3): given a boolean `mask`
    (True = known) and an `observation` $y$, at the start of level $i$ draw
    $\tilde y = \alpha_{t_i} y + \sigma_{t_i} z$ (the observation noised to level $i$,
    $y + \sigma_i z$ for VE) and keep the known coordinates equal to $\tilde y$ after
    every step while only the unknown ones move. Here the Langevin SDE is solved with
    drift and noise masked to the unknown coordinates (`langevin_terms(..., free=...)`),
    which is exactly the algorithm's
    "step all, then overwrite the known ones". At the end the known coordinates are
    set to $y$ exactly.

    Algorithm 2 is approximate: at level $i$ the free coordinates relax towards
    $p_{t_i}(x_u \mid x_k = \tilde y)$, conditioned on a *noisy* observation, and a
    level relaxes only directions of scale about $\sigma_i$ (the step is
    $\propto\sigma_i^2$). Where the exact conditional $p(x_u \mid y)$ has modes
    separated by a barrier, their weights freeze at a level where $\tilde y$ is still
    noisy and stay biased (the tutorial measures this on an 8-Gaussian mixture); where
    its mass is connected, the samples follow it (tested against
    `scoreflow.analytic.conditional`).

    This is NCSN's sampler; `scoreflow.models.NCSN` calls it.

    Args:
        sde: the SDE the model was trained under (a `VESDE` for NCSN's geometric
            ladder).
        model: what predicts the noisy data (a `scoreflow.sde.AbstractPrediction`), read
            as a score; it acts on one example and is vmapped over the batch.
        y0: `(batch, *event)` initial states (NCSN: uniform noise).
        ladder: a scoreflow grid, or strictly decreasing noise levels
            $\sigma_1 > \dots > \sigma_L$ (see `ladder_times`).
        step_size: $\epsilon > 0$, the step at the last level (a JAX scalar reuses one
            compilation across values; a Python float is static).
        steps_per_level: $T \geq 1$.
        mask: boolean, event-shaped or `y0`-shaped; True marks known coordinates.
        observation: the known values $y$, same shape rules as `mask` (the unknown
            entries are ignored).
        denoise: finish with one Tweedie denoising step $E[x_0 \mid x_{t_L}]$
            (Jolicoeur-Martineau et al. 2021, arXiv:2009.05475; used by NCSNv2) instead of
            returning the last Langevin state. One more network call.
        save_every: keep every `save_every`-th Langevin state of every level (it must
            divide `steps_per_level`; `steps_per_level` keeps the end of each level):
            `trajectory` is `(L * steps_per_level / save_every, batch, *event)` and
            `ts` the level time of each saved state.
        throw: raise if a level's solve fails or the samples are not finite; with
            `False`, `result` is the first failing level's diffrax result code (or
            `diffrax.RESULTS.nonfinite`).
        key: PRNG key.

    Returns:
        A `LangevinResult`; `nfe` = $L\,T$ (+1 with `denoise`); `stats` holds diffrax's
        statistics per level, as `(L,)` arrays.

    Raises:
        ValueError: on a non-positive `step_size`, a ladder that is not strictly
            decreasing, a `mask` or `observation` of the wrong shape, a `model` that does
            not say what it predicts, or a bad `steps_per_level` / `save_every`.
    """
    check_model(sde, model)
    _checks.batch_array(y0, "y0")
    _checks.float_dtype(y0.dtype, "y0")
    _checks.positive_int(steps_per_level, "steps_per_level")
    _checks.positive(step_size, "step_size")
    check_save_every(save_every, steps_per_level, "steps_per_level")
    known = _check_mask(mask, observation, y0)
    dtype = y0.dtype
    times = ladder_times(sde, ladder).astype(dtype)
    num_levels = times.shape[0]
    score = Batched(model.score)
    _, sigmas = sde.marginal(times)
    steps = jnp.asarray(step_size, dtype) * (sigmas / sigmas[-1]) ** 2
    free = None if known is None else (~known.mask).astype(dtype)
    unit = jnp.arange(steps_per_level + 1, dtype=dtype)

    def level(x, inputs):
        i, t, alpha_step = inputs
        k_level = jr.fold_in(key, i)
        k_obs, k_path = jr.split(k_level)
        if known is not None:
            a_t, s_t = sde.marginal(t)
            noisy_obs = a_t * known.observation + s_t * jr.normal(k_obs, x.shape, dtype)
            x = jnp.where(known.mask, noisy_obs, x)
        ts = alpha_step * unit
        path = GridBrownianPath(ts, x.shape, key=k_path, dtype=dtype)
        saveat = (
            dfx.SaveAt(t1=True)
            if save_every is None
            else dfx.SaveAt(ts=ts[save_every::save_every], t1=True)
        )
        sol = dfx.diffeqsolve(
            langevin_terms(_AtLevel(score, t), path, free=free),
            dfx.Euler(),
            ts[0],
            ts[-1],
            None,
            x,
            stepsize_controller=dfx.StepTo(ts),
            saveat=saveat,
            max_steps=steps_per_level,
            throw=throw,
        )
        ys = sol.ys
        assert ys is not None  # saved: SaveAt(t1=True) at least
        saved = None if save_every is None else ys[:-1]
        return ys[-1], (saved, sol.stats, sol.result)

    idx = jnp.arange(num_levels)
    x, (traj, stats, results) = jax.lax.scan(level, y0, (idx, times, steps))
    if denoise:
        x = Batched(model.x0)(times[-1], x)
    if known is not None:
        x = jnp.where(known.mask, known.observation, x)
    failed = results != dfx.RESULTS.successful
    first_failure = jax.tree.map(lambda v: v[jnp.argmax(failed)], results)
    result = dfx.RESULTS.where(jnp.any(failed), first_failure, dfx.RESULTS.successful)
    result, x = finite_result(result, x, throw)
    num_steps = jnp.asarray(num_levels * steps_per_level)
    ts_saved = None
    if save_every is not None:
        per_level = steps_per_level // save_every
        traj = jnp.reshape(jnp.asarray(traj), (num_levels * per_level, *y0.shape))
        ts_saved = jnp.repeat(times, per_level)
    return LangevinResult(
        samples=x,
        num_steps=num_steps,
        nfe=num_steps + int(denoise),
        stats=stats,
        result=result,
        ts=ts_saved,
        trajectory=traj,
    )
