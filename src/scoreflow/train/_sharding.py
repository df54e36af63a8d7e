"""Data parallelism over a `jax.sharding.Mesh`, and the multi-process set-up.

`fit(..., mesh=...)` keeps everything here: the checks of the mesh, putting the state
(replicated) and the data onto it, the sharding constraints inside the jitted chunk,
the host-side draw of out-of-memory batches (each process reads only the rows of its
own devices), and host copies of replicated values for checkpoints and logs.
"""

import os

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.sharding import Mesh

from .. import _checks
from .._mesh import auto as auto
from .._mesh import batch_sharding as batch_sharding
from .._mesh import check_mesh as check_mesh
from .._mesh import constrain_batch as constrain_batch
from .._mesh import constrain_replicated as constrain_replicated
from .._mesh import local as local
from .._mesh import replicate as replicate
from .._mesh import to_numpy as to_numpy


@eqx.filter_jit
def _chunk_indices(key_data, num_rows, batch_size, chunk):
    # Replays the carry key of `fit`'s step (`key, k_batch, k_loss = split(key, 3)`) and
    # its row draw, so a dataset read on the host gets the rows an in-memory array would
    # (`tests/test_sharding.py` checks that the two agree bit for bit).
    def body(key, _):
        key, k_batch, _ = jr.split(key, 3)
        return key, jr.randint(k_batch, (batch_size,), 0, num_rows)

    _, idx = jax.lax.scan(body, jr.wrap_key_data(key_data), None, length=chunk)
    return idx


def chunk_indices(key_data, num_rows: int, batch_size: int, chunk: int) -> np.ndarray:
    """`(chunk, batch_size)` row indices of the next chunk's batches, on the host."""
    key_data = jnp.asarray(to_numpy(key_data))
    return np.asarray(_chunk_indices(key_data, num_rows, batch_size, chunk))


def host_batches(dataset, idx: np.ndarray, mesh: Mesh | None):
    """The batches of rows `idx` (`(chunk, batch)`) of an on-disk dataset, as arrays.

    On a mesh each process reads only the rows of its own devices' shards
    (`jax.make_array_from_callback` asks for exactly those), so no process holds the
    global batch; without one the whole chunk is read.
    """
    chunk, batch = idx.shape
    if mesh is None:
        rows = dataset.rows(idx.reshape(-1))
        return jax.tree_util.tree_map(
            lambda leaf: jnp.asarray(leaf.reshape(chunk, batch, *leaf.shape[1:])), rows
        )
    sharding = batch_sharding(mesh, leading=1)
    cache: dict = {}

    def read(index):
        # One read per device shard, shared by every leaf of the pytree.
        k = tuple((s.start, s.stop) for s in index[:2])
        if k not in cache:
            sub = idx[index[0], index[1]]
            rows = dataset.rows(sub.reshape(-1))
            cache[k] = jax.tree_util.tree_map(
                lambda leaf: leaf.reshape(*sub.shape, *leaf.shape[1:]), rows
            )
        return cache[k]

    leaves, treedef = jax.tree_util.tree_flatten(dataset.example())
    out = []
    for i, leaf in enumerate(leaves):
        shape = (chunk, batch, *leaf.shape[1:])
        out.append(
            jax.make_array_from_callback(
                shape,
                sharding,
                lambda index, i=i: jax.tree_util.tree_leaves(read(index))[i],
            )
        )
    return jax.tree_util.tree_unflatten(treedef, out)


def barrier(name: str) -> None:
    """Wait for every process (a no-op in a single-process run).

    After process 0 writes a checkpoint, so that no other process reads it half-written.
    """
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def is_main_process() -> bool:
    """Whether this is process 0, the one that writes checkpoints, pictures and logs."""
    return jax.process_index() == 0


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_ids: list[int] | None = None,
    timeout: int = 120,
) -> dict:
    """Join a multi-process (multi-host) run: `jax.distributed.initialize`, with timeouts.

    Call it first, before any other JAX call, in every process; then build one mesh over
    `jax.devices()` (every process's devices) and call `fit(..., mesh=mesh)` with the
    same arguments in every process. Each process reads only its shard of each batch;
    only process 0 writes checkpoints, pictures and logs.

    The three arguments come from, in order: the call; the environment variables
    `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`; JAX's detection of
    the cluster (Slurm, Open MPI, Kubernetes, Cloud TPU), used when none is set.

    **No process hangs.** Joining waits at most `timeout` seconds for every process to
    connect; a process count that differs between processes, a wrong address or a
    process that never starts ends there: JAX terminates the waiting process
    (`DEADLINE_EXCEEDED`, exit status 134; the tests check it). A process whose peers
    stop answering for `timeout` seconds is stopped by JAX's heartbeat the same way.

    On CPU, the processes' collectives are JAX's gloo implementation (TCP); the devices
    of one CPU process are set with `jax.config.update("jax_num_cpu_devices", n)`
    before this call.

    Args:
        coordinator_address: `"host:port"` of process 0's coordinator service.
        num_processes: the number of processes (the same in every process).
        process_id: this process's index in `[0, num_processes)`.
        local_device_ids: this process's accelerators (default: all it sees).
        timeout: seconds to wait for the others at start-up, and the heartbeat timeout.

    Returns:
        `{"process_id", "num_processes", "local_devices", "devices"}` of the joined run.

    Raises:
        ValueError: a missing or malformed address, a process count below 1, a
            `process_id` outside `[0, num_processes)`, or a `timeout` below 1.
        RuntimeError: `initialize_distributed` was already called in this process.
    """
    _checks.positive_int(timeout, "timeout")
    env = os.environ
    if coordinator_address is None:
        coordinator_address = env.get("JAX_COORDINATOR_ADDRESS")
    if num_processes is None and env.get("JAX_NUM_PROCESSES"):
        num_processes = _env_int("JAX_NUM_PROCESSES", "num_processes")
    if process_id is None and env.get("JAX_PROCESS_ID"):
        process_id = _env_int("JAX_PROCESS_ID", "process_id")
    given = (coordinator_address, num_processes, process_id)
    if any(v is not None for v in given) and any(v is None for v in given):
        missing = [
            n
            for n, v in zip(("coordinator_address", "num_processes", "process_id"), given)
            if v is None
        ]
        raise ValueError(
            f"`{missing[0]}` is missing: a multi-process run needs `coordinator_address`, "
            "`num_processes` and `process_id` (or none of them, to detect the cluster)."
        )
    if coordinator_address is not None:
        host, sep, port = str(coordinator_address).rpartition(":")
        if not (sep and host and port.isdigit()):
            raise ValueError(
                f'`coordinator_address` must be "host:port", got {coordinator_address!r}.'
            )
        _checks.positive_int(num_processes, "num_processes")
        _checks.positive_int(process_id, "process_id", least=0)
        assert num_processes is not None and process_id is not None
        if process_id >= num_processes:
            raise ValueError(
                f"`process_id` must lie in [0, num_processes) = [0, {num_processes}), "
                f"got {process_id}."
            )
    jax.distributed.initialize(
        coordinator_address,
        num_processes,
        process_id,
        local_device_ids=local_device_ids,
        initialization_timeout=timeout,
        heartbeat_timeout_seconds=timeout,
        shutdown_timeout_seconds=timeout,
    )
    return {
        "process_id": jax.process_index(),
        "num_processes": jax.process_count(),
        "local_devices": jax.local_device_count(),
        "devices": jax.device_count(),
    }


def _env_int(var: str, name: str) -> int:
    value = os.environ[var]
    try:
        return int(value)
    except ValueError:
        raise ValueError(
            f"`{name}` from the environment variable {var} must be an int, got {value!r}."
        ) from None
