"""EM for Gaussian mixtures: scoreflow's `fit_gmm` against scikit-learn's `GaussianMixture`.

Data: the digits training split (1438 images, 64 pixels), uniformly dequantised to
[-1, 1] exactly as `scoreflow.evaluation.digits_baselines` prepares it (seed 0), in
float64. For each K in 10, 20, 40, full covariances, reg_covar 1e-4 (the baselines'),
tol 1e-3, max_iter 100, both libraries start from the same parameters: the k-means++
seeds of scikit-learn as means, the data covariance for every component, equal weights.
(From a hard k-means start EM is at a fixed point after two iterations in 64 dimensions,
where every responsibility is 0 or 1 to machine precision: nothing left to time.)

Timed, each the median of `--repeats` interleaved runs:

- to convergence: the whole fit (scoreflow: `fit_gmm` to a result on the host;
  scikit-learn: `fit`, which also validates its inputs and ends with one more E-step);
- per EM iteration: (time of a long fit - time of a 2-iteration fit) / (its iterations - 2),
  the long fit run with tol = 1e-300 and max_iter = `--long-iter` (it stops earlier
  only at an exact fixed point), the short one with tol = 1e9 (both libraries stop
  after their second iteration by the same rule), so fixed costs cancel;
- scoreflow's compilation, apart: its first call minus the median of its later calls.

Then the test bits/dim of each fitted mixture under the digits protocol (uniform
dequantisation of the 359 test images, `metrics.bits_per_dim`, levels 17, batches of 128,
the likelihood key of `evaluate_digits`), both mixtures scored on the same dequantisation
noise, so the two figures differ only as the mixtures do.

    python benchmarks/gmm_em.py [--components 10 20 40] [--repeats 3] [--threads N] [--out FILE]

`--threads 1` pins both to one thread (OpenBLAS / OpenMP for NumPy, Eigen's pool off for
XLA); by default each uses every core. Results go to `gmm_em.json` beside this script.
"""

import argparse
import json
import os
import sys
import time
import warnings
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))


def _pin_threads(n):
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    if n == 1:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = (
            flags + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        ).strip()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--components", type=int, nargs="+", default=[10, 20, 40])
    p.add_argument("--repeats", type=int, default=3, help=">= 1")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--reg-covar", type=float, default=1e-4)
    p.add_argument("--tol", type=float, default=1e-3)
    p.add_argument("--max-iter", type=int, default=100)
    p.add_argument("--long-iter", type=int, default=30)
    p.add_argument("--out", default=os.path.join(HERE, "gmm_em.json"))
    args = p.parse_args()
    if args.threads is not None:
        _pin_threads(args.threads)

    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import jax.random as jr
    import numpy as np
    import sklearn
    from sklearn.cluster import kmeans_plusplus
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    import scoreflow as sf
    from scoreflow.evaluation._baselines import DequantisedSklearnDensity, _dequantised
    from scoreflow.evaluation._digits import _bpd

    warnings.simplefilter("ignore", ConvergenceWarning)
    raw = np.asarray(sf.data.digits_raw("train"))
    y = _dequantised(raw, np.random.default_rng(0))  # the baselines' dequantisation
    n, d = y.shape
    yj = jnp.asarray(y)
    test = jnp.asarray(np.asarray(sf.data.digits_raw("test")))
    k_lik = jr.split(jr.key(0), 3)[0]  # evaluate_digits' likelihood key for key(0)

    def timed(f):
        t0 = time.perf_counter()
        out = f()
        return out, time.perf_counter() - t0

    rows = []
    for K in args.components:
        centres, _ = kmeans_plusplus(y, K, random_state=0)
        cov = np.cov(y.T, bias=True) + args.reg_covar * np.eye(d)
        prec = np.linalg.inv(cov)
        prec = 0.5 * (prec + prec.T)
        init: dict[str, Any] = dict(
            weights_init=np.full(K, 1.0 / K),
            means_init=centres,
            precisions_init=np.broadcast_to(prec, (K, d, d)).copy(),
        )

        def ours(tol, max_iter=args.max_iter):
            res = sf.models.fit_gmm(
                yj, K, tol=tol, reg_covar=args.reg_covar, max_iter=max_iter, **init
            )
            jax.block_until_ready(res)
            return res

        def theirs(tol, max_iter=args.max_iter):
            est = GaussianMixture(
                K,
                covariance_type="full",
                tol=tol,
                reg_covar=args.reg_covar,
                max_iter=max_iter,
                **init,
            )
            return est.fit(y)

        _, first = timed(lambda: ours(args.tol))
        ours(1e-300, args.long_iter)  # compiles the long fit
        t = {name: [] for name in ("ours", "ours_long", "ours_2", "sk", "sk_long", "sk_2")}
        res = long = est = est_long = None
        for _ in range(args.repeats):  # interleaved: both see the same machine load
            res, dt = timed(lambda: ours(args.tol))
            t["ours"].append(dt)
            long, dt = timed(lambda: ours(1e-300, args.long_iter))
            t["ours_long"].append(dt)
            t["ours_2"].append(timed(lambda: ours(1e9))[1])
            est, dt = timed(lambda: theirs(args.tol))
            t["sk"].append(dt)
            est_long, dt = timed(lambda: theirs(1e-300, args.long_iter))
            t["sk_long"].append(dt)
            t["sk_2"].append(timed(lambda: theirs(1e9))[1])
        assert res is not None and long is not None and est is not None and est_long is not None
        iters = int(res.num_iterations)
        iters_long = int(long.num_iterations)
        med = lambda v: float(np.median(v))
        per_ours = (med(t["ours_long"]) - med(t["ours_2"])) / (iters_long - 2)
        per_theirs = (med(t["sk_long"]) - med(t["sk_2"])) / (est_long.n_iter_ - 2)
        t_ours, t_theirs = t["ours"], t["sk"]

        model = res.model
        bpd_ours, se_ours = _bpd(model, test, "exact", {}, 128, k_lik)
        wrapped = DequantisedSklearnDensity(estimator=est, event_shape=(d,), name="sklearn")
        bpd_theirs, se_theirs = _bpd(wrapped, test, "exact", {}, 128, k_lik)
        row = {
            "K": K,
            "iterations": iters,
            "iterations_sklearn": int(est.n_iter_),
            "converged": bool(res.converged),
            "converged_sklearn": bool(est.converged_),
            "log_likelihood": float(res.log_likelihood),
            "log_likelihood_sklearn": float(est.lower_bound_),
            "compile_s": first - med(t_ours),
            "to_convergence_s": med(t_ours),
            "to_convergence_s_sklearn": med(t_theirs),
            "per_iteration_ms": 1e3 * per_ours,
            "per_iteration_ms_sklearn": 1e3 * per_theirs,
            "ratio_to_convergence": med(t_theirs) / med(t_ours),
            "ratio_per_iteration": per_theirs / per_ours,
            "test_bits_per_dim": bpd_ours,
            "test_bits_per_dim_se": se_ours,
            "test_bits_per_dim_sklearn": bpd_theirs,
            "test_bits_per_dim_se_sklearn": se_theirs,
            "long_fit_iterations": iters_long,
            "long_fit_iterations_sklearn": int(est_long.n_iter_),
            "max_abs_mean_diff": float(np.max(np.abs(np.asarray(model.means) - est.means_))),
            "raw_s": t,
        }
        rows.append(row)
        print(
            f"K={K:3d}  iters {iters:3d}/{est.n_iter_:3d} (long {iters_long}/{est_long.n_iter_})  "
            f"to convergence {row['to_convergence_s']:.3f} s vs "
            f"{row['to_convergence_s_sklearn']:.3f} s (x{row['ratio_to_convergence']:.2f})  "
            "per iteration "
            f"{row['per_iteration_ms']:.1f} ms vs {row['per_iteration_ms_sklearn']:.1f} ms "
            f"(x{row['ratio_per_iteration']:.2f})  compile {row['compile_s']:.1f} s  "
            f"loglik diff {row['log_likelihood'] - row['log_likelihood_sklearn']:.1e}  "
            f"bits/dim {bpd_ours:.6f} vs {bpd_theirs:.6f}",
            flush=True,
        )

    out = {
        "command": "python benchmarks/gmm_em.py " + " ".join(sys.argv[1:]),
        "data": f"digits train split, {n} x {d}, dequantised (seed 0), float64",
        "settings": {
            "covariance_type": "full",
            "reg_covar": args.reg_covar,
            "tol": args.tol,
            "max_iter": args.max_iter,
            "long_iter": args.long_iter,
            "repeats": args.repeats,
            "threads": args.threads or "all",
            "cpu_count": os.cpu_count(),
            "load_average": os.getloadavg(),
        },
        "versions": {"jax": jax.__version__, "sklearn": sklearn.__version__},
        "rows": rows,
    }
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
