import equinox as eqx
import jax.numpy as jnp

from .. import _checks
from .._custom_types import ScalarLike, TimeLike, Times
from ._base import AbstractSDE


class AbstractLinearBetaSDE(AbstractSDE):
    r"""An SDE driven by a linear schedule: the VP and sub-VP SDEs.

    $\beta(t) = \beta_{\min} + t(\beta_{\max} - \beta_{\min})$ and
    $B(t) = \int_0^t \beta = \beta_{\min} t + \tfrac12(\beta_{\max} - \beta_{\min})t^2$.
    """

    beta_min: eqx.AbstractVar[ScalarLike]
    beta_max: eqx.AbstractVar[ScalarLike]

    def __check_init__(self):
        _checks.scalar(self.beta_min, "beta_min")
        _checks.scalar(self.beta_max, "beta_max")
        _checks.nonnegative(self.beta_min, "beta_min")
        _checks.positive(self.beta_max, "beta_max")
        _checks.less(self.beta_min, self.beta_max, "beta_min", "beta_max")
        _checks.time_floor(self.t_min, self.T)

    def beta(self, t: TimeLike) -> Times:
        return jnp.asarray(
            self.beta_min + jnp.asarray(t) * (jnp.asarray(self.beta_max) - self.beta_min)
        )

    def integrated_beta(self, t: TimeLike) -> Times:
        r"""$B(t) = \int_0^t \beta$."""
        return jnp.asarray(_integrated_beta(self.beta_min, self.beta_max, jnp.asarray(t)))


def _integrated_beta(beta_min, beta_max, t):
    return beta_min * t + 0.5 * (beta_max - beta_min) * t**2


def _t_from_integrated_beta(beta_min, beta_max, B):
    # Root of beta_min t + (beta_max - beta_min) t^2 / 2 = B, written in the
    # cancellation-free form 2B / (beta_min + sqrt(beta_min^2 + 2 dB B)).
    d = beta_max - beta_min
    return 2 * B / (beta_min + jnp.sqrt(beta_min**2 + 2 * d * B))


class VPSDE(AbstractLinearBetaSDE):
    r"""Variance-preserving SDE $dx = -\tfrac12\beta(t)x\,dt + \sqrt{\beta(t)}\,dW$.

    Linear schedule $\beta(t) = \beta_{\min} + t(\beta_{\max} - \beta_{\min})$ (Song et
    al. 2021, arXiv:2011.13456, eq. 11), so $\alpha_t = e^{-B(t)/2}$ and
    $\sigma_t^2 = 1 - e^{-B(t)}$ with $B(t) = \int_0^t \beta$.

    DDPM (Ho et al. 2020) with $N$ discrete betas $\beta_i$ is the Euler discretisation
    of this SDE with $\beta(i/N) = N \beta_i$: DDPM's linear schedule
    $\beta_1 = 10^{-4}, \beta_N = 0.02$, $N = 1000$ is `beta_min=0.1, beta_max=20`.

    Args:
        beta_min: $\beta(0) \ge 0$.
        beta_max: $\beta(T) > \beta_{\min}$.
        T: final time.
        t_min: time floor where sampling stops and likelihoods start (Song et al. use
            $10^{-3}$ for sampling and $10^{-5}$ for likelihoods).
    """

    beta_min: ScalarLike = 0.1
    beta_max: ScalarLike = 20.0
    T: ScalarLike = 1.0
    t_min: ScalarLike = 1e-3

    def marginal(self, t: TimeLike) -> tuple[Times, Times]:
        B = self.integrated_beta(t)
        return jnp.exp(-0.5 * B), jnp.sqrt(-jnp.expm1(-B))

    def log_snr(self, t: TimeLike) -> Times:
        B = self.integrated_beta(t)
        # log(alpha/sigma) = -B/2 - log(1 - e^{-B})/2 = -log(e^B - 1)/2
        return -0.5 * jnp.log(jnp.expm1(B))

    def drift_coefficient(self, t: TimeLike) -> Times:
        return -0.5 * self.beta(t)

    def diffusion(self, t: TimeLike) -> Times:
        return jnp.sqrt(self.beta(t))

    def t_from_log_snr(self, log_snr: TimeLike) -> Times:
        # sigma^2 / alpha^2 = e^B - 1 = e^{-2 lambda}
        B = jnp.logaddexp(0.0, -2 * jnp.asarray(log_snr))
        return _t_from_integrated_beta(self.beta_min, self.beta_max, B)
