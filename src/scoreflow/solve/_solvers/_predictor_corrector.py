r"""Predictor–corrector sampling (Song et al. 2021, arXiv:2011.13456, sec. 4.2, app. G).

A predictor (any diffrax solver stepping the reverse SDE or the probability-flow ODE)
moves the state from $t_i$ to $t_{i+1} < t_i$; a corrector (Langevin MCMC on the
marginal $p_{t_{i+1}}$ with the signal-to-noise step rule) then pulls it back towards
that marginal. `PredictorCorrector` is itself a `diffrax.AbstractSolver` wrapping the
predictor: it reads the score from the terms it is given, so it runs inside one
`diffrax.diffeqsolve` with whatever step-size controller, adjoint and `throw` the caller
chooses (`scoreflow.solve.sample(..., solver=PredictorCorrector(...))`).
"""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ... import _checks
from ...sde import langevin_terms
from .._langevin._step import langevin_step
from .._shared._brownian import GridBrownianPath
from .._shared._nfe import AbstractCountedSolver, evals_per_step
from .._shared._time import model_term


def _norms(v):
    return jnp.sqrt(jnp.sum(v.reshape(v.shape[0], -1) ** 2, axis=-1))


class LangevinCorrector(eqx.Module):
    r"""The Langevin corrector of Song et al. 2021 (arXiv:2011.13456, Algorithms 4–5).

    At time $t$, `num_steps` Langevin steps $x \leftarrow x + \epsilon\,s_{\theta}(t, x) +
    \sqrt{2\epsilon}\,z$ with the signal-to-noise step rule
    $\epsilon = 2 a\,(r\,\lVert z\rVert / \lVert s_{\theta}(t, x)\rVert)^2$, where $r$ is
    `snr` and $a$ is $1$ for variance-exploding SDEs and
    $\alpha_{t'}^2/\alpha_{t}^2 = 1 - \beta$ for the step $t \to t'$ just taken
    (Algorithm 5's $\alpha_i$). In the step convention of every scoreflow Langevin
    sampler (`scoreflow.sde.langevin_terms`, $x + \tfrac h2 s + \sqrt h z$) this is the
    step $h = 2\epsilon$, taken by the shared `langevin_step`. As in the authors' code,
    $\lVert z\rVert$ and $\lVert s_{\theta}\rVert$ are per-example norms averaged over the
    batch, so one $\epsilon$ serves the whole batch: per-example norms would give huge
    steps to any sample sitting near a mode of $p_t$, where the score vanishes, which in
    low dimension happens to many samples. The step then depends on the batch it is run
    with (not on any one sample's position), as in the reference.

    Args:
        snr: $r > 0$ (0.16 in the paper for CIFAR-10 with a VE SDE).
        num_steps: corrector steps per predictor step ($M \geq 1$).
    """

    snr: float | Float[Array, ""] = 0.16
    num_steps: int = eqx.field(static=True, default=1)

    def __check_init__(self):
        _checks.positive(self.snr, "snr")
        _checks.positive_int(self.num_steps, "num_steps")

    def correct(self, score, t, x, a, *, key):
        r"""Correct the batch `x` towards $p_t$; `a` is Algorithm 5's $\alpha_i$.

        `score(t, x)` acts on the whole batch. The standard normals come from a Brownian
        path on the unit grid $0, 1, \dots, M$ (one increment per corrector step).
        """
        path = GridBrownianPath(
            jnp.arange(self.num_steps + 1, dtype=x.dtype), x.shape, key=key, dtype=x.dtype
        )
        terms = langevin_terms(score, path)

        def one(j, x):
            jt = j.astype(x.dtype)
            z = jnp.asarray(path.evaluate(jt, jt + 1))
            drift = terms.terms[0].vf(t, x, None)  # s / 2
            ratio = self.snr * jnp.mean(_norms(z)) / jnp.mean(_norms(2 * drift))
            h = 4 * a * ratio**2
            return langevin_step(terms, t, x, h, jnp.sqrt(h) * z, drift=drift)

        return jax.lax.fori_loop(0, self.num_steps, one, x)


class _PCState(eqx.Module):
    step: Int[Array, ""]
    predictor: object


class PredictorCorrector(AbstractCountedSolver, dfx.AbstractItoSolver):
    r"""A predictor `diffrax.AbstractSolver` followed, every step, by a Langevin corrector.

    Each step from $t_0$ to $t_1$ first takes the predictor's step, then corrects the
    result at $t_1$ with the score read from the terms (a `scoreflow.sde.ReverseDriftTerm`
    or `ProbabilityFlowTerm`, as `solve_reverse_sde` and `solve_probability_flow` build):
    predictor first, corrector second, as in Song et al. 2021, Algorithms 2–3. The order
    matters at the ends: the initial state is an exact prior sample, which a corrector
    at $T$ could only leave where it is, while the last corrector acts at $t_{\min}$, on
    the marginal we actually return, removing the last predictor step's error. (The
    authors' code runs the corrector first within a loop iteration; over the whole grid
    this shifts one correction from $t_{\min}$ to $T$.)

    The corrector moves the state behind the predictor's back, so the predictor is
    told `made_jump=True` on every step: a first-same-as-last or multistep solver then
    re-evaluates its cached vector field instead of reusing one taken at the
    uncorrected state. Any diffrax solver of the terms plugs in as `predictor`
    (`diffrax.Euler()` on the reverse SDE is the paper's "reverse diffusion" predictor
    up to its discrete-time variant). Marked Itô: the reverse SDE's noise is additive,
    where Itô and Stratonovich solutions coincide.

    Args:
        predictor: a diffrax solver for the terms passed to `diffeqsolve`.
        corrector: a `LangevinCorrector` (default `LangevinCorrector()`: one step at
            signal-to-noise ratio 0.16).
        key: PRNG key of the corrector noise.
    """

    predictor: dfx.AbstractSolver
    corrector: LangevinCorrector
    key: PRNGKeyArray

    def __init__(
        self,
        predictor: dfx.AbstractSolver,
        corrector: LangevinCorrector | None = None,
        *,
        key: PRNGKeyArray,
    ):
        self.predictor = predictor
        self.corrector = LangevinCorrector() if corrector is None else corrector
        self.key = _checks.key(key)

    # Taken from the predictor, as diffrax's own wrapper solvers (`HalfSolver`) do.
    @property
    def term_structure(self):  # pyright: ignore[reportIncompatibleVariableOverride]
        return self.predictor.term_structure

    @property
    def interpolation_cls(self):  # pyright: ignore[reportIncompatibleMethodOverride]
        return dfx.LocalLinearInterpolation

    @property
    def term_compatible_contr_kwargs(self):  # pyright: ignore[reportIncompatibleVariableOverride]
        return self.predictor.term_compatible_contr_kwargs

    @property
    def evals_per_step(self) -> tuple[int, int] | None:  # pyright: ignore[reportIncompatibleVariableOverride]
        """The predictor's per-step and initial cost (re-paid: `made_jump`), plus $M$."""
        cost = evals_per_step(self.predictor)
        if cost is None:
            return None
        return cost[0] + cost[1] + self.corrector.num_steps, 0

    def order(self, terms):
        return self.predictor.order(terms)

    def strong_order(self, terms):
        return self.predictor.strong_order(terms)

    def init(self, terms, t0, t1, y0, args):
        return _PCState(
            step=jnp.zeros((), jnp.int32),
            predictor=self.predictor.init(terms, t0, t1, y0, args),
        )

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del made_jump
        y1, y_error, _, pstate, result = self.predictor.step(
            terms, t0, t1, y0, args, solver_state.predictor, True
        )
        term, t0, t1 = model_term(terms, t0, t1)
        a0, _ = term.sde.marginal(t0)
        a1, _ = term.sde.marginal(t1)
        a = (a0 / a1) ** 2
        key = jr.fold_in(self.key, solver_state.step)
        y1 = self.corrector.correct(term.score, t1, y1, a, key=key)
        state = _PCState(step=solver_state.step + 1, predictor=pstate)
        return y1, y_error, dict(y0=y0, y1=y1), state, result

    def func(self, terms, t0, y0, args):
        return self.predictor.func(terms, t0, y0, args)
