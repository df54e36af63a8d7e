r"""The options of the score-matching losses: weightings $\lambda(t)$ and time samplings.

Each is a small module, as diffrax passes solvers and controllers, so that one that
carries parameters (EDM's $\sigma_{\rm data}$, the log-normal's mean and spread, a
discrete set of times) carries them itself.
"""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float

from .. import _checks
from .._custom_types import Key
from ..sde import AbstractSDE


class AbstractWeighting(eqx.Module):
    r"""A weight $\lambda(t)$ multiplying $\lVert s_\theta - \nabla\log p\rVert^2$ (score space)."""

    @abc.abstractmethod
    def __call__(self, sde: AbstractSDE, t: Array) -> Array:
        r"""$\lambda(t)$ under `sde`."""


class SigmaSquaredWeighting(AbstractWeighting):
    r"""$\lambda(t) = \sigma_t^2$ (Song et al. 2021, arXiv:2011.13456, sec. 3.3).

    In the eps parameterisation the loss is then exactly $\lVert\hat\varepsilon -
    \varepsilon\rVert^2$: Ho et al. 2020's $L_{\rm simple}$.
    """

    def __call__(self, sde, t):
        return sde.marginal(t)[1] ** 2


class LikelihoodWeighting(AbstractWeighting):
    r"""$\lambda(t) = g(t)^2$: the loss bounds the negative log-likelihood.

    Song et al. 2021b (arXiv:2101.09258, Thm. 1); pair it with `LogSNRUniformTime()`
    to reduce its variance.
    """

    def __call__(self, sde, t):
        return sde.diffusion(t) ** 2


class EDMWeighting(AbstractWeighting):
    r"""Karras et al. 2022 (arXiv:2206.00364, Table 1).

    $(\tilde\sigma^2 + \sigma_{\rm data}^2) / (\tilde\sigma\sigma_{\rm data})^2$ on the
    $x_0$ error, $\tilde\sigma = \sigma_t/\alpha_t$; the $x_0$ error is
    $\sigma_t^2/\alpha_t$ times the score error.

    Args:
        sigma_data: the data's standard deviation $\sigma_{\rm data} > 0$ (pass the
            same value as to `scoreflow.nn.EDMPrecond`).
    """

    sigma_data: float = eqx.field(static=True, default=0.5)

    def __check_init__(self):
        _checks.positive(self.sigma_data, "sigma_data")

    def __call__(self, sde, t):
        alpha, sigma = sde.marginal(t)
        s = sigma / alpha
        lam = (s**2 + self.sigma_data**2) / (s * self.sigma_data) ** 2
        return lam * sigma**4 / alpha**2


class UnitWeighting(AbstractWeighting):
    r"""$\lambda(t) = 1$."""

    def __call__(self, sde, t):
        return jnp.ones_like(sde.marginal(t)[1])


class AbstractTimeSampling(eqx.Module):
    r"""How the times of a score-matching loss are drawn.

    `sample(sde, n, dtype, key=...)` returns `n` times and the importance weights that
    keep the objective the one the sampling defines.
    """

    @abc.abstractmethod
    def sample(
        self, sde: AbstractSDE, n: int, dtype, *, key: Key
    ) -> tuple[Float[Array, " n"], Float[Array, " n"]]:
        """`(times, importance weights)`."""


class UniformTime(AbstractTimeSampling):
    r"""$t \sim U[t_{\min}, T]$, weight 1."""

    def sample(self, sde, n, dtype, *, key):
        t_min = jnp.asarray(sde.t_min, dtype)
        T = jnp.asarray(sde.T, dtype)
        return jr.uniform(key, (n,), dtype, t_min, T), jnp.ones((n,), dtype)


class LowDiscrepancyTime(AbstractTimeSampling):
    r"""Stratified times on $[t_{\min}, T]$: one uniform offset, then evenly spaced, weight 1.

    $u_i = (u_0 + i/n) \bmod 1$ for the $n$ examples of a batch, $u_0 \sim U[0, 1)$, and
    $t_i = t_{\min} + (T - t_{\min}) u_i$: each $t_i$ is marginally uniform, so the
    objective is the uniform-time one, but the batch covers the interval evenly, which
    lowers the variance of its mean (Kingma et al. 2021, "Variational Diffusion Models",
    arXiv:2107.00630, appendix I.1).
    """

    def sample(self, sde, n, dtype, *, key):
        t_min = jnp.asarray(sde.t_min, dtype)
        T = jnp.asarray(sde.T, dtype)
        u0 = jr.uniform(key, (), dtype)
        u = jnp.mod(u0 + jnp.arange(n, dtype=dtype) / n, 1.0)
        return t_min + (T - t_min) * u, jnp.ones((n,), dtype)


class LogSNRUniformTime(AbstractTimeSampling):
    r"""The log-SNR $\lambda_t$ drawn uniformly, reweighted to the uniform-time objective.

    $q(t) \propto g(t)^2/\sigma_t^2 = -2\,d\lambda_t/dt$ (true for every linear SDE):
    the importance proposal of Song et al. 2021b (arXiv:2101.09258, sec. 5.1) for the
    likelihood weighting. The weight $1 / ((T - t_{\min})\,q(t))$ keeps the objective
    unbiased for the uniform-time one.
    """

    def sample(self, sde, n, dtype, *, key):
        t_min = jnp.asarray(sde.t_min, dtype)
        T = jnp.asarray(sde.T, dtype)
        lam_hi = sde.log_snr(t_min)
        lam_lo = sde.log_snr(T)
        lam = jr.uniform(key, (n,), dtype, lam_lo, lam_hi)
        t = jnp.clip(sde.t_from_log_snr(lam).astype(dtype), t_min, T)
        dlam_dt = jax.vmap(jax.grad(lambda s: sde.log_snr(s)))(t)
        q = -dlam_dt / (lam_hi - lam_lo)
        return t, (1.0 / ((T - t_min) * q)).astype(dtype)


class LogNormalTime(AbstractTimeSampling):
    r"""EDM's $\ln(\sigma_t/\alpha_t) \sim N(P_{\rm mean}, P_{\rm std}^2)$ (Karras et al. 2022).

    Table 1 of arXiv:2206.00364, mapped to time through the inverse log-SNR; it defines
    the objective (weight 1).

    Args:
        p_mean: $P_{\rm mean}$.
        p_std: $P_{\rm std} > 0$.
    """

    p_mean: float = eqx.field(static=True, default=-1.2)
    p_std: float = eqx.field(static=True, default=1.2)

    def __check_init__(self):
        _checks.positive(self.p_std, "p_std")

    def sample(self, sde, n, dtype, *, key):
        t_min = jnp.asarray(sde.t_min, dtype)
        T = jnp.asarray(sde.T, dtype)
        log_noise = self.p_mean + self.p_std * jr.normal(key, (n,), dtype)
        t = jnp.clip(sde.t_from_log_snr(-log_noise).astype(dtype), t_min, T)
        return t, jnp.ones((n,), dtype)


class DiscreteTime(AbstractTimeSampling):
    r"""Uniform over a fixed set of times $t_1, \dots, t_N$, weight 1.

    DDPM's training steps $t_i = i/N$ under its `scoreflow.sde.DiscreteVPSDE` (Ho et al.
    2020, Algorithm 1), or the times of NCSN's noise ladder (Song & Ermon 2019, eq. 6):
    denoising score matching with this sampling *is* their losses.

    Args:
        times: `(N,)` times inside $[t_{\min}, T]$.
    """

    times: Float[Array, " N"]

    def __check_init__(self):
        if self.times.ndim != 1 or self.times.shape[0] < 1:
            raise ValueError(f"`times` must be a 1-d array, got shape {self.times.shape}.")
        v = _checks.concrete(self.times)
        if v is not None:
            _checks.check(bool(np.all(np.isfinite(v))), "times", "must be finite.")

    def sample(self, sde, n, dtype, *, key):
        i = jr.randint(key, (n,), 0, self.times.shape[0])
        return jax.lax.stop_gradient(self.times.astype(dtype))[i], jnp.ones((n,), dtype)
