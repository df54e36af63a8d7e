r"""Losses of energy-based models: contrastive divergence and noise-contrastive estimation."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .. import _checks
from .._custom_types import Scalar


def _energies(energy, x, name):
    e = jax.vmap(energy)(x)
    if e.shape != (x.shape[0],):
        raise ValueError(
            f"`energy` must map one example to a scalar; on `{name}` it returned shape "
            f"{e.shape[1:]} per example."
        )
    return e


def contrastive_divergence(
    energy: Callable[[Array], Array],
    x: Float[Array, "batch ..."],
    negatives: Float[Array, "chains ..."],
    *,
    energy_penalty: float = 0.0,
) -> Scalar:
    r"""The contrastive-divergence surrogate of an energy-based model's likelihood.

    For $p_\theta(x) = e^{-E_{\theta}(x)}/Z_\theta$ the gradient of the negative
    log-likelihood is $E_{\rm data}[\nabla_\theta E_{\theta}] - E_{p_\theta}[\nabla_\theta
    E_{\theta}]$ (the data term minus the model term). With `negatives` drawn from (an
    approximation of) the model, the gradient of

    $$\frac1n\sum_i E_{\theta}(x_i) - \frac1m\sum_j E_{\theta}(\mathrm{sg}(\tilde x_j))
    + \alpha\Big(\frac1n\sum_i E_{\theta}(x_i)^2 + \frac1m\sum_j E_{\theta}(\tilde x_j)^2\Big)$$

    is that estimate: contrastive divergence (Hinton 2002) when the negatives are short
    chains started at the data, persistent CD (Tieleman 2008) when they continue from
    earlier steps, and the short-run replay-buffer training of Du & Mordatch 2019
    (arXiv:1903.08689, sec. 3.2, with the energy-magnitude penalty $\alpha$ of their
    eq. 3). The negatives are stopped: no gradient flows through the chains. The value
    itself is not a likelihood and can be negative.

    Args:
        energy: $E_{\theta}$ on one example, `x -> scalar`.
        x: `(batch, *event)` data.
        negatives: `(chains, *event)` samples of the model.
        energy_penalty: $\alpha \ge 0$, which keeps the energies from drifting to large
            magnitudes (a common cause of divergence).

    Returns:
        The scalar loss.
    """
    _checks.batch_array(x, "x")
    _checks.batch_array(negatives, "negatives")
    if negatives.shape[1:] != x.shape[1:]:
        raise ValueError(
            f"`negatives` must have the event shape of `x` {x.shape[1:]}, got "
            f"{negatives.shape[1:]}."
        )
    _checks.nonnegative(energy_penalty, "energy_penalty")
    e_pos = _energies(energy, x, "x")
    e_neg = _energies(energy, jax.lax.stop_gradient(negatives), "negatives")
    loss = jnp.mean(e_pos) - jnp.mean(e_neg)
    if energy_penalty:
        loss = loss + energy_penalty * (jnp.mean(e_pos**2) + jnp.mean(e_neg**2))
    return loss


def noise_contrastive_estimation(
    log_model: Callable[[Array], Array],
    log_noise: Callable[[Array], Array],
    x: Float[Array, "batch ..."],
    noise: Float[Array, "num_noise ..."],
) -> Scalar:
    r"""Noise-contrastive estimation (Gutmann & Hyvärinen 2010; JMLR 13, 2012, eq. 8).

    Logistic regression of the data `x` against samples `noise` of a known density
    $p_n$, with the log-odds $G(u) = \log p_m(u) - \log p_n(u)$ of the model
    $\log p_m = -E_{\theta} - c$, whose normaliser $c$ is a parameter like any other. With
    $\nu = $ `len(noise) / len(x)` and $h(u) = \sigma(G(u) - \log\nu)$ the loss is

    $$-\frac1n\Big[\sum_i \log h(x_i) + \sum_j \log(1 - h(y_j))\Big],$$

    whose minimiser over $(\theta, c)$ is the data density with $c = \log Z_\theta$
    exactly, when the family contains it (Gutmann & Hyvärinen 2012, Theorem 2).

    Args:
        log_model: $\log p_m$ on one example, `u -> scalar` (normaliser included).
        log_noise: $\log p_n$ on one example.
        x: `(batch, *event)` data.
        noise: `(num_noise, *event)` samples of $p_n$.

    Returns:
        The scalar loss (nats per data point).
    """
    _checks.batch_array(x, "x")
    _checks.batch_array(noise, "noise")
    if noise.shape[1:] != x.shape[1:]:
        raise ValueError(
            f"`noise` must have the event shape of `x` {x.shape[1:]}, got {noise.shape[1:]}."
        )
    n, m = x.shape[0], noise.shape[0]
    log_nu = jnp.log(jnp.asarray(m / n, x.dtype))
    noise = jax.lax.stop_gradient(noise)

    def log_odds(u, name):
        g = jax.vmap(log_model)(u) - jax.vmap(log_noise)(u)
        if g.shape != (u.shape[0],):
            raise ValueError(
                f"`log_model` and `log_noise` must map one example to a scalar; on "
                f"`{name}` they gave shape {g.shape[1:]} per example."
            )
        return g - log_nu

    pos = jax.nn.log_sigmoid(log_odds(x, "x"))
    neg = jax.nn.log_sigmoid(-log_odds(noise, "noise"))
    return -(jnp.sum(pos) + jnp.sum(neg)) / n
