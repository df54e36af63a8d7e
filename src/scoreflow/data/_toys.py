"""Two-dimensional toy distributions."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float

from .. import _checks
from .._custom_types import Key
from ..analytic import GaussianMixture


def ring_mixture(dtype=None) -> GaussianMixture:
    r"""Eight equally weighted Gaussians (std 0.5) evenly spaced on a circle of radius 4.

    Its density is exact, so models trained on it are scored by KL(data‖model).
    """
    dtype = _checks.float_dtype(dtype)
    ang = 2 * np.pi * np.arange(8) / 8
    means = 4 * np.stack([np.cos(ang), np.sin(ang)], 1)
    return GaussianMixture(
        jnp.full(8, 1 / 8, dtype), jnp.asarray(means, dtype), jnp.full((8, 2), 0.25, dtype)
    )


def _two_moons(n, key, dtype):
    # scikit-learn's make_moons, noise 0.1, centred and scaled to unit-ish spread.
    k1, k2, k3 = jr.split(key, 3)
    t = jnp.pi * jr.uniform(k1, (n,), dtype)
    upper = jr.bernoulli(k2, 0.5, (n,))
    x = jnp.where(upper, jnp.cos(t), 1 - jnp.cos(t))
    y = jnp.where(upper, jnp.sin(t), 0.5 - jnp.sin(t))
    pts = jnp.stack([x - 0.5, y - 0.25], 1) * 2
    return pts + 0.1 * jr.normal(k3, (n, 2), dtype)


def _swiss_roll(n, key, dtype):
    k1, k2 = jr.split(key)
    t = 1.5 * jnp.pi * (1 + 2 * jr.uniform(k1, (n,), dtype))
    pts = jnp.stack([t * jnp.cos(t), t * jnp.sin(t)], 1) / 5
    return pts + 0.1 * jr.normal(k2, (n, 2), dtype)


def _checkerboard(n, key, dtype):
    # FFJORD's checkerboard (Grathwohl et al. 2019): uniform on 8 squares of [-4, 4]^2.
    k1, k2, k3 = jr.split(key, 3)
    x1 = 4 * jr.uniform(k1, (n,), dtype) - 2
    x2 = jr.uniform(k2, (n,), dtype) - 2 * jr.randint(k3, (n,), 0, 2).astype(dtype)
    x2 = x2 + jnp.floor(x1) % 2
    return 2 * jnp.stack([x1, x2], 1)


def _rings(n, key, dtype):
    # Four concentric circles of radii 1..4 with mass proportional to radius.
    k1, k2, k3 = jr.split(key, 3)
    radii = jnp.asarray([1.0, 2.0, 3.0, 4.0], dtype)
    r = radii[jr.categorical(k1, jnp.log(radii), shape=(n,))]
    a = 2 * jnp.pi * jr.uniform(k2, (n,), dtype)
    pts = jnp.stack([r * jnp.cos(a), r * jnp.sin(a)], 1)
    return pts + 0.08 * jr.normal(k3, (n, 2), dtype)


TOYS = ("ring_mixture", "two_moons", "swiss_roll", "checkerboard", "rings")


def toy_sample(name: str, num: int, *, dtype=None, key: Key) -> Float[Array, "{num} 2"]:
    """Draw `num` points of a 2-d toy distribution.

    Args:
        name: `"ring_mixture"` (case A, exact density via `ring_mixture()`),
            `"two_moons"`, `"swiss_roll"`, `"checkerboard"` or `"rings"`.
        num: number of points.
        dtype: floating dtype (default JAX's default float).
        key: PRNG key.

    Returns:
        `(num, 2)` points, roughly within $[-5, 5]^2$.

    Raises:
        ValueError: on an unknown `name`, a `num` that is not an int >= 0, a `dtype`
            other than float32 / float64, or a `key` that is not one PRNG key.
    """
    if name not in TOYS:
        raise ValueError(f"`name` must be one of {TOYS}, got {name!r}.")
    _checks.positive_int(num, "num", least=0)
    _checks.key(key)
    dtype = _checks.float_dtype(dtype)
    if name == "ring_mixture":
        return ring_mixture(dtype).sample(num, key=key)
    fn = {
        "two_moons": _two_moons,
        "swiss_roll": _swiss_roll,
        "checkerboard": _checkerboard,
        "rings": _rings,
    }[name]
    return jax.jit(fn, static_argnums=(0, 2))(num, key, dtype)
