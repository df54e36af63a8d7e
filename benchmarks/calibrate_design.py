"""The design set of `calibrate_grid`: random mixtures that are not cases A and B.

`calibrate_grid`'s defaults (4 equidistribution passes, relaxation 0.5, 200 Adam steps
at 0.05, half the pilot held out) and the benchmark's pilot size were chosen on mixtures
like these, never on the benchmark's cases. Two generators: `mixture` (K in 2..8, d in
2..9, random mean scale; seeds 7, 11, 13, 17) and `mixture_b`, draws shaped like case B
(d = 16, K = 5, means N(0, 3^2), stds U(0.3, 1.5), Dirichlet weights) from one generator
seeded 21, 22, 23 (case B's own parameters come from seeds 0, 1, 2 and are never used).
This script measures `ExponentialAdamsPC(3)`'s RMS error (against an 800-step log-SNR
solve) on the Karras grid, the log-SNR grid, and calibrated grids fitted on 2048 and on
8192 pilot draws; EDM SDE, float64, 4096 samples from seed 3, pilot from seed 99 (as in
`solver_accuracy.py`). "flips" counts samples whose per-coordinate RMS error exceeds 0.5,
i.e. that end in another component than the reference.

    PYTHONPATH=src python benchmarks/calibrate_design.py [--nfes 10 20 50]
"""

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import scoreflow as sf  # noqa: E402

S = sf.solve
PILOTS = (2048, 8192)


def mixture(seed):
    r = np.random.default_rng(seed)
    k, d = int(r.integers(2, 9)), int(r.integers(2, 10))
    mu = r.normal(0, r.uniform(1, 5), size=(k, d))
    var = r.uniform(0.1, 1.5, size=(k, d)) ** 2
    w = r.dirichlet(np.ones(k))
    return sf.GaussianMixture(jnp.asarray(w), jnp.asarray(mu), jnp.asarray(var)), k, d


def mixture_b(seed):
    r = np.random.default_rng(seed)
    k, d = 5, 16
    mu = r.normal(0.0, 3.0, size=(k, d))
    var = r.uniform(0.3, 1.5, size=(k, d)) ** 2
    w = r.dirichlet(np.ones(k))
    return sf.GaussianMixture(jnp.asarray(w), jnp.asarray(mu), jnp.asarray(var)), k, d


DESIGN = [("", s, mixture) for s in (7, 11, 13, 17)] + [
    ("B-like ", s, mixture_b) for s in (21, 22, 23)
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nfes", nargs="+", type=int, default=[10, 20, 50])
    args = ap.parse_args()
    sde = sf.EDMSDE()
    print(
        "| mixture (K, d) | NFE | Karras | log-SNR | calibrated, pilot 2048 (flips) "
        "| calibrated, pilot 8192 (flips) | 2048 / 8192 | calibrate s (2048, 8192) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for nfe in args.nfes:
        for label, seed, make in DESIGN:
            mix, k, d = make(seed)
            model = mix.noised(sde, "x0")  # the exact denoiser as the model's output
            x = jnp.asarray(80 * np.random.default_rng(3).standard_normal((4096, d)))
            pilot_z = np.random.default_rng(99).standard_normal((max(PILOTS), d))

            def solve(grid):
                return S.solve_probability_flow(
                    sde, model, x, solver=S.ExponentialAdamsPC(3), grid=grid
                ).samples

            ref = solve(S.LogSNRGrid(800))

            def err(grid):
                e = solve(grid) - ref
                per = jnp.sqrt(jnp.mean(e**2, axis=1))
                return float(jnp.sqrt(jnp.mean(per**2))), int(jnp.sum(per > 0.5))

            n = nfe - 1
            fixed = [err(g)[0] for g in (S.KarrasGrid(n), S.LogSNRGrid(n))]
            cal, secs = [], []
            for size in PILOTS:
                pilot = jnp.asarray(80 * pilot_z[:size])
                t = time.perf_counter()
                grid = S.calibrate_grid(sde, model, pilot, n)
                jax.block_until_ready(grid.times(sde))
                secs.append(time.perf_counter() - t)
                cal.append(err(grid))
            print(
                f"| {label}seed {seed} ({k}, {d}) | {nfe} | {fixed[0]:.2e} | {fixed[1]:.2e} | "
                + " | ".join(f"{e:.2e} ({f})" for e, f in cal)
                + f" | {cal[0][0] / cal[1][0]:.2f} | {secs[0]:.0f}, {secs[1]:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
