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
from jaxtyping import Array, Float, Int

from ... import _checks
from ..._custom_types import Key, RealScalarLike
from .._shared._nfe import count_nfe
from .._shared._progress import progress_meter
from .._shared._result import finite_result
from ._trace import AbstractTrace, Exact, Hutchinson, check_trace


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
        probe_vjp: `(batch, K, *event)` $\int \varepsilon_k^\top \partial f/\partial z
            \,dt$ for a probed trace (what its standard error is computed from, see
            `Hutchinson`), `None` for the exact trace.
    """

    z: Array
    log_det: Array
    kinetic: Array
    frobenius: Array
    probe_vjp: Array | None = None


class AugmentedDynamics(eqx.Module):
    r"""$(z, \ell, E_K, E_J)$ dynamics of any vector field, as a diffrax vector field.

    `vector_field(t, z, args)` acts on one example (diffrax order); the dynamics vmap it
    over the batch axis. The trace of its Jacobian comes from `trace` (`Exact()`: the
    forward-mode Jacobian; `Hutchinson(K)`: one vector–Jacobian product per probe, the
    K probes passed as diffrax `args` and held fixed for the whole solve, so the
    estimate is of the integral, not a sum of independent noises; Grathwohl et al.
    2019, eq. 7).

    Args:
        vector_field: per-example `(t, z, args) -> dz/dt`.
        trace: a trace estimator (`scoreflow.solve.Exact()` or `Hutchinson(...)`).
    """

    vector_field: Callable
    trace: AbstractTrace = Exact()

    def __check_init__(self):
        check_trace(self.trace)

    def _one(self, t, z, probes):
        f = lambda y: self.vector_field(t, y, None)
        dz, tr, frob, vjps = self.trace.estimate_with_vjps(f, z, probes)
        return dz, tr, jnp.sum(dz**2), frob, vjps

    def __call__(self, t, state: AugmentedState, args) -> AugmentedState:
        probes = args
        axis = None if probes is None else 0
        out = jax.vmap(self._one, in_axes=(None, 0, axis))(t, state.z, probes)
        dz, tr, ke, frob, vjps = out
        dtype = state.z.dtype
        if state.probe_vjp is None:
            vjps = None  # a caller's state without the integral: do not start one
        elif vjps is not None:
            vjps = vjps.astype(dtype)
        return AugmentedState(dz, tr.astype(dtype), ke.astype(dtype), frob.astype(dtype), vjps)


class FlowSolution(eqx.Module):
    r"""The end of an augmented solve from `t0` to `t1`.

    Attributes:
        z: `(batch, *event)` the state at `t1`.
        log_det: `(batch,)` estimate of $\log|\det \partial z_{t_1}/\partial z_{t_0}|$.
        std_error: `(batch,)` standard error of `log_det` (zero for the exact trace; for
            `Hutchinson` the plug-in $\sqrt{2\,\overline{\lVert u\rVert^2}/K}$ of its
            docstring, finite and positive for every K, one probe included).
        kinetic: `(batch,)` $\int_{t_0}^{t_1}\|f\|^2 dt$.
        frobenius: `(batch,)` $\int_{t_0}^{t_1}\|\partial f/\partial z\|_F^2 dt$.
        num_steps: solver steps attempted.
        nfe: evaluations of the augmented vector field (each is one network forward
            pass plus its derivatives); -1 when the solver's cost is unknown.
        stats: diffrax's statistics dictionary.
        result: diffrax's result code; `diffrax.RESULTS.nonfinite` where `z` or the
            log-det is NaN or infinite (which a fixed-step solve would not flag).
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


def hutchinson_std_error(probe_vjp: Array, probes: Array, probe: str) -> Array:
    r"""Plug-in standard error of a K-probe Hutchinson log-det (see `Hutchinson`).

    `probe_vjp` is `(batch, K, *event)`, $u_k = \varepsilon_k^\top M$ with
    $M = \int \partial f/\partial z\,dt$; `probes` the matching $\varepsilon_k$.
    Returns `(batch,)` $\sqrt{\hat v / K}$ with $\hat v$ an estimate of one probe's
    variance: $2\,\overline{\lVert u_k\rVert^2}$ for Gaussian probes (unbiased for a
    symmetric $M$, an upper bound otherwise), and for Rademacher probes, whose variance
    leaves out the diagonal, $2\tfrac{K-1}{K}\overline{\lVert r_k\rVert^2}$ with
    $r_k = u_k - \varepsilon_k \odot \hat d_{-k}$ and $\hat d_{-k}$ the mean of
    $\varepsilon_j \odot u_j$ over the other probes (an unbiased estimate of
    $\operatorname{diag} M$), averaged with weights $(K-1)/K$ and $1/K$ with the bound
    $2\,\overline{\lVert u_k\rVert^2}$ (so it is never 0 unless $M^\top$ kills every
    probe; probes equal up to sign, frequent in few dimensions, say nothing about the
    off-diagonal part). With one Rademacher probe the bound alone is used.
    """
    batch, k = probe_vjp.shape[:2]
    u = probe_vjp.reshape(batch, k, -1)
    bound = 2 * jnp.mean(jnp.sum(u**2, axis=-1), axis=1)
    if probe == "rademacher" and k > 1:
        eps = probes.reshape(batch, k, -1)
        d = eps * u  # each row an unbiased estimate of diag(M)
        d_others = (jnp.sum(d, axis=1, keepdims=True) - d) / (k - 1)
        r = u - eps * d_others
        refined = 2 * (k - 1) / k * jnp.mean(jnp.sum(r**2, axis=-1), axis=1)
        # Probes equal up to sign (likely in few dimensions) carry no information about
        # the off-diagonal part and give refined = 0: one pseudo-observation of the
        # bound keeps the estimate positive and conservative, and fades as 1/K.
        var = ((k - 1) * refined + bound) / k
    else:
        var = bound
    var = var / k
    positive = var > 0  # sqrt with a zero (not NaN) gradient at zero
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, var, 1)), 0)


def solve_augmented(
    vector_field: Callable,
    y0: Float[Array, "batch ..."],
    t0,
    t1,
    *,
    trace: AbstractTrace = Exact(),
    solver: dfx.AbstractSolver | None = None,
    rtol: RealScalarLike = 1e-5,
    atol: RealScalarLike = 1e-5,
    dt0=None,
    stepsize_controller: dfx.AbstractStepSizeController | None = None,
    max_steps: int | None = 4096,
    adjoint: dfx.AbstractAdjoint = dfx.RecursiveCheckpointAdjoint(),
    throw: bool = True,
    progress: bool = False,
    key: Key | None = None,
) -> FlowSolution:
    r"""Solve the augmented dynamics of `vector_field` from `t0` to `t1`.

    Args:
        vector_field: per-example `(t, z, args) -> dz/dt`.
        y0: `(batch, *event)` state at `t0`.
        t0: start time.
        t1: end time (may be smaller than `t0`; the log-det then changes sign).
        trace: `Exact()` (forward-mode Jacobian) or `Hutchinson(num_probes, probe)`,
            whose probes are drawn once from `key`.
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
        progress: show diffrax's progress meter of the solve (off by default).
        key: PRNG key of the probes (needed for `Hutchinson`).

    Returns:
        A `FlowSolution`.

    Raises:
        ValueError: on bad options (negative `rtol` / `atol`, `max_steps < 1`, a `dt0`
            of the wrong sign), a half-precision `y0`, or a `Hutchinson` trace without a
            `key`.
    """
    check_trace(trace)
    _checks.batch_array(y0, "y0")
    _checks.float_dtype(y0.dtype, "y0")
    _checks.tolerances(rtol, atol)
    _checks.max_steps(max_steps)
    if dt0 is not None:
        _checks.scalar(dt0, "dt0")
        _checks.sign(dt0, jnp.asarray(t1) - jnp.asarray(t0), "dt0", "the solve runs from t0 to t1")
    if key is not None:
        _checks.key(key)
    y0 = _checks.finite(y0, "y0")
    dtype = y0.dtype
    batch = y0.shape[0]
    probes = trace.probes(y0.shape, key=key, dtype=dtype)
    k = trace.num_probes
    solver = dfx.Tsit5() if solver is None else solver
    t0 = jnp.asarray(t0, dtype)
    t1 = jnp.asarray(t1, dtype)
    if stepsize_controller is None:
        stepsize_controller = dfx.PIDController(rtol=rtol, atol=atol, norm=augmented_error_norm)
    if dt0 is None and not isinstance(stepsize_controller, (dfx.ConstantStepSize, dfx.StepTo)):
        dt0 = (t1 - t0) / 64
    elif dt0 is not None:
        dt0 = jnp.asarray(dt0, dtype)
    zeros = jnp.zeros((batch,), dtype)
    # The probes' integrated vector-Jacobian products, for the standard error: K more
    # copies of the state, outside the error norm (they ride on the same steps).
    # (Only for `Hutchinson`: another probed estimator need not return its products.)
    vjp0 = None
    if isinstance(trace, Hutchinson) and trace.std_error and probes is not None:
        vjp0 = jnp.zeros(probes.shape, dtype)
    state0 = AugmentedState(y0, jnp.zeros((batch, k), dtype), zeros, zeros, vjp0)
    sol = dfx.diffeqsolve(
        dfx.ODETerm(AugmentedDynamics(vector_field, trace)),
        solver,
        t0,
        t1,
        dt0,
        state0,
        args=probes,
        stepsize_controller=stepsize_controller,
        max_steps=max_steps,
        adjoint=adjoint,
        throw=throw,
        progress_meter=progress_meter(progress),
    )
    end = jax.tree.map(lambda leaf: leaf[-1], sol.ys)
    # A fixed-step solve does not see NaN; the encoding and the log-det must be finite.
    result, (z, log_det_probes) = finite_result(sol.result, (end.z, end.log_det), throw)
    log_det = jnp.mean(log_det_probes, axis=1)
    if end.probe_vjp is not None:
        assert isinstance(trace, Hutchinson) and probes is not None
        std_error = hutchinson_std_error(end.probe_vjp, probes, trace.probe)
    elif probes is None:
        std_error = jnp.zeros_like(log_det)
    elif k > 1:  # another probed estimator: the spread of its K estimates
        std_error = jnp.std(log_det_probes, axis=1, ddof=1) / jnp.sqrt(jnp.asarray(k, dtype))
    else:
        std_error = jnp.full_like(log_det, jnp.nan)
    num_steps = sol.stats["num_steps"]
    return FlowSolution(
        z=z,
        log_det=log_det,
        std_error=std_error,
        kinetic=end.kinetic,
        frobenius=end.frobenius,
        num_steps=num_steps,
        nfe=count_nfe(solver, num_steps),
        stats=sol.stats,
        result=result,
    )
