"""How the multistep solvers keep their history: a shifted stack against a ring.

`ExponentialAdamsPC` and `DPMSolverPP(3)` keep their last k denoiser outputs as a
`(k, *shape)` stack, newest first, shifted by concatenation every step, which XLA on
CPU compiles to a copy of the whole stack per step. This times them against the same
solvers with the history as a ring written in place over its oldest entry
(`lax.dynamic_update_index_in_dim`, weights permuted instead; subclasses here),
interleaved in one process so that a
shared machine's load hits both alike: least of `--rounds` runs of each compiled
`sample` call, and of the bare jitted denoiser call, on case B of `solver_accuracy.py`
(16-d, 5 components, exact denoiser, 4096 samples), EDM in float64 and VP in float32
as `keep_figures.py`. Time ratio = run time / (NFE x bare call).

    PYTHONPATH=src:benchmarks python benchmarks/multistep_history.py [--rounds 15]
"""

import argparse
import math
import time

import jax

jax.config.update("jax_enable_x64", True)

import diffrax as dfx  # noqa: E402
import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
from solver_accuracy import case  # noqa: E402

import scoreflow as sf  # noqa: E402
from scoreflow.solve._shared._time import model_term  # noqa: E402
from scoreflow.solve._solvers._base import schedule  # noqa: E402
from scoreflow.solve._solvers._exponential import (  # noqa: E402
    combine,
    exponential_weights,
    exponential_weights_by_order,
)

S = sf.solve
BATCH = 4096


def ring_slots(count, k):
    """Slot of the j-th newest of k entries: the newest in (count - 1) mod k."""
    return (count - 1 - jnp.arange(k)) % k


class RingEAPC(S.ExponentialAdamsPC):
    """`ExponentialAdamsPC` with a ring history: the new output over the oldest, in place."""

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        hist_d, hist_l, count, _ = solver_state
        term, t0, t1 = model_term(terms, t0, t1)
        k, dtype = self.order_, y0.dtype
        _, s0, l0 = schedule(term.sde, t0, dtype)
        a1, s1, l1 = schedule(term.sde, t1, dtype)
        j = jnp.minimum(count, k) - 1
        slots = ring_slots(count, k)
        pred_w = exponential_weights_by_order(hist_l, l0, l1, a1)[j]
        y_pred = (s1 / s0) * y0 + combine(pred_w[slots], hist_d)
        d1 = term.denoise(t1, y_pred)
        nodes = jnp.concatenate([l1[None], hist_l])
        corr_w = exponential_weights_by_order(nodes, l0, l1, a1)[j + 1]
        y1 = (s1 / s0) * y0 + corr_w[0] * d1 + combine(corr_w[1:][slots], hist_d)
        hist_d = jax.lax.dynamic_update_index_in_dim(hist_d, d1, count % k, 0)
        state = (hist_d, nodes[:k], count + 1, y_pred)
        return y1, y1 - y_pred, dict(y0=y0, y1=y1), state, dfx.RESULTS.successful

    def last_denoised(self, terms, solver_state, t1, y1):
        hist_d, _, count, y_pred = solver_state
        alpha, _, _ = schedule(terms.sde, t1, y1.dtype)
        newest = jax.lax.dynamic_index_in_dim(hist_d, (count - 1) % self.order_, 0, False)
        return newest + (y1 - y_pred) / alpha


class RingDPMPP3(S.DPMSolverPP):
    """`DPMSolverPP(3)` with a ring history."""

    def __init__(self):
        super().__init__(3)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        prev_d, prev_l, count = solver_state
        term, t0, t1 = model_term(terms, t0, t1)
        dtype = y0.dtype
        _, s0, l0 = schedule(term.sde, t0, dtype)
        a1, s1, l1 = schedule(term.sde, t1, dtype)
        d0 = term.denoise(t0, y0)
        h = l1 - l0
        em1 = jnp.expm1(-h)
        base = (s1 / s0) * y0 - a1 * em1 * d0
        slots = ring_slots(count, 2)
        d1, l_1 = jax.lax.dynamic_index_in_dim(prev_d, slots[0], 0, False), prev_l[0]
        r0 = jnp.where(count >= 1, (l0 - l_1) / h, 1.0)
        y1 = jnp.where(count >= 1, base - a1 * em1 * (0.5 / r0) * (d0 - d1), base)
        nodes = jnp.stack([l0, l_1, jnp.where(count >= 2, prev_l[1], l_1 - 1.0)])
        w = exponential_weights(nodes, l0, l1, a1)
        y3 = (s1 / s0) * y0 + w[0] * d0 + combine(w[1:][slots], prev_d)
        y1 = jnp.where(count >= 2, y3, y1)
        new_d = jax.lax.dynamic_update_index_in_dim(prev_d, d0, count % 2, 0)
        new_l = jnp.concatenate([l0[None], prev_l[:-1]], axis=0)
        return y1, None, dict(y0=y0, y1=y1), (new_d, new_l, count + 1), dfx.RESULTS.successful


def once(fn, *args):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--nfes", type=int, nargs="+", default=[10, 20, 50])
    args = ap.parse_args()
    w, mu, var = case("B")
    solvers = [
        ("EAPC-3, shifted", S.ExponentialAdamsPC(3)),
        ("EAPC-3, ring", RingEAPC(3)),
        ("DPM++3M, shifted", S.DPMSolverPP(3)),
        ("DPM++3M, ring", RingDPMPP3()),
        ("DDIM (no history)", S.DDIM()),
    ]
    print("| SDE, dtype | NFE | " + " | ".join(n for n, _ in solvers) + " |")
    print("|---|---|" + "---|" * len(solvers))
    for sde_name in ("edm", "vp"):
        dtype = jnp.float64 if sde_name == "edm" else jnp.float32
        sde = sf.EDMSDE() if sde_name == "edm" else sf.VPSDE()
        mix = sf.GaussianMixture(*(jnp.asarray(a, dtype) for a in (w, mu, var)))
        model = mix.noised(sde, "x0")
        bare = eqx.filter_jit(model)
        x, t = jnp.ones((BATCH, mu.shape[1]), dtype), jnp.asarray(sde.T, dtype)
        for nfe in args.nfes:
            fns = {}
            for name, solver in solvers:

                def draw(key, solver=solver):
                    grid = S.KarrasGrid(nfe - 1)
                    out = sf.sample(
                        sde,
                        model,
                        (BATCH, mu.shape[1]),
                        dtype=dtype,
                        key=key,
                        solver=solver,
                        grid=grid,
                    )
                    return out.samples, out.nfe

                fns[name] = jax.jit(draw).lower(jr.key(0)).compile()
            used = {n: int(f(jr.key(0))[1]) for n, f in fns.items()}
            best = dict.fromkeys(fns, math.inf)
            one = math.inf
            jax.block_until_ready(bare(t, x))
            for _ in range(args.rounds):
                one = min(one, once(bare, t, x))
                for n, f in fns.items():
                    best[n] = min(best[n], once(f, jr.key(0)))
            cells = [f"{best[n] * 1e3:.2f} ms, {best[n] / (used[n] * one):.2f}" for n in fns]
            print(
                f"| {sde_name}, {dtype.__name__} | {nfe} | " + " | ".join(cells) + " |", flush=True
            )
        print(f"(bare call {one * 1e3:.3f} ms on {sde_name})")


if __name__ == "__main__":
    main()
