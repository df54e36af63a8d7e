from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float

from .. import _checks, losses, solve
from .._custom_types import Key, Scalar
from ..sde import VESDE


def geometric_sigmas(sigma_max: float = 10.0, sigma_min: float = 0.01, num_levels: int = 10):
    r"""NCSN's geometric ladder $\sigma_1 > \dots > \sigma_L$ (Song & Ermon 2019, sec. 4.2)."""
    return jnp.asarray(np.geomspace(sigma_max, sigma_min, num_levels))


class _AtNoiseLevel(eqx.Module):
    # Reads a sigma-conditioned network as a (t, x) model of the ladder's VE SDE.
    network: Callable
    sde: VESDE

    def __call__(self, t, x):
        sigma = self.sde.marginal(t)[1].astype(x.dtype)
        return self.network(sigma, x)


def ladder_sde(sigmas) -> VESDE:
    r"""A `VESDE` whose noise levels cover the ladder, so that $\sigma_i = \sigma(t_i)$."""
    return VESDE(sigma_min=0.5 * sigmas[-1], sigma_max=1.01 * sigmas[0], t_min=1e-6)


class NCSN(eqx.Module):
    r"""Noise-conditional score network (Song & Ermon 2019, arXiv:1907.05600).

    A score network $s_{\theta}(\sigma, x)$ trained on a ladder of noise levels with
    `scoreflow.losses.ncsn_loss` (eq. 6, $\lambda(\sigma) = \sigma^2$) and sampled by
    annealed Langevin dynamics (Algorithm 1) through `scoreflow.solve.annealed_langevin`
    (Euler–Maruyama on `scoreflow.sde.langevin_terms` at each level), with the final
    denoising step of Jolicoeur-Martineau et al. 2021 (arXiv:2009.05475). The ladder is
    read as noise levels of a `VESDE` (`ladder_sde`), the network being called with
    $\sigma_t$.

    Args:
        network: per-example score network `(sigma, x) -> array` (the noise level is
            its first argument).
        sigmas: strictly decreasing `(L,)` noise levels (default `geometric_sigmas()`).
    """

    network: Callable[..., Array]
    sigmas: Float[Array, " L"]

    def __init__(self, network: Callable[..., Array], sigmas=None):
        self.network = network
        self.sigmas = geometric_sigmas() if sigmas is None else jnp.asarray(sigmas)
        s = _checks.concrete(self.sigmas)
        if self.sigmas.ndim != 1:
            raise ValueError(f"`sigmas` must be 1-d, got shape {self.sigmas.shape}.")
        if s is not None:
            _checks.check(bool(np.all(s > 0)), "sigmas", "must be positive.")
            _checks.check(bool(np.all(np.diff(s) < 0)), "sigmas", "must be strictly decreasing.")

    def loss(self, x: Float[Array, "batch ..."], *, key: Key) -> Scalar:
        """Noise-conditional score matching on a batch."""
        return losses.ncsn_loss(self.network, self.sigmas, x, key=key)

    def sample(
        self,
        shape: tuple[int, ...],
        *,
        steps_per_level: int = 100,
        step_size: float = 2e-5,
        denoise: bool = True,
        dtype=None,
        key: Key,
    ) -> Float[Array, "..."]:
        r"""Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1).

        Level $i$ runs `steps_per_level` Euler–Maruyama steps of the Langevin SDE with
        step $\alpha_i = \epsilon\,\sigma_i^2/\sigma_L^2$, starting from
        $N(0, \sigma_1^2 I)$.

        Args:
            shape: `(batch, *event)`.
            steps_per_level: $T$.
            step_size: $\epsilon$.
            denoise: finish with $x + \sigma_L^2 s_{\theta}(\sigma_L, x)$.
            dtype: floating dtype.
            key: PRNG key.

        Returns:
            The samples.
        """
        dtype = jnp.result_type(float) if dtype is None else dtype
        sigmas = self.sigmas.astype(dtype)
        k0, k = jr.split(key)
        x = sigmas[0] * jr.normal(k0, tuple(shape), dtype)
        sde = ladder_sde(self.sigmas)
        res = solve.annealed_langevin(
            sde,
            _AtNoiseLevel(self.network, sde),
            x,
            ladder=sigmas,
            step_size=step_size,
            steps_per_level=steps_per_level,
            parameterisation="score",
            denoise=denoise,
            key=k,
        )
        return res.samples
