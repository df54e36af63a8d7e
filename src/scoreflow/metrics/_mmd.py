r"""The maximum mean discrepancy between two sample sets, and its permutation test.

$\mathrm{MMD}^2(P, Q) = E\,k(x, x') + E\,k(y, y') - 2E\,k(x, y)$ for $x, x' \sim P$,
$y, y' \sim Q$; it is zero iff $P = Q$ when the kernel is characteristic (Gretton et al.
2012, "A Kernel Two-Sample Test", JMLR 13, Lemma 6 for the unbiased estimate used here).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array

from .. import _checks
from .._custom_types import Key
from . import _samples
from ._kernels import AbstractKernel, GaussianKernel
from ._pairwise import reduce_rows


def _kernel_matvec(kernel, a, b, w, block):
    """`K(a, b) @ w` for `w` `(len(b), p)`, blocked."""

    def tile(ab, bb, mb, wb):
        return kernel(ab, bb) @ (wb * mb[:, None].astype(wb.dtype))

    init = jnp.zeros(w.shape[1:], w.dtype)
    return reduce_rows(a, b, tile, init, jnp.add, block=block, b_extra=(w,))


def _kernel_sum(kernel, a, b, block):
    ones = jnp.ones((b.shape[0], 1), a.dtype)
    return _kernel_matvec(kernel, a, b, ones, block).sum()


def _unbiased(sxx, syy, sxy, n, m):
    return sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2.0 * sxy / (n * m)


def mmd2(
    x: Array,
    y: Array,
    *,
    kernel: AbstractKernel | None = None,
    block_size: int = 1024,
) -> Array:
    r"""The unbiased estimate of $\mathrm{MMD}^2$ between samples `x` and `y`.

    $\widehat{\mathrm{MMD}}^2_u = \frac{1}{n(n-1)}\sum_{i \ne j} k(x_i, x_j)
    + \frac{1}{m(m-1)}\sum_{i \ne j} k(y_i, y_j) - \frac{2}{nm}\sum_{i, j} k(x_i, y_j)$
    (Gretton et al. 2012, eq. 3). Unbiased, so it can be slightly negative when the two
    distributions are equal.

    Args:
        x: `(n, *event)` samples, $n \ge 2$.
        y: `(m, *event)` samples of the same event shape, $m \ge 2$.
        kernel: an `AbstractKernel` (default `GaussianKernel()`, median heuristic).
        block_size: rows per tile of the kernel matrix.

    Returns:
        The scalar estimate.

    Raises:
        ValueError: on sets of different event shapes, fewer than 2 samples, or
            non-finite samples (counted in the message).
    """
    x, y = _samples.pair(x, y, ("x", "y"), least=2)
    block = _samples.block_size_of(block_size)
    return _mmd2(x, y, GaussianKernel() if kernel is None else kernel, block)


@eqx.filter_jit
def _mmd2(x, y, kernel, block):
    k = kernel.resolve(x, y)
    n, m = x.shape[0], y.shape[0]
    sxx = _kernel_sum(k, x, x, block) - k.diag(x).sum()
    syy = _kernel_sum(k, y, y, block) - k.diag(y).sum()
    sxy = _kernel_sum(k, x, y, block)
    return _unbiased(sxx, syy, sxy, n, m)


class MMDTest(eqx.Module):
    r"""What `mmd_test` returns.

    Attributes:
        mmd2: the unbiased $\widehat{\mathrm{MMD}}^2$ of the two sets.
        p_value: the permutation p-value $(1 + \#\{b: T_b \ge T\}) / (1 + B)$, valid
            (uniform under $P = Q$, up to its discreteness $1/(1 + B)$) for any kernel.
        null: `(B,)` the statistic under the $B$ random relabellings.
    """

    mmd2: Array
    p_value: Array
    null: Array


def mmd_test(
    x: Array,
    y: Array,
    *,
    kernel: AbstractKernel | None = None,
    num_permutations: int = 200,
    block_size: int = 1024,
    key: Key,
) -> MMDTest:
    r"""The kernel two-sample test of $P = Q$ by permutation (Gretton et al. 2012, sec. 8).

    The pooled sample is relabelled $B$ times at random (sizes kept). Every statistic is
    a quadratic form of the label vectors, so one blocked pass computes
    $K [\mathbf 1, u_0, u_1, \dots, u_B]$ for all of them: the kernel matrix is built
    once, a tile at a time, never stored.

    Args:
        x: `(n, *event)` samples, $n \ge 2$.
        y: `(m, *event)` samples of the same event shape, $m \ge 2$.
        kernel: an `AbstractKernel` (default `GaussianKernel()`); a median-heuristic
            bandwidth is fixed once from the observed sets and kept for every relabelling.
        num_permutations: $B \ge 1$.
        block_size: rows per tile.
        key: PRNG key of the relabellings.

    Returns:
        An `MMDTest`.
    """
    x, y = _samples.pair(x, y, ("x", "y"), least=2)
    _checks.positive_int(num_permutations, "num_permutations")
    _checks.key(key)
    block = _samples.block_size_of(block_size)
    return _mmd_test(
        x, y, GaussianKernel() if kernel is None else kernel, num_permutations, block, key
    )


@eqx.filter_jit
def _mmd_test(x, y, kernel, num_permutations, block, key):
    k = kernel.resolve(x, y)
    n, m = x.shape[0], y.shape[0]
    z = jnp.concatenate([x, y])
    dtype = z.dtype
    ranks = jax.vmap(lambda kk: jr.permutation(kk, n + m))(jr.split(key, num_permutations))
    observed = (jnp.arange(n + m) < n)[None]
    u = jnp.concatenate([observed, ranks < n]).T.astype(dtype)  # (n + m, 1 + B)
    w = jnp.concatenate([jnp.ones((n + m, 1), dtype), u], axis=1)
    kw = _kernel_matvec(k, z, z, w, block)
    k1, ku = kw[:, :1], kw[:, 1:]
    kv = k1 - ku
    d = k.diag(z)[:, None]
    v = 1.0 - u
    sxx = (u * ku).sum(0) - (u * d).sum(0)
    syy = (v * kv).sum(0) - (v * d).sum(0)
    sxy = (u * kv).sum(0)
    stats = _unbiased(sxx, syy, sxy, n, m)
    t, null = stats[0], stats[1:]
    p = (1.0 + (null >= t).sum().astype(dtype)) / (1.0 + num_permutations)
    return MMDTest(mmd2=t, p_value=p, null=null)
