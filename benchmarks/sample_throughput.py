"""Compile and run time of one `scoreflow.sample` call, against peers in the same run.

Problem: case A of `SOLVER_ACCURACY.md` (8-component 2-d mixture, exact score), VP SDE,
4096 samples, 20 steps, float32. Peers, timed in this process on the same problem:

- ``bare``: the same number of score evaluations chained in one jitted ``fori_loop``
  (the floor any sampler must pay);
- ``scan``: a hand-written ``lax.scan`` of the same solver on the same grid;
- for the reverse SDE, diffrax's ``VirtualBrownianTree`` and ``UnsafeBrownianPath`` in place
  of scoreflow's ``GridBrownianPath``.

Run: ``python benchmarks/sample_throughput.py`` (add ``--repeats N``).
"""

import argparse
import time

import diffrax as dfx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import scoreflow as sf

N, D, STEPS = 4096, 2, 20


def ring(dtype=jnp.float32):
    ang = 2 * np.pi * np.arange(8) / 8
    means = 4 * np.stack([np.cos(ang), np.sin(ang)], 1)
    return sf.GaussianMixture(
        jnp.full(8, 1 / 8, dtype), jnp.asarray(means, dtype), jnp.full((8, 2), 0.25, dtype)
    )


def timed(fn, *args, repeats):
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(*args))
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        runs.append(time.perf_counter() - t0)
    return compile_s, float(np.median(runs))


def main(repeats):
    sde = sf.VPSDE()
    model = ring().noised(sde)  # the exact score, a prediction of the noisy data

    def batched(t, x):
        # The exact score of a batch, read as the samplers read it (vmapped per example).
        return jax.vmap(model.score, in_axes=(None, 0))(t, x)

    grid = sf.solve.KarrasGrid(STEPS)
    ts = grid.times(sde).astype(jnp.float32)
    key = jr.key(0)
    rows = []

    def bare(nfe):
        def f(key):
            x = sde.prior_sample((N, D), key=key, dtype=jnp.float32)
            return jax.lax.fori_loop(
                0, nfe, lambda i, x: x + 1e-6 * batched(jnp.float32(0.5), x), x
            )

        return f

    def pf(solver):
        def f(key):
            return sf.sample(
                sde,
                model,
                (N, D),
                solver=solver,
                grid=grid,
                key=key,
                dtype=jnp.float32,
                denoise=False,
            ).samples

        return f

    def scan_heun(key):
        x = sde.prior_sample((N, D), key=key, dtype=jnp.float32)

        def vf(t, x):
            g2 = sde.diffusion(t) ** 2
            return sde.drift(t, x) - 0.5 * g2 * batched(t, x)

        def step(x, tt):
            t0, t1 = tt
            h = t1 - t0
            k1 = vf(t0, x)
            k2 = vf(t1, x + h * k1)
            return x + 0.5 * h * (k1 + k2), None

        return jax.lax.scan(step, x, (ts[:-1], ts[1:]))[0]

    def scan_euler(key):
        x = sde.prior_sample((N, D), key=key, dtype=jnp.float32)

        def vf(t, x):
            return sde.drift(t, x) - 0.5 * sde.diffusion(t) ** 2 * batched(t, x)

        def step(x, tt):
            return x + (tt[1] - tt[0]) * vf(tt[0], x), None

        return jax.lax.scan(step, x, (ts[:-1], ts[1:]))[0]

    def rsde(path_kind):
        def f(key):
            k1, k2 = jr.split(key)
            y0 = sde.prior_sample((N, D), key=k1, dtype=jnp.float32)
            if path_kind == "grid":
                return sf.solve.solve_reverse_sde(
                    sde, model, y0, grid=grid, key=k2, denoise=False
                ).samples
            if path_kind == "tree":
                path = dfx.VirtualBrownianTree(
                    ts[-1], ts[0], tol=1e-3, shape=jax.ShapeDtypeStruct((N, D), jnp.float32), key=k2
                )
            else:
                path = dfx.UnsafeBrownianPath(
                    shape=jax.ShapeDtypeStruct((N, D), jnp.float32), key=k2
                )
            terms = sf.sde.reverse_sde_terms(sde, model, path)
            adjoint = (
                dfx.ForwardMode() if path_kind == "unsafe" else dfx.RecursiveCheckpointAdjoint()
            )
            return dfx.diffeqsolve(
                terms,
                dfx.Euler(),
                ts[0],
                ts[-1],
                None,
                y0,
                stepsize_controller=dfx.StepTo(ts),
                max_steps=STEPS,
                adjoint=adjoint,
            ).ys[-1]

        return f

    def scan_em(key):
        k1, k2 = jr.split(key)
        x = sde.prior_sample((N, D), key=k1, dtype=jnp.float32)

        def step(x, inp):
            t0, t1, i = inp
            h = t0 - t1
            g = sde.diffusion(t0)
            drift = sde.drift(t0, x) - g**2 * batched(t0, x)
            z = jr.normal(jr.fold_in(k2, i), x.shape, x.dtype)
            return x - h * drift + g * jnp.sqrt(h) * z, None

        return jax.lax.scan(step, x, (ts[:-1], ts[1:], jnp.arange(STEPS)))[0]

    cases = [
        ("probability flow, Heun (scoreflow)", pf(dfx.Heun()), 2 * STEPS),
        ("probability flow, Heun (hand-written lax.scan)", scan_heun, 2 * STEPS),
        ("probability flow, Euler (scoreflow)", pf(dfx.Euler()), STEPS),
        ("probability flow, Euler (hand-written lax.scan)", scan_euler, STEPS),
        ("reverse SDE, Euler-Maruyama, GridBrownianPath (scoreflow)", rsde("grid"), STEPS),
        ("reverse SDE, Euler-Maruyama, diffrax VirtualBrownianTree", rsde("tree"), STEPS),
        ("reverse SDE, Euler-Maruyama, diffrax UnsafeBrownianPath", rsde("unsafe"), STEPS),
        ("reverse SDE, Euler-Maruyama (hand-written lax.scan)", scan_em, STEPS),
    ]
    bare_cache = {}
    for name, fn, nfe in cases:
        if nfe not in bare_cache:
            bare_cache[nfe] = timed(bare(nfe), key, repeats=repeats)[1]
        c, r = timed(fn, key, repeats=repeats)
        rows.append((name, nfe, c, r, r / bare_cache[nfe]))
    print(f"# {N} samples, 2-d mixture, {STEPS} steps, float32, {jax.devices()[0].platform}")
    print("| sampler | NFE | compile (s) | run (ms) | run / (NFE x bare score call) |")
    print("|---|---|---|---|---|")
    for name, nfe, c, r, ratio in rows:
        print(f"| {name} | {nfe} | {c:.2f} | {r * 1e3:.2f} | {ratio:.2f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=20)
    main(parser.parse_args().repeats)
