"""Coverage of the Hutchinson standard error against the exact-trace log-likelihood.

For cases A (2-d, 8 Gaussians) and B (16-d, 5 Gaussians) under the VP SDE
(t_min = 1e-5), float64, exact score and exact p_T: the exact-trace log-likelihood
(rtol = atol = 1e-7) is the reference, and for K = 1, 4, 16 probes of each kind the
Hutchinson estimate (same tolerance, so solver error is far below the standard error)
is compared with it over N points. Reports the fraction of points with
|estimate - exact| <= 1 and 2 standard errors, the fraction of exactly-zero standard
errors, and the median of SE / RMS(error) (1 is calibrated, above 1 conservative).

    PYTHONPATH=src python benchmarks/likelihood_coverage.py [--n 2000] [--timing]
"""

import argparse
import os
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
import numpy as np  # noqa: E402

import scoreflow as sf  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from helpers import case_a, case_b  # noqa: E402


def run(n, ks, tol):
    sde = sf.VPSDE(t_min=1e-5)
    lines = [
        "| case | probe | K | within 1 SE | within 2 SE | SE = 0 | RMS(err)/RMS(SE) | "
        "median SE | CPU s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, make in (("A (2-d)", case_a), ("B (16-d)", case_b)):
        mixture = make(jnp.float64)
        noisy = mixture.noised(sde)
        x = mixture.sample(n, key=jr.key(0))
        prior = lambda z, noisy=noisy: noisy.log_prob(jnp.asarray(sde.T), z)
        kw = dict(prior_log_prob=prior, rtol=tol, atol=tol, max_steps=16384)
        exact = sf.solve.log_likelihood(sde, noisy, x, **kw).log_prob
        for probe in ("rademacher", "gaussian"):
            for k in ks:
                c0 = time.process_time()
                trace = sf.solve.Hutchinson(k, probe=probe)
                res = sf.solve.log_likelihood(sde, noisy, x, trace=trace, key=jr.key(k), **kw)
                err = np.asarray(res.log_prob - exact)
                se = np.asarray(res.std_error)
                cpu = time.process_time() - c0
                row = (
                    f"| {name} | {probe} | {k} | {np.mean(np.abs(err) <= se):.3f} | "
                    f"{np.mean(np.abs(err) <= 2 * se):.3f} | {np.mean(se == 0):.3f} | "
                    f"{np.sqrt(np.mean(err**2)) / np.sqrt(np.mean(se**2)):.2f} | "
                    f"{np.median(se):.3g} | {cpu:.1f} |"
                )
                print(row, flush=True)
                lines.append(row)
    return "\n".join(lines)


def timing(n=256, repeats=3):
    """Run CPU of a Hutchinson likelihood (case B, rtol 1e-5) for K = 1 and 16, best of 3."""
    sde = sf.VPSDE(t_min=1e-5)
    mixture = case_b(jnp.float64)
    noisy = mixture.noised(sde)
    x = mixture.sample(n, key=jr.key(0))
    for k in (1, 16):
        trace = sf.solve.Hutchinson(k)
        run = lambda: sf.solve.log_likelihood(sde, noisy, x, trace=trace, key=jr.key(1))
        jax.block_until_ready(run().log_prob)
        best = float("inf")
        for _ in range(repeats):
            c0 = time.process_time()
            res = run()
            jax.block_until_ready(res.log_prob)
            best = min(best, time.process_time() - c0)
        print(f"K={k} nfe={int(res.nfe)} run CPU {best:.3f} s", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=2000, help="points per case")
    p.add_argument("--ks", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--tol", type=float, default=1e-7)
    p.add_argument("--timing", action="store_true", help="only the run-time check")
    args = p.parse_args()
    if args.timing:
        timing()
    else:
        print(run(args.n, args.ks, args.tol))
