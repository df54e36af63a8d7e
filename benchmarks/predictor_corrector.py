"""Predictor-corrector against the predictor alone at equal NFE, with the exact score.

Case A's mixture (8 Gaussians of std 0.5 on a circle of radius 4) with unequal weights,
float64. For each budget, predictor-corrector (PC) takes N steps of the predictor and one
Langevin corrector step (snr rule, Song et al. 2021, Algorithm 4) after each: 2N + 1
network evaluations with the final denoise; the predictor alone takes 2N steps, the same
NFE. Errors are against the exact mixture:

- `logp gap`: |E_samples[log p0(x)] - E_exact[log p0(x)]| (exact expectation from 400k
  exact samples);
- `SW2`: sliced 2-Wasserstein distance to as many exact samples (128 fixed directions),
  whose floor (exact vs exact) is printed too;
- `TV(weights)`: total variation between the fraction of samples per component and the
  weights.

Compile and run time are measured separately (the second call of the jitted sampler).

    PYTHONPATH=src python benchmarks/predictor_corrector.py [--quick] [--out-dir DIR]

Writes `predictor_corrector.csv` and `predictor_corrector.png` (in `benchmarks/` unless
`--out-dir` says otherwise).
"""

import argparse
import csv
import pathlib
import time

import jax

jax.config.update("jax_enable_x64", True)

import diffrax as dfx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
import numpy as np  # noqa: E402

import scoreflow as sf  # noqa: E402

HERE = pathlib.Path(__file__).parent
WEIGHTS = [0.3, 0.05, 0.1, 0.05, 0.2, 0.1, 0.1, 0.1]


def case_a():
    ang = 2 * np.pi * np.arange(8) / 8
    means = 4 * np.stack([np.cos(ang), np.sin(ang)], 1)
    return sf.GaussianMixture(jnp.asarray(WEIGHTS), jnp.asarray(means), jnp.full((8, 2), 0.25))


def sliced_w2(x, y, dirs):
    px = np.sort(np.asarray(x) @ dirs, axis=0)
    py = np.sort(np.asarray(y) @ dirs, axis=0)
    return float(np.sqrt(np.mean((px - py) ** 2)))


def errors(mix, x, ref, ref_logp, dirs):
    comp = np.asarray(jnp.argmax(mix.component_log_probs(x), -1))
    frac = np.bincount(comp, minlength=8) / x.shape[0]
    return dict(
        logp_gap=abs(float(mix.log_prob(x).mean()) - ref_logp),
        sw2=sliced_w2(x, ref, dirs),
        tv=0.5 * float(np.abs(frac - np.asarray(mix.weights)).sum()),
    )


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    out.samples.block_until_ready()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    out.samples.block_until_ready()
    run = time.perf_counter() - t0
    return out, first - run, run


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer samples and budgets")
    parser.add_argument("--out-dir", default=str(HERE), help="where the CSV and PNG go")
    opts = parser.parse_args()
    out_dir = pathlib.Path(opts.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n = 4000 if opts.quick else 20000
    budgets = [25, 50, 100] if opts.quick else [25, 50, 100, 200, 400]
    mix = case_a()
    ref = mix.sample(n, key=jr.key(100))
    ref_logp = float(mix.log_prob(mix.sample(400_000, key=jr.key(101))).mean())
    dirs = np.array(jr.normal(jr.key(102), (2, 128)))
    dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
    floor = sliced_w2(mix.sample(n, key=jr.key(103)), ref, dirs)
    print(f"n = {n}; SW2 floor (exact vs exact) = {floor:.4f}")

    configs = [
        ("VE", sf.VESDE(sigma_min=0.01, sigma_max=20.0), "sde"),
        ("VE", sf.VESDE(sigma_min=0.01, sigma_max=20.0), "ode"),
        ("VP", sf.VPSDE(), "sde"),
    ]
    rows = []
    for sde_name, sde, method in configs:
        model = mix.noised(sde)  # the exact score
        y0 = sde.prior_sample((n, 2), key=jr.key(0))
        solve_fn = (
            sf.solve.solve_reverse_sde if method == "sde" else sf.solve.solve_probability_flow
        )
        # One key for the Brownian path, one for the corrector noise, split as before.
        k_path, k_corr = jr.split(jr.key(1))
        pc_solver = sf.solve.PredictorCorrector(
            dfx.Euler(), sf.solve.LangevinCorrector(snr=0.16, num_steps=1), key=k_corr
        )
        pc_kw = dict(key=k_path) if method == "sde" else {}
        for half in budgets:
            nfe = 2 * half + 1
            pc, pc_c, pc_r = timed(
                solve_fn,
                sde,
                model,
                y0,
                solver=pc_solver,
                grid=sf.solve.UniformGrid(half),
                **pc_kw,
            )
            assert int(pc.nfe) == nfe
            kw = dict(key=jr.key(1)) if method == "sde" else {}
            p, p_c, p_r = timed(
                solve_fn,
                sde,
                model,
                y0,
                solver=dfx.Euler(),
                grid=sf.solve.UniformGrid(2 * half),
                **kw,
            )
            assert int(p.nfe) == nfe
            for name, res, comp, run in [
                ("PC (Euler + Langevin)", pc, pc_c, pc_r),
                ("predictor alone (Euler)", p, p_c, p_r),
            ]:
                row = dict(
                    sde=sde_name,
                    predictor=method,
                    sampler=name,
                    nfe=nfe,
                    compile_s=round(comp, 2),
                    run_ms=round(1e3 * run, 1),
                    **errors(mix, res.samples, ref, ref_logp, dirs),
                )
                rows.append(row)
                print(
                    f"{sde_name} {method} {name:>24} NFE {nfe:4d}  logp gap "
                    f"{row['logp_gap']:.4f}  SW2 {row['sw2']:.4f}  TV {row['tv']:.4f}  "
                    f"compile {comp:.2f}s run {1e3 * run:.1f}ms",
                    flush=True,
                )

    out = out_dir / "predictor_corrector.csv"
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)

    print(
        "\n| SDE | predictor | NFE | logp gap PC | logp gap alone | SW2 PC | SW2 alone "
        "| TV PC | TV alone | run PC / alone |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for i in range(0, len(rows), 2):
        a, b = rows[i], rows[i + 1]
        print(
            f"| {a['sde']} | {'reverse SDE' if a['predictor'] == 'sde' else 'prob. flow'} "
            f"| {a['nfe']} | {a['logp_gap']:.4f} | {b['logp_gap']:.4f} | {a['sw2']:.4f} "
            f"| {b['sw2']:.4f} | {a['tv']:.4f} | {b['tv']:.4f} | {a['run_ms'] / b['run_ms']:.2f} |"
        )

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, len(configs), figsize=(4.5 * len(configs), 3.5))
    for ax, (sde_name, _, method) in zip(axes, configs):
        for name, style in [("PC (Euler + Langevin)", "o-"), ("predictor alone (Euler)", "s--")]:
            sel = [
                r
                for r in rows
                if r["sde"] == sde_name and r["predictor"] == method and r["sampler"] == name
            ]
            ax.loglog([r["nfe"] for r in sel], [r["sw2"] for r in sel], style, label=name)
        ax.axhline(floor, color="grey", lw=0.8, label="exact vs exact")
        ax.set(title=f"{sde_name}, {method}", xlabel="NFE", ylabel="sliced W2")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "predictor_corrector.png", dpi=120)


if __name__ == "__main__":
    main()
