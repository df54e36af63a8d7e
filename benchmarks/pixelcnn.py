"""PixelCNN on the digits: exact test bits/dim, samples, and sampling time per image.

    python benchmarks/pixelcnn.py digits [--steps 3000] [--width 32] [--depth 5]
    python benchmarks/pixelcnn.py timing [--num 256]

`digits` trains `scoreflow.models.PixelCNN` (gated, categorical over the 17 levels) on
the integer training split with `scoreflow.train.fit` (AdamW 3e-3 with warm-up and cosine
decay, clipping at 1, EMA 0.999, batch 64) and scores its EMA model with
`scoreflow.evaluation.evaluate_digits`: the test bits/dim are the exact mass of the
integer images, $-\\log_2 P(x) / 64$, with no dequantisation (the continuous models'
dequantised figures are upper bounds on the same quantity), and the sample metrics of
1000 samples. Writes `pixelcnn_digits.json` and `digits_eval_pixelcnn.png`.

`timing` measures sampling wall time per image, compilation excluded (the second call
of a jitted sampler, best of 3), of the PixelCNN (64 network passes in one `fori_loop`)
against DDPM's ancestral sampler (1000 steps) and ScoreSDE's PF-ODE (Heun, 32 Karras
steps) with the digits table's `TimeMLP` (width 512, depth 4). Timing does not depend on
the weights, so the networks are untrained. Writes `pixelcnn_timing.json`.
"""

import argparse
import json
import pathlib
import time

import equinox as eqx
import jax
import jax.random as jr

import scoreflow as sf
from scoreflow import data, evaluation, models, nn, train

HERE = pathlib.Path(__file__).resolve().parent


def digits(steps, width, depth, num_samples):
    x = data.digits_raw("train")
    model = models.PixelCNN((1, 8, 8), width=width, depth=depth, key=jr.key(0))
    t0 = time.perf_counter()
    res = train.fit(
        model,
        x,
        num_steps=steps,
        batch_size=64,
        optimizer=train.default_optimizer(3e-3, num_steps=steps, warmup_steps=100),
        steps_per_chunk=100,
        progress=False,
        key=jr.key(1),
    )
    seconds = time.perf_counter() - t0
    report = evaluation.evaluate_digits(
        res.ema_model,
        name=f"PixelCNN (gated, width {width}, depth {depth}; exact mass)",
        num_samples=num_samples,
        train_seconds=seconds,
        png=str(HERE / "digits_eval_pixelcnn.png"),
        key=jr.key(2),
    )
    out = report.asdict() | {"steps": steps, "width": width, "depth": depth}
    (HERE / "pixelcnn_digits.json").write_text(json.dumps(out, indent=1))
    print(evaluation.digits_table([report]))


def _time(fn, *args):
    jax.block_until_ready(fn(*args))  # compile
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return best


def timing(num, width, depth):
    rows = {}
    pixelcnn = models.PixelCNN((1, 8, 8), width=width, depth=depth, key=jr.key(0))
    rows["pixelcnn"] = _time(eqx.filter_jit(lambda m, k: m.sample(num, key=k)), pixelcnn, jr.key(1))
    net = nn.TimeMLP((1, 8, 8), width=512, depth=4, key=jr.key(2))
    ddpm = models.DDPM(net, event_shape=(1, 8, 8), betas=sf.sde.linear_betas(1000))
    rows["ddpm_ancestral_1000"] = _time(
        eqx.filter_jit(lambda m, k: m.sample(num, key=k)), ddpm, jr.key(3)
    )
    sde = sf.VPSDE()
    score = models.ScoreSDE(sde, net, parameterisation="eps", event_shape=(1, 8, 8))
    rows["score_sde_pf_ode_heun_32"] = _time(
        eqx.filter_jit(lambda m, k: m.sample(num, key=k, grid=sf.solve.KarrasGrid(32))),
        score,
        jr.key(4),
    )
    out = {k: {"seconds": v, "ms_per_image": 1e3 * v / num} for k, v in rows.items()}
    out["num"] = num
    out["pixelcnn_size"] = {"width": width, "depth": depth}
    (HERE / "pixelcnn_timing.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("digits")
    d.add_argument("--steps", type=int, default=3000)
    d.add_argument("--width", type=int, default=32)
    d.add_argument("--depth", type=int, default=5)
    d.add_argument("--num-samples", type=int, default=1000)
    t = sub.add_parser("timing")
    t.add_argument("--num", type=int, default=256)
    t.add_argument("--width", type=int, default=32)
    t.add_argument("--depth", type=int, default=5)
    a = p.parse_args(argv)
    if a.cmd == "digits":
        digits(a.steps, a.width, a.depth, a.num_samples)
    else:
        timing(a.num, a.width, a.depth)


if __name__ == "__main__":
    main()
