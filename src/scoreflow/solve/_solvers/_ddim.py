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


def ddim_update(sde, t0, t1, y0, x0, eta, z):
    r"""One DDIM step (Song, Meng & Ermon 2021, arXiv:2010.02502, eq. 12) in log-SNR form.

    With $h = \lambda_{t_1} - \lambda_{t_0}$, $\hat\varepsilon = (y_0 - \alpha_0 \hat x_0)
    /\sigma_0$ and $c = \eta\,\sigma_1\sqrt{1 - e^{-2h}}$:
    $y_1 = \alpha_1 \hat x_0 + \sqrt{\sigma_1^2 - c^2}\,\hat\varepsilon + c z$.
    At $\eta = 0$ (`z is None`) this is the first-order exponential integrator
    (DPM-Solver-1 / DPM-Solver++(1), Lu et al. 2022, arXiv:2211.01095, eq. 10):
    $y_1 = \tfrac{\sigma_1}{\sigma_0} y_0 - \alpha_1 (e^{-h} - 1)\hat x_0$; at $\eta = 1$
    it samples the DDPM posterior $q(x_{t_1} \mid x_{t_0}, \hat x_0)$ (Ho et al. 2020,
    arXiv:2006.11239, eqs. 6–7), i.e. ancestral sampling.
    """
    dtype = y0.dtype
    a0, s0, l0 = schedule(sde, t0, dtype)
    a1, s1, l1 = schedule(sde, t1, dtype)
    h = l1 - l0
    # sigma_1^2 (1 - e^{-2h}) written with expm1 so that tiny steps keep precision.
    var_noise = -(s1**2) * jnp.expm1(-2 * h)
    if z is None:
        return (s1 / s0) * y0 + a1 * (-jnp.expm1(-h)) * x0
    c2 = eta**2 * var_noise
    eps = (y0 - a0 * x0) / s0
    return a1 * x0 + jnp.sqrt(jnp.maximum(s1**2 - c2, 0.0)) * eps + jnp.sqrt(c2) * z


class DDIM(AbstractDiffusionSolver):
    r"""Deterministic DDIM (Song, Meng & Ermon 2021, arXiv:2010.02502, $\eta = 0$).

    The first-order exponential integrator of the probability-flow ODE in
    data-prediction form (DPM-Solver++(1), Lu et al. 2022, arXiv:2211.01095, eq. 10),
    for any scoreflow SDE. `StochasticDDIM(eta)` is its reverse-SDE form with $\eta > 0$.

    One network evaluation per step (`evals_per_step = (1, 0)`).
    """

    evals_per_step = (1, 0)

    def order(self, terms):
        return 1

    def init(self, terms, t0, t1, y0, args):
        return None

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del solver_state, made_jump
        term, t0, t1 = model_term(terms, t0, t1)
        x0 = term.denoise(t0, y0)
        y1 = ddim_update(term.sde, t0, t1, y0, x0, 0.0, None)
        return y1, None, dict(y0=y0, y1=y1), None, dfx.RESULTS.successful


class StochasticDDIM(AbstractStochasticDiffusionSolver):
    r"""DDIM with noise $\eta \in (0, 1]$, a reverse-SDE solver; $\eta = 1$ is DDPM.

    Song, Meng & Ermon 2021 (arXiv:2010.02502, eq. 16 in log-SNR form): each step
    injects fresh noise $c z$, $c = \eta\sigma_s\sqrt{1 - e^{-2h}}$. At $\eta = 1$ each
    step draws $x_s \sim q(x_s \mid x_t, x_0 = \hat x_0(t, x_t))$, the Gaussian posterior
    of the forward process (Ho et al. 2020, arXiv:2006.11239, eqs. 6–7 and Algorithm 2;
    Kingma et al. 2021, arXiv:2107.00630, eq. 26 for a general $(\alpha_t, \sigma_t)$):
    DDPM's ancestral sampler, exactly on DDPM's own grid.

    One network evaluation per step (`evals_per_step = (1, 0)`).

    Args:
        eta: noise scale $\eta \in (0, 1]$, a Python float (default 1: DDPM ancestral).
    """

    eta: float = eqx.field(static=True, default=1.0)
    evals_per_step = (1, 0)

    def __check_init__(self):
        _checks.check(
            isinstance(self.eta, int | float) and 0.0 < self.eta <= 1.0,
            "eta",
            f"must be a float in (0, 1], got {self.eta!r} (eta = 0 is `DDIM()`).",
        )

    def order(self, terms):
        return 1

    def init(self, terms, t0, t1, y0, args):
        return None

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del solver_state, made_jump
        z = standard_normal(terms.terms[1], t0, t1, y0.dtype)
        term, t0, t1 = model_term(terms, t0, t1)
        x0 = term.denoise(t0, y0)
        y1 = ddim_update(term.sde, t0, t1, y0, x0, self.eta, z)
        return y1, None, dict(y0=y0, y1=y1), None, dfx.RESULTS.successful
