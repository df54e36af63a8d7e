from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .. import _checks
from ._embeddings import GaussianFourierEmbedding, SinusoidalEmbedding
from ._init import zero_output
from ._labels import LabelEmbedding, add_label, label_embedding


def _embedding(kind, dim, key, scale=16.0):
    if kind == "fourier":
        return GaussianFourierEmbedding(dim, scale=scale, key=key)
    if kind == "sinusoidal":
        return SinusoidalEmbedding(dim)
    raise ValueError(f"`embedding` must be 'fourier' or 'sinusoidal', got {kind!r}.")


class TimeMLP(eqx.Module):
    r"""A time-conditioned MLP $(t, x) \mapsto$ array of $x$'s shape.

    Every hidden layer receives the time embedding through its own projection,
    $h_{k+1} = \phi(W_k h_k + U_k e(c(t)) + b_k)$, with residual connections between
    hidden layers of equal width (the toy architecture of Song et al.'s 2-d examples).
    `x` may have any shape; it is flattened on entry and reshaped on exit.

    With `num_classes` it is class-conditional, `(t, x, y)`: a learned embedding of the
    label (`LabelEmbedding`, with a row for the null label that `y=None` selects) is
    added to the time embedding $e(c(t))$, the conditioning of classifier-free guidance
    (Ho & Salimans 2022, arXiv:2207.12598). With `out_size` it returns a vector of that
    size instead of an array of $x$'s shape: the logits of a classifier of noisy data.
    Neither option changes the parameters the other layers get from `key`.

    Args:
        data_shape: event shape of one example, e.g. `(2,)`.
        width: hidden width.
        depth: number of hidden layers.
        embed_dim: size of the time embedding (even).
        embedding: `"fourier"` (Gaussian Fourier features) or `"sinusoidal"`.
        embedding_scale: standard deviation of the Fourier frequencies (16 suits
            $t \in [0, 1]$; use about 1 for a log noise level spanning ~10).
        time_transform: map applied to $t$ before embedding (e.g. a log noise level);
            default the identity.
        activation: nonlinearity $\phi$.
        num_classes: number of classes of a class-conditional network, or `None`.
        out_size: size of a vector output (e.g. a classifier's number of classes), or
            `None`: an output of $x$'s shape.
        key: PRNG key.
    """

    embed: Callable[[Array], Array]
    first: eqx.nn.Linear
    hidden: tuple[eqx.nn.Linear, ...]
    time_proj: tuple[eqx.nn.Linear, ...]
    last: eqx.nn.Linear
    data_shape: tuple[int, ...] = eqx.field(static=True)
    time_transform: Callable | None
    activation: Callable = eqx.field(static=True)
    label_embed: LabelEmbedding | None
    out_size: int | None = eqx.field(static=True)

    def __init__(
        self,
        data_shape: tuple[int, ...],
        width: int = 128,
        depth: int = 3,
        embed_dim: int = 32,
        embedding: str = "fourier",
        embedding_scale: float = 16.0,
        time_transform: Callable | None = None,
        activation: Callable = jax.nn.silu,
        num_classes: int | None = None,
        out_size: int | None = None,
        *,
        key: PRNGKeyArray,
    ):
        if depth < 1:
            raise ValueError(f"`depth` must be >= 1, got {depth}.")
        if width < 1:
            raise ValueError(f"`width` must be >= 1, got {width}.")
        if num_classes is not None:
            _checks.positive_int(num_classes, "num_classes")
        _checks.key(key)
        self.data_shape = tuple(data_shape)
        d = 1
        for s in self.data_shape:
            d *= s
        keys = jr.split(key, 2 * depth + 2)
        self.embed = _embedding(embedding, embed_dim, keys[0], embedding_scale)
        self.first = eqx.nn.Linear(d, width, key=keys[1])
        self.hidden = tuple(eqx.nn.Linear(width, width, key=k) for k in keys[2 : depth + 1])
        self.time_proj = tuple(
            eqx.nn.Linear(embed_dim, width, key=k) for k in keys[depth + 1 : 2 * depth + 1]
        )
        if out_size is not None:
            _checks.positive_int(out_size, "out_size")
        self.out_size = out_size
        last = eqx.nn.Linear(width, d if out_size is None else out_size, key=keys[-1])
        # Zero output layer: the untrained network predicts 0 (a unit-variance Gaussian's
        # eps), a stable start for every parameterisation; a classifier starts uniform.
        self.last = zero_output(last)
        self.time_transform = time_transform
        self.activation = activation
        self.label_embed = label_embedding(num_classes, embed_dim, key)

    @property
    def num_classes(self) -> int | None:
        """The number of classes of a class-conditional network, else `None`."""
        return None if self.label_embed is None else self.label_embed.num_classes

    def __call__(
        self, t: Float[Array, ""], x: Float[Array, "..."], y: Int[Array, ""] | int | None = None
    ) -> Float[Array, "..."]:
        """The output at one example; `y` the class label (`None`: the null label)."""
        if x.shape != self.data_shape:
            raise ValueError(f"`x` must have shape {self.data_shape}, got {x.shape}.")
        dtype = self.first.weight.dtype
        t = jnp.asarray(t).astype(dtype)
        c = t if self.time_transform is None else self.time_transform(t)
        e = self.embed(c)
        e = add_label(e, self.label_embed, y)
        h = self.activation(self.first(x.reshape(-1).astype(dtype)) + self.time_proj[0](e))
        for layer, proj in zip(self.hidden, self.time_proj[1:]):
            h = h + self.activation(layer(h) + proj(e))
        out = self.last(h)
        return (out if self.out_size is not None else out.reshape(x.shape)).astype(x.dtype)
