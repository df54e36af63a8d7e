"""The log-likelihood of a score model through its probability-flow ODE."""

import math
from collections.abc import Callable

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from ... import _checks
from ..._custom_types import Key, RealScalarLike
from ...sde import (
    EDMSDE,
    VPSDE,
    AbstractPrediction,
    AbstractSDE,
    ProbabilityFlowTerm,
    probability_flow_term,
)
from .._shared._model import check_model
from ._augmented import solve_augmented
from ._trace import AbstractTrace, Exact, check_trace

TIME_VARIABLES: tuple[str, ...] = ("t", "log_snr", "vp")

# The reference of `time_variable="vp"`: Song et al.'s VP SDE, linear beta from 0.1 to 20
# (arXiv:2011.13456, appendix C); only its log-SNR <-> time map is used.
_REFERENCE_VP = VPSDE(beta_min=0.1, beta_max=20.0)


class LikelihoodResult(eqx.Module):
    r"""What `log_likelihood` returns.

    Attributes:
        log_prob: `(batch,)` $\log p_{t_{\min}}(x)$ (see `log_likelihood`).
        std_error: `(batch,)` standard error of `log_prob` over the Hutchinson probes
            (zero for the exact trace; finite and positive for every K, one probe
            included: the plug-in estimate described in `Hutchinson`).
        prior_log_prob: `(batch,)` the prior's log-density at the encoding `z`.
        delta_log_prob: `(batch,)` $\int_{t_{\min}}^T \operatorname{tr}\,\partial f/\partial x
            \,dt$, so that `log_prob = prior_log_prob + delta_log_prob`.
        z: `(batch, *event)` the encoding at `T`.
        num_steps: solver steps attempted (accepted + rejected).
        nfe: evaluations of the augmented vector field.
        stats: diffrax's statistics dictionary.
        result: diffrax's result code.
    """

    log_prob: Array
    std_error: Array
    prior_log_prob: Array
    delta_log_prob: Array
    z: Array
    num_steps: Int[Array, ""]
    nfe: Int[Array, ""]
    stats: dict
    result: dfx.RESULTS


class _ProbabilityFlowField(eqx.Module):
    # The per-example probability-flow vector field in diffrax's `(t, x, args)` order.
    term: ProbabilityFlowTerm

    def __call__(self, t, x, args):
        return self.term.vf(t, x, args)


class _InLogSNR(eqx.Module):
    # dx/dlambda = f(t(lambda), x) dt/dlambda. The augmented dynamics take the trace of
    # this field, so the log-det integrand is scaled by the same dt/dlambda and
    # int_{lambda(t_min)}^{lambda(T)} tr(df/dx) dt/dlambda dlambda = int_{t_min}^T tr df/dx dt.
    field: Callable
    sde: AbstractSDE

    def __call__(self, log_snr, x, args):
        ones = jnp.ones_like(log_snr)
        t, dt_dlog_snr = jax.jvp(self.sde.t_from_log_snr, (log_snr,), (ones,))
        return self.field(t, x, args) * dt_dlog_snr


class _InVPTime(eqx.Module):
    # The probability flow in the time u and the state v = x / c_t, c_t = sqrt(alpha_t^2
    # + sigma_t^2), of the reference VP SDE at the same log-SNR (t(u) =
    # sde.t_from_log_snr(reference.log_snr(u))): dv/du = (f(t, c v) - v dc/dt) / c dt/du.
    # Its trace in v is (tr df/dx - dim (dc/dt) / c) dt/du, so the log-det of x is that of
    # v plus dim * log(c_T / c_{t_min}) (added back in `_log_likelihood`).
    field: Callable
    sde: AbstractSDE

    def time(self, u):
        return self.sde.t_from_log_snr(_REFERENCE_VP.log_snr(u))

    def scale(self, t):
        alpha, sigma = self.sde.marginal(t)
        return jnp.sqrt(alpha**2 + sigma**2)

    def __call__(self, u, v, args):
        t, dt_du = jax.jvp(self.time, (u,), (jnp.ones_like(u),))
        c, dc_dt = jax.jvp(self.scale, (t,), (jnp.ones_like(t),))
        return (self.field(t, c * v, args) - v * dc_dt) / c * dt_du


def default_time_variable(sde: AbstractSDE) -> str:
    """`log_likelihood`'s time variable when none is given: `"vp"` on `EDMSDE`, else `"t"`.

    Chosen on the tune seeds of `benchmarks/mixture_families.py` (issue 19): on the EDM
    SDE `"vp"` reaches 1e-4 nats/dim in a third fewer evaluations than `"t"`; on Song et
    al.'s VP SDE the two are the same ODE, and the other SDEs were not measured, so they
    keep `"t"`.
    """
    return "vp" if isinstance(sde, EDMSDE) else "t"


def log_likelihood(
    sde: AbstractSDE,
    model: AbstractPrediction,
    x: Float[Array, "batch ..."],
    *,
    prior_log_prob: Callable[[Array], Array] | None = None,
    solver: dfx.AbstractSolver | None = None,
    rtol: RealScalarLike = 1e-5,
    atol: RealScalarLike = 1e-5,
    dt0: float | None = None,
    stepsize_controller: dfx.AbstractStepSizeController | None = None,
    max_steps: int = 4096,
    time_variable: str | None = None,
    trace: AbstractTrace = Exact(),
    adjoint: dfx.AbstractAdjoint = dfx.RecursiveCheckpointAdjoint(),
    throw: bool = True,
    progress: bool = False,
    key: Key | None = None,
) -> LikelihoodResult:
    r"""Log-likelihood of a score model by its probability-flow ODE.

    Solves the probability-flow ODE $dx/dt = f(t)x - \tfrac12 g(t)^2 s_{\theta}(t, x)$
    (Song et al. 2021, arXiv:2011.13456, eq. 13; the vector field is
    `scoreflow.sde.ProbabilityFlowTerm` of the model's `score`) from
    `t_min` up to `T`, augmented with the instantaneous change of variables (Chen et al.
    2018, eq. 4; Song et al. 2021, eq. 39):

    $$\log p_{t_{\min}}(x) = \log p_T(x_T) + \int_{t_{\min}}^T \nabla\cdot
    \tilde f(t, x_t)\,dt.$$

    **What is computed is $\log p_{t_{\min}}$, not $\log p_0$.** The ODE starts at the
    time floor, so the density is that of the slightly noised data
    $x_{t_{\min}} = \alpha_{t_{\min}} x_0 + \sigma_{t_{\min}}\varepsilon$. With the exact
    score and the exact $p_T$ as `prior_log_prob` it equals
    `mixture.noised(sde).log_prob(sde.t_min, x)` up to solver error (this is what the
    tests check). It converges to $\log p_0(x)$ as $t_{\min} \to 0$ for a smooth $p_0$;
    with `VPSDE(t_min=1e-5)` (Song et al.'s likelihood floor) the two differ by
    $O(\sigma_{t_{\min}}^2)$ per dimension. For discrete data use `bits_per_dim`, which
    dequantises first (Song et al. 2021, appendix D.2). With the SDE's Gaussian prior
    (the default) the result is the model's likelihood, which differs from the exact
    $\log p_{t_{\min}}$ by the prior mismatch $\log p_T - \log N(0, \sigma_T^2 I)$.

    Args:
        sde: the SDE.
        model: what predicts the noisy data (a `scoreflow.sde.AbstractPrediction`: a
            `ScoreSDE`, `mixture.noised(sde)`, `Prediction(sde, network, ...)`).
        x: `(batch, *event)` data.
        prior_log_prob: per-example log-density at `T` (default `sde.prior_log_prob`);
            pass the exact $\log p_T$ to isolate solver error.
        solver: diffrax ODE solver (default `diffrax.Tsit5()`).
        rtol: relative tolerance of the PID controller (an array value does not
            recompile).
        atol: absolute tolerance of the PID controller.
        dt0: first step, in units of `time_variable` (default a 64th of the range).
        stepsize_controller: overrides the default
            `diffrax.PIDController(rtol, atol, norm=augmented_error_norm)` (then `rtol`
            and `atol` are unused).
        max_steps: step budget.
        time_variable: what the solver integrates over (default: `"vp"` on
            `EDMSDE`, `"t"` on every other SDE; see `default_time_variable`). `"t"`:
            the SDE's time. `"log_snr"`: $\lambda_t = \log(\alpha_t/\sigma_t)$, from
            $\lambda_{t_{\min}}$ down to $\lambda_T$; the vector field and the trace
            are both multiplied by $dt/d\lambda$ (`sde.t_from_log_snr`), so the
            likelihood is the same up to solver error. In $\lambda$ the probability
            flow of a VP SDE is $dx/d\lambda = \sigma^2 (x + s_{\theta})$ (the variable of
            the exponential integrators, Lu et al. 2022, arXiv:2206.00927), bounded where
            the score of concentrated data varies on the scale of $\sigma$. Measured on
            the exact-score mixtures (`benchmarks/RESULTS.md`), it needs *more*
            evaluations than `"t"` for a given error unless the components are very
            narrow. `"vp"`: the time $u$ and the state $v = x/\sqrt{\alpha_t^2 +
            \sigma_t^2}$ of a reference VP SDE (Song et al.'s linear $\beta$ from 0.1 to
            20) at the same log-SNR, $\lambda^{\mathrm{VP}}_u = \lambda_t$. Every SDE's
            probability flow is the same ODE in $x/\alpha$ and $\sigma/\alpha$ (Karras
            et al. 2022, arXiv:2206.00364, sec. 4), so this solves any SDE's likelihood
            as that VP SDE's in $t$: $dv/du = (f(t, c v) - v\,\dot c)/c \cdot dt/du$
            with $c = \sqrt{\alpha_t^2 + \sigma_t^2}$, its trace in $v$ integrated, and
            $\mathrm{dim}\,\log(c_T/c_{t_{\min}})$ added back. On that VP SDE it is
            `"t"` itself. On `EDMSDE` ($t = \sigma$, $x$ growing to 80) it removes the
            $1/\sigma$ part of the log-det integrand and the growth of $x$, which set the
            steps in $t$: on case B and the full-covariance and 64-d mixtures of the
            design set 85-103 evaluations reach 1e-4 nats/dim where `"t"` needs
            127-151 (`benchmarks/RESULTS.md`, issue 19). `dt0` is in units of $u$.
        trace: `Exact()` (forward-mode Jacobian; cost grows with the dimension) or
            `Hutchinson(num_probes, probe)` (K vector–Jacobian products per evaluation,
            the probes drawn once and held fixed; their products are integrated too,
            for `std_error`).
        adjoint: diffrax adjoint for differentiating through the solve.
        throw: raise on a failed solve; with `False` check `result`.
        progress: show diffrax's progress meter of the solve (off by default).
        key: PRNG key of the probes (required for `Hutchinson`).

    Returns:
        A `LikelihoodResult`.

    Raises:
        ValueError: on bad options (negative `rtol` / `atol`, `max_steps < 1`, a `dt0` of
            the wrong sign), shapes, a half-precision `x`, a missing or malformed `key`,
            or non-finite `x` (under `jit`, a non-finite `x` raises at run time through
            `equinox.error_if`).
    """
    check_model(sde, model)
    _checks.batch_array(x, "x")
    _checks.float_dtype(x.dtype, "x")
    check_trace(trace)
    if time_variable is None:
        time_variable = default_time_variable(sde)
    if time_variable not in TIME_VARIABLES:
        raise ValueError(f"`time_variable` must be one of {TIME_VARIABLES}, got {time_variable!r}.")
    if trace.needs_key and key is None:
        raise ValueError("`key` is required for a Hutchinson trace (it draws the probes).")
    if key is not None:
        _checks.key(key)
    _checks.tolerances(rtol, atol)
    _checks.max_steps(max_steps)
    if dt0 is not None:
        # From t_min up to T; in log-SNR that is downwards.
        up = time_variable != "log_snr"
        _checks.scalar(dt0, "dt0")
        _checks.sign(
            dt0,
            1.0 if up else -1.0,
            "dt0",
            "the solve runs from t_min up to T" if up else "the log-SNR decreases from t_min to T",
        )
    x = _checks.finite(x, "x")
    return _log_likelihood(
        sde,
        model,
        x,
        prior_log_prob=prior_log_prob,
        solver=solver,
        rtol=rtol,
        atol=atol,
        dt0=dt0,
        stepsize_controller=stepsize_controller,
        max_steps=max_steps,
        time_variable=time_variable,
        trace=trace,
        adjoint=adjoint,
        throw=throw,
        progress=progress,
        key=key,
    )


@eqx.filter_jit
def _log_likelihood(
    sde,
    model,
    x,
    *,
    prior_log_prob,
    solver,
    rtol,
    atol,
    dt0,
    stepsize_controller,
    max_steps,
    time_variable,
    trace,
    adjoint,
    throw,
    progress,
    key,
):
    field = _ProbabilityFlowField(probability_flow_term(sde, model, batched=False))
    t0 = jnp.asarray(sde.t_min, x.dtype)
    t1 = jnp.asarray(sde.T, x.dtype)
    y0 = x
    c0 = c1 = jnp.ones((), x.dtype)  # x / c is the solved state ("vp"; 1 otherwise)
    if time_variable == "log_snr":
        field = _InLogSNR(field, sde)
        t0, t1 = sde.log_snr(t0), sde.log_snr(t1)
    elif time_variable == "vp":
        field = _InVPTime(field, sde)
        c0, c1 = field.scale(t0), field.scale(t1)
        y0 = x / c0
        t0 = _REFERENCE_VP.t_from_log_snr(sde.log_snr(t0))
        t1 = _REFERENCE_VP.t_from_log_snr(sde.log_snr(t1))
    sol = solve_augmented(
        field,
        y0,
        t0,
        t1,
        trace=trace,
        solver=solver,
        rtol=rtol,
        atol=atol,
        dt0=dt0,
        stepsize_controller=stepsize_controller,
        max_steps=max_steps,
        adjoint=adjoint,
        throw=throw,
        progress=progress,
        key=key,
    )
    z, log_det = sol.z, sol.log_det
    if time_variable == "vp":
        z = c1 * z
        log_det = log_det + math.prod(x.shape[1:]) * jnp.log(c1 / c0)
    prior = sde.prior_log_prob if prior_log_prob is None else prior_log_prob
    prior_lp = jax.vmap(prior)(z).astype(x.dtype)
    if prior_lp.shape != (x.shape[0],):
        raise ValueError(
            f"`prior_log_prob` must return a scalar per example, got shape {prior_lp.shape[1:]}."
        )
    return LikelihoodResult(
        log_prob=prior_lp + log_det,
        std_error=sol.std_error,
        prior_log_prob=prior_lp,
        delta_log_prob=log_det,
        z=z,
        num_steps=sol.num_steps,
        nfe=sol.nfe,
        stats=sol.stats,
        result=sol.result,
    )
