"""Shared test helpers: the SDE registry, the mixtures of SOLVER_ACCURACY.md, comparisons."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import scoreflow as sf

# Every SDE of `scoreflow.sde`; the SDE tests run on each.
SDES = {
    "vp": lambda: sf.VPSDE(),
    "subvp": lambda: sf.SubVPSDE(),
    "ve": lambda: sf.VESDE(sigma_min=0.01, sigma_max=20.0),
    "edm": lambda: sf.EDMSDE(),
    "discrete_vp": lambda: sf.sde.DiscreteVPSDE(sf.sde.linear_betas(100, 1e-3, 0.1)),
}


def tree_allclose(a, b, *, rtol=1e-7, atol=0.0) -> bool:
    """Whether two pytrees have the same structure and allclose array leaves."""
    la, ta = jax.tree_util.tree_flatten(eqx.filter(a, eqx.is_array))
    lb, tb = jax.tree_util.tree_flatten(eqx.filter(b, eqx.is_array))
    if ta != tb:
        return False
    return all(
        x.shape == y.shape and np.allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)
        for x, y in zip(la, lb)
    )


def brownian_increment(path: sf.solve.GridBrownianPath, t0, t1) -> jax.Array:
    """`path.evaluate(t0, t1)`: without `use_levy` the increment is a plain array."""
    dw = path.evaluate(t0, t1)
    assert isinstance(dw, jax.Array)
    return dw


def case_a(dtype=jnp.float64, weights=None):
    """Case A: 8 Gaussians on a circle of radius 4, std 0.5."""
    ang = 2 * np.pi * np.arange(8) / 8
    means = 4 * np.stack([np.cos(ang), np.sin(ang)], 1)
    w = np.full(8, 1 / 8) if weights is None else np.asarray(weights)
    return sf.GaussianMixture(
        jnp.asarray(w, dtype), jnp.asarray(means, dtype), jnp.full((8, 2), 0.25, dtype)
    )


def case_b(dtype=jnp.float64):
    """Case B: 5 diagonal Gaussians in 16 dimensions."""
    mu = np.random.default_rng(0).normal(0.0, 3.0, size=(5, 16))
    std = np.random.default_rng(1).uniform(0.3, 1.5, size=(5, 16))
    w = np.random.default_rng(2).dirichlet(np.ones(5))
    return sf.GaussianMixture(
        jnp.asarray(w, dtype), jnp.asarray(mu, dtype), jnp.asarray(std**2, dtype)
    )


def full_cov_mixture(dtype=jnp.float64):
    """A 3-d mixture with correlated (full) covariances."""
    rng = np.random.default_rng(5)
    A = rng.normal(size=(2, 3, 3))
    covs = A @ np.swapaxes(A, -1, -2) + 0.3 * np.eye(3)
    return sf.GaussianMixture(
        jnp.asarray([0.3, 0.7], dtype),
        jnp.asarray(rng.normal(0, 2, size=(2, 3)), dtype),
        jnp.asarray(covs, dtype),
    )
