import jax.numpy as jnp

from .._custom_types import ScalarLike, TimeLike, Times
from ._vp import AbstractLinearBetaSDE, _t_from_integrated_beta


class SubVPSDE(AbstractLinearBetaSDE):
    r"""Sub-VP SDE $dx = -\tfrac12\beta x\,dt + \sqrt{\beta(t)(1 - e^{-2B(t)})}\,dW$.

    Song et al. 2021 (arXiv:2011.13456, eq. 29): the same mean as `VPSDE`,
    $\alpha_t = e^{-B/2}$, with the smaller variance $\sigma_t = 1 - e^{-B(t)}$.

    Args:
        beta_min: $\beta(0) \ge 0$.
        beta_max: $\beta(T) > \beta_{\min}$.
        T: final time.
        t_min: time floor.
    """

    beta_min: ScalarLike = 0.1
    beta_max: ScalarLike = 20.0
    T: ScalarLike = 1.0
    t_min: ScalarLike = 1e-3

    def marginal(self, t: TimeLike) -> tuple[Times, Times]:
        B = self.integrated_beta(t)
        return jnp.exp(-0.5 * B), -jnp.expm1(-B)

    def drift_coefficient(self, t: TimeLike) -> Times:
        return -0.5 * self.beta(t)

    def diffusion(self, t: TimeLike) -> Times:
        B = self.integrated_beta(t)
        return jnp.sqrt(self.beta(t) * -jnp.expm1(-2 * B))

    def t_from_log_snr(self, log_snr: TimeLike) -> Times:
        # alpha / sigma = u / (1 - u^2) = r with u = e^{-B/2}; positive root of
        # r u^2 + u - r = 0, in the cancellation-free form 2r / (1 + sqrt(1 + 4r^2)).
        r = jnp.exp(jnp.asarray(log_snr))
        u = 2 * r / (1 + jnp.sqrt(1 + 4 * r**2))
        B = -2 * jnp.log(u)
        return _t_from_integrated_beta(self.beta_min, self.beta_max, B)
