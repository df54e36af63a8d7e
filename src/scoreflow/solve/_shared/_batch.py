from collections.abc import Callable

import equinox as eqx
import jax


class Batched(eqx.Module):
    """A per-example `(t, x) -> array` applied to a batch: `x` gets a leading axis.

    A module, not a `jax.vmap` closure, so the wrapped model's parameters stay pytree
    leaves that gradients and diffrax's adjoints can see.
    """

    fn: Callable

    def __call__(self, t, x):
        return jax.vmap(self.fn, in_axes=(None, 0))(t, x)
