import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, Bool, Float

from ._mixture import GaussianMixture


def conditional(
    mixture: GaussianMixture,
    mask: Bool[ArrayLike, "..."],
    observation: Float[ArrayLike, "..."],
) -> GaussianMixture:
    r"""The exact law of the unknown coordinates of a mixture given the known ones.

    With known coordinates $k$ (`mask` True) observed at $y_k$ and unknown ones $u$,
    $p(x_u \mid x_k = y_k) = \sum_j \tilde w_j\,N(x_u; m_j, C_j)$ with
    $m_j = \mu_{j,u} + \Sigma_{j,uk}\Sigma_{j,kk}^{-1}(y_k - \mu_{j,k})$,
    $C_j = \Sigma_{j,uu} - \Sigma_{j,uk}\Sigma_{j,kk}^{-1}\Sigma_{j,ku}$ and
    $\tilde w_j \propto w_j N(y_k; \mu_{j,k}, \Sigma_{j,kk})$: a mixture again, with
    reweighted components. This is the target of inpainting.

    Args:
        mixture: the joint law $p$ on `dim` coordinates.
        mask: `(dim,)` concrete boolean array, True = known; at least one known and one
            unknown coordinate.
        observation: `(dim,)` values; only the known entries are read.

    Returns:
        A `GaussianMixture` on the `(~mask).sum()` unknown coordinates, in their order;
        diagonal if `mixture` is.

    Raises:
        ValueError: on a mask of the wrong shape, dtype, or without both kinds of
            coordinate.
    """
    mask_np = np.asarray(mask)
    d = mixture.dim
    if mask_np.shape != (d,) or mask_np.dtype != np.bool_:
        raise ValueError(f"`mask` must be a boolean array of shape ({d},), got {mask_np.shape}.")
    if mask_np.all() or not mask_np.any():
        raise ValueError("`mask` must mark at least one known and one unknown coordinate.")
    observation = jnp.asarray(observation)
    if observation.shape != (d,):
        raise ValueError(f"`observation` must have shape ({d},), got {observation.shape}.")
    k = np.flatnonzero(mask_np)
    u = np.flatnonzero(~mask_np)
    y = observation[k]
    mu_k, mu_u = mixture.means[:, k], mixture.means[:, u]
    if mixture.diagonal:
        var_k = mixture.covariances[:, k]
        log_lik = -0.5 * jnp.sum(
            (y[None, :] - mu_k) ** 2 / var_k + jnp.log(2 * jnp.pi * var_k), axis=-1
        )
        means, covs = mu_u, mixture.covariances[:, u]
    else:
        cov = mixture.covariances
        s_kk = cov[:, k][:, :, k]
        s_uk = cov[:, u][:, :, k]
        s_uu = cov[:, u][:, :, u]
        r = y[None, :] - mu_k
        chol = jnp.linalg.cholesky(s_kk)
        solve = jax.vmap(lambda L, b: jax.scipy.linalg.cho_solve((L, True), b))
        prec_r = solve(chol, r)
        logdet = 2 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), -1)
        log_lik = -0.5 * (jnp.sum(r * prec_r, -1) + logdet + len(k) * jnp.log(2 * jnp.pi))
        means = mu_u + jnp.einsum("jab,jb->ja", s_uk, prec_r)
        gain = jax.vmap(lambda L, b: jax.scipy.linalg.cho_solve((L, True), b))(
            chol, jnp.swapaxes(s_uk, -1, -2)
        )
        covs = s_uu - jnp.einsum("jab,jbc->jac", s_uk, gain)
        covs = 0.5 * (covs + jnp.swapaxes(covs, -1, -2))
    weights = jax.nn.softmax(jnp.log(mixture.weights) + log_lik)
    return GaussianMixture(weights, means, covs)
