r"""Asymptotically exact inpainting: the twisted diffusion sampler (sequential Monte Carlo).

Wu et al. 2023, "Practical and asymptotically exact conditional sampling in diffusion
models" (arXiv:2306.17775, Algorithm 1). Particles follow the model's reverse-time
chain, proposed with the twisted (posterior-sampling) prediction and reweighted so that
the weighted particles target the model's own chain conditioned on the observation; the
approximation of $p(y \mid x_t)$ only affects the variance of the weights, not the
limit. Resampling couples the particles, which a diffrax solve of independent samples
does not express, so this is a `jax.lax.scan` over the grid rather than a diffrax solver.
"""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array

from .. import _checks
from .._custom_types import Key
from ..sde import convert
from ..solve import AbstractGrid
from ..solve._grids._grids import check_grid, grid_times
from ..solve._shared._result import finite_result
from ._common import shift
from ._inpaint import PosteriorSampling


class SMCResult(eqx.Module):
    r"""What `twisted_smc` returns.

    Attributes:
        samples: `(num_particles, *event)` equally weighted particles after the final
            resampling, the known coordinates set to the observation.
        log_evidence: the estimate of $\log p(y)$ under the model's chain (nats).
        ess: `(num_steps,)` effective sample size after each step's reweighting.
        num_resampled: how many steps resampled.
        result: `diffrax.RESULTS.successful`, or `diffrax.RESULTS.nonfinite` where the
            particles or the evidence are not finite (with `throw=False`; else it raises).
    """

    samples: Array
    log_evidence: Array
    ess: Array
    num_resampled: Array
    result: dfx.RESULTS


def _systematic(key, log_w):
    n = log_w.shape[0]
    w = jax.nn.softmax(log_w)
    u = (jr.uniform(key, (), log_w.dtype) + jnp.arange(n, dtype=log_w.dtype)) / n
    return jnp.clip(jnp.searchsorted(jnp.cumsum(w), u), 0, n - 1).astype(jnp.int32)


def _ess(log_w):
    w = jax.nn.softmax(log_w)
    return 1.0 / jnp.sum(w**2)


def twisted_smc(
    posterior: PosteriorSampling,
    num_particles: int,
    *,
    grid: AbstractGrid,
    ess_threshold: float = 0.5,
    dtype=None,
    throw: bool = True,
    key: Key,
) -> SMCResult:
    r"""Sample $p(x_u \mid x_k = y)$ by the twisted diffusion sampler.

    The chain is the exponential-integrator ancestral step of any linear SDE (DDPM's
    posterior step $\eta = 1$, `scoreflow.solve.StochasticDDIM(1)`): from $(t, x)$ to
    $s < t$, $x_s \sim N(\alpha_s\hat x_0 + \sqrt{\sigma_s^2 - \rho^2}\,\hat\varepsilon,
    \rho^2 I)$ with $\rho^2 = \sigma_s^2(1 - \alpha_t^2\sigma_s^2/(\alpha_s^2\sigma_t^2))$.
    The proposal uses the twisted prediction (`posterior`, whose score adds
    $\nabla\log\tilde p(y \mid x_t)$), and each particle's weight is multiplied by
    $p(x_s \mid x_t)\,\tilde p(y \mid x_s) / (q(x_s \mid x_t)\,\tilde p(y \mid x_t))$
    (eq. 10 of Wu et al.), starting from $\tilde p(y \mid x_T)$. The last step draws the
    unknown coordinates from the untwisted step and sets the known ones to $y$, with
    weight the step's density at $y$ over $\tilde p(y \mid x_t)$ (or, with a positive
    `posterior.noise_std`, draws every coordinate and weighs by
    $N(y; x_k, \sigma_y^2)$): the weighted particles then target the chain's own
    conditional, whatever $\tilde p$ is, as `num_particles` grows. Particles are
    resampled (systematic resampling) when the effective sample size falls below
    `ess_threshold * num_particles`, and once at the end. The twist acts at every level
    (`posterior.max_noise_level` is not used: the weights correct any twist).

    Args:
        posterior: the twist: a `PosteriorSampling` of the unconditional model, mask and
            observation.
        num_particles: $N \ge 2$.
        grid: the time grid of the chain (e.g. `scoreflow.solve.UniformGrid(100)`).
        ess_threshold: resample when ESS $<$ this share of $N$, in $(0, 1]$.
        dtype: floating dtype of the particles (default: the observation's).
        throw: raise if the particles or the evidence are not finite (else inspect
            `result`).
        key: PRNG key.

    Returns:
        An `SMCResult`.

    Raises:
        ValueError: on a `posterior` of another kind, $N < 2$, an `ess_threshold` outside
            $(0, 1]$, a grid of another kind or whose times leave `[sde.t_min, sde.T]`,
            a `dtype` other than float32 / float64, or a `key` that is not one PRNG key.
    """
    if not isinstance(posterior, PosteriorSampling):
        raise ValueError(
            "`posterior` must be a `scoreflow.guidance.PosteriorSampling`, got "
            f"{type(posterior).__name__}."
        )
    _checks.positive_int(num_particles, "num_particles", least=2)
    _checks.check(
        0 < ess_threshold <= 1, "ess_threshold", f"must lie in (0, 1], got {ess_threshold}."
    )
    check_grid(grid, posterior.sde)
    if dtype is not None:
        dtype = _checks.float_dtype(dtype)
    _checks.key(key)
    return _twisted_smc(posterior, num_particles, grid, ess_threshold, dtype, throw, key)


@eqx.filter_jit
def _twisted_smc(posterior, num_particles, grid, ess_threshold, dtype, throw, key):
    sde, model = posterior.sde, posterior.model
    dtype = posterior.observation.dtype if dtype is None else dtype
    shape = posterior.mask.shape
    mask = posterior.mask
    y = posterior.observation.astype(dtype)
    own = posterior.parameterisation
    times = grid_times(grid, sde).astype(dtype)

    def evaluate(t, x):
        # The untwisted output, the twist and its gradient, per particle.
        def one(xi):
            out = model(t, xi)
            log_tw, grad = posterior.twist(t, xi)
            return out, log_tw, shift(sde, t, xi, out, grad, own)

        return jax.vmap(one)(x)

    def step_moments(t, s, x, out):
        # Mean and variance of the ancestral step from (t, x) to s, per particle.
        alpha_t, sigma_t = sde.marginal(t)
        alpha_s, sigma_s = sde.marginal(s)
        rho2 = sigma_s**2 * (1 - (alpha_t * sigma_s) ** 2 / ((alpha_s * sigma_t) ** 2))
        x0 = jax.vmap(lambda xi, o: convert(sde, t, xi, o, source=own, target="x0"))(x, out)
        eps = jax.vmap(lambda xi, o: convert(sde, t, xi, o, source=own, target="eps"))(x, out)
        mean = alpha_s * x0 + jnp.sqrt(jnp.maximum(sigma_s**2 - rho2, 0.0)) * eps
        return mean, rho2

    def log_normal(v, mean, var, where=None):
        terms = -0.5 * ((v - mean) ** 2 / var + jnp.log(2 * jnp.pi * var))
        if where is not None:
            terms = jnp.where(where, terms, 0.0)
        return jnp.sum(terms.reshape(terms.shape[0], -1), -1)

    k_init, k_steps = jr.split(key)
    x = sde.prior_sample((num_particles, *shape), dtype=dtype, key=k_init)
    out, log_tw, guided = evaluate(times[0], x)
    log_w = log_tw
    log_z = jnp.zeros((), dtype)
    num_steps = times.shape[0] - 1

    def body(carry, inputs):
        x, out, log_tw, guided, log_w, log_z, count = carry
        i, k = inputs
        t, s = times[i], times[i + 1]
        k_prop, k_res = jr.split(k)
        mean_p, rho2 = step_moments(t, s, x, out)
        mean_q, _ = step_moments(t, s, x, guided)
        z = jr.normal(k_prop, x.shape, dtype)
        x_new = mean_q + jnp.sqrt(rho2) * z
        out_new, log_tw_new, guided_new = evaluate(s, x_new)
        log_w = log_w + (
            log_normal(x_new, mean_p, rho2) - log_normal(x_new, mean_q, rho2) + log_tw_new - log_tw
        )
        ess = _ess(log_w)
        resample = ess < ess_threshold * num_particles
        idx = jnp.where(
            resample, _systematic(k_res, log_w), jnp.arange(num_particles, dtype=jnp.int32)
        )
        norm = jax.nn.logsumexp(log_w) - jnp.log(num_particles)
        log_z = log_z + jnp.where(resample, norm, 0.0)
        log_w = jnp.where(resample, jnp.zeros_like(log_w), log_w)
        pick = lambda a: a[idx]
        carry = (
            pick(x_new),
            pick(out_new),
            pick(log_tw_new),
            pick(guided_new),
            log_w,
            log_z,
            count + resample.astype(jnp.int32),
        )
        return carry, ess

    keys = jr.split(k_steps, num_steps)
    carry = (x, out, log_tw, guided, log_w, log_z, jnp.zeros((), jnp.int32))
    (x, out, log_tw, guided, log_w, log_z, count), ess = jax.lax.scan(
        body, carry, (jnp.arange(num_steps - 1), keys[:-1])
    )
    # The last step: untwisted, the known coordinates pinned at y (or weighed by the
    # observation noise).
    t, s = times[-2], times[-1]
    mean_p, rho2 = step_moments(t, s, x, out)
    z = jr.normal(keys[-1], x.shape, dtype)
    x_free = mean_p + jnp.sqrt(rho2) * z
    if posterior.noise_std == 0:
        x_last = jnp.where(mask, y, x_free)
        final = log_normal(jnp.broadcast_to(y, x.shape), mean_p, rho2, where=mask)
    else:
        x_last = x_free
        final = log_normal(jnp.broadcast_to(y, x.shape), x_free, posterior.noise_std**2, where=mask)
    log_w = log_w + final - log_tw
    ess = jnp.concatenate([ess, _ess(log_w)[None]])
    log_z = log_z + jax.nn.logsumexp(log_w) - jnp.log(num_particles)
    idx = _systematic(jr.fold_in(keys[-1], 1), log_w)
    samples = posterior.fill(x_last[idx])
    result, (samples, log_z) = finite_result(dfx.RESULTS.successful, (samples, log_z), throw)
    return SMCResult(
        samples=samples, log_evidence=log_z, ess=ess, num_resampled=count, result=result
    )
