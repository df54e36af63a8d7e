import diffrax as dfx
import equinox as eqx
import jax.numpy as jnp

from ... import _checks
from .._shared._time import model_term
from ._base import (
    AbstractDiffusionSolver,
    AbstractStochasticDiffusionSolver,
    schedule,
    standard_normal,
)


def _heun_step(term, t_hat, t1, y, s_cur, a_hat, a1, s_next):
    # Euler, then the trapezoidal correction, in the scaled variable y = x / alpha.
    d_cur = (y - term.denoise(t_hat, a_hat * y)) / s_cur
    ds = s_next - s_cur
    y_euler = y + ds * d_cur
    d_next = (y_euler - term.denoise(t1, a1 * y_euler)) / s_next
    return a1 * (y + ds * 0.5 * (d_cur + d_next))


class EDMHeun(AbstractDiffusionSolver):
    r"""EDM's deterministic second-order Heun sampler (Karras et al. 2022, Algorithm 1).

    Karras et al., arXiv:2206.00364, written for any scoreflow SDE in the scaled
    variables $y = x/\alpha_t$, $\tilde\sigma = \sigma_t/\alpha_t = e^{-\lambda_t}$, in
    which the probability-flow ODE is $dy/d\tilde\sigma = (y - \hat x_0)/\tilde\sigma$
    (their eq. 4 with $s(t) = \alpha_t$). A step from $\tilde\sigma_i$ to
    $\tilde\sigma_{i+1}$ is an Euler step followed by the trapezoidal correction: two
    network evaluations per step (`evals_per_step = (2, 0)`); unlike the original, the
    grid ends at `t_min > 0`, so the last step is also a Heun step and the final denoise
    of `solve_probability_flow` adds one evaluation. `StochasticEDMHeun` adds churn.
    """

    evals_per_step = (2, 0)

    def order(self, terms):
        return 2

    def init(self, terms, t0, t1, y0, args):
        return None

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del solver_state, made_jump
        dtype = y0.dtype
        term, t0, t1 = model_term(terms, t0, t1)
        a0, _, l0 = schedule(term.sde, t0, dtype)
        a1, _, l1 = schedule(term.sde, t1, dtype)
        y1 = _heun_step(term, t0, t1, y0 / a0, jnp.exp(-l0), a0, a1, jnp.exp(-l1))
        return y1, None, dict(y0=y0, y1=y1), None, dfx.RESULTS.successful


class StochasticEDMHeun(AbstractStochasticDiffusionSolver):
    r"""EDM's stochastic sampler: Heun steps with churn (Karras et al. 2022, Algorithm 2).

    Before each step whose $\tilde\sigma_i \in [s_{t\min}, s_{t\max}]$ the noise level is
    raised to $\hat\sigma = (1 + \gamma)\tilde\sigma_i$, $\gamma = \min(\text{churn},
    \sqrt2 - 1)$, by adding $\sqrt{\hat\sigma^2 - \tilde\sigma_i^2}\,S_{\text{noise}} z$
    (Algorithm 2, lines 4–6), then an `EDMHeun` step is taken from $\hat\sigma$. A
    reverse-SDE solver over `MultiTerm(ReverseDriftTerm, noise term)`; `churn` is their
    $S_{\text{churn}}/N$. Two network evaluations per step.

    Args:
        churn: $\gamma_i = S_{\text{churn}}/N > 0$.
        s_tmin: lowest $\tilde\sigma$ at which churn applies.
        s_tmax: highest $\tilde\sigma$ at which churn applies.
        s_noise: $S_{\text{noise}}$, the scale of the added noise.
    """

    churn: float = eqx.field(static=True)
    s_tmin: float = eqx.field(static=True, default=0.0)
    s_tmax: float = eqx.field(static=True, default=float("inf"))
    s_noise: float = eqx.field(static=True, default=1.0)
    evals_per_step = (2, 0)

    def __check_init__(self):
        _checks.check(
            isinstance(self.churn, int | float) and self.churn > 0,
            "churn",
            f"must be a float > 0, got {self.churn!r} (churn = 0 is `EDMHeun()`).",
        )
        _checks.check(self.s_noise > 0, "s_noise", f"must be positive, got {self.s_noise!r}.")
        _checks.check(self.s_tmin <= self.s_tmax, "s_tmin", "must be <= `s_tmax`.")

    def order(self, terms):
        return 2

    def init(self, terms, t0, t1, y0, args):
        return None

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del solver_state, made_jump
        dtype = y0.dtype
        z = standard_normal(terms.terms[1], t0, t1, dtype)
        term, t0, t1 = model_term(terms, t0, t1)
        sde = term.sde
        a0, _, l0 = schedule(sde, t0, dtype)
        a1, _, l1 = schedule(sde, t1, dtype)
        s_cur = jnp.exp(-l0)
        inside = (s_cur >= self.s_tmin) & (s_cur <= self.s_tmax)
        gamma = jnp.where(inside, min(self.churn, 2**0.5 - 1), 0.0).astype(dtype)
        s_hat = s_cur * (1 + gamma)
        y = y0 / a0 + jnp.sqrt(s_hat**2 - s_cur**2) * self.s_noise * z
        t_hat = jnp.asarray(sde.t_from_log_snr(-jnp.log(s_hat))).astype(dtype)
        a_hat = schedule(sde, t_hat, dtype)[0]
        y1 = _heun_step(term, t_hat, t1, y, s_hat, a_hat, a1, jnp.exp(-l1))
        return y1, None, dict(y0=y0, y1=y1), None, dfx.RESULTS.successful
