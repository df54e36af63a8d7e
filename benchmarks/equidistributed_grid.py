"""Issue 19, target 3: is the equidistributed grid alone (stage 1 of `calibrate_grid`) a default?

Per mixture of a `mixture_families.design_set` (`--per-family` first seeds of each
family) and NFE: EAPC-3's RMS error on the Karras, log-SNR and shipped grids and on
`calibrate_grid(..., optimise_steps=0)` grids (4 and 8 stage-1 passes from the log-SNR
grid, 4 from `OptimisedGrid`; 1024 pilot draws from seed 99), each as a ratio to the better
of Karras and log-SNR. EDM, float64, 1024 measured draws from seed 3, reference an
800-step log-SNR EAPC-3 solve. No peers: their best is within 0.65-1.07 of the better
fixed grid on every mixture measured (`benchmarks/RESULTS.md`).

    PYTHONPATH=src:benchmarks python benchmarks/equidistributed_grid.py --set tune --per-family 1
"""

import argparse

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from mixture_families import design_set  # noqa: E402

import scoreflow as sf  # noqa: E402

S = sf.solve


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", choices=["tune", "report"], default="tune")
    ap.add_argument("--per-family", type=int, default=1)
    ap.add_argument("--nfes", nargs="+", type=int, default=[10, 20, 50])
    args = ap.parse_args()
    sde = sf.EDMSDE()
    seen = {}
    for label, (w, mu, cov) in design_set(args.set):
        family = label.split()[0]
        seen[family] = seen.get(family, 0) + 1
        if seen[family] > args.per_family:
            continue
        mix = sf.GaussianMixture(jnp.asarray(w), jnp.asarray(mu), jnp.asarray(cov))
        model = mix.noised(sde, "x0")
        d = mu.shape[1]
        x = jnp.asarray(80 * np.random.default_rng(3).standard_normal((1024, d)))
        pilot = jnp.asarray(80 * np.random.default_rng(99).standard_normal((1024, d)))
        eapc = S.ExponentialAdamsPC(3)
        ref = S.solve_probability_flow(sde, model, x, solver=eapc, grid=S.LogSNRGrid(800)).samples

        def rms(grid, model=model, x=x, ref=ref):
            out = S.solve_probability_flow(sde, model, x, solver=eapc, grid=grid).samples
            return float(jnp.sqrt(jnp.mean((out - ref) ** 2)))

        for nfe in args.nfes:
            n = nfe - 1
            r = {
                "karras": rms(S.KarrasGrid(n)),
                "logsnr": rms(S.LogSNRGrid(n)),
                "shipped": rms(S.OptimisedGrid(n)),
            }
            for passes in (4, 8):
                grid = S.calibrate_grid(sde, model, pilot, n, optimise_steps=0, iterations=passes)
                r[f"s1-{passes}"] = rms(grid)
            shipped = S.OptimisedGrid(n)
            grid = S.calibrate_grid(sde, model, pilot, n, optimise_steps=0, initial=shipped)
            r["s1-shipped"] = rms(grid)
            best = min(r["karras"], r["logsnr"])
            cells = " ".join(f"{k}={v:.2e}({v / best:.2f})" for k, v in r.items())
            print(label, nfe, cells, flush=True)


if __name__ == "__main__":
    main()
