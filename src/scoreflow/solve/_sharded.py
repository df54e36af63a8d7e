"""Sampling and likelihood with the batch sharded over a mesh's `data` axis.

Two ways to run one solve of a sharded batch:

- **automatic** (`manual=False`): the batch is put on the mesh and the ordinary jitted
  solve runs; XLA partitions it. The whole batch stays one diffrax solve, so it is the
  single-device result (up to the order of the error norm's sum). An adaptive solve
  then takes one step size for all devices, whose error norm is all-reduced at every
  step: the devices run in lockstep for as many steps as the hardest example needs
  (diffrax issues #407, #718).
- **manual** (`manual=True`, `jax.shard_map`): every device solves its own shard as its
  own diffrax solve, with its own `while_loop`, step sizes and number of steps, and no
  communication until the end. Per-device step counts come back in `stats`.

Both run the solve with `throw=False` and check its result code afterwards: diffrax's
error check inside a solve is a host callback pinned to device 0, and under automatic
sharding XLA then gathers the whole batch onto that device.

The default is automatic for fixed grids (no per-step reduction to save, and the
samples equal the single-device ones) and manual for adaptive solves (no per-step
all-reduce, and no device waits for another's steps); `benchmarks/sharding.py` measures
both (`benchmarks/RESULTS.md`).
"""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jax.sharding import Mesh, PartitionSpec

from .. import _checks, _mesh
from .._custom_types import Key
from ..sde import AbstractPrediction, AbstractSDE
from ._likelihood._log_likelihood import LikelihoodResult, log_likelihood
from ._sample import SampleResult, solve_probability_flow, solve_reverse_sde

_SPEC = PartitionSpec(_mesh.DATA_AXIS)


def _per_device(tree):
    # A per-device scalar as a length-1 axis, concatenated over the mesh by shard_map.
    return jax.tree_util.tree_map(lambda a: jnp.reshape(a, (1,)), tree)


def _combine(num_steps, nfe, result):
    # The mesh's cost is that of its slowest device; any failed device fails the solve.
    worst = jax.tree_util.tree_map(jnp.max, result)
    return jnp.max(num_steps), jnp.max(nfe), worst


def _raise_if_failed(result, throw: bool):
    # After the solve, outside it: an error callback inside a sharded solve is pinned to
    # device 0, and XLA then gathers the whole batch onto it (measured: the samples
    # came back replicated, "involuntary full rematerialization").
    if throw:
        code = int(_mesh.to_numpy(result._value))
        if code != 0:
            raise RuntimeError(
                f"A sharded solve failed on at least one device: {dfx.RESULTS[result]} "
                "(pass throw=False to get the result code instead)."
            )


@eqx.filter_jit
def _shard_over_batch(body, mesh, dynamic, batch, key):
    # `body(dynamic, shard, key) -> (per-example outputs, per-device solve records)` on
    # each device's rows; the records come back combined over the mesh.
    shard = jax.shard_map(
        body,
        mesh=mesh,
        in_specs=(PartitionSpec(), _SPEC, PartitionSpec()),
        out_specs=(_SPEC, _SPEC),
        check_vma=False,
    )
    batched, (num_steps, nfe, stats, result) = shard(dynamic, batch, key)
    num_steps, nfe, result = _combine(num_steps, nfe, result)
    return batched, (num_steps, nfe, stats, result)


def _manual_sample(dynamic, static, y0, key, mesh, method, options):
    def body(dynamic, y, key):
        sde, model = eqx.combine(dynamic, static)
        if method == "ode":
            res = solve_probability_flow(sde, model, y, **options)
        else:
            # Each shard's own Brownian path: the key folded with the shard's index.
            key = jr.fold_in(key, jax.lax.axis_index(_mesh.DATA_AXIS))
            res = solve_reverse_sde(sde, model, y, key=key, **options)
        return res.samples, _per_device((res.num_steps, res.nfe, res.stats, res.result))

    samples, (num_steps, nfe, stats, result) = _shard_over_batch(body, mesh, dynamic, y0, key)
    return SampleResult(samples=samples, num_steps=num_steps, nfe=nfe, stats=stats, result=result)


def _adaptive(options) -> bool:
    return options.get("stepsize_controller") is not None


def sharded_sample(
    sde: AbstractSDE,
    model: AbstractPrediction,
    shape: tuple[int, ...],
    *,
    mesh: Mesh,
    manual: bool | None = None,
    method: str = "ode",
    dtype=None,
    key: Key,
    **kwargs,
) -> SampleResult:
    """`sample` with the batch sharded along the `data` axis of `mesh`.

    The prior noise is the one `sample` draws with the same key. With `manual=False`
    (automatic sharding) the samples are `sample`'s; with `manual=True` each device
    solves its shard alone (`jax.shard_map`): an adaptive solve then controls each
    shard's error separately (different steps, samples equal within the tolerance),
    and a reverse SDE draws each shard's Brownian path from the key folded with the
    shard's index. See the module notes for what each costs.

    Args:
        sde: the SDE.
        model: what predicts the noisy data.
        shape: `(batch, *event_shape)`; `batch` divisible by the `data` axis's size.
        mesh: a `jax.sharding.Mesh` with a `data` axis.
        manual: `True`: `jax.shard_map`; `False`: automatic sharding; `None`
            (default): manual for an adaptive solve (a `stepsize_controller`),
            automatic for a fixed grid.
        method: `"ode"` or `"sde"`, as `sample`.
        dtype: floating dtype of the noise.
        key: PRNG key.
        **kwargs: passed to the solve, as `sample`.

    Returns:
        A `SampleResult` whose `samples` are sharded over the mesh. Manual: `num_steps`
        and `nfe` are the slowest device's, `stats` holds one entry per device, and
        `result` is non-successful if any device failed.

    Raises:
        ValueError: a `mesh` that is not a mesh or has no `data` axis, a batch not
            divisible by its size, and as `sample`.
        RuntimeError: `throw=True` (default) and the solve failed (on any device).
    """
    if method not in ("ode", "sde"):
        raise ValueError(f"`method` must be 'ode' or 'sde', got {method!r}.")
    shape = _checks.shape(shape, "shape")
    if len(shape) < 2:
        raise ValueError(f"`shape` must be (batch, *event_shape), got {shape}.")
    _mesh.check_mesh(mesh, shape[0], "shape[0]")
    mesh = _mesh.auto(mesh)
    dtype = _checks.float_dtype(dtype)
    _checks.key(key)
    if manual is None:
        manual = _adaptive(kwargs)
    k_prior, k_path = jr.split(key)
    y0 = _mesh.shard_batch(sde.prior_sample(shape, key=k_prior, dtype=dtype), mesh)
    sde, model = _mesh.replicate((sde, model), mesh)
    throw = kwargs.pop("throw", True)
    if not manual:
        # The failure check runs after the solve: inside it, diffrax's error callback
        # is pinned to device 0 and XLA then gathers the whole batch there.
        if method == "ode":
            res = solve_probability_flow(sde, model, y0, throw=False, **kwargs)
        else:
            res = solve_reverse_sde(sde, model, y0, key=k_path, throw=False, **kwargs)
        _raise_if_failed(res.result, throw)
        return res
    dynamic, static = eqx.partition((sde, model), eqx.is_array)
    res = _manual_sample(dynamic, static, y0, k_path, mesh, method, {**kwargs, "throw": False})
    _raise_if_failed(res.result, throw)
    return res


@eqx.filter_jit
def _manual_log_likelihood(dynamic, static, x, key, mesh, options):
    def body(dynamic, x, key):
        sde, model = eqx.combine(dynamic, static)
        if key is not None:
            # Each shard's own Hutchinson probes.
            key = jr.fold_in(key, jax.lax.axis_index(_mesh.DATA_AXIS))
        res = log_likelihood(sde, model, x, key=key, **options)
        batched = (res.log_prob, res.std_error, res.prior_log_prob, res.delta_log_prob, res.z)
        return batched, _per_device((res.num_steps, res.nfe, res.stats, res.result))

    batched, (num_steps, nfe, stats, result) = _shard_over_batch(body, mesh, dynamic, x, key)
    log_prob, std_error, prior_lp, delta, z = batched
    return LikelihoodResult(
        log_prob=log_prob,
        std_error=std_error,
        prior_log_prob=prior_lp,
        delta_log_prob=delta,
        z=z,
        num_steps=num_steps,
        nfe=nfe,
        stats=stats,
        result=result,
    )


def sharded_log_likelihood(
    sde: AbstractSDE,
    model: AbstractPrediction,
    x,
    *,
    mesh: Mesh,
    manual: bool = True,
    key: Key | None = None,
    **kwargs,
) -> LikelihoodResult:
    """`log_likelihood` with the batch `x` sharded along the `data` axis of `mesh`.

    Manual (default, `jax.shard_map`): each device integrates its shard's augmented
    ODE with its own adaptive steps; a Hutchinson trace draws each shard's probes from
    `key` folded with the shard's index. Automatic (`manual=False`): the ordinary solve
    of the whole batch, partitioned by XLA, in lockstep.

    Args:
        sde: the SDE.
        model: what predicts the noisy data.
        x: `(batch, *event)` data; `batch` divisible by the `data` axis's size.
        mesh: a `jax.sharding.Mesh` with a `data` axis.
        manual: `jax.shard_map` (default) or automatic sharding.
        key: PRNG key of the probes (required for `Hutchinson`).
        **kwargs: passed to `log_likelihood` (`rtol`, `atol`, `trace`, `solver`, ...).

    Returns:
        A `LikelihoodResult` sharded over the mesh; manual: `num_steps` and `nfe` of
        the slowest device, `stats` one entry per device.

    Raises:
        ValueError: a bad `mesh` or batch size, and as `log_likelihood`.
        RuntimeError: `throw=True` (default) and the solve failed (on any device).
    """
    _checks.batch_array(x, "x")
    _mesh.check_mesh(mesh, x.shape[0], "x.shape[0]")
    mesh = _mesh.auto(mesh)
    x = _mesh.shard_batch(x, mesh)
    sde, model = _mesh.replicate((sde, model), mesh)
    throw = kwargs.pop("throw", True)
    if not manual:
        res = log_likelihood(sde, model, x, key=key, throw=False, **kwargs)
        _raise_if_failed(res.result, throw)
        return res
    dynamic, static = eqx.partition((sde, model), eqx.is_array)
    res = _manual_log_likelihood(dynamic, static, x, key, mesh, {**kwargs, "throw": False})
    _raise_if_failed(res.result, throw)
    return res
