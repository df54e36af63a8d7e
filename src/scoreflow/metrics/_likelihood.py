r"""Likelihood-based figures: KL against an exact density, importance-sampled $\log p(x)$."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float

from .. import _checks
from .._custom_types import Key
from ._estimate import Estimate


def kl_divergence(log_p: Float[ArrayLike, " n"], log_q: Float[ArrayLike, " n"]) -> Estimate:
    r"""$\mathrm{KL}(p \,\|\, q)$ from log-densities at samples of $p$, with its standard error.

    $\mathrm{KL}(p\|q) = E_p[\log p(x) - \log q(x)]$, estimated by the sample mean of
    $\log p(x_i) - \log q(x_i)$ over $x_i \sim p$, with standard error $s/\sqrt{n}$ ($s$
    the sample standard deviation). With $p$ an exact data density (`scoreflow.analytic`)
    and $q$ a model's exact `log_prob`, this is the model's gap to the data; it is
    non-negative in expectation, but a single estimate can be slightly negative.

    Args:
        log_p: `(n,)` $\log p(x_i)$, the exact data log-density at data samples.
        log_q: `(n,)` $\log q(x_i)$, the model's log-density at the same points.

    Returns:
        An `Estimate` in nats. A model that puts zero density at a data point gives
        `inf`, never NaN.

    Raises:
        ValueError: on shapes that differ or are not `(n,)` with $n \ge 2$, or on NaN or
            $+\infty$ log-densities (or $-\infty$ in `log_p`: a data point the data
            density excludes).
    """
    lp, lq = jnp.asarray(log_p), jnp.asarray(log_q)
    if lp.ndim != 1 or lp.shape != lq.shape or lp.shape[0] < 2:
        raise ValueError(
            f"`log_p` and `log_q` must both have shape (n,) with n >= 2, got {lp.shape} "
            f"and {lq.shape}."
        )
    dtype = jnp.result_type(lp.dtype, lq.dtype, float)
    return _kl(lp.astype(dtype), lq.astype(dtype))


@eqx.filter_jit
def _kl(lp, lq):
    dtype = lp.dtype
    lp = eqx.error_if(lp, ~jnp.all(jnp.isfinite(lp)), "`log_p` must be finite.")
    lq = eqx.error_if(
        lq,
        jnp.any(jnp.isnan(lq) | (lq == jnp.inf)),
        "`log_q` must not be NaN or +inf.",
    )
    gap = lp - lq
    n = gap.shape[0]
    return Estimate(value=gap.mean(), stderr=gap.std(ddof=1) / jnp.sqrt(jnp.asarray(n, dtype)))


class ImportanceEstimate(eqx.Module):
    r"""What `importance_log_likelihood` returns, per example.

    Attributes:
        value: `(batch,)` $\log \frac1K \sum_k w_k$, the importance-sampled estimate of
            $\log p(x)$. Its expectation is a **lower bound** on $\log p(x)$ (Jensen), which
            tightens as $K$ grows (Burda et al. 2016, Theorem 1).
        stderr: `(batch,)` its standard error by the delta method,
            $\hat\sigma_w / (\sqrt{K}\,\bar w)$ ($\hat\sigma_w$ the sample standard
            deviation of the weights); reliable only when the effective sample size is
            not tiny.
        ess: `(batch,)` the effective sample size $(\sum_k w_k)^2 / \sum_k w_k^2$, between 1
            and $K$: near 1 means one weight dominates and neither figure is to be trusted.
        num_samples: $K$.
    """

    value: Array
    stderr: Array
    ess: Array
    num_samples: int = eqx.field(static=True)


def importance_log_likelihood(
    log_weight: Callable[..., Array],
    x: Array,
    *,
    num_samples: int = 5000,
    chunk_size: int = 500,
    key: Key,
) -> ImportanceEstimate:
    r"""Importance-sampled $\log p(x)$: log-mean-exp over $K$ proposals, chunked.

    $\log \hat p(x) = \log \frac1K \sum_{k=1}^K w_k$ with $w_k = p(x, z_k) / q(z_k \mid x)$,
    $z_k \sim q(\cdot \mid x)$ (the IWAE estimate, Burda et al. 2016, arXiv:1509.00519,
    eq. 8; annealed importance sampling, Neal 2001, gives weights of the same form). The
    weights are drawn `chunk_size` at a time and reduced by a running log-sum-exp of
    $w$ and $w^2$, so memory is $O(\text{chunk} \times \text{batch})$ for any $K$ and
    nothing over- or underflows.

    Args:
        log_weight: `(x, *, key) -> (batch,)`, one draw $z \sim q(z \mid x)$ per example
            and its $\log p(x, z) - \log q(z \mid x)$.
        x: `(batch, ...)` data, passed to `log_weight` as is.
        num_samples: $K \ge 2$.
        chunk_size: proposals drawn per vectorised call.
        key: PRNG key; chunk $c$ draws with `split(fold_in(key, c), chunk_size)`, so a
            figure is reproduced by the same `key`, `num_samples` and `chunk_size`.

    Returns:
        An `ImportanceEstimate`.

    Raises:
        ValueError: on bad `num_samples` / `chunk_size`, or a `log_weight` that does not
            return `(batch,)`.
    """
    _checks.positive_int(num_samples, "num_samples", least=2)
    _checks.positive_int(chunk_size, "chunk_size")
    _checks.key(key)
    x = jnp.asarray(x)
    if x.ndim < 1:
        raise ValueError(f"`x` must have a leading batch axis, got shape {x.shape}.")
    batch = x.shape[0]
    chunk_size = min(chunk_size, num_samples)

    def draw(keys):
        lw = jax.vmap(lambda k: log_weight(x, key=k))(keys)
        if lw.shape != (keys.shape[0], batch):
            raise ValueError(f"`log_weight` must return shape ({batch},), got {lw.shape[1:]}.")
        return lw.astype(jnp.result_type(lw.dtype, float))

    def merge(acc, lw):
        # Running log-sum-exp of w and of w^2.
        l1, l2 = acc
        l1 = jnp.logaddexp(l1, jax.nn.logsumexp(lw, axis=0))
        l2 = jnp.logaddexp(l2, jax.nn.logsumexp(2 * lw, axis=0))
        return l1, l2

    num_full, rest = divmod(num_samples, chunk_size)
    probe = jax.eval_shape(draw, jr.split(key, chunk_size))
    dtype = probe.dtype
    init = (jnp.full((batch,), -jnp.inf, dtype),) * 2

    def body(acc, c):
        return merge(acc, draw(jr.split(jr.fold_in(key, c), chunk_size))), None

    acc, _ = jax.lax.scan(body, init, jnp.arange(num_full))
    if rest:
        acc = merge(acc, draw(jr.split(jr.fold_in(key, num_full), rest)))
    l1, l2 = acc
    log_k = jnp.log(jnp.asarray(num_samples, dtype))
    value = l1 - log_k
    # Sample variance of w over mean(w)^2, both in log space: E[w^2]/E[w]^2 - 1.
    ratio = jnp.exp(l2 - log_k - 2 * value)
    var_rel = jnp.maximum(ratio - 1.0, 0.0) * num_samples / (num_samples - 1)
    stderr = jnp.sqrt(var_rel / num_samples)
    ess = jnp.exp(2 * l1 - l2)
    return ImportanceEstimate(value=value, stderr=stderr, ess=ess, num_samples=num_samples)
