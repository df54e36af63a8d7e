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
    positive(T, "T")
    vt, vT = concrete(t_min), concrete(T)
    if vt is not None and vT is not None:
        check(
            bool(0 < vt < vT),
            "t_min",
            f"must lie in the open interval (0, T) = (0, {vT}), got {vt}.",
        )


def positive_int(value, name: str, least: int = 1) -> None:
    """Raise `ValueError` naming `name` unless `value` is an `int` (not a bool) >= `least`."""
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise ValueError(f"`{name}` must be an int >= {least}, got {value!r}.")


def batch_array(x, name: str, axis: str = "batch"):
    """Raise `ValueError` naming `name` unless `x` is a floating JAX array `(axis, *event)`."""
    if not isinstance(x, jax.Array) or not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"`{name}` must be a floating-point JAX array, got {type(x).__name__}.")
    if x.ndim < 2:
        raise ValueError(f"`{name}` must have shape ({axis}, *event_shape), got {x.shape}.")


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
