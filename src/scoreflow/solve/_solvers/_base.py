r"""Shared pieces of scoreflow's diffusion solvers.

A diffusion solver is a `diffrax.AbstractSolver` that reads the denoiser
$\hat x_0(t, x) = E[x_0 \mid x_t = x]$ and the SDE's $(\alpha_t, \sigma_t)$ and log-SNR
$\lambda_t = \log(\alpha_t / \sigma_t)$ through a `DenoiserTerm`, instead of a black-box
vector field. In these variables the probability-flow ODE (Song et al. 2021,
arXiv:2011.13456, eq. 13) has the exact variation-of-constants solution (Lu et al. 2022,
DPM-Solver++, arXiv:2211.01095, eq. 9)

$$x_s = \frac{\sigma_s}{\sigma_t} x_t + \sigma_s \int_{\lambda_t}^{\lambda_s}
    e^{\lambda}\,\hat x_0(\lambda)\,d\lambda,$$

so an exponential integrator only has to approximate $\hat x_0$ along the path.

A corrector (Langevin, predictor–corrector) can wrap any of these solvers: its
`step` has diffrax's signature, its state is an explicit value, it states its cost
through the class attribute `evals_per_step = (per step, at init)`, and the last
evaluated denoiser output is available through `last_denoised` where the solver keeps
one.
"""

from typing import ClassVar

import diffrax as dfx
import equinox as eqx
import jax.numpy as jnp
import numpy as np
from diffrax._term import WrapTerm  # no public name; see `unwrap`
from jaxtyping import Array

from ...sde import AbstractSDE


class DenoiserTerm(dfx.AbstractTerm):
    r"""The probability-flow ODE written through a denoiser.

    `vf` is the ordinary probability-flow vector field
    $f(t) x - \tfrac12 g(t)^2 \nabla \log p_t(x)$ with the score
    $(\alpha_t \hat x_0 - x)/\sigma_t^2$, so every diffrax ODE solver can use this term
    too; scoreflow's exponential integrators call `denoise` and the schedule methods
    directly.

    Args:
        sde: the SDE, giving $\alpha_t$, $\sigma_t$, $\lambda_t$ and $f$, $g$.
        denoiser: `(t, x) -> x0` on the solver's (batched) state, e.g. a batched
            `scoreflow.sde.Prediction(...).x0`.
    """

    sde: AbstractSDE
    denoiser: eqx.Module

    def denoise(self, t, y):
        r"""The data prediction $\hat x_0(t, y)$ (one network evaluation)."""
        return self.denoiser(t, y)

    def vf(self, t, y, args):
        alpha, sigma = self.sde.marginal(t)
        x0 = self.denoise(t, y)
        score = (alpha * x0 - y) / sigma**2
        g = self.sde.diffusion(t)
        return (self.sde.drift(t, y) - 0.5 * g**2 * score).astype(y.dtype)

    def contr(self, t0, t1, **kwargs):
        return t1 - t0

    def prod(self, vf, control):
        return vf * control


def unwrap(term, t0, t1):
    """The scoreflow term inside diffrax's time-reversal wrapper, and the real times.

    diffrax integrates a decreasing time interval as increasing $-t$, wrapping every
    term in a `WrapTerm`; a diffusion solver needs the real times to read the schedule.
    """
    if isinstance(term, WrapTerm):
        flip = term.direction != 1
        return term.term, jnp.where(flip, -t0, t0), jnp.where(flip, -t1, t1)
    return term, t0, t1


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


class AbstractDiffusionSolver(dfx.AbstractSolver):
    """A diffusion solver: reads a `DenoiserTerm` (and, for the reverse SDE, noise).

    A deterministic solver's `term_structure` is `DenoiserTerm` (the probability-flow
    ODE: `solve_probability_flow`); a stochastic one's is
    `MultiTerm(DenoiserTerm, noise term)` (the reverse SDE: `solve_reverse_sde`), whose
    noise term's `contr(t0, t1)` supplies the Brownian increment the solver draws its
    Gaussian noise from (see `standard_normal`). `is_stochastic` tells them apart.

    Stochastic solvers are marked `diffrax.AbstractItoSolver`: the reverse SDE has
    additive noise, so its Itô and Stratonovich solutions coincide.

    Subclasses set `evals_per_step = (per step, once at init)`, the network
    evaluations they make, which `scoreflow.solve.evals_per_step` reads.
    """

    term_structure: ClassVar = DenoiserTerm
    interpolation_cls: ClassVar = dfx.LocalLinearInterpolation
    evals_per_step: ClassVar[tuple[int, int]]

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)

    def last_denoised(self, terms, solver_state, t1, y1) -> Array | None:
        r"""$\hat x_0(t_1, y_1)$ from the state without a new evaluation, or `None`."""
        return None


def is_stochastic(solver: dfx.AbstractSolver) -> bool:
    """Whether a diffusion solver samples the reverse SDE (needs a noise term)."""
    return solver.term_structure is not DenoiserTerm


# 16-point Gauss–Legendre rule on [0, 1]: exact for polynomials of degree 31 and
# accurate to ~1e-13 for e^{-h(1-s)} times a cubic up to h ~ 10, with only positive
# terms (no cancellation as h -> 0, so it is also safe in float32).
_GL_X, _GL_W = np.polynomial.legendre.leggauss(16)
_GL_S = (_GL_X + 1) / 2
_GL_W = _GL_W / 2


def exponential_weights(nodes, lam_t, lam_s, alpha_s):
    r"""Exact exponential-quadrature weights on arbitrary (variable-step) nodes.

    With $P$ the polynomial interpolating $\hat x_0$ at the log-SNRs `nodes`
    ($\lambda_j$), returns $w_j$ such that
    $\sigma_s \int_{\lambda_t}^{\lambda_s} e^{\lambda} P(\lambda)\,d\lambda =
    \sum_j w_j \hat x_0(\lambda_j)$, i.e.
    $w_j = \alpha_s h \int_0^1 e^{-h(1-u)} \ell_j(\lambda_t + hu)\,du$ with
    $h = \lambda_s - \lambda_t$ and $\ell_j$ the Lagrange basis. This is the
    exponential Adams family (Hochbruck & Ostermann 2010, Acta Numerica, sec. 2.5);
    with nodes at $\lambda_t$ (and previous points) it is DPM-Solver++'s multistep
    predictor, with the new point added it is an Adams–Moulton-type corrector like
    UniC (Zhao et al. 2023, UniPC, arXiv:2302.04867).

    Args:
        nodes: `(k,)` distinct log-SNRs.
        lam_t: start log-SNR.
        lam_s: end log-SNR.
        alpha_s: $\alpha_s$.

    Returns:
        `(k,)` weights.
    """
    return exponential_weights_by_order(nodes, lam_t, lam_s, alpha_s)[-1]


def exponential_weights_by_order(nodes, lam_t, lam_s, alpha_s):
    r"""`exponential_weights` of every leading subset of the nodes, in one computation.

    Row $j - 1$ holds the weights of `nodes[:j]` (order $j$), zero-padded to $k$; a
    multistep solver picks its row by how much history it has. Vectorised so that a
    step costs a handful of fused operations instead of one per Lagrange factor: on
    cheap denoisers the per-step overhead is what separates a solver's run time from
    NFE x one denoiser call.

    Returns:
        `(k, k)` weights.
    """
    dtype = nodes.dtype
    k = nodes.shape[0]
    s = jnp.asarray(_GL_S, dtype)
    gw = jnp.asarray(_GL_W, dtype)
    h = lam_s - lam_t
    u = lam_t + h * s
    e = jnp.exp(-h * (1 - s)) * gw
    idx = np.arange(k)
    off_diag = idx[:, None] != idx[None, :]
    # (order J, basis j, factor m): the Lagrange factor m enters basis j of order J.
    used = off_diag[None] & (idx[None, None, :] < idx[:, None, None] + 1)
    gap = jnp.where(off_diag, nodes[:, None] - nodes[None, :], 1)
    factor = (u[None, None, :] - nodes[None, :, None]) / gap[:, :, None]
    ell = jnp.prod(jnp.where(used[..., None], factor[None], 1), axis=2)
    w = alpha_s * h * jnp.sum(e[None, None, :] * ell, axis=-1)
    return jnp.where(idx[None, :] <= idx[:, None], w, 0)


def combine(weights, values):
    """`sum_j weights[j] * values[j]` over a stacked history.

    Unrolled over the (static, short) history: XLA on CPU runs a broadcast-multiply
    and reduction over the leading axis several times slower than these few fused
    multiply-adds (measured: 3-4x the cost of a 16-d mixture denoiser call per step).
    """
    out = weights[0] * values[0]
    for j in range(1, values.shape[0]):
        out = out + weights[j] * values[j]
    return out
