r"""Shared pieces of scoreflow's diffusion solvers.

A diffusion solver is a `diffrax.AbstractSolver` that reads the denoiser
$\hat x_0(t, x) = E[x_0 \mid x_t = x]$ and the SDE's $(\alpha_t, \sigma_t)$ and log-SNR
$\lambda_t = \log(\alpha_t / \sigma_t)$ from a `scoreflow.sde.ProbabilityFlowTerm` (or,
for the reverse SDE, a `ReverseDriftTerm` beside the noise), instead of a black-box
vector field. In these variables the probability-flow ODE (Song et al. 2021,
arXiv:2011.13456, eq. 13) has the exact variation-of-constants solution (Lu et al. 2022,
DPM-Solver++, arXiv:2211.01095, eq. 9)

$$x_s = \frac{\sigma_s}{\sigma_t} x_t + \sigma_s \int_{\lambda_t}^{\lambda_s}
    e^{\lambda}\,\hat x_0(\lambda)\,d\lambda,$$

so an exponential integrator only has to approximate $\hat x_0$ along the path.
"""

from typing import ClassVar

import diffrax as dfx
import jax.numpy as jnp
from jaxtyping import Array

from ...sde import AbstractSDE, ProbabilityFlowTerm, ReverseDriftTerm
from .._shared._nfe import AbstractCountedSolver


def schedule(sde: AbstractSDE, t, dtype):
    """`(alpha, sigma, lambda)` at `t`, cast to the state's dtype."""
    alpha, sigma = sde.marginal(t)
    lam = sde.log_snr(t)
    return (
        jnp.asarray(alpha).astype(dtype),
        jnp.asarray(sigma).astype(dtype),
        jnp.asarray(lam).astype(dtype),
    )


def standard_normal(noise_term: dfx.AbstractTerm, t0, t1, dtype):
    r"""A standard normal draw $z = \Delta W / \sqrt{|t_1 - t_0|}$ from the Brownian term.

    On a `GridBrownianPath` stepped along its grid the increments are exact and
    independent, so $z \sim N(0, I)$ exactly and the sample is reproducible from the key.
    """
    dw = noise_term.contr(t0, t1)
    dw = dw.W if isinstance(dw, dfx.AbstractBrownianIncrement) else dw
    return (dw / jnp.sqrt(jnp.abs(t1 - t0))).astype(dtype)


class AbstractDiffusionSolver(AbstractCountedSolver):
    """A deterministic diffusion solver of the probability-flow ODE.

    Its `term_structure` is `scoreflow.sde.ProbabilityFlowTerm` (what
    `solve_probability_flow` builds); it calls the term's `denoise`. Subclasses set
    `evals_per_step = (per step, once at init)`, the network evaluations they make, and
    may return the last evaluated denoiser output through `last_denoised`.
    """

    term_structure: ClassVar = ProbabilityFlowTerm
    interpolation_cls: ClassVar = dfx.LocalLinearInterpolation

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)

    def last_denoised(self, terms, solver_state, t1, y1) -> Array | None:
        r"""$\hat x_0(t_1, y_1)$ from the state without a new evaluation, or `None`."""
        return None


class AbstractStochasticDiffusionSolver(AbstractCountedSolver, dfx.AbstractItoSolver):
    """A diffusion solver of the reverse-time SDE: it draws fresh noise every step.

    Its `term_structure` is `MultiTerm(ReverseDriftTerm, noise term)` (what
    `solve_reverse_sde` builds); the drift term gives the denoiser and the noise term's
    `contr(t0, t1)` the Brownian increment its Gaussian draws come from (see
    `standard_normal`). Marked Itô: the reverse SDE has additive noise, so its Itô and
    Stratonovich solutions coincide.
    """

    term_structure: ClassVar = dfx.MultiTerm[tuple[ReverseDriftTerm, dfx.AbstractTerm]]
    interpolation_cls: ClassVar = dfx.LocalLinearInterpolation

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)

    def strong_order(self, terms):
        return 0.5
