r"""Bits per dimension of discrete data under a continuous density model.

Discrete data $x \in \{0, \dots, L - 1\}^D$ ($L = 2^n$ levels for an $n$-bit image,
$L = 17$ for scikit-learn's 8x8 digits) have a probability
mass $P(x)$, not a density, so $-\log_2 P(x) / D \ge 0$ always. A continuous model $p$
on $\mathbb{R}^D$ assigns mass through *dequantisation*: with $v = x + u$,
$u \in [0, 1)^D$ and any density $q(u \mid x)$ on the unit cube,

$$\log P(x) = \log\int_{[0,1)^D} p_v(x + u)\,du
\ge E_{q(u \mid x)}[\log p_v(x + u) - \log q(u \mid x)]$$

(Theis et al. 2016, arXiv:1511.01844; Ho et al. 2019, "Flow++", arXiv:1902.00275,
eq. 12). Uniform dequantisation is $q = 1$; variational dequantisation learns $q$
(Ho et al. 2019, sec. 3.1; Song et al. 2021, "Maximum Likelihood Training of
Score-Based Diffusion Models", arXiv:2101.09258, sec. 6, for score models).

The model usually lives on rescaled data $y = a + (b - a)(x + u) / L \in [a, b)^D$
(e.g. $[-1, 1)$), so $\log p_v(x + u) = \log p_y(y) + D \log((b - a)/L)$. Forgetting
this Jacobian, the $D \log L$ term, is how negative bits/dim are reported: a
continuous density on $[a, b)^D$ can exceed one, a probability mass cannot.

This is scoreflow's one dequantisation path: the data loaders return bin centres
(training data) or the integers themselves (`scoreflow.data.digits_raw`), never
dequantised values.
"""

from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array

from .. import _checks
from .._custom_types import Key


class BitsPerDimResult(eqx.Module):
    r"""What `bits_per_dim` returns.

    Attributes:
        bits_per_dim: `(batch,)` $-\mathrm{ELBO}/(D \ln 2)$, an upper bound on
            $-\log_2 P(x)/D$ in expectation over the dequantisation noise.
        elbo: `(batch,)` the dequantisation lower bound on $\log P(x)$ in nats.
        log_prob: `(batch,)` the model's log-density at the rescaled, dequantised data.
    """

    bits_per_dim: Array
    elbo: Array
    log_prob: Array


def uniform_dequantiser(x: Array, *, key: Key) -> tuple[Array, Array]:
    r"""Uniform dequantisation: $u \sim U[0, 1)^D$, $\log q(u \mid x) = 0$."""
    u = jr.uniform(key, x.shape, jnp.result_type(float))
    return u, jnp.zeros(x.shape[:1], u.dtype)


def bin_centres(x: Array, *, levels: int, data_range=(-1.0, 1.0), dtype=None) -> Array:
    r"""Integer data $x \in \{0..L-1\}$ mapped to the centres $a + (b - a)(x + \tfrac12)/L$."""
    dtype = _checks.float_dtype(dtype)
    lo, hi = (float(v) for v in data_range)
    return (lo + (hi - lo) * (jnp.asarray(x).astype(dtype) + 0.5) / levels).astype(dtype)


def bits_per_dim(
    log_prob: Callable[..., Array],
    x: Array,
    *,
    levels: int = 256,
    data_range: tuple[float, float] = (-1.0, 1.0),
    dequantiser: Callable[..., tuple[Array, Array]] | None = None,
    dtype=None,
    key: Key,
) -> BitsPerDimResult:
    r"""Bits per dimension of integer data under a continuous model, with dequantisation.

    Computes $\mathrm{ELBO} = \log p_y(y) + D\log\frac{b - a}{L} - \log q(u \mid x)$ with
    $y = a + (b - a)(x + u)/L$, $u \sim q(\cdot \mid x)$, and returns
    $-\mathrm{ELBO}/(D \ln 2)$ (see the module docstring; Ho et al. 2019, eq. 12). Its
    expectation over $u$ is $\ge -\log_2 P(x)/D \ge 0$: a negative average means the
    model is not a normalised density on $[a, b)^D$ or `data_range`/`levels` do not
    match how the model's data were scaled.

    Args:
        log_prob: `(y, *, key) -> (batch,)` log-density of the continuous model on
            rescaled data `y` of `x`'s shape, e.g.
            `lambda y, *, key: log_likelihood(sde, model, y, key=key).log_prob`.
        x: `(batch, *event)` integer data in $\{0, \dots, L - 1\}$.
        levels: the number of levels $L \ge 2$ (`2**num_bits` for images: 256 for
            8-bit, 32 for Glow's 5-bit CelebA-HQ; 17 for the digits).
        data_range: $(a, b)$, the interval the model's data were scaled to.
        dequantiser: `(x, *, key) -> (u, log_q)` with `u` in $[0, 1)$ of `x`'s shape and
            `log_q` of shape `(batch,)` (default `uniform_dequantiser`); a learned
            variational dequantiser (Ho et al. 2019) is any module of that signature.
        dtype: float dtype of `y` (default: JAX's default float).
        key: PRNG key of the dequantisation noise and of `log_prob`.

    Returns:
        A `BitsPerDimResult`.

    Raises:
        ValueError: on non-integer `x`, a bad `levels` or `data_range`, or a shape
            mismatch in what `dequantiser` or `log_prob` return; a runtime error if `x`
            lies outside $\{0, \dots, L - 1\}$.
    """
    _checks.positive_int(levels, "levels", least=2)
    _checks.key(key)
    lo, hi = (float(v) for v in data_range)
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"`data_range` must be finite with low < high, got {data_range}.")
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise ValueError(
            f"`x` must hold integers in [0, levels - 1] (discrete data), got dtype "
            f"{x.dtype}; pass the raw quantised values, not rescaled floats."
        )
    if x.ndim < 2:
        raise ValueError(f"`x` must have shape (batch, *event_shape), got {x.shape}.")
    x = eqx.error_if(
        x,
        jnp.any((x < 0) | (x >= levels)),
        f"`x` must lie in [0, {levels - 1}] for levels={levels}.",
    )
    dtype = _checks.float_dtype(dtype)
    dequantiser = uniform_dequantiser if dequantiser is None else dequantiser
    k_u, k_model = jr.split(key)
    u, log_q = dequantiser(x, key=k_u)
    if u.shape != x.shape or log_q.shape != x.shape[:1]:
        raise ValueError(
            f"`dequantiser` must return u of shape {x.shape} and log_q of shape "
            f"{x.shape[:1]}, got {u.shape} and {log_q.shape}."
        )
    y = lo + (hi - lo) * (x.astype(dtype) + u.astype(dtype)) / levels
    lp = log_prob(y, key=k_model)
    if lp.shape != x.shape[:1]:
        raise ValueError(f"`log_prob` must return shape {x.shape[:1]}, got {lp.shape}.")
    num_dims = int(np.prod(x.shape[1:]))
    log_jac = num_dims * (np.log(hi - lo) - np.log(levels))
    elbo = lp.astype(dtype) + jnp.asarray(log_jac, dtype) - log_q.astype(dtype)
    bpd = -elbo / jnp.asarray(num_dims * np.log(2.0), dtype)
    return BitsPerDimResult(bits_per_dim=bpd, elbo=elbo, log_prob=lp)
