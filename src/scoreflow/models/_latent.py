r"""What the latent-variable models share: how data meet a decoder's output head.

A decoder's distribution is a `scoreflow.nn.AbstractPixelHead`. Its support decides how
the model reads data:

- `Bernoulli`: binary data in $\{0, 1\}$; `Gaussian`: real data. The bound is on the
  probability (Bernoulli) or the density (Gaussian) of `x` as given.
- `Categorical(L)`, `DiscretisedLogisticMixture(L)`: $L$ levels. Integer `x` are the
  levels $0..L-1$ themselves and the bound is on their probability mass $P(x)$. Float
  `x` are read in scoreflow's convention, points of `data_range` split into $L$ equal
  bins (the bin centres of `scoreflow.data.digits`, or dequantised values inside the
  bins): each is mapped to its bin, and the bound is on the *piecewise-constant density*
  $P(k)/w^D$ ($w$ the bin width), a normalised density on `data_range`. That is what
  `scoreflow.evaluation.evaluate_digits` scores: with uniform dequantisation it turns the
  density back into exactly $-\log_2 P(x) / D$ bits per dimension, with no
  dequantisation gap. The encoder always sees bin centres.
"""

import abc
import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Shaped

from .. import _checks, metrics
from .._custom_types import Key
from ..nn import AbstractPixelHead, Bernoulli, Categorical, DiscretisedLogisticMixture
from ._base import AbstractLikelihoodBound

DISCRETE_HEADS = (Categorical, DiscretisedLogisticMixture)


def check_head(head) -> AbstractPixelHead:
    """Raise `ValueError` unless `head` is a `scoreflow.nn.AbstractPixelHead`."""
    if not isinstance(head, AbstractPixelHead):
        raise ValueError(
            "`head` must be a `scoreflow.nn` output head (`Bernoulli()`, `Gaussian(...)`, "
            f"`Categorical(levels)`, `DiscretisedLogisticMixture(levels)`), got {head!r}."
        )
    return head


def check_data_range(data_range) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in data_range)
    except (TypeError, ValueError):
        raise ValueError(f"`data_range` must be a pair (low, high), got {data_range!r}.") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"`data_range` must be finite with low < high, got {data_range!r}.")
    return lo, hi


def _refuse(x, bad, message: str):
    value = _checks.concrete(x)
    if value is not None:
        if value.size and bool(np.any(bad(value))):
            raise ValueError(message)
        return x
    return eqx.error_if(x, jnp.any(bad(x)), message)


def bin_centres(levels: Array, num_levels: int, data_range, dtype) -> Array:
    """The centres of the bins `levels` of `data_range` (scoreflow's data convention)."""
    lo, hi = data_range
    return (lo + (hi - lo) * (levels.astype(dtype) + 0.5) / num_levels).astype(dtype)


def prepare(head: AbstractPixelHead, x, event_shape, data_range, dtype, name: str = "x"):
    r"""`(x_enc, x_head, log_width)` of a batch, for the encoder, the head and the density.

    What the encoder sees, what the head scores, and the log-volume $D\log w$ that turns
    a probability mass into a density (0 when none).

    Raises:
        ValueError: on a batch of another event shape, or data outside the head's support
            (non-binary data for `Bernoulli`, levels out of range, float data outside
            `data_range`); traced data is checked at run time.
    """
    x = jnp.asarray(x)
    if x.ndim != len(event_shape) + 1 or tuple(x.shape[1:]) != tuple(event_shape):
        raise ValueError(f"`{name}` must have shape (batch, *{tuple(event_shape)}), got {x.shape}.")
    if isinstance(head, DISCRETE_HEADS):
        num = head.num_levels
        if jnp.issubdtype(x.dtype, jnp.integer):
            levels = head.check_data(x, name).astype(jnp.int32)
            log_width = 0.0
        else:
            lo, hi = data_range
            x = _refuse(
                x,
                lambda v: ~((v >= lo) & (v <= hi)),
                f"`{name}` must lie in data_range [{lo}, {hi}] (the range the {num} levels "
                "divide), or be integer levels.",
            )
            k = jnp.floor((x - lo) * (num / (hi - lo)))
            levels = jnp.clip(k, 0, num - 1).astype(jnp.int32)
            log_width = math.prod(event_shape) * math.log((hi - lo) / num)
        return bin_centres(levels, num, data_range, dtype), levels, log_width
    if isinstance(head, Bernoulli) and jnp.issubdtype(x.dtype, jnp.integer):
        x = x.astype(dtype)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"`{name}` must be a float array, got dtype {x.dtype}.")
    x = head.check_data(x, name).astype(dtype)
    return x, x, 0.0


def to_data(head: AbstractPixelHead, draw: Array, data_range, dtype) -> Array:
    """A head's draw as data: levels become bin centres of `data_range`."""
    if isinstance(head, DISCRETE_HEADS):
        return bin_centres(draw, head.num_levels, data_range, dtype)
    return draw.astype(dtype)


def gaussian_log_prob(z, mean, log_var) -> Array:
    r"""$\log N(z; \mu, \mathrm{diag}\,e^{v})$ summed on the last axis."""
    return -0.5 * jnp.sum((z - mean) ** 2 * jnp.exp(-log_var) + log_var + math.log(2 * math.pi), -1)


def param_dtype(tree):
    leaves = [v for v in jax.tree_util.tree_leaves(tree) if eqx.is_inexact_array(v)]
    return leaves[0].dtype if leaves else jnp.result_type(float)


class AbstractLatentVariableModel(AbstractLikelihoodBound):
    r"""A model $p(x) = \int p(x \mid z) p(z)\,dz$ with an amortised proposal $q(z \mid x)$.

    The VAE family: `elbo(x, num_samples=K)` is the ELBO ($K = 1$) or the
    importance-weighted bound $\mathcal{L}_K$ (Burda et al. 2016, arXiv:1509.00519,
    eq. 8), and `log_prob_estimate` the importance-sampled $\log\hat p(x)$ (default
    $K = 5000$, chunked) with its standard error: an estimate whose expectation is a
    lower bound on $\log p(x)$. A subclass gives one draw's log-weight
    $\log p(x, z) - \log q(z \mid x)$ and its ELBO with whatever is analytic.

    Data and the decoder's head: with `Bernoulli()` binary data, with `Gaussian(...)` real
    data, as given. With `Categorical(L)` or `DiscretisedLogisticMixture(L)`, integer data
    are the levels and the bound is on their probability mass; float data are points of
    `data_range` split into $L$ equal bins (scoreflow's bin centres, or dequantised values),
    each read as its bin, and the bound is on the piecewise-constant density $P(k)/w^D$
    ($w$ the bin width): `scoreflow.metrics.bits_per_dim` of integer data then gives
    exactly the mass's $-\log_2 P / D$, with no dequantisation gap.
    """

    head: eqx.AbstractVar[AbstractPixelHead]
    event_shape: eqx.AbstractVar[tuple[int, ...]]
    data_range: eqx.AbstractVar[tuple[float, float]]

    @property
    @abc.abstractmethod
    def _dtype(self) -> Any:
        """The parameters' float dtype."""

    @abc.abstractmethod
    def _log_weights(self, x_enc, x_head, key) -> Array:
        r"""`(batch,)`: one draw per example of $\log p(x, z) - \log q(z \mid x)$."""

    @abc.abstractmethod
    def _elbo_analytic(self, x_enc, x_head, key) -> Array:
        """`(batch,)`: the one-draw ELBO, with the KL terms in closed form."""

    def _prepare(self, x, name="x"):
        return prepare(self.head, x, self.event_shape, self.data_range, self._dtype, name)

    def _estimate(self, x_enc, x_head, num_samples, chunk_size, key):
        return metrics.importance_log_likelihood(
            lambda _, *, key: self._log_weights(x_enc, x_head, key),
            x_enc,
            num_samples=num_samples,
            chunk_size=chunk_size,
            key=key,
        )

    def elbo(
        self,
        x: Shaped[Array, "batch ..."],
        *,
        num_samples: int = 1,
        chunk_size: int = 500,
        key: Key,
    ) -> Float[Array, " batch"]:
        r"""A lower bound on $\log p(x)$ per example, in nats.

        `num_samples=1`: the ELBO, one draw, its KL terms analytic. `num_samples=K > 1`:
        the importance-weighted bound $\mathcal{L}_K$ (Burda et al. 2016, eq. 8), drawn
        `chunk_size` at a time; as $K$ grows it is the importance-sampled estimate of
        $\log p(x)$, whose expectation stays a lower bound.

        Args:
            x: `(batch, *event_shape)` data in the head's support.
            num_samples: $K \ge 1$.
            chunk_size: proposals per vectorised call when $K > 1$.
            key: PRNG key.
        """
        _checks.positive_int(num_samples, "num_samples")
        _checks.positive_int(chunk_size, "chunk_size")
        _checks.key(key)
        x_enc, x_head, log_width = self._prepare(x)
        if num_samples == 1:
            return self._elbo_analytic(x_enc, x_head, key) - log_width
        return self._estimate(x_enc, x_head, num_samples, chunk_size, key).value - log_width

    def log_prob_estimate(
        self,
        x: Shaped[Array, "batch ..."],
        *,
        num_samples: int = 5000,
        chunk_size: int = 500,
        key: Key,
    ) -> metrics.ImportanceEstimate:
        r"""The importance-sampled $\log\hat p(x)$ with its standard error (Burda et al. 2016).

        $K$ draws of $q(z \mid x)$ as proposals; the estimate's expectation is a lower
        bound on $\log p(x)$ (it is $\mathcal{L}_K$), its standard error is the delta
        method's, and its effective sample size says whether either can be trusted
        (`scoreflow.metrics.ImportanceEstimate`).

        Args:
            x: `(batch, *event_shape)` data.
            num_samples: $K \ge 2$ (default 5000, as Burda et al. evaluate).
            chunk_size: proposals per vectorised call.
            key: PRNG key.
        """
        _checks.positive_int(num_samples, "num_samples", least=2)
        _checks.positive_int(chunk_size, "chunk_size")
        _checks.key(key)
        x_enc, x_head, log_width = self._prepare(x)
        est = self._estimate(x_enc, x_head, num_samples, chunk_size, key)
        return eqx.tree_at(lambda e: e.value, est, est.value - log_width)
