"""Train the wave-1 digits models for one stated, equal budget, then sample and evaluate them.

ScoreSDE (VP SDE, eps), DDPM, NCSN and RealNVP on scikit-learn's 8x8 digits (train split),
each with `scoreflow.train.fit` and the same budget: 12 000 steps at batch 128 (about 1070
epochs of the 1438 training images), AdamW 1e-3 with 500 warm-up steps and cosine decay,
clipping at 1, EMA 0.999 (the EMA model is sampled and evaluated), and the same data: the
training images with uniform dequantisation inside their 17 pixel bins (fresh noise each
draw), so that every model fits the continuous density the test bits/dim are taken of.
FFJORD does not fit this budget (about 420 ms a step at its first steps, width 256,
Hutchinson trace, rtol 1e-5, on the shared machine: over 80 minutes for 12 000 steps,
more as its dynamics stiffen); `--names ffjord` trains it anyway.

    python benchmarks/digits_table.py train [--names ...] [--steps N] [--batch B]
    python benchmarks/digits_table.py samples [--names ...]     # grids from checkpoints
    python benchmarks/digits_table.py evaluate [--names ...]    # scoreflow.evaluation

One model per process, in the background:

    for n in score_sde_vp ddpm ncsn realnvp; do
      python benchmarks/digits_table.py train --names $n > benchmarks/digits_runs/$n.log 2>&1
    done

`train` checkpoints every chunk to `digits_runs/<name>.eqx` (an interrupted run resumes
where it stopped; its wall time accumulates in `digits_runs/<name>.json`, with steps,
batch, network and parameter count), then writes the EMA model's sample grid to
`digits_runs/digits_<name>.png` and the combined `digits_table_samples.png` (raw samples,
before the protocol's quantisation); `evaluate` writes the protocol's grids
`digits_eval_<name>.png` and `digits_table.json`. `load(name)` rebuilds a
trained model (EMA parameters) from its checkpoint.

Network: the diffusion models use `nn.TimeMLP` (width 512, depth 4) on the (1, 8, 8)
event, not `nn.UNet`. On XLA's CPU backend a convolution inside a loop (`lax.scan`,
which is how `fit` runs a chunk of steps, or `fori_loop`) runs far slower than the same
convolution jitted on its own or in a fully unrolled scan: the gradient of one 16-channel
3x3 convolution at batch 64 costs 2 ms alone, 1 ms per step unrolled, 57-165 ms per step
in a rolled scan. A base-16 U-Net step costs 55-85 ms in a plain `jit` but 500-850 ms
inside `fit`'s chunk, while the TimeMLP step costs ~14 ms (idle machine, batch 64) either
way. The flows are on the flat 64-d event (`models.RealNVP(64, ...)`).
"""

import argparse
import json
import pathlib
import time

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import scoreflow as sf
from scoreflow import data, evaluation, models, nn, train

HERE = pathlib.Path(__file__).resolve().parent
RUNS = HERE / "digits_runs"  # checkpoints, run records, logs (`--out-dir` moves them)
OUT = HERE  # the PNGs
F32 = jnp.float32
EVENT = (1, 8, 8)
NAMES = ("score_sde_vp", "ddpm", "ncsn", "realnvp", "ffjord")
TITLES = {
    "score_sde_vp": "ScoreSDE VP, eps (PF-ODE Heun, Karras 32)",
    "ddpm": "DDPM (ancestral, 1000 steps)",
    "ncsn": "NCSN (annealed Langevin 25 x 100)",
    "realnvp": "RealNVP (direct)",
    "ffjord": "FFJORD (direct)",
}
# The stated budget, the same for every model (see benchmarks/RESULTS.md).
STEPS = 12000
BATCH = 128
LEARNING_RATE = 1e-3
WARMUP = 500
EMA = 0.999
CHUNK = 500
SEGMENT = 2000  # steps between JSON progress records (each a whole number of chunks)
MLP = dict(width=512, depth=4)
# NCSN's ladder (Song & Ermon 2020, techniques 1 and 2): sigma_1 = the largest pairwise
# distance of the training images (9.04 in [-1, 1]), geometric ratio 1.33 for D = 64.
NCSN_SIGMAS = (9.0, 0.01, 25)
# Half the width of a pixel's bin: 17 bins of width 2/17 cover [-1, 1].
HALF_BIN = 1.0 / data.DIGITS_LEVELS


def network_spec(name):
    """What `build` makes for `name`, as JSON (recorded with the run)."""
    if name in ("score_sde_vp", "ddpm"):
        return {"network": "TimeMLP", **MLP, "embedding_scale": 16.0}
    if name == "ncsn":
        return {
            "network": "ScaledScore(TimeMLP) on log sigma",
            **MLP,
            "embedding_scale": 1.0,
            "sigmas": "geometric({:g}, {:g}, {:d})".format(*NCSN_SIGMAS),
        }
    if name == "realnvp":
        return {
            "network": "RealNVP(64)",
            "num_layers": 8,
            "width": 256,
            "depth": 2,
            "scale_fn": "softplus",
            "shuffle": True,
            "output affine": "init at the dequantised data's mean and std per pixel",
        }
    if name == "ffjord":
        return {
            "network": "FFJORD(64), ConcatSquashMLP",
            "width": 256,
            "depth": 3,
            "activation": "tanh",
            "trace": "Hutchinson(1)",
            "rtol": 1e-5,
            "atol": 1e-5,
            "output affine": "fixed at the dequantised data's mean and std per pixel",
        }
    raise ValueError(f"Unknown model {name!r}; known: {NAMES}.")


def _pixel_stats():
    # Mean and std per pixel of the dequantised training images (the std of a constant
    # pixel is then that of the uniform noise, never zero).
    x = np.asarray(data.digits("train", dtype=F32)).reshape(-1, 64).astype(np.float64)
    var = x.var(0) + HALF_BIN**2 / 3
    return jnp.asarray(x.mean(0), F32), jnp.asarray(np.sqrt(var), F32)


def build(name):
    """The untrained model `name`, initialised from a fixed key."""
    key = jr.key(0)
    if name == "score_sde_vp":
        net = nn.TimeMLP(EVENT, embedding_scale=16.0, key=key, **MLP)
        return models.ScoreSDE(sf.VPSDE(t_min=1e-5), net, parameterisation="eps", event_shape=EVENT)
    if name == "ddpm":
        net = nn.TimeMLP(EVENT, embedding_scale=16.0, key=key, **MLP)
        return models.DDPM(net, event_shape=EVENT, betas=sf.sde.linear_betas(1000))
    if name == "ncsn":
        # ScaledScore feeds the network log sigma (range ~ -4.6..2.2): low frequencies.
        net = nn.ScaledScore(nn.TimeMLP(EVENT, embedding_scale=1.0, key=key, **MLP))
        return models.NCSN(net, event_shape=EVENT, sigmas=models.geometric_sigmas(*NCSN_SIGMAS))
    loc, scale = _pixel_stats()
    if name == "realnvp":
        return models.RealNVP(
            64,
            num_layers=8,
            width=256,
            depth=2,
            shuffle=True,
            loc=loc,
            scale=scale,
            dtype=F32,
            key=key,
        )
    if name == "ffjord":
        return models.FFJORD(
            64,
            width=256,
            depth=3,
            activation=jnp.tanh,
            trace=sf.solve.Hutchinson(1),
            rtol=1e-5,
            atol=1e-5,
            loc=loc,
            scale=scale,
            dtype=F32,
            key=key,
        )
    raise ValueError(f"Unknown model {name!r}; known: {NAMES}.")


def optimizer(steps):
    return train.default_optimizer(LEARNING_RATE, num_steps=steps, warmup_steps=WARMUP)


def dequantised_train(flat):
    """`draw(batch_size, *, key)`: training images plus uniform noise within their bins."""
    x = data.digits("train", dtype=F32)
    if flat:
        x = x.reshape(x.shape[0], -1)

    def draw(batch_size, *, key):
        k_idx, k_u = jr.split(key)
        idx = jr.randint(k_idx, (batch_size,), 0, x.shape[0])
        u = jr.uniform(k_u, (batch_size, *x.shape[1:]), F32, -HALF_BIN, HALF_BIN)
        return x[idx] + u

    return draw


def num_params(model):
    return int(
        sum(a.size for a in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array)))
    )


def paths(name):
    return RUNS / f"{name}.eqx", RUNS / f"{name}.json"


def load(name):
    """The trained model `name` (EMA parameters), read from `digits_runs/<name>.eqx`.

    The checkpoint describes its model, so `scoreflow.load` needs no skeleton.
    """
    ckpt, _ = paths(name)
    if not ckpt.exists():
        raise FileNotFoundError(f"No {ckpt} (run `python benchmarks/digits_table.py train`).")
    return sf.load(ckpt, weights="ema")


def sample_options(name):
    """The keyword arguments of `model.sample` used for the grids (and the evaluation)."""
    if name == "score_sde_vp":
        return dict(method="ode", solver=dfx.Heun(), grid=sf.solve.KarrasGrid(32), dtype=F32)
    if name == "ddpm":
        return dict(method="sde", dtype=F32)  # Ho et al.'s Algorithm 2, all 1000 steps
    if name == "ncsn":
        return dict(steps_per_level=100, step_size=5e-6, denoise=True, dtype=F32)
    return {}  # flows: one pass of the inverse map (FFJORD: its adaptive ODE solve)


def sample_options_text(name):
    return {
        "score_sde_vp": "PF-ODE, diffrax Heun, KarrasGrid(32), float32",
        "ddpm": "ancestral (StochasticDDIM eta=1 on all 1000 training steps), float32",
        "ncsn": "annealed Langevin, 25 levels x 100 steps, eps 5e-6, final denoise, float32",
        "realnvp": "direct (inverse of the couplings)",
        "ffjord": "direct (Tsit5 ODE solve, rtol = atol = 1e-5)",
    }[name]


def log_prob_options(name):
    """Keyword arguments of `model.log_prob` for the evaluation's bits/dim."""
    if name in ("score_sde_vp", "ddpm"):
        return dict(rtol=1e-4, atol=1e-4, trace=sf.solve.Hutchinson(1))
    return {}  # RealNVP exact; FFJORD its own trace and tolerances; NCSN has none


def train_one(name, steps, batch):
    ckpt, meta = paths(name)
    RUNS.mkdir(parents=True, exist_ok=True)
    model = build(name)
    info = json.loads(meta.read_text()) if meta.exists() else {}
    if info and (info.get("steps") != steps or info.get("batch") != batch):
        raise ValueError(
            f"{meta} records steps={info.get('steps')}, batch={info.get('batch')}; "
            f"asked for {steps}, {batch}. Delete the run to start again."
        )
    info = {
        "name": name,
        "steps": steps,
        "batch": batch,
        "learning_rate": LEARNING_RATE,
        "warmup_steps": WARMUP,
        "schedule": "AdamW, clip 1, warmup + cosine to 0",
        "ema_decay": EMA,
        "steps_per_chunk": CHUNK,
        "data": "digits train split (1438), uniform dequantisation within the 17 bins",
        "num_params": num_params(model),
        **network_spec(name),
        "sampler": sample_options_text(name),
        "train_seconds": 0.0,
        "steps_done": 0,
        "segment_losses": [],
        **info,
    }
    opt = optimizer(steps)
    draw = dequantised_train(flat=name in ("realnvp", "ffjord"))
    done = info["steps_done"]
    while done < steps:
        target = min(steps, (done // SEGMENT + 1) * SEGMENT)
        t0 = time.perf_counter()
        res = train.fit(
            model,
            draw,
            num_steps=target,
            batch_size=batch,
            optimizer=opt,
            ema_decay=EMA,
            steps_per_chunk=CHUNK,
            checkpoint=ckpt,
            checkpoint_every=CHUNK,
            progress=False,
            key=jr.key(1),
        )
        dt = time.perf_counter() - t0
        done = int(res.state.step)
        loss = float(res.losses.mean()) if res.losses.size else float("nan")
        info["train_seconds"] += dt
        info["steps_done"] = done
        info["segment_losses"].append([done, loss])
        if res.losses.size:
            info["final_loss"] = float(res.losses[-1000:].mean())
        meta.write_text(json.dumps(info, indent=1))
        print(
            f"{name}: step {done}/{steps}, mean loss {loss:.4f}, {dt:.0f} s "
            f"({dt / max(res.losses.size, 1) * 1e3:.1f} ms/step), "
            f"total {info['train_seconds']:.0f} s",
            flush=True,
        )
    return info


def _tile(x):
    # 64 images (n, 1, 8, 8) as one 8 x 8 mosaic, clipped to the data's range.
    img = np.clip(np.asarray(x)[:64].reshape(8, 8, 8, 8), -1, 1)
    return img.transpose(0, 2, 1, 3).reshape(64, 64)


def combined_png(grids, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(grids), figsize=(3.2 * len(grids), 3.5), squeeze=False)
    for ax, (title, x) in zip(axes[0], grids.items()):
        ax.imshow(_tile(x), cmap="gray", vmin=-1, vmax=1)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def sample_grid(name):
    model = load(name)
    t0 = time.perf_counter()
    x = jax.block_until_ready(model.sample(64, key=jr.key(9), **sample_options(name)))
    dt = time.perf_counter() - t0
    x = np.asarray(x).reshape(64, *EVENT)
    evaluation.sample_grid(np.clip(x, -1, 1), str(RUNS / f"digits_{name}.png"), title=TITLES[name])
    np.save(RUNS / f"{name}_samples.npy", x)
    bad = int((~np.isfinite(x)).sum())
    print(f"{name}: 64 samples in {dt:.1f} s, non-finite values {bad}", flush=True)
    return x


def write_combined():
    # Every model sampled so far, so that runs of one model at a time build one figure.
    grids = {"data (test)": np.asarray(data.digits("test", dtype=F32)[:64])}
    for name in NAMES:
        f = RUNS / f"{name}_samples.npy"
        if f.exists():
            grids[TITLES[name]] = np.load(f)
    combined_png(grids, OUT / "digits_table_samples.png")


def cmd_train(args):
    for name in args.names:
        info = train_one(name, args.steps, args.batch)
        total = info["train_seconds"]
        print(f"{name}: trained, {total:.0f} s, final loss {info.get('final_loss')}", flush=True)
        sample_grid(name)
        write_combined()


def cmd_samples(args):
    for name in args.names:
        sample_grid(name)
    write_combined()


class _TrainSplit(models.AbstractGenerativeModel):
    """The training images as "samples": the floor any model is compared to."""

    event_shape: tuple = EVENT

    def loss(self, x, *, key):
        raise NotImplementedError

    def sample(self, sample_shape=(), *, key):
        n = int(np.prod(sample_shape))
        x = data.digits("train")
        return x[jr.permutation(key, x.shape[0])[:n]]


def _train_bpd(model, name):
    # Bits/dim of training images, beside the test figure: a gap is overfitting.
    from scoreflow.evaluation._digits import _bpd

    raw = jnp.asarray(np.asarray(data.digits_raw("train"))[:359])
    return _bpd(model, raw, "exact", log_prob_options(name), 128, jr.key(3))


def cmd_evaluate(args):
    """Every trained model, the baselines and the train-split floor, by one protocol."""
    reports, extra = [], {}
    for i, name in enumerate(args.names):
        info = json.loads(paths(name)[1].read_text())
        model = load(name)
        report = evaluation.evaluate_digits(
            model,
            name=TITLES[name],
            key=jr.fold_in(jr.key(10), i),
            num_samples=args.num_samples,
            sample_options=sample_options(name),
            log_prob_options=log_prob_options(name),
            train_seconds=info["train_seconds"],
            png=str(OUT / f"digits_eval_{name}.png"),
        )
        if name != "ncsn":
            extra[name] = {"train_bits_per_dim": _train_bpd(model, name)}
        print(report, extra.get(name), flush=True)
        reports.append(report)
    baselines = evaluation.digits_baselines()
    for i, (name, (model, info)) in enumerate(baselines.items()):
        t0 = time.perf_counter()
        report = evaluation.evaluate_digits(
            model, name=name, key=jr.fold_in(jr.key(20), i), num_samples=args.num_samples
        )
        extra[name] = {k: v for k, v in info.items() if k != "validation_loglik"}
        print(report, extra[name], time.perf_counter() - t0, flush=True)
        reports.append(report)
    floor = evaluation.evaluate_digits(
        _TrainSplit(),
        name="training images (the floor)",
        key=jr.key(30),
        num_samples=args.num_samples,
    )
    reports.append(floor)
    table = evaluation.digits_table(reports)
    print(table, flush=True)
    record = {
        "command": f"python benchmarks/digits_table.py evaluate --num-samples {args.num_samples}",
        "budget": f"{STEPS} steps x batch {BATCH}, AdamW {LEARNING_RATE}, EMA {EMA}",
        "sample_options": {n: sample_options_text(n) for n in args.names},
        "extra": extra,
        "reports": [r.asdict() for r in reports],
    }
    for r in record["reports"]:  # repository-relative paths in the committed record
        if r["png"]:
            r["png"] = str(pathlib.Path(r["png"]).resolve().relative_to(HERE.parent))
    (OUT / "digits_table.json").write_text(json.dumps(record, indent=1, default=float))
    return reports


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    for cmd, fn in (("train", cmd_train), ("samples", cmd_samples), ("evaluate", cmd_evaluate)):
        s = sub.add_parser(cmd)
        s.add_argument("--names", nargs="+", default=list(NAMES[:4]), choices=NAMES)
        s.add_argument(
            "--out-dir",
            default=None,
            help="write runs and PNGs under this folder instead (a design look)",
        )
        s.set_defaults(func=fn)
        if cmd == "train":
            s.add_argument("--steps", type=int, default=STEPS)
            s.add_argument("--batch", type=int, default=BATCH)
        if cmd == "evaluate":
            s.add_argument("--num-samples", type=int, default=1000)
    args = p.parse_args(argv)
    if args.out_dir is not None:
        global RUNS, OUT
        OUT = pathlib.Path(args.out_dir)
        RUNS = OUT / "digits_runs"
    args.func(args)


if __name__ == "__main__":
    main()
