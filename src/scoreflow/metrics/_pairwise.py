"""Blocked pairwise computations: no `n x m` matrix is ever held whole.

Rows are padded to a multiple of the block size and masked; `jax.lax.map` runs over
row blocks and `jax.lax.scan` over column blocks, so peak memory is a few
`block x block` tiles whatever the sample sizes.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array


def sq_dists(a: Array, b: Array) -> Array:
    r"""`(na, nb)` squared Euclidean distances $\|a_i - b_j\|^2$, clipped at zero."""
    d = (a * a).sum(-1)[:, None] + (b * b).sum(-1)[None, :] - 2.0 * (a @ b.T)
    return jnp.maximum(d, 0.0)


def blocks(x: Array, block: int) -> tuple[Array, Array]:
    """`x` `(n, ...)` as `(num_blocks, block, ...)` with a `(num_blocks, block)` mask."""
    n = x.shape[0]
    num = -(-n // block)
    pad = num * block - n
    xp = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
    mask = jnp.arange(num * block) < n
    return xp.reshape(num, block, *x.shape[1:]), mask.reshape(num, block)


def unblock(y: Array, n: int) -> Array:
    """Inverse of `blocks` for a per-row result `(num_blocks, block, ...)`."""
    return y.reshape(-1, *y.shape[2:])[:n]


def reduce_rows(
    a: Array,
    b: Array,
    tile: Callable[..., Array],
    init: Array,
    combine: Callable[[Array, Array], Array],
    *,
    block: int,
    a_extra: tuple[Array, ...] = (),
    b_extra: tuple[Array, ...] = (),
) -> Array:
    """For every row of `a`, fold `tile` over the column blocks of `b`.

    `tile(a_blk, *a_extra_blk, b_blk, b_mask, *b_extra_blk)` returns a per-row partial
    result of shape `(block, *init.shape)`, combined across column blocks with `combine`;
    `a_extra` and `b_extra` are per-row arrays riding along with `a` and `b`. Returns
    `(len(a), *init.shape)`.
    """
    a_blk = (blocks(a, block)[0], *(blocks(e, block)[0] for e in a_extra))
    b_blk, b_mask = blocks(b, block)
    extra = tuple(blocks(e, block)[0] for e in b_extra)

    def row(rows):
        def col(acc, cols):
            bb, mb, *eb = cols
            return combine(acc, tile(*rows, bb, mb, *eb)), None

        acc0 = jnp.broadcast_to(init, (rows[0].shape[0], *init.shape))
        acc, _ = jax.lax.scan(col, acc0, (b_blk, b_mask, *extra))
        return acc

    return unblock(jax.lax.map(row, a_blk), a.shape[0])
