from collections.abc import Callable

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float

from .._custom_types import PARAMETERISATIONS, Key, Scalar
from ..sde import AbstractSDE, convert
from ._common import (
    REDUCTIONS,
    TIME_SAMPLINGS,
    WEIGHTINGS,
    check_batch,
    check_choice,
    native_scale,
    reduce_event,
    sample_times,
    score_weight,
    stop,
)


def denoising_score_matching(
    model: Callable[..., Array],
    sde: AbstractSDE,
    x: Float[Array, "batch ..."],
    *,
    parameterisation: str = "eps",
    weighting: str = "sigma2",
    time_sampling: str = "uniform",
    reduce: str = "mean",
    sigma_data: float = 0.5,
    p_mean: float = -1.2,
    p_std: float = 1.2,
    key: Key,
) -> Scalar:
    r"""Denoising score matching (Vincent 2011) for a network in any parameterisation.

    With $t$ drawn by `time_sampling`, $\varepsilon \sim N(0, I)$ and
    $x_t = \alpha_t x_0 + \sigma_t\varepsilon$, the loss is

    $$\mathbb{E}\,\lambda(t)\,\|s_{\theta}(t, x_t) - \nabla\log p(x_t \mid x_0)\|^2,
    \qquad \nabla\log p(x_t\mid x_0) = -\varepsilon/\sigma_t$$

    (Song et al. 2021, arXiv:2011.13456, eq. 7). It is evaluated in the network's own
    parameterisation: the target $\varepsilon$ is converted with
    `scoreflow.sde.convert` and the weight is rescaled by the conversion's slope, so
    `parameterisation="eps"` with `weighting="sigma2"` is exactly
    $\|\hat\varepsilon - \varepsilon\|^2$ (Ho et al. 2020's $L_{\rm simple}$ in
    continuous time), without a division by $\sigma_t$.

    Weightings $\lambda(t)$ (in score space):

    - `"sigma2"`: $\sigma_t^2$ (Song et al. 2021, sec. 3.3);
    - `"likelihood"`: $g(t)^2$, which makes the loss a bound on the negative
      log-likelihood (Song et al. 2021b, arXiv:2101.09258, Thm. 1); pair it with
      `time_sampling="importance"` to reduce its variance;
    - `"edm"`: Karras et al. 2022 (arXiv:2206.00364, Table 1),
      $(\tilde\sigma^2 + \sigma_{\rm data}^2) / (\tilde\sigma\sigma_{\rm data})^2$ on the
      $x_0$ error, $\tilde\sigma = \sigma_t/\alpha_t$;
    - `"unit"`: 1.

    Time sampling: `"uniform"` on $[t_{\min}, T]$; `"importance"` draws the log-SNR
    uniformly and reweights so the objective is still the uniform-time one (unbiased);
    `"lognormal"` is EDM's $\ln\tilde\sigma \sim N(P_{\rm mean}, P_{\rm std}^2)$, which
    defines the objective (no reweighting).

    Args:
        model: per-example network `(t, x) -> array` (vmapped over the batch here).
        sde: the noising SDE.
        x: `(batch, *event)` clean data.
        parameterisation: what `model` outputs: `"score"`, `"eps"`, `"x0"` or `"v"`.
        weighting: `"sigma2"`, `"likelihood"`, `"edm"` or `"unit"`.
        time_sampling: `"uniform"`, `"importance"` or `"lognormal"`.
        reduce: `"mean"` or `"sum"` over the event axes (then mean over the batch).
        sigma_data: data standard deviation of the EDM weighting.
        p_mean: EDM's $P_{\rm mean}$ for `"lognormal"`.
        p_std: EDM's $P_{\rm std}$ for `"lognormal"`.
        key: PRNG key.

    Returns:
        The scalar loss.

    Raises:
        ValueError: on an unknown choice or a batch without a batch axis.
    """
    check_choice(parameterisation, PARAMETERISATIONS, "parameterisation")
    check_choice(weighting, WEIGHTINGS, "weighting")
    check_choice(time_sampling, TIME_SAMPLINGS, "time_sampling")
    check_choice(reduce, REDUCTIONS, "reduce")
    check_batch(x)
    sde = stop(sde)
    n, dtype = x.shape[0], x.dtype
    k_t, k_eps = jr.split(key)
    t, iw = sample_times(sde, n, time_sampling, p_mean, p_std, dtype, key=k_t)
    eps = jr.normal(k_eps, x.shape, dtype)

    def one(t, x0, e):
        alpha, sigma = sde.marginal(t)
        xt = (alpha * x0 + sigma * e).astype(dtype)
        out = model(t, xt)
        if out.shape != xt.shape:
            raise ValueError(f"`model` must return the input's shape {xt.shape}, got {out.shape}.")
        target = convert(sde, t, xt, e, source="eps", target=parameterisation)
        scale = native_scale(sde, t, xt, parameterisation)
        w = score_weight(sde, t, weighting, sigma_data)
        return (w * (scale * (out - target)) ** 2).astype(dtype)

    per = jax.vmap(one)(t, x, eps)
    return jnp.mean(iw * reduce_event(per, reduce))


def ddpm_simple_loss(
    model: Callable[..., Array],
    alpha_bars: Float[Array, " N"],
    x: Float[Array, "batch ..."],
    *,
    reduce: str = "mean",
    key: Key,
) -> Scalar:
    r"""DDPM's $L_{\rm simple}$ (Ho et al. 2020, arXiv:2006.11239, eq. 14).

    $i \sim U\{1,\dots,N\}$, $x_i = \sqrt{\bar\alpha_i}x_0 + \sqrt{1-\bar\alpha_i}
    \varepsilon$, loss $\|\varepsilon - \varepsilon_\theta(i/N, x_i)\|^2$: the
    discrete-time case of `denoising_score_matching` with the eps parameterisation and
    the $\sigma^2$ weighting. The network sees the step as the time $t_i = i/N \in (0, 1]$,
    matching `VPSDE` with `beta_min = N beta_1`, `beta_max = N beta_N`.

    Args:
        model: per-example eps network `(t, x) -> array`.
        alpha_bars: `(N,)` cumulative products $\bar\alpha_i = \prod_{j\le i}(1-\beta_j)$.
        x: `(batch, *event)` clean data.
        reduce: `"mean"` or `"sum"` over the event axes.
        key: PRNG key.

    Returns:
        The scalar loss.
    """
    check_choice(reduce, REDUCTIONS, "reduce")
    check_batch(x)
    dtype = x.dtype
    alpha_bars = jax.lax.stop_gradient(jnp.asarray(alpha_bars, dtype))
    N = alpha_bars.shape[0]
    k_i, k_eps = jr.split(key)
    i = jr.randint(k_i, (x.shape[0],), 0, N)
    eps = jr.normal(k_eps, x.shape, dtype)

    def one(i, x0, e):
        ab = alpha_bars[i]
        xt = jnp.sqrt(ab) * x0 + jnp.sqrt(1 - ab) * e
        t = ((i + 1) / N).astype(dtype)
        return (model(t, xt) - e) ** 2

    return jnp.mean(reduce_event(jax.vmap(one)(i, x, eps), reduce))


def ncsn_loss(
    model: Callable[..., Array],
    sigmas: Float[Array, " L"],
    x: Float[Array, "batch ..."],
    *,
    reduce: str = "mean",
    key: Key,
) -> Scalar:
    r"""Noise-conditional score matching on a ladder (Song & Ermon 2019, arXiv:1907.05600, eq. 6).

    $\sigma \sim U\{\sigma_1,\dots,\sigma_L\}$, $\tilde x = x + \sigma z$, loss
    $\sigma^2\|s_{\theta}(\sigma, \tilde x) + z/\sigma\|^2$ ($\lambda(\sigma) = \sigma^2$).
    The network receives the noise level $\sigma$ as its first argument and predicts
    the score.

    Args:
        model: per-example score network `(sigma, x) -> array`.
        sigmas: `(L,)` noise levels.
        x: `(batch, *event)` clean data.
        reduce: `"mean"` or `"sum"` over the event axes.
        key: PRNG key.

    Returns:
        The scalar loss.
    """
    check_choice(reduce, REDUCTIONS, "reduce")
    check_batch(x)
    dtype = x.dtype
    sigmas = jax.lax.stop_gradient(jnp.asarray(sigmas, dtype))
    k_i, k_z = jr.split(key)
    i = jr.randint(k_i, (x.shape[0],), 0, sigmas.shape[0])
    z = jr.normal(k_z, x.shape, dtype)

    def one(i, x0, z):
        s = sigmas[i]
        return (s * model(s, x0 + s * z) + z) ** 2

    return jnp.mean(reduce_event(jax.vmap(one)(i, x, z), reduce))
