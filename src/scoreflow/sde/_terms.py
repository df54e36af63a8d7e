"""The SDEs of score-based modelling as diffrax terms.

The drift terms of the probability-flow ODE and of the reverse-time SDE carry the
`AbstractPrediction` they are built from, so a solver that needs more than the vector
field (the denoiser of an exponential integrator, the score of a Langevin corrector)
reads it from the term instead of being handed a second, possibly different, callable.
"""

import abc
from collections.abc import Callable

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, PyTree

from .._custom_types import ScalarLike
from ._base import AbstractSDE
from ._parameterisation import AbstractPrediction


class ScalarNoiseTerm(dfx.AbstractTerm):
    r"""$g(t)\,dW$ with a scalar $g$ and a Brownian motion of the state's shape.

    The noise is diagonal and additive; this is cheaper than `diffrax.ControlTerm`
    with a diagonal operator and works for states of any shape. `diffusion` may also
    return an array of the state's shape (a per-coordinate scale, e.g. a mask).
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


class _Drift(eqx.Module):
    # The drift of a model term as a diffrax vector field `(t, y, args)`.
    term: "AbstractModelTerm"

    def __call__(self, t, y, args):
        return self.term.drift(t, y)


class AbstractModelTerm(dfx.AbstractTerm):
    r"""An ODE term (control $dt$) whose vector field is built from a prediction.

    Besides diffrax's `vf` it exposes what it was built from: `score(t, y)` and
    `denoise(t, y)` ($E[x_0 \mid x_t = y]$), read through `model`, and the `sde`. With
    `batched` the state has a leading batch axis and `model` (which acts on one
    example) is vmapped over it. `vf`, `contr` and `prod` are those of a
    `diffrax.ODETerm` with the same vector field.
    """

    sde: eqx.AbstractVar[AbstractSDE]
    model: eqx.AbstractVar[AbstractPrediction]
    batched: eqx.AbstractVar[bool]

    @abc.abstractmethod
    def drift(self, t, y) -> Array:
        """The vector field at $(t, y)$."""

    def _read(self, read, t, y):
        return jax.vmap(read, in_axes=(None, 0))(t, y) if self.batched else read(t, y)

    def score(self, t, y):
        r"""$\nabla \log p_t(y)$ by the model (one network evaluation)."""
        return self._read(self.model.score, t, y)

    def denoise(self, t, y):
        r"""$E[x_0 \mid x_t = y]$ by the model (one network evaluation)."""
        return self._read(self.model.x0, t, y)

    def vf(self, t, y, args):
        return dfx.ODETerm(_Drift(self)).vf(t, y, args)

    def contr(self, t0, t1, **kwargs):
        return t1 - t0

    def prod(self, vf, control):
        return dfx.ODETerm(_Drift(self)).prod(vf, control)


class ProbabilityFlowTerm(AbstractModelTerm):
    r"""The probability-flow ODE $dx/dt = f(t)x - \tfrac12 g(t)^2 \nabla\log p_t(x)$.

    Song et al. 2021 (arXiv:2011.13456), eq. 13. Solve it from `T` down to `t_min`
    to sample, or upwards to encode.

    Args:
        sde: the SDE.
        model: the prediction whose score drives the flow.
        batched: whether the state has a leading batch axis.
    """

    sde: AbstractSDE
    model: AbstractPrediction
    batched: bool = eqx.field(static=True, default=True)

    def drift(self, t, y) -> Array:
        g = self.sde.diffusion(t)
        return self.sde.drift(t, y) - 0.5 * g**2 * self.score(t, y)


class ReverseDriftTerm(AbstractModelTerm):
    r"""The drift $f(t)x - g(t)^2 \nabla\log p_t(x)$ of the reverse-time SDE.

    Anderson 1982; Song et al. 2021 (arXiv:2011.13456), eq. 6; paired with a
    `ScalarNoiseTerm` by `reverse_sde_terms`.

    Args:
        sde: the SDE.
        model: the prediction whose score drives the drift.
        batched: whether the state has a leading batch axis.
    """

    sde: AbstractSDE
    model: AbstractPrediction
    batched: bool = eqx.field(static=True, default=True)

    def drift(self, t, y) -> Array:
        g = self.sde.diffusion(t)
        return self.sde.drift(t, y) - g**2 * self.score(t, y)


class _ForwardDrift(eqx.Module):
    sde: AbstractSDE

    def __call__(self, t, x, args):
        return self.sde.drift(t, x)


def probability_flow_term(
    sde: AbstractSDE, model: AbstractPrediction, *, batched: bool = True
) -> ProbabilityFlowTerm:
    r"""The probability-flow ODE of `model` under `sde` (see `ProbabilityFlowTerm`)."""
    return ProbabilityFlowTerm(sde, model, batched)


def reverse_sde_terms(
    sde: AbstractSDE, model: AbstractPrediction, path: dfx.AbstractPath, *, batched: bool = True
) -> dfx.MultiTerm:
    r"""The reverse-time SDE $dx = [f x - g^2 \nabla\log p_t(x)]dt + g\,d\bar W$.

    Anderson 1982; Song et al. 2021 (arXiv:2011.13456), eq. 6. Solve it with
    `t0 = T > t1 = t_min`: diffrax runs time backwards and `path` supplies increments
    of the reverse-time Brownian motion.
    """
    return dfx.MultiTerm(
        ReverseDriftTerm(sde, model, batched), ScalarNoiseTerm(sde.diffusion, path)
    )


def forward_sde_terms(sde: AbstractSDE, path: dfx.AbstractPath) -> dfx.MultiTerm:
    r"""The forward (noising) SDE $dx = f(t) x\,dt + g(t)\,dW$."""
    return dfx.MultiTerm(dfx.ODETerm(_ForwardDrift(sde)), ScalarNoiseTerm(sde.diffusion, path))
