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

from .. import _checks
from .._custom_types import Key
from ..sde import AbstractSDE, Prediction, ScalarNoiseTerm
from ._brownian import GridBrownianPath
from ._grids import AbstractGrid
from ._langevin import (
    LangevinResult,
    _Batched,
    _boundary_jit,
    _check_ladder,
    _check_num,
    _check_state,
)


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
        ValueError: if `ladder` is not a 1-d, positive, strictly decreasing array.
    """
    if isinstance(ladder, AbstractGrid):
        return ladder.times(sde)
    ladder = jnp.asarray(ladder)
    if ladder.ndim != 1 or ladder.shape[0] < 1:
        raise ValueError(f"`ladder` must be a 1-d array of noise levels, got {ladder.shape}.")
    if not jnp.issubdtype(ladder.dtype, jnp.floating):
        raise ValueError(f"`ladder` must be floating point, got {ladder.dtype}.")
    _check_ladder(ladder)
    return sde.t_from_log_snr(-jnp.log(ladder))


class _AtTime(eqx.Module):
    # The score of the fixed level t, masked to the free coordinates.
    score: Callable
    t: Array
    free: Array

    def __call__(self, t, x, args):
        del t
        return 0.5 * self.free * self.score(self.t, x)


class _Masked(eqx.Module):
    free: Array

    def __call__(self, t):
        del t
        return self.free


def _check_mask(mask, observation, x_init):
    if mask is None and observation is None:
        return None, None
    if mask is None or observation is None:
        raise ValueError("Pass both `mask` and `observation` for inpainting, or neither.")
    mask = jnp.asarray(mask)
    observation = jnp.asarray(observation)
    shape, event = x_init.shape, x_init.shape[1:]
    if mask.shape not in (shape, event):
        raise ValueError(
            f"`mask` must have the event shape {event} or the shape of `x_init` {shape}, "
            f"got {mask.shape}."
        )
    if mask.dtype != jnp.bool_:
        raise ValueError(f"`mask` must be boolean (True = known), got {mask.dtype}.")
    if observation.shape not in (shape, event):
        raise ValueError(
            f"`observation` must have the event shape {event} or the shape of `x_init` "
            f"{shape}, got {observation.shape}."
        )
    mask = jnp.broadcast_to(mask, shape)
    observation = jnp.broadcast_to(observation.astype(x_init.dtype), shape)
    return mask, observation


@_boundary_jit(positive=("step_size",), ladder=True)
def annealed_langevin(
    sde: AbstractSDE,
    model: Callable[..., Array],
    x_init: Float[Array, "batch ..."],
    *,
    ladder: AbstractGrid | Float[Array, " L"],
    step_size: float | Float[Array, ""],
    steps_per_level: int,
    parameterisation: str = "score",
    mask: Bool[Array, "..."] | None = None,
    observation: Float[Array, "..."] | None = None,
    denoise: bool = False,
    save_levels: bool = False,
    key: Key,
) -> LangevinResult:
    r"""Annealed Langevin dynamics (Song & Ermon 2019, arXiv:1907.05600, Algorithm 1).

    For each level $i = 1, \dots, L$ of the ladder (times $t_1 > \dots > t_L$), run
    `steps_per_level` $= T$ steps of Langevin dynamics on the noisy marginal
    $p_{t_i}$ with step $\alpha_i = \epsilon\,\sigma_{t_i}^2/\sigma_{t_L}^2$:
    $x \leftarrow x + \tfrac{\alpha_i}{2} s_{\theta}(t_i, x) + \sqrt{\alpha_i}\,z$. With
    $\alpha_i \propto \sigma_i^2$ the signal-to-noise ratio of the update is the same at
    every level (sec. 4.3). Each level is Euler–Maruyama on
    `scoreflow.sde.langevin_terms` over a `GridBrownianPath`; $\sigma_t$ is the SDE's
    marginal standard deviation (NCSN's $\sigma_i$ for a variance-exploding SDE).

    **Inpainting** (Algorithm 2 of the paper's appendix B.3): given a boolean `mask`
    (True = known) and an `observation` $y$, at the start of level $i$ draw
    $\tilde y = \alpha_{t_i} y + \sigma_{t_i} z$ (the observation noised to level $i$,
    $y + \sigma_i z$ for VE) and keep the known coordinates equal to $\tilde y$ after
    every step while only the unknown ones move. Here the Langevin SDE is solved with
    drift and noise masked to the unknown coordinates, which is exactly the algorithm's
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
        model: score network on one example, `(t, x) -> array`; vmapped over the batch.
        x_init: `(batch, *event)` initial states (NCSN: uniform noise).
        ladder: a scoreflow grid, or strictly decreasing noise levels
            $\sigma_1 > \dots > \sigma_L$ (see `ladder_times`).
        step_size: $\epsilon > 0$, the step at the last level (a JAX scalar reuses one
            compilation across values; a Python float is static).
        steps_per_level: $T \geq 1$.
        parameterisation: what `model` predicts (`"score"`, `"eps"`, `"x0"`, `"v"`).
        mask: boolean, event-shaped or `x_init`-shaped; True marks known coordinates.
        observation: the known values $y$, same shape rules as `mask` (the unknown
            entries are ignored).
        denoise: finish with one Tweedie denoising step $E[x_0 \mid x_{t_L}]$
            (Jolicoeur-Martineau et al. 2021, arXiv:2009.05475; used by NCSNv2) instead of
            returning the last Langevin state. One more network call.
        save_levels: keep the state at the end of every level (`trajectory`,
            `(L, batch, *event)`, with `ts` the level times).
        key: PRNG key.

    Returns:
        A `LangevinResult`; `nfe` = $L\,T$ (+1 with `denoise`).

    Raises:
        ValueError: on a non-positive `step_size`, a ladder that is not strictly
            decreasing, a `mask` or `observation` of the wrong shape, or a bad
            `steps_per_level` / `parameterisation`.
    """
    _check_state(x_init, "x_init")
    _check_num(steps_per_level, "steps_per_level")
    _checks.positive(step_size, "step_size")
    mask, observation = _check_mask(mask, observation, x_init)
    dtype = x_init.dtype
    times = ladder_times(sde, ladder).astype(dtype)
    num_levels = times.shape[0]
    prediction = Prediction(sde, model, parameterisation)
    score = _Batched(prediction.score)
    _, sigmas = sde.marginal(times)
    steps = jnp.asarray(step_size, dtype) * (sigmas / sigmas[-1]) ** 2
    free = jnp.ones_like(x_init) if mask is None else (~mask).astype(dtype)
    unit = jnp.arange(steps_per_level + 1, dtype=dtype)

    def level(x, inputs):
        i, t, alpha_step = inputs
        k_level = jr.fold_in(key, i)
        k_obs, k_path = jr.split(k_level)
        if mask is not None:
            a_t, s_t = sde.marginal(t)
            noisy_obs = a_t * observation + s_t * jr.normal(k_obs, x.shape, dtype)
            x = jnp.where(mask, noisy_obs, x)
        ts = alpha_step * unit
        path = GridBrownianPath(ts, x.shape, key=k_path, dtype=dtype)
        terms = dfx.MultiTerm(
            dfx.ODETerm(_AtTime(score, t, free)), ScalarNoiseTerm(_Masked(free), path)
        )
        sol = dfx.diffeqsolve(
            terms,
            dfx.Euler(),
            ts[0],
            ts[-1],
            None,
            x,
            stepsize_controller=dfx.StepTo(ts),
            saveat=dfx.SaveAt(t1=True),
            max_steps=steps_per_level,
        )
        x = sol.ys[-1]
        return x, (x if save_levels else None)

    idx = jnp.arange(num_levels)
    x, traj = jax.lax.scan(level, x_init, (idx, times, steps))
    if denoise:
        x = _Batched(prediction.x0)(times[-1], x)
    if mask is not None:
        x = jnp.where(mask, observation, x)
    num_steps = jnp.asarray(num_levels * steps_per_level)
    return LangevinResult(
        samples=x,
        num_steps=num_steps,
        nfe=num_steps + int(denoise),
        # Each level's solve raises on failure (diffrax's `throw`), so reaching here
        # means every level succeeded.
        result=dfx.RESULTS.successful,
        ts=times if save_levels else None,
        trajectory=traj,
    )
