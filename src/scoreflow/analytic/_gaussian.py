import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._custom_types import Key
from ..sde import AbstractSDE
from ._mixture import GaussianMixture, NoisyMixture


class Gaussian(eqx.Module):
    r"""A Gaussian $N(\mu, \Sigma)$: a one-component `GaussianMixture`.

    Args:
        mean: `(dim,)`.
        covariance: `(dim,)` diagonal variances or `(dim, dim)` full covariance.
    """

    mixture: GaussianMixture

    def __init__(self, mean, covariance):
        mean = jnp.asarray(mean)
        covariance = jnp.asarray(covariance)
        if mean.ndim != 1:
            raise ValueError(f"`mean` must have shape (dim,), got {mean.shape}.")
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
