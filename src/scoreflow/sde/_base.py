import abc

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float

from .. import _checks
from .._custom_types import Key, ScalarLike, TimeLike, Times


class AbstractSDE(eqx.Module):
    r"""A linear (affine-drift) diffusion $dx = f(t) x\,dt + g(t)\,dW$ on $[0, T]$.

    Data live at $t = 0$ and noise at $t = T$. The perturbation kernel is
    $x_t = \alpha_t x_0 + \sigma_t \varepsilon$ with $\varepsilon \sim N(0, I)$, so that
    $f = d\log\alpha_t / dt$ and $g^2 = d\sigma_t^2/dt - 2 f \sigma_t^2$ (Song et al.
    2021, "Score-Based Generative Modeling through SDEs", arXiv:2011.13456, eq. 5 and
    appendix B). The log signal-to-noise ratio is $\lambda_t = \log(\alpha_t/\sigma_t)$,
    strictly decreasing in $t$.

    Subclasses implement `marginal`, `drift_coefficient`, `diffusion` and
    `t_from_log_snr`; everything else is derived here.
    """

    T: eqx.AbstractVar[ScalarLike]
    t_min: eqx.AbstractVar[ScalarLike]

    @abc.abstractmethod
    def marginal(self, t: TimeLike) -> tuple[Times, Times]:
        r"""Return $(\alpha_t, \sigma_t)$ of the perturbation kernel."""

    @abc.abstractmethod
    def drift_coefficient(self, t: TimeLike) -> Times:
        r"""Return $f(t)$, the drift being $f(t)\,x$."""

    @abc.abstractmethod
    def diffusion(self, t: TimeLike) -> Times:
        r"""Return $g(t)$."""

    @abc.abstractmethod
    def t_from_log_snr(self, log_snr: TimeLike) -> Times:
        r"""Inverse of `log_snr`: the time $t$ with $\lambda_t$ = `log_snr`."""

    def drift(self, t: TimeLike, x: Float[Array, "..."]) -> Float[Array, "..."]:
        r"""Forward drift $f(t)\\,x$."""
        return self.drift_coefficient(t) * x

    def log_snr(self, t: TimeLike) -> Times:
        r"""$\lambda_t = \log(\alpha_t / \sigma_t)$."""
        alpha, sigma = self.marginal(t)
        return jnp.log(alpha) - jnp.log(sigma)

    def prior_std(self) -> Times:
        r"""Standard deviation $\sigma_T$ of the prior $N(0, \sigma_T^2 I)$."""
        return self.marginal(self.T)[1]

    def prior_sample(self, shape: tuple[int, ...], *, dtype=None, key: Key) -> Float[Array, "..."]:
        r"""Draw from the prior $N(0, \sigma_T^2 I)$.

        Raises:
            ValueError: on a `dtype` other than float32 / float64, or a `key` that is
                not one PRNG key.
        """
        dtype = _checks.float_dtype(dtype)
        _checks.key(key)
        return self.prior_std().astype(dtype) * jr.normal(key, shape, dtype)

    def prior_log_prob(self, x: Float[Array, "..."]) -> Times:
        """Log-density of one example under the prior; sums over every axis of `x`.

        `vmap` over a batch axis.
        """
        std = self.prior_std()
        n = x.size
        return -0.5 * jnp.sum((x / std) ** 2) - n * (jnp.log(std) + 0.5 * jnp.log(2 * jnp.pi))
