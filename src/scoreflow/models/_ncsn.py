from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float

from .. import _checks, losses, solve
from .._custom_types import Key, Scalar
from ..sde import VESDE, AbstractPrediction
from ._base import AbstractGenerativeModel, check_event, check_method


def geometric_sigmas(sigma_max: float = 10.0, sigma_min: float = 0.01, num_levels: int = 10):
    r"""NCSN's geometric ladder $\sigma_1 > \dots > \sigma_L$ (Song & Ermon 2019, sec. 4.2)."""
    return jnp.asarray(np.geomspace(sigma_max, sigma_min, num_levels))


def ladder_sde(sigmas) -> VESDE:
    r"""A `VESDE` whose noise levels cover the ladder, so that $\sigma_i = \sigma(t_i)$.

    The VE marginal has $\sigma_T^2 = \sigma_{\max}^2 - \sigma_{\min}^2$, so `sigma_max`
    is set for $\sigma_T = 1.01\,\sigma_1$: the top of the ladder is inside the SDE's
    range however close its levels are (a single level included).
    """
    sigma_min = 0.5 * sigmas[-1]
    sigma_max = jnp.sqrt((1.01 * sigmas[0]) ** 2 + sigma_min**2)
    return VESDE(sigma_min=sigma_min, sigma_max=sigma_max, t_min=1e-6)


class NCSN(AbstractGenerativeModel, AbstractPrediction):
    r"""Noise-conditional score network (Song & Ermon 2019, arXiv:1907.05600).

    A score network $s_{\theta}(\sigma, x)$ trained on a ladder of noise levels by
    noise-conditional score matching (eq. 6, $\lambda(\sigma) = \sigma^2$), which is
    `scoreflow.losses.denoising_score_matching` with the score parameterisation and a
    `DiscreteTime` sampling of the ladder's times, and sampled by annealed Langevin
    dynamics (Algorithm 1, `scoreflow.solve.annealed_langevin`) with the final denoising
    step of Jolicoeur-Martineau et al. 2021 (arXiv:2009.05475). The ladder is read as
    noise levels of a `VESDE` (`ladder_sde`): `model(t, x)` calls the network with
    $\sigma_t$, so the model is a score `AbstractPrediction` like any other. It has no
    likelihood.

    Args:
        network: per-example score network `(sigma, x) -> array` (the noise level is
            its first argument).
        event_shape: the shape of one example.
        sigmas: strictly decreasing `(L,)` noise levels (default `geometric_sigmas()`).
    """

    network: Callable[..., Array]
    sigmas: Float[Array, " L"]
    # Narrower than `AbstractPrediction.sde`: safe, a module is immutable.
    sde: VESDE  # pyright: ignore[reportIncompatibleVariableOverride]
    event_shape: tuple[int, ...] = eqx.field(static=True)
    parameterisation: str = eqx.field(static=True)

    def __init__(self, network: Callable[..., Array], *, event_shape: tuple[int, ...], sigmas=None):
        self.network = network
        self.sigmas = geometric_sigmas() if sigmas is None else jnp.asarray(sigmas)
        if self.sigmas.ndim != 1:
            raise ValueError(f"`sigmas` must be 1-d, got shape {self.sigmas.shape}.")
        s = _checks.concrete(self.sigmas)
        if s is not None:
            _checks.check(bool(np.all(s > 0)), "sigmas", "must be positive.")
            _checks.check(bool(np.all(np.diff(s) < 0)), "sigmas", "must be strictly decreasing.")
        self.sde = ladder_sde(self.sigmas)  # pyright: ignore[reportIncompatibleVariableOverride]
        self.event_shape = tuple(event_shape)
        self.parameterisation = "score"

    def __call__(self, t, x: Float[Array, "..."]) -> Float[Array, "..."]:
        r"""$s_\theta(\sigma_t, x)$ at one example."""
        # The ladder is a hyperparameter: no gradient may reach (and so train) it.
        sigma = jax.lax.stop_gradient(self.sde.marginal(t)[1]).astype(x.dtype)
        return self.network(sigma, x)

    def loss(self, x: Float[Array, "batch ..."], *, key: Key) -> Scalar:
        """Noise-conditional score matching on a batch."""
        check_event(x, self.event_shape)
        times = solve.ladder_times(self.sde, self.sigmas.astype(x.dtype))
        return losses.denoising_score_matching(
            self.sde, self, x, time_sampling=losses.DiscreteTime(times), key=key
        )

    def sample(
        self,
        sample_shape: int | tuple[int, ...] = (),
        *,
        method: str = "langevin",
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
            sample_shape: the batch shape (an int `n` is `(n,)`).
            method: `"langevin"` (the only one).
            steps_per_level: $T$.
            step_size: $\epsilon$.
            denoise: finish with $x + \sigma_L^2 s_{\theta}(\sigma_L, x)$.
            dtype: floating dtype.
            key: PRNG key.

        Returns:
            `(*sample_shape, *event_shape)` samples.
        """
        check_method(method, ("langevin",))
        dtype = _checks.float_dtype(dtype)
        shape, n = self._flat_shape(sample_shape)
        _checks.key(key)
        sigmas = self.sigmas.astype(dtype)
        k0, k = jr.split(key)
        y0 = sigmas[0] * jr.normal(k0, (n, *self.event_shape), dtype)
        res = solve.annealed_langevin(
            self.sde,
            self,
            y0,
            ladder=sigmas,
            step_size=step_size,
            steps_per_level=steps_per_level,
            denoise=denoise,
            key=k,
        )
        return res.samples.reshape(*shape, *self.event_shape)
