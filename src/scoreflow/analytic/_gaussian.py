import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .. import _checks
from .._custom_types import Key
from ..sde import AbstractSDE
from ._mixture import GaussianMixture, NoisyMixture


class Gaussian(eqx.Module):
    r"""A Gaussian $N(\mu, \Sigma)$: a one-component `GaussianMixture`.

    Args:
        mean: `(dim,)`.
        covariance: `(dim,)` diagonal variances or `(dim, dim)` full covariance.

    Raises:
        ValueError: as `GaussianMixture`, naming `mean` and `covariance`.
    """

    mixture: GaussianMixture

    def __init__(self, mean, covariance):
        mean = jnp.asarray(mean)
        covariance = jnp.asarray(covariance)
        if mean.ndim != 1:
            raise ValueError(f"`mean` must have shape (dim,), got {mean.shape}.")
        d = mean.shape[0]
        if covariance.shape not in ((d,), (d, d)):
            raise ValueError(
                f"`covariance` must have shape (dim,) = {(d,)} (diagonal) or (dim, dim) = "
                f"{(d, d)}, got {covariance.shape}."
            )
        for name, value in (("mean", mean), ("covariance", covariance)):
            v = _checks.concrete(value)
            if v is not None and v.dtype.kind == "f" and not bool(np.all(np.isfinite(v))):
                raise ValueError(f"`{name}` must be finite, got {v}.")
        self.mixture = GaussianMixture(jnp.ones(1, mean.dtype), mean[None], covariance[None])

    @property
    def mean(self) -> Float[Array, " dim"]:
        return self.mixture.means[0]

    def covariance(self) -> Float[Array, "dim dim"]:
        return self.mixture.full_covariances()[0]

    def log_prob(self, x: Float[Array, "*batch dim"]) -> Float[Array, "*batch"]:
        return self.mixture.log_prob(x)

    def sample(self, num: int, *, key: Key) -> Float[Array, "{num} dim"]:
        return self.mixture.sample(num, key=key)

    def noised(self, sde: AbstractSDE, parameterisation: str = "score") -> NoisyMixture:
        r"""The exact noisy marginals $N(\\alpha_t\\mu, \\alpha_t^2\\Sigma+\\sigma_t^2 I)$."""
        return NoisyMixture(self.mixture, sde, parameterisation)
