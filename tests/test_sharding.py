"""Data-parallel `fit` over a mesh, multi-process runs and on-disk datasets.

The multi-device runs happen in subprocesses (`tests/sharding_worker.py`): JAX fixes its
devices at start-up, and this suite's process has one. The default worker run (about
8 s) trains the same float64 score model on 1 device and on a 4-device mesh and resumes
checkpoints on the same mesh and across meshes; the slow tests read the data from disk
on the mesh and run 2 processes x 2 devices (`.ci/run` runs them).

Equality, stated: on a mesh the batch mean (and the gradient's sum over the batch) is
summed in four partial sums and then across devices, so the losses equal the
single-device ones up to that order only: `allclose` with `rtol=1e-12` in float64 (the
measured difference is a few ulps, ~2e-16 relative, after 20 steps). Anything whose
reduction order is the same is compared exactly: a resume on the same mesh, and a
`DiskDataset` against the same rows in memory on the same mesh."""

import json
import os
import pathlib
import socket
import subprocess
import sys
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import scoreflow as sf

WORKER = pathlib.Path(__file__).parent / "sharding_worker.py"
CHUNK, STEPS, BATCH = 10, 20, 16
RTOL = 1e-12


def _env():
    env = dict(os.environ)
    src = str(pathlib.Path(sf.__file__).parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    env.pop("XLA_FLAGS", None)
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _run(args, timeout):
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ), timeout


def _wait(proc, timeout):
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"sharding worker timed out after {timeout} s:\n{out[-3000:]}")
    assert proc.returncode == 0, f"sharding worker failed:\n{out[-3000:]}"


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharding")
    _wait(*_run(["single", str(out)], timeout=300))
    return json.loads((out / "single0.json").read_text())


def test_the_worker_saw_four_devices(single):
    assert single["devices"] == 4


def test_four_devices_match_one(single):
    one, four = np.asarray(single["one"]), np.asarray(single["four"])
    assert one.shape == four.shape == (STEPS,)
    np.testing.assert_allclose(four, one, rtol=RTOL, atol=0)
    for a, b in zip(single["four_params"], single["one_params"]):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-12)


def test_resume_on_the_same_mesh_is_bit_exact(single):
    assert single["same"] == single["four"][CHUNK:]


def test_checkpoints_move_between_meshes(single):
    # 4 devices -> 1 continues the 4-device run, 1 -> 4 the 1-device run.
    np.testing.assert_allclose(single["to_one"], single["four"][CHUNK:], rtol=RTOL, atol=0)
    np.testing.assert_allclose(single["to_four"], single["one"][CHUNK:], rtol=RTOL, atol=0)


@pytest.mark.slow
def test_disk_dataset_draws_the_in_memory_rows(tmp_path):
    # Same rows, same key stream: bit-identical on one device and on the mesh.
    _wait(*_run(["disk", str(tmp_path)], timeout=300))
    disk = json.loads((tmp_path / "disk0.json").read_text())
    assert disk["disk_one"] == disk["one"]
    assert disk["disk_four"] == disk["four"]
    assert disk["disk_resumed"] == disk["four"][CHUNK:]
    np.testing.assert_allclose(disk["two_by_two"], disk["one"], rtol=RTOL, atol=0)
    # Held-out rows and a sampler as data, on the mesh and off it.
    np.testing.assert_allclose(disk["val_four"], disk["val_one"], rtol=RTOL, atol=0)
    assert len(disk["val_one"]) == STEPS // CHUNK
    np.testing.assert_allclose(disk["fn_four"], disk["fn_one"], rtol=RTOL, atol=0)


@pytest.mark.slow
def test_sharded_solves(tmp_path):
    _wait(*_run(["solve", str(tmp_path)], timeout=300))
    r = json.loads((tmp_path / "solve0.json").read_text())
    # A fixed grid under automatic sharding: the single-device samples, batch on `data`.
    np.testing.assert_allclose(r["fixed_auto"], r["fixed_one"], rtol=1e-12, atol=1e-12)
    assert r["fixed_auto_sharding"] == "P('data',)"
    # Adaptive, shard_map: each device its own steps, the result within the tolerance.
    assert len(r["pid_manual_steps"]) == 4
    assert r["pid_manual_num_steps"] == max(r["pid_manual_steps"])
    np.testing.assert_allclose(r["pid_manual"], r["pid_one"], rtol=0, atol=1e-2)
    assert len(r["lp_manual_steps"]) == 4
    np.testing.assert_allclose(r["lp_manual"], r["lp_one"], rtol=0, atol=1e-2)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one_process_and_one_device(single, tmp_path):
    port = str(_free_port())
    procs = [_run(["multi", str(tmp_path), str(i), "2", port], timeout=300) for i in range(2)]
    for proc, timeout in procs:
        _wait(proc, timeout)
    reports = [json.loads((tmp_path / f"multi{i}.json").read_text()) for i in range(2)]
    # Every process sees the same losses, and they are the 1 x 4 run's and the 1 x 1's.
    assert reports[0]["multi"] == reports[1]["multi"]
    np.testing.assert_allclose(reports[0]["multi"], single["four"], rtol=RTOL, atol=0)
    np.testing.assert_allclose(reports[0]["multi"], single["one"], rtol=RTOL, atol=0)
    for a, b in zip(reports[0]["multi_params"], single["one_params"]):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(reports[0]["disk_multi"], single["four"], rtol=RTOL, atol=0)
    # Each process read only its half of every batch (and row 0 once, for the layout).
    for r in reports:
        assert r["rows_read"] == 1 + STEPS * BATCH // 2
    assert [r["checkpoint_writer"] for r in reports] == [True, False]
    assert (tmp_path / "multi.eqx").is_file()


@pytest.mark.slow
def test_a_process_whose_peers_never_join_gives_up(tmp_path):
    # A run of 2 processes where only one starts (or the counts disagree): the join
    # times out (5 s here) with an error instead of waiting forever.
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), "alone", str(tmp_path), "0", "2", str(_free_port())],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("a process left alone hung past its join timeout")
    assert proc.returncode != 0, out[-2000:]


# ---- in this process: the on-disk formats, and the refusals ----


class _Denoiser(eqx.Module):
    # Noise from the step's key, a mean over the batch: what the data draw must match.
    w: jax.Array

    def loss(self, x, *, key):
        noisy = x + 0.5 * jr.normal(key, x.shape, x.dtype)
        return jnp.mean((noisy @ self.w - x) ** 2)


def _write_idx(path, arr, code):
    arr = np.asarray(arr)
    with open(path, "wb") as f:
        f.write(bytes([0, 0, code, arr.ndim]))
        f.write(np.asarray(arr.shape, ">u4").tobytes())
        f.write(arr.astype(arr.dtype.newbyteorder(">")).tobytes())


def test_idx_files_read_as_mnist_does(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 3, 4), dtype=np.uint8)
    labels = rng.integers(0, 10, (7,), dtype=np.uint8)
    _write_idx(tmp_path / "x-idx3-ubyte", images, 0x08)
    _write_idx(tmp_path / "y-idx1-ubyte", labels, 0x08)
    ds = sf.data.open_idx(tmp_path / "x-idx3-ubyte", tmp_path / "y-idx1-ubyte")
    assert len(ds) == 7
    x, y = ds.rows(np.array([5, 0, 5]))
    np.testing.assert_array_equal(x, images[[5, 0, 5]])
    np.testing.assert_array_equal(y, labels[[5, 0, 5]])
    # Big-endian floats come back in native order, equal in value.
    values = rng.normal(size=(5, 2)).astype(np.float32)
    _write_idx(tmp_path / "f-idx2", values, 0x0D)
    got = sf.data.open_idx(tmp_path / "f-idx2").rows(np.arange(5))
    assert got.dtype.isnative
    np.testing.assert_array_equal(got, values)


def test_npz_members_are_memory_mapped(tmp_path):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(9, 2)), rng.integers(0, 3, (9,))
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = sf.data.open_npz(tmp_path / "d.npz", ("x", "y"))
    assert isinstance(ds.arrays[0], np.memmap)
    got_x, got_y = ds.rows(np.array([8, 1]))
    np.testing.assert_array_equal(got_x, x[[8, 1]])
    np.testing.assert_array_equal(got_y, y[[8, 1]])
    np.testing.assert_array_equal(sf.data.open_npz(tmp_path / "d.npz").load(), x)


def test_fit_trains_from_disk_exactly_as_from_memory(tmp_path):
    x = np.random.default_rng(2).normal(size=(64, 2))
    np.save(tmp_path / "x.npy", x)
    kw: dict[str, Any] = dict(
        num_steps=4, batch_size=8, steps_per_chunk=2, progress=False, key=jr.key(1)
    )
    model = _Denoiser(jnp.eye(2) * 0.5)
    mem = sf.train.fit(model, jnp.asarray(x), **kw)
    disk = sf.train.fit(model, sf.data.open_npy(tmp_path / "x.npy"), **kw)
    np.testing.assert_array_equal(disk.losses, mem.losses)
    assert not np.array_equal(disk.losses[:2], disk.losses[2:])  # it did train


def test_cli_trains_data_parallel_and_refuses_a_bad_address(tmp_path, capsys):
    from scoreflow.cli import main

    cfg = {
        "num_train": 64, "steps": 2, "batch_size": 8, "steps_per_chunk": 2,
        "network": {"width": 8, "depth": 1}, "checkpoint": str(tmp_path / "m.eqx"),
    }  # fmt: skip
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    # One device here: a mesh of one, the config unchanged.
    assert main(["train", "--config", str(path), "--quiet", "--data-parallel"]) == 0
    assert (tmp_path / "m.eqx").is_file()
    bad = ["train", "--config", str(path), "--coordinator-address", "nohost"]
    assert main([*bad, "--num-processes", "2", "--process-id", "0"]) == 2
    assert "`coordinator_address` must be" in capsys.readouterr().err
