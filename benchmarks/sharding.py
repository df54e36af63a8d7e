"""Sharded sampling and likelihood on 4 simulated CPU devices: automatic vs shard_map.

Problem: the 8-component 2-d ring mixture with its exact score (`noised(sde)`), VP SDE,
float32 (`--x64`: float64), a batch of `--batch` (default 4096). Each row is one call, timed for
compilation and for execution (median of `--repeats`) in this process:

- fixed-grid ODE sampling (Heun, 32 uniform steps);
- adaptive ODE sampling (Tsit5, PID rtol = atol = 1e-5);
- `log_likelihood` (Tsit5, PID 1e-5, exact trace);

each on 1 device (no mesh), with automatic sharding over the 4-device mesh
(`manual=False`) and with `jax.shard_map` (`manual=True`), with the steps each took
(per device for shard_map) and the largest difference from the 1-device result.

The 4 "devices" are threads of one CPU process (`--xla_force_host_platform_device_count`)
on however many cores the machine has, so wall times measure the program's structure
(steps, per-step reductions), not four accelerators.

Run: `python benchmarks/sharding.py` (add `--repeats N`, `--batch N`, `--json PATH`).
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import diffrax as dfx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
import numpy as np  # noqa: E402

import scoreflow as sf  # noqa: E402
from scoreflow import solve  # noqa: E402


def ring(dtype):
    ang = 2 * np.pi * np.arange(8) / 8
    means = 4 * np.stack([np.cos(ang), np.sin(ang)], 1)
    return sf.GaussianMixture(
        jnp.full(8, 1 / 8, dtype), jnp.asarray(means, dtype), jnp.full((8, 2), 0.25, dtype)
    )


def timed(call, repeats):
    t0 = time.perf_counter()
    out = jax.block_until_ready(call())
    first = time.perf_counter() - t0
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(call())
        runs.append(time.perf_counter() - t0)
    run = float(np.median(runs))
    return out, max(first - run, 0.0), run


def steps_of(res):
    per = res.stats["num_steps"]
    return np.asarray(per).reshape(-1).tolist()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--json", default=None)
    parser.add_argument("--x64", action="store_true", help="float64 instead of float32")
    args = parser.parse_args()
    if args.x64:
        jax.config.update("jax_enable_x64", True)
    dtype = jnp.float64 if args.x64 else jnp.float32
    assert jax.device_count() == 4, jax.devices()
    sde = sf.VPSDE()
    model = ring(dtype).noised(sde)
    mesh = jax.make_mesh((4,), ("data",))
    key = jr.key(0)
    shape = (args.batch, 2)
    pid = dfx.PIDController(rtol=1e-5, atol=1e-5)
    problems = {
        "fixed-grid ODE (Heun, 32 steps)": dict(
            kind="sample", options=dict(solver=dfx.Heun(), grid=solve.UniformGrid(32))
        ),
        "adaptive ODE (Tsit5, PID 1e-5)": dict(
            kind="sample", options=dict(solver=dfx.Tsit5(), stepsize_controller=pid)
        ),
        "log_likelihood (Tsit5, PID 1e-5, exact trace)": dict(
            kind="likelihood", options=dict(rtol=1e-5, atol=1e-5)
        ),
    }
    x = sf.data.ring_mixture().sample(args.batch, key=jr.key(1)).astype(dtype)
    rows = []
    for name, p in problems.items():
        opts = p["options"]
        if p["kind"] == "sample":
            calls = {
                "1 device": lambda: solve.sample(sde, model, shape, dtype=dtype, key=key, **opts),
                "automatic, 4": lambda: solve.sharded_sample(
                    sde, model, shape, mesh=mesh, manual=False, dtype=dtype, key=key, **opts
                ),
                "shard_map, 4": lambda: solve.sharded_sample(
                    sde, model, shape, mesh=mesh, manual=True, dtype=dtype, key=key, **opts
                ),
            }
            value = lambda r: r.samples
        else:
            calls = {
                "1 device": lambda: solve.log_likelihood(sde, model, x, **opts),
                "automatic, 4": lambda: solve.sharded_log_likelihood(
                    sde, model, x, mesh=mesh, manual=False, **opts
                ),
                "shard_map, 4": lambda: solve.sharded_log_likelihood(
                    sde, model, x, mesh=mesh, manual=True, **opts
                ),
            }
            value = lambda r: r.log_prob
        ref = None
        for how, call in calls.items():
            res, compile_s, run_s = timed(call, args.repeats)
            v = np.asarray(value(res))
            ref = v if ref is None else ref
            row = dict(
                problem=name,
                how=how,
                compile_s=round(compile_s, 3),
                run_s=round(run_s, 4),
                steps=steps_of(res),
                max_abs_diff=float(np.max(np.abs(v - ref))),
                out_spec=str(getattr(value(res).sharding, "spec", "one device")),
            )
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    print("| problem | how | compile (s) | run (s) | steps | max abs diff vs 1 device | output |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        steps = "/".join(str(s) for s in r["steps"])
        print(
            f"| {r['problem']} | {r['how']} | {r['compile_s']:.2f} | {r['run_s']:.3f} | "
            f"{steps} | {r['max_abs_diff']:.1e} | `{r['out_spec']}` |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                dict(batch=args.batch, repeats=args.repeats, x64=args.x64, rows=rows), f, indent=1
            )


if __name__ == "__main__":
    main()
