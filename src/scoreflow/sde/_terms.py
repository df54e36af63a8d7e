"""The SDEs of score-based modelling as diffrax terms.

Score functions here act on the state as the solver sees it; batching (vmapping a
per-example network over a batch axis) is done by the caller, `scoreflow.solve`.
"""

from collections.abc import Callable

import diffrax as dfx
import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, PyTree

from .._custom_types import ScalarLike
from ._base import AbstractSDE

ScoreFn = Callable[[ScalarLike, Array], Array]


class ScalarNoiseTerm(dfx.AbstractTerm):
    r"""$g(t)\,dW$ with a scalar $g$ and a Brownian motion of the state's shape.

    The noise is diagonal and additive; this is cheaper than `diffrax.ControlTerm`
    with a diagonal operator and works for states of any shape.
    """

    diffusion: Callable[[ScalarLike], Array]
    path: dfx.AbstractPath

    def vf(self, t, y, args):
        return jnp.broadcast_to(self.diffusion(t), jnp.shape(y)).astype(jnp.result_type(y))

    def contr(self, t0, t1, **kwargs):
        return self.path.evaluate(t0, t1, **kwargs)

    def prod(self, vf, control):
        return vf * _brownian_increment(control)

    def vf_prod(self, t, y, args, control):
        g = jnp.asarray(self.diffusion(t)).astype(jnp.result_type(y))
        return g * _brownian_increment(control)


def _brownian_increment(control: PyTree) -> Array:
    # Lévy-area-carrying controls (for SRK solvers) expose the increment as `.W`.
    return control.W if isinstance(control, dfx.AbstractBrownianIncrement) else control


class _ProbabilityFlow(eqx.Module):
    sde: AbstractSDE
    score: ScoreFn

    def __call__(self, t, x, args):
        g = self.sde.diffusion(t)
        return self.sde.drift(t, x) - 0.5 * g**2 * self.score(t, x)


class _ReverseDrift(eqx.Module):
    sde: AbstractSDE
    score: ScoreFn

    def __call__(self, t, x, args):
        g = self.sde.diffusion(t)
        return self.sde.drift(t, x) - g**2 * self.score(t, x)


class _ForwardDrift(eqx.Module):
    sde: AbstractSDE

    def __call__(self, t, x, args):
        return self.sde.drift(t, x)


def probability_flow_term(sde: AbstractSDE, score: ScoreFn) -> dfx.ODETerm:
    r"""The probability-flow ODE $dx/dt = f(t)x - \tfrac12 g(t)^2 \nabla\log p_t(x)$.

    Song et al. 2021 (arXiv:2011.13456), eq. 13. Solve it from `T` down to `t_min`
    to sample, or upwards to encode.
    """
    return dfx.ODETerm(_ProbabilityFlow(sde, score))


def reverse_sde_terms(sde: AbstractSDE, score: ScoreFn, path: dfx.AbstractPath) -> dfx.MultiTerm:
    r"""The reverse-time SDE $dx = [f x - g^2 \nabla\log p_t(x)]dt + g\,d\bar W$.

    Anderson 1982; Song et al. 2021 (arXiv:2011.13456), eq. 6. Solve it with
    `t0 = T > t1 = t_min`: diffrax runs time backwards and `path` supplies increments
    of the reverse-time Brownian motion.
    """
    return dfx.MultiTerm(
        dfx.ODETerm(_ReverseDrift(sde, score)), ScalarNoiseTerm(sde.diffusion, path)
    )


def forward_sde_terms(sde: AbstractSDE, path: dfx.AbstractPath) -> dfx.MultiTerm:
    r"""The forward (noising) SDE $dx = f(t) x\,dt + g(t)\,dW$."""
    return dfx.MultiTerm(dfx.ODETerm(_ForwardDrift(sde)), ScalarNoiseTerm(sde.diffusion, path))
