"""Probability-flow log-likelihood accuracy against the exact mixture density.

Exact score and exact p_T prior (`mixture.noised(sde)`), so every error is the
solver's (and the trace estimator's). Sweeps rtol (= atol) for the exact trace and
Hutchinson with K = 1, 4, 16 Rademacher probes, in float32 and float64, on case A
(2-d, 8 Gaussians) and case B (16-d, 5 Gaussians) of SOLVER_ACCURACY.md under the VP
SDE (t_min = 1e-5). Error = mean over 64 points of |log p - log p_{t_min}| / dim.

A second sweep (float64, exact trace) compares the step-size control: the default
(`augmented_error_norm`, in t), diffrax's joint RMS norm over the whole augmented state
(the previous default), and the default norm in log-SNR time, on cases A and B under
the VP SDE and case B under the VE SDE. Writes `likelihood_accuracy.csv`,
`likelihood_control.csv` and `likelihood_accuracy.png`.

    PYTHONPATH=src python benchmarks/likelihood_accuracy.py [--fast] [--out-dir DIR]
"""

import argparse
import csv
import os
import sys
import time

import diffrax as dfx
import equinox as eqx
import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
import matplotlib  # noqa: E402
import optimistix as optx  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import scoreflow as sf  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from helpers import case_a, case_b  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def run(fast: bool):
    sde = sf.VPSDE(t_min=1e-5)
    rtols = [1e-3, 1e-4, 1e-5, 1e-6] if fast else [1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 1e-6, 1e-7, 1e-8]
    traces = [("exact", 1), ("hutchinson", 1), ("hutchinson", 4), ("hutchinson", 16)]
    rows = []
    for case_name, make in (("A", case_a), ("B", case_b)):
        for dtype in (jnp.float32, jnp.float64):
            mixture = make(dtype)
            noisy = mixture.noised(sde)
            x = mixture.sample(64, key=jr.key(0))
            ref = noisy.log_prob(jnp.asarray(sde.t_min, dtype), x)
            dim = mixture.dim
            prior = lambda z, noisy=noisy, dtype=dtype: noisy.log_prob(jnp.asarray(sde.T, dtype), z)
            for trace, k in traces:
                compile_s = None
                for rtol in rtols:
                    tol = jnp.asarray(rtol, dtype)
                    kw = dict(
                        prior_log_prob=prior,
                        rtol=tol,
                        atol=tol,
                        trace=sf.solve.Exact() if trace == "exact" else sf.solve.Hutchinson(k),
                        key=jr.key(1),
                        max_steps=16384,
                        throw=False,
                    )
                    t0 = time.perf_counter()
                    res = sf.solve.log_likelihood(sde, noisy, x, **kw)
                    jax.block_until_ready(res.log_prob)
                    first = time.perf_counter() - t0
                    t0 = time.perf_counter()
                    res = sf.solve.log_likelihood(sde, noisy, x, **kw)
                    jax.block_until_ready(res.log_prob)
                    run_s = time.perf_counter() - t0
                    if compile_s is None:
                        compile_s = first - run_s
                    err = float(jnp.mean(jnp.abs(res.log_prob - ref))) / dim
                    se = float(jnp.mean(res.std_error)) / dim if k > 1 else float("nan")
                    row = dict(
                        case=case_name,
                        dtype=jnp.dtype(dtype).name,
                        trace=trace if trace == "exact" else f"hutchinson-K{k}",
                        rtol=rtol,
                        nfe=int(res.nfe),
                        err_per_dim=err,
                        std_error_per_dim=se,
                        ok=bool(res.result == dfx.RESULTS.successful),
                        compile_s=round(compile_s, 2),
                        run_s=round(run_s, 4),
                    )
                    rows.append(row)
                    print(row, flush=True)
    return rows


def run_control(fast: bool):
    rtols = [1e-3, 3e-4, 1e-4, 1e-5] if fast else [1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 1e-6]
    sdes = {"vp": sf.VPSDE(t_min=1e-5), "ve": sf.VESDE(sigma_min=0.01, sigma_max=20.0)}
    rows = []
    cases = (("vp", "A", case_a), ("vp", "B", case_b), ("ve", "B", case_b))
    for sde_name, case_name, make in cases:
        sde = sdes[sde_name]
        mixture = make(jnp.float64)
        noisy = mixture.noised(sde)
        x = mixture.sample(64, key=jr.key(0))
        ref = noisy.log_prob(sde.t_min, x)
        prior = lambda z, noisy=noisy, sde=sde: noisy.log_prob(sde.T, z)
        for control in ("default (t)", "joint RMS (t)", "default (log-SNR)"):
            for rtol in rtols:
                tol = jnp.asarray(rtol)
                kw = dict(prior_log_prob=prior, rtol=tol, atol=tol, max_steps=16384, throw=False)
                if control == "joint RMS (t)":
                    kw["stepsize_controller"] = dfx.PIDController(
                        rtol=tol, atol=tol, norm=optx.rms_norm
                    )
                if control == "default (log-SNR)":
                    kw["time_variable"] = "log_snr"
                res = sf.solve.log_likelihood(sde, noisy, x, **kw)
                row = dict(
                    sde=sde_name,
                    case=case_name,
                    control=control,
                    rtol=rtol,
                    nfe=int(res.nfe),
                    rejected=int(res.stats["num_rejected_steps"]),
                    err_per_dim=float(jnp.mean(jnp.abs(res.log_prob - ref))) / mixture.dim,
                    ok=bool(res.result == dfx.RESULTS.successful),
                )
                rows.append(row)
                print(row, flush=True)
    return rows


def control_summary(rows):
    lines = [
        "| SDE, case | control | best err/dim at NFE ≤ 100 (rtol, NFE) | NFE to reach ≤ 1e-4 |",
        "|---|---|---|---|",
    ]
    keys = []
    for r in rows:
        if (r["sde"], r["case"], r["control"]) not in keys:
            keys.append((r["sde"], r["case"], r["control"]))
    for sde_name, case, control in keys:
        sel = [r for r in rows if (r["sde"], r["case"], r["control"]) == (sde_name, case, control)]
        sel = [r for r in sel if r["ok"]]
        cheap = [r for r in sel if r["nfe"] <= 100]
        best = min(cheap, key=lambda r: r["err_per_dim"]) if cheap else None
        cell = f"{best['err_per_dim']:.1e} ({best['rtol']:g}, {best['nfe']})" if best else "—"
        good = [r["nfe"] for r in sel if r["err_per_dim"] <= 1e-4]
        lines.append(
            f"| {sde_name.upper()}, {case} | {control} | {cell} | {min(good) if good else '—'} |"
        )
    return "\n".join(lines)


def write(rows, path_csv, path_png):
    with open(path_csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharey=True)
    for i, case in enumerate(("A", "B")):
        for j, dtype in enumerate(("float32", "float64")):
            ax = axes[i, j]
            for trace in sorted({r["trace"] for r in rows}):
                sel = [
                    r for r in rows if (r["case"], r["dtype"], r["trace"]) == (case, dtype, trace)
                ]
                ax.loglog(
                    [r["nfe"] for r in sel], [r["err_per_dim"] for r in sel], "o-", label=trace
                )
            ax.axhline(1e-4 if dtype == "float64" else 1e-3, color="k", ls=":", lw=1)
            ax.axvline(100, color="k", ls=":", lw=1)
            ax.set_title(f"case {case}, {dtype}")
            ax.set_xlabel("NFE")
            ax.set_ylabel("|error| (nats/dim)")
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path_png, dpi=110)


def summary(rows):
    lines = [
        "| case | dtype | trace | best err/dim at NFE ≤ 100 | (rtol, NFE) | compile s |",
        "|---|---|---|---|---|---|",
    ]
    keys = sorted({(r["case"], r["dtype"], r["trace"]) for r in rows})
    for case, dtype, trace in keys:
        sel = [r for r in rows if (r["case"], r["dtype"], r["trace"]) == (case, dtype, trace)]
        cheap = [r for r in sel if r["nfe"] <= 100 and r["ok"]]
        if cheap:
            best = min(cheap, key=lambda r: r["err_per_dim"])
            cell = f"{best['err_per_dim']:.2e} | ({best['rtol']:g}, {best['nfe']})"
        else:
            cell = "— | (no run ≤ 100 NFE)"
        lines.append(f"| {case} | {dtype} | {trace} | {cell} | {sel[0]['compile_s']} |")
    return "\n".join(lines)


NFE_RTOLS = (3e-3, 2e-3, 1e-3, 5e-4, 3e-4, 2e-4, 1e-4, 5e-5, 3e-5, 1e-5)
NFE_TARGET = {"float64": 1e-4, "float32": 1e-3}


def _first_step(sde, delta):
    """The time in which the log-SNR falls by `delta` from `t_min` (a first step)."""
    t0 = jnp.asarray(sde.t_min)
    return float(sde.t_from_log_snr(sde.log_snr(t0) - delta) - t0)


def nfe_settings(name, sde, tol):
    """Keyword arguments of `log_likelihood` for a named setting at tolerance `tol`.

    `default`: the library's defaults (Tsit5, I controller, `augmented_error_norm`,
    first step a 64th of the range, `default_time_variable(sde)`: `"vp"` on EDM, `"t"`
    on VP since issue 19's second pass). `t` / `vp`: the defaults with that
    `time_variable`. The others were chosen on the tune seeds of `mixture_families.py`
    (`--set tune`), never on the reported mixtures; the PI controllers, the error
    weights, the other Runge-Kutta pairs and the growth / safety limits were measured
    there and none kept (RESULTS.md, "the step-size controller on the tune seeds").
    """
    if name == "default":
        return dict(rtol=tol, atol=tol)
    if name == "t":  # the time variable t, whatever the SDE's default
        return dict(rtol=tol, atol=tol, time_variable="t")
    if name == "vp":  # the reference VP SDE's time and state at the same log-SNR
        return dict(rtol=tol, atol=tol, time_variable="vp")
    pi = {"pi43": (0.4, 0.3), "pi33": (0.3, 0.3), "pi24": (0.2, 0.4), "pi13": (0.1, 0.3)}
    if name in pi:  # a PI controller (diffrax's suggested coefficients), default norm
        pcoeff, icoeff = pi[name]
        ctrl = dfx.PIDController(
            rtol=tol, atol=tol, pcoeff=pcoeff, icoeff=icoeff, norm=sf.solve.augmented_error_norm
        )
        return dict(stepsize_controller=ctrl)
    weights = {"z/3": 3.0, "z/10": 10.0, "z/30": 30.0, "z*3": 1 / 3}
    if name in weights:  # the state's error weighed against the log-det's
        w = weights[name]

        def norm(y, w=w):
            rms = lambda a: jnp.sqrt(jnp.mean(a**2))
            return jnp.maximum(rms(y.z) / w, rms(y.log_det))

        ctrl = dfx.PIDController(rtol=tol, atol=tol, norm=norm)
        return dict(stepsize_controller=ctrl)
    solvers = {"dopri5": dfx.Dopri5(), "dopri8": dfx.Dopri8()}
    if name in solvers:  # another embedded Runge-Kutta pair, default controller
        return dict(rtol=tol, atol=tol, solver=solvers[name])
    limits = {"fmax2": (2.0, 0.9), "fmax3": (3.0, 0.9), "fmax5": (5.0, 0.9), "safe95": (10.0, 0.95)}
    if name in limits:  # step growth capped, or a bolder safety factor
        factormax, safety = limits[name]
        ctrl = dfx.PIDController(
            rtol=tol,
            atol=tol,
            norm=sf.solve.augmented_error_norm,
            factormax=factormax,
            safety=safety,
        )
        return dict(stepsize_controller=ctrl)
    if name == "dt0-logsnr":  # first step: log-SNR falls by 1; safety 0.8, growth <= 5
        ctrl = dfx.PIDController(
            rtol=tol,
            atol=tol,
            norm=sf.solve.augmented_error_norm,
            safety=0.8,
            factormax=5.0,
        )
        return dict(stepsize_controller=ctrl, dt0=_first_step(sde, 1.0))
    raise ValueError(name)


def nfe_mixtures(which, families, limit=None):
    """`[(label, GaussianMixture float64)]`: cases A, B (report only) and the design set."""
    import numpy as np
    from mixture_families import design_set

    out = [("A", case_a(jnp.float64)), ("B", case_b(jnp.float64))] if which == "report" else []
    taken = {f: 0 for f in families}
    for label, (w, mu, cov) in design_set(which):
        family = label.split()[0]
        if family in families and (limit is None or taken[family] < limit):
            taken[family] += 1
            out.append(
                (label, sf.GaussianMixture(*(jnp.asarray(np.asarray(a)) for a in (w, mu, cov))))
            )
    return out


def run_nfe(which, families, settings, dtypes, n=64, limit=None):
    """Fewest NFE reaching the target per mixture x SDE x dtype x setting (rtol swept)."""
    sdes = {"vp": sf.VPSDE(t_min=1e-5), "edm": sf.EDMSDE()}
    rows = []
    for label, mixture64 in nfe_mixtures(which, families, limit):
        for dtype_name in dtypes:
            dtype = jnp.dtype(dtype_name)
            mixture = jax.tree.map(
                lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, mixture64
            )
            x = mixture64.sample(n, key=jr.key(0)).astype(dtype)
            for sde_name, sde in sdes.items():
                noisy = mixture.noised(sde)
                ref = mixture64.noised(sde).log_prob(sde.t_min, x.astype(jnp.float64))
                prior = lambda z, noisy=noisy, sde=sde, dtype=dtype: noisy.log_prob(
                    jnp.asarray(sde.T, dtype), z
                )
                done = {}
                for setting in settings:
                    c0 = time.process_time()
                    # `default` is the very call of `t` or `vp` where the SDE's default
                    # time variable is that one: its sweep is reused, not rerun.
                    same = sf.solve.default_time_variable(sde) if setting == "default" else None
                    sweep = list(done.get(same, []))
                    for rtol in NFE_RTOLS if not sweep else ():
                        kw = nfe_settings(setting, sde, jnp.asarray(rtol, dtype))
                        res = sf.solve.log_likelihood(
                            sde, noisy, x, prior_log_prob=prior, max_steps=16384, throw=False, **kw
                        )
                        err = (
                            float(jnp.mean(jnp.abs(res.log_prob.astype(jnp.float64) - ref)))
                            / mixture.dim
                        )
                        ok = bool(res.result == dfx.RESULTS.successful)
                        sweep.append((rtol, int(res.nfe), err, ok))
                    done[setting] = sweep
                    good = [
                        nfe for _, nfe, err, ok in sweep if ok and err <= NFE_TARGET[dtype_name]
                    ]
                    at_default = sweep[-1]  # rtol = atol = 1e-5, log_likelihood's default
                    row = dict(
                        mixture=label,
                        dim=mixture.dim,
                        sde=sde_name,
                        dtype=dtype_name,
                        setting=setting,
                        fewest_nfe=min(good) if good else None,
                        err_at_1e5=at_default[2],
                        nfe_at_1e5=at_default[1],
                        sweep=";".join(f"{r:g}:{nfe}:{e:.2e}" for r, nfe, e, _ in sweep),
                        cpu_s=round(time.process_time() - c0, 1),
                    )
                    print(row, flush=True)
                    rows.append(row)
    return rows


def nfe_summary(rows, settings):
    head = " | ".join(f"fewest NFE, {s}" for s in settings)
    lines = [
        f"| mixture | SDE | dtype | {head} | err/dim at rtol 1e-5 (NFE), {settings[-1]} |",
        "|---|---|---|" + "---|" * len(settings) + "---|",
    ]
    keys = []
    for r in rows:
        if (r["mixture"], r["sde"], r["dtype"]) not in keys:
            keys.append((r["mixture"], r["sde"], r["dtype"]))
    for key in keys:
        sel = {r["setting"]: r for r in rows if (r["mixture"], r["sde"], r["dtype"]) == key}
        cells = " | ".join(str(sel[s]["fewest_nfe"] or "—") for s in settings)
        d = sel[settings[-1]]
        lines.append(
            f"| {key[0]} ({d['dim']}-d) | {key[1].upper()} | {key[2]} | {cells} | "
            f"{d['err_at_1e5']:.1e} ({d['nfe_at_1e5']}) |"
        )
    for s in settings:
        for dt in sorted({r["dtype"] for r in rows}):
            vals = [r["fewest_nfe"] for r in rows if r["setting"] == s and r["dtype"] == dt]
            met = sum(v is not None and v <= 100 for v in vals)
            worst = "never" if None in vals else max(vals)
            lines.append(
                f"\n{s}, {dt}: target at <= 100 NFE on {met}/{len(vals)}; worst fewest NFE {worst}"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--fast", action="store_true")
    p.add_argument("--out-dir", default=HERE, help="where the CSVs and the PNG are written")
    p.add_argument(
        "--mode",
        choices=("sweep", "nfe"),
        default="sweep",
        help="sweep: the issue-3 tolerance sweeps; nfe: fewest NFE to the target (issue 19)",
    )
    p.add_argument("--set", choices=("report", "tune"), default="report", help="nfe: mixtures")
    p.add_argument("--families", nargs="+", default=["full_cov", "many_64"])
    p.add_argument("--settings", nargs="+", default=["default", "dt0-logsnr"])
    p.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    p.add_argument("--limit", type=int, default=None, help="nfe: at most this many seeds a family")
    args = p.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    if args.mode == "nfe":
        nfe_rows = run_nfe(args.set, args.families, args.settings, args.dtypes, limit=args.limit)
        with open(
            os.path.join(args.out_dir, f"likelihood_nfe_{args.set}.csv"), "w", newline=""
        ) as f:
            w = csv.DictWriter(f, fieldnames=list(nfe_rows[0]))
            w.writeheader()
            w.writerows(nfe_rows)
        print(nfe_summary(nfe_rows, args.settings))
        sys.exit()
    control = run_control(args.fast)
    with open(os.path.join(args.out_dir, "likelihood_control.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(control[0]))
        w.writeheader()
        w.writerows(control)
    rows = run(args.fast)
    write(
        rows,
        os.path.join(args.out_dir, "likelihood_accuracy.csv"),
        os.path.join(args.out_dir, "likelihood_accuracy.png"),
    )
    print(summary(rows))
    print(control_summary(control))
