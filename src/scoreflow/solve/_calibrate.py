r"""Time grids calibrated to a model by equidistributing the solver's local error."""

from collections.abc import Callable

import equinox as eqx
import jax.lax as lax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .. import _checks
from ..sde import AbstractSDE, Prediction
from ._grids import AbstractGrid, CustomGrid, LogSNRGrid, _pin_ends
from ._sample import _Batched, _check_state
from ._solvers import DenoiserTerm, ExponentialAdamsPC


@eqx.filter_jit
def _local_errors(solver, term, x, ts):
    # One pass of the solver along `ts`; the RMS (over the batch) of its embedded
    # error estimate on each step.
    state = solver.init(term, ts[0], ts[1], x, None)

    def body(carry, times):
        y, st = carry
        y1, err, _, st, _ = solver.step(term, times[0], times[1], y, None, st, False)
        return (y1, st), jnp.sqrt(jnp.mean(err**2))

    _, errors = lax.scan(body, (x, state), (ts[:-1], ts[1:]))
    return errors


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
    return _pin_ends(sde.t_from_log_snr(lam).astype(ts.dtype), sde)


def calibrate_grid(
    sde: AbstractSDE,
    model: Callable[..., Array],
    x_pilot: Float[Array, "batch ..."],
    num_steps: int,
    *,
    parameterisation: str = "score",
    order: int = 3,
    iterations: int = 4,
    relaxation: float = 0.5,
    initial: AbstractGrid | None = None,
) -> CustomGrid:
    r"""A fixed grid for `ExponentialAdamsPC(order)` fitted to one model, once.

    Moving-mesh equidistribution (de Boor 1973; Huang & Russell 2011, *Adaptive Moving
    Mesh Methods*, ch. 2) of the solver's own local error: starting from `initial`
    (default `LogSNRGrid(num_steps)`), each iteration solves the probability-flow ODE
    from the pilot noise `x_pilot` on the current grid, reads the free
    predictor–corrector error estimate $e_i$ of every step (RMS over the pilot batch),
    and moves the grid points in $\lambda$ so that every step receives an equal share
    $e_i^{1/p_i}$ ($p_i$ = the predictor's local order on step $i$, lower on the
    warm-start steps), relaxed by `relaxation` towards the previous grid. The error is
    measured on the grid actually used, at the target `num_steps`, so the result stays
    sensible at small step counts where the asymptotic $e = c h^p$ model fails.

    The same idea as calibrated diffusion schedules (GITS, Chen et al. 2024,
    arXiv:2405.11326; Align Your Steps, Sabour et al. 2024, arXiv:2404.14507): the grid
    concentrates steps where this model's trajectories bend (where samples decide
    between modes), which no fixed rule (Karras, log-SNR) can know. The cost is paid
    once per model and step count, not per sample:
    `iterations * (num_steps + 1)` evaluations on the pilot batch; sampling with the
    grid then costs `num_steps + 1` evaluations as usual. Use pilot noise independent
    of the noise you will sample from (a few hundred draws suffice).

    Args:
        sde: the SDE.
        model: network on one example, `(t, x) -> array`.
        x_pilot: `(batch, *event)` pilot noise at time `sde.T`.
        num_steps: steps of the grid.
        parameterisation: what `model` predicts (`"score"`, `"eps"`, `"x0"`, `"v"`).
        order: the `ExponentialAdamsPC` order the grid is for (1–4).
        iterations: equidistribution passes (each one pilot solve).
        relaxation: in $(0, 1]$; the fraction of the move taken per pass.
        initial: starting grid (default `LogSNRGrid(num_steps)`).

    Returns:
        A `CustomGrid` with `num_steps` steps from `sde.T` to `sde.t_min`.
    """
    _check_state(x_pilot)
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
        raise ValueError(f"`num_steps` must be a positive int, got {num_steps!r}.")
    if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 1:
        raise ValueError(f"`iterations` must be a positive int, got {iterations!r}.")
    _checks.check(
        isinstance(relaxation, int | float) and 0 < relaxation <= 1,
        "relaxation",
        f"must be in (0, 1], got {relaxation!r}.",
    )
    initial = LogSNRGrid(num_steps) if initial is None else initial
    if not isinstance(initial, AbstractGrid) or initial.num_steps != num_steps:
        raise ValueError(f"`initial` must be a scoreflow grid with {num_steps} steps.")
    solver = ExponentialAdamsPC(order)
    term = DenoiserTerm(sde, _Batched(Prediction(sde, model, parameterisation).x0))
    dtype = x_pilot.dtype
    ts = initial.times(sde).astype(dtype)
    exponents = jnp.minimum(jnp.arange(1, num_steps + 1), order).astype(dtype) + 1
    for _ in range(iterations):
        errors = _local_errors(solver, term, x_pilot, ts)
        ts = _equidistribute(sde, ts, errors, exponents, jnp.asarray(relaxation, dtype))
    return CustomGrid(ts)
