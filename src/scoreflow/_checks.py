"""Construction-time validation helpers.

Hyperparameters are checked when they are concrete (plain numbers or concrete
arrays); inside a trace they cannot be inspected, and the SDE is then assumed to
have been validated where it was built.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer


def concrete(value) -> np.ndarray | None:
    """Return ``value`` as a NumPy array, or None if it is being traced."""
    if isinstance(value, Tracer):
        return None
    try:
        return np.asarray(value)
    except Exception:  # noqa: BLE001 - abstract values of any kind
        return None


def check(condition_holds: bool, name: str, message: str) -> None:
    """Raise ``ValueError`` naming the argument if ``condition_holds`` is False."""
    if not condition_holds:
        raise ValueError(f"`{name}` {message}")


def positive(value, name: str) -> None:
    v = concrete(value)
    if v is not None:
        check(bool(np.all(np.isfinite(v))), name, f"must be finite, got {v}.")
        check(bool(np.all(v > 0)), name, f"must be positive, got {v}.")


def nonnegative(value, name: str) -> None:
    v = concrete(value)
    if v is not None:
        check(bool(np.all(np.isfinite(v))), name, f"must be finite, got {v}.")
        check(bool(np.all(v >= 0)), name, f"must be non-negative, got {v}.")


def less(a, b, name_a: str, name_b: str) -> None:
    va, vb = concrete(a), concrete(b)
    if va is not None and vb is not None:
        check(
            bool(np.all(va < vb)),
            name_a,
            f"must be smaller than `{name_b}`, got {name_a}={va}, {name_b}={vb}.",
        )


def time_floor(t_min, T) -> None:
    scalar(T, "T")
    scalar(t_min, "t_min")
    positive(T, "T")
    vt, vT = concrete(t_min), concrete(T)
    if vt is not None and vT is not None:
        check(
            bool(0 < vt < vT),
            "t_min",
            f"must lie in the open interval (0, T) = (0, {vT}), got {vt}.",
        )


def positive_int(value, name: str, least: int = 1) -> None:
    """Raise `ValueError` naming `name` unless `value` is an int (not a bool) >= `least`.

    A NumPy integer (`x.shape[0]` of a NumPy array, `np.int64(3)`) counts as an int.
    """
    ok = isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)
    if not ok or value < least:
        raise ValueError(f"`{name}` must be an int >= {least}, got {value!r}.")


def shape(value, name: str) -> tuple[int, ...]:
    """`value` as a shape, raising `ValueError` naming `name` unless it holds ints >= 0."""
    try:
        dims = tuple(value)
    except TypeError:
        dims = None
    if dims is None or not all(
        isinstance(n, int | np.integer) and not isinstance(n, bool | np.bool_) and n >= 0
        for n in dims
    ):
        raise ValueError(f"`{name}` must be a tuple of ints >= 0, got {value!r}.")
    return tuple(int(n) for n in dims)


def scalar(value, name: str) -> None:
    """Raise `ValueError` naming `name` unless `value` is a real scalar.

    A Python number or a 0-d array (concrete or traced) passes; a non-scalar array, or a
    value that is not a number at all, does not.
    """
    if isinstance(value, bool | np.bool_) or not isinstance(
        value, int | float | np.number | np.ndarray | jax.Array
    ):
        raise ValueError(f"`{name}` must be a real number, got {type(value).__name__}.")
    shape = np.shape(value)
    if shape != ():
        raise ValueError(
            f"`{name}` must be a scalar, got an array of shape {shape} (one SDE, model or "
            "solve per value: `jax.vmap` over a function that builds it)."
        )
    dtype = jnp.result_type(value)
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        raise ValueError(f"`{name}` must be a real number, got dtype {dtype}.")


def key(value, name: str = "key"):
    """Raise `ValueError` naming `name` unless `value` is one PRNG key.

    The convention is a typed key, `jax.random.key(seed)`, of shape `()`. A legacy
    `jax.random.PRNGKey(seed)` (a `uint32[2]` array) is accepted too: jaxtyping's
    `PRNGKeyArray`, the annotation of every `key` here, includes it (and the `uint32[4]`
    raw key of the `rbg` implementations), and every `jax.random` function still takes
    it. An integer seed, a batch of keys or any other
    array is refused (JAX's own error names neither the argument nor the fix). Works on
    traced keys as well (only the shape and dtype are read). Returns `value`.
    """
    dtype = getattr(value, "dtype", None)
    shape = getattr(value, "shape", None)
    if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key):
        if shape == ():
            return value
        raise ValueError(
            f"`{name}` must be one PRNG key, got a key array of shape {shape}: pass one "
            "key (`jax.random.split(key)[0]`), or `jax.vmap` over the keys."
        )
    if dtype is not None and dtype == np.uint32 and shape in ((2,), (4,)):
        return value
    got = type(value).__name__ if dtype is None else f"an array of dtype {dtype} and shape {shape}"
    raise ValueError(f"`{name}` must be a PRNG key, `jax.random.key(seed)`, got {got}.")


# Half precision breaks in the solvers' loops (diffrax's step-size arithmetic and
# equinox's checkpoint buffers need float32 or wider), so it is refused at the boundary.
FLOAT_DTYPES = ("float32", "float64")


def float_dtype(dtype, name: str = "dtype"):
    """`dtype` as a NumPy dtype, raising `ValueError` naming `name` unless float32/float64.

    `None` is JAX's default float (float64 when `jax_enable_x64` is on).
    """
    if dtype is None:
        return jnp.dtype(jnp.result_type(float))
    try:
        d = jnp.dtype(dtype)
    except TypeError:
        raise ValueError(
            f"`{name}` must be a floating dtype {FLOAT_DTYPES}, got {dtype!r}."
        ) from None
    if d.name not in FLOAT_DTYPES:
        why = " (half precision is not supported)" if d.name in ("float16", "bfloat16") else ""
        raise ValueError(f"`{name}` must be one of {FLOAT_DTYPES}{why}, got {d.name}.")
    return d


def sign(value, direction, name: str, why: str) -> None:
    """Raise `ValueError` naming `name` unless a concrete `value` has the sign of `direction`.

    `direction` is a concrete number (`t1 - t0`); `why` says what the sign follows from.
    """
    v, d = concrete(value), concrete(direction)
    if v is None or d is None:
        return
    check(bool(np.all(np.isfinite(v))), name, f"must be finite, got {v}.")
    want = "positive" if float(d) > 0 else "negative"
    check(bool(np.all(v * np.sign(d) > 0)), name, f"must be {want} ({why}), got {v}.")


def batch_array(x, name: str, axis: str = "batch"):
    """Raise `ValueError` naming `name` unless `x` is a floating JAX array `(axis, *event)`."""
    if not isinstance(x, jax.Array) or not jnp.issubdtype(x.dtype, jnp.floating):
        what = type(x).__name__ if not isinstance(x, jax.Array) else f"dtype {x.dtype}"
        raise ValueError(f"`{name}` must be a floating-point JAX array, got {what}.")
    if x.ndim < 2:
        raise ValueError(f"`{name}` must have shape ({axis}, *event_shape), got {x.shape}.")


def tolerances(rtol, atol, prefix: str = "") -> None:
    """Raise `ValueError` unless the concrete `rtol` and `atol` are finite scalars >= 0.

    `prefix` names where they sit (`"stepsize_controller."`).
    """
    for name, value in (("rtol", rtol), ("atol", atol)):
        scalar(value, prefix + name)
        nonnegative(value, prefix + name)


def max_steps(value, name: str = "max_steps") -> None:
    """Raise `ValueError` unless `value` is `None` (unbounded, where diffrax allows) or >= 1."""
    if value is not None:
        positive_int(value, name)


def finite(x, name: str):
    """Raise if `x` holds NaN or infinity.

    A concrete array is checked at once (`ValueError`); a traced one at run time through
    `equinox.error_if`, so the check also holds under `jit`.
    """
    message = f"`{name}` contains non-finite values."
    value = concrete(x)
    if value is not None:
        if not np.all(np.isfinite(value)):
            raise ValueError(message)
        return x
    return eqx.error_if(x, ~jnp.all(jnp.isfinite(x)), message)


def label(y, num_classes: int, name: str = "y", *, null: bool = False):
    """`labels` for one label: also raise unless `y` is a scalar."""
    y = labels(y, num_classes, name, null=null)
    if y.shape != ():
        raise ValueError(f"`{name}` must be one label (a scalar), got shape {y.shape}.")
    return y


def labels(y, num_classes: int, name: str = "y", *, null: bool = False):
    """Check integer class labels in `0..num_classes - 1` (or `num_classes`, the null label).

    Concrete labels raise `ValueError` at once; traced ones at run time through
    `equinox.error_if`. Returns `y` as an integer array.
    """
    y = jnp.asarray(y)
    if not jnp.issubdtype(y.dtype, jnp.integer):
        raise ValueError(f"`{name}` must hold integer class labels, got dtype {y.dtype}.")
    top = num_classes if null else num_classes - 1
    what = f"in 0..{top}" + (f" ({num_classes} is the null label)" if null else "")
    value = concrete(y)
    if value is not None:
        if value.size and (value.min() < 0 or value.max() > top):
            raise ValueError(f"`{name}` must be class labels {what}, got {value}.")
        return y
    return eqx.error_if(y, jnp.any((y < 0) | (y > top)), f"`{name}` must be class labels {what}.")
