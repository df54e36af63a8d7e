from collections.abc import Callable

import diffrax as dfx
import equinox as eqx
import numpy as np
from jaxtyping import Array, Float

from .. import _checks
from .._custom_types import Key
from ..solve import AbstractTrace, Exact, FlowSolution, solve_augmented
from ..solve._likelihood._trace import check_trace
from ._batch import AbstractBatchBijection


class _Field(eqx.Module):
    # Adapts a network `(t, z) -> dz` to diffrax's `(t, z, args)`.
    net: Callable

    def __call__(self, t, z, args):
        return self.net(t, z)


class CNF(AbstractBatchBijection):
    r"""Continuous normalizing flow: the time-`t1` flow map of $dz/dt = f_{\theta}(t, z)$.

    $T(z) = z(t_1)$ with $z(t_0) = z$, and
    $\log|\det \partial T/\partial z| = \int_{t_0}^{t_1} \operatorname{tr}\,
    \partial f_{\theta}/\partial z\,dt$ (instantaneous change of variables, Chen et al.
    2018, arXiv:1806.07366, eq. 4), computed by one diffrax solve of
    `scoreflow.solve.AugmentedDynamics` (FFJORD, Grathwohl et al. 2019,
    arXiv:1810.01367, eq. 4 and the Hutchinson estimator of eq. 7). The inverse solves
    from `t1` back to `t0`. `transform` maps base samples to data. On a batch (`solve`,
    the `*_batch` methods that `Flow` uses) one adaptive solve serves the whole batch.

    With `trace=Hutchinson(...)` the log-det is an unbiased estimate and a `key` must be
    passed; `solve` also returns its standard error over the probes and the
    kinetic-energy and Jacobian-Frobenius integrals that Finlay et al. 2020
    ("How to train your neural ODE", arXiv:2002.02798, eqs. 5-6) add to the loss.

    Args:
        vector_field: per-event network `(t, z) -> dz/dt`, e.g.
            `scoreflow.nn.ConcatSquashMLP`.
        shape: the event shape.
        t0: start time.
        t1: end time (`t1 != t0`).
        trace: `scoreflow.solve.Exact()` (default) or `Hutchinson(num_probes, probe)`.
        solver: diffrax ODE solver (default `diffrax.Tsit5()`).
        rtol: relative tolerance.
        atol: absolute tolerance.
        max_steps: step budget.
        adjoint: diffrax adjoint (default `RecursiveCheckpointAdjoint()`; pass
            `diffrax.BacksolveAdjoint()` for the O(1)-memory continuous adjoint of Chen
            et al. 2018).

    Raises:
        ValueError: on bad trace options, `t1 == t0`, negative `rtol` / `atol` or
            `max_steps < 1`.
    """

    vector_field: Callable
    shape: tuple[int, ...] = eqx.field(static=True)
    t0: float = eqx.field(static=True)
    t1: float = eqx.field(static=True)
    trace: AbstractTrace
    solver: dfx.AbstractSolver
    rtol: float = eqx.field(static=True)
    atol: float = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)
    adjoint: dfx.AbstractAdjoint

    # Written out so that type checkers read `CNF(net, shape, ...)` in this order, not
    # with `shape` (abstract in `AbstractBijection`) first.
    def __init__(
        self,
        vector_field: Callable,
        shape: tuple[int, ...],
        *,
        t0: float = 0.0,
        t1: float = 1.0,
        trace: AbstractTrace = Exact(),
        solver: dfx.AbstractSolver = dfx.Tsit5(),
        rtol: float = 1e-5,
        atol: float = 1e-5,
        max_steps: int = 4096,
        adjoint: dfx.AbstractAdjoint = dfx.RecursiveCheckpointAdjoint(),
    ):
        self.vector_field = vector_field
        self.shape = tuple(shape)
        _checks.scalar(t0, "t0")
        _checks.scalar(t1, "t1")
        self.t0 = float(t0)
        self.t1 = float(t1)
        self.trace = trace
        self.solver = solver
        self.rtol = rtol
        self.atol = atol
        self.max_steps = max_steps
        self.adjoint = adjoint

    def __check_init__(self):
        check_trace(self.trace)
        _checks.tolerances(self.rtol, self.atol)
        _checks.max_steps(self.max_steps)
        if not np.isfinite(self.t1 - self.t0) or self.t1 == self.t0:
            raise ValueError(f"`t1` must differ from `t0`, got t0={self.t0}, t1={self.t1}.")

    def solve(
        self,
        z: Float[Array, "batch ..."],
        *,
        inverse: bool = False,
        throw: bool = True,
        key: Key | None = None,
    ) -> FlowSolution:
        """Solve a batch forward (`t0 -> t1`) or, with `inverse`, backward.

        The batch shares one adaptive step sequence (the error norm is over the whole
        batch), as in FFJORD's reference implementation.

        Returns:
            A `scoreflow.solve.FlowSolution` (`log_det` is the log-det of the map
            solved, so negated for `inverse`).
        """
        if z.ndim != len(self.shape) + 1 or z.shape[1:] != self.shape:
            raise ValueError(f"`z` must have shape (batch, *{self.shape}), got {z.shape}.")
        t0, t1 = (self.t1, self.t0) if inverse else (self.t0, self.t1)
        return solve_augmented(
            _Field(self.vector_field),
            z,
            t0,
            t1,
            trace=self.trace,
            solver=self.solver,
            rtol=self.rtol,
            atol=self.atol,
            max_steps=self.max_steps,
            adjoint=self.adjoint,
            throw=throw,
            key=key,
        )

    def _transform_and_log_det(self, x, key):
        sol = self.solve(x[None], key=key)
        return sol.z[0], sol.log_det[0]

    def _inverse_and_log_det(self, y, key):
        sol = self.solve(y[None], inverse=True, key=key)
        return sol.z[0], sol.log_det[0]

    def transform_and_log_det_batch(self, x, *, key=None):
        sol = self.solve(x, key=key)
        return sol.z, sol.log_det

    def inverse_and_log_det_batch(self, y, *, key=None):
        sol = self.solve(y, inverse=True, key=key)
        return sol.z, sol.log_det
