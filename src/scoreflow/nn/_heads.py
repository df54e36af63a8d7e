"""Output heads: the distribution over one pixel that a network's output parameterises.

A decoder (a VAE's) or an autoregressive network (PixelCNN) emits `num_params` numbers
per element; the head turns them into an elementwise `log_prob` and a `sample`, and
`check_data` refuses data outside the head's support. Integer heads (`Categorical`,
`DiscretisedLogisticMixture`) take the pixel levels themselves, `0 .. num_levels - 1`, so
their log-likelihoods are exact discrete ones, with no dequantisation.
"""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .. import _checks


def _refuse_outside(x, bad, name: str, message: str):
    # Concrete data raises at once; traced data at run time (as `_checks.labels` does).
    value = _checks.concrete(x)
    if value is not None:
        # NumPy here: jnp on a constant inside a caller's trace would be staged.
        if value.size and bool(np.any(bad(value, np))):
            raise ValueError(f"`{name}` {message}")
        return jnp.asarray(x)
    return eqx.error_if(x, jnp.any(bad(x, jnp)), f"`{name}` {message}")


class AbstractPixelHead(eqx.Module):
    """A distribution over one element, parameterised by `num_params` numbers.

    `params` always carries the parameters on its last axis: `(..., num_params)` for data
    of shape `(...)`.
    """

    @property
    @abc.abstractmethod
    def num_params(self) -> int:
        """How many numbers the network emits per element."""

    @abc.abstractmethod
    def log_prob(self, params: Float[Array, "*shape p"], x: ArrayLike) -> Float[Array, "*shape"]:
        """The elementwise log-probability (or log-density) of `x`."""

    @abc.abstractmethod
    def sample(self, params: Float[Array, "*shape p"], *, key: PRNGKeyArray) -> Array:
        """One draw per element, of shape `params.shape[:-1]`."""

    @abc.abstractmethod
    def check_data(self, x: ArrayLike, name: str = "x") -> Array:
        """Return `x` as an array, or raise `ValueError` naming `name` outside the support.

        Traced data is checked at run time, through `equinox.error_if`.
        """


def _check_levels(x, num_levels: int, name: str):
    return _refuse_outside(
        x,
        lambda v, xp: (v < 0) | (v > num_levels - 1) | (v != xp.round(v)),
        name,
        f"must hold integer pixel levels in 0..{num_levels - 1}.",
    )


def _levels_int(x):
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.integer) else jnp.round(x).astype(jnp.int32)


class Categorical(AbstractPixelHead):
    """A categorical distribution over the levels `0 .. num_levels - 1`.

    `params` are its logits (van den Oord et al. 2016, arXiv:1601.06759, section 3.4: a
    softmax over pixel values).
    """

    num_levels: int = eqx.field(static=True)

    def __init__(self, num_levels: int):
        _checks.positive_int(num_levels, "num_levels", least=2)
        self.num_levels = num_levels

    @property
    def num_params(self) -> int:
        return self.num_levels

    def log_prob(self, params, x):
        x = _levels_int(x)
        log_p = jax.nn.log_softmax(params, axis=-1)
        return jnp.take_along_axis(log_p, x[..., None], axis=-1)[..., 0]

    def sample(self, params, *, key):
        return jr.categorical(key, params, axis=-1)

    def check_data(self, x, name="x"):
        return _check_levels(x, self.num_levels, name)


class DiscretisedLogisticMixture(AbstractPixelHead):
    r"""A mixture of logistics discretised to `num_levels` bins.

    Salimans et al. 2017 (PixelCNN++, arXiv:1701.05517, eq. 2).
    Level $k$ is the bin of centre $c_k = -1 + 2k/(L - 1)$ and half-width $1/(L - 1)$ on
    $[-1, 1]$; the two edge bins extend to $\mp\infty$, so the $L$ probabilities sum to
    one exactly. A bin's probability $\sigma(a) - \sigma(b)$ is computed as
    $\log\sigma(a) + \log\sigma(-b) + \log(1 - e^{b - a})$, which is finite and has finite
    gradients for every scale. `params` are `(logit weights, means, log scales)`
    concatenated on the last axis, `num_components` each; log scales are clipped below at
    `min_log_scale` (-7, as PixelCNN++ does).
    """

    num_levels: int = eqx.field(static=True)
    num_components: int = eqx.field(static=True)
    min_log_scale: float = eqx.field(static=True)

    def __init__(self, num_levels: int, num_components: int = 5, *, min_log_scale: float = -7.0):
        _checks.positive_int(num_levels, "num_levels", least=2)
        _checks.positive_int(num_components, "num_components")
        _checks.scalar(min_log_scale, "min_log_scale")
        self.num_levels = num_levels
        self.num_components = num_components
        self.min_log_scale = float(min_log_scale)

    @property
    def num_params(self) -> int:
        return 3 * self.num_components

    def _split(self, params):
        k = self.num_components
        logits, means, log_scales = params[..., :k], params[..., k : 2 * k], params[..., 2 * k :]
        return logits, means, jnp.maximum(log_scales, self.min_log_scale)

    def log_prob(self, params, x):
        logits, means, log_scales = self._split(params)
        level = _levels_int(x)[..., None]
        half = 1.0 / (self.num_levels - 1)
        centre = -1.0 + 2.0 * half * level.astype(params.dtype)
        inv_scale = jnp.exp(-log_scales)
        upper = (centre + half - means) * inv_scale
        lower = (centre - half - means) * inv_scale
        interior = (
            jax.nn.log_sigmoid(upper)
            + jax.nn.log_sigmoid(-lower)
            + jnp.log(-jnp.expm1(-2.0 * half * inv_scale))
        )
        bottom = jax.nn.log_sigmoid(upper)  # P(y < c_0 + half)
        top = jax.nn.log_sigmoid(-lower)  # P(y > c_{L-1} - half)
        per_component = jnp.where(
            level == 0, bottom, jnp.where(level == self.num_levels - 1, top, interior)
        )
        return jax.nn.logsumexp(jax.nn.log_softmax(logits, axis=-1) + per_component, axis=-1)

    def sample(self, params, *, key):
        logits, means, log_scales = self._split(params)
        k_component, k_logistic = jr.split(key)
        component = jr.categorical(k_component, logits, axis=-1)[..., None]
        mean = jnp.take_along_axis(means, component, axis=-1)[..., 0]
        log_scale = jnp.take_along_axis(log_scales, component, axis=-1)[..., 0]
        y = mean + jnp.exp(log_scale) * jr.logistic(k_logistic, mean.shape, mean.dtype)
        # The bin of y: rounding to the nearest centre is exactly the bins above.
        level = jnp.round((y + 1.0) * (self.num_levels - 1) / 2.0)
        return jnp.clip(level, 0, self.num_levels - 1).astype(jnp.int32)

    def check_data(self, x, name="x"):
        return _check_levels(x, self.num_levels, name)


class Bernoulli(AbstractPixelHead):
    """A Bernoulli distribution on `{0, 1}`; `params` is one logit."""

    @property
    def num_params(self) -> int:
        return 1

    def log_prob(self, params, x):
        x = jnp.asarray(x, params.dtype)
        logit = params[..., 0]
        return x * jax.nn.log_sigmoid(logit) + (1 - x) * jax.nn.log_sigmoid(-logit)

    def sample(self, params, *, key):
        return jr.bernoulli(key, jax.nn.sigmoid(params[..., 0])).astype(params.dtype)

    def check_data(self, x, name="x"):
        return _refuse_outside(
            x, lambda v, xp: (v != 0) & (v != 1), name, "must be binary (0 or 1)."
        )


class Gaussian(AbstractPixelHead):
    r"""A Gaussian on the real line, with a fixed or a learned, bounded variance.

    `params` is its mean and, with `learn_variance`, an unconstrained number mapped into
    `log_variance_bounds` by a sigmoid.
    Bounding the log-variance is what keeps a decoder's likelihood from diverging (a
    variance shrinking to zero on one well-fitted example sends the loss to $-\infty$ and
    the gradients to NaN, a common failure of VAEs with a learned variance).
    """

    learn_variance: bool = eqx.field(static=True)
    log_variance_bounds: tuple[float, float] = eqx.field(static=True)
    variance: float = eqx.field(static=True)

    def __init__(
        self,
        learn_variance: bool = False,
        *,
        log_variance_bounds: tuple[float, float] = (-7.0, 5.0),
        variance: float = 1.0,
    ):
        low, high = log_variance_bounds
        _checks.less(low, high, "log_variance_bounds[0]", "log_variance_bounds[1]")
        _checks.positive(variance, "variance")
        self.learn_variance = bool(learn_variance)
        self.log_variance_bounds = (float(low), float(high))
        self.variance = float(variance)

    @property
    def num_params(self) -> int:
        return 2 if self.learn_variance else 1

    def log_variance(self, params):
        """The log-variance that `params` encode (constant without `learn_variance`)."""
        if not self.learn_variance:
            return jnp.full(params.shape[:-1], np.log(self.variance), params.dtype)
        low, high = self.log_variance_bounds
        return low + (high - low) * jax.nn.sigmoid(params[..., 1])

    def log_prob(self, params, x):
        log_var = self.log_variance(params)
        z2 = (jnp.asarray(x, params.dtype) - params[..., 0]) ** 2 * jnp.exp(-log_var)
        return -0.5 * (z2 + log_var + np.log(2 * np.pi))

    def sample(self, params, *, key):
        std = jnp.exp(0.5 * self.log_variance(params))
        return params[..., 0] + std * jr.normal(key, params.shape[:-1], params.dtype)

    def check_data(self, x, name="x"):
        return _checks.finite(jnp.asarray(x), name)
