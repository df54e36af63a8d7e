import jax.numpy as jnp

from .. import _checks
from .._custom_types import ScalarLike, TimeLike, Times
from ._base import AbstractSDE


class VESDE(AbstractSDE):
    r"""Variance-exploding SDE with a geometric noise schedule.

    $dx = \sigma_{\min} r^t \sqrt{2 \log r}\,dW$ with $r = \sigma_{\max}/\sigma_{\min}$
    (Song et al. 2021, arXiv:2011.13456, eq. 9). The exact perturbation kernel of this
    SDE started at $t = 0$ is $\alpha_t = 1$,
    $\sigma_t^2 = \sigma_{\min}^2 (r^{2t} - 1)$, which is what `marginal` returns; the
    reference implementation instead uses $\sigma_{\min} r^t$, which differs only near
    $t = 0$ and makes the marginal disagree with the SDE there.

    NCSN's geometric ladder $\sigma_1 > \dots > \sigma_L$ (Song & Ermon 2019) is this
    schedule sampled at $L$ equally spaced times: $\sigma_i = \sigma(t_i)$.

    Args:
        sigma_min: $\sigma_{\min} > 0$.
        sigma_max: $\sigma_{\max} > \sigma_{\min}$.
        T: final time.
        t_min: time floor.
    """

    sigma_min: ScalarLike = 0.01
    sigma_max: ScalarLike = 50.0
    T: ScalarLike = 1.0
    t_min: ScalarLike = 1e-5

    def __check_init__(self):
        _checks.scalar(self.sigma_min, "sigma_min")
        _checks.scalar(self.sigma_max, "sigma_max")
        _checks.positive(self.sigma_min, "sigma_min")
        _checks.positive(self.sigma_max, "sigma_max")
        _checks.less(self.sigma_min, self.sigma_max, "sigma_min", "sigma_max")
        _checks.time_floor(self.t_min, self.T)

    @property
    def _log_ratio(self):
        return jnp.log(jnp.asarray(self.sigma_max) / self.sigma_min)

    def marginal(self, t: TimeLike) -> tuple[Times, Times]:
        t = jnp.asarray(t)
        var = self.sigma_min**2 * jnp.expm1(2 * t * self._log_ratio)
        return jnp.ones_like(t), jnp.sqrt(var)

    def drift_coefficient(self, t: TimeLike) -> Times:
        return jnp.zeros_like(jnp.asarray(t))

    def diffusion(self, t: TimeLike) -> Times:
        t = jnp.asarray(t)
        return (
            jnp.asarray(self.sigma_min)
            * jnp.exp(t * self._log_ratio)
            * jnp.sqrt(2 * self._log_ratio)
        )

    def t_from_log_snr(self, log_snr: TimeLike) -> Times:
        sigma2 = jnp.exp(-2 * jnp.asarray(log_snr))
        return jnp.log1p(sigma2 / self.sigma_min**2) / (2 * self._log_ratio)


class EDMSDE(AbstractSDE):
    r"""The variance-exploding SDE of Karras et al. 2022 (EDM, arXiv:2206.00364).

    $\sigma(t) = t$, $\alpha = 1$, $dx = \sqrt{2t}\,dW$; its probability-flow ODE is
    $dx/dt = (x - D(x, t)) / t$ (eq. 1 with Table 1's choices). Time *is* the noise
    level, so `T` is $\sigma_{\max}$ and `t_min` is $\sigma_{\min}$.

    Args:
        T: $\sigma_{\max}$ (80 in EDM).
        t_min: $\sigma_{\min}$ (0.002 in EDM).
    """

    T: ScalarLike = 80.0
    t_min: ScalarLike = 0.002

    def __check_init__(self):
        _checks.time_floor(self.t_min, self.T)

    def marginal(self, t: TimeLike) -> tuple[Times, Times]:
        t = jnp.asarray(t)
        return jnp.ones_like(t), t

    def drift_coefficient(self, t: TimeLike) -> Times:
        return jnp.zeros_like(jnp.asarray(t))

    def diffusion(self, t: TimeLike) -> Times:
        return jnp.sqrt(2 * jnp.asarray(t))

    def t_from_log_snr(self, log_snr: TimeLike) -> Times:
        return jnp.exp(-jnp.asarray(log_snr))
