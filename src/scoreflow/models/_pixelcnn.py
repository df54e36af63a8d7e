r"""PixelCNN: an exact autoregressive likelihood over integer pixels."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, Int, Shaped

from .. import _checks
from .._custom_types import Key, Scalar
from ..nn import (
    AbstractPixelHead,
    Bernoulli,
    Categorical,
    DiscretisedLogisticMixture,
    GatedPixelCNNNetwork,
    PixelCNNNetwork,
)
from ._base import AbstractDiscreteLikelihood, check_event

ARCHITECTURES: tuple[str, ...] = ("gated", "plain")


def _levels_of(head) -> int:
    if isinstance(head, Categorical | DiscretisedLogisticMixture):
        return int(head.num_levels)
    if isinstance(head, Bernoulli):
        return 2
    raise ValueError(
        "`head` must be a discrete pixel head (Categorical, DiscretisedLogisticMixture or "
        f"Bernoulli), got {type(head).__name__}."
    )


class PixelCNN(AbstractDiscreteLikelihood):
    r"""PixelCNN: $p(x) = \prod_i p(x_i \mid x_{<i})$ over integer pixels (van den Oord 2016).

    The chain rule in raster order, colour channels within a pixel (van den Oord et al.
    2016a, arXiv:1601.06759, eq. 1): one masked network gives the parameters of every
    conditional at once, and an output head of `scoreflow.nn` turns them into a
    distribution over the `num_levels` integer levels: a categorical (the digits: 17
    levels), a discretised logistic mixture (Salimans et al. 2017, arXiv:1701.05517,
    eq. 2) or a Bernoulli. `architecture="gated"` is the gated PixelCNN with vertical and
    horizontal stacks (van den Oord et al. 2016b, arXiv:1606.05328), which has no blind
    spot; `"plain"` the original stack of masked convolutions. With `num_classes` the
    model is class-conditional, $p(x \mid y)$ (their eq. 4), and its data are pairs
    `(x, y)`.

    `log_prob` is the exact log-probability mass of integer images (nats); the training
    loss is the mean negative log-likelihood per dimension; `sample` draws the pixels one
    at a time in one `jax.lax.fori_loop` over the $D$ positions, batched over samples,
    each step one pass of the network.

    Args:
        event_shape: `(channels, height, width)`.
        head: the pixel distribution (default `scoreflow.nn.Categorical(17)`).
        architecture: `"gated"` or `"plain"`.
        width: feature maps (a multiple of `channels`).
        depth: layers.
        kernel_size: odd kernel size.
        num_classes: labels of a class-conditional model (`None`: unconditional).
        key: PRNG key.

    Raises:
        ValueError: on a shape that is not an image, an unknown architecture, a head
            that is not discrete, or bad network sizes.
    """

    network: GatedPixelCNNNetwork | PixelCNNNetwork
    head: AbstractPixelHead
    event_shape: tuple[int, ...] = eqx.field(static=True)
    num_levels: int = eqx.field(static=True)
    num_classes: int | None = eqx.field(static=True)

    def __init__(
        self,
        event_shape: tuple[int, ...],
        *,
        head: AbstractPixelHead | None = None,
        architecture: str = "gated",
        width: int = 32,
        depth: int = 4,
        kernel_size: int = 3,
        num_classes: int | None = None,
        key: Key,
    ):
        if architecture not in ARCHITECTURES:
            raise ValueError(
                f"`architecture` must be one of {ARCHITECTURES}, got {architecture!r}."
            )
        head = Categorical(17) if head is None else head
        self.num_levels = _levels_of(head)
        cls = GatedPixelCNNNetwork if architecture == "gated" else PixelCNNNetwork
        self.network = cls(
            event_shape,
            head.num_params,
            num_levels=self.num_levels,
            width=width,
            depth=depth,
            kernel_size=kernel_size,
            num_classes=num_classes,
            key=key,
        )
        self.head = head
        self.event_shape = tuple(self.network.event_shape)
        self.num_classes = num_classes

    @property
    def num_dims(self) -> int:
        """$D$, the integer values per image."""
        return int(np.prod(self.event_shape))

    def _labels(self, y, n):
        if self.num_classes is None:
            if y is not None:
                raise ValueError("`y` is for a class-conditional PixelCNN (num_classes=...).")
            return None
        if y is None:
            raise ValueError("`y` is needed: this PixelCNN is class-conditional.")
        y = jnp.asarray(y)
        if not jnp.issubdtype(y.dtype, jnp.integer):
            raise ValueError(f"`y` must hold integer labels, got dtype {y.dtype}.")
        if y.ndim == 0:
            y = jnp.broadcast_to(y, (n,))
        if y.shape != (n,):
            raise ValueError(f"`y` must be one label or ({n},) labels, got shape {y.shape}.")
        yc = _checks.concrete(y)
        if yc is not None and yc.size and not (0 <= yc.min() and yc.max() < self.num_classes):
            raise ValueError(
                f"`y` must lie in [0, {self.num_classes}), got {yc.min()}..{yc.max()}."
            )
        return y

    def _params(self, x, y):
        if y is None:
            return jax.vmap(self.network)(x)
        return jax.vmap(self.network)(x, y)

    def conditionals(
        self, x: Shaped[Array, "batch ..."], *, y: Int[Array, " batch"] | int | None = None
    ) -> Float[Array, "batch ..."]:
        r"""$\log p(x_i \mid x_{<i})$ at every position, `(batch, *event_shape)` (nats)."""
        check_event(x, self.event_shape)
        if not jnp.issubdtype(x.dtype, jnp.integer):
            raise ValueError(
                f"`x` must hold integer pixel levels in [0, {self.num_levels}), got dtype "
                f"{x.dtype} (PixelCNN's likelihood is a mass over the levels)."
            )
        value = _checks.concrete(x)
        if value is None:
            x = self.head.check_data(x, "x")  # traced: checked at run time
        elif value.size and (value.min() < 0 or value.max() >= self.num_levels):
            # Checked here in NumPy: concrete data can reach this inside a trace (a batch
            # closed over by a jitted loss), where jnp on it would be traced.
            raise ValueError(
                f"`x` must hold integer pixel levels in 0..{self.num_levels - 1}, got "
                f"{value.min()}..{value.max()}."
            )
        y = self._labels(y, x.shape[0])
        return self.head.log_prob(self._params(x, y), x)

    def log_prob(
        self,
        x: Shaped[Array, "batch ..."],
        *,
        y: Int[Array, " batch"] | int | None = None,
        key: Key | None = None,
    ) -> Float[Array, " batch"]:
        r"""$\log P(x) = \sum_i \log p(x_i \mid x_{<i})$ per image (nats, a mass)."""
        del key
        lp = self.conditionals(x, y=y)
        return lp.reshape(lp.shape[0], -1).sum(-1)

    def loss(self, x, *, key: Key | None = None) -> Scalar:
        """Mean negative log-likelihood per dimension (nats); `x` is `(x, y)` if conditional."""
        del key
        if self.num_classes is None:
            images, y = x, None
        else:
            if not (isinstance(x, tuple) and len(x) == 2):
                raise ValueError(
                    "`x` must be the pair (images, labels) for a conditional PixelCNN."
                )
            images, y = x
        return -jnp.mean(self.log_prob(images, y=y)) / self.num_dims

    def sample(
        self,
        sample_shape: int | tuple[int, ...] = (),
        *,
        y: Int[Array, " n"] | int | None = None,
        key: Key,
    ) -> Int[Array, "..."]:
        """Integer images, pixel by pixel in raster order (channels within a pixel).

        Args:
            sample_shape: the batch shape (an int `n` is `(n,)`).
            y: one label or one per sample (conditional models).
            key: PRNG key.

        Returns:
            `(*sample_shape, *event_shape)` int32 levels in `[0, num_levels)`.
        """
        shape, n = self._flat_shape(sample_shape)
        _checks.key(key)
        labels = self._labels(y, n)
        c, h, w = self.event_shape
        x0 = jnp.zeros((n, c, h, w), jnp.int32)
        if n == 0:
            return x0.reshape(*shape, *self.event_shape)

        def body(t, x):
            i, j, ch = t // (w * c), (t // c) % w, t % c
            params = self._params(x, labels)[:, ch, i, j]
            value = self.head.sample(params, key=jr.fold_in(key, t))
            return x.at[:, ch, i, j].set(value.astype(jnp.int32))

        x = jax.lax.fori_loop(0, c * h * w, body, x0)
        return x.reshape(*shape, *self.event_shape)
