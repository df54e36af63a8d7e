"""Is DDIM's under-dispersion on a Gaussian a bug or its discretisation error?

DDPM's DDIM sampler (eta = 0) with the exact eps of a Gaussian N(mu, diag v) is a linear
map of the prior draw: per step x0_hat = mu + k (x - a_t mu), k = a_t v / (a_t^2 v + s_t^2),
and x_s = a_s x0_hat + s_s (x - a_t x0_hat) / s_t (Song, Meng & Ermon 2021, eq. 12). This
script composes that map in closed form (from the betas, in NumPy, float64) and compares
it with `scoreflow.solve.DDIM()` (the sampler of `scoreflow.models.DDPM.sample(method="ode")`)
on the same prior draws, and both with the data's variance (the sampler ends with the
final denoise E[x0 | x]).

    python benchmarks/ddim_gaussian.py
"""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
import numpy as np  # noqa: E402

import scoreflow as sf  # noqa: E402
from scoreflow import solve  # noqa: E402


def closed_form(ab, idx, mu, v):
    """`(A, b)` with DDIM's output `A z + b` for the prior draw `z`, on grid `idx`.

    The sampler ends with the final denoise $E[x_0 \mid x]$ at the last grid time.
    """
    A, b = np.ones_like(v), np.zeros_like(v)
    for i, j in zip(idx[:-1], idx[1:]):
        at, st = np.sqrt(ab[i - 1]), np.sqrt(1 - ab[i - 1])
        a_s, s_s = np.sqrt(ab[j - 1]), np.sqrt(1 - ab[j - 1])
        k = at * v / (at**2 * v + st**2)
        c0, d0 = k, mu - k * at * mu  # x0_hat = c0 x + d0
        c = a_s * c0 + s_s * (1 - at * c0) / st
        d = a_s * d0 - s_s * at * d0 / st
        A, b = c * A, c * b + d
    at, st = np.sqrt(ab[idx[-1] - 1]), np.sqrt(1 - ab[idx[-1] - 1])
    k = at * v / (at**2 * v + st**2)
    return k * A, k * b + mu - k * at * mu


def main():
    mu, v = np.array([1.0, -1.0]), np.array([0.3, 0.5])
    N = 100
    betas = sf.sde.linear_betas(N, 1e-3, 0.2)
    ab = np.cumprod(1 - np.asarray(betas, np.float64))
    gauss = sf.Gaussian(jnp.asarray(mu), jnp.asarray(v))
    sde = sf.sde.DiscreteVPSDE(betas)
    model = gauss.noised(sde, "eps")  # the exact eps as the model's own output
    z = jr.normal(jr.key(0), (20000, 2), jnp.float64)
    print("steps | max |sampler - closed form| | output var / data var (closed form) | 1 - ratio")
    for n in (10, 20, 50, 100):
        idx = np.unique(np.round(np.linspace(N, 1, n + 1)).astype(int))[::-1]
        grid = solve.CustomGrid(jnp.asarray(idx / N))
        y = solve.solve_probability_flow(sde, model, z, grid=grid, solver=solve.DDIM()).samples
        A, b = closed_form(ab, idx, mu, v)
        err = float(jnp.max(jnp.abs(y - (A[None, :] * z + b[None, :]))))
        r = A**2 / v
        print(f"{n:5d} | {err:.1e} | {np.round(r, 3)} | {np.round(1 - r, 3)}")


if __name__ == "__main__":
    main()
