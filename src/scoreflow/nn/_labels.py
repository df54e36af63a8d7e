import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .. import _checks

# The label table's key is `fold_in(key, _STREAM)`. A small number would not do: with
# JAX's partitionable threefry, `fold_in(key, i)` equals `split(key, n)[i]`, a key the
# other layers already use. Kept apart, the other layers are those of an unconditional
# network built from the same key, bit for bit.
_STREAM = 0x6C61626C


def label_embedding(num_classes: int | None, dim: int, key: PRNGKeyArray):
    """`None` for `num_classes=None`; else a `LabelEmbedding` from its own stream of `key`."""
    if num_classes is None:
        return None
    return LabelEmbedding(num_classes, dim, key=jr.fold_in(key, _STREAM))


class LabelEmbedding(eqx.Module):
    r"""A learned embedding of class labels and of the null label $\varnothing$.

    A table of `num_classes + 1` vectors: rows `0..num_classes - 1` are the classes, row
    `num_classes` the null label of classifier-free training (Ho & Salimans 2022,
    arXiv:2207.12598), which `None` also selects. The conditional networks add it to
    their time embedding.

    Args:
        num_classes: number of classes ($\ge 1$).
        dim: embedding size.
        key: PRNG key.
    """

    embedding: eqx.nn.Embedding
    num_classes: int = eqx.field(static=True)

    def __init__(self, num_classes: int, dim: int, *, key: PRNGKeyArray):
        _checks.positive_int(num_classes, "num_classes")
        _checks.key(key)
        self.num_classes = num_classes
        self.embedding = eqx.nn.Embedding(num_classes + 1, dim, key=key)

    def __call__(self, y: Int[Array, ""] | int | None) -> Float[Array, " dim"]:
        """The embedding of label `y` (`None` or `num_classes`: the null label)."""
        y = jnp.asarray(self.num_classes if y is None else y)
        if y.shape != () or not jnp.issubdtype(y.dtype, jnp.integer):
            raise ValueError(
                f"`y` must be one integer class label, got shape {y.shape} and dtype {y.dtype}."
            )
        return self.embedding(y)


def add_label(
    e: Float[Array, " dim"], label_embed: LabelEmbedding | None, y
) -> Float[Array, " dim"]:
    """`e` plus the embedding of `y`; an unconditional network (no table) refuses a label."""
    if label_embed is None:
        if y is not None:
            raise ValueError(
                "`y` was given, but this network was built without `num_classes`: it is "
                "unconditional."
            )
        return e
    return e + label_embed(y).astype(e.dtype)
