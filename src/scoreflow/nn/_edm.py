from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float


class EDMPrecond(eqx.Module):
    r"""EDM's preconditioning of a raw network into a denoiser (Karras et al. 2022, Table 1).

    $D(x, \tilde\sigma) = c_{\rm skip} \hat x + c_{\rm out} F(c_{\rm in} \hat x,
    c_{\rm noise})$ with $\hat x = x/\alpha_t$, $\tilde\sigma = \sigma_t/\alpha_t$,
    $c_{\rm skip} = \sigma_d^2/(\tilde\sigma^2 + \sigma_d^2)$,
    $c_{\rm out} = \tilde\sigma\sigma_d/\sqrt{\tilde\sigma^2+\sigma_d^2}$,
    $c_{\rm in} = 1/\sqrt{\tilde\sigma^2+\sigma_d^2}$,
    $c_{\rm noise} = \tfrac14\ln\tilde\sigma$. Dividing by $\alpha_t$ makes the wrapper
    valid under any linear SDE, not only EDM's $\alpha = 1$: it predicts $x_0$, so use
    it with `parameterisation="x0"` (and `scoreflow.losses.EDMWeighting(sigma_data)` to get
    EDM's loss).

    Args:
        sde: the SDE whose `marginal(t)` gives $(\alpha_t, \sigma_t)$ (any object
            with that method; typed loosely so `nn` stays below `sde` in the layers).
        net: raw network `F(c_noise, x) -> array`.
        sigma_data: $\sigma_d$, the data's standard deviation (0.5 in EDM).
    """

    sde: Any
    net: Callable[..., Array]
    sigma_data: float = 0.5

    def __call__(self, t: Float[Array, ""], x: Float[Array, "..."]) -> Float[Array, "..."]:
        alpha, sigma = self.sde.marginal(t)
        s = sigma / alpha
        sd = jnp.asarray(self.sigma_data, s.dtype)
        xhat = x / alpha
        norm = jnp.sqrt(s**2 + sd**2)
        c_skip = sd**2 / norm**2
        c_out = s * sd / norm
        c_in = 1 / norm
        c_noise = 0.25 * jnp.log(s)
        F = self.net(c_noise, (c_in * xhat).astype(x.dtype))
        return (c_skip * xhat + c_out * F).astype(x.dtype)
