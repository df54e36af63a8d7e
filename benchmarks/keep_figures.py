"""Issue 19's "Keep" figures: time ratio and compile time of every sampler.

For each of scoreflow's samplers, on cases A (2-d ring, 8 components) and B (16-d, 5
components) of `solver_accuracy.py` with the exact mixture denoiser, 4096 samples:

- compile: seconds to lower and compile one jitted `scoreflow.sample` call (wall and
  CPU seconds, `time.process_time()` counting both cores);
- time ratio: least-of-7 run time of the compiled call / (NFE x least-of-20 time of one
  bare jitted denoiser call on the same batch), the definition of issue 4's table; and
  the same run time against a `fori_loop` chaining NFE bare calls in one program (the
  floor any sampler pays, which has no per-call dispatch).

    PYTHONPATH=src:benchmarks python benchmarks/keep_figures.py [--nfes 10 20 50] [--sdes edm vp]

Prints a markdown table (pasted into `benchmarks/RESULTS.md`) and writes
`benchmarks/keep_figures.json`.
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import diffrax as dfx  # noqa: E402
import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
from solver_accuracy import bare_call_time as least  # noqa: E402
from solver_accuracy import case  # noqa: E402

import scoreflow as sf  # noqa: E402

S = sf.solve
HERE = Path(__file__).parent
BATCH = 4096


def samplers():
    """`(name, sample kwargs for an NFE budget)`; NFE counts the final denoise."""
    return [
        ("DDIM (Karras)", lambda n: dict(solver=S.DDIM(), grid=S.KarrasGrid(n - 1))),
        ("DPM++2M (Karras)", lambda n: dict(solver=S.DPMSolverPP(2), grid=S.KarrasGrid(n - 1))),
        ("DPM++3M (Karras)", lambda n: dict(solver=S.DPMSolverPP(3), grid=S.KarrasGrid(n - 1))),
        ("EDM Heun (Karras)", lambda n: dict(solver=S.EDMHeun(), grid=S.KarrasGrid((n - 1) // 2))),
        (
            "EAPC-3 (Karras)",
            lambda n: dict(solver=S.ExponentialAdamsPC(3), grid=S.KarrasGrid(n - 1)),
        ),
        (
            "EAPC-3 (shipped)",
            lambda n: dict(solver=S.ExponentialAdamsPC(3), grid=S.OptimisedGrid(n - 1)),
        ),
        ("diffrax Heun (Karras)", lambda n: dict(grid=S.KarrasGrid((n - 1) // 2))),
        (
            "reverse SDE Euler-Maruyama (default grid)",
            lambda n: dict(method="sde", grid=S.KarrasGrid(n - 1)),
        ),
    ]


def peers(sde, model, dim, dtype, nfe):
    """DDIM's update on the EDM SDE (which is Euler's in sigma) written without scoreflow.

    `(name, function of the key)`: a hand-written `lax.scan` and a bare
    `diffrax.diffeqsolve` (Euler, `StepTo`, default `max_steps`), both with the same
    grid, prior draw and final denoise as `sample(..., solver=DDIM())`; and, the peer of
    the reverse SDE, Euler-Maruyama as a hand-written `lax.scan` drawing one normal per
    step (the floor of any sampler that draws fresh noise each step).
    """
    ts = S.KarrasGrid(nfe - 1).times(sde).astype(dtype)
    batch = jax.vmap(model, in_axes=(None, 0))
    velocity = lambda t, y: (y - batch(t, y)) / t

    def prior(key):
        return sde.T * jr.normal(key, (BATCH, dim), dtype)

    def scan(key):
        body = lambda y, tt: (y + (tt[1] - tt[0]) * velocity(tt[0], y), None)
        y = jax.lax.scan(body, prior(key), (ts[:-1], ts[1:]))[0]
        return batch(ts[-1], y)

    def raw(key):
        term = dfx.ODETerm(lambda t, y, args: velocity(t, y))
        sol = dfx.diffeqsolve(
            term, dfx.Euler(), ts[0], ts[-1], None, prior(key), stepsize_controller=dfx.StepTo(ts)
        )
        return batch(ts[-1], sol.ys[-1])

    def scan_em(key):
        # Euler-Maruyama on EDM's reverse SDE, dx = -2 t score dt + sqrt(2 t) dW: one
        # call and one normal draw (fold_in of the step, as `GridBrownianPath`) a step.
        k_prior, k_path = jr.split(key)

        def body(y, i):
            t, h = ts[i], ts[i] - ts[i + 1]
            z = jr.normal(jr.fold_in(jr.fold_in(k_path, i), 0), y.shape, dtype)
            return y + 2 * h * (batch(t, y) - y) / t + jnp.sqrt(2 * t * h) * z, None

        y = jax.lax.scan(body, prior(k_prior), jnp.arange(ts.shape[0] - 1))[0]
        return batch(ts[-1], y)

    return [
        ("peer: lax.scan (DDIM = Euler)", scan),
        ("peer: diffrax Euler", raw),
        ("peer: lax.scan Euler-Maruyama (draws noise)", scan_em),
    ]


def _compile(draw):
    """`(compiled draw, compile wall s, compile CPU s)` of a function of the key."""
    w0, c0 = time.perf_counter(), time.process_time()
    compiled = jax.jit(draw).lower(jr.key(0)).compile()
    return compiled, time.perf_counter() - w0, time.process_time() - c0


def measure_fn(draw, nfe):
    compiled, wall, cpu = _compile(draw)
    return wall, cpu, least(compiled, jr.key(0), reps=7), nfe


def measure(sde, model, dim, dtype, nfe, kwargs):
    def draw(key):
        return sf.sample(sde, model, (BATCH, dim), dtype=dtype, key=key, **kwargs)

    compiled, wall, cpu = _compile(draw)
    run = least(lambda k: compiled(k).samples, jr.key(0), reps=7)
    return wall, cpu, run, int(compiled(jr.key(0)).nfe)


def floors(model, sde, dim, dtype, nfe):
    x = jnp.ones((BATCH, dim), dtype)
    t = jnp.asarray(sde.T, dtype)
    bare = eqx.filter_jit(model)
    one = least(bare, t, x, reps=20)

    @jax.jit
    def chain(x):
        return jax.lax.fori_loop(0, nfe, lambda i, y: y + 1e-3 * model(t, y), x)

    return one, least(chain, x, reps=7)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nfes", type=int, nargs="+", default=[10, 20, 50])
    ap.add_argument("--sdes", nargs="+", default=["edm", "vp"], choices=["edm", "vp"])
    ap.add_argument("--cases", nargs="+", default=["A", "B"], choices=["A", "B"])
    ap.add_argument("--out", default=str(HERE / "keep_figures.json"))
    ap.add_argument("--only", nargs="+", help="samplers whose name contains one of these")
    args = ap.parse_args()
    rows = []
    print(f"load average {os.getloadavg()}", flush=True)
    for cname in args.cases:
        w, mu, var = case(cname)
        for sde_name in args.sdes:
            # EDM in float64 as solver_accuracy.py; VP in float32, the user's default.
            dtype = jnp.float64 if sde_name == "edm" else jnp.float32
            sde = sf.EDMSDE() if sde_name == "edm" else sf.VPSDE()
            mix = sf.GaussianMixture(
                jnp.asarray(w, dtype), jnp.asarray(mu, dtype), jnp.asarray(var, dtype)
            )
            model = mix.noised(sde, "x0")
            dim = mu.shape[1]
            for nfe in args.nfes:
                one, chain = floors(model, sde, dim, dtype, nfe)
                jobs = [
                    (name, lambda kw=kw: measure(sde, model, dim, dtype, nfe, kw(nfe)))
                    for name, kw in samplers()
                ]
                if sde_name == "edm":
                    jobs += [
                        (name, lambda fn=fn: measure_fn(fn, nfe))
                        for name, fn in peers(sde, model, dim, dtype, nfe)
                    ]
                for name, job in jobs:
                    if args.only and not any(o in name for o in args.only):
                        continue
                    cw, cc, run, used = job()
                    row = dict(
                        case=cname,
                        sde=sde_name,
                        sampler=name,
                        nfe=used,
                        compile_wall=cw,
                        compile_cpu=cc,
                        run_s=run,
                        ratio_bare=run / (used * one),
                        ratio_chain=run / (chain * used / nfe),
                    )
                    rows.append(row)
                    print(row, flush=True)
    print(f"load average {os.getloadavg()}")
    Path(args.out).write_text(json.dumps(rows, indent=1))
    print(
        "\n| sampler | max time ratio (bare) | median | max ratio (chain) "
        "| max compile s (wall) | median compile s (wall) | median compile CPU s |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in dict.fromkeys(r["sampler"] for r in rows):
        rs = [r for r in rows if r["sampler"] == name]
        print(
            f"| {name} | {max(r['ratio_bare'] for r in rs):.2f} "
            f"| {statistics.median(r['ratio_bare'] for r in rs):.2f} "
            f"| {max(r['ratio_chain'] for r in rs):.2f} "
            f"| {max(r['compile_wall'] for r in rs):.2f} "
            f"| {statistics.median(r['compile_wall'] for r in rs):.2f} "
            f"| {statistics.median(r['compile_cpu'] for r in rs):.2f} |"
        )


if __name__ == "__main__":
    main()
