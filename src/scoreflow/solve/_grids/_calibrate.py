r"""Time grids calibrated to one model: equidistributed local error, then fitted end points."""

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float

from ... import _checks
from ...sde import AbstractPrediction, AbstractSDE, probability_flow_term
from .._shared._model import check_model
from .._solvers._adams_pc import ExponentialAdamsPC
from ._grids import AbstractGrid, CustomGrid, LogSNRGrid, grid_times, pin_ends


def _solve_on(solver, term, x, ts):
    # One pass of the solver along `ts` (the steps `sample` takes, by hand so that the
    # grid is differentiable): the sample, final denoise included (free), and the RMS
    # over the batch of the embedded error estimate on each step.
    state = solver.init(term, ts[0], ts[1], x, None)

    def body(carry, times):
        y, st = carry
        y1, err, _, st, _ = solver.step(term, times[0], times[1], y, None, st, False)
        return (y1, st), jnp.sqrt(jnp.mean(err**2))

    (y, state), errors = lax.scan(body, (x, state), (ts[:-1], ts[1:]))
    return solver.last_denoised(term, state, ts[-1], y), errors


_solve_on_jit = eqx.filter_jit(_solve_on)


def _grid_from_logits(sde, logits, lam_ends, dtype):
    # Strictly increasing log-SNRs with pinned ends: softmax increments.
    inc = jax.nn.softmax(logits)
    lam = lam_ends[0] + (lam_ends[1] - lam_ends[0]) * jnp.concatenate(
        [jnp.zeros((1,), dtype), jnp.cumsum(inc)]
    )
    return pin_ends(sde.t_from_log_snr(lam).astype(dtype), sde)


def _log_mse(solver, term, sde, logits, lam_ends, x, ref):
    ts = _grid_from_logits(sde, logits, lam_ends, x.dtype)
    err = _solve_on(solver, term, x, ts)[0] - ref
    return jnp.log(jnp.mean(err**2))


@eqx.filter_jit
def _optimise(solver, term, sde, logits, lam_ends, fit, val, learning_rate, steps):
    # Adam on the fit half inside one scan; keep the logits of least validation loss.
    fit_loss = lambda lg: _log_mse(solver, term, sde, lg, lam_ends, *fit)
    val_loss = lambda lg: _log_mse(solver, term, sde, lg, lam_ends, *val)
    optimiser = optax.adam(learning_rate)

    def body(carry, _):
        lg, opt_state, best_loss, best_lg = carry
        grad = jax.grad(fit_loss)(lg)
        # optax mixes its int32 step count with floats; keep working when the user
        # runs JAX with strict dtype promotion.
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = optimiser.update(grad, opt_state)
            lg = jnp.asarray(optax.apply_updates(lg, updates))
        loss = val_loss(lg)
        better = jnp.isfinite(loss) & (loss < best_loss)
        best = (jnp.where(better, loss, best_loss), jnp.where(better, lg, best_lg))
        return (lg, opt_state, *best), None

    with jax.numpy_dtype_promotion("standard"):
        opt_state = optimiser.init(logits)
    init = (logits, opt_state, val_loss(logits), logits)
    (_, _, _, best_lg), _ = lax.scan(body, init, None, length=steps)
    return best_lg


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


def calibrate_grid(
    sde: AbstractSDE,
    model: AbstractPrediction,
    y0: Float[Array, "batch ..."],
    num_steps: int,
    *,
    order: int = 3,
    optimise_steps: int = 200,
    learning_rate: float = 0.05,
    reference_steps: int = 400,
    iterations: int = 4,
    relaxation: float = 0.5,
    initial: AbstractGrid | None = None,
) -> CustomGrid:
    r"""A fixed grid for `ExponentialAdamsPC(order)` fitted once to one model.

    Two stages, both on pilot noise `y0` (independent of the noise you will
    sample from; the cost is paid once per model and step count, not per sample):

    1. *Equidistribution* (no reference needed). Moving-mesh equidistribution
       (de Boor 1973; Huang & Russell 2011, *Adaptive Moving Mesh Methods*, ch. 2) of
       the solver's own local error: starting from `initial` (default
       `LogSNRGrid(num_steps)`), each of `iterations` passes solves on the current
       grid, reads the free predictor–corrector error estimate $e_i$ of every step
       (RMS over the pilot batch), and moves the points in $\lambda$ so that every step
       receives an equal share $e_i^{1/p_i}$ ($p_i$ the predictor's local order on
       step $i$), relaxed by `relaxation` towards the previous grid. The error is read
       at the target `num_steps`, so the rule stays sensible at small step counts.
    2. *End-point optimisation* (if `optimise_steps > 0`). The global error, not the
       local one, is what a sample pays: solve the pilot batch accurately once
       (`LogSNRGrid(reference_steps)`), then minimise the log mean squared distance
       between the `num_steps` solve and that reference over the grid's log-SNRs
       (softmax increments, ends pinned) by Adam, differentiating through the solver.
       Half of the pilot fits, the other half validates: the grid returned is the one
       with the least validation error seen, the stage-1 grid included, so it is never
       worse than stage 1 on the validation half.

    The pilot's size matters most at few steps: there the RMS error is set by the rare
    trajectories that end in another mode than the exact flow's, and a Monte Carlo
    estimate of a rare event's share needs many draws (about $1/p$ for a share $p$).
    On the random mixtures of `benchmarks/calibrate_design.py` (none of them the
    benchmark's cases), 8192 draws instead of 2048 divided the error at 20 NFE by
    1.0–7.7 on six of seven mixtures (3% worse on the seventh), by 0.8–1.3 at 10 NFE
    and by 0.5–2 at 50 NFE (177 on one mixture, where 2048 draws left one sample in
    another mode), for 1.4–6x the calibration time.

    This is a schedule-learning method in the family of Watson et al. 2021
    (arXiv:2202.05830, differentiating through sample quality), bespoke solvers
    (Shaul et al. 2023, arXiv:2310.19075) and GITS (Chen et al. 2024,
    arXiv:2405.11326): a fixed rule (Karras, log-SNR) cannot know where this model's
    trajectories bend. Evaluations spent, all on the pilot batch:
    `iterations * (num_steps + 1)` (stage 1), plus `reference_steps + 1` and
    `optimise_steps` forward-and-backward `num_steps`-step solves (stage 2).
    Sampling with the returned grid costs the usual `num_steps + 1` evaluations.
    The defaults were chosen on random mixtures, not on the benchmark's cases.

    Args:
        sde: the SDE.
        model: what predicts the noisy data (a `scoreflow.sde.AbstractPrediction`).
        y0: `(batch, *event)` pilot noise at time `sde.T`; stage 2 needs at least 2
            draws (a few thousand; 8192 on multimodal data, see above).
        num_steps: steps of the grid.
        order: the `ExponentialAdamsPC` order the grid is for (1–4).
        optimise_steps: Adam iterations of stage 2 (0 skips it).
        learning_rate: Adam's step size on the log-SNR increments' logits.
        reference_steps: log-SNR steps of the stage-2 reference solve.
        iterations: equidistribution passes of stage 1.
        relaxation: in $(0, 1]$; the fraction of the move taken per pass.
        initial: starting grid (default `LogSNRGrid(num_steps)`).

    Returns:
        A `CustomGrid` with `num_steps` steps from `sde.T` to `sde.t_min`.
    """
    check_model(sde, model)
    _checks.batch_array(y0, "y0")
    _checks.float_dtype(y0.dtype, "y0")
    for name, value, least in [
        ("num_steps", num_steps, 1),
        ("iterations", iterations, 1),
        ("optimise_steps", optimise_steps, 0),
        ("reference_steps", reference_steps, 1),
    ]:
        _checks.positive_int(value, name, least)
    _checks.check(
        isinstance(relaxation, int | float) and 0 < relaxation <= 1,
        "relaxation",
        f"must be in (0, 1], got {relaxation!r}.",
    )
    _checks.positive(learning_rate, "learning_rate")
    if optimise_steps and y0.shape[0] < 2:
        raise ValueError("`y0` needs at least 2 draws to fit and validate a grid.")
    initial = LogSNRGrid(num_steps) if initial is None else initial
    if not isinstance(initial, AbstractGrid) or initial.num_steps != num_steps:
        raise ValueError(f"`initial` must be a scoreflow grid with {num_steps} steps.")
    solver = ExponentialAdamsPC(order)
    term = probability_flow_term(sde, model)
    dtype = y0.dtype
    ts = grid_times(initial, sde, "initial").astype(dtype)
    exponents = jnp.minimum(jnp.arange(1, num_steps + 1), order).astype(dtype) + 1
    for _ in range(iterations):
        _, errors = _solve_on_jit(solver, term, y0, ts)
        ts = _equidistribute(sde, ts, errors, exponents, jnp.asarray(relaxation, dtype))
    if optimise_steps == 0 or num_steps == 1:
        return CustomGrid(ts)

    reference, _ = _solve_on_jit(solver, term, y0, LogSNRGrid(reference_steps).times(sde))
    half = y0.shape[0] // 2
    fit, val = (y0[:half], reference[:half]), (y0[half:], reference[half:])
    lam = sde.log_snr(ts).astype(dtype)
    lam_ends = lam[jnp.asarray([0, -1])]
    logits = jnp.log(jnp.diff(lam))
    lr = jnp.asarray(learning_rate, dtype)
    logits = _optimise(solver, term, sde, logits, lam_ends, fit, val, lr, optimise_steps)
    return CustomGrid(_grid_from_logits(sde, logits, lam_ends, dtype))
