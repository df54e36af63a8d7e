"""GANs on the ring of 8 and the 5 x 5 grid of 25 Gaussians, and on the digits.

    python benchmarks/gans.py toy [--seeds 5] [--steps 3000]   # modes, quality, MMD per loss
    python benchmarks/gans.py digits [--steps 3000]            # FD / KID / precision / recall

`toy` trains `scoreflow.models.GAN` (MLP generator and discriminator, width 128, depth 3,
latent 8) with `scoreflow.train.fit`'s alternating mode for each variant and seed on the
two mixtures of the GAN literature (Metz et al. 2017; Srivastava et al. 2017): the grid
of 25 modes at spacing 1 and the ring of 8 modes of radius 2, both with standard
deviation 0.05 of the spacing between neighbouring modes. Scored on 2000 samples of the
EMA generator: modes captured (`metrics.mode_coverage`, a mode counts with one sample
within 3 standard deviations), the share of samples within 3 standard deviations of a
mode, and the unbiased MMD^2 (`metrics.mmd2`, Gaussian kernel, median bandwidth) against
2000 exact samples of the mixture. Writes `gans_toy.json` and `gans_toy.png` (samples of
seed 0 for every variant: mode collapse, where it happens, is visible there).

`digits` trains a DCGAN-style GAN (`nn.DCGANGenerator` / `nn.DCGANDiscriminator`,
width 32; `--loss`, `--spectral-norm`) on the digits training split at its bin centres
in [-1, 1] and scores its EMA generator with `scoreflow.evaluation.evaluate_digits`
(no likelihood; FD-digits, KID, IS, precision / recall, density / coverage). Writes
`gans_digits.json` and
`digits_eval_gan.png`.
"""

import argparse
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

from scoreflow import analytic, data, evaluation, metrics, models, nn, train

HERE = pathlib.Path(__file__).resolve().parent


def grid_mixture(dtype=jnp.float32):
    side = np.arange(5) - 2.0
    means = np.stack(np.meshgrid(side, side), -1).reshape(-1, 2)
    std = 0.05 * 1.0
    return analytic.GaussianMixture(
        jnp.full(25, 1 / 25, dtype), jnp.asarray(means, dtype), jnp.full((25, 2), std**2, dtype)
    )


def ring_mixture(dtype=jnp.float32):
    ang = 2 * np.pi * np.arange(8) / 8
    means = 2.0 * np.stack([np.cos(ang), np.sin(ang)], 1)
    spacing = 2 * 2.0 * np.sin(np.pi / 8)  # chord between neighbouring modes
    std = 0.05 * spacing
    return analytic.GaussianMixture(
        jnp.full(8, 1 / 8, dtype), jnp.asarray(means, dtype), jnp.full((8, 2), std**2, dtype)
    )


DATASETS = {"grid": grid_mixture, "ring": ring_mixture}
# (loss, options, spectral norm): the variants of the tutorial.
VARIANTS = {
    "non_saturating": ("non_saturating", {}, False),
    "non_saturating_r1": ("non_saturating", {"r1": 1.0}, False),
    "hinge_sn": ("hinge", {}, True),
    "wgan_gp": ("wasserstein", {"gradient_penalty": 0.1, "n_critic": 5}, False),
}


def make_gan(variant, key):
    loss, options, sn = VARIANTS[variant]
    k1, k2 = jr.split(key)
    g = nn.MLPGenerator(8, (2,), width=128, depth=3, key=k1)
    d = nn.MLPDiscriminator((2,), width=128, depth=3, spectral_norm=sn, key=k2)
    return models.GAN(g, d, event_shape=(2,), latent_dim=8, loss=loss, **options)


def toy(seeds, steps, variants, datasets):
    rows = []
    figure = {}
    for name in datasets:
        mix = DATASETS[name]()
        x = mix.sample(20_000, key=jr.key(100))
        exact = mix.sample(2000, key=jr.key(101))
        for variant in variants:
            for seed in range(seeds):
                t0 = time.perf_counter()
                try:
                    res = train.fit(
                        make_gan(variant, jr.key(seed)),
                        x,
                        num_steps=steps,
                        batch_size=256,
                        optimizer=optax.adam(1e-3, b1=0.5, b2=0.9),
                        ema_decay=0.99,
                        progress=False,
                        key=jr.key(1000 + seed),
                    )
                except train.TrainingDiverged as e:
                    rows.append(dict(dataset=name, variant=variant, seed=seed, diverged=str(e)))
                    continue
                seconds = time.perf_counter() - t0
                s = res.ema_model.sample(2000, key=jr.key(2000 + seed))
                cov = metrics.mode_coverage(s, mix)
                mmd = float(metrics.mmd2(s, exact))
                row = dict(
                    dataset=name,
                    variant=variant,
                    seed=seed,
                    modes=int(cov.modes_captured),
                    num_modes=cov.num_modes,
                    high_quality=float(cov.high_quality),
                    kl_modes=float(cov.kl_modes),
                    mmd2=mmd,
                    train_seconds=seconds,
                )
                print(json.dumps(row), flush=True)
                rows.append(row)
                if seed == 0:
                    figure[(name, variant)] = (np.asarray(x[:2000]), np.asarray(s), row)
    (HERE / "gans_toy.json").write_text(json.dumps(rows, indent=1))
    _plot(figure, datasets, variants)
    _summary(rows)


def _plot(figure, datasets, variants):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(datasets), len(variants), figsize=(3 * len(variants), 3 * len(datasets)), squeeze=False
    )
    for i, name in enumerate(datasets):
        for j, variant in enumerate(variants):
            ax = axes[i, j]
            if (name, variant) not in figure:
                ax.set_title(f"{name} {variant}: diverged", fontsize=8)
                continue
            x, s, row = figure[(name, variant)]
            ax.scatter(x[:, 0], x[:, 1], s=1, c="0.8")
            ax.scatter(s[:, 0], s[:, 1], s=1)
            ax.set_title(
                f"{name}, {variant}\n{row['modes']}/{row['num_modes']} modes, "
                f"{row['high_quality']:.0%} in 3 sd",
                fontsize=8,
            )
            ax.set_xlim(-3, 3)
            ax.set_ylim(-3, 3)
    fig.tight_layout()
    fig.savefig(HERE / "gans_toy.png", dpi=100)


def _summary(rows):
    print(
        "| data | variant | runs | diverged | modes (mean ± sd) | within 3 sd | MMD² ×10³ "
        "| train s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    keys = sorted({(r["dataset"], r["variant"]) for r in rows})
    for d, v in keys:
        ok = [r for r in rows if r["dataset"] == d and r["variant"] == v and "modes" in r]
        bad = [r for r in rows if r["dataset"] == d and r["variant"] == v and "diverged" in r]
        if not ok:
            print(f"| {d} | {v} | {len(bad)} | {len(bad)} | — | — | — | — |")
            continue
        m = np.array([r["modes"] for r in ok])
        hq = np.array([r["high_quality"] for r in ok])
        mmd = 1e3 * np.array([r["mmd2"] for r in ok])
        t = np.mean([r["train_seconds"] for r in ok])
        print(
            f"| {d} | {v} | {len(ok) + len(bad)} | {len(bad)} | {m.mean():.1f} ± {m.std():.1f} "
            f"of {ok[0]['num_modes']} | {hq.mean():.2f} ± {hq.std():.2f} | "
            f"{mmd.mean():.2f} ± {mmd.std():.2f} | {t:.0f} |"
        )


def digits(steps, width, num_samples, loss="non_saturating", spectral_norm=False, tag=""):
    x = data.digits("train", dtype=jnp.float32)
    k1, k2 = jr.split(jr.key(0))
    gen = nn.DCGANGenerator(32, (1, 8, 8), width=width, key=k1)
    disc = nn.DCGANDiscriminator((1, 8, 8), width=width, spectral_norm=spectral_norm, key=k2)
    gan = models.GAN(gen, disc, event_shape=(1, 8, 8), latent_dim=32, loss=loss)
    t0 = time.perf_counter()
    res = train.fit(
        gan,
        x,
        num_steps=steps,
        batch_size=64,
        optimizer=optax.adam(2e-4, b1=0.5, b2=0.999),
        ema_decay=0.999,
        progress=False,
        key=jr.key(1),
    )
    seconds = time.perf_counter() - t0
    report = evaluation.evaluate_digits(
        res.ema_model,
        name=f"GAN (DCGAN, {loss}{' + SN' if spectral_norm else ''}, {steps} steps)",
        num_samples=num_samples,
        train_seconds=seconds,
        png=str(HERE / f"digits_eval_gan{tag}.png"),
        key=jr.key(2),
    )
    (HERE / f"gans_digits{tag}.json").write_text(json.dumps(report.asdict(), indent=1))
    print(evaluation.digits_table([report]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("toy")
    t.add_argument("--seeds", type=int, default=5)
    t.add_argument("--steps", type=int, default=3000)
    t.add_argument("--variants", nargs="+", default=list(VARIANTS))
    t.add_argument("--datasets", nargs="+", default=list(DATASETS))
    g = sub.add_parser("digits")
    g.add_argument("--steps", type=int, default=3000)
    g.add_argument("--width", type=int, default=32)
    g.add_argument("--num-samples", type=int, default=1000)
    g.add_argument("--loss", default="non_saturating")
    g.add_argument("--spectral-norm", action="store_true")
    g.add_argument("--tag", default="", help="suffix of the output files")
    a = p.parse_args(argv)
    if a.cmd == "toy":
        toy(a.seeds, a.steps, a.variants, a.datasets)
    else:
        digits(a.steps, a.width, a.num_samples, a.loss, a.spectral_norm, a.tag)


if __name__ == "__main__":
    jax.config.update("jax_platforms", "cpu")
    main()
