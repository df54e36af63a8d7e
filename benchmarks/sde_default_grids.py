"""Is the reverse SDE's default grid a trap? (issue 19, target 7)

A 2-d mixture with one narrow component (weights 1/2, 1/2; means (-2, 0), (2, 0);
standard deviations 1 and 0.05): sample it by Euler-Maruyama on the reverse SDE with the
exact score, final denoise on, 1000 steps on the uniform-in-t, log-SNR and Karras grids,
and report the mean log-density (nats/dim) of the samples below that of exact samples
(4000 of each; positive = the samples sit where the data is less dense: the narrow
component is smeared). Also the probability-flow ODE's default (`diffrax.Heun()` on
`KarrasGrid(32)`) and the new defaults of `solve_reverse_sde` / `solve_probability_flow`
(`grid=None`). Float64.

    PYTHONPATH=src python benchmarks/sde_default_grids.py [--steps 1000] [--n 4000]
"""

import argparse

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402

import scoreflow as sf  # noqa: E402

S = sf.solve


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--n", type=int, default=4000)
    args = ap.parse_args()
    mix = sf.GaussianMixture(
        jnp.asarray([0.5, 0.5]),
        jnp.asarray([[-2.0, 0.0], [2.0, 0.0]]),
        jnp.asarray([[1.0, 1.0], [0.05**2, 0.05**2]]),
    )
    exact = float(jnp.mean(mix.log_prob(mix.sample(args.n, key=jr.key(1))))) / 2
    sdes = {
        "VP": sf.VPSDE(),
        "sub-VP": sf.SubVPSDE(),
        "VE": sf.VESDE(),
        "EDM": sf.EDMSDE(),
        "discrete VP (DDPM, 1000 betas)": sf.sde.DiscreteVPSDE(jnp.linspace(1e-4, 0.02, 1000)),
    }
    n = args.steps
    print(f"exact samples: {exact:.3f} nats/dim")
    print("\n| SDE | uniform | log-SNR | Karras | new default (SDE) | ODE default |")
    print("|---|---|---|---|---|---|")
    for name, sde in sdes.items():
        model = mix.noised(sde)
        cells = []
        for grid in (S.UniformGrid(n), S.LogSNRGrid(n), S.KarrasGrid(n), None):
            r = sf.solve.sample(sde, model, (args.n, 2), method="sde", grid=grid, key=jr.key(2))
            cells.append(exact - float(jnp.mean(mix.log_prob(r.samples))) / 2)
        r = sf.solve.sample(sde, model, (args.n, 2), key=jr.key(2))
        cells.append(exact - float(jnp.mean(mix.log_prob(r.samples))) / 2)
        print(f"| {name} | " + " | ".join(f"{c:.3f}" for c in cells) + " |", flush=True)


if __name__ == "__main__":
    main()
