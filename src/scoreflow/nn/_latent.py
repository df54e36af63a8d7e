r"""Networks of latent-variable models: residual MLPs, Gaussian encoders, pixel decoders."""

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from .. import _checks


def soft_clamp(v: Array, low: float, high: float) -> Array:
    r"""A smooth clamp of `v` into $(low - \epsilon, high)$, the identity well inside.

    $h - \mathrm{softplus}(h - l - \mathrm{softplus}(v - l))$: it tends to $h$ as
    $v \to \infty$, to $l - \log(1 + e^{-(h - l)})$ as $v \to -\infty$, and is $v$ to
    within $e^{-(v - l)} + e^{-(h - v)}$ between. Bounding a log-variance this way keeps
    a Gaussian's density finite whatever the network emits (an exploding or vanishing
    variance is the usual source of NaN in VAE training) while leaving a variance near
    one, where training starts, untouched.
    """
    return high - jax.nn.softplus(high - low - jax.nn.softplus(v - low))


def _check_bounds(bounds, name):
    low, high = bounds
    _checks.scalar(low, f"{name}[0]")
    _checks.scalar(high, f"{name}[1]")
    _checks.less(low, high, f"{name}[0]", f"{name}[1]")
    return float(low), float(high)


class ResidualMLP(eqx.Module):
    r"""A vector MLP with residual hidden blocks, $\mathbb{R}^{n} \to \mathbb{R}^{m}$.

    $h_0 = W_0 x$, then `depth` blocks $h_{k+1} = h_k + W''_k\,\phi(W'_k\,\phi(h_k))$
    (the pre-activation residual cell of He et al. 2016, arXiv:1603.05027, at the small
    scale of NVAE's and VDVAE's cells), then $W_{\rm out}\,\phi(h)$. The input is
    flattened, so any event shape is accepted.

    Args:
        in_size: input size (the flattened input).
        out_size: output size.
        width: hidden width.
        depth: residual blocks (>= 0).
        activation: nonlinearity $\phi$.
        zero_output: start with a zero output layer (the network predicts 0).
        key: PRNG key.
    """

    first: eqx.nn.Linear
    blocks: tuple[tuple[eqx.nn.Linear, eqx.nn.Linear], ...]
    last: eqx.nn.Linear
    activation: Callable = eqx.field(static=True)
    in_size: int = eqx.field(static=True)
    out_size: int = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        out_size: int,
        width: int = 128,
        depth: int = 2,
        *,
        activation: Callable = jax.nn.silu,
        zero_output: bool = False,
        key: PRNGKeyArray,
    ):
        _checks.positive_int(in_size, "in_size")
        _checks.positive_int(out_size, "out_size")
        _checks.positive_int(width, "width")
        _checks.positive_int(depth, "depth", least=0)
        _checks.key(key)
        keys = jr.split(key, 2 * depth + 2)
        self.first = eqx.nn.Linear(in_size, width, key=keys[0])
        self.blocks = tuple(
            (
                eqx.nn.Linear(width, width, key=keys[1 + 2 * i]),
                # The second layer of a block starts small: every block begins near the
                # identity, so depth does not change the scale of the start.
                _scaled(eqx.nn.Linear(width, width, key=keys[2 + 2 * i]), 0.1),
            )
            for i in range(depth)
        )
        last = eqx.nn.Linear(width, out_size, key=keys[-1])
        self.last = _scaled(last, 0.0) if zero_output else last
        self.activation = activation
        self.in_size = in_size
        self.out_size = out_size

    def __call__(self, x: Float[Array, "..."]) -> Float[Array, " out"]:
        """The output at one input (flattened on entry)."""
        if x.size != self.in_size:
            raise ValueError(f"`x` must have {self.in_size} elements, got shape {x.shape}.")
        dtype = self.first.weight.dtype
        h = self.first(x.reshape(-1).astype(dtype))
        for a, b in self.blocks:
            h = h + b(self.activation(a(self.activation(h))))
        return self.last(self.activation(h))


def _scaled(layer: eqx.nn.Linear, scale: float) -> eqx.nn.Linear:
    if layer.bias is None:
        return eqx.tree_at(lambda m: m.weight, layer, scale * layer.weight)
    return eqx.tree_at(
        lambda m: (m.weight, m.bias), layer, (scale * layer.weight, scale * layer.bias)
    )


class GaussianEncoder(eqx.Module):
    r"""An amortised diagonal Gaussian $q(z \mid x) = N(\mu(x), \mathrm{diag}\,e^{v(x)})$.

    A `ResidualMLP` emits $(\mu, v)$; the log-variance $v$ is bounded by `soft_clamp`
    into `log_var_bounds`, so no input can produce a zero or infinite variance (Kingma &
    Welling 2014, arXiv:1312.6114, appendix C.2, the Gaussian MLP encoder).

    Args:
        event_shape: the shape of one example.
        latent_dim: the size of $z$.
        width: hidden width.
        depth: residual blocks.
        log_var_bounds: `(low, high)` of the log-variance.
        activation: nonlinearity.
        key: PRNG key.
    """

    net: ResidualMLP
    latent_dim: int = eqx.field(static=True)
    log_var_bounds: tuple[float, float] = eqx.field(static=True)

    def __init__(
        self,
        event_shape: tuple[int, ...],
        latent_dim: int,
        width: int = 128,
        depth: int = 2,
        *,
        log_var_bounds: tuple[float, float] = (-12.0, 4.0),
        activation: Callable = jax.nn.silu,
        key: PRNGKeyArray,
    ):
        _checks.positive_int(latent_dim, "latent_dim")
        self.log_var_bounds = _check_bounds(log_var_bounds, "log_var_bounds")
        size = math.prod(_checks.shape(event_shape, "event_shape"))
        self.net = ResidualMLP(size, 2 * latent_dim, width, depth, activation=activation, key=key)
        self.latent_dim = latent_dim

    def __call__(self, x: Float[Array, "..."]) -> tuple[Float[Array, " z"], Float[Array, " z"]]:
        r"""$(\mu, \log\sigma^2)$ of $q(z \mid x)$ at one example."""
        out = self.net(x)
        mean, raw = out[: self.latent_dim], out[self.latent_dim :]
        return mean, soft_clamp(raw, *self.log_var_bounds)


class PixelDecoder(eqx.Module):
    r"""A decoder $z \mapsto$ the parameters of an output head at every element.

    A `ResidualMLP` from the latent to `(*event_shape, num_params)`: the parameters of a
    `scoreflow.nn.AbstractPixelHead` (its `num_params`) at each element of the event.

    Args:
        latent_dim: the size of $z$.
        event_shape: the shape of one example.
        num_params: the head's parameters per element.
        width: hidden width.
        depth: residual blocks.
        activation: nonlinearity.
        key: PRNG key.
    """

    net: ResidualMLP
    event_shape: tuple[int, ...] = eqx.field(static=True)
    num_params: int = eqx.field(static=True)

    def __init__(
        self,
        latent_dim: int,
        event_shape: tuple[int, ...],
        num_params: int,
        width: int = 128,
        depth: int = 2,
        *,
        activation: Callable = jax.nn.silu,
        key: PRNGKeyArray,
    ):
        _checks.positive_int(latent_dim, "latent_dim")
        _checks.positive_int(num_params, "num_params")
        self.event_shape = _checks.shape(event_shape, "event_shape")
        size = math.prod(self.event_shape) * num_params
        self.net = ResidualMLP(latent_dim, size, width, depth, activation=activation, key=key)
        self.num_params = num_params

    def __call__(self, z: Float[Array, " z"]) -> Float[Array, "*event p"]:
        """The head's parameters, `(*event_shape, num_params)`, at one latent."""
        return self.net(z).reshape(*self.event_shape, self.num_params)


def _positive(w):
    return jax.nn.softplus(w)


class MonotoneMLP(eqx.Module):
    r"""A strictly increasing scalar function $[0, 1] \to \mathbb{R}$, elementwise.

    The monotone network of the variational diffusion model's learned noise schedule
    (Kingma et al. 2021, arXiv:2107.00630, appendix H):
    $\tilde\gamma(u) = l_1(u) + \frac1W\sum_j w^{(3)}_j\,\sigma(w^{(2)}_j\,l_1(u) + b_j)$
    with $l_1(u) = w^{(1)} u + b^{(1)}$, every weight made positive (a softplus of a free
    parameter), so $\tilde\gamma' > 0$ for every value of the parameters. It acts
    elementwise on an array of any shape.

    Args:
        width: the sigmoid units $W$.
        key: PRNG key.
    """

    w1: Float[Array, ""]
    b1: Float[Array, ""]
    w2: Float[Array, " width"]
    b2: Float[Array, " width"]
    w3: Float[Array, " width"]

    def __init__(self, width: int = 1024, *, dtype=None, key: PRNGKeyArray):
        _checks.positive_int(width, "width")
        _checks.key(key)
        dtype = _checks.float_dtype(dtype)
        k2, k3, k4 = jr.split(key, 3)
        # softplus(0.5413) = 1: the linear part starts as the identity.
        self.w1 = jnp.asarray(0.5413248546129181, dtype)
        self.b1 = jnp.zeros((), dtype)
        self.w2 = jr.normal(k2, (width,), dtype)
        self.b2 = jr.normal(k3, (width,), dtype)
        self.w3 = jr.normal(k4, (width,), dtype)

    def __call__(self, u: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        r"""$\tilde\gamma(u)$ elementwise."""
        u = jnp.asarray(u, self.w1.dtype)
        h = _positive(self.w1) * u + self.b1
        lead = (1,) * h.ndim  # explicit broadcasting (rank promotion may be an error)
        w2, b2, w3 = (
            v.reshape(*lead, -1) for v in (_positive(self.w2), self.b2, _positive(self.w3))
        )
        s = jax.nn.sigmoid(h[..., None] * w2 + b2)
        return h + jnp.mean(w3 * s, axis=-1)
