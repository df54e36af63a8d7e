from collections.abc import Callable

import diffrax as dfx
import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array

from .._custom_types import ScalarLike
from ._terms import ScalarNoiseTerm


class _HalfScore(eqx.Module):
    score: Callable[[ScalarLike, Array], Array]
    free: Array | None

    def __call__(self, t, x, args):
        if self.free is None:
            return 0.5 * self.score(t, x)
        return 0.5 * self.free * self.score(t, x)


class _Scale(eqx.Module):
    free: Array | None

    def __call__(self, t):
        return jnp.ones_like(jnp.asarray(t)) if self.free is None else self.free


def langevin_terms(
    score: Callable[[ScalarLike, Array], Array],
    path: dfx.AbstractPath,
    *,
    free: Array | None = None,
) -> dfx.MultiTerm:
    r"""The overdamped Langevin SDE $dx = \tfrac12 \nabla\log\pi(x)\,dt + dW$.

    Its stationary law is $\pi$ (Roberts & Tweedie 1996); Euler–Maruyama with step $h$
    is the unadjusted Langevin algorithm
    $x' = x + \tfrac h2 \nabla\log\pi(x) + \sqrt h\,z$. This is the one step-size
    convention of every Langevin sampler in scoreflow (ULA, MALA, annealed Langevin,
    the predictor–corrector's corrector): `h` is the time step of this SDE.

    Args:
        score: $\nabla \log \pi$ as a callable `(t, x) -> array`; a time-independent
            target ignores `t`.
        path: the Brownian motion, of the state's shape.
        free: optional array of the state's shape (1 = moves, 0 = held): drift and
            noise are multiplied by it, so the held coordinates never change
            (inpainting).
    """
    return dfx.MultiTerm(dfx.ODETerm(_HalfScore(score, free)), ScalarNoiseTerm(_Scale(free), path))
