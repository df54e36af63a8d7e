"""The `scoreflow` command."""

import argparse
import sys


def _demo(args) -> int:
    from ._demo import run_analytic_demo

    s = run_analytic_demo(
        sde_name=args.sde, num_steps=args.steps, num_samples=args.samples, out=args.out
    )
    print(f"scoreflow demo: {s['sde']} SDE, {s['solver']}, NFE {s['nfe']}")
    print(
        f"  compile {s['compile_s']:.2f} s, run {s['run_s'] * 1e3:.1f} ms "
        f"for {args.samples} samples"
    )
    print(
        f"  mean log p0(samples) {s['mean_log_p_samples']:.4f} "
        f"vs exact samples {s['mean_log_p_exact']:.4f}"
    )
    print(f"  largest error in mass per component {s['max_weight_error']:.4f}")
    if "png" in s:
        print(f"  wrote {s['png']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `scoreflow` command."""
    parser = argparse.ArgumentParser(prog="scoreflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="sample an exact Gaussian mixture with the probability-flow ODE"
    )
    demo.add_argument("--sde", default="vp", choices=["vp", "subvp", "ve", "edm"])
    demo.add_argument("--steps", type=int, default=20)
    demo.add_argument("--samples", type=int, default=4096)
    demo.add_argument("--out", default="scoreflow_demo.png")
    demo.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
