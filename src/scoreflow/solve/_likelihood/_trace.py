r"""Trace estimators of a Jacobian, shared by likelihoods, CNFs and score matching.

`log_likelihood` and `scoreflow.bijections.CNF` integrate $\operatorname{tr}\,\partial f/
\partial z$ along an ODE (the instantaneous change of variables); implicit and sliced
score matching need $\operatorname{tr}\,\nabla_x s_\theta$. Both use one of these.
"""

import abc
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float

from ... import _checks
from ..._custom_types import Key

# pyright must see equinox's abstract class attributes as ClassVars, and only does when
# the alias is made in this module (equinox's documented work-around, pyright#4965).
if TYPE_CHECKING:
    from typing import ClassVar as AbstractClassVar
else:
    from equinox import AbstractClassVar

PROBES: tuple[str, ...] = ("rademacher", "gaussian")


class AbstractTrace(eqx.Module):
    r"""How $\operatorname{tr}\,\partial f/\partial x$ is computed at one example.

    `probes(shape, dtype=..., key=...)` draws what the estimator needs for a batch of
    shape `(batch, *event)` (or returns `None`); `estimate(f, x, probes)` returns
    `(f(x), traces, frobenius)` for one example: `traces` holds one estimate per probe
    (`(num_probes,)`) and `frobenius` the matching estimate of
    $\lVert\partial f/\partial x\rVert_F^2$.
    """

    num_probes: eqx.AbstractVar[int]
    needs_key: AbstractClassVar[bool]

    @abc.abstractmethod
    def probes(self, shape: tuple[int, ...], *, dtype, key: Key | None) -> Array | None:
        """Probes for a batch of `shape = (batch, *event)`, or `None`."""

    @abc.abstractmethod
    def estimate(
        self, f: Callable[[Array], Array], x: Array, probes: Array | None
    ) -> tuple[Array, Float[Array, " K"], Float[Array, ""]]:
        """`(f(x), per-probe traces, Frobenius norm squared)` at one example `x`."""

    def estimate_with_vjps(
        self, f: Callable[[Array], Array], x: Array, probes: Array | None
    ) -> tuple[Array, Float[Array, " K"], Float[Array, ""], Array | None]:
        r"""`estimate` and the probes' vector–Jacobian products.

        Returns `(f(x), traces, frobenius, vjps)`, where `vjps` is `(K, *event)`, the
        products $\varepsilon_k^\top \partial f/\partial x$ of a probed estimator (what
        `solve_augmented` integrates for the standard error of the log-det), or `None`
        for one without probes. The default calls `estimate` and returns `None`.
        """
        fx, traces, frobenius = self.estimate(f, x, probes)
        return fx, traces, frobenius, None


class Exact(AbstractTrace):
    """The exact trace from the full Jacobian (`jax.jacfwd`: one JVP per dimension).

    Right for small dimension; its cost grows linearly with the event size.
    """

    num_probes: int = eqx.field(static=True, default=1, init=False)
    needs_key: ClassVar[bool] = False

    def probes(self, shape, *, dtype=None, key=None):
        return None

    def estimate(self, f, x, probes):
        flat = lambda y: f(y.reshape(x.shape)).reshape(-1)
        fx = f(x)
        jac = jax.jacfwd(flat)(x.reshape(-1))
        return fx, jnp.trace(jac)[None], jnp.sum(jac**2)


class Hutchinson(AbstractTrace):
    r"""Hutchinson's estimator $\varepsilon^\top (\partial f/\partial x)\,\varepsilon$.

    Hutchinson 1989, with $E[\varepsilon\varepsilon^\top] = I$; one vector–Jacobian
    product per probe on one linearisation of $f$. Rademacher probes have the smallest
    variance (Grathwohl et al. 2019, arXiv:1810.01367, sec. 3.1). In a solve the probes
    are drawn once and held fixed (Grathwohl et al., eq. 7), so the result is an
    unbiased estimate of the integral, $\varepsilon^\top M \varepsilon$ with
    $M = \int \partial f/\partial z\,dt$ along the path.

    **Standard error, for every K.** A single probe's estimate has variance
    $\lVert M\rVert_F^2 + \operatorname{tr}(M^2) \le 2\lVert M\rVert_F^2$ for Gaussian
    probes and that minus $2\sum_i M_{ii}^2$ for Rademacher ones (Avron & Toledo 2011,
    "Randomized algorithms for estimating the trace of an implicit symmetric positive
    semi-definite matrix", J. ACM 58(2), sec. 2; Hutchinson 1989). The solve integrates
    the probes' vector–Jacobian products $u_k = \varepsilon_k^\top M$ alongside the
    log-det, and $\lVert u_k\rVert^2$ is an unbiased estimate of $\lVert M\rVert_F^2$
    (Finlay et al. 2020, arXiv:2002.02798, eq. 6, on the integrated Jacobian), so the
    reported standard error is the plug-in $\sqrt{2\,\overline{\lVert u\rVert^2} / K}$.
    It is finite for $K = 1$, zero only when $M = 0$, exact in expectation for
    Gaussian probes and a symmetric Jacobian (a probability flow of a score), and an
    upper bound otherwise (for Rademacher probes by the diagonal term). It is not the
    spread of the K estimates, which with few probes is itself noise (with K = 4
    Rademacher probes in 2-d the K estimates are often all equal).

    Args:
        num_probes: $K \ge 1$ probes per example.
        probe: `"rademacher"` or `"gaussian"`.
        std_error: integrate the products for the standard error (default). `False`
            saves the K extra state copies, which cost the solver's arithmetic (+50–80 %
            run time at K = 16 with a cheap mixture score, less with a network), for a
            solve that needs no error bar (training a CNF); the standard error is then
            the spread of the K estimates, NaN for K = 1.
    """

    num_probes: int = eqx.field(static=True, default=1)
    probe: str = eqx.field(static=True, default="rademacher")
    std_error: bool = eqx.field(static=True, default=True)
    needs_key: ClassVar[bool] = True

    def __check_init__(self):
        _checks.positive_int(self.num_probes, "num_probes")
        if self.probe not in PROBES:
            raise ValueError(f"`probe` must be one of {PROBES}, got {self.probe!r}.")
        if not isinstance(self.std_error, bool):
            raise ValueError(f"`std_error` must be True or False, got {self.std_error!r}.")

    def probes(self, shape, *, dtype, key):
        if key is None:
            raise ValueError("`key` is required for a Hutchinson trace (it draws the probes).")
        full = (shape[0], self.num_probes, *shape[1:])
        if self.probe == "rademacher":
            return jr.rademacher(key, full, dtype=dtype)
        return jr.normal(key, full, dtype)

    def estimate(self, f, x, probes):
        return self.estimate_with_vjps(f, x, probes)[:3]

    def estimate_with_vjps(self, f, x, probes):
        assert probes is not None  # drawn by `probes`, never None here
        fx, vjp = jax.vjp(f, x)
        (eps_jac,) = jax.vmap(vjp)(probes)
        axes = tuple(range(1, probes.ndim))
        traces = jnp.sum(eps_jac * probes, axis=axes)
        return fx, traces, jnp.mean(jnp.sum(eps_jac**2, axis=axes)), eps_jac


def check_trace(trace, name: str = "trace") -> AbstractTrace:
    """Raise `ValueError` naming `name` unless `trace` is a trace estimator."""
    if not isinstance(trace, AbstractTrace):
        raise ValueError(
            f"`{name}` must be `scoreflow.solve.Exact()` or `Hutchinson(num_probes, probe)`, "
            f"got {trace!r}."
        )
    return trace
