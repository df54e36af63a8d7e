"""The design set of `calibrate_grid` (issue 19): calibrated EAPC-3 against the best peer.

Per mixture and NFE: the best peer (`peers.run_peers`, each on its own Karras grid; the
least RMS error of the seven), `ExponentialAdamsPC(3)` on the Karras and log-SNR grids,
EAPC-3 on a grid from `sf.solve.calibrate_grid` (pilot from seed 99, independent of the
measured noise from seed 3), the ratio calibrated / best peer, the samples that end in
another component ("flips": per-coordinate RMS error above 0.5), where the returned grid
came from (`CalibratedGrid.source`), and the calibration's CPU seconds
(`time.process_time()`, both cores counted) and wall seconds.

Sets: `tune` and `report` are `mixture_families.design_set` (four families; settings
may only be chosen on `tune`), `public` is cases A and B of `solver_accuracy.py`.
EDM SDE, float64. Reference: scipy DOP853 (rtol = atol = 1e-10) for d <= 16; for the
64-d family, where DOP853 on thousands of samples takes too long, an 800-step log-SNR
EAPC-3 solve (its error is far below every error in the table: order 4, 8x the steps
of the largest budget).

    PYTHONPATH=src:benchmarks /work/benchvenv/bin/python benchmarks/calibrate_design.py \
        --set tune --nfes 10 20 50 [--samples 4096] [--families full_cov many_64]
"""

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from mixture_families import design_set  # noqa: E402
from peers import errors, load_k_diffusion_sampling, reference, run_peers  # noqa: E402

import scoreflow as sf  # noqa: E402

S = sf.solve
SMAX, SMIN = 80.0, 0.002


def public_cases():
    from solver_accuracy import case

    return [("case A", case("A")), ("case B", case("B"))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", choices=["tune", "report", "public"], default="tune")
    ap.add_argument("--nfes", nargs="+", type=int, default=[10, 20, 50])
    ap.add_argument("--samples", type=int, default=4096)
    ap.add_argument("--samples-64", type=int, default=2048)
    ap.add_argument("--pilot", type=int, default=8192)
    ap.add_argument("--families", nargs="*", default=None)
    ap.add_argument("--per-family", type=int, default=None, help="first seeds only")
    args = ap.parse_args()
    cases = public_cases() if args.set == "public" else design_set(args.set)
    if args.families:
        cases = [c for c in cases if c[0].split()[0] in args.families]
    if args.per_family is not None:
        seen = {}
        keep = lambda fam: seen.setdefault(fam, []).append(fam) or len(seen[fam])
        cases = [c for c in cases if keep(c[0].split()[0]) <= args.per_family]
    sde = sf.EDMSDE()
    kd = load_k_diffusion_sampling()
    print(
        "| mixture (K, d) | NFE | best peer | Karras | log-SNR | calibrated (flips) "
        "| calibrated / best peer | source | pilot, Adam steps | calibrate CPU s, wall s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    worst = {}
    for label, (w, mu, cov) in cases:
        k, d = mu.shape
        n = args.samples_64 if d > 16 else args.samples
        mix = sf.GaussianMixture(jnp.asarray(w), jnp.asarray(mu), jnp.asarray(cov))
        model = mix.noised(sde, "x0")
        x_T = SMAX * np.random.default_rng(3).standard_normal((n, d))
        x = jnp.asarray(x_T)
        pilot = jnp.asarray(SMAX * np.random.default_rng(99).standard_normal((args.pilot, d)))

        def solve(grid):
            return S.solve_probability_flow(
                sde, model, x, solver=S.ExponentialAdamsPC(3), grid=grid
            ).samples

        if d > 16:
            ref = np.asarray(solve(S.LogSNRGrid(800)))
        else:
            ref = reference(x_T, SMAX, SMIN, w, mu, cov)

        def err(out):
            per = np.sqrt(np.mean((np.asarray(out) - ref) ** 2, 1))
            return errors(out, ref)[0], int(np.sum(per > 0.5))

        for nfe in args.nfes:
            peers = run_peers(w, mu, cov, x_T, nfe, kd=kd)
            best_name, best = min(
                ((name, errors(r[0], ref)[0]) for name, r in peers.items()), key=lambda p: p[1]
            )
            steps = nfe - 1
            karras = err(solve(S.KarrasGrid(steps)))[0]
            log_snr = err(solve(S.LogSNRGrid(steps)))[0]
            t, c = time.perf_counter(), time.process_time()
            grid = S.calibrate_grid(sde, model, pilot, steps)
            jax.block_until_ready(grid.ts)
            wall, cpu = time.perf_counter() - t, time.process_time() - c
            cal, flips = err(solve(grid))
            ratio = cal / best
            worst[nfe] = max(worst.get(nfe, 0.0), ratio)
            print(
                f"| {label} ({k}, {d}) | {nfe} | {best:.2e} ({best_name}) | {karras:.2e} "
                f"| {log_snr:.2e} | {cal:.2e} ({flips}) | {ratio:.2f} | {grid.source} "
                f"| {grid.pilot_size}, {grid.adam_steps} | {cpu:.0f}, {wall:.0f} |",
                flush=True,
            )
    print("\nworst calibrated / best peer per NFE:", {k: round(v, 2) for k, v in worst.items()})


if __name__ == "__main__":
    main()
