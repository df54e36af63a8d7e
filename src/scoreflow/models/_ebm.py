r"""Energy-based models $p(x) \propto e^{-E(x)}$ and the ways to train them."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float

from .. import _checks, analytic, losses, solve
from .._custom_types import Key, Scalar
from ..sde import Prediction
from ._base import (
    AbstractExactLikelihood,
    AbstractStatefulModel,
    AbstractUnnormalisedLikelihood,
    check_event,
    check_method,
)
from ._ncsn import ladder_sde


class AbstractEBMTraining(eqx.Module):
    """How an `EBM` is trained: its objective and the objective's settings.

    The three trainings are `ContrastiveDivergence`, `NoiseContrastive` and
    `EnergyScoreMatching`.
    """


class ContrastiveDivergence(AbstractEBMTraining):
    r"""Contrastive divergence with short Langevin chains, persistent or from the data.

    Each step runs `num_steps` steps of scoreflow's own `solve.ula` (or `solve.mala`) on
    the current energy and takes their end points as the model's samples in
    `losses.contrastive_divergence`. With `persistent=False` the chains start at the
    batch (CD-k, Hinton 2002). With `persistent=True` they continue from a
    `losses.ReplayBuffer` of `buffer_size` chains, a fraction `restart` of which start
    again from uniform noise each step (Du & Mordatch 2019, arXiv:1903.08689: 5 %); the
    buffer is the model's training state (`AbstractStatefulModel`).

    Args:
        num_steps: Langevin steps per training step ($k$).
        step_size: the chains' step $h$ (the Langevin SDE at temperature one:
            $x + \tfrac h2 \nabla\log p + \sqrt h z$; no rescaled noise).
        persistent: continue chains from the replay buffer (else start at the data).
        buffer_size: chains in the buffer.
        restart: the probability that a drawn chain restarts from noise.
        sampler: `"langevin"` (ULA) or `"mala"` (Metropolis-adjusted).
        energy_penalty: $\alpha$ of `losses.contrastive_divergence`.
    """

    num_steps: int = eqx.field(static=True, default=20)
    step_size: float = eqx.field(static=True, default=1e-2)
    persistent: bool = eqx.field(static=True, default=True)
    buffer_size: int = eqx.field(static=True, default=10_000)
    restart: float = eqx.field(static=True, default=0.05)
    sampler: str = eqx.field(static=True, default="langevin")
    energy_penalty: float = eqx.field(static=True, default=0.1)

    def __check_init__(self):
        _checks.positive_int(self.num_steps, "num_steps")
        _checks.positive(self.step_size, "step_size")
        _checks.positive_int(self.buffer_size, "buffer_size")
        _checks.check(0 <= self.restart <= 1, "restart", f"must lie in [0, 1], got {self.restart}.")
        check_method(self.sampler, ("langevin", "mala"))
        _checks.nonnegative(self.energy_penalty, "energy_penalty")


class NoiseContrastive(AbstractEBMTraining):
    r"""Noise-contrastive estimation against a known density.

    The loss is `losses.noise_contrastive_estimation`; the model's
    $\log p_m = -E - c$ with $c$ = `EBM.log_z` learned beside the energy.

    Args:
        noise: the noise distribution: any exact-likelihood model of scoreflow (a
            flow, a fitted `GMM`) on the EBM's events, or a `scoreflow.analytic`
            `Gaussian` / `GaussianMixture` on the flattened events (`gaussian_noise`
            fits one to data). It is not trained.
        ratio: noise samples per data point, $\nu$.
    """

    noise: AbstractExactLikelihood | analytic.Gaussian | analytic.GaussianMixture
    ratio: float = eqx.field(static=True, default=1.0)

    def __check_init__(self):
        _checks.positive(self.ratio, "ratio")
        if not isinstance(
            self.noise, AbstractExactLikelihood | analytic.Gaussian | analytic.GaussianMixture
        ):
            raise ValueError(
                "`noise` must be a scoreflow model with an exact likelihood or an analytic "
                f"Gaussian (mixture), got {type(self.noise).__name__}."
            )

    def log_prob(self, u, event_shape):
        noise = _stopped(self.noise)
        if isinstance(noise, AbstractExactLikelihood):
            return noise.log_prob(u[None])[0]
        return noise.log_prob(u.reshape(-1))

    def sample(self, num, event_shape, dtype, *, key):
        noise = _stopped(self.noise)
        if isinstance(noise, AbstractExactLikelihood):
            y = noise.sample(num, key=key)
        else:
            y = noise.sample(num, key=key).reshape(num, *event_shape)
        return jax.lax.stop_gradient(y).astype(dtype)


class EnergyScoreMatching(AbstractEBMTraining):
    r"""Score matching of the energy's score $-\nabla E$ (no sampling, no normaliser).

    Args:
        kind: `"denoising"` (Vincent 2011, at the one noise level `sigma`: the model
            then fits the data convolved with $N(0, \sigma^2 I)$), `"sliced"` (Song et
            al. 2019) or `"implicit"` (Hyvärinen 2005; the exact Hessian trace, $d$
            passes).
        sigma: the noise level of `"denoising"`.
        num_slices: projections per example of `"sliced"`.
    """

    kind: str = eqx.field(static=True, default="denoising")
    sigma: float = eqx.field(static=True, default=0.1)
    num_slices: int = eqx.field(static=True, default=1)

    def __check_init__(self):
        check_method(self.kind, ("denoising", "sliced", "implicit"))
        _checks.positive(self.sigma, "sigma")
        _checks.positive_int(self.num_slices, "num_slices")


def gaussian_noise(x: Float[Array, "n ..."], *, reg: float = 1e-3) -> analytic.Gaussian:
    r"""The Gaussian fitted to `x` (flattened), covariance + `reg` $I$: NCE's usual noise."""
    _checks.batch_array(x, "x")
    flat = x.reshape(x.shape[0], -1)
    mean = flat.mean(0)
    cov = jnp.cov(flat, rowvar=False).reshape(flat.shape[1], flat.shape[1])
    return analytic.Gaussian(mean, cov + reg * jnp.eye(flat.shape[1], dtype=flat.dtype))


def _stopped(tree):
    return jax.tree_util.tree_map(
        lambda a: jax.lax.stop_gradient(a) if eqx.is_inexact_array(a) else a, tree
    )


class _NegEnergy(eqx.Module):
    energy: Callable

    def __call__(self, x):
        return -self.energy(x)


class _Score(eqx.Module):
    energy: Callable

    def __call__(self, x):
        return -jax.grad(self.energy)(x)


class _TimedScore(eqx.Module):
    energy: Callable

    def __call__(self, t, x):
        del t
        return -jax.grad(self.energy)(x)


class _Flat(eqx.Module):
    energy: Callable
    event_shape: tuple[int, ...] = eqx.field(static=True)

    def __call__(self, u):
        return -self.energy(u.reshape(self.event_shape))


class EBM(AbstractUnnormalisedLikelihood, AbstractStatefulModel):
    r"""An energy-based model $p(x) = e^{-E(x)}/Z$ (LeCun et al. 2006; Du & Mordatch 2019).

    `log_prob` is $-E(x) - c$, with $c$ = `log_z`: zero unless learned (by
    `NoiseContrastive`) or plugged in (`with_log_normaliser(model.log_normaliser(...)
    .log_z)`); `log_normaliser` estimates $\log Z$ by annealed importance sampling
    (`solve.ais`). Samples come from Langevin dynamics on $-\nabla E$ started from
    uniform noise on $[\text{low}, \text{high}]^d$ (ULA, or MALA with
    `method="mala"`). `training` chooses the objective; `ContrastiveDivergence` with
    `persistent=True` makes the model stateful (its replay buffer, kept by
    `scoreflow.train.fit`).

    Args:
        energy: $E$ on one example, `x -> scalar` (e.g. `scoreflow.nn.EnergyMLP`).
        event_shape: the shape of one example.
        training: an `AbstractEBMTraining` (default `ContrastiveDivergence()`).
        low: lower end of the noise box the chains start from.
        high: upper end of the noise box.
        log_z: the initial $c$.

    Raises:
        ValueError: if `energy` does not map one example to a scalar, or on a bad box.
    """

    energy: Callable[[Array], Array]
    training: AbstractEBMTraining
    log_z: Float[Array, ""]
    event_shape: tuple[int, ...] = eqx.field(static=True)
    low: float = eqx.field(static=True)
    high: float = eqx.field(static=True)

    def __init__(
        self,
        energy: Callable[[Array], Array],
        *,
        event_shape: tuple[int, ...],
        training: AbstractEBMTraining | None = None,
        low: float = -1.0,
        high: float = 1.0,
        log_z: float = 0.0,
    ):
        self.energy = energy
        self.event_shape = tuple(event_shape)
        self.training = ContrastiveDivergence() if training is None else training
        _checks.less(low, high, "low", "high")
        self.low, self.high = float(low), float(high)
        self.log_z = jnp.asarray(log_z, jnp.result_type(float))
        if not isinstance(self.training, AbstractEBMTraining):
            raise ValueError(
                "`training` must be ContrastiveDivergence(...), NoiseContrastive(...) or "
                f"EnergyScoreMatching(...), got {type(self.training).__name__}."
            )
        out = jax.eval_shape(energy, jax.ShapeDtypeStruct(self.event_shape, self.log_z.dtype))
        if getattr(out, "shape", None) != ():
            raise ValueError(
                f"`energy` must map one example of shape {self.event_shape} to a scalar, "
                f"got {getattr(out, 'shape', type(out).__name__)}."
            )

    # Likelihood.

    def unnormalised_log_prob(self, x: Float[Array, "batch ..."]) -> Float[Array, " batch"]:
        r"""$-E(x)$ per example."""
        check_event(x, self.event_shape)
        return -jax.vmap(self.energy)(x)

    def log_prob(self, x: Float[Array, "batch ..."], *, key: Key | None = None) -> Array:
        r"""$-E(x) - c$ per example (normalised only once $c = \log Z$)."""
        del key
        return self.unnormalised_log_prob(x) - self.log_z.astype(x.dtype)

    def log_normaliser(
        self,
        *,
        num_chains: int = 256,
        betas: int | Array = 1000,
        kernel: "solve.AbstractAISKernel | None" = None,
        base: analytic.Gaussian | analytic.GaussianMixture | None = None,
        dtype=None,
        key: Key,
    ) -> "solve.AISResult":
        r"""$\log Z$ by annealed importance sampling (Neal 2001), with its standard error.

        Runs `solve.ais` on the flattened events from `base` (default: the Gaussian
        $N(m, w^2 I)$ on the noise box's centre $m$ and half-width $w$; a Gaussian fitted
        to the data, `gaussian_noise`, is usually closer) to $e^{-E}$.

        Args:
            num_chains: independent AIS chains.
            betas: number of intermediate distributions, or the inverse temperatures.
            kernel: the transition (default: `solve.MALAKernel` with step $10^{-2}$ on the
                target and half the default base's variance on the base; tune it to
                your energy).
            base: a normalised Gaussian (mixture) on the flattened events.
            dtype: floating dtype of the chains.
            key: PRNG key.

        Returns:
            A `solve.AISResult` (``log_z``, ``stderr``, ...). Its $\hat Z$ is unbiased, so
            its $\log\hat Z$ is low in expectation.
        """
        dtype = _checks.float_dtype(dtype)
        d = int(np.prod(self.event_shape))
        if base is None:
            mid, half = 0.5 * (self.low + self.high), 0.5 * (self.high - self.low)
            base = analytic.Gaussian(jnp.full((d,), mid, dtype), jnp.full((d,), half**2, dtype))
        if kernel is None:
            half_width = 0.5 * (self.high - self.low)
            kernel = solve.MALAKernel(step_size=1e-2, base_step_size=0.5 * half_width**2)
        return solve.ais(
            _Flat(self.energy, self.event_shape),
            base,
            num_chains=num_chains,
            betas=betas,
            kernel=kernel,
            key=key,
        )

    def with_log_normaliser(self, log_z) -> "EBM":
        """The model with $c$ = `log_z` (an array, a float or a `solve.AISResult`)."""
        value = getattr(log_z, "log_z", log_z)
        return eqx.tree_at(lambda m: m.log_z, self, jnp.asarray(value, self.log_z.dtype))

    # Sampling.

    def _chains(self, y0, sampler, num_steps, step_size, *, key):
        if sampler == "mala":
            res = solve.mala(
                _NegEnergy(self.energy),
                y0,
                step_size=step_size,
                num_steps=num_steps,
                score=_Score(self.energy),
                throw=False,
                key=key,
            )
        else:
            res = solve.ula(
                _Score(self.energy),
                y0,
                step_size=step_size,
                num_steps=num_steps,
                throw=False,
                key=key,
            )
        return res.samples

    def _noise(self, n, dtype, *, key):
        return jr.uniform(key, (n, *self.event_shape), dtype, self.low, self.high)

    def sample(
        self,
        sample_shape: int | tuple[int, ...] = (),
        *,
        method: str = "langevin",
        num_steps: int = 500,
        step_size: float = 1e-2,
        y0: Array | None = None,
        dtype=None,
        key: Key,
    ) -> Float[Array, "..."]:
        r"""Langevin samples of $e^{-E}$, from uniform noise on the box (or from `y0`).

        Args:
            sample_shape: the batch shape (an int `n` is `(n,)`).
            method: `"langevin"` (ULA, biased by $O(h)$) or `"mala"` (exact in the limit).
            num_steps: Langevin steps.
            step_size: $h$.
            y0: `(prod(sample_shape), *event_shape)` initial states instead of noise.
            dtype: floating dtype.
            key: PRNG key.

        Returns:
            `(*sample_shape, *event_shape)` samples (NaN where a chain diverged: check
            with `scoreflow.metrics.drop_nonfinite`).
        """
        check_method(method, ("langevin", "mala"))
        dtype = _checks.float_dtype(dtype)
        shape, n = self._flat_shape(sample_shape)
        _checks.key(key)
        k0, k = jr.split(key)
        if y0 is None:
            y0 = self._noise(n, dtype, key=k0)
        elif y0.shape != (n, *self.event_shape):
            raise ValueError(
                f"`y0` must have shape {(n, *self.event_shape)} for this `sample_shape`, "
                f"got {y0.shape}."
            )
        if n == 0:
            return jnp.zeros((*shape, *self.event_shape), dtype)
        x = self._chains(y0, method, num_steps, step_size, key=k)
        return x.reshape(*shape, *self.event_shape)

    # Training.

    def init_state(self, *, key: Key) -> losses.ReplayBuffer | None:
        """The replay buffer of persistent CD (uniform noise on the box), else `None`."""
        t = self.training
        if isinstance(t, ContrastiveDivergence) and t.persistent:
            return losses.ReplayBuffer(
                t.buffer_size, self.event_shape, low=self.low, high=self.high, key=key
            )
        return None

    def loss(self, x: Float[Array, "batch ..."], *, key: Key) -> Scalar:
        """The training objective of a batch (persistent CD: chains from fresh noise)."""
        return self.stateful_loss(x, None, key=key)[0]

    def stateful_loss(
        self, x: Float[Array, "batch ..."], state: losses.ReplayBuffer | None, *, key: Key
    ) -> tuple[Scalar, losses.ReplayBuffer | None]:
        """The objective of `training` on a batch, and the updated replay buffer."""
        check_event(x, self.event_shape)
        t = self.training
        if isinstance(t, ContrastiveDivergence):
            return self._cd_loss(t, x, state, key=key)
        if isinstance(t, NoiseContrastive):
            m = max(1, int(round(t.ratio * x.shape[0])))
            y = t.sample(m, self.event_shape, x.dtype, key=key)
            c = self.log_z.astype(x.dtype)
            loss = losses.noise_contrastive_estimation(
                lambda u: -self.energy(u) - c,
                lambda u: t.log_prob(u, self.event_shape).astype(x.dtype),
                x,
                y,
            )
            return loss, state
        assert isinstance(t, EnergyScoreMatching)
        return self._sm_loss(t, x, key=key), state

    def _cd_loss(self, t, x, state, *, key):
        k_draw, k_chain = jr.split(key)
        n = x.shape[0]
        idx = None
        if not t.persistent:
            y0 = x
        elif state is None:
            y0 = self._noise(n, x.dtype, key=k_draw)
        else:
            idx, y0 = state.draw(n, restart=t.restart, key=k_draw)
            y0 = y0.astype(x.dtype)
        # The chains sample the current model; no gradient flows through them.
        frozen = _stopped(self)
        neg = frozen._chains(y0, t.sampler, t.num_steps, t.step_size, key=k_chain)
        loss = losses.contrastive_divergence(self.energy, x, neg, energy_penalty=t.energy_penalty)
        new = state if idx is None or state is None else state.update(idx, neg)
        return loss, new

    def _sm_loss(self, t, x, *, key):
        if t.kind == "denoising":
            sigmas = jnp.asarray([t.sigma], x.dtype)
            sde = ladder_sde(sigmas)
            times = solve.ladder_times(sde, sigmas)
            model = Prediction(sde, _TimedScore(self.energy), "score")
            return losses.denoising_score_matching(
                sde, model, x, time_sampling=losses.DiscreteTime(times), key=key
            )
        score = _Score(self.energy)
        if t.kind == "sliced":
            return losses.sliced_score_matching(
                None, score, x, slices=solve.Hutchinson(t.num_slices), key=key
            )
        return losses.implicit_score_matching(None, score, x, key=key)
