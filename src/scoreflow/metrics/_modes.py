r"""Mode coverage of samples from a model of a Gaussian mixture (2-d rings and grids).

The protocol of the GAN literature on the ring of 8 and the grid of 25 Gaussians
(Metz et al. 2017, "Unrolled GANs", sec. 3.1; Srivastava et al. 2017, "VEEGAN",
arXiv:1705.07761, sec. 5.1): a sample is of *high quality* if it lies within 3
standard deviations of its nearest mode, and a mode is *captured* if at least
`min_count` high-quality samples fall to it.
"""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array

from .. import _checks
from ..analytic import GaussianMixture
from . import _samples


class ModeCoverage(eqx.Module):
    r"""What `mode_coverage` returns.

    Attributes:
        modes_captured: the number of modes with at least `min_count` high-quality samples.
        num_modes: the number of modes $K$.
        high_quality: the share of samples within `num_std` standard deviations of their
            nearest mode.
        counts: `(K,)` high-quality samples per mode.
        kl_modes: $\mathrm{KL}(\hat\pi \,\|\, \pi)$ of the high-quality samples' mode
            histogram $\hat\pi$ against the mixture weights $\pi$, in nats (the
            reverse KL of PacGAN, Lin et al. 2018); 0 when the mass per mode is right.
    """

    modes_captured: Array
    num_modes: int = eqx.field(static=True)
    high_quality: Array
    counts: Array
    kl_modes: Array


def mode_coverage(
    samples: Array, mixture: GaussianMixture, *, num_std: float = 3.0, min_count: int = 1
) -> ModeCoverage:
    r"""Modes captured and the share of high-quality samples (see the module docstring).

    The nearest mode is the component of smallest Mahalanobis distance
    $\sqrt{(x - \mu_k)^\top \Sigma_k^{-1} (x - \mu_k)}$, which for the isotropic,
    equal-variance rings and grids is the Euclidean nearest mean in units of the standard
    deviation, as in the papers.

    Args:
        samples: `(n, dim)` model samples.
        mixture: the `scoreflow.analytic.GaussianMixture` the model was trained on.
        num_std: the radius in standard deviations (3).
        min_count: high-quality samples a mode needs to count as captured (VEEGAN counts a
            mode with one; raise it to ignore stray samples).

    Returns:
        A `ModeCoverage`.
    """
    x = _samples.as_rows(samples, "samples")
    if x.shape[1] != mixture.dim:
        raise ValueError(
            f"`samples` must have {mixture.dim} dimensions (the mixture's), got {x.shape[1]}."
        )
    _checks.positive(num_std, "num_std")
    _checks.positive_int(min_count, "min_count")
    return _mode_coverage(x, mixture, float(num_std), min_count)


@eqx.filter_jit
def _mode_coverage(x, mixture, num_std, min_count):
    dtype = jnp.result_type(x.dtype, mixture.means.dtype)
    x = x.astype(dtype)
    means = mixture.means.astype(dtype)
    chol = jnp.linalg.cholesky(mixture.full_covariances().astype(dtype))
    diff = x[:, None, :] - means[None]  # (n, K, dim)
    # Mahalanobis distance via the Cholesky factor, component by component.
    sol = jnp.linalg.solve(chol[None], diff[..., None])[..., 0]
    dist = jnp.sqrt((sol**2).sum(-1))  # (n, K)
    nearest = jnp.argmin(dist, axis=1)
    good = jnp.min(dist, axis=1) <= num_std
    k = means.shape[0]
    counts = jnp.zeros(k, jnp.int32).at[nearest].add(good.astype(jnp.int32))
    total = jnp.maximum(counts.sum(), 1).astype(dtype)
    share = counts.astype(dtype) / total
    w = mixture.weights.astype(dtype)
    kl = jnp.where(share > 0, share * (jnp.log(jnp.where(share > 0, share, 1.0)) - jnp.log(w)), 0.0)
    return ModeCoverage(
        modes_captured=(counts >= min_count).sum(),
        num_modes=k,
        high_quality=good.mean(dtype=dtype),
        counts=counts,
        kl_modes=kl.sum(),
    )
