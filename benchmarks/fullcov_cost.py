"""The cost of the full-covariance exact mixture model, and issue 19's hang (float64).

`denoiser`: per-call time of the jitted `GaussianMixture(...).noised(EDMSDE(), "x0")` on
a batch of draws at one time (forward, and forward plus the reverse pass w.r.t. time and
state, which is what `calibrate_grid`'s Adam steps pay), on `full_cov` report seed 1000
or `--family` / `--seed`.
`calibrate`: one `calibrate_grid(sde, model, pilot, nfe - 1)` call per NFE (`--flop-budget`
passed on; `none` for the evaluation budget alone) on the same
mixture (or on `--family` / `--seed` of `mixture_families.py`: target 1's worst case is
`--family many_64 --seed 100 --nfes 100`), pilot as `calibrate_design.py` (8192 draws of
80 N(0, 1), seed 99).
`hang`: the call that hung (`full_cov` tune seed 100, 8192 pilot draws, `num_steps=19`,
`optimise_steps=1`), timed; run it under `timeout`. CPU seconds are
`time.process_time()` (both cores counted), wall seconds `time.perf_counter()`.

    PYTHONPATH=src:benchmarks python benchmarks/fullcov_cost.py denoiser
    PYTHONPATH=src:benchmarks python benchmarks/fullcov_cost.py calibrate --nfes 10 20
    PYTHONPATH=src:benchmarks python benchmarks/fullcov_cost.py calibrate --family many_64 \
        --seed 100 --nfes 100
    PYTHONPATH=src:benchmarks timeout 300 python benchmarks/fullcov_cost.py hang
"""

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import mixture_families  # noqa: E402
import numpy as np  # noqa: E402

import scoreflow as sf  # noqa: E402


def _model(seed, family="full_cov"):
    w, mu, cov = getattr(mixture_families, family)(seed)
    sde = sf.EDMSDE()
    mix = sf.GaussianMixture(jnp.asarray(w), jnp.asarray(mu), jnp.asarray(cov))
    return sde, mix.noised(sde, "x0"), mu.shape


def _timed(f, *args, repeats):
    jax.block_until_ready(f(*args))  # compile
    c, t = time.process_time(), time.perf_counter()
    for _ in range(repeats):
        out = f(*args)
    jax.block_until_ready(out)
    return (time.process_time() - c) / repeats, (time.perf_counter() - t) / repeats


def denoiser(args):
    sde, model, (k, d) = _model(args.seed, args.family)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((args.batch, d)) * 3.0)
    t = jnp.asarray(1.3)
    fwd = jax.jit(lambda t, x: model(t, x))
    rev = jax.jit(jax.grad(lambda t, x: jnp.sum(model(t, x) ** 2), (0, 1)))
    for name, f in (("forward", fwd), ("forward + reverse (d/dt, d/dx)", rev)):
        cpu, wall = _timed(f, t, x, repeats=args.repeats)
        print(
            f"{args.family} {args.seed} (K={k}, d={d}), batch {args.batch}, {name}: "
            f"{1e3 * cpu:.3f} CPU ms, {1e3 * wall:.3f} wall ms per call",
            flush=True,
        )


def calibrate(args):
    sde, model, (k, d) = _model(args.seed, args.family)
    name = f"{args.family} {args.seed} (K={k}, d={d})"
    pilot = jnp.asarray(80.0 * np.random.default_rng(99).standard_normal((args.pilot, d)))
    for nfe in args.nfes:
        c, t = time.process_time(), time.perf_counter()
        grid = sf.solve.calibrate_grid(sde, model, pilot, nfe - 1, flop_budget=args.flop_budget)
        jax.block_until_ready(grid.ts)
        cpu, wall = time.process_time() - c, time.perf_counter() - t
        print(
            f"{name} NFE {nfe}: {cpu:.1f} CPU s, {wall:.1f} wall s, "
            f"source {grid.source}, pilot {grid.pilot_size}, Adam steps {grid.adam_steps}, "
            f"held-out RMS {dict(grid.held_out_rms)}",
            flush=True,
        )


def hang(args):
    sde, model, (k, d) = _model(100)
    pilot = jnp.asarray(80.0 * np.random.default_rng(99).standard_normal((8192, d)))
    c, t = time.process_time(), time.perf_counter()
    grid = sf.solve.calibrate_grid(sde, model, pilot, 19, optimise_steps=1)
    jax.block_until_ready(grid.ts)
    cpu, wall = time.process_time() - c, time.perf_counter() - t
    print(
        f"hang call, full_cov 100 (K={k}, d={d}): finished, {cpu:.1f} CPU s, {wall:.1f} wall s, "
        f"source {grid.source}",
        flush=True,
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["denoiser", "calibrate", "hang"])
    ap.add_argument("--nfes", nargs="+", type=int, default=[10, 20])
    ap.add_argument("--pilot", type=int, default=8192)
    ap.add_argument("--family", default="full_cov")
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument(
        "--flop-budget",
        type=lambda v: None if v == "none" else float(v),
        default=2e11,
        help="calibrate_grid's flop_budget ('none': no cap but the evaluation budget)",
    )
    args = ap.parse_args()
    {"denoiser": denoiser, "calibrate": calibrate, "hang": hang}[args.what](args)


if __name__ == "__main__":
    main()
