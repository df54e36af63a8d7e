r"""The kernel inception distance: unbiased polynomial-kernel MMD² over subsets.

Bińkowski et al. 2018, "Demystifying MMD GANs", arXiv:1801.01401, sec. 4: the
unbiased $\widehat{\mathrm{MMD}}^2_u$ with $k(a, b) = (a^\top b / d + 1)^3$ on features,
averaged over random subsets of both sets. Unlike the Fréchet distance it has an
unbiased estimator, so figures from different sample sizes compare.
"""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array

from .. import _checks
from .._custom_types import Key
from . import _samples
from ._estimate import Estimate
from ._kernels import PolynomialKernel


def kid_subsets(n: int, m: int, num_subsets: int, subset_size: int, *, key: Key):
    """The row indices `(num_subsets, subset_size)` of each set that `kid` draws."""
    _checks.key(key)
    kx, ky = jr.split(key)

    def pick(k, size):
        return jax.vmap(lambda kk: jr.permutation(kk, size)[:subset_size])(jr.split(k, num_subsets))

    return pick(kx, n), pick(ky, m)


def kid(
    x: Array,
    y: Array,
    *,
    num_subsets: int = 100,
    subset_size: int | None = None,
    kernel: PolynomialKernel | None = None,
    features: Callable[[Array], Array] | None = None,
    key: Key,
) -> Estimate:
    r"""KID between feature sets `x` and `y`, with its standard error.

    Each of `num_subsets` subsets draws `subset_size` rows of each set without
    replacement (`kid_subsets` gives the indices); the value is the mean of the subsets'
    unbiased MMD², the standard error their standard deviation over
    $\sqrt{\text{num\_subsets}}$. Subsets overlap when `subset_size` is a large share of
    a set, which makes that error an underestimate of the error over fresh sample sets.

    Args:
        x: `(n, d)` features (any event shape is flattened).
        y: `(m, d)` features.
        num_subsets: subsets ($\ge 2$).
        subset_size: rows per subset (default $\min(1000, n, m)$, Bińkowski et al.'s
            choice for large sets).
        kernel: default `PolynomialKernel()` (degree 3, $\gamma = 1/d$, $c_0 = 1$).
        features: a feature function `(n, ...) -> (n, F)` applied first (default: none).
        key: PRNG key of the subsets.

    Returns:
        An `Estimate` (what papers report as KID, often scaled by 1000).
    """
    x, y = _samples.featurise(features, x, y, ("x", "y"))
    x, y = _samples.pair(x, y, ("x", "y"), least=2)
    _checks.positive_int(num_subsets, "num_subsets", least=2)
    n, m = x.shape[0], y.shape[0]
    size = min(1000, n, m) if subset_size is None else subset_size
    _checks.positive_int(size, "subset_size", least=2)
    if size > min(n, m):
        raise ValueError(f"`subset_size` must be at most min(n, m) = {min(n, m)}, got {size}.")
    _checks.key(key)
    return _kid(x, y, PolynomialKernel() if kernel is None else kernel, num_subsets, size, key)


@eqx.filter_jit
def _kid(x, y, kernel, num_subsets, size, key):
    n, m = x.shape[0], y.shape[0]
    k = kernel.resolve(x, y)
    ix, iy = kid_subsets(n, m, num_subsets, size, key=key)

    def one(idx):
        a, b = x[idx[0]], y[idx[1]]
        kaa, kbb, kab = k(a, a), k(b, b), k(a, b)
        s = size * (size - 1)
        return (
            (kaa.sum() - jnp.trace(kaa)) / s + (kbb.sum() - jnp.trace(kbb)) / s - 2.0 * kab.mean()
        )

    vals = jax.lax.map(one, (ix, iy))
    return Estimate(
        value=vals.mean(),
        stderr=vals.std(ddof=1) / jnp.sqrt(jnp.asarray(num_subsets, vals.dtype)),
    )
