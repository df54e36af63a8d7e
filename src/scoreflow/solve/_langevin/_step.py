"""The one Langevin step of every Langevin sampler in scoreflow."""

import diffrax as dfx
from jaxtyping import Array


def langevin_step(terms: dfx.MultiTerm, t, y: Array, h, dw: Array, args=None, *, drift=None):
    r"""One Euler–Maruyama step of `scoreflow.sde.langevin_terms`: $y + h\,b(t, y) + g\,\Delta W$.

    With the Langevin terms $b = \tfrac12\nabla\log\pi$ and $g = 1$ this is
    $y + \tfrac h2 \nabla\log\pi(y) + \Delta W$, $\Delta W \sim N(0, hI)$, the update of
    ULA (Roberts & Tweedie 1996) and of NCSN's annealed Langevin dynamics (Song & Ermon
    2019, eq. 4 with $\epsilon = h$), MALA's proposal and the predictor–corrector's
    corrector. It is the same arithmetic, in the same order, as `diffrax.Euler` on those
    terms (`tests/test_langevin.py` checks this), which is how `ula` and
    `annealed_langevin` take it.

    Args:
        terms: `MultiTerm(drift term, noise term)`, e.g. `langevin_terms(score, path)`.
        t: time at which the vector fields are evaluated.
        y: the state.
        h: the step.
        dw: the Brownian increment over the step (shape of `y`).
        args: passed to the vector fields.
        drift: $b(t, y)$ if already known (MALA caches it), else evaluated here.

    Returns:
        The new state.
    """
    drift_term, noise_term = terms.terms
    b = drift_term.vf(t, y, args) if drift is None else drift
    return y + (drift_term.prod(b, h) + noise_term.vf_prod(t, y, args, dw))
