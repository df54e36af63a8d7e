r"""The Fréchet distance between Gaussians fitted to two feature sets ("FID").

$d^2 = \|\mu_1 - \mu_2\|^2 + \operatorname{tr}\Sigma_1 + \operatorname{tr}\Sigma_2
- 2 \operatorname{tr}(\Sigma_1^{1/2} \Sigma_2 \Sigma_1^{1/2})^{1/2}$
(Dowson & Landau 1982; Heusel et al. 2017, arXiv:1706.08500, eq. 6 for FID).

The trace term is computed from symmetric eigendecompositions only:
$\Sigma_1^{1/2}$ from `eigh` of $\Sigma_1$, then the eigenvalues of the symmetric
positive semi-definite $\Sigma_1^{1/2}\Sigma_2\Sigma_1^{1/2}$, clipped at zero, whose
square roots sum to the trace. $(\Sigma_1\Sigma_2)^{1/2}$ has the same trace, but
`scipy.linalg.sqrtm` of that non-symmetric product returns complex values or NaN when
a covariance is near singular, which this never does.
"""

from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from . import _samples


def _psd_sqrt(s: Array) -> Array:
    w, v = jnp.linalg.eigh(s)
    return (v * jnp.sqrt(jnp.maximum(w, 0.0))[None, :]) @ v.T


def gaussian_frechet_distance(
    mean1: Float[ArrayLike, " d"],
    cov1: Float[ArrayLike, "d d"],
    mean2: Float[ArrayLike, " d"],
    cov2: Float[ArrayLike, "d d"],
) -> Array:
    r"""The squared Fréchet (2-Wasserstein) distance of $N(\mu_1, \Sigma_1)$, $N(\mu_2, \Sigma_2)$.

    Args:
        mean1: $\mu_1$, `(d,)`.
        cov1: $\Sigma_1$, `(d, d)` symmetric positive semi-definite.
        mean2: $\mu_2$, `(d,)`.
        cov2: $\Sigma_2$, `(d, d)`.

    Returns:
        The scalar $d^2$ (the module docstring gives the formula; clipped at zero).
    """
    mean1, mean2 = jnp.asarray(mean1), jnp.asarray(mean2)
    cov1, cov2 = jnp.asarray(cov1), jnp.asarray(cov2)
    d = mean1.shape[0]
    if mean1.shape != (d,) or mean2.shape != (d,) or cov1.shape != (d, d) or cov2.shape != (d, d):
        raise ValueError(
            f"Means must be (d,) and covariances (d, d) of one d, got {mean1.shape}, "
            f"{cov1.shape}, {mean2.shape}, {cov2.shape}."
        )
    dtype = jnp.result_type(mean1, cov1, mean2, cov2, float)
    mean1, mean2, cov1, cov2 = (a.astype(dtype) for a in (mean1, mean2, cov1, cov2))
    cov1, cov2 = 0.5 * (cov1 + cov1.T), 0.5 * (cov2 + cov2.T)
    r1 = _psd_sqrt(cov1)
    inner = r1 @ cov2 @ r1
    eig = jnp.linalg.eigvalsh(0.5 * (inner + inner.T))
    tr_sqrt = jnp.sqrt(jnp.maximum(eig, 0.0)).sum()
    diff = mean1 - mean2
    return jnp.maximum(diff @ diff + jnp.trace(cov1) + jnp.trace(cov2) - 2.0 * tr_sqrt, 0.0)


def _moments(x: Array) -> tuple[Array, Array]:
    mu = x.mean(0)
    xc = x - mu[None]
    return mu, (xc.T @ xc) / (x.shape[0] - 1)


def frechet_distance(
    x: Float[ArrayLike, "n d"],
    y: Float[ArrayLike, "m d"],
    *,
    features: Callable[[Array], Array] | None = None,
    eps: float | None = None,
) -> Array:
    r"""The Fréchet distance between Gaussians fitted to features `x` and `y`.

    Means and unbiased covariances of each set, then `gaussian_frechet_distance`. Feed
    features of any network (`digits_features` for the digits, or raw data in low
    dimension). Compute in float64 for figures to report: the trace term is a difference
    of large numbers.

    Args:
        x: `(n, d)` features (any event shape is flattened).
        y: `(m, d)` features of the same dimension.
        features: a feature function `(n, ...) -> (n, F)` applied to `x` and `y` first
            (e.g. `digits_features`, or any network); default: `x` and `y` are features.
        eps: if given, $\epsilon I$ is added to both covariances. Without it, a set with
            no more samples than dimensions ($n \le d$: a singular sample covariance whose
            figure mostly measures the sample size) is refused.

    Returns:
        The scalar squared distance $d^2$ (what FID papers report as "FID").

    Raises:
        ValueError: on different dimensions, non-finite features, a `features` function
            that does not return `(n, F)`, or $n \le d$ without `eps`.
    """
    x, y = _samples.featurise(features, x, y, ("x", "y"))
    x, y = _samples.pair(x, y, ("x", "y"), least=2)
    d = x.shape[1]
    if eps is None:
        for name, a in (("x", x), ("y", y)):
            if a.shape[0] <= d:
                raise ValueError(
                    f"`{name}` has {a.shape[0]} samples of {d} features: its covariance is "
                    "singular. Pass more samples than features, or `eps=` (e.g. 1e-6) to add "
                    "eps * I to both covariances and report that you did."
                )
    elif not (np.isfinite(eps) and eps >= 0):
        raise ValueError(f"`eps` must be a finite number >= 0, got {eps!r}.")
    return _frechet(x, y, float(eps or 0.0))


@eqx.filter_jit
def _frechet(x, y, eps):
    mu1, s1 = _moments(x)
    mu2, s2 = _moments(y)
    if eps:
        eye = jnp.eye(x.shape[1], dtype=x.dtype)
        s1, s2 = s1 + eps * eye, s2 + eps * eye
    return gaussian_frechet_distance(mu1, s1, mu2, s2)
