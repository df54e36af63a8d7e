"""Energy-based models on the ring of eight Gaussians and on the digits, by one protocol.

Each EBM is `scoreflow.models.EBM` with an `nn.EnergyMLP` energy, trained by
`scoreflow.train.fit` with one of five objectives: persistent CD with a replay buffer
(`pcd`, Du & Mordatch 2019), CD-k from the data (`cd`), noise-contrastive estimation
against a Gaussian fitted to the data (`nce`), denoising score matching at one noise
level (`dsm`) and sliced score matching (`ssm`) of the energy's score.

    python benchmarks/ebm.py design                 # settings, on two moons (not reported cases)
    python benchmarks/ebm.py ring [--seeds 5]       # KL, MMD, modes, divergences over seeds
    python benchmarks/ebm.py digits                 # AIS bits/dim, FD/KID, grids

`ring` trains every objective from 5 seeds on the ring of eight Gaussians
(`data.ring_mixture`, radius 4, std 0.5), counts the runs that diverged
(`train.TrainingDiverged`, or non-finite samples), and scores the rest with
`evaluation.evaluate_2d`: KL(data || model) with the model normalised by annealed
importance sampling (`EBM.log_normaliser`), whose log Z is checked against quadrature on a
fine grid (exact to the grid's error in 2-d); MMD and mode coverage of Langevin samples.
An EM mixture (`models.fit_gmm`, 8 components) is the classical reference row.
`digits` trains `pcd`, `nce` and `dsm` EBMs on the dequantised digits and scores them with
`evaluation.evaluate_digits`: bits/dim from AIS (± the standard error of images and of
log Z together) and the sample metrics of their Langevin samples.
"""

import argparse
import json
import math
import pathlib
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import scoreflow as sf
from scoreflow import data, evaluation, metrics, models, nn, solve, train

jax.config.update("jax_enable_x64", True)
HERE = pathlib.Path(__file__).resolve().parent

# Chosen on the design set (two moons scaled to the ring's extent; `design`), then fixed.
RING = dict(low=-6.0, high=6.0, scale=6.0, width=64, depth=2, steps=1500, batch=128, lr=2e-3)
RING_CD = dict(num_steps=20, step_size=2e-2)
RING_SAMPLE = dict(method="mala", num_steps=2000, step_size=2e-2)
RING_AIS = dict(num_chains=512, betas=1000, kernel=solve.MALAKernel(step_size=2e-2, num_steps=2))


def trainings(name, x, cd=RING_CD, sigma=0.1):
    # sigma 0.1 and the chains' step 2e-2: the design set's choices (`ebm_design.json`).
    if name == "pcd":
        return models.ContrastiveDivergence(**cd, buffer_size=10_000)
    if name == "pcd-unregularised":
        return models.ContrastiveDivergence(**cd, buffer_size=10_000, energy_penalty=0.0)
    if name == "cd":
        return models.ContrastiveDivergence(**cd, persistent=False)
    if name == "nce":
        return models.NoiseContrastive(models.gaussian_noise(x), ratio=4.0)
    if name == "dsm":
        return models.EnergyScoreMatching("denoising", sigma=sigma)
    if name == "ssm":
        return models.EnergyScoreMatching("sliced", num_slices=4)
    raise ValueError(name)


METHODS = ("pcd", "cd", "nce", "dsm", "ssm")


def build_2d(name, x, seed, cfg=RING, cd=RING_CD):
    energy = nn.EnergyMLP(
        (2,), cfg["width"], cfg["depth"], scale=cfg["scale"], key=jr.key(100 + seed)
    )
    return models.EBM(
        energy,
        event_shape=(2,),
        training=trainings(name, x, cd),
        low=cfg["low"],
        high=cfg["high"],
    )


def fit_2d(model, x, seed, cfg=RING, clip=True):
    # The unregularised variant also trains without gradient clipping, at 5x the rate.
    lr, clip_norm = (cfg["lr"], 1.0) if clip else (5 * cfg["lr"], None)
    return train.fit(
        model,
        x,
        num_steps=cfg["steps"],
        batch_size=cfg["batch"],
        optimizer=train.default_optimizer(lr, num_steps=cfg["steps"], clip_norm=clip_norm),
        progress=False,
        key=jr.key(seed),
    )


def quadrature_log_z(model, lo=-20.0, hi=20.0, n=2001):
    g = np.linspace(lo, hi, n)
    grid = jnp.asarray(np.stack(np.meshgrid(g, g), -1).reshape(-1, 2))
    lp = eqx.filter_jit(lambda m, y: m.unnormalised_log_prob(y))(model, grid)
    return float(jax.nn.logsumexp(lp) + 2 * math.log(g[1] - g[0]))


def cmd_design(args):
    # Two moons, scaled to the ring's extent: the settings are chosen here.
    x = sf.data.toy_sample("two_moons", 20_000, key=jr.key(0)) * 2.0
    ref = sf.data.toy_sample("two_moons", 4000, key=jr.key(1)) * 2.0
    cfg = dict(RING, steps=args.steps)
    rows = []
    for step in (1e-3, 5e-3, 2e-2):
        cd = dict(num_steps=20, step_size=step)
        for name in ("pcd",):
            t0 = time.perf_counter()
            try:
                res = fit_2d(build_2d(name, x, 0, cfg, cd), x, 0, cfg)
            except train.TrainingDiverged as e:
                rows.append(dict(name=name, step=step, diverged=str(e)[:60]))
                continue
            s = res.ema_model.sample(
                2000, method="mala", num_steps=2000, step_size=step, key=jr.key(2)
            )
            s, _ = metrics.drop_nonfinite(s)
            rows.append(
                dict(
                    name=name,
                    step=step,
                    mmd2=float(metrics.mmd2(s, ref[:2000])),
                    seconds=time.perf_counter() - t0,
                )
            )
            print(rows[-1], flush=True)
    for sigma in (0.05, 0.1, 0.2):
        model = build_2d("dsm", x, 0, cfg)
        model = models.EBM(
            model.energy,
            event_shape=(2,),
            training=models.EnergyScoreMatching("denoising", sigma=sigma),
            low=cfg["low"],
            high=cfg["high"],
        )
        res = fit_2d(model, x, 0, cfg)
        s = res.ema_model.sample(2000, **RING_SAMPLE, key=jr.key(2))
        s, _ = metrics.drop_nonfinite(s)
        rows.append(dict(name="dsm", sigma=sigma, mmd2=float(metrics.mmd2(s, ref[:2000]))))
        print(rows[-1], flush=True)
    (HERE / "ebm_design.json").write_text(json.dumps(rows, indent=1))


def cmd_ring(args):
    ring = data.ring_mixture()
    x = ring.sample(20_000, key=jr.key(0))
    cfg = dict(RING, steps=args.steps)
    out = []
    for name in args.methods:
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            row = dict(method=name, seed=seed)
            try:
                res = fit_2d(
                    build_2d(name, x, seed, cfg), x, seed, cfg, clip=name != "pcd-unregularised"
                )
            except train.TrainingDiverged as e:
                row.update(diverged=True, step=e.step, train_seconds=time.perf_counter() - t0)
                out.append(row)
                print(row, flush=True)
                continue
            row["train_seconds"] = time.perf_counter() - t0
            model = res.ema_model
            quad = quadrature_log_z(model)
            z = model.log_normaliser(**RING_AIS, key=jr.key(10 + seed))
            rep = evaluation.evaluate_2d(
                model,
                ring,
                name=name,
                num_samples=2000,
                num_eval=5000,
                sample_options=RING_SAMPLE,
                normaliser_options=RING_AIS,
                key=jr.key(20 + seed),
            )
            row.update(
                diverged=rep.num_nonfinite > 0,
                log_z_quadrature=quad,
                log_z_ais=float(z.log_z),
                log_z_ais_se=float(z.stderr),
                log_z_ais_ess=float(z.ess),
                **{k: v for k, v in rep.asdict().items() if k != "name"},
            )
            # KL with the quadrature normaliser: the check on AIS's in the row above.
            x_eval = ring.sample(5000, key=jr.key(30 + seed))
            lq = model.unnormalised_log_prob(x_eval) - quad
            row["kl_quadrature"] = float(metrics.kl_divergence(ring.log_prob(x_eval), lq).value)
            out.append(row)
            print(
                {
                    k: row[k]
                    for k in (
                        "method",
                        "seed",
                        "kl",
                        "kl_quadrature",
                        "log_z_ais",
                        "log_z_quadrature",
                        "mmd2",
                        "modes_captured",
                        "train_seconds",
                    )
                },
                flush=True,
            )
            (HERE / ("ebm_ring.json" if args.out is None else args.out)).write_text(
                json.dumps(out, indent=1)
            )
    # The EM reference.
    for seed in range(0 if args.no_em else args.seeds):
        t0 = time.perf_counter()
        em = models.fit_gmm(x, 8, key=jr.key(seed))
        rep = evaluation.evaluate_2d(
            em.model, ring, name="em", num_samples=2000, num_eval=5000, key=jr.key(20 + seed)
        )
        out.append(
            dict(
                method="em (8 components)",
                seed=seed,
                diverged=False,
                train_seconds=time.perf_counter() - t0,
                **{k: v for k, v in rep.asdict().items() if k != "name"},
            )
        )
    path = HERE / ("ebm_ring.json" if args.out is None else args.out)
    path.write_text(json.dumps(out, indent=1))
    print(ring_table(out))


def ring_table(rows):
    head = (
        "| objective | diverged (of seeds) | KL (AIS) nats | KL (quadrature) | "
        "abs(log Z AIS - quadrature) | MMD² ×10³ | modes of 8 | within 3 sd | train s |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for m in methods:
        rs = [r for r in rows if r["method"] == m]
        ok = [r for r in rs if not r.get("diverged")]

        def ms(key, scale=1.0, fmt=".3f", rows=ok):
            v = [scale * r[key] for r in rows if r.get(key) is not None]
            if not v:
                return "—"
            return f"{np.mean(v):{fmt}} ± {np.std(v):{fmt}}" if len(v) > 1 else f"{v[0]:{fmt}}"

        dz = [abs(r["log_z_ais"] - r["log_z_quadrature"]) for r in ok if "log_z_ais" in r]
        lines.append(
            f"| {m} | {len(rs) - len(ok)} of {len(rs)} | {ms('kl')} | {ms('kl_quadrature')} | "
            f"{(f'{max(dz):.3f} (max)' if dz else '—')} | {ms('mmd2', 1e3, '.2f')} | "
            f"{ms('modes_captured', 1, '.1f')} | {ms('high_quality', 1, '.3f')} | "
            f"{ms('train_seconds', 1, '.0f', rs)} |"
        )
    return head + "\n".join(lines) + "\n"


# Digits.
HALF_BIN = 1.0 / data.DIGITS_LEVELS
DIGITS = dict(width=256, depth=2, scale=2.0, steps=3000, batch=128, lr=3e-4)
DIGITS_CD = dict(num_steps=20, step_size=2e-3)
DIGITS_SAMPLE = dict(method="langevin", num_steps=2000, step_size=2e-3)


def digits_draw():
    x = data.digits("train")

    def draw(batch_size, *, key):
        k_idx, k_u = jr.split(key)
        idx = jr.randint(k_idx, (batch_size,), 0, x.shape[0])
        return x[idx] + jr.uniform(k_u, (batch_size, *x.shape[1:]), x.dtype, -HALF_BIN, HALF_BIN)

    return x, draw


def cmd_digits(args):
    x, draw = digits_draw()
    base = models.gaussian_noise(draw(20_000, key=jr.key(5)))
    ais = dict(
        num_chains=args.chains,
        betas=args.betas,
        base=base,
        kernel=solve.MALAKernel(
            step_size=args.ais_step, num_steps=1, base_step_size=args.ais_base_step
        ),
    )
    reports = []
    for name in args.methods:
        energy = nn.EnergyMLP(
            (1, 8, 8), DIGITS["width"], DIGITS["depth"], scale=DIGITS["scale"], key=jr.key(1)
        )
        cd = dict(DIGITS_CD, step_size=args.cd_step)
        training = trainings(name, draw(20_000, key=jr.key(6)), cd, sigma=args.sigma)
        model = models.EBM(energy, event_shape=(1, 8, 8), training=training, low=-1.0, high=1.0)
        tag = name + args.tag
        ckpt = HERE / "digits_runs" / f"ebm_{tag}.eqx"
        t0 = time.perf_counter()
        try:
            res = train.fit(
                model,
                draw,
                num_steps=args.steps,
                batch_size=DIGITS["batch"],
                optimizer=train.default_optimizer(DIGITS["lr"], num_steps=args.steps),
                checkpoint=ckpt,
                checkpoint_every=1000,
                progress=False,
                key=jr.key(2),
            )
        except train.TrainingDiverged as e:
            print(name, "diverged at step", e.step, flush=True)
            continue
        secs = time.perf_counter() - t0
        rep = evaluation.evaluate_digits(
            res.ema_model,
            name=f"EBM ({name}{args.tag})",
            num_samples=1000,
            sample_options=dict(DIGITS_SAMPLE, step_size=args.sample_step),
            normaliser_options=ais,
            train_seconds=secs,
            png=str(HERE / f"digits_eval_ebm_{tag}.png"),
            key=jr.key(3),
        )
        reports.append(rep)
        print(evaluation.digits_table([rep]), flush=True)
    out = HERE / f"ebm_digits{args.tag}.json"
    out.write_text(json.dumps([r.asdict() for r in reports], indent=1))
    print(evaluation.digits_table(reports))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("design")
    d.add_argument("--steps", type=int, default=2000)
    r = sub.add_parser("ring")
    r.add_argument("--seeds", type=int, default=5)
    r.add_argument("--steps", type=int, default=RING["steps"])
    r.add_argument("--methods", nargs="+", default=list(METHODS))
    r.add_argument("--out", default=None, help="JSON file name (default ebm_ring.json)")
    r.add_argument("--no-em", action="store_true")
    g = sub.add_parser("digits")
    g.add_argument("--steps", type=int, default=DIGITS["steps"])
    g.add_argument("--methods", nargs="+", default=["pcd", "nce", "dsm"])
    g.add_argument("--chains", type=int, default=128)
    g.add_argument("--betas", type=int, default=2000)
    g.add_argument("--ais-step", type=float, default=1e-3)
    g.add_argument("--ais-base-step", type=float, default=3e-2)
    g.add_argument("--sigma", type=float, default=0.1)
    g.add_argument("--cd-step", type=float, default=DIGITS_CD["step_size"])
    g.add_argument("--sample-step", type=float, default=DIGITS_SAMPLE["step_size"])
    g.add_argument("--tag", default="", help="suffix of the run's files and row names")
    args = p.parse_args(argv)
    {"design": cmd_design, "ring": cmd_ring, "digits": cmd_digits}[args.cmd](args)


if __name__ == "__main__":
    main()
