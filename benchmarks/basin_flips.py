"""Basin flips: samples a sampler sends to another mixture component than the exact flow.

Issue 19: on `anisotropic 1000` at 50 NFE `ExponentialAdamsPC(3)` had 27.5x the RMS error
of diffusers' UniPC-2. On mixtures of narrow, well separated components the RMS over
samples of a fixed-grid sampler has two parts: a smooth discretisation error, and a few
samples whose exact path passes within the solver's error of a basin boundary and that
end in another component, each with an error of the order of the distance between the
means. One such sample in n adds about (mean distance / sqrt(d)) / sqrt(n) to the RMS, so
from 20-30 NFE on the RMS counts flips. This script separates the two: per mixture,
sampler and NFE it writes the RMS, the median, the RMS without the flipped samples, and
the flipped samples (component of the sample at t_min by the largest posterior
responsibility at sigma = 0.002, against that of the DOP853 reference of `peers.py`).

EDM SDE, float64, x_T = 80 z with z from seed 3 (the first n of 4096 draws, as in
`default_design.py`), Karras grid (rho = 7) unless `--grid` says otherwise; the peers
(`peers.py`, torch CPU float64) on their Karras grid.

    PYTHONPATH=src:benchmarks python benchmarks/basin_flips.py --seeds 100 101 102 103 104
    PYTHONPATH=src:benchmarks python benchmarks/basin_flips.py --seeds 1000 --samples 1024 --nfes 50
    PYTHONPATH=src:benchmarks python benchmarks/basin_flips.py --seeds 1000 --shadow 624 --peers
    PYTHONPATH=src:benchmarks python benchmarks/basin_flips.py --table benchmarks/basin_flips_*.csv
"""

import argparse
import csv
import math
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from mixture_families import FAMILIES, _eig, np_denoise  # noqa: E402
from peers import reference  # noqa: E402
from scipy.integrate import solve_ivp  # noqa: E402

import scoreflow as sf  # noqa: E402

S = sf.solve
SDE = sf.EDMSDE()
HERE = Path(__file__).parent
SOLVERS = {
    "EAPC-1": lambda: S.ExponentialAdamsPC(1),
    "EAPC-2": lambda: S.ExponentialAdamsPC(2),
    "EAPC-3": lambda: S.ExponentialAdamsPC(3),
    "DPM++2M": lambda: S.DPMSolverPP(2),
    "DPM++3M": lambda: S.DPMSolverPP(3),
}
GRIDS = {"Karras": S.KarrasGrid, "log-SNR": S.LogSNRGrid, "shipped": S.OptimisedGrid}


def component(x, w, mu, cov, sigma=0.002):
    """Index of the component of largest posterior responsibility at noise level `sigma`."""
    u, s = _eig(cov)
    r = np.einsum("nkd,kde->nke", x[:, None, :] - mu[None], u)
    v = s[None] + sigma**2
    return np.argmax(np.log(w)[None] - 0.5 * np.sum(r**2 / v + np.log(v), -1), 1)


def summary(x, ref, w, mu, cov):
    """(RMS, median, RMS without flips, flipped indices) of per-sample per-coordinate errors."""
    per = np.sqrt(np.sum((np.asarray(x) - ref) ** 2, 1) / ref.shape[1])
    flips = np.nonzero(component(np.asarray(x), w, mu, cov) != component(ref, w, mu, cov))[0]
    keep = np.ones(len(per), bool)
    keep[flips] = False
    rms_kept = math.sqrt(np.mean(per[keep] ** 2)) if keep.any() else math.nan
    return math.sqrt(np.mean(per**2)), float(np.median(per)), rms_kept, flips


def _exact(y, smax, w, mu, cov, rtol, dense=False):
    d = y.shape[1]

    def rhs(u, v):
        x = v.reshape(-1, d)
        return (x - np_denoise(x, math.exp(u), w, mu, cov)).ravel()

    lo = math.log(0.002)
    return solve_ivp(
        rhs, (math.log(smax), lo), y.ravel(), "DOP853", rtol=rtol, atol=rtol, dense_output=dense
    )


def shadow(args):
    """Where one sample loses its basin, and how close its exact path is to the boundary.

    From every state of the solver's trajectory the exact flow (DOP853, 1e-11) is run to
    t_min and its component read: the step after which it changes is where the solver
    sent the sample across the boundary. Then random perturbations of norm eps of the
    exact state at a few noise levels, each run exactly to t_min: the fraction that end
    in another component measures the distance from the boundary.
    """
    w, mu, cov = FAMILIES[args.family](args.seeds[0])
    d = mu.shape[1]
    i = args.shadow
    x_T = 80.0 * np.random.default_rng(3).standard_normal((4096, d))[[i]]
    sol = _exact(x_T, 80.0, w, mu, cov, 1e-12, dense=True)
    end = component(sol.y[:, -1].reshape(1, d), w, mu, cov)[0]
    print(
        f"{args.family} {args.seeds[0]} sample {i}: |x_T| = {np.linalg.norm(x_T):.1f}, "
        f"exact component {end}"
    )
    for rtol in (1e-10, 1e-13):
        other = _exact(x_T, 80.0, w, mu, cov, rtol).y[:, -1].reshape(1, d)
        print(
            f"  DOP853 at {rtol:.0e}: component {component(other, w, mu, cov)[0]}, "
            f"|difference from 1e-12| = {np.linalg.norm(other[0] - sol.y[:, -1]):.1e}"
        )
    mix = sf.GaussianMixture(jnp.asarray(w), jnp.asarray(mu), jnp.asarray(cov))
    for name in args.solvers:
        for nfe in args.nfes:
            grid = GRIDS[args.grid](nfe - 1)
            ts = np.asarray(grid.times(SDE))
            r = S.solve_probability_flow(
                SDE,
                mix.noised(SDE, "x0"),
                jnp.asarray(x_T),
                solver=SOLVERS[name](),
                grid=grid,
                ts_save=jnp.asarray(ts),
            )
            ys = np.asarray(r.trajectory)[:, 0]
            comps = [
                component(
                    _exact(ys[k][None], t, w, mu, cov, 1e-11).y[:, -1].reshape(1, d), w, mu, cov
                )[0]
                for k, t in enumerate(ts[:-1])
            ]
            errs = [np.linalg.norm(ys[k] - sol.sol(math.log(t))) for k, t in enumerate(ts)]
            lost = next((k for k, c in enumerate(comps) if c != end), None)
            final = component(np.asarray(r.samples), w, mu, cov)[0]
            if lost is None:
                print(
                    f"  {name} {args.grid} NFE {nfe}: never leaves the basin "
                    f"(final component {final})"
                )
                continue
            k = max(lost - 1, 0)
            print(
                f"  {name} {args.grid} NFE {nfe}: basin lost in the step sigma "
                f"{ts[k]:.4f} -> {ts[lost]:.4f}, global error {errs[k]:.1e} -> {errs[lost]:.1e} "
                f"(final error {errs[-1]:.1e}, component {final})"
            )
    rng = np.random.default_rng(0)
    for sig in (80.0, 10.0, 2.5, 1.5):
        y0 = sol.sol(math.log(sig)).reshape(1, d)
        cells = []
        for eps in (1e-5, 1e-4, 1e-3, 1e-2):
            dirs = rng.standard_normal((64, d))
            ys = y0 + eps * dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
            out = _exact(ys, sig, w, mu, cov, 1e-10).y[:, -1].reshape(64, d)
            cells.append(f"eps {eps:.0e}: {np.mean(component(out, w, mu, cov) != end):.2f}")
        print(
            f"  exact state at sigma {sig}, 64 random perturbations, fraction flipped: "
            + ", ".join(cells)
        )


def table(path):
    """Markdown: per NFE, flips summed over the mixtures and the worst ratio to the best peer.

    Ratios per mixture and NFE against the best peer of that row, of the RMS and of the
    RMS without each sampler's own flips.
    """
    with open(path) as f:
        rows = list(csv.DictReader(f))
    solvers = list(dict.fromkeys(r["solver"] for r in rows))
    peers = [s for s in solvers if s.startswith(("diffusers", "k-diffusion"))]
    nfes = sorted({int(r["nfe"]) for r in rows})
    mixes = list(dict.fromkeys(r["mixture"] for r in rows))
    n = {r["samples"] for r in rows}
    print(
        f"\nFlips summed over {len(mixes)} mixtures ({', '.join(mixes)}; {'/'.join(n)} samples):\n"
    )
    print("| NFE | " + " | ".join(solvers) + " |")
    print("|---|" + "---|" * len(solvers))
    for nfe in nfes:
        sel = [r for r in rows if int(r["nfe"]) == nfe]
        tot = [sum(int(r["flips"]) for r in sel if r["solver"] == s) for s in solvers]
        print(f"| {nfe} | " + " | ".join(map(str, tot)) + " |")
    print("\nWorst ratio over the mixtures to the best peer, RMS / RMS without flips:\n")
    own = [s for s in solvers if s not in peers]
    print("| NFE | " + " | ".join(own) + " |")
    print("|---|" + "---|" * len(own))
    for nfe in nfes:
        cells = []
        for s in own:
            worst = [0.0, 0.0]
            for m in mixes:
                sel = {r["solver"]: r for r in rows if int(r["nfe"]) == nfe and r["mixture"] == m}
                if s not in sel or not any(p in sel for p in peers):
                    continue
                for j, key in enumerate(("rms", "rms_without_flips")):
                    best = min(float(sel[p][key]) for p in peers if p in sel)
                    worst[j] = max(worst[j], float(sel[s][key]) / best)
            cells.append(f"{worst[0]:.2f} / {worst[1]:.2f}")
        print(f"| {nfe} | " + " | ".join(cells) + " |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", default="anisotropic", choices=sorted(FAMILIES))
    ap.add_argument("--seeds", nargs="+", type=int, default=[100, 101, 102, 103, 104])
    ap.add_argument("--samples", type=int, default=4096, help="at most 4096")
    ap.add_argument("--nfes", nargs="+", type=int, default=[10, 20, 30, 50, 70])
    ap.add_argument("--solvers", nargs="*", default=list(SOLVERS), choices=list(SOLVERS))
    ap.add_argument("--grid", default="Karras", choices=list(GRIDS))
    ap.add_argument(
        "--peers",
        nargs="*",
        default=["diffusers UniPC-2", "diffusers UniPC-3", "k-diffusion dpmpp_2m"],
        help="peer names of peers.py (none: scoreflow only)",
    )
    ap.add_argument("--out", default=str(HERE / "basin_flips.csv"))
    ap.add_argument("--cache", default="/tmp/default_design_refs", help="DOP853 references")
    ap.add_argument("--shadow", type=int, help="trace this sample index of the first seed instead")
    ap.add_argument("--table", nargs="+", help="print the tables of these CSVs and stop")
    args = ap.parse_args()
    if args.table:
        for path in args.table:
            table(path)
        return None
    if args.shadow is not None:
        return shadow(args)
    if args.peers:
        import diffusers  # noqa: F401  (before k-diffusion's stubs, which it probes for)
        import torch
        from peers import load_k_diffusion_sampling, run_peers

        torch.set_default_dtype(torch.float64)
        kd = load_k_diffusion_sampling()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        w, mu, cov = FAMILIES[args.family](seed)
        d = mu.shape[1]
        label = f"{args.family} {seed}"
        x_T = 80.0 * np.random.default_rng(3).standard_normal((4096, d))[: args.samples]
        path = cache / f"{label.replace(' ', '_')}_{args.samples}.npy"
        t, c = time.perf_counter(), time.process_time()
        if path.exists():
            ref = np.load(path)
        else:
            ref = reference(x_T, 80.0, 0.002, w, mu, cov)
            np.save(path, ref)
        std = np.sqrt(np.linalg.eigvalsh(cov).min()) if cov.ndim == 3 else np.sqrt(cov.min())
        print(
            f"{label}: K={len(w)} d={d} min std {std:.3f} n={args.samples}; reference "
            f"{time.perf_counter() - t:.0f} s wall, {time.process_time() - c:.0f} s CPU",
            flush=True,
        )
        mix = sf.GaussianMixture(jnp.asarray(w), jnp.asarray(mu), jnp.asarray(cov))
        model = mix.noised(SDE, "x0")
        for nfe in args.nfes:
            outs = {}
            for name in args.solvers:
                # n - 1 steps: EAPC's final denoise is free, DPM-Solver++ spends call n on it.
                r = S.solve_probability_flow(
                    SDE,
                    model,
                    jnp.asarray(x_T),
                    solver=SOLVERS[name](),
                    grid=GRIDS[args.grid](nfe - 1),
                )
                assert int(r.nfe) == nfe, (name, int(r.nfe), nfe)
                outs[f"{name} {args.grid}"] = np.asarray(r.samples)
            if args.peers:
                for name, (x, calls, _) in run_peers(
                    w, mu, cov, x_T, nfe, kd=kd, names=args.peers
                ).items():
                    assert calls == nfe, (name, calls, nfe)
                    outs[name] = x
            cells = []
            for name, x in outs.items():
                rms, med, kept, flips = summary(x, ref, w, mu, cov)
                rows.append(
                    (
                        label,
                        args.samples,
                        nfe,
                        name,
                        rms,
                        med,
                        kept,
                        len(flips),
                        " ".join(map(str, flips)),
                    )
                )
                cells.append(f"{name} {rms:.2e}/{med:.1e}/{kept:.1e} f{len(flips)}")
            print(
                f"  NFE {nfe:3d} (RMS/median/RMS without flips, flips): " + " | ".join(cells),
                flush=True,
            )
    with open(args.out, "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(
            [
                "mixture",
                "samples",
                "nfe",
                "solver",
                "rms",
                "median",
                "rms_without_flips",
                "flips",
                "flipped",
            ]
        )
        wr.writerows(rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
