from collections.abc import Callable
from typing import ClassVar

import diffrax as dfx
import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Int, PRNGKeyArray

from ... import _checks
from .._langevin._step import langevin_step
from .._shared._nfe import AbstractCountedSolver


class _MALAState(eqx.Module):
    # A step counter, not a typed key: diffrax's error checks cannot carry key dtypes.
    step: Int[Array, ""]
    log_prob: Array
    drift: Array
    accepted: Array


class MALA(AbstractCountedSolver, dfx.AbstractItoSolver):
    r"""Metropolis-adjusted Langevin as a `diffrax.AbstractSolver`.

    Each step from $t_0$ to $t_1$ ($h = t_1 - t_0$) proposes the Euler–Maruyama step
    (`langevin_step`) of an additive-noise Langevin SDE $dx = b(x)\,dt + g\,dW$ with
    $b = \tfrac{g^2}{2} \nabla\log\pi$ (e.g. `scoreflow.sde.langevin_terms`, $g = 1$),
    $x' = x + h\,b(x) + g\,\Delta W$, and accepts it with probability
    $\min\{1, \pi(x')q(x \mid x')/(\pi(x)q(x' \mid x))\}$,
    $q(x' \mid x) = N(x'; x + h\,b(x), g^2 h\,I)$ (Roberts & Tweedie 1996, "Exponential
    convergence of Langevin distributions and their discrete approximations", sec. 1.4;
    Besag 1994). The chain is exactly $\pi$-invariant at every step size.

    The state's leading axis holds independent chains, each accepted or rejected on its
    own. For vanishing $h$ the acceptance rate tends to one and the chain to the Itô
    (Euler–Maruyama) solution, hence an Itô solver. The solver state caches $\log\pi$
    and $b$ at the current point, so a step costs one log-density and one drift
    evaluation; it also counts acceptances per chain:
    solve with `diffrax.SaveAt(..., solver_state=True)` and read
    `sol.solver_state.accepted`.

    Args:
        log_prob: $\log\pi$ (up to a constant) on the whole batch,
            `(chains, *event) -> (chains,)`.
        key: PRNG key of the accept/reject uniforms (the proposal noise comes from the
            terms' Brownian path).
    """

    log_prob: Callable[[Array], Array]
    key: PRNGKeyArray

    def __init__(self, log_prob: Callable[[Array], Array], *, key: PRNGKeyArray):
        self.log_prob = log_prob
        self.key = _checks.key(key)

    term_structure: ClassVar = dfx.MultiTerm[tuple[dfx.AbstractTerm, dfx.AbstractTerm]]
    # A log-density and a drift per step, and both once at the start.
    evals_per_step: ClassVar[tuple[int, int] | None] = (2, 2)
    interpolation_cls: ClassVar = dfx.LocalLinearInterpolation

    def order(self, terms):
        return None

    def strong_order(self, terms):
        return None

    def init(self, terms, t0, t1, y0, args):
        drift, _ = terms.terms
        return _MALAState(
            step=jnp.zeros((), jnp.int32),
            log_prob=self.log_prob(y0),
            drift=drift.vf(t0, y0, args),
            accepted=jnp.zeros(y0.shape[:1], jnp.int32),
        )

    def _log_q(self, to, frm, drift_frm, h, g2):
        # log N(to; frm + h b(frm), g^2 h I) up to a constant shared by both directions.
        r = to - frm - h * drift_frm
        return -jnp.sum((r**2 / (2 * g2 * h)).reshape(r.shape[0], -1), axis=-1)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del made_jump
        drift_term, noise_term = terms.terms
        h = t1 - t0
        st = solver_state
        dw = noise_term.contr(t0, t1)
        proposal = langevin_step(terms, t0, y0, h, dw, args, drift=st.drift)
        log_p_new = self.log_prob(proposal)
        drift_new = drift_term.vf(t1, proposal, args)
        g2 = noise_term.vf(t0, y0, args) ** 2
        log_ratio = (
            log_p_new
            - st.log_prob
            + self._log_q(y0, proposal, drift_new, h, g2)
            - self._log_q(proposal, y0, st.drift, h, g2)
        )
        u = jr.uniform(jr.fold_in(self.key, st.step), log_ratio.shape, log_ratio.dtype)
        # A NaN ratio (proposal out of the support) is a rejection.
        accept = jnp.log(u) < log_ratio
        sel = lambda a, b: jnp.where(accept.reshape(accept.shape + (1,) * (a.ndim - 1)), a, b)
        y1 = sel(proposal, y0)
        new_state = _MALAState(
            step=st.step + 1,
            log_prob=jnp.where(accept, log_p_new, st.log_prob),
            drift=sel(drift_new, st.drift),
            accepted=st.accepted + accept.astype(jnp.int32),
        )
        return y1, None, dict(y0=y0, y1=y1), new_state, dfx.RESULTS.successful

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)
