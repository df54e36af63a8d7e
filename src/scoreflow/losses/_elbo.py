r"""The pieces of evidence lower bounds: the Gaussian KL and the importance-weighted bound."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float

from .. import _checks
from .._custom_types import Key


def gaussian_kl(
    mean: Float[Array, "*batch d"],
    log_var: Float[Array, "*batch d"],
    prior_mean: Float[Array, "*batch d"] | None = None,
    prior_log_var: Float[Array, "*batch d"] | None = None,
) -> Float[Array, "*batch"]:
    r"""The KL between diagonal Gaussians, summed on the last axis.

    $\mathrm{KL}(N(\mu, \mathrm{diag}\,e^{v}) \,\|\, N(m, \mathrm{diag}\,e^{w})) =
    \tfrac12\sum_i \big(w_i - v_i + (e^{v_i} + (\mu_i - m_i)^2)e^{-w_i} - 1\big)$, the
    analytic KL of the VAE's ELBO (Kingma & Welling 2014, arXiv:1312.6114, appendix B,
    with the prior $N(0, I)$ when `prior_mean` and `prior_log_var` are `None`) and of
    the hierarchical VAE's conditional layers.

    Returns:
        The KL in nats, one per leading index.
    """
    m = jnp.zeros_like(mean) if prior_mean is None else prior_mean
    w = jnp.zeros_like(log_var) if prior_log_var is None else prior_log_var
    return 0.5 * jnp.sum(w - log_var + (jnp.exp(log_var) + (mean - m) ** 2) * jnp.exp(-w) - 1, -1)


def iwae_bound(
    log_weight: Callable[..., Array],
    x: Array,
    *,
    num_samples: int,
    key: Key,
) -> Float[Array, " batch"]:
    r"""The $K$-sample importance-weighted bound $\mathcal{L}_K$ per example (a training objective).

    $\mathcal{L}_K(x) = \log \frac1K\sum_{k=1}^K w_k$, $w_k = p(x, z_k)/q(z_k \mid x)$,
    $z_k \sim q(\cdot \mid x)$ reparameterised (Burda et al. 2016, "Importance Weighted
    Autoencoders", arXiv:1509.00519, eq. 8); $\mathcal{L}_1$ is the ELBO and
    $\mathcal{L}_K \le \mathcal{L}_{K+1} \le \log p(x)$ in expectation (their Theorem 1).
    Differentiating the log-mean-exp gives their gradient estimator (eq. 14),
    $\sum_k \tilde w_k \nabla\log w_k$ with the normalised weights $\tilde w_k$ as
    coefficients: the weights must *not* be treated as constants before the log-mean-exp
    (that would drop the $\tilde w_k$ and give the ELBO's gradient of the mean), and no
    stop-gradient is needed because automatic differentiation of this expression is
    already that estimator. Every draw is taken at once (memory $K \times$ batch);
    `scoreflow.metrics.importance_log_likelihood` is the chunked estimate for large $K$.

    Args:
        log_weight: `(x, *, key) -> (batch,)`, one reparameterised draw of $z$ per
            example and its $\log p(x, z) - \log q(z \mid x)$.
        x: `(batch, ...)` data, passed to `log_weight` as is.
        num_samples: $K \ge 1$.
        key: PRNG key; draw $k$ uses `split(key, K)[k]`.

    Returns:
        `(batch,)` bounds in nats.

    Raises:
        ValueError: on `num_samples` < 1, or a `log_weight` that does not return
            `(batch,)`.
    """
    _checks.positive_int(num_samples, "num_samples")
    _checks.key(key)
    x = jnp.asarray(x)
    lw = jax.vmap(lambda k: log_weight(x, key=k))(jr.split(key, num_samples))
    if lw.shape != (num_samples, x.shape[0]):
        raise ValueError(f"`log_weight` must return shape ({x.shape[0]},), got {lw.shape[1:]}.")
    return jax.nn.logsumexp(lw, axis=0) - jnp.log(jnp.asarray(num_samples, lw.dtype))
