import diffrax as dfx
import jax.numpy as jnp


def save_at(ts_save=None, *, solver_state: bool = False) -> dfx.SaveAt:
    """The end state, the times `ts_save` if given, and optionally the solver state."""
    if ts_save is None:
        return dfx.SaveAt(t1=True, solver_state=solver_state)
    return dfx.SaveAt(ts=jnp.asarray(ts_save), t1=True, solver_state=solver_state)
