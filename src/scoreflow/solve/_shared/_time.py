"""diffrax's reversed time, undone in one place."""

import diffrax as dfx
import jax.numpy as jnp

# diffrax has no public name for the wrapper it puts around every term of a solve
# whose time decreases; `tests/test_solvers.py` pins this import.
from diffrax._term import WrapTerm
from jaxtyping import Array

from ...sde import AbstractModelTerm


def real_time(term: dfx.AbstractTerm, t0, t1) -> tuple[dfx.AbstractTerm, Array, Array]:
    r"""The term inside diffrax's time-reversal wrapper, and the real times.

    diffrax integrates a decreasing time interval as increasing $-t$, wrapping every
    term in a `WrapTerm`; a solver that reads the SDE's schedule needs the real times.
    A term that is not wrapped is returned as it is.
    """
    if isinstance(term, WrapTerm):
        flip = term.direction != 1
        return term.term, jnp.where(flip, -t0, t0), jnp.where(flip, -t1, t1)
    return term, jnp.asarray(t0), jnp.asarray(t1)


def model_term(terms, t0, t1) -> tuple[AbstractModelTerm, Array, Array]:
    """The scoreflow drift term of `terms` (an ODE term, or the first of a `MultiTerm`).

    Returns the term and the real times.

    Raises:
        ValueError: if `terms` holds no `scoreflow.sde.AbstractModelTerm`.
    """
    first = terms.terms[0] if isinstance(terms, dfx.MultiTerm) else terms
    term, t0, t1 = real_time(first, t0, t1)
    if not isinstance(term, AbstractModelTerm):
        raise ValueError(
            "This solver reads the score from scoreflow's probability-flow or reverse-SDE "
            f"terms (`scoreflow.sde.AbstractModelTerm`), got {type(term).__name__}."
        )
    return term, t0, t1
