r"""Predictor–corrector sampling (Song et al. 2021, arXiv:2011.13456, sec. 4.2, app. G).

A predictor (any diffrax solver stepping the reverse SDE or the probability-flow ODE)
moves the state from $t_i$ to $t_{i+1} < t_i$; a corrector (Langevin MCMC on the
marginal $p_{t_{i+1}}$ with the signal-to-noise step rule) then pulls it back towards
that marginal. `PredictorCorrector` is itself a `diffrax.AbstractSolver` wrapping the
predictor, so the pair runs inside one `diffrax.diffeqsolve` on a fixed grid.
"""

import warnings
from collections.abc import Callable

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .. import _checks
from .._custom_types import Key
from ..sde import AbstractSDE, Prediction, probability_flow_term, reverse_sde_terms
from ._brownian import GridBrownianPath
from ._grids import AbstractGrid, UniformGrid
from ._langevin import _Batched, _boundary_jit, _check_num
from ._sample import SampleResult, evals_per_step


class LangevinCorrector(eqx.Module):
    r"""The Langevin corrector of Song et al. 2021 (arXiv:2011.13456, Algorithms 4–5).

    At time $t$, `num_steps` updates $x \leftarrow x + \epsilon\,s_{\theta}(t, x) +
    \sqrt{2\epsilon}\,z$ with the signal-to-noise step rule
    $\epsilon = 2 a\,(r\,\lVert z\rVert / \lVert s_{\theta}(t, x)\rVert)^2$, where $r$ is
    `snr` and $a$ is $1$ for variance-exploding SDEs and
    $\alpha_{t'}^2/\alpha_{t}^2 = 1 - \beta$ for the step $t \to t'$ just taken
    (Algorithm 5's $\alpha_i$). As in the authors' code, $\lVert z\rVert$ and
    $\lVert s_{\theta}\rVert$ are per-example norms averaged over the batch, so one
    $\epsilon$ serves the whole batch: per-example norms would give huge steps to any
    sample sitting near a mode of $p_t$, where the score vanishes, which in low
    dimension happens to many samples. The step then depends on the batch it is run
    with (not on any one sample's position), as in the reference.

    Args:
        score: the score on the whole batch, `(t, x) -> array`.
        snr: $r > 0$ (0.16 in the paper for CIFAR-10 with a VE SDE).
        num_steps: corrector steps per predictor step ($M \geq 1$).
    """

    score: Callable[[Array, Array], Array]
    snr: float | Float[Array, ""] = 0.16
    num_steps: int = eqx.field(static=True, default=1)

    def __check_init__(self):
        _checks.positive(self.snr, "snr")
        _check_num(self.num_steps, "corrector_steps")

    def __call__(self, t, x, a, key):
        r"""Correct `x` towards $p_t$; `a` is Algorithm 5's $\alpha_i$."""

        def one(j, x):
            s = self.score(t, x)
            z = jr.normal(jr.fold_in(key, j), x.shape, x.dtype)
            flat = lambda v: jnp.sqrt(jnp.sum(v.reshape(v.shape[0], -1) ** 2, axis=-1))
            ratio = self.snr * jnp.mean(flat(z)) / jnp.mean(flat(s))
            eps = 2 * a * ratio**2
            return x + eps * s + jnp.sqrt(2 * eps) * z

        return jax.lax.fori_loop(0, self.num_steps, one, x)


class _PCState(eqx.Module):
    step: Int[Array, ""]
    predictor: object


class PredictorCorrector(dfx.AbstractSolver):
    r"""A predictor `diffrax.AbstractSolver` followed, every step, by a corrector.

    Each step from $t_0$ to $t_1$ first takes the predictor's step, then corrects the
    result at $t_1$: predictor first, corrector second, as in Song et al. 2021,
    Algorithms 2–3. The order matters at the ends: the initial state is an exact prior
    sample, which a corrector at $T$ could only leave where it is, while the last
    corrector acts at $t_{\min}$, on the marginal we actually return, removing the last
    predictor step's error. (The authors' code runs the corrector first within a
    loop iteration; over the whole grid this shifts one correction from $t_{\min}$ to
    $T$.)

    The corrector moves the state behind the predictor's back, so the predictor is
    told `made_jump=True` on every step: a first-same-as-last or multistep solver then
    re-evaluates its cached vector field instead of reusing one taken at the
    uncorrected state. Any diffrax solver on the reverse-SDE terms or the
    probability-flow term plugs in as `predictor` (`diffrax.Euler()` on the reverse SDE
    is the paper's "reverse diffusion" predictor up to its discrete-time variant).

    Args:
        predictor: a diffrax solver for the terms passed to `diffeqsolve`.
        corrector: a `LangevinCorrector`.
        sde: the SDE (for the corrector's $\alpha_i$).
        key: PRNG key of the corrector noise.
    """

    predictor: dfx.AbstractSolver
    corrector: LangevinCorrector
    sde: AbstractSDE
    key: PRNGKeyArray

    @property
    def term_structure(self):
        return self.predictor.term_structure

    @property
    def interpolation_cls(self):  # pyright: ignore
        return dfx.LocalLinearInterpolation

    @property
    def term_compatible_contr_kwargs(self):
        return self.predictor.term_compatible_contr_kwargs

    def order(self, terms):
        return self.predictor.order(terms)

    def strong_order(self, terms):
        return self.predictor.strong_order(terms)

    def evals_per_step(self) -> tuple[int, int] | None:
        """Network evaluations `(per step, once)`: the predictor's, made-jump, plus $M$."""
        cost = evals_per_step(self.predictor)
        if cost is None:
            return None
        # `made_jump=True` on every step makes a cached first evaluation count each time.
        return cost[0] + cost[1] + self.corrector.num_steps, 0

    def init(self, terms, t0, t1, y0, args):
        return _PCState(
            step=jnp.zeros((), jnp.int32),
            predictor=self.predictor.init(terms, t0, t1, y0, args),
        )

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del made_jump
        y1, _, _, pstate, result = self.predictor.step(
            terms, t0, t1, y0, args, solver_state.predictor, True
        )
        # diffrax solves backwards in time by negating it (the terms are wrapped to
        # undo this, the solver is not); SDE times are positive, so |t| is the time.
        t0, t1 = jnp.abs(t0), jnp.abs(t1)
        a0, _ = self.sde.marginal(t0)
        a1, _ = self.sde.marginal(t1)
        a = (a0 / a1) ** 2
        y1 = self.corrector(t1, y1, a, jr.fold_in(self.key, solver_state.step))
        state = _PCState(step=solver_state.step + 1, predictor=pstate)
        return y1, None, dict(y0=y0, y1=y1), state, result

    def func(self, terms, t0, y0, args):
        return self.predictor.func(terms, t0, y0, args)


@_boundary_jit(positive=("snr",))
def solve_predictor_corrector(
    sde: AbstractSDE,
    model: Callable[..., Array],
    x_T: Float[Array, "batch ..."],
    *,
    parameterisation: str = "score",
    predictor: dfx.AbstractSolver | None = None,
    method: str = "sde",
    grid: AbstractGrid | None = None,
    snr: float | Float[Array, ""] = 0.16,
    corrector_steps: int = 1,
    denoise: bool = True,
    ts_save: Float[Array, " k"] | None = None,
    key: Key,
) -> SampleResult:
    r"""Predictor–corrector sampling (Song et al. 2021, arXiv:2011.13456, Algorithms 2–3).

    On a fixed grid $T = t_0 > \dots > t_N = t_{\min}$, each step runs the predictor
    (a diffrax solver on the reverse SDE, eq. 6, or on the probability-flow ODE, eq. 13)
    from $t_i$ to $t_{i+1}$, then `corrector_steps` Langevin corrector steps at
    $t_{i+1}$ with the signal-to-noise rule (see `LangevinCorrector` and
    `PredictorCorrector`, which explains why the predictor runs first). The reverse SDE
    uses a `GridBrownianPath` (one normal draw per step).

    Args:
        sde: the SDE.
        model: network on one example, `(t, x) -> array`; vmapped over the batch.
        x_T: `(batch, *event)` prior samples.
        parameterisation: what `model` predicts.
        predictor: a diffrax solver (default `diffrax.Euler()`: Euler–Maruyama on the
            reverse SDE, Euler on the ODE).
        method: `"sde"` (reverse SDE predictor) or `"ode"` (probability-flow predictor).
        grid: fixed time grid (default `UniformGrid(1000)`).
        snr: the corrector's signal-to-noise ratio $r > 0$.
        corrector_steps: Langevin steps per predictor step ($M \geq 1$).
        denoise: return the model's $E[x_0 \mid x]$ at `t_min` (one more call).
        ts_save: optional decreasing times, on the grid, at which to keep the states.
        key: PRNG key (Brownian motion and corrector noise).

    Returns:
        A `SampleResult`; `nfe` counts predictor and corrector evaluations.

    Raises:
        ValueError: on an unknown `method`, a non-positive `snr` or `corrector_steps`,
            or a bad `x_T` / `grid`.
    """
    if method not in ("sde", "ode"):
        raise ValueError(f"`method` must be 'sde' or 'ode', got {method!r}.")
    if not isinstance(x_T, jax.Array) or x_T.ndim < 2:
        raise ValueError(f"`x_T` must have shape (batch, *event_shape), got {x_T.shape}.")
    grid = UniformGrid(1000) if grid is None else grid
    if not isinstance(grid, AbstractGrid):
        raise ValueError(f"`grid` must be a scoreflow grid, got {type(grid)}.")
    predictor = dfx.Euler() if predictor is None else predictor
    prediction = Prediction(sde, model, parameterisation)
    score = _Batched(prediction.score)
    ts = grid.times(sde).astype(x_T.dtype)
    k_path, k_corr = jr.split(key)
    if method == "sde":
        levy = (
            dfx.SpaceTimeLevyArea
            if isinstance(predictor, dfx.AbstractSRK)
            else dfx.BrownianIncrement
        )
        path = GridBrownianPath(ts, x_T.shape, key=k_path, dtype=x_T.dtype, levy_area=levy)
        terms = reverse_sde_terms(sde, score, path)
    else:
        terms = probability_flow_term(sde, score)
    solver = PredictorCorrector(
        predictor, LangevinCorrector(score, snr, corrector_steps), sde, k_corr
    )
    saveat = (
        dfx.SaveAt(t1=True) if ts_save is None else dfx.SaveAt(ts=jnp.asarray(ts_save), t1=True)
    )
    with warnings.catch_warnings():
        # diffrax warns that a wrapper solver is neither Itô nor Stratonovich; it
        # converges as its predictor does.
        warnings.filterwarnings("ignore", message=".*not marked as converging.*")
        sol = dfx.diffeqsolve(
            terms,
            solver,
            ts[0],
            ts[-1],
            None,
            x_T,
            stepsize_controller=dfx.StepTo(ts),
            saveat=saveat,
            max_steps=grid.num_steps,
        )
    x = sol.ys[-1]
    num_steps = sol.stats["num_steps"]
    cost = solver.evals_per_step()
    nfe = jnp.asarray(-1) if cost is None else num_steps * cost[0] + cost[1] + int(denoise)
    if denoise:
        x = _Batched(prediction.x0)(ts[-1], x)
    return SampleResult(
        samples=x,
        num_steps=num_steps,
        nfe=nfe,
        result=sol.result,
        ts=None if ts_save is None else sol.ts[:-1],
        trajectory=None if ts_save is None else sol.ys[:-1],
    )
