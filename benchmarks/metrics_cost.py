"""Cost and memory of `scoreflow.metrics` at realistic sizes, against NumPy/SciPy/sklearn.

Two synthetic feature sets (fixed seeds): `x ~ N(0, I_d)` and `y ~ N(0.05 * 1, A A^T)`,
`A = I + 0.05 G` (G a fixed Gaussian matrix), `n` rows each, `d` = 64 by default. For
every metric the same quantity is computed in this process by scoreflow (float64 and
float32) and by a peer (float64):

- Fréchet distance: NumPy mean / `np.cov` + `scipy.linalg.sqrtm(S1 S2).real` (the
  pytorch-fid formula), and the symmetric eigh form in NumPy.
- MMD² (unbiased, Gaussian kernel, bandwidth from the median heuristic computed once in
  NumPy and passed to both): NumPy in row blocks of `--peer-block` rows against all
  columns (no full n x n matrix), and `sklearn.metrics.pairwise.rbf_kernel` in the same
  blocks.
- precision/recall (k = 3), density/coverage (k = 5): `sklearn.neighbors.NearestNeighbors`
  for the k-NN radii and nearest distances, `sklearn.metrics.pairwise.euclidean_distances`
  (squared) in row blocks for the ball counts.
- KID (100 subsets of 1000, polynomial kernel): NumPy + `sklearn polynomial_kernel` on the
  very subsets `scoreflow.metrics.kid_subsets` draws.

scoreflow's compile time (`jax.jit(f).lower(...).compile()`) is reported apart from its
run time; run times are medians of `--repeats` calls, scoreflow and peer interleaved so
that load drift on a shared machine hits both. Memory: the growth of process RSS over the
first call after compile (psutil, sampled every 2 ms in a thread; XLA's allocator keeps
memory it freed, so for scoreflow this can read 0), and for scoreflow the scratch bytes of
the compiled executable (`compiled.memory_analysis().temp_size_in_bytes`) and the tile
formula (one `block x block` matrix plus two `block x d` row tiles).

The block size of scoreflow's tiled metrics is chosen on a smaller design size
(`--design-n`, default 4000) among `--blocks`, then used at `--n`.

Run: ``python benchmarks/metrics_cost.py`` (``--quick`` for a smoke run; writes
``benchmarks/metrics_cost.json`` unless ``--out`` says otherwise).
"""

import argparse
import json
import os
import platform
import threading
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
import scipy  # noqa: E402
import scipy.linalg  # noqa: E402
import sklearn  # noqa: E402
from sklearn.metrics.pairwise import euclidean_distances, polynomial_kernel, rbf_kernel  # noqa: E402
from sklearn.neighbors import NearestNeighbors  # noqa: E402

from scoreflow import metrics  # noqa: E402

HERE = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------- data


def feature_sets(n, d, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    a = np.eye(d) + 0.05 * np.random.default_rng(seed + 1).standard_normal((d, d))
    y = rng.standard_normal((n, d)) @ a.T + 0.05
    return x, y


def median_bandwidth(x, y, num=1000):
    """The median heuristic as scoreflow computes it: first `num` rows of each set."""
    z = np.concatenate([x[:num], y[:num]])
    sq = euclidean_distances(z, z, squared=True)
    return float(np.sqrt(np.median(sq[np.triu_indices(len(z), 1)])))


# ----------------------------------------------------------------------------- peers


def np_frechet_sqrtm(x, y):
    m1, m2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = covmean.real
    diff = m1 - m2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def np_frechet_eigh(x, y):
    m1, m2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    w, v = np.linalg.eigh(s1)
    r1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = r1 @ s2 @ r1
    eig = np.linalg.eigvalsh(0.5 * (inner + inner.T))
    diff = m1 - m2
    return float(
        diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(eig, 0, None)).sum()
    )


def _np_gauss_sum(a, b, h, block):
    """sum_ij exp(-|a_i - b_j|^2 / (2 h^2)), NumPy, `block` rows of `a` at a time."""
    bb = (b * b).sum(1)
    total = 0.0
    for i in range(0, len(a), block):
        ab = a[i : i + block]
        d = (ab * ab).sum(1)[:, None] + bb[None, :] - 2.0 * (ab @ b.T)
        np.maximum(d, 0.0, out=d)
        d *= -1.0 / (2 * h * h)
        np.exp(d, out=d)
        total += d.sum()
    return total


def _sk_gauss_sum(a, b, h, block):
    gamma = 1.0 / (2 * h * h)
    return sum(rbf_kernel(a[i : i + block], b, gamma=gamma).sum() for i in range(0, len(a), block))


def _unbiased(sxx, syy, sxy, n, m):
    return sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2.0 * sxy / (n * m)


def np_mmd2(x, y, h, block, ksum=_np_gauss_sum):
    n, m = len(x), len(y)
    # k(a, a) = 1 for the Gaussian kernel: the diagonal sums are n and m.
    sxx = ksum(x, x, h, block) - n
    syy = ksum(y, y, h, block) - m
    sxy = ksum(x, y, h, block)
    return float(_unbiased(sxx, syy, sxy, n, m))


def sk_radii(a, k):
    dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(a).kneighbors(a)
    return dist[:, k] ** 2  # column 0 is the point itself


def np_ball_counts(points, centres, radii, block):
    out = np.empty(len(points), np.int64)
    for i in range(0, len(points), block):
        d = euclidean_distances(points[i : i + block], centres, squared=True)
        out[i : i + block] = (d <= radii[None, :]).sum(1)
    return out


def np_precision_recall(real, fake, k, block):
    rr, rf = sk_radii(real, k), sk_radii(fake, k)
    precision = (np_ball_counts(fake, real, rr, block) > 0).mean()
    recall = (np_ball_counts(real, fake, rf, block) > 0).mean()
    return float(precision), float(recall)


def np_density_coverage(real, fake, k, block):
    rr = sk_radii(real, k)
    density = np_ball_counts(fake, real, rr, block).sum() / (k * len(fake))
    near, _ = NearestNeighbors(n_neighbors=1).fit(fake).kneighbors(real)
    coverage = (near[:, 0] ** 2 <= rr).mean()
    return float(density), float(coverage)


def np_kid(x, y, ix, iy):
    d = x.shape[1]
    vals = []
    for a_idx, b_idx in zip(ix, iy):
        a, b = x[a_idx], y[b_idx]
        kaa = polynomial_kernel(a, a, degree=3, gamma=1.0 / d, coef0=1.0)
        kbb = polynomial_kernel(b, b, degree=3, gamma=1.0 / d, coef0=1.0)
        kab = polynomial_kernel(a, b, degree=3, gamma=1.0 / d, coef0=1.0)
        s = len(a) * (len(a) - 1)
        vals.append(
            (kaa.sum() - np.trace(kaa)) / s + (kbb.sum() - np.trace(kbb)) / s - 2 * kab.mean()
        )
    vals = np.array(vals)
    return float(vals.mean()), float(vals.std(ddof=1) / np.sqrt(len(vals)))


# ----------------------------------------------------------------------------- timing


class PeakRSS:
    """Peak growth of this process's resident set over a `with` block (psutil thread)."""

    def __init__(self, interval=0.002):
        self.interval = interval
        self.proc = psutil.Process()

    def __enter__(self):
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self._stop = threading.Event()

        def watch():
            while not self._stop.is_set():
                self.peak = max(self.peak, self.proc.memory_info().rss)
                time.sleep(self.interval)

        self._t = threading.Thread(target=watch, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)
        self.growth_mb = (self.peak - self.base) / 2**20


def compile_sf(fn, *args):
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - t0


def xla_temp_mb(compiled):
    """Scratch memory XLA allocates for one call (its buffer assignment), beyond in/outputs."""
    return compiled.memory_analysis().temp_size_in_bytes / 2**20


def to_float(out):
    return [float(v) for v in jax.tree_util.tree_leaves(out)]


def race(sf_calls, peers, repeats):
    """Warm (measured for memory) then `repeats` interleaved timed calls of each."""
    values, mem, times = {}, {}, {name: [] for name in [*sf_calls, *peers]}
    for name, call in sf_calls.items():
        with PeakRSS() as p:
            out = jax.block_until_ready(call())
        values[name], mem[name] = to_float(out), p.growth_mb
    for name, call in peers.items():
        with PeakRSS() as p:
            out = call()
        values[name], mem[name] = [float(v) for v in np.atleast_1d(out)], p.growth_mb
    for _ in range(repeats):
        for name, call in sf_calls.items():
            t0 = time.perf_counter()
            jax.block_until_ready(call())
            times[name].append(time.perf_counter() - t0)
        for name, call in peers.items():
            t0 = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - t0)
    return values, mem, {k: float(np.median(v)) for k, v in times.items()}


def rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


# ----------------------------------------------------------------------------- metrics


def sf_fns(name, h, block, kid_key, num_subsets, subset_size):
    """The scoreflow call of metric `name` as a function of (x, y)."""
    if name == "fd":
        return lambda x, y: metrics.frechet_distance(x, y)
    if name == "mmd2":
        kern = metrics.GaussianKernel(bandwidth=h)
        return lambda x, y: metrics.mmd2(x, y, kernel=kern, block_size=block)
    if name == "precision_recall":
        return lambda x, y: metrics.precision_recall(x, y, k=3, block_size=block)
    if name == "density_coverage":
        return lambda x, y: metrics.density_coverage(x, y, k=5, block_size=block)
    if name == "kid":
        return lambda x, y: metrics.kid(
            x, y, num_subsets=num_subsets, subset_size=subset_size, key=kid_key
        )
    raise ValueError(name)


def peer_fns(name, x, y, h, peer_block, kid_key, num_subsets, subset_size):
    if name == "fd":
        return {
            "numpy+scipy.sqrtm": lambda: np_frechet_sqrtm(x, y),
            "numpy eigh": lambda: np_frechet_eigh(x, y),
        }
    if name == "mmd2":
        return {
            f"numpy blocks of {peer_block}": lambda: np_mmd2(x, y, h, peer_block),
            f"sklearn rbf_kernel blocks of {peer_block}": lambda: np_mmd2(
                x, y, h, peer_block, _sk_gauss_sum
            ),
        }
    if name == "precision_recall":
        return {"sklearn NN + blocked distances": lambda: np_precision_recall(x, y, 3, peer_block)}
    if name == "density_coverage":
        return {"sklearn NN + blocked distances": lambda: np_density_coverage(x, y, 5, peer_block)}
    if name == "kid":
        ix, iy = (
            np.asarray(i)
            for i in metrics.kid_subsets(len(x), len(y), num_subsets, subset_size, key=kid_key)
        )
        return {"numpy + sklearn polynomial_kernel": lambda: np_kid(x, y, ix, iy)}
    raise ValueError(name)


def tile_mb(name, block, d, itemsize):
    """Live bytes of one tile step (inputs of the tile, its distance/kernel matrix)."""
    if name in ("mmd2", "precision_recall", "density_coverage"):
        return (block * block + 2 * block * d) * itemsize / 2**20
    return None


BLOCKED = ("mmd2", "precision_recall", "density_coverage")
ALL = ("fd", "mmd2", "precision_recall", "density_coverage", "kid")


def bench(name, x, y, h, block, peer_block, repeats, kid):
    """One metric at one size: scoreflow float64 and float32 against the peers."""
    kid_key, num_subsets, subset_size = kid
    fn = sf_fns(name, h, block, kid_key, num_subsets, subset_size)
    x64, y64 = jnp.asarray(x), jnp.asarray(y)
    x32, y32 = x64.astype(jnp.float32), y64.astype(jnp.float32)
    c64, t64 = compile_sf(fn, x64, y64)
    c32, t32 = compile_sf(fn, x32, y32)
    xla_temp = {"scoreflow f64": xla_temp_mb(c64), "scoreflow f32": xla_temp_mb(c32)}
    sf_calls = {"scoreflow f64": lambda: c64(x64, y64), "scoreflow f32": lambda: c32(x32, y32)}
    peers = peer_fns(name, x, y, h, peer_block, kid_key, num_subsets, subset_size)
    values, mem, times = race(sf_calls, peers, repeats)
    ref = values[next(iter(peers))]
    rows = []
    for impl in [*sf_calls, *peers]:
        rows.append(
            dict(
                metric=name,
                impl=impl,
                n=len(x),
                d=x.shape[1],
                block=block if impl.startswith("scoreflow") and name in BLOCKED else None,
                compile_s={"scoreflow f64": t64, "scoreflow f32": t32}.get(impl),
                run_s=times[impl],
                rss_growth_mb=mem[impl],
                xla_temp_mb=xla_temp.get(impl),
                tile_mb=tile_mb(name, block, x.shape[1], 4 if "f32" in impl else 8)
                if impl.startswith("scoreflow")
                else None,
                value=values[impl],
                rel_diff_vs_ref=rel(values[impl], ref),
                peer_over_sf64=times[impl] / times["scoreflow f64"],
                peer_over_sf32=times[impl] / times["scoreflow f32"],
            )
        )
    return rows


def choose_blocks(design_n, d, blocks, repeats, names):
    """Run time of scoreflow float64 per block size on the design size; the fastest wins.

    The block sizes of one metric are compiled first, then timed in interleaved rounds, so
    that load drift on the shared machine does not favour one of them.
    """
    x, y = feature_sets(design_n, d, seed=1)
    h = median_bandwidth(x, y)
    x64, y64 = jnp.asarray(x), jnp.asarray(y)
    evidence, chosen = [], {}
    for name in names:
        compiled = {}
        for b in blocks:
            c, tc = compile_sf(sf_fns(name, h, b, None, 0, 0), x64, y64)
            jax.block_until_ready(c(x64, y64))
            compiled[b] = (c, tc, [])
        for _ in range(repeats):
            for b, (c, _, runs) in compiled.items():
                t0 = time.perf_counter()
                jax.block_until_ready(c(x64, y64))
                runs.append(time.perf_counter() - t0)
        for b, (c, tc, runs) in compiled.items():
            run = float(np.median(runs))
            evidence.append(
                dict(
                    metric=name,
                    n=design_n,
                    block=b,
                    compile_s=tc,
                    run_s=run,
                    runs_s=runs,
                    xla_temp_mb=xla_temp_mb(c),
                )
            )
            print(
                f"design n={design_n} {name:18s} block {b:5d}: compile {tc:.2f} s, "
                f"run {run:.3f} s (runs {' '.join(f'{r:.3f}' for r in runs)})",
                flush=True,
            )
        chosen[name] = min(compiled, key=lambda b: float(np.median(compiled[b][2])))
    return chosen, evidence


_FD_SIDE = """
import sys, time, numpy as np
n, d, side = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rng = np.random.default_rng(0)
x = rng.normal(size=(n, d))
a = np.eye(d) + 0.05 * rng.normal(size=(d, d))
y = 0.05 + rng.normal(size=(n, d)) @ a.T
if side == "numpy":
    import scipy.linalg
    def f():
        m1, m2 = x.mean(0), y.mean(0)
        s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
        return ((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
else:
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from scoreflow import metrics
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    f = lambda: float(metrics.frechet_distance(xj, yj))
f()
ts = []
for _ in range(7):
    t = time.perf_counter()
    v = f()
    ts.append(time.perf_counter() - t)
print(np.median(ts), v)
"""


def fd_separate(n, dim):
    """FD timed in a fresh process per side (in-process peers share cores with XLA's threads)."""
    import subprocess
    import sys

    out = {}
    for side in ("numpy", "scoreflow", "numpy", "scoreflow"):
        res = subprocess.run(
            [sys.executable, "-c", _FD_SIDE, str(n), str(dim), side],
            capture_output=True,
            text=True,
            check=True,
        )
        t, v = res.stdout.split()
        out.setdefault(side, []).append((float(t), float(v)))
        print(f"FD, separate process, {side}: {float(t) * 1e3:.1f} ms, value {v}", flush=True)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=10000, help="rows of each set")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--design-n", type=int, default=4000, help="size on which block sizes are chosen"
    )
    p.add_argument("--blocks", type=int, nargs="+", default=[512, 1024, 2048])
    p.add_argument("--design-repeats", type=int, default=3)
    p.add_argument("--peer-block", type=int, default=2000, help="rows per NumPy/sklearn block")
    p.add_argument("--kid-subsets", type=int, default=100)
    p.add_argument("--kid-size", type=int, default=1000)
    p.add_argument("--metrics", nargs="+", default=list(ALL), choices=ALL)
    p.add_argument("--quick", action="store_true", help="smoke run: n=1000, design n=600")
    p.add_argument("--out", type=Path, default=HERE / "metrics_cost.json")
    p.add_argument(
        "--fd-separate", action="store_true", help="only time FD, one fresh process per side"
    )
    args = p.parse_args()
    if args.fd_separate:
        fd_separate(args.n, args.dim)
        return
    if args.quick:
        args.n, args.design_n, args.repeats, args.design_repeats = 1000, 600, 2, 1
        args.kid_subsets, args.kid_size, args.blocks = 10, 200, [128, 256]

    load_start = os.getloadavg()
    t_start = time.time()
    names = [m for m in args.metrics if m in BLOCKED]
    chosen, evidence = choose_blocks(
        args.design_n, args.dim, args.blocks, args.design_repeats, names
    )
    print("chosen block sizes:", chosen, flush=True)

    x, y = feature_sets(args.n, args.dim, seed=0)
    h = median_bandwidth(x, y)
    kid = (jr.key(0), args.kid_subsets, min(args.kid_size, args.n))
    rows = []
    for name in args.metrics:
        for r in bench(name, x, y, h, chosen.get(name, 0), args.peer_block, args.repeats, kid):
            rows.append(r)
            cs = f"{r['compile_s']:.2f}" if r["compile_s"] is not None else "-"
            print(
                f"{name:18s} {r['impl']:40s} compile {cs:>6s} s  run {r['run_s']:8.3f} s  "
                f"rss +{r['rss_growth_mb']:7.1f} MB  value {r['value']}  "
                f"rel {r['rel_diff_vs_ref']:.1e}  peer/sf64 {r['peer_over_sf64']:.2f}",
                flush=True,
            )
    result = dict(
        command="python benchmarks/metrics_cost.py "
        + " ".join(
            f"--{k.replace('_', '-')} {v}"
            for k, v in vars(args).items()
            if k in ("n", "dim", "repeats", "design_n", "peer_block")
        ),
        args={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        bandwidth=h,
        chosen_block=chosen,
        design_evidence=evidence,
        rows=rows,
        machine=dict(
            cpus=os.cpu_count(),
            platform=platform.platform(),
            load_start=load_start,
            load_end=os.getloadavg(),
            wall_s=time.time() - t_start,
            versions=dict(
                jax=jax.__version__,
                numpy=np.__version__,
                scipy=scipy.__version__,
                sklearn=sklearn.__version__,
            ),
            memory=(
                "rss_growth_mb: growth of process RSS over the first call after compile "
                "(psutil, sampled every 2 ms; XLA's allocator keeps freed memory, so it can "
                "read 0); xla_temp_mb: scratch bytes of the compiled executable "
                "(compiled.memory_analysis().temp_size_in_bytes)"
            ),
        ),
    )
    args.out.write_text(json.dumps(result, indent=1))
    print("wrote", args.out, "load", load_start, "->", result["machine"]["load_end"])


if __name__ == "__main__":
    main()
