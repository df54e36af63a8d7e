from collections.abc import Callable

import diffrax as dfx
import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array

from .._custom_types import ScalarLike
from ._terms import ScalarNoiseTerm


class _HalfScore(eqx.Module):
    score: Callable[[ScalarLike, Array], Array]

    def __call__(self, t, x, args):
        return 0.5 * self.score(t, x)


def _unit(t):
    return jnp.ones_like(jnp.asarray(t))


def langevin_terms(
    score: Callable[[ScalarLike, Array], Array], path: dfx.AbstractPath
) -> dfx.MultiTerm:
    r"""The overdamped Langevin SDE $dx = \tfrac12 \nabla\log\pi(x)\,dt + dW$.

    Its stationary law is $\pi$ (Roberts & Tweedie 1996); Euler–Maruyama with step $h$
    is the unadjusted Langevin algorithm
    $x' = x + \tfrac h2 \nabla\log\pi(x) + \sqrt h\,z$.

    Args:
        score: $\nabla \log \pi$ as a callable `(t, x) -> array`; a time-independent
            target ignores `t`.
        path: the Brownian motion, of the state's shape.
    """
    return dfx.MultiTerm(dfx.ODETerm(_HalfScore(score)), ScalarNoiseTerm(_unit, path))
