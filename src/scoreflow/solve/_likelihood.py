r"""The instantaneous change of variables: one augmented dynamics for every flow.

For an ODE $dz/dt = f(t, z)$ the log-density along a trajectory obeys
$\frac{d}{dt}\log p_t(z_t) = -\operatorname{tr}\,\partial f / \partial z$
(Chen et al. 2018, "Neural Ordinary Differential Equations", arXiv:1806.07366,
Theorem 1 / eq. 4). Augmenting the state with $\ell(t) = \int_{t_0}^t \operatorname{tr}
\partial f/\partial z\,ds$ gives, for the flow map $\phi_{t_0 \to t_1}$,
$\log|\det \partial\phi/\partial z| = \ell(t_1)$ and
$\log p_{t_0}(z_{t_0}) = \log p_{t_1}(z_{t_1}) + \ell(t_1)$.

The same `AugmentedDynamics` serves the probability-flow ODE of a score model
(`log_likelihood`, Song et al. 2021, arXiv:2011.13456, sec. 4.3 and appendix D.2) and
the continuous normalizing flows of `scoreflow.bijections.CNF` (FFJORD, Grathwohl et al.
2019, arXiv:1810.01367).
"""

from collections.abc import Callable

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, Int

from .. import _checks
from .._custom_types import Key, ScalarLike
from ..sde import AbstractSDE, Prediction, probability_flow_term
from ._sample import evals_per_step

TRACES: tuple[str, ...] = ("exact", "hutchinson")
PROBES: tuple[str, ...] = ("rademacher", "gaussian")
TIME_VARIABLES: tuple[str, ...] = ("t", "log_snr")


def check_trace(trace: str, probe: str, num_probes: int) -> None:
    """Validate the trace-estimator options, naming the offending argument.

    Raises:
        ValueError: on an unknown `trace` or `probe`, or `num_probes < 1`.
    """
    if trace not in TRACES:
        raise ValueError(f"`trace` must be one of {TRACES}, got {trace!r}.")
    if probe not in PROBES:
        raise ValueError(f"`probe` must be one of {PROBES}, got {probe!r}.")
    if not isinstance(num_probes, int) or num_probes < 1:
        raise ValueError(f"`num_probes` must be a positive integer, got {num_probes!r}.")


def draw_probes(
    shape: tuple[int, ...], num_probes: int, probe: str, *, key: Key, dtype
) -> Float[Array, "..."]:
    r"""Hutchinson probes $\varepsilon$ with $E[\varepsilon\varepsilon^\top] = I$.

    Hutchinson 1990; Rademacher probes have the smallest variance of all
    (Grathwohl et al. 2019, sec. 3.1). Returns shape `(batch, num_probes, *event)` for
    `shape = (batch, *event)`.
    """
    full = (shape[0], num_probes, *shape[1:])
    if probe == "rademacher":
        return jr.rademacher(key, full, dtype=dtype)
    return jr.normal(key, full, dtype)


class AugmentedState(eqx.Module):
    r"""The state of the augmented ODE.

    Attributes:
        z: `(batch, *event)` the flowing state.
        log_det: `(batch, K)` $\int \operatorname{tr}\,\partial f/\partial z\,dt$, one
            estimate per probe (K = 1 for the exact trace).
        kinetic: `(batch,)` $\int \|f\|^2 dt$ (Finlay et al. 2020, arXiv:2002.02798,
            eq. 5).
        frobenius: `(batch,)` $\int \|\partial f/\partial z\|_F^2 dt$, exact or by the
            probes' $\|\varepsilon^\top \partial f/\partial z\|^2$ (Finlay et al. 2020,
            eq. 6).
    """

    z: Array
    log_det: Array
    kinetic: Array
    frobenius: Array


class AugmentedDynamics(eqx.Module):
    r"""$(z, \ell, E_K, E_J)$ dynamics of any vector field, as a diffrax vector field.

    `vector_field(t, z, args)` acts on one example (diffrax order); the dynamics vmap it
    over the batch axis. With `trace="exact"` the Jacobian is built by forward-mode
    differentiation (`jax.jacfwd`: `dim` Jacobian-vector products, fine for small
    dimension); with `trace="hutchinson"` one vector–Jacobian product per probe gives
    $\varepsilon_k^\top (\partial f/\partial z)\varepsilon_k$ for the K probes passed as
    diffrax `args` (held fixed for the whole solve, so the estimate is of the integral,
    not a sum of independent noises; Grathwohl et al. 2019, eq. 7).

    Args:
        vector_field: per-example `(t, z, args) -> dz/dt`.
        trace: `"exact"` or `"hutchinson"`.
    """

    vector_field: Callable
    trace: str = eqx.field(static=True, default="exact")

    def __check_init__(self):
        check_trace(self.trace, "rademacher", 1)

    def _one(self, t, z, probes):
        f = lambda y: self.vector_field(t, y, None)
        if self.trace == "exact":
            flat = lambda y: f(y.reshape(z.shape)).reshape(-1)
            dz = f(z)
            jac = jax.jacfwd(flat)(z.reshape(-1))
            tr = jnp.trace(jac)[None]
            frob = jnp.sum(jac**2)
        else:
            dz, vjp = jax.vjp(f, z)
            (eps_jac,) = jax.vmap(vjp)(probes)
            axes = tuple(range(1, probes.ndim))
            tr = jnp.sum(eps_jac * probes, axis=axes)
            frob = jnp.mean(jnp.sum(eps_jac**2, axis=axes))
        return dz, tr, jnp.sum(dz**2), frob

    def __call__(self, t, state: AugmentedState, args) -> AugmentedState:
        probes = args
        if self.trace == "exact":
            out = jax.vmap(self._one, in_axes=(None, 0, None))(t, state.z, None)
        else:
            out = jax.vmap(self._one, in_axes=(None, 0, 0))(t, state.z, probes)
        dz, tr, ke, frob = out
        dtype = state.z.dtype
        return AugmentedState(dz, tr.astype(dtype), ke.astype(dtype), frob.astype(dtype))


class FlowSolution(eqx.Module):
    r"""The end of an augmented solve from `t0` to `t1`.

    Attributes:
        z: `(batch, *event)` the state at `t1`.
        log_det: `(batch,)` estimate of $\log|\det \partial z_{t_1}/\partial z_{t_0}|$.
        std_error: `(batch,)` standard error of `log_det` over the probes (zero for
            the exact trace; with one probe it cannot be estimated and is NaN).
        kinetic: `(batch,)` $\int_{t_0}^{t_1}\|f\|^2 dt$.
        frobenius: `(batch,)` $\int_{t_0}^{t_1}\|\partial f/\partial z\|_F^2 dt$.
        num_steps: solver steps attempted.
        nfe: evaluations of the augmented vector field (each is one network forward
            pass plus its derivatives); -1 when the solver's cost is unknown.
        stats: diffrax's statistics dictionary.
        result: diffrax's result code.
    """

    z: Array
    log_det: Array
    std_error: Array
    kinetic: Array
    frobenius: Array
    num_steps: Int[Array, ""]
    nfe: Int[Array, ""]
    stats: dict
    result: dfx.RESULTS


def check_finite(x: Array, name: str) -> Array:
    """Raise if `x` holds NaN or infinity.

    A concrete array is checked at once (`ValueError`); a traced one at run time through
    `equinox.error_if`, so the check also holds under `jit`.
    """
    message = f"`{name}` contains non-finite values."
    value = _checks.concrete(x)
    if value is not None:
        if not np.all(np.isfinite(value)):
            raise ValueError(message)
        return x
    return eqx.error_if(x, ~jnp.all(jnp.isfinite(x)), message)


def _rms(x: Array) -> Array:
    # sqrt with a zero (not NaN) gradient at zero: the log-det starts at exactly 0.
    ms = jnp.mean(x**2)
    positive = ms > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, ms, 1)), 0)


def augmented_error_norm(y: AugmentedState) -> Array:
    r"""Error norm of the augmented state: $\max(\mathrm{RMS}(z), \mathrm{RMS}(\ell))$.

    diffrax's default norm is the RMS over every leaf together. For the augmented state
    that has two flaws. The log-det $\ell$ is one scalar per example next to `dim` state
    entries, so its error enters with weight $1/(\mathrm{dim} + 1)$ and is controlled
    ever more loosely as the dimension grows, although it is the quantity a likelihood
    reports. And the Finlay et al. integrals (kinetic energy, Jacobian Frobenius norm)
    are regularisers whose accuracy nobody needs, yet they would drive the step size.
    This norm holds the state and the log-det each to the requested tolerance and leaves
    the regularisers out (they are still integrated, on the same steps). On the
    exact-score mixtures of `benchmarks/likelihood_accuracy.py` it reaches a given
    log-likelihood error with fewer evaluations than the joint RMS.
    """
    return jnp.maximum(_rms(y.z), _rms(y.log_det))


def _check_batch(x, name):
    if not isinstance(x, jax.Array) or not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"`{name}` must be a floating-point JAX array, got {type(x)}.")
    if x.ndim < 2:
        raise ValueError(f"`{name}` must have shape (batch, *event_shape), got {x.shape}.")


def solve_augmented(
    vector_field: Callable,
    z0: Float[Array, "batch ..."],
    t0,
    t1,
    *,
    trace: str = "exact",
    num_probes: int = 1,
    probe: str = "rademacher",
    solver: dfx.AbstractSolver | None = None,
    rtol: ScalarLike = 1e-5,
    atol: ScalarLike = 1e-5,
    dt0=None,
    stepsize_controller: dfx.AbstractStepSizeController | None = None,
    max_steps: int | None = 4096,
    adjoint: dfx.AbstractAdjoint = dfx.RecursiveCheckpointAdjoint(),
    throw: bool = True,
    key: Key | None = None,
) -> FlowSolution:
    r"""Solve the augmented dynamics of `vector_field` from `t0` to `t1`.

    Args:
        vector_field: per-example `(t, z, args) -> dz/dt`.
        z0: `(batch, *event)` state at `t0`.
        t0: start time.
        t1: end time (may be smaller than `t0`; the log-det then changes sign).
        trace: `"exact"` (forward-mode Jacobian) or `"hutchinson"`.
        num_probes: K probes for `"hutchinson"`, drawn once from `key`.
        probe: `"rademacher"` or `"gaussian"`.
        solver: diffrax ODE solver (default `diffrax.Tsit5()`).
        rtol: relative tolerance of the default PID controller.
        atol: absolute tolerance of the default PID controller.
        dt0: first step (default $(t_1 - t_0)/64$ for an adaptive solve).
        stepsize_controller: overrides the default controller,
            `diffrax.PIDController(rtol, atol, norm=augmented_error_norm)` (e.g.
            `diffrax.ConstantStepSize()` with a fixed `dt0`).
        max_steps: step budget.
        adjoint: diffrax adjoint used when differentiating through the solve
            (`RecursiveCheckpointAdjoint`, `BacksolveAdjoint`, ...).
        throw: raise on a failed solve; with `False` inspect `result`.
        key: PRNG key of the probes (needed for `"hutchinson"`).

    Returns:
        A `FlowSolution`.

    Raises:
        ValueError: on bad options, or `"hutchinson"` without a `key`.
    """
    check_trace(trace, probe, num_probes)
    _check_batch(z0, "x")
    z0 = check_finite(z0, "x")
    dtype = z0.dtype
    batch = z0.shape[0]
    if trace == "hutchinson":
        if key is None:
            raise ValueError("`key` is required for trace='hutchinson' (it draws the probes).")
        probes = draw_probes(z0.shape, num_probes, probe, key=key, dtype=dtype)
        k = num_probes
    else:
        probes = None
        k = 1
    solver = dfx.Tsit5() if solver is None else solver
    t0 = jnp.asarray(t0, dtype)
    t1 = jnp.asarray(t1, dtype)
    if stepsize_controller is None:
        stepsize_controller = dfx.PIDController(rtol=rtol, atol=atol, norm=augmented_error_norm)
    if dt0 is None and not isinstance(stepsize_controller, dfx.ConstantStepSize):
        dt0 = (t1 - t0) / 64
    elif dt0 is not None:
        dt0 = jnp.asarray(dt0, dtype)
    zeros = jnp.zeros((batch,), dtype)
    y0 = AugmentedState(z0, jnp.zeros((batch, k), dtype), zeros, zeros)
    sol = dfx.diffeqsolve(
        dfx.ODETerm(AugmentedDynamics(vector_field, trace)),
        solver,
        t0,
        t1,
        dt0,
        y0,
        args=probes,
        stepsize_controller=stepsize_controller,
        max_steps=max_steps,
        adjoint=adjoint,
        throw=throw,
    )
    end = jax.tree.map(lambda leaf: leaf[-1], sol.ys)
    log_det = jnp.mean(end.log_det, axis=1)
    if k > 1:
        std_error = jnp.std(end.log_det, axis=1, ddof=1) / jnp.sqrt(jnp.asarray(k, dtype))
    elif trace == "exact":
        std_error = jnp.zeros_like(log_det)
    else:
        std_error = jnp.full_like(log_det, jnp.nan)
    num_steps = sol.stats["num_steps"]
    cost = evals_per_step(solver)
    nfe = jnp.asarray(-1) if cost is None else num_steps * cost[0] + cost[1]
    return FlowSolution(
        z=end.z,
        log_det=log_det,
        std_error=std_error,
        kinetic=end.kinetic,
        frobenius=end.frobenius,
        num_steps=num_steps,
        nfe=nfe,
        stats=sol.stats,
        result=sol.result,
    )


class LikelihoodResult(eqx.Module):
    r"""What `log_likelihood` returns.

    Attributes:
        log_prob: `(batch,)` $\log p_{t_{\min}}(x)$ (see `log_likelihood`).
        std_error: `(batch,)` standard error of `log_prob` over the Hutchinson probes
            (zero for the exact trace, NaN for a single probe).
        prior_log_prob: `(batch,)` the prior's log-density at the encoding `z`.
        delta_log_prob: `(batch,)` $\int_{t_{\min}}^T \operatorname{tr}\,\partial f/\partial x
            \,dt$, so that `log_prob = prior_log_prob + delta_log_prob`.
        z: `(batch, *event)` the encoding at `T`.
        nfe: evaluations of the augmented vector field.
        num_steps: solver steps attempted (accepted + rejected).
        stats: diffrax's statistics dictionary.
        result: diffrax's result code.
    """

    log_prob: Array
    std_error: Array
    prior_log_prob: Array
    delta_log_prob: Array
    z: Array
    nfe: Int[Array, ""]
    num_steps: Int[Array, ""]
    stats: dict
    result: dfx.RESULTS


class _ProbabilityFlowField(eqx.Module):
    term: dfx.ODETerm

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


def log_likelihood(
    sde: AbstractSDE,
    model: Callable[..., Array],
    x: Float[Array, "batch ..."],
    *,
    parameterisation: str = "score",
    prior_log_prob: Callable[[Array], Array] | None = None,
    solver: dfx.AbstractSolver | None = None,
    rtol: ScalarLike = 1e-5,
    atol: ScalarLike = 1e-5,
    dt0: float | None = None,
    stepsize_controller: dfx.AbstractStepSizeController | None = None,
    max_steps: int = 4096,
    time_variable: str = "t",
    trace: str = "exact",
    num_probes: int = 1,
    probe: str = "rademacher",
    adjoint: dfx.AbstractAdjoint = dfx.RecursiveCheckpointAdjoint(),
    throw: bool = True,
    key: Key | None = None,
) -> LikelihoodResult:
    r"""Log-likelihood of a score model by its probability-flow ODE.

    Solves the probability-flow ODE $dx/dt = f(t)x - \tfrac12 g(t)^2 s_{\theta}(t, x)$
    (Song et al. 2021, arXiv:2011.13456, eq. 13; the vector field is
    `scoreflow.sde.probability_flow_term` read through `Prediction(...).score`) from
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
        model: network on one example `(t, x) -> array`, or an exact score such as
            `mixture.noised(sde).score`.
        x: `(batch, *event)` data.
        parameterisation: what `model` predicts (`"score"`, `"eps"`, `"x0"`, `"v"`).
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
        time_variable: what the solver integrates over. `"t"` (default): the SDE's
            time. `"log_snr"`: $\lambda_t = \log(\alpha_t/\sigma_t)$, from
            $\lambda_{t_{\min}}$ down to $\lambda_T$; the vector field and the trace
            are both multiplied by $dt/d\lambda$ (`sde.t_from_log_snr`), so the
            likelihood is the same up to solver error. In $\lambda$ the probability
            flow of a VP SDE is $dx/d\lambda = \sigma^2 (x + s_{\theta})$ (the variable of
            the exponential integrators, Lu et al. 2022, arXiv:2206.00927), bounded where
            the score of concentrated data varies on the scale of $\sigma$. Measured on
            the exact-score mixtures (`benchmarks/RESULTS.md`), it needs *more*
            evaluations than `"t"` for a given error unless the components are very
            narrow, which is why `"t"` stays the default.
        trace: `"exact"` (forward-mode Jacobian; cost grows with the dimension) or
            `"hutchinson"` (K vector–Jacobian products per evaluation).
        num_probes: K, the number of Hutchinson probes, drawn once and held fixed.
        probe: `"rademacher"` or `"gaussian"`.
        adjoint: diffrax adjoint for differentiating through the solve.
        throw: raise on a failed solve; with `False` check `result`.
        key: PRNG key of the probes (required for `"hutchinson"`).

    Returns:
        A `LikelihoodResult`.

    Raises:
        ValueError: on bad options, shapes, a missing `key`, or non-finite `x` (under
            `jit`, a non-finite `x` raises at run time through `equinox.error_if`).
    """
    _check_batch(x, "x")
    check_trace(trace, probe, num_probes)
    if time_variable not in TIME_VARIABLES:
        raise ValueError(f"`time_variable` must be one of {TIME_VARIABLES}, got {time_variable!r}.")
    if trace == "hutchinson" and key is None:
        raise ValueError("`key` is required for trace='hutchinson' (it draws the probes).")
    x = check_finite(x, "x")
    return _log_likelihood(
        sde,
        model,
        x,
        parameterisation=parameterisation,
        prior_log_prob=prior_log_prob,
        solver=solver,
        rtol=rtol,
        atol=atol,
        dt0=dt0,
        stepsize_controller=stepsize_controller,
        max_steps=max_steps,
        time_variable=time_variable,
        trace=trace,
        num_probes=num_probes,
        probe=probe,
        adjoint=adjoint,
        throw=throw,
        key=key,
    )


@eqx.filter_jit
def _log_likelihood(
    sde,
    model,
    x,
    *,
    parameterisation,
    prior_log_prob,
    solver,
    rtol,
    atol,
    dt0,
    stepsize_controller,
    max_steps,
    time_variable,
    trace,
    num_probes,
    probe,
    adjoint,
    throw,
    key,
):
    prediction = Prediction(sde, model, parameterisation)
    field = _ProbabilityFlowField(probability_flow_term(sde, prediction.score))
    t0 = jnp.asarray(sde.t_min, x.dtype)
    t1 = jnp.asarray(sde.T, x.dtype)
    if time_variable == "log_snr":
        field = _InLogSNR(field, sde)
        t0, t1 = sde.log_snr(t0), sde.log_snr(t1)
    sol = solve_augmented(
        field,
        x,
        t0,
        t1,
        trace=trace,
        num_probes=num_probes,
        probe=probe,
        solver=solver,
        rtol=rtol,
        atol=atol,
        dt0=dt0,
        stepsize_controller=stepsize_controller,
        max_steps=max_steps,
        adjoint=adjoint,
        throw=throw,
        key=key,
    )
    prior = sde.prior_log_prob if prior_log_prob is None else prior_log_prob
    prior_lp = jax.vmap(prior)(sol.z).astype(x.dtype)
    if prior_lp.shape != (x.shape[0],):
        raise ValueError(
            f"`prior_log_prob` must return a scalar per example, got shape {prior_lp.shape[1:]}."
        )
    return LikelihoodResult(
        log_prob=prior_lp + sol.log_det,
        std_error=sol.std_error,
        prior_log_prob=prior_lp,
        delta_log_prob=sol.log_det,
        z=sol.z,
        nfe=sol.nfe,
        num_steps=sol.num_steps,
        stats=sol.stats,
        result=sol.result,
    )
