"""The `scoreflow` command: `demo`, `train`, `sample`, `evaluate`."""

import argparse
import json
import os
import pathlib
import sys


def _analytic_demo(args) -> int:
    from ._demo import run_analytic_demo

    s = run_analytic_demo(
        sde_name=args.sde, num_steps=args.steps, num_samples=args.samples, out=args.out
    )
    print(f"scoreflow demo --analytic: {s['sde']} SDE, {s['solver']}, NFE {s['nfe']}")
    print(
        f"  compile {s['compile_s']:.2f} s, run {s['run_s'] * 1e3:.1f} ms "
        f"for {args.samples} samples"
    )
    print(
        f"  mean log p0(samples) {s['mean_log_p_samples']:.4f} "
        f"vs exact samples {s['mean_log_p_exact']:.4f}"
    )
    print(f"  largest error in mass per component {s['max_weight_error']:.4f}")
    print(_sample_line(s))
    if "png" in s:
        print(f"  wrote {s['png']}")
    return 0


def _sample_line(s) -> str:
    return (
        f"  MMD² to exact samples {s['mmd2']:.2e} (permutation p = {s['mmd_p_value']:.3f}); "
        f"modes captured {s['modes_captured']}/{s['num_modes']}, "
        f"{100 * s['high_quality']:.1f} % of samples within 3 sd of a mode"
    )


def _demo(args) -> int:
    if args.analytic:
        return _analytic_demo(args)
    from ._demo import run_training_demo

    s = run_training_demo(
        sde_name=args.sde,
        train_steps=args.train_steps,
        batch_size=args.batch_size,
        num_samples=args.samples,
        ode_steps=args.steps,
        out=args.out,
        seed=args.seed,
        progress=not args.quiet,
    )
    print(
        f"scoreflow demo: ScoreSDE ({s['sde']} SDE, eps parameterisation, MLP) on 8 Gaussians "
        "on a ring"
    )
    print(
        f"  trained {s['train_steps']} steps x batch {s['batch_size']} in {s['train_s']:.1f} s "
        f"(final loss {s['final_loss']:.4f})"
    )
    print(
        f"  sampled {args.samples} points with the probability-flow ODE (Heun, "
        f"{args.steps} Karras steps, NFE {s['nfe']}) in {s['sample_s']:.1f} s"
    )
    print(
        f"  KL(data || model) = {s['kl']:.3f} ± {s['kl_se']:.3f} nats "
        f"(probability-flow likelihood, {s['loglik_s']:.1f} s)"
    )
    print(
        f"  mean log p_data(samples) {s['mean_log_p_samples']:.3f} vs exact samples "
        f"{s['mean_log_p_exact']:.3f}; largest error in mass per component "
        f"{s['max_weight_error']:.3f}"
    )
    print(_sample_line(s))
    if "png" in s:
        print(f"  wrote {s['png']}")
    return 0


def _distributed(args):
    # Joins a multi-process run when one is asked for on the command line or by the
    # environment (`JAX_COORDINATOR_ADDRESS` ...), before anything else touches JAX.
    from . import train

    given = (args.coordinator_address, args.num_processes, args.process_id)
    if all(v is None for v in given) and not os.environ.get("JAX_COORDINATOR_ADDRESS"):
        return
    train.initialize_distributed(*given, timeout=args.distributed_timeout)


def _train(args) -> int:
    import jax
    import jax.random as jr

    from . import train
    from ._config import build_model, build_optimizer, load_config, load_data

    _distributed(args)
    main = train.is_main_process()
    say = print if main else (lambda *a, **k: None)
    cfg = load_config(args.config, {"steps": args.steps, "checkpoint": args.checkpoint})
    if args.print_config:
        say(json.dumps(cfg, indent=1))
        return 0
    x = load_data(cfg, "train")
    model = build_model(cfg, tuple(x.shape[1:]))
    mesh = None
    if args.data_parallel or jax.process_count() > 1:
        # Every device of every process on one `data` axis; nothing else changes.
        mesh = jax.make_mesh((jax.device_count(),), ("data",))
    ckpt = pathlib.Path(cfg["checkpoint"])
    if ckpt.is_file():
        step = train.checkpoint_info(ckpt).get("step", 0)
        say(f"scoreflow train: resumed from step {step} of {ckpt}")
    res = train.fit(
        model,
        x,
        num_steps=cfg["steps"],
        batch_size=cfg["batch_size"],
        optimizer=build_optimizer(cfg),
        ema_decay=cfg["ema_decay"],
        steps_per_chunk=cfg["steps_per_chunk"],
        checkpoint=ckpt,
        checkpoint_every=cfg["checkpoint_every"],
        checkpoint_metadata={"config": cfg, "event_shape": list(x.shape[1:])},
        progress=not args.quiet,
        mesh=mesh,
        key=jr.key(cfg["seed"] + 100),
    )
    final = float(res.losses[-50:].mean()) if res.losses.size else float("nan")
    say(
        f"scoreflow train: {cfg['model']} on {cfg['dataset']}, step {int(res.state.step)}, "
        f"final loss {final:.4f}; checkpoint {ckpt}"
    )
    return 0


def load_trained(checkpoint, weights: str = "ema"):
    """The model of a checkpoint (of `scoreflow train` or of `train.fit` from Python).

    Returns `(model, config)`: `config` is the `scoreflow train` config, or `{}` for a
    checkpoint written from Python.
    """
    from . import train
    from ._serialise import load

    ckpt = pathlib.Path(checkpoint)
    if not ckpt.is_file():
        raise FileNotFoundError(f"No checkpoint file {str(ckpt)!r}.")
    meta = train.checkpoint_info(ckpt).get("metadata", {})
    return load(ckpt, weights=weights), dict(meta.get("config", {}))


SOLVERS = ("heun", "euler", "tsit5", "ddim", "dpmpp2m", "dpmpp3m", "eapc3", "edm_heun")


def _solver(name):
    import diffrax as dfx

    from . import solve

    return {
        "heun": dfx.Heun,
        "euler": dfx.Euler,
        "tsit5": dfx.Tsit5,
        "ddim": solve.DDIM,
        "dpmpp2m": lambda: solve.DPMSolverPP(order=2),
        "dpmpp3m": lambda: solve.DPMSolverPP(order=3),
        "eapc3": lambda: solve.ExponentialAdamsPC(3),
        "edm_heun": solve.EDMHeun,
    }[name]()


def _sample_options(model, args) -> dict:
    from . import models, solve

    if isinstance(model, models.DDPM):
        opts = {"method": args.method or "sde", "num_steps": args.steps}
        if args.solver is not None:
            opts["solver"] = _solver(args.solver)
        return opts
    if isinstance(model, models.ScoreSDE):
        opts: dict = {"method": args.method or "ode"}
        if args.solver is not None:
            opts["solver"] = _solver(args.solver)
        if args.steps is not None:
            opts["grid"] = solve.KarrasGrid(args.steps)
        return opts
    given = [f"--{n}" for n in ("solver", "steps", "method") if getattr(args, n) is not None]
    if given:
        raise ValueError(
            f"{', '.join(given)} apply to diffusion models (ScoreSDE, DDPM); this checkpoint "
            f"holds a {type(model).__name__}, which samples with its own defaults."
        )
    return {}


def _sample(args) -> int:
    import jax.random as jr
    import numpy as np

    if args.num < 1:
        raise ValueError(f"`--num` must be >= 1, got {args.num}.")
    model, cfg = load_trained(args.checkpoint, args.weights)
    opts = _sample_options(model, args)
    x = np.asarray(model.sample(args.num, key=jr.key(args.seed), **opts))
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x.reshape(len(x), -1))).any(1).sum())
        print(f"scoreflow sample: warning: {bad} of {len(x)} samples are not finite")
    out = pathlib.Path(args.out)
    np.save(out, x)
    what = f"{type(model).__name__}" + (f" ({cfg['dataset']})" if "dataset" in cfg else "")
    msg = f"scoreflow sample: {args.num} samples of {what} -> {out}"
    if args.png:
        data = None
        if args.data is not None:
            data = np.load(args.data)
        elif cfg:
            from ._config import load_data

            data = np.asarray(load_data({**cfg}, "test"))
        _plot_samples(x, args.png, data=data)
        msg += f", {args.png}"
    print(msg)
    return 0


def _plot_samples(x, path, data=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if x.ndim == 2 and x.shape[1] == 2:
        fig, ax = plt.subplots(figsize=(5, 5))
        if data is not None:
            ax.scatter(data[:, 0], data[:, 1], s=1, alpha=0.3, c="grey", label="data")
        ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.4, c="C0", label="samples")
        if data is not None:
            ax.legend(markerscale=8, loc="upper right")
        ax.set_aspect("equal")
    else:
        n = int(np.floor(np.sqrt(min(len(x), 64))))
        imgs = x[: n * n].reshape(n, n, *x.shape[1:])
        if imgs.ndim == 5:
            imgs = imgs.mean(2)  # channels -> grey
        grid = imgs.transpose(0, 2, 1, 3).reshape(n * imgs.shape[2], n * imgs.shape[3])
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.imshow(np.clip(grid, -1, 1), cmap="gray_r")
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _evaluate(args) -> int:
    import jax.random as jr

    from . import data, evaluation

    model, cfg = load_trained(args.checkpoint, args.weights)
    dataset = args.dataset or cfg.get("dataset")
    if dataset is None:
        raise ValueError(
            "This checkpoint was written from Python and records no dataset; pass "
            "--dataset digits or --dataset ring_mixture."
        )
    name = args.name or f"{type(model).__name__} ({dataset})"
    key = jr.key(args.seed)
    if dataset == "digits":
        report = evaluation.evaluate_digits(
            model, name=name, num_samples=args.num, num_test=args.num_test, png=args.png, key=key
        )
        print(evaluation.digits_table([report]), end="")
    elif dataset == "ring_mixture":
        report = evaluation.evaluate_2d(
            model,
            data.ring_mixture(),
            name=name,
            num_samples=args.num,
            num_eval=args.num_eval,
            key=key,
        )
        kl = "—" if report.kl is None else f"{report.kl:.4f} ± {report.kl_se:.4f}"
        print(
            f"scoreflow evaluate: {name}\n  KL(data || model) {kl} nats; MMD² "
            f"{report.mmd2:.2e} (permutation p = {report.mmd_p_value:.3f}); modes captured "
            f"{report.modes_captured}/{report.num_modes}, {100 * report.high_quality:.1f} % of "
            f"samples within 3 sd, KL of mass per mode {report.kl_modes:.4f}; "
            f"{report.num_nonfinite} non-finite samples"
        )
    else:
        raise ValueError(
            f"No evaluation protocol for dataset {dataset!r} (the digits and the ring "
            "mixture have one); use scoreflow.metrics directly."
        )
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(report.asdict(), indent=1))
    return 0


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    pass


def build_parser() -> argparse.ArgumentParser:
    """The `scoreflow` command's parser (the docs' CLI page is generated from it)."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="scoreflow", description=__doc__, formatter_class=_Formatter
    )
    parser.add_argument("--version", action="version", version=f"scoreflow {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        formatter_class=_Formatter,
        help="train a score model on a 2-d mixture, sample it, score its likelihood "
        "(--analytic: sample the exact mixture instead)",
    )
    demo.add_argument("--analytic", action="store_true", help="the exact-score sampling demo")
    demo.add_argument("--sde", default="vp", choices=["vp", "subvp", "ve", "edm"], help="the SDE")
    demo.add_argument("--steps", type=int, default=None, help="ODE steps (default 32; 20 analytic)")
    demo.add_argument("--train-steps", type=int, default=2500, help="training steps")
    demo.add_argument("--batch-size", type=int, default=512, help="training batch size")
    demo.add_argument("--samples", type=int, default=None, help="default 2000 (4096 analytic)")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.add_argument("--out", default="scoreflow_demo.png", help="the picture to write")
    demo.set_defaults(func=_demo)

    tr = sub.add_parser(
        "train",
        formatter_class=_Formatter,
        help="train a model on a built-in dataset from a config file",
        description="Train from a JSON or TOML config (keys and defaults: --print-config, "
        "or the docs' CLI page). Rerunning resumes from the checkpoint; a checkpoint of "
        "a different model is refused, naming the differing fields.",
    )
    tr.add_argument("--config", default=None, help="JSON or TOML config (default: all defaults)")
    tr.add_argument("--steps", type=int, default=None, help="override the config's steps")
    tr.add_argument("--checkpoint", default=None, help="override the config's checkpoint")
    tr.add_argument(
        "--print-config", action="store_true", help="print the resolved config and exit"
    )
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    tr.add_argument(
        "--data-parallel",
        action="store_true",
        help="shard each batch over every device (on by itself in a multi-process run)",
    )
    tr.add_argument(
        "--coordinator-address",
        default=None,
        help="host:port of process 0 in a multi-process run (or JAX_COORDINATOR_ADDRESS)",
    )
    tr.add_argument(
        "--num-processes", type=int, default=None, help="processes (or JAX_NUM_PROCESSES)"
    )
    tr.add_argument(
        "--process-id", type=int, default=None, help="this process's index (or JAX_PROCESS_ID)"
    )
    tr.add_argument(
        "--distributed-timeout",
        type=int,
        default=120,
        help="seconds to wait for the other processes before giving up",
    )
    tr.set_defaults(func=_train)

    sa = sub.add_parser(
        "sample",
        formatter_class=_Formatter,
        help="sample a trained model (any checkpoint of `scoreflow train` or `train.fit`)",
    )
    sa.add_argument("--checkpoint", required=True, help="the checkpoint file")
    sa.add_argument("--num", type=int, default=1000, help="number of samples")
    sa.add_argument("--out", default="samples.npy", help="where to write the samples (.npy)")
    sa.add_argument(
        "--method",
        choices=["ode", "sde"],
        default=None,
        help="probability-flow ODE or reverse SDE (default: the model's)",
    )
    sa.add_argument("--solver", choices=SOLVERS, default=None, help="solver (default: the model's)")
    sa.add_argument(
        "--steps", type=int, default=None, help="solver steps (a Karras grid for ScoreSDE)"
    )
    sa.add_argument(
        "--weights",
        choices=["ema", "last"],
        default="ema",
        help="the EMA weights or the last iterate",
    )
    sa.add_argument("--png", default=None, help="also plot the samples")
    sa.add_argument(
        "--data",
        default=None,
        help="a .npy of data to draw under 2-d samples (default: the config's test data)",
    )
    sa.add_argument("--seed", type=int, default=0, help="random seed")
    sa.set_defaults(func=_sample)

    ev = sub.add_parser(
        "evaluate",
        formatter_class=_Formatter,
        help="score a trained model by the evaluation protocol "
        "(digits: bits/dim, FD/KID/IS, precision/recall, density/coverage; ring mixture: "
        "KL, MMD, mode coverage)",
    )
    ev.add_argument("--checkpoint", required=True, help="the checkpoint file")
    ev.add_argument(
        "--dataset",
        choices=["digits", "ring_mixture"],
        default=None,
        help="the protocol (default: the dataset of the `scoreflow train` config)",
    )
    ev.add_argument("--num", type=int, default=1000, help="samples to draw")
    ev.add_argument(
        "--num-test", type=int, default=None, help="test images for bits/dim (default all 359)"
    )
    ev.add_argument(
        "--num-eval", type=int, default=1000, help="data points for the KL (ring mixture)"
    )
    ev.add_argument(
        "--weights",
        choices=["ema", "last"],
        default="ema",
        help="the EMA weights or the last iterate",
    )
    ev.add_argument("--png", default=None, help="write a sample grid (digits)")
    ev.add_argument("--json", default=None, help="write the report as JSON")
    ev.add_argument("--name", default=None, help="the row's label")
    ev.add_argument("--seed", type=int, default=0, help="random seed")
    ev.set_defaults(func=_evaluate)
    return parser


# Errors a user can act on, reported in one line; anything else is a bug: traceback.
def _user_errors():
    from . import train
    from ._config import ConfigError

    return (
        ConfigError,
        train.CheckpointError,
        train.CheckpointMismatch,
        train.TrainingDiverged,
        FileNotFoundError,
        IsADirectoryError,
        NotADirectoryError,
        ValueError,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `scoreflow` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        if args.steps is None:
            args.steps = 20 if args.analytic else 32
        if args.samples is None:
            args.samples = 4096 if args.analytic else 2000
    try:
        return args.func(args)
    except _user_errors() as e:
        if args.debug:
            raise
        message = " ".join(str(e).split())
        print(f"scoreflow {args.command}: error: {message}", file=sys.stderr)
        print("(run with --debug for the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
