r"""Time grids calibrated to one model, at a bounded cost, never worse than a fixed rule."""

import math

import diffrax as dfx
import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float

from ... import _checks
from ...sde import AbstractPrediction, AbstractSDE, probability_flow_term
from .._shared._model import check_model
from .._solvers._adams_pc import ExponentialAdamsPC
from .._solvers._ddim import DDIM
from .._solvers._dpm_solver_pp import DPMSolverPP
from ._grids import AbstractGrid, CustomGrid, KarrasGrid, LogSNRGrid, grid_times, pin_ends

# The solvers whose `step` reads only the probability-flow term and whose sample is
# `num_steps` steps plus a final denoise: the grid they are calibrated for is used with
# the same `num_steps + 1` evaluations.
_SUPPORTED = (ExponentialAdamsPC, DPMSolverPP, DDIM)


class CalibratedGrid(AbstractGrid):
    """The grid `calibrate_grid` returns: times, and what the calibration found.

    Use it as `grid=` anywhere a `CustomGrid` goes. Besides the times it records where
    they come from and the held-out pilot errors every candidate reached, so that a
    fallback to a fixed rule is never silent.

    Attributes:
        ts: `(num_steps + 1,)` strictly decreasing times from `sde.T` to `sde.t_min`.
        source: `"calibrated"`, or the fixed rule that was better on the held-out
            pilot draws (`"karras"`, `"log-snr"`).
        held_out_rms: `((candidate, rms), ...)`: the RMS error against the reference
            of each candidate grid on the held-out half of the pilot (`"calibrated"`,
            `"karras"`, `"log-snr"`; `nan` where not measured).
        pilot_size: pilot draws used (fit and held-out halves together).
        adam_steps: Adam iterations run in stage 2.
        evaluations: model evaluations per pilot draw summed over the calibration
            (forward only; see `calibrate_grid` for the cost model).
    """

    ts: Float[Array, " n"]
    num_steps: int = eqx.field(static=True)
    source: str = eqx.field(static=True)
    held_out_rms: tuple[tuple[str, float], ...] = eqx.field(static=True)
    pilot_size: int = eqx.field(static=True)
    adam_steps: int = eqx.field(static=True)
    evaluations: int = eqx.field(static=True)

    def __init__(
        self,
        ts,
        source: str = "calibrated",
        held_out_rms: tuple[tuple[str, float], ...] = (),
        pilot_size: int = 0,
        adam_steps: int = 0,
        evaluations: int = 0,
    ):
        self.ts = CustomGrid(ts).ts
        self.num_steps = self.ts.shape[0] - 1
        self.source = source
        self.held_out_rms = tuple((str(k), float(v)) for k, v in held_out_rms)
        self.pilot_size = int(pilot_size)
        self.adam_steps = int(adam_steps)
        self.evaluations = int(evaluations)

    def times(self, sde: AbstractSDE) -> Float[Array, " n"]:
        return self.ts


def _solve_on(solver, term, x, ts):
    # One pass of the solver along `ts` (the steps `sample` takes, by hand so that the
    # grid is differentiable): the sample, final denoise included, and the RMS over the
    # batch of the embedded error estimate on each step (zeros for a solver without one).
    state = solver.init(term, ts[0], ts[1], x, None)

    def body(carry, times):
        y, st = carry
        y1, err, _, st, _ = solver.step(term, times[0], times[1], y, None, st, False)
        e = jnp.zeros((), x.dtype) if err is None else jnp.sqrt(jnp.mean(err**2))
        return (y1, st), e

    (y, state), errors = lax.scan(body, (x, state), (ts[:-1], ts[1:]))
    free = solver.last_denoised(term, state, ts[-1], y)
    return (term.denoise(ts[-1], y) if free is None else free), errors


_solve_on_jit = eqx.filter_jit(_solve_on)


def _sq_err(out, ref):
    # Per-draw squared error summed over the event axes.
    return jnp.sum(((out - ref) ** 2).reshape(out.shape[0], -1), axis=1)


@eqx.filter_jit
def _per_draw_sq(solver, term, x, ts, ref):
    return _sq_err(_solve_on(solver, term, x, ts)[0], ref)


def _grid_from_logits(sde, logits, lam_ends, dtype):
    # Strictly increasing log-SNRs with pinned ends: softmax increments.
    inc = jax.nn.softmax(logits)
    lam = lam_ends[0] + (lam_ends[1] - lam_ends[0]) * jnp.concatenate(
        [jnp.zeros((1,), dtype), jnp.cumsum(inc)]
    )
    return pin_ends(sde.t_from_log_snr(lam).astype(dtype), sde)


@eqx.filter_jit
def _adam_chunk(solver, term, sde, carry, lam_ends, fit_x, fit_ref, probs, keys, lr, minibatch):
    # `keys.shape[0]` Adam steps, each on a fresh importance-sampled minibatch of the fit
    # half: draw i with probability probs[i], weighted 1 / (n probs[i]), so the minibatch
    # loss is an unbiased estimate of the fit half's mean squared error whose variance
    # is small where a few draws (mode flips) carry most of it.
    n = fit_x.shape[0]
    weights = 1 / (n * probs)
    optimiser = optax.adam(lr)

    def loss(lg, idx):
        ts = _grid_from_logits(sde, lg, lam_ends, fit_x.dtype)
        out = _solve_on(solver, term, fit_x[idx], ts)[0]
        return jnp.log(jnp.mean(weights[idx] * _sq_err(out, fit_ref[idx])))

    def body(c, key):
        lg, opt_state = c
        idx = jax.random.choice(key, n, (minibatch,), p=probs)
        grad = jax.grad(loss)(lg, idx)
        # optax mixes its int32 step count with floats; keep working when the user
        # runs JAX with strict dtype promotion.
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = optimiser.update(grad, opt_state)
            lg = jnp.asarray(optax.apply_updates(lg, updates))
        return (lg, opt_state), None

    carry, _ = lax.scan(body, carry, keys)
    return carry


@eqx.filter_jit
def _equidistribute(sde, ts, errors, exponents, relaxation):
    lam = sde.log_snr(ts).astype(ts.dtype)
    # Step i's share of the error budget is e_i^(1/p_i): with e = c h^p, a grid that
    # gives every step the same e has equal shares. A small floor keeps every step
    # strictly positive where the estimate vanishes.
    share = errors ** (1 / exponents)
    share = jnp.where(jnp.sum(share) > 0, share, jnp.ones_like(share))
    share = share + 1e-6 * jnp.sum(share) / share.shape[0]
    cum = jnp.concatenate([jnp.zeros((1,), ts.dtype), jnp.cumsum(share)])
    # Inside step i the share is spread uniformly in lambda (linear interpolation).
    target = jnp.linspace(0.0, 1.0, ts.shape[0], dtype=ts.dtype) * cum[-1]
    new = jnp.interp(target, cum, lam)
    lam = relaxation * new + (1 - relaxation) * lam
    return pin_ends(sde.t_from_log_snr(lam).astype(ts.dtype), sde)


def _estimator(solver):
    # Stage 1 needs an embedded local error estimate. `ExponentialAdamsPC(k)` has one;
    # for `DPMSolverPP(k)` and `DDIM` (order 1) the predictor–corrector difference of
    # `ExponentialAdamsPC(k)` estimates the local error of the same exponential
    # Adams–Bashforth predictor of order k these methods take.
    if isinstance(solver, ExponentialAdamsPC):
        return solver
    return ExponentialAdamsPC(solver.order_ if isinstance(solver, DPMSolverPP) else 1)


def _flops_per_draw(term, t, x):
    # XLA's count of floating-point operations of one forward call on the batch `x`,
    # per draw, from the lowered (not compiled) computation; `None` where the backend
    # gives no count.
    params, static = eqx.partition(term, eqx.is_array)
    try:
        lowered = jax.jit(lambda p, t, x: eqx.combine(p, static).denoise(t, x)).lower(params, t, x)
        cost = lowered.cost_analysis()
    except Exception:  # a count is an optimisation only: never fail calibration on it
        return None
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else None
    flops = cost.get("flops") if isinstance(cost, dict) else None
    if flops is None or not math.isfinite(flops) or flops <= 0:
        return None
    return float(flops) / x.shape[0]


def _pilot_size(num_draws, event_size, flips, checked, expected_flips=16):
    # The rule of `calibrate_grid`'s docstring ("Pilot size").
    p = (flips + 1) / (checked + 2)
    want = math.ceil(2 * expected_flips / p)
    cap = min(num_draws, max(2048, 131072 // max(event_size, 1)))
    return int(min(max(want, min(1024, num_draws)), cap))


def calibrate_grid(
    sde: AbstractSDE,
    model: AbstractPrediction,
    y0: Float[Array, "batch ..."],
    num_steps: int,
    *,
    order: int = 3,
    solver: dfx.AbstractSolver | None = None,
    optimise_steps: int = 200,
    learning_rate: float = 0.05,
    reference_steps: int | None = None,
    iterations: int = 4,
    relaxation: float = 0.5,
    initial: AbstractGrid | None = None,
    minibatch: int = 512,
    evaluation_budget: int = 2_000_000,
    flop_budget: float | int | None = 2e11,
    validations: int = 8,
    fallback: bool = True,
) -> CalibratedGrid:
    r"""A fixed grid for one solver, fitted once to one model, at a bounded cost.

    Two stages on pilot noise `y0` (independent of the noise you will sample from; the
    cost is paid once per model and step count, not per sample), then a check:

    1. *Equidistribution* (no reference needed). Moving-mesh equidistribution
       (de Boor 1973; Huang & Russell 2011, *Adaptive Moving Mesh Methods*, ch. 2) of
       the solver's local error: starting from `initial` (default
       `LogSNRGrid(num_steps)`), each of `iterations` passes solves on the current
       grid, reads the free predictor–corrector error estimate $e_i$ of every step
       (RMS over at most 1024 pilot draws), and moves the points in $\lambda$ so that
       every step receives an equal share $e_i^{1/p_i}$ ($p_i$ the predictor's local
       order on step $i$), relaxed by `relaxation` towards the previous grid.
    2. *Grid optimisation* (if `optimise_steps > 0`). The global error, not the local
       one, is what a sample pays: solve the pilot accurately
       (`ExponentialAdamsPC(3)` on `LogSNRGrid(reference_steps)`), then minimise the
       log mean squared distance between the `num_steps` solve and that reference over
       the grid's log-SNR increments (softmax, ends pinned) by Adam, differentiating
       through the solver. Half of the pilot fits, half is held out. Every Adam step
       uses a minibatch of `minibatch` fit draws, importance-sampled: half the
       probability uniform, half in proportion to each draw's squared error on the
       stage-1 grid, with weights that keep the loss unbiased, so that the rare draws
       that end in another mode, which carry the RMS error at few steps, are in most
       minibatches. The held-out error is measured `validations` times and the iterate
       with the least is kept (the stage-1 grid included).
    3. *Check and fall back* (if `fallback`). The kept grid's held-out error is
       compared with `KarrasGrid(num_steps)` and `LogSNRGrid(num_steps)` under the same
       solver; the least wins, and `CalibratedGrid.source` says which. The result is
       therefore never worse than the best of these fixed rules on the held-out half.

    **Pilot size**, by a rule rather than a constant. At few steps the RMS error is set
    by rare draws that end in another mode than the exact flow's; a held-out estimate
    of their share $p$ needs about $m = 16$ of them in the held-out half, i.e.
    $n \approx 2m/p$ draws. $p$ is estimated on the first (at most) 1024 draws, one
    added to the flips and two to the draws (so that none seen still asks for many):
    a draw flips when its per-coordinate RMS error on the stage-1 grid exceeds a tenth
    of the reference's per-coordinate spread. $n$ is then clipped to
    $[\min(1024, n_y), \min(n_y, \max(2048, 131072 / d))]$, $n_y$ the draws in `y0`
    and $d$ the event size: the reference solve costs $n d$, and the cap keeps it at
    most that of 8192 draws in 16 dimensions. Pass as many draws as the cap allows
    (8192 for $d \le 16$); the rule uses fewer when flips are frequent or $d$ large.

    **Cost model**, in model evaluations per pilot draw (one call of the model on one
    draw): $n$ pilot draws, $N$ = `num_steps`, $R$ = `reference_steps`,
    $I$ = `iterations`, $M$ = `minibatch`, $V$ = `validations`, and
    $S = \min(\text{optimise\_steps}, \max(10, \min(B, F / f) / (N M)))$ Adam steps
    (rounded up to a multiple of $V' = \min(V, \lfloor S / 4 \rfloor)$, the held-out
    checks actually made) for $B$ = `evaluation_budget`, $F$ =
    `flop_budget` and $f$ the model's floating-point operations per draw in one forward
    call, as XLA counts them on the lowered computation (`cost_analysis()`; where the
    backend gives no count, or `flop_budget=None`, only $B$ applies):

    - stage 1: $I (N + 1) \min(n, 1024)$;
    - reference: $(R + 1) n$;
    - stage 2: $S N M$ forward evaluations and their reverse pass (about 3x in time),
      plus $(V' + 1) (N + 1) n / 2$ for validation;
    - check: $2 (N + 1) n / 2$.

    The Adam term is capped, independent of $N$, so at large $N$ (where the fixed
    grids' error is already small) fewer Adam steps are taken; the validation and check
    terms grow with $N$, the reference term does not. $B$ bounds it in evaluations, $F$
    in arithmetic: a model cheaper than $F / B$ = 100 000 operations per draw (the
    exact 64-d, 20-component diagonal mixture takes about 10 500) is bounded by $B$
    alone, and a costlier one (a network, a mixture with full covariances: $K d^2$ per
    draw, not $K d$; about 340 000 at $K = 20$, $d = 64$) takes proportionally fewer
    Adam steps, at least 10. With the defaults, $n \le 2048$ at $d = 64$ and at most
    8192 for $d \le 16$ (the pilot-size rule). Measured on an idle 2-core machine in
    float64 at $K = 20$, $d = 64$: about 17 s with diagonal covariances at 100
    evaluations, and at most 47 s with full ones at 10–100 evaluations
    (`benchmarks/RESULTS.md`, "Issue 19, target 1: a budget in arithmetic").

    Supported solvers: `ExponentialAdamsPC(k)` (the default, `order` giving $k$),
    `DPMSolverPP(k)` and `DDIM()`: deterministic solvers of the probability-flow ODE
    whose sample is `num_steps` steps and a final denoise. The last two have no
    embedded error estimate; stage 1 then reads `ExponentialAdamsPC(k)`'s (its
    predictor is the same exponential Adams–Bashforth method of order $k$; $k = 1$ for
    DDIM).

    This is a schedule-learning method in the family of Watson et al. 2021
    (arXiv:2202.05830, differentiating through sample quality), bespoke solvers
    (Shaul et al. 2023, arXiv:2310.19075) and GITS (Chen et al. 2024,
    arXiv:2405.11326). The defaults were chosen on random mixtures
    (`benchmarks/mixture_families.py`'s tune seeds), not on the benchmark's cases.
    Not jittable: the pilot size and the fallback are decided on concrete values.

    Args:
        sde: the SDE.
        model: what predicts the noisy data (a `scoreflow.sde.AbstractPrediction`).
        y0: `(batch, *event)` pilot noise at time `sde.T`; stage 2 needs at least 4
            draws (a few thousand; see the pilot size above).
        num_steps: steps of the grid.
        order: the `ExponentialAdamsPC` order the grid is for (1–4) when `solver` is
            not given.
        solver: the solver the grid is for (default `ExponentialAdamsPC(order)`).
        optimise_steps: the most Adam iterations of stage 2 (0 skips stages 2 and 3).
        learning_rate: Adam's step size on the log-SNR increments' logits.
        reference_steps: log-SNR steps of the stage-2 reference solve (default
            $\min(400, \max(100, 4N))$: its error is then about $4^{-4}$ of an
            $N$-step solve's for the order-4 `ExponentialAdamsPC(3)` step).
        iterations: equidistribution passes of stage 1.
        relaxation: in $(0, 1]$; the fraction of the move taken per pass.
        initial: starting grid (default `LogSNRGrid(num_steps)`).
        minibatch: fit draws per Adam step (at most the fit half).
        evaluation_budget: $B$, the cap on Adam's forward evaluations $S N M$.
        flop_budget: $F$, the cap on Adam's forward arithmetic $S N M f$ (XLA's count;
            `None`: no cap but $B$).
        validations: the most held-out measurements during stage 2 (at least 1; at most
            one per 4 Adam steps).
        fallback: compare with the Karras and log-SNR grids and return the best.

    Returns:
        A `CalibratedGrid` with `num_steps` steps from `sde.T` to `sde.t_min`.

    Raises:
        ValueError: on a bad argument (named), or an unsupported `solver`.
    """
    check_model(sde, model)
    if reference_steps is None:
        reference_steps = min(400, max(100, 4 * num_steps)) if isinstance(num_steps, int) else 400
    _checks.batch_array(y0, "y0")
    _checks.float_dtype(y0.dtype, "y0")
    for name, value, least in [
        ("num_steps", num_steps, 1),
        ("iterations", iterations, 1),
        ("optimise_steps", optimise_steps, 0),
        ("reference_steps", reference_steps, 1),
        ("minibatch", minibatch, 1),
        ("evaluation_budget", evaluation_budget, 1),
        ("validations", validations, 1),
    ]:
        _checks.positive_int(value, name, least)
    if flop_budget is not None:
        _checks.positive(flop_budget, "flop_budget")
    _checks.check(
        isinstance(relaxation, int | float) and 0 < relaxation <= 1,
        "relaxation",
        f"must be in (0, 1], got {relaxation!r}.",
    )
    _checks.positive(learning_rate, "learning_rate")
    if solver is None:
        solver = ExponentialAdamsPC(order)
    _checks.check(
        isinstance(solver, _SUPPORTED),
        "solver",
        "must be ExponentialAdamsPC, DPMSolverPP or DDIM (deterministic probability-flow "
        f"solvers stepped on a fixed grid), got {type(solver).__name__}.",
    )
    if optimise_steps and y0.shape[0] < 4:
        raise ValueError("`y0` needs at least 4 draws to fit and validate a grid.")
    initial = LogSNRGrid(num_steps) if initial is None else initial
    if not isinstance(initial, AbstractGrid) or initial.num_steps != num_steps:
        raise ValueError(f"`initial` must be a scoreflow grid with {num_steps} steps.")
    term = probability_flow_term(sde, model)
    dtype = y0.dtype
    n_avail = y0.shape[0]
    evals = 0

    # Stage 1 on at most 1024 draws: the per-step RMS of the local error is an average.
    estimator = _estimator(solver)
    x1 = y0[: min(n_avail, 1024)]
    ts = grid_times(initial, sde, "initial").astype(dtype)
    exponents = jnp.minimum(jnp.arange(1, num_steps + 1), estimator.order_).astype(dtype) + 1
    for _ in range(iterations):
        _, errors = _solve_on_jit(estimator, term, x1, ts)
        ts = _equidistribute(sde, ts, errors, exponents, jnp.asarray(relaxation, dtype))
    evals += iterations * (num_steps + 1) * x1.shape[0]
    if optimise_steps == 0 or num_steps == 1:
        return CalibratedGrid(ts, "calibrated", (), x1.shape[0], 0, evals)

    # The reference on a first chunk, the flips it shows, then the rule's pilot size.
    ref_ts = LogSNRGrid(reference_steps).times(sde).astype(dtype)
    reference = ExponentialAdamsPC(3)
    n0 = min(n_avail, 1024)
    ref = _solve_on_jit(reference, term, y0[:n0], ref_ts)[0]
    sq = _per_draw_sq(solver, term, y0[:n0], ts, ref)
    size = int(np.prod(y0.shape[1:]))
    spread = float(jnp.sqrt(jnp.mean(jnp.var(ref.reshape(n0, -1), axis=0))))
    flips = int(jnp.sum(jnp.sqrt(sq / size) > 0.1 * spread))
    n = _pilot_size(n_avail, size, flips, n0)
    n -= n % 2
    if n > n0:
        more = _solve_on_jit(reference, term, y0[n0:n], ref_ts)[0]
        ref = jnp.concatenate([ref, more])
        sq = jnp.concatenate([sq, _per_draw_sq(solver, term, y0[n0:n], ts, more)])
    ref, sq = ref[:n], sq[:n]
    evals += (reference_steps + 1) * n + (num_steps + 1) * n
    half = n // 2
    fit_x, fit_ref, fit_sq = y0[:half], ref[:half], sq[:half]
    val_x, val_ref = y0[half:n], ref[half:n]

    # Importance weights for the minibatches (see the docstring).
    total = jnp.sum(fit_sq)
    share = jnp.where(total > 0, fit_sq / jnp.where(total > 0, total, 1), 1 / half)
    probs = 0.5 / half + 0.5 * share
    mb = min(minibatch, half)
    budget = evaluation_budget
    if flop_budget is not None:
        flops = _flops_per_draw(term, ts[0], fit_x[:mb])
        if flops is not None:
            budget = min(budget, int(flop_budget / flops))
    steps = min(optimise_steps, max(10, budget // (num_steps * mb)))
    # Equal chunks compile once: round the step count up to a multiple of the rounds.
    # At least 4 Adam steps between held-out checks: each check costs (N + 1) n / 2
    # evaluations, as much as a few Adam steps, and is wasted after one or two.
    rounds = max(1, min(validations, steps // 4))
    steps = -(-steps // rounds) * rounds
    chunks = [steps // rounds] * rounds

    def held_out(times):
        return float(jnp.sqrt(jnp.mean(_per_draw_sq(solver, term, val_x, times, val_ref)) / size))

    lam = sde.log_snr(ts).astype(dtype)
    lam_ends = lam[jnp.asarray([0, -1])]
    logits = jnp.log(jnp.diff(lam))
    lr = jnp.asarray(learning_rate, dtype)
    with jax.numpy_dtype_promotion("standard"):
        opt_state = optax.adam(lr).init(logits)
    carry = (logits, opt_state)
    best_ts, best = ts, held_out(ts)
    keys = jax.random.split(jax.random.key(0), steps)
    start = 0
    for c in chunks:
        carry = _adam_chunk(
            solver, term, sde, carry, lam_ends, fit_x, fit_ref, probs,
            keys[start : start + c], lr, mb,
        )  # fmt: skip
        start += c
        cand = _grid_from_logits(sde, carry[0], lam_ends, dtype)
        err = held_out(cand)
        if math.isfinite(err) and err < best:
            best_ts, best = cand, err
    evals += steps * num_steps * mb + (rounds + 1) * (num_steps + 1) * half

    scores = [("calibrated", best), ("karras", math.nan), ("log-snr", math.nan)]
    source = "calibrated"
    if fallback:
        fixed = {"karras": KarrasGrid(num_steps), "log-snr": LogSNRGrid(num_steps)}
        for name, grid in fixed.items():
            times = grid.times(sde).astype(dtype)
            err = held_out(times)
            scores[["karras", "log-snr"].index(name) + 1] = (name, err)
            if err < best:
                best_ts, best, source = times, err, name
        evals += 2 * (num_steps + 1) * half
    return CalibratedGrid(best_ts, source, tuple(scores), n, steps, evals)
