"""The design set of `calibrate_grid`: random mixtures that are not cases A and B.

`calibrate_grid`'s defaults (4 equidistribution passes, relaxation 0.5, 200 Adam steps
at 0.05, half the pilot held out) were chosen on mixtures like these, never on the
benchmark's cases. This script measures, on four of them, `ExponentialAdamsPC(3)`'s RMS
error (against a 800-step log-SNR solve) on the Karras grid, the log-SNR grid, stage 1
of the calibration alone, and the full calibration; EDM SDE, float64, 4096 samples from
seed 3, pilot 2048 draws from seed 99 (as in `solver_accuracy.py`).

    PYTHONPATH=src python benchmarks/calibrate_design.py
"""

import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import scoreflow as sf  # noqa: E402

S = sf.solve


def mixture(seed):
    r = np.random.default_rng(seed)
    k, d = int(r.integers(2, 9)), int(r.integers(2, 10))
    mu = r.normal(0, r.uniform(1, 5), size=(k, d))
    var = r.uniform(0.1, 1.5, size=(k, d)) ** 2
    w = r.dirichlet(np.ones(k))
    return sf.GaussianMixture(jnp.asarray(w), jnp.asarray(mu), jnp.asarray(var)), k, d


def main():
    sde = sf.EDMSDE()
    print(
        "| mixture (K, d) | NFE | Karras | log-SNR | stage 1 only | calibrated "
        "| best fixed / calibrated | calibrate s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for seed in (7, 11, 13, 17):
        mix, k, d = mixture(seed)
        den = mix.noised(sde).denoise
        x = jnp.asarray(80 * np.random.default_rng(3).standard_normal((4096, d)))
        pilot = jnp.asarray(80 * np.random.default_rng(99).standard_normal((2048, d)))

        def rms(grid, ref=None):
            out = S.solve_probability_flow(
                sde, den, x, parameterisation="x0", solver=S.ExponentialAdamsPC(3), grid=grid
            ).samples
            return out if ref is None else float(jnp.sqrt(jnp.mean((out - ref) ** 2)))

        ref = rms(S.LogSNRGrid(800))
        for nfe in (10, 20, 50):
            n = nfe - 1
            stage1 = S.calibrate_grid(sde, den, pilot, n, parameterisation="x0", optimise_steps=0)
            t = time.perf_counter()
            cal = S.calibrate_grid(sde, den, pilot, n, parameterisation="x0")
            cal_s = time.perf_counter() - t
            e = [rms(g, ref) for g in (S.KarrasGrid(n), S.LogSNRGrid(n), stage1, cal)]
            print(
                f"| seed {seed} ({k}, {d}) | {nfe} | "
                + " | ".join(f"{v:.2e}" for v in e)
                + f" | {min(e[:2]) / e[3]:.1f} | {cal_s:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
