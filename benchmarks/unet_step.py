"""The digits U-Net's training step: compile vs run time, FLOPs, and a matmul peak.

A reduced version of issue 17's throughput study (no per-op XLA profile, no PyTorch
peer, no fix): the digits score model of `train_quality.py` (`UNet` base 16, channel
multipliers (1, 2), 8×8, VP SDE, eps, AdamW) trained by `scoreflow.train.fit` at batch
64 in float32. Measured in one process:

- compile time of one training chunk (`--chunk` steps) and its steady run time per step;
- FLOPs of one step (loss + gradient; XLA's `cost_analysis`), hence achieved GFLOP/s;
- a float32 matmul peak (`--matmul` square, jitted) in the same run, for the ratio;
- compile and run time of one `sample` call (probability-flow ODE, Heun, 32 steps, 64
  samples).

Run: `python benchmarks/unet_step.py [--chunk 20] [--steps 100] [--json PATH]`.
"""

import argparse
import json
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr

import scoreflow as sf
from scoreflow import nn, solve


def matmul_gflops(n, repeats=5):
    a = jr.normal(jr.key(0), (n, n), jnp.float32)
    b = jr.normal(jr.key(1), (n, n), jnp.float32)
    f = jax.jit(lambda a, b: a @ b)
    jax.block_until_ready(f(a, b))
    t0 = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(f(a, b))
    return 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e9


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunk", type=int, default=20)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--matmul", type=int, default=1024)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    x = sf.data.digits("train", dtype=jnp.float32)
    net = nn.UNet((1, 8, 8), base_channels=16, channel_mults=(1, 2), key=jr.key(6))
    model = sf.ScoreSDE(sf.VPSDE(), net, parameterisation="eps", event_shape=(1, 8, 8))
    model = jax.tree_util.tree_map(
        lambda a: a.astype(jnp.float32) if eqx.is_inexact_array(a) else a, model
    )
    opt = sf.train.default_optimizer(2e-3)
    kw = dict(batch_size=args.batch, optimizer=opt, steps_per_chunk=args.chunk, progress=False)

    t0 = time.perf_counter()
    warm = sf.train.fit(model, x, num_steps=args.chunk, key=jr.key(7), **kw)
    jax.block_until_ready(warm.state)
    first_chunk = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = sf.train.fit(
        model, x, num_steps=args.chunk + args.steps, state=warm.state, key=jr.key(7), **kw
    )
    jax.block_until_ready(res.state)
    per_step = (time.perf_counter() - t0) / args.steps
    compile_chunk = max(first_chunk - args.chunk * per_step, 0.0)

    def step_loss(m, xb, key):
        return m.loss(xb, key=key)

    grad = eqx.filter_jit(eqx.filter_value_and_grad(step_loss))
    compiled = grad.lower(model, x[: args.batch], jr.key(0)).compile()
    cost = compiled.compiled.cost_analysis() if hasattr(compiled, "compiled") else None
    if isinstance(cost, list):
        cost = cost[0]
    flops = float(cost.get("flops", float("nan"))) if cost else float("nan")

    peak = matmul_gflops(args.matmul)
    t0 = time.perf_counter()
    s = solve.sample(
        model.sde,
        res.ema_model,
        (64, 1, 8, 8),
        solver=None,
        grid=solve.UniformGrid(32),
        key=jr.key(9),
    )
    jax.block_until_ready(s.samples)
    first_sample = time.perf_counter() - t0
    t0 = time.perf_counter()
    s = solve.sample(
        model.sde,
        res.ema_model,
        (64, 1, 8, 8),
        solver=None,
        grid=solve.UniformGrid(32),
        key=jr.key(10),
    )
    jax.block_until_ready(s.samples)
    sample_run = time.perf_counter() - t0
    out = {
        "batch": args.batch,
        "chunk": args.chunk,
        "compile_chunk_s": round(compile_chunk, 2),
        "step_ms": round(1e3 * per_step, 2),
        "steps_per_s": round(1 / per_step, 1),
        "flops_per_step_loss_grad": flops,
        "achieved_gflops": round(flops / per_step / 1e9, 2),
        "matmul_peak_gflops": round(peak, 1),
        "fraction_of_peak": round(flops / per_step / 1e9 / peak, 4),
        "sample_compile_s": round(max(first_sample - sample_run, 0.0), 2),
        "sample_run_s": round(sample_run, 3),
        "final_loss": float(res.losses[-20:].mean()),
    }
    print(json.dumps(out, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
