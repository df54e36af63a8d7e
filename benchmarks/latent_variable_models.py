"""Latent-variable models on the digits: VAE, IWAE, hierarchical VAE and VDM.

Two measurements (see benchmarks/RESULTS.md, "Latent-variable models (issue 13)"):

    python benchmarks/latent_variable_models.py digits [--steps N] [--k-eval K]
    python benchmarks/latent_variable_models.py binarised [--steps N] [--k-eval K]
    python benchmarks/latent_variable_models.py table      # the binarised rows, paired

`digits`: the 17-level digits by the digits protocol (`scoreflow.evaluation.evaluate_digits`),
with the budget of the digits table (12 000 steps at batch 128, AdamW 1e-3, 500 warm-up
steps then cosine decay, clipping at 1, EMA 0.999; `--steps` reduces it): a VAE with a
discretised-logistic-mixture decoder (trained on the ELBO), the same trained on the IWAE
bound (K = 5), a two-layer top-down hierarchical VAE, and a VDM with a learned schedule.
VAE-family bits/dim are the IWAE-K estimate (`--k-eval`, default 5000), the VDM's its
bound and its probability-flow likelihood (Hutchinson, one probe, rtol = atol = 1e-4).

`binarised`: the digits binarised at level 8 (pixel >= 8 -> 1, one static binarisation of
the raw levels), a Bernoulli decoder, trained with K = 1, 5, 50 and a two-layer model
(IWAE K = 50, Burda et al.'s best architecture), each scored by the IWAE-5000 estimate of
the test NLL in nats (mean over the 359 test images, with its standard error over images).

Rows go to `latent_variable_models_digits.json` and `latent_variable_models_binarised.json`;
sample grids `lvm_digits_<name>.png`.
"""

import argparse
import json
import pathlib
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import scoreflow as sf
from scoreflow import data, evaluation, models, nn, train

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE / "latent_variable_models_{}.json"  # per measurement: digits, binarised
F32 = jnp.float32
EVENT = (1, 8, 8)
BATCH = 128
WIDTH = 512  # `--width` changes it (the reduced runs)


def _record(key, value):
    out = pathlib.Path(str(OUT).format(key.split("/")[0]))
    rows = json.loads(out.read_text()) if out.exists() else {}
    rows[key] = value
    out.write_text(json.dumps(rows, indent=1))


def _fit(model, x, steps, *, optimizer=None, ema=0.999, key=1):
    opt = optimizer or train.default_optimizer(
        1e-3, num_steps=steps, warmup_steps=min(500, steps // 10)
    )
    t0 = time.perf_counter()
    res = train.fit(
        model,
        x,
        num_steps=steps,
        batch_size=BATCH,
        optimizer=opt,
        ema_decay=ema,
        steps_per_chunk=min(500, steps),
        progress=False,
        key=jr.key(key),
    )
    return res, time.perf_counter() - t0


def digits_models(steps):
    head = nn.DiscretisedLogisticMixture(data.DIGITS_LEVELS, 5)
    k = jr.key(0)
    vae = lambda n: models.VAE(EVENT, 32, head=head, width=WIDTH, depth=2, num_samples=n, key=k)
    hvae = models.HierarchicalVAE(
        EVENT,
        (32, 16),
        head=head,
        width=WIDTH,
        depth=1,
        warmup_steps=steps // 10,
        free_bits=0.1,
        key=k,
    )
    net = nn.TimeMLP(EVENT, width=WIDTH, depth=4, embedding_scale=16.0, key=k)
    sde = sf.sde.LearnedVPSDE(-13.3, 5.0, nn.MonotoneMLP(256, key=jr.key(1)))
    vdm = models.VDM(net, event_shape=EVENT, sde=sde, levels=data.DIGITS_LEVELS)
    return {"vae": vae(1), "iwae5": vae(5), "hvae": hvae, "vdm": vdm}


TITLES = {
    "vae": "VAE (DLM decoder, ELBO)",
    "iwae5": "IWAE (K = 5)",
    "hvae": "hierarchical VAE (2 layers, top-down)",
    "vdm": "VDM (learned schedule)",
}


def cmd_digits(args):
    x = data.digits("train")
    for i, (name, model) in enumerate(digits_models(args.steps).items()):
        if args.names and name not in args.names:
            continue
        optimizer = None
        if name == "hvae":
            optimizer = train.skip_large_updates(
                train.default_optimizer(1e-3, num_steps=args.steps, warmup_steps=500), 400.0
            )
        res, seconds = _fit(model, x, args.steps, optimizer=optimizer)
        trained = res.ema_model
        options = {"num_samples": args.k_eval, "chunk_size": 250} if name != "vdm" else {}
        report = evaluation.evaluate_digits(
            trained,
            likelihood="bound",
            name=TITLES[name],
            key=jr.fold_in(jr.key(10), i),
            num_samples=args.num_samples,
            log_prob_options=options,
            train_seconds=seconds,
            sample_options={} if name != "vdm" else {"grid": sf.solve.UniformGrid(256)},
            png=str(HERE / f"lvm_digits_{name}.png"),
        )
        rows = [report.asdict()]
        if name == "vdm":
            pf = evaluation.evaluate_digits(
                trained,
                name="VDM (probability flow)",
                key=jr.fold_in(jr.key(10), i),
                num_samples=args.num_samples,
                likelihood="exact",
                log_prob_options={"rtol": 1e-4, "atol": 1e-4, "trace": sf.solve.Hutchinson(1)},
                sample_options={"grid": sf.solve.UniformGrid(256)},
                train_seconds=seconds,
            )
            rows.append(pf.asdict())
        extra = {
            "steps": args.steps,
            "width": WIDTH,
            "final_loss": float(np.mean(res.losses[-200:])),
        }
        if name == "hvae":
            extra["skipped_updates"] = int(res.state.opt_state.num_skipped)
        _record(f"digits/{name}", {"reports": rows, **extra, "k_eval": args.k_eval})
        for r in rows:
            print(evaluation.digits_table([evaluation.DigitsReport(**r)]), extra, flush=True)


def binarised(split):
    return (np.asarray(data.digits_raw(split)).reshape(-1, 64) >= 8).astype(np.float64)


def cmd_binarised(args):
    x, test = jnp.asarray(binarised("train")), jnp.asarray(binarised("test"))
    head, k = nn.Bernoulli(), jr.key(0)
    cases = {
        "k1": models.VAE((64,), 16, head=head, width=WIDTH, depth=1, num_samples=1, key=k),
        "k5": models.VAE((64,), 16, head=head, width=WIDTH, depth=1, num_samples=5, key=k),
        "k50": models.VAE((64,), 16, head=head, width=WIDTH, depth=1, num_samples=50, key=k),
        "two_layer_k50": models.HierarchicalVAE(
            (64,), (16, 8), head=head, width=WIDTH, depth=1, num_samples=50, key=k
        ),
        # The cheaper two-layer row of a reduced run (IWAE K = 5).
        "two_layer_k5": models.HierarchicalVAE(
            (64,), (16, 8), head=head, width=WIDTH, depth=1, num_samples=5, key=k
        ),
    }
    for name, model in cases.items():
        if (args.names and name not in args.names) or (not args.names and name == "two_layer_k5"):
            continue
        res, seconds = _fit(model, x, args.steps, ema=None)
        t0 = time.perf_counter()
        values = []
        estimate = eqx.filter_jit(
            lambda m, x, k: m.log_prob_estimate(x, num_samples=args.k_eval, chunk_size=250, key=k)
        )
        for i in range(0, test.shape[0], 64):
            est = estimate(res.model, test[i : i + 64], jr.fold_in(jr.key(3), i))
            values.append(np.asarray(est.value))
        v = -np.concatenate(values)
        row = {
            "test_nll_nats": float(v.mean()),
            "stderr": float(v.std(ddof=1) / np.sqrt(v.size)),
            "train_seconds": seconds,
            "eval_seconds": time.perf_counter() - t0,
            "steps": args.steps,
            "k_eval": args.k_eval,
            "binarisation": "static, raw level >= 8 -> 1",
            "width": WIDTH,
            # Per test image, for paired differences between rows (same images, same key).
            "per_image_nll": [round(float(u), 5) for u in v],
        }
        _record(f"binarised/{name}", row)
        print(name, {k: w for k, w in row.items() if k != "per_image_nll"}, flush=True)


def cmd_table(args):
    """The binarised rows as markdown, with paired differences between consecutive rows."""
    rows = json.loads(pathlib.Path(str(OUT).format("binarised")).read_text())
    names = [
        n for n in ("k1", "k5", "k50", "two_layer_k50", "two_layer_k5") if f"binarised/{n}" in rows
    ]
    print("| model | test NLL (nats) | vs previous row (paired) | train s | eval s |")
    print("|---|---|---|---|---|")
    prev = None
    for n in names:
        r = rows[f"binarised/{n}"]
        v = np.asarray(r["per_image_nll"])
        diff = "—"
        if prev is not None:
            d = v - prev
            diff = f"{d.mean():+.3f} ± {d.std(ddof=1) / np.sqrt(d.size):.3f}"
        print(
            f"| {n} | {r['test_nll_nats']:.3f} ± {r['stderr']:.3f} | {diff} "
            f"| {r['train_seconds']:.0f} | {r['eval_seconds']:.0f} |"
        )
        prev = v


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("what", choices=("digits", "binarised", "table"))
    p.add_argument("--steps", type=int, default=12000)
    p.add_argument("--k-eval", type=int, default=5000)
    p.add_argument("--names", nargs="*", default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--num-samples", type=int, default=1000)
    args = p.parse_args()
    global WIDTH
    WIDTH = args.width or (WIDTH if args.what == "digits" else 256)
    jax.config.update("jax_enable_x64", False)
    {"digits": cmd_digits, "binarised": cmd_binarised, "table": cmd_table}[args.what](args)


if __name__ == "__main__":
    main()
