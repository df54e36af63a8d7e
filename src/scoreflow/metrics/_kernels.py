r"""Kernels for the MMD and KID, as small option modules.

A kernel is resolved against the two sample sets before use (`resolve`), which fills a
data-dependent bandwidth, then evaluated on tiles (`__call__`). Bandwidths that come from
the median heuristic are computed on at most `median_samples` rows of each set (the
first ones: deterministic), as is usual (Gretton et al. 2012, sec. 8).
"""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from ._pairwise import sq_dists


def _median_sq_dist(x: Array, y: Array, num: int) -> Array:
    z = jnp.concatenate([x[:num], y[:num]])
    d = sq_dists(z, z)
    iu = np.triu_indices(z.shape[0], k=1)
    return jnp.median(d[iu])


def _multipliers(value, name) -> tuple[float, ...]:
    vals = np.atleast_1d(np.asarray(value, dtype=float))
    if vals.ndim != 1 or vals.size == 0 or not np.all(np.isfinite(vals) & (vals > 0)):
        raise ValueError(f"`{name}` must be positive finite numbers, got {value!r}.")
    return tuple(float(v) for v in vals)


class AbstractKernel(eqx.Module):
    """A positive-definite kernel $k(a, b)$ evaluated on tiles of rows."""

    @abc.abstractmethod
    def resolve(self, x: Array, y: Array) -> "AbstractKernel":
        """This kernel with any data-dependent parameter fixed from `x` and `y`."""

    @abc.abstractmethod
    def __call__(self, a: Array, b: Array) -> Array:
        """`(na, nb)` kernel matrix of two tiles of rows."""

    def diag(self, a: Array) -> Array:
        """`(na,)` values $k(a_i, a_i)$."""
        return jax.vmap(lambda r: self(r[None], r[None])[0, 0])(a)


class GaussianKernel(AbstractKernel):
    r"""$k(a, b) = \frac1B \sum_{b=1}^B \exp(-\|a - b\|^2 / (2 h_b^2))$, $h_b = m_b h$.

    Args:
        bandwidth: $h$; `None` (default) takes the median heuristic, $h^2$ the median
            squared distance between pooled samples (Gretton et al. 2012, sec. 8).
        multipliers: the $m_b$: one bandwidth (default `(1.0,)`) or a set of them, e.g.
            `(0.25, 0.5, 1, 2, 4)`, a sum of Gaussians that is characteristic at every
            scale in the set (Li et al. 2015, "Generative Moment Matching Networks").
        median_samples: rows of each set the median heuristic looks at.
    """

    bandwidth: float | Array | None = None
    multipliers: tuple[float, ...] = eqx.field(static=True, default=(1.0,))
    median_samples: int = eqx.field(static=True, default=1000)

    def __check_init__(self):
        _multipliers(self.multipliers, "multipliers")
        if self.bandwidth is not None and not isinstance(self.bandwidth, jnp.ndarray):
            _multipliers(self.bandwidth, "bandwidth")

    def resolve(self, x, y):
        if self.bandwidth is not None:
            return self
        h = jnp.sqrt(_median_sq_dist(x, y, self.median_samples))
        return GaussianKernel(h, self.multipliers, self.median_samples)

    def __call__(self, a: Array, b: Array) -> Array:
        if self.bandwidth is None:
            raise ValueError("Resolve the kernel first (`kernel.resolve(x, y)`).")
        d = sq_dists(a, b)
        h = jnp.asarray(self.bandwidth, d.dtype)
        out = sum(jnp.exp(-d / (2 * (m * h) ** 2)) for m in self.multipliers)
        return jnp.asarray(out / len(self.multipliers))


class InverseMultiquadricKernel(AbstractKernel):
    r"""$k(a, b) = \frac1B \sum_b c_b / (c_b + \|a - b\|^2)$, $c_b = m_b c$.

    Heavy-tailed, so it still sees samples far from the data where a Gaussian kernel's
    gradient vanishes (Tolstikhin et al. 2018, "Wasserstein Auto-Encoders", sec. 4, take
    $c = 2 d \sigma^2$ and a set of scales).

    Args:
        c: the scale $c$ (a squared length); `None` (default) takes the median squared
            distance between pooled samples.
        multipliers: the $m_b$ (default `(1.0,)`).
        median_samples: rows of each set the median looks at.
    """

    c: float | Array | None = None
    multipliers: tuple[float, ...] = eqx.field(static=True, default=(1.0,))
    median_samples: int = eqx.field(static=True, default=1000)

    def __check_init__(self):
        _multipliers(self.multipliers, "multipliers")
        if self.c is not None and not isinstance(self.c, jnp.ndarray):
            _multipliers(self.c, "c")

    def resolve(self, x, y):
        if self.c is not None:
            return self
        c = _median_sq_dist(x, y, self.median_samples)
        return InverseMultiquadricKernel(c, self.multipliers, self.median_samples)

    def __call__(self, a: Array, b: Array) -> Array:
        if self.c is None:
            raise ValueError("Resolve the kernel first (`kernel.resolve(x, y)`).")
        d = sq_dists(a, b)
        c = jnp.asarray(self.c, d.dtype)
        out = sum(m * c / (m * c + d) for m in self.multipliers)
        return jnp.asarray(out / len(self.multipliers))


class PolynomialKernel(AbstractKernel):
    r"""$k(a, b) = (\gamma\, a^\top b + c_0)^p$; default $\gamma = 1/d$, $c_0 = 1$, $p = 3$.

    The kernel of KID (Bińkowski et al. 2018, arXiv:1801.01401, sec. 4).

    Args:
        degree: $p$.
        gamma: $\gamma$ (default $1/d$, $d$ the feature dimension).
        coef0: $c_0$.
    """

    degree: int = eqx.field(static=True, default=3)
    gamma: float | None = eqx.field(static=True, default=None)
    coef0: float = eqx.field(static=True, default=1.0)

    def resolve(self, x, y):
        if self.gamma is not None:
            return self
        return PolynomialKernel(self.degree, 1.0 / x.shape[-1], self.coef0)

    def __call__(self, a: Array, b: Array) -> Array:
        if self.gamma is None:
            raise ValueError("Resolve the kernel first (`kernel.resolve(x, y)`).")
        return (self.gamma * (a @ b.T) + self.coef0) ** self.degree
