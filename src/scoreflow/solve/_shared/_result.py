import diffrax as dfx
import jax
import jax.numpy as jnp


def finite_result(result: dfx.RESULTS, y, throw: bool):
    """Diffrax's result code, or `RESULTS.nonfinite` where the output holds NaN or inf.

    diffrax flags non-finite values only through an adaptive controller's rejections; a
    fixed-grid solve would otherwise report a NaN state as a success. With `throw`, a
    failure raises (at run time, also under `jit`). Returns `(result, y)`.
    """
    leaves = jax.tree_util.tree_leaves(y)
    bad = jnp.any(jnp.stack([~jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))
    # `nonfinite` is inherited from optimistix's RESULTS, as pyright types it.
    result = dfx.RESULTS.where(bad, dfx.RESULTS.nonfinite, result)  # pyright: ignore[reportArgumentType]
    if throw:
        y = result.error_if(y, result != dfx.RESULTS.successful)
    return result, y
