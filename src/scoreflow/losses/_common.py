"""Shared pieces of the score-matching losses: time sampling, weightings, reductions."""

import jax
import jax.numpy as jnp
import jax.random as jr

from .._custom_types import PARAMETERISATIONS
from ..sde import AbstractSDE, convert

WEIGHTINGS = ("sigma2", "likelihood", "edm", "unit")
TIME_SAMPLINGS = ("uniform", "importance", "lognormal")
REDUCTIONS = ("mean", "sum")


def check_choice(value, choices, name):
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}, got {value!r}.")


def check_batch(x):
    if not isinstance(x, jax.Array) or not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"`x` must be a floating-point JAX array, got {type(x)}.")
    if x.ndim < 2:
        raise ValueError(f"`x` must have shape (batch, *event_shape), got {x.shape}.")


def score_weight(sde: AbstractSDE, t, weighting: str, sigma_data):
    r"""The weight $\lambda(t)$ multiplying $\|s_{\theta} - \nabla\log p\|^2$ (score space)."""
    alpha, sigma = sde.marginal(t)
    if weighting == "sigma2":
        return sigma**2
    if weighting == "likelihood":
        return sde.diffusion(t) ** 2
    if weighting == "edm":
        # EDM weights the x0 error by (s^2 + s_d^2) / (s s_d)^2 with s = sigma / alpha
        # (Karras et al. 2022, Table 1); x0 error = sigma^2 / alpha * score error.
        s = sigma / alpha
        lam = (s**2 + sigma_data**2) / (s * sigma_data) ** 2
        return lam * sigma**4 / alpha**2
    return jnp.ones_like(sigma)


def sample_times(sde: AbstractSDE, n, time_sampling, p_mean, p_std, dtype, *, key):
    r"""Times $t$ and the importance weights that keep the objective uniform in $t$.

    `"importance"` draws $\lambda_t$ (log-SNR) uniformly, i.e. $q(t) \propto g(t)^2 /
    \sigma_t^2 = -2\,d\lambda_t/dt$ (true for every linear SDE), which is the proposal
    of Song et al. 2021b (arXiv:2101.09258, sec. 5.1) for the likelihood weighting. The
    returned weight is $1 / ((T - t_{\min})\,q(t))$.
    """
    t_min = jnp.asarray(sde.t_min, dtype)
    T = jnp.asarray(sde.T, dtype)
    if time_sampling == "uniform":
        t = jr.uniform(key, (n,), dtype, t_min, T)
        return t, jnp.ones((n,), dtype)
    if time_sampling == "importance":
        lam_hi = sde.log_snr(t_min)
        lam_lo = sde.log_snr(T)
        lam = jr.uniform(key, (n,), dtype, lam_lo, lam_hi)
        t = jnp.clip(sde.t_from_log_snr(lam).astype(dtype), t_min, T)
        dlam_dt = jax.vmap(jax.grad(lambda s: sde.log_snr(s)))(t)
        q = -dlam_dt / (lam_hi - lam_lo)
        return t, (1.0 / ((T - t_min) * q)).astype(dtype)
    # EDM's training distribution ln(sigma/alpha) ~ N(P_mean, P_std^2) (Karras et al.
    # 2022, Table 1), mapped to time through the inverse log-SNR; it defines the objective.
    log_noise = p_mean + p_std * jr.normal(key, (n,), dtype)
    t = jnp.clip(sde.t_from_log_snr(-log_noise).astype(dtype), t_min, T)
    return t, jnp.ones((n,), dtype)


def native_scale(sde, t, x, parameterisation):
    r"""$\partial\,\mathrm{score} / \partial\,\mathrm{output}$ of the conversion.

    Conversions are affine in the model output; their slope, taken with `jax.jvp` of
    `scoreflow.sde.convert` (so nothing is re-derived here), maps an error in the
    model's own parameterisation to an error in score space.
    """
    check_choice(parameterisation, PARAMETERISATIONS, "parameterisation")

    def to_score(value):
        return convert(sde, t, x, value, source=parameterisation, target="score")

    return jax.jvp(to_score, (jnp.zeros_like(x),), (jnp.ones_like(x),))[1]


def reduce_event(v, reduce):
    axes = tuple(range(1, v.ndim))
    return jnp.mean(v, axes) if reduce == "mean" else jnp.sum(v, axes)


def stop(tree):
    """Stop gradients into an SDE's (or any pytree's) array hyperparameters."""
    return jax.tree_util.tree_map(
        lambda v: jax.lax.stop_gradient(v) if isinstance(v, jax.Array) else v, tree
    )
