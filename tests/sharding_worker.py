"""The multi-device side of `tests/test_sharding.py`, run in a fresh process.

JAX fixes its devices when it starts, so each run is a subprocess:

    python tests/sharding_worker.py single OUT          # 1 process x 4 CPU devices
    python tests/sharding_worker.py disk OUT            # data on disk, validation, a sampler
    python tests/sharding_worker.py solve OUT           # sharded sampling, likelihood
    python tests/sharding_worker.py multi OUT ID N PORT  # process ID of N, 2 devices each
    python tests/sharding_worker.py alone OUT ID N PORT  # process ID of N, whose peers never come

It trains one small score model by `scoreflow.train.fit` in float64 in every way the
tests compare and writes what it saw to `OUT/<mode><id>.json`.
"""

import json
import os
import pathlib
import shutil
import sys
from typing import Any

MODE, OUT = sys.argv[1], pathlib.Path(sys.argv[2])
MULTI = MODE in ("multi", "alone")
PROCESS, NUM_PROCESSES, PORT = (int(a) for a in sys.argv[3:6]) if MULTI else (0, 1, 0)

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_num_cpu_devices", 2 if MULTI else 4)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
import numpy as np  # noqa: E402

import scoreflow as sf  # noqa: E402
from scoreflow import train  # noqa: E402

if MODE == "alone":
    # Nobody else joins: the join must give up after its timeout, not hang.
    train.initialize_distributed(f"127.0.0.1:{PORT}", NUM_PROCESSES, PROCESS, timeout=5)
    sys.exit(0)
if MODE == "multi":
    info = train.initialize_distributed(f"127.0.0.1:{PORT}", NUM_PROCESSES, PROCESS, timeout=60)
    assert info["devices"] == 4, info

STEPS, CHUNK, BATCH = 20, 10, 16


class Denoiser(eqx.Module):
    """A small model that compiles in a fraction of a second: an affine denoiser.

    Its loss draws noise from the step's key and averages over the batch, the two
    things data parallelism must get right; `fit` treats it as any model.
    """

    w: jax.Array
    b: jax.Array

    def loss(self, x, *, key):
        noisy = x + 0.5 * jr.normal(key, x.shape, x.dtype)
        return jnp.mean(jnp.sum((jnp.tanh(noisy @ self.w.T + self.b) - x) ** 2, -1))


def model():
    k1, k2 = jr.split(jr.key(0))
    return Denoiser(jr.normal(k1, (2, 2)) * 0.5, jr.normal(k2, (2,)) * 0.1)


def dataset():
    # NumPy's generator: nothing to compile before the runs being compared.
    rng = np.random.default_rng(3)
    centres = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    return centres[rng.integers(0, 3, 256)] + 0.2 * rng.normal(size=(256, 2))


def fit(num_steps, data, mesh, **kw):
    return train.fit(
        model(),
        data,
        num_steps=num_steps,
        batch_size=BATCH,
        steps_per_chunk=CHUNK,
        progress=False,
        mesh=mesh,
        key=jr.key(1),
        **kw,
    )


def params(res):
    leaves = jax.tree_util.tree_leaves(eqx_filter(res.state))
    return [np.asarray(leaf).ravel().tolist() for leaf in leaves]


def eqx_filter(state):
    return eqx.filter((state.model, state.ema), eqx.is_inexact_array)


def sampler(n, *, key):
    return 0.5 * jr.normal(key, (n, 2), jnp.float64)


class Counting:
    """A row-wise transform that counts the rows this process read."""

    def __init__(self):
        self.rows = 0

    def __call__(self, x):
        self.rows += x.shape[0]
        return x


def solves(mesh):
    import diffrax as dfx

    from scoreflow import solve

    sde = sf.VPSDE()
    exact = sf.data.ring_mixture().noised(sde)
    key, shape = jr.key(4), (8, 2)
    fixed: dict[str, Any] = dict(solver=dfx.Euler(), grid=solve.UniformGrid(4))
    pid: dict[str, Any] = dict(
        solver=dfx.Tsit5(), stepsize_controller=dfx.PIDController(rtol=1e-4, atol=1e-4)
    )
    one = solve.sample(sde, exact, shape, key=key, **fixed).samples
    auto = solve.sharded_sample(sde, exact, shape, mesh=mesh, key=key, **fixed)
    ref = solve.sample(sde, exact, shape, key=key, **pid)
    manual = solve.sharded_sample(sde, exact, shape, mesh=mesh, key=key, **pid)
    x = sf.data.ring_mixture().sample(8, key=jr.key(5))
    lp = solve.log_likelihood(sde, exact, x, rtol=1e-4, atol=1e-4)
    lp_manual = solve.sharded_log_likelihood(sde, exact, x, mesh=mesh, rtol=1e-4, atol=1e-4)
    return {
        "fixed_one": np.asarray(one).tolist(),
        "fixed_auto": np.asarray(auto.samples).tolist(),
        "fixed_auto_sharding": str(getattr(auto.samples.sharding, "spec", None)),
        "pid_one": np.asarray(ref.samples).tolist(),
        "pid_manual": np.asarray(manual.samples).tolist(),
        "pid_manual_steps": np.asarray(manual.stats["num_steps"]).tolist(),
        "pid_manual_num_steps": int(manual.num_steps),
        "lp_one": np.asarray(lp.log_prob).tolist(),
        "lp_manual": np.asarray(lp_manual.log_prob).tolist(),
        "lp_manual_steps": np.asarray(lp_manual.stats["num_steps"]).tolist(),
    }


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    x = dataset()
    mesh = jax.make_mesh((4,), ("data",))
    report = {}
    if MODE == "single":
        one = fit(STEPS, x, None)
        four = fit(STEPS, x, mesh)
        report["one"], report["four"] = one.losses.tolist(), four.losses.tolist()
        report["one_params"], report["four_params"] = params(one), params(four)
        # Resume on the same mesh, and across meshes (4 -> 1, 1 -> 4).
        ckpt = {name: OUT / f"{name}.eqx" for name in ("same", "to_one", "to_four")}
        fit(CHUNK, x, mesh, checkpoint=ckpt["same"])
        shutil.copy(ckpt["same"], ckpt["to_one"])
        report["same"] = fit(STEPS, x, mesh, checkpoint=ckpt["same"]).losses.tolist()
        report["to_one"] = fit(STEPS, x, None, checkpoint=ckpt["to_one"]).losses.tolist()
        fit(CHUNK, x, None, checkpoint=ckpt["to_four"])
        report["to_four"] = fit(STEPS, x, mesh, checkpoint=ckpt["to_four"]).losses.tolist()
        report["devices"] = jax.device_count()
    elif MODE == "disk":
        # The same rows on disk: identical draws to the in-memory array.
        np.save(OUT / "data.npy", x)
        disk = sf.data.open_npy(OUT / "data.npy")
        report["disk_one"] = fit(STEPS, disk, None).losses.tolist()
        report["disk_four"] = fit(STEPS, disk, mesh).losses.tolist()
        fit(CHUNK, disk, mesh, checkpoint=OUT / "disk.eqx")
        report["disk_resumed"] = fit(STEPS, disk, mesh, checkpoint=OUT / "disk.eqx").losses.tolist()
        report["four"] = fit(STEPS, x, mesh).losses.tolist()
        report["one"] = fit(STEPS, x, None).losses.tolist()
        # A second mesh axis: the batch split along `data` only, replicated along it.
        grid = jax.make_mesh((2, 2), ("data", "model"))
        report["two_by_two"] = fit(STEPS, x, grid).losses.tolist()
        # Held-out rows and a sampler as data, on the mesh and off it.
        for name, msh in (("one", None), ("four", mesh)):
            val = fit(STEPS, x, msh, validation=0.25)
            report[f"val_{name}"] = val.history["validation_loss"].tolist()
            report[f"fn_{name}"] = fit(STEPS, sampler, msh).losses.tolist()
    elif MODE == "solve":
        report.update(solves(mesh))
    else:
        res = fit(STEPS, x, mesh, checkpoint=OUT / "multi.eqx")
        report["multi"] = res.losses.tolist()
        report["multi_params"] = params(res)
        np.save(OUT / f"data{PROCESS}.npy", x)
        counting = Counting()
        disk = sf.data.open_npy(OUT / f"data{PROCESS}.npy", transform=counting)
        report["disk_multi"] = fit(STEPS, disk, mesh).losses.tolist()
        report["rows_read"] = counting.rows
        report["checkpoint_writer"] = train.is_main_process()
    (OUT / f"{MODE}{PROCESS}.json").write_text(json.dumps(report))
    if MODE == "multi":
        jax.distributed.shutdown()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
