import abc

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._custom_types import Key


def check_event(x: Array, shape: tuple[int, ...], name: str) -> Array:
    """Raise a `ValueError` unless `x` is a floating array of event shape `shape`."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"`{name}` must be a floating-point array, got dtype {x.dtype}.")
    if x.shape != tuple(shape):
        raise ValueError(
            f"`{name}` must have the bijection's event shape {tuple(shape)}, got {x.shape}; "
            "bijections act on one event, `jax.vmap` them (or use `Flow`) for a batch."
        )
    return x


class AbstractBijection(eqx.Module):
    r"""An invertible, differentiable map $T$ on events of a fixed `shape`.

    `transform_and_log_det(x)` returns $(T(x), \log|\det \partial T/\partial x|)$ and
    `inverse_and_log_det(y)` returns $(T^{-1}(y), \log|\det \partial T^{-1}/\partial y|)$,
    each log-det a scalar per event (flowjax's convention). Both act on one event and are
    vmapped for a batch. `transform` and `inverse` are derived.

    Subclasses implement `_transform_and_log_det` and `_inverse_and_log_det`; the public
    methods check the event shape first. `key` is used only by stochastic estimators
    (the Hutchinson trace of `CNF`); deterministic bijections ignore it.
    """

    shape: eqx.AbstractVar[tuple[int, ...]]

    @abc.abstractmethod
    def _transform_and_log_det(self, x: Array, key: Key | None) -> tuple[Array, Array]:
        """Forward map and its log-det on a checked event."""

    @abc.abstractmethod
    def _inverse_and_log_det(self, y: Array, key: Key | None) -> tuple[Array, Array]:
        """Inverse map and its log-det on a checked event."""

    def transform_and_log_det(
        self, x: Array, *, key: Key | None = None
    ) -> tuple[Float[Array, "..."], Float[Array, ""]]:
        r"""Return $(T(x), \log|\det J_T(x)|)$ for one event `x`."""
        return self._transform_and_log_det(check_event(x, self.shape, "x"), key)

    def inverse_and_log_det(
        self, y: Array, *, key: Key | None = None
    ) -> tuple[Float[Array, "..."], Float[Array, ""]]:
        r"""Return $(T^{-1}(y), \log|\det J_{T^{-1}}(y)|)$ for one event `y`."""
        return self._inverse_and_log_det(check_event(y, self.shape, "y"), key)

    def transform(self, x: Array, *, key: Key | None = None) -> Float[Array, "..."]:
        """Return $T(x)$."""
        return self.transform_and_log_det(x, key=key)[0]

    def inverse(self, y: Array, *, key: Key | None = None) -> Float[Array, "..."]:
        """Return $T^{-1}(y)$."""
        return self.inverse_and_log_det(y, key=key)[0]
