"""Solver accuracy vs NFE on the exactly solvable mixtures of SOLVER_ACCURACY.md.

Runs scoreflow's diffusion solvers and the peers (k-diffusion's sampling module,
diffusers' UniPC and DPM-Solver++ schedulers, torch CPU, float64) in the same process on
cases A and B under the EDM parameterisation, counting denoiser calls actually made
(final denoise included), against a scipy DOP853 reference (rtol = atol = 1e-10, in
log sigma). Then the same study for scoreflow's solvers under the VP SDE.

    PYTHONPATH=src python benchmarks/solver_accuracy.py [--quick]

Writes benchmarks/solver_accuracy.csv, benchmarks/solver_accuracy.png and prints the
tables pasted into benchmarks/RESULTS.md. To re-measure some of scoreflow's samplers
only (no peers) and merge their rows into the existing CSV, every other row kept as
measured:

    PYTHONPATH=src python benchmarks/solver_accuracy.py --solvers calibrated \
        --cases B --sdes edm --nfes 10 20

Issue 19 adds `EAPC-3 (shipped)` (`OptimisedGrid`) and the peers UniPC-3, DPM++3M and
LMS run on scoreflow's calibrated and shipped grids (rows named "... (calibrated grid)",
"... (shipped grid)"; see `PEER_GRIDS` for how the n noise levels map): `--solvers`
selects peers too, e.g. `--solvers calibrated` re-runs the calibrated sampler and the
peers on its grids, and a solver-by-grid table is printed.
"""

import argparse
import math
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from mixture_families import TorchDenoiser  # noqa: E402
from peers import PEERS, errors, load_k_diffusion_sampling, reference  # noqa: E402

import scoreflow as sf  # noqa: E402

HERE = Path(__file__).parent
NFES = [5, 8, 10, 15, 20, 30, 50, 100]
S = sf.solve


# ----------------------------------------------------------------------------- problem
def case(name):
    if name == "A":
        ang = 2 * np.pi * np.arange(8) / 8
        mu = 4 * np.stack([np.cos(ang), np.sin(ang)], 1)
        return np.full(8, 1 / 8), mu, np.full((8, 2), 0.25)
    mu = np.random.default_rng(0).normal(0.0, 3.0, size=(5, 16))
    std = np.random.default_rng(1).uniform(0.3, 1.5, size=(5, 16))
    w = np.random.default_rng(2).dirichlet(np.ones(5))
    return w, mu, std**2


# ----------------------------------------------------------------------------- scoreflow
# (name, solver, steps for an NFE budget, grid factory (steps, sde, model, pilot noise))
def _ours():
    minus1 = lambda n: n - 1
    heun = lambda n: (n - 1) // 2
    karras = lambda n, *_: S.KarrasGrid(n)
    log_snr = lambda n, *_: S.LogSNRGrid(n)
    shipped = lambda n, *_: S.OptimisedGrid(n)

    return [
        ("scoreflow DDIM", S.DDIM(), minus1, karras),
        ("scoreflow DPM++2M", S.DPMSolverPP(2), minus1, karras),
        ("scoreflow DPM++3M", S.DPMSolverPP(3), minus1, karras),
        ("scoreflow EDM Heun", S.EDMHeun(), heun, karras),
        ("scoreflow EAPC-3 (Karras)", S.ExponentialAdamsPC(3), minus1, karras),
        ("scoreflow EAPC-3 (log-SNR)", S.ExponentialAdamsPC(3), minus1, log_snr),
        ("scoreflow EAPC-4 (Karras)", S.ExponentialAdamsPC(4), minus1, karras),
        ("scoreflow EAPC-4 (log-SNR)", S.ExponentialAdamsPC(4), minus1, log_snr),
        ("scoreflow EAPC-3 (shipped)", S.ExponentialAdamsPC(3), minus1, shipped),
        ("scoreflow EAPC-3 (calibrated)", S.ExponentialAdamsPC(3), minus1, calibrated),
    ]


_CALIBRATED = {}


def calibrated(n, sde, model, pilot):
    """`calibrate_grid(order=3)`, once per (model, steps): the peers reuse the grid."""
    key = (id(model), n)
    if key not in _CALIBRATED:
        _CALIBRATED[key] = (S.calibrate_grid(sde, model, pilot, n, order=3), model)
    return _CALIBRATED[key][0]


# Peers on scoreflow's grids (issue 19, target 4): what the grid buys and what the solver
# buys. A peer at budget n takes n noise levels and a final 0 (its last call is the
# final denoise, a step to sigma = 0); EAPC at budget n takes n - 1 steps, i.e. n times
# from 80 to 0.002, the final denoise free. So the n times of scoreflow's (n - 1)-step
# EDM grid (sigma = t) are exactly the n noise levels the peer needs: both spend n calls
# on the same noise levels.
PEER_GRIDS = {
    "calibrated": lambda n, sde, model, pilot: calibrated(n - 1, sde, model, pilot),
    "shipped": lambda n, *_: S.OptimisedGrid(n - 1),
}
PEERS_ON_OUR_GRIDS = ("k-diffusion lms", "diffusers UniPC-3", "diffusers DPM++3M")


def peer_jobs():
    """`[(row name, peer runner, grid name or None)]`."""
    jobs = [(name, fn, None) for name, fn in PEERS]
    for g in PEER_GRIDS:
        jobs += [(f"{nm} ({g} grid)", fn, g) for nm, fn in PEERS if nm in PEERS_ON_OUR_GRIDS]
    return jobs


# Pilot noise for `calibrate_grid`: independent of the benchmark's x_T (seed 3). Its size
# was chosen on `calibrate_design.py`'s random mixtures (8192 draws against 2048 there),
# not on cases A and B.
PILOT_SEED, PILOT_SIZE = 99, 8192


@eqx.filter_jit
def _solve(sde, model, y0, solver, grid):
    return S.solve_probability_flow(sde, model, y0, solver=solver, grid=grid)


def run_ours(sde, model, y0, solver, grid):
    t = time.perf_counter()
    compiled = _solve.lower(sde, model, y0, solver, grid).compile()
    compile_s = time.perf_counter() - t
    res = compiled(sde, model, y0, solver, grid)
    jax.block_until_ready(res.samples)
    best = math.inf
    for _ in range(3):  # the machine is shared: keep the least-disturbed run
        t = time.perf_counter()
        res = compiled(sde, model, y0, solver, grid)
        jax.block_until_ready(res.samples)
        best = min(best, time.perf_counter() - t)
    return np.asarray(res.samples), int(res.nfe), best, compile_s


def bare_call_time(fn, *args, reps=20):
    """Least time of one call (jitted JAX function or torch callable)."""
    jax.block_until_ready(fn(*args))
    best = math.inf
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer samples and NFEs")
    ap.add_argument("--out", default=str(HERE / "solver_accuracy"))
    ap.add_argument("--replot", action="store_true", help="tables and plot from the CSV")
    ap.add_argument(
        "--solvers",
        nargs="+",
        help="re-run only the samplers (scoreflow's or the peers', e.g. 'calibrated grid') "
        "whose name contains one of these and merge their rows into the existing CSV",
    )
    ap.add_argument("--cases", nargs="+", default=["A", "B"], choices=["A", "B"])
    ap.add_argument("--sdes", nargs="+", default=["edm", "vp"], choices=["edm", "vp"])
    ap.add_argument("--nfes", nargs="+", type=int, help="NFE budgets (default: all)")
    args = ap.parse_args()
    if args.replot:
        rows = read(args.out)
        write(rows, args.out, sorted({r[3] for r in rows}))
        return
    n_samples = 512 if args.quick else 4096
    nfes = args.nfes or ([10, 20, 50] if args.quick else NFES)
    ours = _ours()
    if args.solvers:
        ours = [o for o in ours if any(s in o[0] for s in args.solvers)]
    import diffusers  # noqa: F401  (before k-diffusion's stubs, which it probes for)
    import torch

    torch.set_default_dtype(torch.float64)
    kd = load_k_diffusion_sampling()
    rows = []
    for cname in args.cases:
        w, mu, var = case(cname)
        d = mu.shape[1]
        z = np.random.default_rng(3).standard_normal((4096, d))[:n_samples]
        x_T = 80.0 * z
        t = time.perf_counter()
        ref = reference(x_T, 80.0, 0.002, w, mu, var)
        print(f"case {cname}: reference in {time.perf_counter() - t:.1f}s", flush=True)
        mix = sf.GaussianMixture(jnp.asarray(w), jnp.asarray(mu), jnp.asarray(var))
        # SOLVER_ACCURACY.md's problem under each SDE: EDM (the table), then VP.
        for sde_name, sde in (("edm", sf.EDMSDE()), ("vp", sf.VPSDE(0.1, 20.0))):
            if sde_name not in args.sdes:
                continue
            # The exact denoiser as the model's own output: the diffusion solvers read
            # it unconverted.
            model = mix.noised(sde, "x0")
            if sde_name == "edm":
                xs, ref_s, scale = jnp.asarray(x_T), ref, 80.0
            else:
                a_T, s_T = (float(v) for v in sde.marginal(sde.T))
                a_m, s_m = (float(v) for v in sde.marginal(sde.t_min))
                xs, scale = jnp.asarray(s_T * z), s_T
                ref_s = reference(s_T * z / a_T, s_T / a_T, s_m / a_m, w, mu, var)
            bare = eqx.filter_jit(model)
            t_call = bare_call_time(bare, jnp.asarray(sde.T), xs)
            pilot_z = np.random.default_rng(PILOT_SEED).standard_normal((PILOT_SIZE, d))
            pilot = jnp.asarray(scale * pilot_z)
            for name, solver, steps, make_grid in ours:
                for nfe in nfes:
                    n = steps(nfe)
                    if n < 1:
                        continue
                    t = time.perf_counter()
                    grid = make_grid(n, sde, model, pilot)
                    jax.block_until_ready(grid.times(sde))
                    cal_s = time.perf_counter() - t if "calibrated" in name else 0.0
                    x, used, run_s, comp_s = run_ours(sde, model, xs, solver, grid)
                    rms, med = errors(x, ref_s)
                    rows.append(
                        (
                            cname,
                            sde_name,
                            name,
                            nfe,
                            used,
                            rms,
                            med,
                            run_s,
                            comp_s,
                            run_s / (used * t_call),
                            cal_s,
                        )
                    )
                    print(rows[-1], flush=True)
            jobs = peer_jobs()
            if args.solvers:
                jobs = [j for j in jobs if any(x in j[0] for x in args.solvers)]
            if sde_name != "edm" or not jobs:
                continue
            den = TorchDenoiser(w, mu, var)
            xt = torch.tensor(x_T)
            t_torch = math.inf
            for _ in range(20):
                t = time.perf_counter()
                den(xt, torch.tensor(1.0))
                t_torch = min(t_torch, time.perf_counter() - t)
            for name, fn, gname in jobs:
                for nfe in nfes:
                    sig = None
                    if gname is not None:
                        sig = np.asarray(PEER_GRIDS[gname](nfe, sde, model, pilot).times(sde))
                    outs = [fn(kd, den, x_T, nfe, sig) for _ in range(2)]
                    if outs[0] is None:
                        continue
                    x, used, _ = outs[0]
                    run_s = min(o[2] for o in outs)
                    rms, med = errors(x, ref)
                    rows.append(
                        (
                            cname,
                            "edm",
                            name,
                            nfe,
                            used,
                            rms,
                            med,
                            run_s,
                            0.0,
                            run_s / (used * t_torch),
                            0.0,
                        )
                    )
                    print(rows[-1], flush=True)
    if args.solvers:
        # Replace the re-measured (case, SDE, solver, budget) rows, keep every other one.
        new = {r[:4]: r for r in rows}
        old = read(args.out)
        rows = [new.pop(r[:4], r) for r in old] + list(new.values())
        nfes = sorted({r[3] for r in rows})
    write(rows, args.out, nfes)


def read(out):
    import csv

    with open(out + ".csv") as f:
        rd = csv.reader(f)
        next(rd)
        return [(r[0], r[1], r[2], int(r[3]), int(r[4]), *map(float, r[5:])) for r in rd]


def write(rows, out, nfes):
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [
        "case",
        "sde",
        "solver",
        "nfe_budget",
        "nfe",
        "rms",
        "median",
        "solve_s",
        "compile_s",
        "time_ratio",
        "calibrate_s",
    ]
    with open(out + ".csv", "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(cols)
        wr.writerows(rows)
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.5))
    all_names = sorted({r[2] for r in rows})
    colour = {nm: plt.get_cmap("tab20")(i % 20) for i, nm in enumerate(all_names)}
    for ax, (c, s) in zip(axes, [("A", "edm"), ("B", "edm"), ("A", "vp"), ("B", "vp")]):
        names = sorted({r[2] for r in rows if r[0] == c and r[1] == s})
        for nm in names:
            pts = sorted((r[4], r[5]) for r in rows if r[0] == c and r[1] == s and r[2] == nm)
            style = "-o" if nm.startswith("scoreflow") else "--x"
            ax.loglog(*zip(*pts), style, label=nm, ms=4, color=colour[nm])
        ax.set(title=f"case {c}, {s.upper()} SDE", xlabel="NFE", ylabel="RMS error")
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out + ".png", dpi=110)
    # Tables: best scoreflow vs best peer at each budget.
    print("\n| case | SDE | NFE | best scoreflow (RMS, solver) | best peer (RMS, solver) | ratio |")
    print("|---|---|---|---|---|---|")
    for c in ("A", "B"):
        for s in ("edm", "vp"):
            for nfe in nfes:
                sel = [r for r in rows if r[0] == c and r[1] == s and r[4] <= nfe]
                ours = [r for r in sel if r[2].startswith("scoreflow")]
                peers = [r for r in sel if not r[2].startswith("scoreflow") and "grid)" not in r[2]]
                if not ours:
                    continue
                bo = min(ours, key=lambda r: r[5])
                line = f"| {c} | {s} | {nfe} | {bo[5]:.2e} {bo[2]} ({bo[4]}) |"
                if peers:
                    bp = min(peers, key=lambda r: r[5])
                    line += f" {bp[5]:.2e} {bp[2]} ({bp[4]}) | {bo[5] / bp[5]:.2f} |"
                else:
                    line += " – | – |"
                print(line)
    grid_table(rows, nfes)
    print("\n| solver | median time ratio | max | median compile s | median calibrate s |")
    print("|---|---|---|---|---|")
    for nm in sorted({r[2] for r in rows}):
        rr = [r[9] for r in rows if r[2] == nm]
        cc = [r[8] for r in rows if r[2] == nm]
        cal = np.median([r[10] for r in rows if r[2] == nm]) if len(rows[0]) > 10 else 0.0
        print(
            f"| {nm} | {np.median(rr):.2f} | {np.max(rr):.2f} | {np.median(cc):.2f} | {cal:.2f} |"
        )


def grid_table(rows, nfes):
    """Solver x grid under EDM: what the grid buys and what the solver buys."""
    solvers = {
        "EAPC-3": {
            "Karras": "scoreflow EAPC-3 (Karras)",
            "shipped": "scoreflow EAPC-3 (shipped)",
            "calibrated": "scoreflow EAPC-3 (calibrated)",
        },
    }
    for nm in PEERS_ON_OUR_GRIDS:
        solvers[nm] = {"Karras": nm, **{g: f"{nm} ({g} grid)" for g in PEER_GRIDS}}
    have = {(r[0], r[1], r[2], r[3]): r[5] for r in rows}
    print("\n| case | NFE | " + " | ".join(f"{s} Karras / shipped / calibrated" for s in solvers))
    print("|---|---|" + "---|" * len(solvers))
    for c in ("A", "B"):
        for nfe in nfes:
            cells = []
            for grids in solvers.values():
                vals = [
                    have.get((c, "edm", grids[g], nfe)) for g in ("Karras", "shipped", "calibrated")
                ]
                cells.append(" / ".join("–" if v is None else f"{v:.2e}" for v in vals))
            if any("e" in x for x in cells):
                print(f"| {c} | {nfe} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
