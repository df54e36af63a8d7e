from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float


class LogNoiseLevel(eqx.Module):
    r"""$t \mapsto \log(\sigma_t/\alpha_t) = -\lambda_t$, a network's noise conditioning.

    For VE and EDM SDEs $t$ spans orders of magnitude in $\sigma$; embedding the log
    noise level keeps the network's input $O(1)$ (Song et al. 2021 condition NCSN++ on
    $\log\sigma$; EDM's $c_{\rm noise} = \frac14\ln\sigma$). Pass it as
    `time_transform` of `TimeMLP` or `UNet`.

    Args:
        sde: any object with `marginal(t) -> (alpha, sigma)`.
    """

    sde: Any

    def __call__(self, t: Float[Array, ""]) -> Float[Array, ""]:
        alpha, sigma = self.sde.marginal(t)
        return (jnp.log(sigma) - jnp.log(alpha)).astype(jnp.asarray(t).dtype)


class ScaledScore(eqx.Module):
    r"""NCSNv2's output scaling $s_{\theta}(\sigma, x) = F(\log\sigma, x)/\sigma$.

    Song & Ermon 2020 (arXiv:2006.09011, technique 3): the score norm grows as
    $1/\sigma$, so the raw network only predicts a unit-scale direction.

    Args:
        net: `(c, x) -> array`, called with $c = \log\sigma$.
    """

    net: Callable[..., Array]

    def __call__(self, sigma: Float[Array, ""], x: Float[Array, "..."]) -> Float[Array, "..."]:
        sigma = jnp.asarray(sigma).astype(x.dtype)
        return self.net(jnp.log(sigma), x) / sigma
