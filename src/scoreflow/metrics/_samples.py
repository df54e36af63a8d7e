"""Validation of the sample sets that metrics compare.

Sample metrics compare rows of two arrays. A bad set must be an error that names the
argument, never a NaN averaged into a figure: non-finite rows are counted and reported
(eagerly as a `ValueError`; under `jit`, where values cannot be read, through
`equinox.error_if`), and `drop_nonfinite` removes them on the host, returning how many.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer
from jaxtyping import Array


def as_rows(x, name: str, *, least: int = 1) -> Array:
    """`x` as a float array `(n, d)` (events flattened), with at least `least` rows."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    if x.ndim < 2:
        raise ValueError(f"`{name}` must have shape (num_samples, *event_shape), got {x.shape}.")
    if x.shape[0] < least:
        raise ValueError(f"`{name}` needs at least {least} samples, got {x.shape[0]}.")
    return finite(x.reshape(x.shape[0], -1), name)


def finite(x: Array, name: str) -> Array:
    """Raise unless every row of `x` is finite, naming the argument and the count."""
    if isinstance(x, Tracer):
        return eqx.error_if(
            x,
            ~jnp.all(jnp.isfinite(x)),
            f"`{name}` has samples that are not finite (NaN or inf); drop them first "
            "(scoreflow.metrics.drop_nonfinite counts them).",
        )
    bad = int(np.sum(~np.all(np.isfinite(np.asarray(x)), axis=tuple(range(1, x.ndim)))))
    if bad:
        raise ValueError(
            f"`{name}` has {bad} of {x.shape[0]} samples that are not finite (NaN or inf); "
            "they are never averaged in: drop them first (scoreflow.metrics.drop_nonfinite "
            "counts them) and report the count."
        )
    return x


def pair(x, y, names: tuple[str, str], *, least: int = 1) -> tuple[Array, Array]:
    """Two sample sets of the same event shape and dtype, as rows."""
    x, y = jnp.asarray(x), jnp.asarray(y)
    if x.ndim < 2 or y.ndim < 2 or x.shape[1:] != y.shape[1:]:
        raise ValueError(
            f"`{names[0]}` and `{names[1]}` must be (num_samples, *event_shape) with the same "
            f"event shape, got {x.shape} and {y.shape}."
        )
    x, y = as_rows(x, names[0], least=least), as_rows(y, names[1], least=least)
    dtype = jnp.result_type(x.dtype, y.dtype)
    return x.astype(dtype), y.astype(dtype)


def featurise(features, x, y, names: tuple[str, str]):
    """`features(x)`, `features(y)` (or the sets themselves), checked to be `(n, F)` rows."""
    if features is None:
        return x, y
    if not callable(features):
        raise ValueError(f"`features` must be a function (n, ...) -> (n, F), got {features!r}.")
    out = []
    for name, a in zip(names, (x, y)):
        a = jnp.asarray(a)
        f = features(a)
        if not isinstance(f, jax.Array | np.ndarray) or f.ndim != 2 or f.shape[0] != a.shape[0]:
            got = f.shape if isinstance(f, jax.Array | np.ndarray) else type(f).__name__
            raise ValueError(
                f"`features` must map `{name}` of shape {a.shape} to ({a.shape[0]}, F) "
                f"features, got {got}."
            )
        out.append(f)
    if out[0].shape[1] != out[1].shape[1]:
        raise ValueError(
            f"`features` gave {out[0].shape[1]} features for `{names[0]}` and "
            f"{out[1].shape[1]} for `{names[1]}`."
        )
    return out[0], out[1]


def drop_nonfinite(x) -> tuple[Array, int]:
    """The rows of `x` that are finite, and how many were dropped (host-side, not jittable).

    Use it before a sample metric, and report the count next to the figure: a sampler
    that returns NaN for 1 % of its samples has failed on 1 %, which no metric of the
    other 99 % shows.
    """
    a = np.asarray(x)
    if a.ndim < 1:
        raise ValueError(f"`x` must have a leading sample axis, got shape {a.shape}.")
    ok = np.all(np.isfinite(a.reshape(a.shape[0], -1)), axis=1)
    return jnp.asarray(a[ok]), int(a.shape[0] - ok.sum())


def block_size_of(block_size, name: str = "block_size") -> int:
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"`{name}` must be a positive int, got {block_size!r}.")
    return block_size
