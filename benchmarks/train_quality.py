"""Quality of trained models: ScoreSDE (VP, VE), DDPM and NCSN on case A and on 8x8 digits.

Case A (8 Gaussians on a ring, exact density): KL(data || model) = E_data[log p_data -
log p_model] with log p_model through the probability-flow likelihood (exact trace), on
fresh test points; for every model also the sample quality with its own sampler (mean
log p_data of the samples against that of exact samples, and the largest error in mass
per mixture component). NCSN has no likelihood: only its samples are scored.
Digits (scikit-learn's 8x8, fixed split): test bits/dim through the probability-flow
likelihood with uniform dequantisation, and a grid of samples per model.

    python benchmarks/train_quality.py [--ring-steps 8000] [--digits-steps 3000] [--quick]

Writes train_quality{suffix}.json and PNGs next to this file (or in `--out-dir`).
"""

import argparse
import json
import os
import time

import diffrax as dfx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import scoreflow as sf
from scoreflow import data, losses, metrics, models, nn, train

HERE = os.path.dirname(os.path.abspath(__file__))
F32 = jnp.float32


def fit(model, x, steps, batch, lr, key):
    t0 = time.perf_counter()
    res = train.fit(
        model,
        x,
        num_steps=steps,
        batch_size=batch,
        optimizer=train.default_optimizer(lr, num_steps=steps, warmup_steps=200),
        ema_decay=0.999,
        # Never a longer chunk than the run: fit computes a whole chunk (its steps past
        # the end are no-ops), which made --quick's 50 digits steps cost 250.
        steps_per_chunk=min(250, steps),
        progress=False,
        key=key,
    )
    return res.ema_model, time.perf_counter() - t0, float(res.losses[-200:].mean())


def sample_quality(mix, x, key):
    exact = mix.sample(x.shape[0], key=key)
    comp = (
        np.bincount(np.asarray(jnp.argmax(mix.component_log_probs(x), -1)), minlength=8)
        / x.shape[0]
    )
    return {
        "mean_log_p_samples": float(mix.log_prob(x).mean()),
        "mean_log_p_exact": float(mix.log_prob(exact).mean()),
        "max_mass_error": float(np.max(np.abs(comp - 1 / 8))),
    }


def kl(mix, log_prob_fn, x_test):
    t0 = time.perf_counter()
    lp = jnp.concatenate(
        [log_prob_fn(c) for c in jnp.split(x_test, max(1, x_test.shape[0] // 500))]
    )
    gap = np.asarray(mix.log_prob(x_test) - lp, np.float64)
    return {
        "kl": float(gap.mean()),
        "kl_se": float(gap.std(ddof=1) / np.sqrt(gap.size)),
        "loglik_s": time.perf_counter() - t0,
    }


def ring(args):
    mix = data.ring_mixture(F32)
    x = mix.sample(50000, key=jr.key(0))
    x_test = mix.sample(args.num_test, key=jr.key(1))
    out, pics = {}, {}

    def mlp(log_noise=False):
        # Conditioning on a log noise level (range ~10) wants lower Fourier frequencies.
        scale = 1.0 if log_noise else 16.0
        return nn.TimeMLP((2,), width=args.width, depth=3, embedding_scale=scale, key=jr.key(2))

    heun = dict(solver=dfx.Heun(), grid=sf.solve.KarrasGrid(64), dtype=F32)
    vp = sf.VPSDE(t_min=1e-5)
    # VE: the same smallest noise level as VP's floor (sigma ~ 1e-3), and EDM's
    # preconditioning (Karras et al. 2022): unit-variance network input and target at every
    # noise level, conditioned on c_noise = ln(sigma)/4, with EDM's loss weighting.
    ve = sf.VESDE(sigma_min=0.01, sigma_max=20.0)
    ve = sf.VESDE(
        sigma_min=0.01,
        sigma_max=20.0,
        t_min=float(ve.t_from_log_snr(-jnp.log(vp.marginal(vp.t_min)[1]))),
    )
    sigma_data = float(jnp.std(x))

    for name, steps in (("ScoreSDE VP", args.ring_steps), ("ScoreSDE VE", args.ve_steps)):
        if name.split()[-1].lower() not in args.models:
            continue
        if name.endswith("VP"):
            m = models.ScoreSDE(vp, mlp(), parameterisation="eps", event_shape=(2,))
        else:
            net = nn.TimeMLP((2,), width=args.width, depth=3, embedding_scale=4.0, key=jr.key(2))
            m = models.ScoreSDE(
                ve,
                nn.EDMPrecond(ve, net, sigma_data=sigma_data),
                parameterisation="x0",
                event_shape=(2,),
                weighting=losses.EDMWeighting(sigma_data),
            )
        m, train_s, loss = fit(m, x, steps, args.batch, args.lr, jr.key(3))
        s = m.sample(args.num_samples, key=jr.key(4), **heun)
        row = {
            "train_s": train_s,
            "steps": steps,
            "final_loss": loss,
            "sampler": "PF-ODE Heun, Karras 64 steps",
        }
        row.update(kl(mix, lambda c: m.log_prob(c, rtol=1e-5, atol=1e-5), x_test))
        row.update(sample_quality(mix, s, jr.key(5)))
        out[name], pics[name] = row, s
        print(name, row, flush=True)

    if "ddpm" in args.models:
        ring_ddpm(args, mix, x, x_test, mlp, out, pics)
    if "ncsn" in args.models:
        ring_ncsn(args, mix, x, mlp, out, pics)
    _plot_ring(mix, pics, os.path.join(args.out_dir, f"train_quality_ring{args.suffix}.png"))
    return out


def ring_ddpm(args, mix, x, x_test, mlp, out, pics):
    ddpm = models.DDPM(mlp(), event_shape=(2,), betas=sf.sde.linear_betas(1000))
    ddpm, train_s, loss = fit(ddpm, x, args.ring_steps, args.batch, args.lr, jr.key(3))
    s = ddpm.sample(args.num_samples, method="sde", key=jr.key(4), dtype=F32)
    row = {"train_s": train_s, "final_loss": loss, "sampler": "ancestral, 1000 steps"}
    # The exact likelihood of DDPM's probability-flow ODE (its embedded DiscreteVPSDE).
    row.update(kl(mix, lambda c: ddpm.log_prob(c, rtol=1e-5, atol=1e-5), x_test))
    row.update(sample_quality(mix, s, jr.key(5)))
    out["DDPM"], pics["DDPM"] = row, s
    print("DDPM", row, flush=True)


def ring_ncsn(args, mix, x, mlp, out, pics):
    ncsn = models.NCSN(
        nn.ScaledScore(mlp(log_noise=True)),
        event_shape=(2,),
        sigmas=models.geometric_sigmas(10.0, 0.01, 10),
    )
    ncsn, train_s, loss = fit(ncsn, x, args.ring_steps, args.batch, args.lr, jr.key(3))
    s = ncsn.sample(args.num_samples, steps_per_level=100, step_size=5e-5, dtype=F32, key=jr.key(4))
    row = {
        "train_s": train_s,
        "final_loss": loss,
        "sampler": "annealed Langevin, 10 x 100 steps, eps 5e-5, final denoise",
    }
    row.update(sample_quality(mix, s, jr.key(5)))
    out["NCSN"], pics["NCSN"] = row, s
    print("NCSN", row, flush=True)


def digits(args):
    xtr = data.digits("train", dtype=F32)
    # The integer pixels of the test images: `metrics.bits_per_dim` dequantises them.
    xte_raw = data.digits_raw("test")[: args.num_test_digits]
    out, grids = {}, {}
    num_grid = 64
    event = (1, 8, 8)

    def unet(log_noise=False):
        return nn.UNet(
            (1, 8, 8),
            base_channels=args.base,
            channel_mults=(1, 2),
            embedding_scale=1.0 if log_noise else 16.0,
            key=jr.key(6),
        )

    def train(model):
        return fit(model, xtr, args.digits_steps, args.digits_batch, 2e-3, jr.key(7))

    def bpd(model):
        # Uniform dequantisation of the test images' integer pixels into [-1, 1), then
        # the probability-flow likelihood with K Hutchinson probes held fixed for the
        # solve. bits_per_dim splits jr.key(8) into (dequantisation, probes) keys, as
        # this script did, and draws the same uniforms.
        def log_prob(y, *, key):
            return model.log_prob(
                y, rtol=1e-4, atol=1e-4, trace=sf.solve.Hutchinson(args.probes), key=key
            )

        t0 = time.perf_counter()
        res = metrics.bits_per_dim(
            log_prob,
            xte_raw,
            levels=data.DIGITS_LEVELS,
            data_range=(-1.0, 1.0),
            dtype=F32,
            key=jr.key(8),
        )
        b = np.asarray(res.bits_per_dim)
        return {
            "test_bpd": float(b.mean()),
            "bpd_se": float(b.std(ddof=1) / np.sqrt(b.size)),
            "loglik_s": time.perf_counter() - t0,
            "num_test": int(xte_raw.shape[0]),
            "hutchinson_probes": args.probes,
        }

    def timed(f):
        t0 = time.perf_counter()
        x = jax.block_until_ready(f())
        return x, time.perf_counter() - t0

    common = {"steps": args.digits_steps, "batch": args.digits_batch, "base": args.base}
    png = os.path.join(args.out_dir, f"train_quality_digits{args.suffix}.png")

    def done(name, row):
        # Written after every model, so that a run cut short keeps what it measured.
        out[name] = row
        print("digits", name, row, flush=True)
        with open(os.path.join(args.out_dir, f"train_quality_digits{args.suffix}.json"), "w") as f:
            json.dump(out, f, indent=1)
        _plot_grids({**grids, "data (test)": data.digits("test", dtype=F32)[:64]}, png)

    if "vp" in args.digit_models:
        m = models.ScoreSDE(sf.VPSDE(t_min=1e-5), unet(), parameterisation="eps", event_shape=event)
        m, train_s, loss = train(m)
        row = {**common, "train_s": train_s, "final_loss": loss}
        row.update(bpd(m))
        grids["ScoreSDE VP (PF-ODE)"], row["sample_s"] = timed(
            lambda: m.sample(
                num_grid,
                key=jr.key(9),
                solver=dfx.Heun(),
                grid=sf.solve.KarrasGrid(32),
                dtype=F32,
            )
        )
        row["sampler"] = "PF-ODE Heun, Karras 32 steps"
        done("ScoreSDE VP", row)

    if "ddpm" in args.digit_models:
        ddpm = models.DDPM(unet(), event_shape=event, betas=sf.sde.linear_betas(1000))
        ddpm, train_s, loss = train(ddpm)
        row = {**common, "train_s": train_s, "final_loss": loss}
        row.update(bpd(ddpm))  # its probability-flow likelihood
        grids["DDPM (ancestral)"], row["sample_s"] = timed(
            lambda: ddpm.sample(num_grid, method="sde", key=jr.key(9), dtype=F32)
        )
        row["sampler"] = "ancestral, 1000 steps"
        done("DDPM", row)

    if "ncsn" in args.digit_models:
        ncsn = models.NCSN(
            nn.ScaledScore(unet(log_noise=True)),
            event_shape=event,
            sigmas=models.geometric_sigmas(5.0, 0.01, 10),
        )
        ncsn, train_s, loss = train(ncsn)
        row = {**common, "train_s": train_s, "final_loss": loss}
        grids["NCSN (annealed Langevin)"], row["sample_s"] = timed(
            lambda: ncsn.sample(
                num_grid, steps_per_level=100, step_size=5e-6, dtype=F32, key=jr.key(9)
            )
        )
        row["sampler"] = "annealed Langevin, 10 x 100 steps, eps 5e-6, final denoise"
        done("NCSN", row)
    return out


def _plot_ring(mix, pics, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pics = {"data": mix.sample(next(iter(pics.values())).shape[0], key=jr.key(11)), **pics}
    fig, axes = plt.subplots(1, len(pics), figsize=(3.2 * len(pics), 3.3), sharex=True, sharey=True)
    for ax, (name, x) in zip(axes, pics.items()):
        ax.scatter(*np.asarray(x).T, s=1, alpha=0.3)
        ax.set_title(name, fontsize=9)
        ax.set_aspect("equal")
        ax.set_xlim(-6.5, 6.5)
        ax.set_ylim(-6.5, 6.5)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_grids(grids, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(grids), figsize=(3.2 * len(grids), 3.4), squeeze=False)
    for ax, (name, x) in zip(axes[0], grids.items()):
        x = (
            np.clip(np.asarray(x)[:64, 0], -1, 1)
            .reshape(8, 8, 8, 8)
            .transpose(0, 2, 1, 3)
            .reshape(64, 64)
        )
        ax.imshow(x, cmap="gray", vmin=-1, vmax=1)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ring-steps", type=int, default=8000)
    p.add_argument("--ve-steps", type=int, default=None, help="VE steps (default --ring-steps)")
    p.add_argument("--digits-steps", type=int, default=3000)
    p.add_argument("--digits-batch", type=int, default=128)
    p.add_argument("--probes", type=int, default=1, help="Hutchinson probes K (digits)")
    p.add_argument("--digit-models", default="vp,ddpm,ncsn", help="digits models to run")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--base", type=int, default=32)
    p.add_argument("--num-test", type=int, default=2000)
    p.add_argument("--num-test-digits", type=int, default=128)
    p.add_argument("--num-samples", type=int, default=4000)
    p.add_argument("--only", choices=["ring", "digits"], default=None)
    p.add_argument("--models", default="vp,ve,ddpm,ncsn", help="ring models to run")
    p.add_argument("--suffix", default="", help="suffix of the output files")
    p.add_argument("--out-dir", default=HERE, help="where the JSON files and PNGs are written")
    p.add_argument("--quick", action="store_true", help="tiny sizes, to check the script runs")
    a = p.parse_args()
    if a.quick:
        a.ring_steps, a.digits_steps, a.num_test, a.num_test_digits, a.num_samples = (
            100,
            50,
            100,
            8,
            200,
        )
    a.ve_steps = a.ring_steps if a.ve_steps is None else a.ve_steps
    a.models = a.models.split(",")
    a.digit_models = a.digit_models.split(",")
    os.makedirs(a.out_dir, exist_ok=True)
    results = {"args": vars(a), "backend": jax.default_backend()}
    if a.only in (None, "ring"):
        results["ring"] = ring(a)
    if a.only in (None, "digits"):
        results["digits"] = digits(a)
    suffix = "_quick" if a.quick else a.suffix
    with open(os.path.join(a.out_dir, f"train_quality{suffix}.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
