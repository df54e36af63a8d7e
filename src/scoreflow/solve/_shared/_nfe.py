"""Counting network evaluations: what each solver costs per step."""

from typing import TYPE_CHECKING

import diffrax as dfx
import jax.numpy as jnp
from jaxtyping import Array, Int

# pyright must see equinox's abstract class attributes as ClassVars, and only does when
# the alias is made in this module (equinox's documented work-around, pyright#4965).
if TYPE_CHECKING:
    from typing import ClassVar as AbstractClassVar
else:
    from equinox import AbstractClassVar


class AbstractCountedSolver(dfx.AbstractSolver):
    """A diffrax solver that states its network evaluations.

    `evals_per_step = (per step, once at the start)`: a class attribute, or a property
    when it depends on the instance (`None` where that depends on a solver of unknown
    cost). A subclass that does not set it cannot be instantiated, so a forgotten count
    fails at once instead of reporting `nfe = -1`.
    """

    evals_per_step: AbstractClassVar[tuple[int, int] | None]


def evals_per_step(solver: dfx.AbstractSolver) -> tuple[int, int] | None:
    """Network evaluations `(per step, once at the start)` of a diffrax solver.

    A scoreflow solver states its own cost (`AbstractCountedSolver.evals_per_step`). For
    diffrax's explicit Runge–Kutta methods it is read off the Butcher tableau (an FSAL
    method reuses its last stage); `None` when unknown.
    """
    if isinstance(solver, AbstractCountedSolver):
        return solver.evals_per_step
    if isinstance(solver, dfx.ReversibleHeun):
        return 1, 1
    if isinstance(solver, dfx.Euler):
        return 1, 0
    if isinstance(solver, dfx.AbstractERK):
        tableau = solver.tableau
        if isinstance(tableau, dfx.MultiButcherTableau):
            tableau = tableau.tableaus[0]
        if tableau.fsal:
            return tableau.num_stages - 1, 1
        return tableau.num_stages, 0
    return None


def count_nfe(solver: dfx.AbstractSolver, num_steps: Int[Array, ""], extra: int = 0) -> Array:
    """`num_steps * per_step + once + extra` evaluations, or -1 when the cost is unknown."""
    cost = evals_per_step(solver)
    if cost is None:
        return jnp.asarray(-1)
    return num_steps * cost[0] + cost[1] + extra
