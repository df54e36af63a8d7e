r"""Fidelity and diversity on k-nearest-neighbour balls.

Each real (or fake) sample gets a ball whose radius is the distance to its $k$-th
nearest neighbour within its own set (itself excluded). **Precision** is the share of
fake samples inside some real ball, **recall** the share of real samples inside some
fake ball (Kynkäänniemi et al. 2019, arXiv:1904.06991, eqs. 1-3). **Density** counts
how many real balls contain each fake sample, divided by $k$; **coverage** is the share
of real balls that contain some fake sample (Naeem et al. 2020, arXiv:2002.09797,
eqs. 3-4): both built from the real balls only, which makes them less sensitive to
fake outliers than precision and recall.

Distances are Euclidean, compared squared; everything runs on tiles of rows.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array

from .. import _checks
from . import _samples
from ._pairwise import reduce_rows, sq_dists


def _smallest(d: Array, k: int) -> Array:
    """The `k` smallest entries of each row of `d`, ascending, repeats kept (as `top_k`)."""
    if d.dtype == jnp.float32:
        return -jax.lax.top_k(-d, k)[0]
    # XLA's CPU `top_k` has a partial-selection kernel for float32 only; for other dtypes it
    # sorts whole rows, about 20x slower on a 1024 x 1024 float64 tile than these k passes
    # of a row minimum (each fills as many slots as the minimum is repeated).
    inf = jnp.asarray(jnp.inf, d.dtype)
    slot = jnp.arange(k, dtype=jnp.int32)[None, :]
    out = jnp.full((d.shape[0], k), inf)
    filled = jnp.zeros((d.shape[0], 1), jnp.int32)
    for _ in range(k):
        m = d.min(1, keepdims=True)
        hit = d == m
        count = hit.sum(1, keepdims=True, dtype=jnp.int32)
        out = jnp.where((slot >= filled) & (slot < filled + count), m, out)
        filled = filled + count
        d = jnp.where(hit, inf, d)
    return out


def knn_radii(x: Array, k: int, *, block_size: int = 1024) -> Array:
    """`(n,)` squared distance from each row of `x` to its `k`-th nearest other row."""
    n = x.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"`k` must lie in [1, {n - 1}] for {n} samples, got {k}.")
    inf = jnp.asarray(jnp.inf, x.dtype)

    def tile(a, b, mb):
        d = jnp.where(mb[None, :], sq_dists(a, b), inf)
        # The k + 1 smallest of this tile (the row itself, at distance 0, is one of them).
        kk = min(k + 1, d.shape[1])
        return _smallest(d, kk)

    def combine(acc, part):
        both = jnp.concatenate([acc, part], axis=1)
        return _smallest(both, k + 1)

    init = jnp.full((k + 1,), inf)
    smallest = reduce_rows(x, x, tile, init, combine, block=block_size)
    return smallest[:, k]


def _ball_counts(points, centres, radii, block):
    """For each point: how many balls (centre, squared radius) contain it."""

    def tile(a, b, mb, rb):
        inside = (sq_dists(a, b) <= rb[None, :]) & mb[None, :]
        return inside.sum(1, dtype=jnp.int32)

    init = jnp.zeros((), jnp.int32)
    return reduce_rows(points, centres, tile, init, jnp.add, block=block, b_extra=(radii,))


def _ball_contents(centres, radii, points, block):
    """For each ball (centre, squared radius): how many points it contains."""

    def tile(a, ra, b, mb):
        inside = (sq_dists(a, b) <= ra[:, None]) & mb[None, :]
        return inside.sum(1, dtype=jnp.int32)

    init = jnp.zeros((), jnp.int32)
    return reduce_rows(centres, points, tile, init, jnp.add, block=block, a_extra=(radii,))


class PrecisionRecall(eqx.Module):
    """Precision and recall of fake samples against real ones (shares in [0, 1])."""

    precision: Array
    recall: Array


class DensityCoverage(eqx.Module):
    """Density and coverage of fake samples against real ones.

    Density is the mean number of real balls holding a fake sample, over $k$ (about 1
    for matched sets, unbounded above); coverage the share of real balls holding one.
    """

    density: Array
    coverage: Array


def _prep(real, fake, k, block_size):
    real, fake = _samples.pair(real, fake, ("real", "fake"), least=2)
    _checks.positive_int(k, "k")
    for name, a in (("real", real), ("fake", fake)):
        if a.shape[0] <= k:
            raise ValueError(f"`{name}` needs more than k = {k} samples, got {a.shape[0]}.")
    return real, fake, _samples.block_size_of(block_size)


def precision_recall(
    real: Array, fake: Array, *, k: int = 3, block_size: int = 1024
) -> PrecisionRecall:
    """Improved precision and recall (Kynkäänniemi et al. 2019; see the module docstring).

    Args:
        real: `(n, d)` features of real data (any event shape is flattened).
        fake: `(m, d)` features of model samples.
        k: neighbour defining the balls (3, the paper's choice).
        block_size: rows per tile.

    Returns:
        A `PrecisionRecall`.
    """
    real, fake, block = _prep(real, fake, k, block_size)
    return _precision_recall(real, fake, k, block)


@eqx.filter_jit
def _precision_recall(real, fake, k, block):
    r_real = knn_radii(real, k, block_size=block)
    r_fake = knn_radii(fake, k, block_size=block)
    dtype = real.dtype
    precision = (_ball_counts(fake, real, r_real, block) > 0).mean(dtype=dtype)
    recall = (_ball_counts(real, fake, r_fake, block) > 0).mean(dtype=dtype)
    return PrecisionRecall(precision=precision, recall=recall)


def density_coverage(
    real: Array, fake: Array, *, k: int = 5, block_size: int = 1024
) -> DensityCoverage:
    """Density and coverage (Naeem et al. 2020; see the module docstring).

    Args:
        real: `(n, d)` features of real data.
        fake: `(m, d)` features of model samples.
        k: neighbour defining the real balls (5, the paper's choice).
        block_size: rows per tile.

    Returns:
        A `DensityCoverage`.
    """
    real, fake, block = _prep(real, fake, k, block_size)
    return _density_coverage(real, fake, k, block)


@eqx.filter_jit
def _density_coverage(real, fake, k, block):
    r_real = knn_radii(real, k, block_size=block)
    dtype = real.dtype
    # One pass over (real ball, fake) pairs gives both: density counts all the pairs with
    # the fake inside, coverage the balls with at least one (its nearest fake inside).
    contents = _ball_contents(real, r_real, fake, block)
    density = contents.sum().astype(dtype) / (k * fake.shape[0])
    coverage = (contents > 0).mean(dtype=dtype)
    return DensityCoverage(density=density, coverage=coverage)
