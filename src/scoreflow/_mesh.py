"""Meshes shared by every layer: the `data` axis, its checks and the sharding helpers.

`scoreflow.train.fit(..., mesh=...)` and the sharded solves of `scoreflow.solve` use
these (layer 0, like `_checks`).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def check_mesh(mesh, batch_size: int, name: str = "batch_size") -> None:
    """Refuse a mesh without a `data` axis, or a batch (`name`) that does not split over it."""
    if not isinstance(mesh, Mesh):
        raise ValueError(
            "`mesh` must be a `jax.sharding.Mesh` with a 'data' axis (e.g. "
            f"`jax.make_mesh((jax.device_count(),), ('data',))`), got {type(mesh).__name__}."
        )
    if DATA_AXIS not in mesh.axis_names:
        raise ValueError(
            f"`mesh` has axes {tuple(mesh.axis_names)}, but the batch is sharded along an "
            f"axis named {DATA_AXIS!r}; name one of its axes 'data'."
        )
    n = mesh.shape[DATA_AXIS]
    if batch_size % n:
        raise ValueError(
            f"`{name}` {batch_size} is not divisible by the size {n} of the mesh's "
            f"'data' axis; use a multiple of {n} (e.g. {n * max(1, round(batch_size / n))})."
        )


def auto(mesh: Mesh) -> Mesh:
    """`mesh` with every axis of type `Auto`: XLA propagates the shardings.

    `jax.make_mesh` makes `Explicit` axes, under which every operation of a model would
    have to be written sharding-aware; scoreflow constrains the batch and the state at
    the step's boundaries and lets XLA place the rest.
    """
    auto_types = (jax.sharding.AxisType.Auto,) * len(mesh.axis_names)
    if tuple(mesh.axis_types) == auto_types:
        return mesh
    return Mesh(mesh.devices, mesh.axis_names, axis_types=auto_types)


def batch_sharding(mesh: Mesh, leading: int = 0) -> NamedSharding:
    """The batch axis (after `leading` unsharded axes) split along `data`."""
    return NamedSharding(mesh, PartitionSpec(*([None] * leading), DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def local(tree):
    """Host-local copies of replicated arrays (those that span other processes' devices).

    A replicated array of a multi-process run cannot be read with `np.asarray`; its
    first local shard is the whole value. Arrays of one process pass through unchanged.
    """

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return x.addressable_data(0)
        return x

    return jax.tree_util.tree_map(one, tree)


def to_numpy(x) -> np.ndarray:
    return np.asarray(local(x))


def replicate(tree, mesh: Mesh):
    """Every array of `tree` replicated on every device of `mesh` (all processes')."""
    sharding = replicated(mesh)

    def put(x):
        if not eqx.is_array(x):
            return x
        if isinstance(x, jax.Array) and x.sharding == sharding:
            return x
        if _is_key(x):
            return jr.wrap_key_data(put(jr.key_data(x)), impl=jr.key_impl(x))
        host = np.asarray(local(x))
        # From host memory on every process: works whether or not the mesh spans
        # devices of other processes (a `device_put` from one device does not).
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree_util.tree_map(put, tree)


def constrain_batch(x, mesh: Mesh | None):
    """Inside the jitted step: the batch's leading axis split along `data`."""
    if mesh is None:
        return x
    return eqx.filter_shard(x, batch_sharding(mesh))


def constrain_replicated(tree, mesh: Mesh | None):
    if mesh is None:
        return tree
    return eqx.filter_shard(tree, replicated(mesh))


def shard_batch(tree, mesh: Mesh, leading: int = 0):
    """Arrays of `tree` put on `mesh` with their batch axis split along `data`.

    From host memory on every process (each process gives the same values and keeps
    only its devices' rows), so it works on a mesh of several processes too.
    """
    sharding = batch_sharding(mesh, leading)

    def put(x):
        host = np.asarray(local(x))
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree_util.tree_map(put, tree)
