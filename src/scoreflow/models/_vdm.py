import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, Shaped

from .. import _checks, losses, solve
from .._custom_types import Key, Scalar
from ..losses import AbstractTimeSampling, LikelihoodWeighting, LowDiscrepancyTime
from ..nn import Categorical, Gaussian
from ..sde import AbstractPrediction, AbstractSDE, LearnedVPSDE
from ._base import AbstractExactLikelihood, AbstractLikelihoodBound, check_event
from ._latent import bin_centres, check_data_range, prepare
from ._score_sde import sample_dynamics


class VDM(AbstractExactLikelihood, AbstractLikelihoodBound, AbstractPrediction):
    r"""Variational diffusion model (Kingma et al. 2021, arXiv:2107.00630).

    An eps network under an SDE whose schedule is learned with it (by default a
    `scoreflow.sde.LearnedVPSDE`: a monotone $\gamma(t) = -\log\mathrm{SNR}(t)$ with
    learnable end points), trained on the continuous-time variational bound (eq. 17-18)

    $$-\log p(x) \le \underbrace{\mathrm{KL}(q(z_T \mid x) \,\|\, p(z_T))}_{\rm prior}
    + \underbrace{E_q[-\log p(x \mid z_{t_{\min}})]}_{\rm reconstruction}
    + \underbrace{\tfrac12\int_{t_{\min}}^T g(t)^2\,E\lVert s_{\theta}(t, z_t) -
    \nabla\log q(z_t \mid x)\rVert^2 dt}_{\rm diffusion}.$$

    The diffusion term is `scoreflow.losses.denoising_score_matching` with
    `LikelihoodWeighting()` ($g^2 = -\mathrm{SNR}'\sigma^4/\alpha^2$, i.e.
    $\gamma'(t)\lVert\hat\varepsilon - \varepsilon\rVert^2$ in VDM's form), summed over
    the event, times $\tfrac12(T - t_{\min})$, with gradients reaching the schedule; its
    times are low-discrepancy (`LowDiscrepancyTime`, appendix I.1) by default. The
    prior is the SDE's own, $N(0, \sigma_T^2 I)$, so the bound describes the model that
    the samplers run. The reconstruction term is VDM's discrete data likelihood
    (appendix C) with `levels`: each element is categorical over the $L$ bin centres
    $c_k$ of `data_range` with logits $-\tfrac12(z/\alpha - c_k)^2 \alpha^2/\sigma^2$ at
    $t_{\min}$; without, a Gaussian $N(x; z/\alpha, \sigma^2/\alpha^2)$ (a bound on a
    density). Float data with `levels` are read as `VAE` reads them (their bin; the
    bound is on the piecewise-constant density, see `_latent.py`), integer data as
    levels.

    It is a `scoreflow.sde.AbstractPrediction` of its SDE, so it samples with every
    solver of `scoreflow.solve` and has the probability-flow likelihood
    $\log p_{t_{\min}}$ (`log_prob`, as `ScoreSDE`) beside its bound (`elbo`).

    With `network_input="gamma"` the network sees the noise level, not the time: it is
    called with $(\gamma(t) - \gamma_0)/(\gamma_1 - \gamma_0)$, $\gamma_0, \gamma_1$
    the schedule's end points at construction (held fixed), as VDM's score network is
    (its released code, `ScoreUNet`). Then $\hat\varepsilon$ is a function of
    $(z_t, \mathrm{SNR})$ and the diffusion term's expectation depends on the schedule
    only through its end points (sec. 5.1, eq. 20): learning the interior moves no noise
    level's target under the network.

    Args:
        network: per-example eps network `(t, x) -> array of x's shape`.
        event_shape: the shape of one example.
        sde: the SDE (default `LearnedVPSDE()`, the linear schedule of VDM's
            $\gamma_{\min} = -13.3$, $\gamma_{\max} = 5$; pass one with a
            `scoreflow.nn.MonotoneMLP` to learn its shape, or any fixed SDE).
        levels: the number of levels of discrete data, or `None` for real data.
        data_range: the interval the levels divide.
        time_sampling: the diffusion term's time sampling.
        network_input: what the network is called with besides the state: `"t"` (the
            time, `network(t, x)`) or `"gamma"` (the normalised noise level above).
    """

    network: Callable[..., Array]
    sde: AbstractSDE
    time_sampling: AbstractTimeSampling
    event_shape: tuple[int, ...] = eqx.field(static=True)
    parameterisation: str = eqx.field(static=True)
    levels: int | None = eqx.field(static=True)
    data_range: tuple[float, float] = eqx.field(static=True)
    network_input: str = eqx.field(static=True)
    gamma_range: tuple[float, float] = eqx.field(static=True)

    def __init__(
        self,
        network: Callable[..., Array],
        *,
        event_shape: tuple[int, ...],
        sde: AbstractSDE | None = None,
        levels: int | None = None,
        data_range: tuple[float, float] = (-1.0, 1.0),
        time_sampling: AbstractTimeSampling = LowDiscrepancyTime(),
        network_input: str = "t",
    ):
        if sde is None:
            sde = LearnedVPSDE()
        if not isinstance(sde, AbstractSDE):
            raise ValueError(f"`sde` must be a `scoreflow.sde.AbstractSDE`, got {sde!r}.")
        if levels is not None:
            _checks.positive_int(levels, "levels", least=2)
        if not isinstance(time_sampling, AbstractTimeSampling):
            raise ValueError(
                "`time_sampling` must be a `scoreflow.losses` time sampling, got "
                f"{time_sampling!r}."
            )
        self.network = network
        self.sde = sde
        self.time_sampling = time_sampling
        self.event_shape = _checks.shape(event_shape, "event_shape")
        self.parameterisation = "eps"
        self.levels = levels
        self.data_range = check_data_range(data_range)
        if network_input not in ("t", "gamma"):
            raise ValueError(f"`network_input` must be 't' or 'gamma', got {network_input!r}.")
        self.network_input = network_input
        ends = [-2.0 * float(sde.log_snr(jnp.asarray(s, float))) for s in (sde.t_min, sde.T)]
        self.gamma_range = (ends[0], ends[1])

    def __call__(self, t, x: Float[Array, "..."]) -> Float[Array, "..."]:
        r"""The predicted noise $\hat\varepsilon(t, x)$ at one example."""
        if self.network_input == "t":
            return self.network(t, x)
        g0, g1 = self.gamma_range
        return self.network((-2.0 * self.sde.log_snr(t) - g0) / (g1 - g0), x)

    def _prepare(self, x):
        x = jnp.asarray(x)
        dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.result_type(float)
        head = Gaussian() if self.levels is None else Categorical(self.levels)
        return prepare(head, x, self.event_shape, self.data_range, dtype)

    def bound_terms(
        self, x: Shaped[Array, "batch ..."], *, key: Key
    ) -> tuple[Float[Array, " batch"], Float[Array, " batch"], Float[Array, " batch"]]:
        r"""The three terms of $-\mathrm{ELBO}$ per example: prior, reconstruction, diffusion.

        The reconstruction term is of the probability mass with `levels` (no
        piecewise-constant density correction), else of the density.
        """
        _checks.key(key)
        xc, levels, _ = self._prepare(x)
        sde = self.sde
        k_diff, k_rec = jr.split(key)
        diffusion = losses.denoising_score_matching(
            sde,
            self,
            xc,
            weighting=LikelihoodWeighting(),
            time_sampling=self.time_sampling,
            reduce="sum",
            per_example=True,
            schedule_gradient=True,
            key=k_diff,
        )
        span = jnp.asarray(sde.T, xc.dtype) - jnp.asarray(sde.t_min, xc.dtype)
        diffusion = 0.5 * span * jnp.asarray(diffusion)
        flat = xc.reshape(xc.shape[0], -1)
        alpha_T, sigma_T = sde.marginal(jnp.asarray(sde.T, xc.dtype))
        prior = 0.5 * (alpha_T / sigma_T) ** 2 * jnp.sum(flat**2, axis=-1)
        alpha, sigma = sde.marginal(jnp.asarray(sde.t_min, xc.dtype))
        eps = jr.normal(k_rec, flat.shape, flat.dtype)
        x_hat = flat + (sigma / alpha) * eps  # z_{t_min} / alpha
        if self.levels is None:
            s2 = (sigma / alpha) ** 2
            rec = 0.5 * jnp.sum(eps**2 + jnp.log(2 * math.pi * s2), axis=-1)
        else:
            centres = bin_centres(jnp.arange(self.levels), self.levels, self.data_range, flat.dtype)
            logits = -0.5 * (x_hat[..., None] - centres[None, None]) ** 2 * (alpha / sigma) ** 2
            log_p = jax.nn.log_softmax(logits, axis=-1)
            lv = levels.reshape(levels.shape[0], -1)
            rec = -jnp.sum(jnp.take_along_axis(log_p, lv[..., None], axis=-1)[..., 0], axis=-1)
        return prior, rec, diffusion

    def elbo(self, x: Shaped[Array, "batch ..."], *, key: Key) -> Float[Array, " batch"]:
        r"""The variational bound on $\log p(x)$ per example, in nats (one draw of each term).

        With `levels` and float data, on the piecewise-constant density of the bins (so
        that `scoreflow.metrics.bits_per_dim` of integer data gives the bound of
        $-\log_2 P(x)/D$); with integer data, on the probability mass.
        """
        prior, rec, diffusion = self.bound_terms(x, key=key)
        _, _, log_width = self._prepare(x)
        return -(prior + rec + diffusion) - log_width

    def loss(self, x: Shaped[Array, "batch ..."], *, key: Key) -> Scalar:
        r"""$-\mathrm{ELBO}$ averaged over the batch (nats per example)."""
        prior, rec, diffusion = self.bound_terms(x, key=key)
        return jnp.mean(prior + rec + diffusion)

    def log_prob(
        self, x: Shaped[Array, "batch ..."], *, key: Key | None = None, **options
    ) -> Float[Array, " batch"]:
        r"""$\log p_{t_{\min}}(x)$ through the probability-flow ODE (as `ScoreSDE.log_prob`).

        The density of the model's $z_{t_{\min}}$ at `x` (for VDM's $\sigma_{t_{\min}}
        \approx 10^{-3}$, of the data); options go to `scoreflow.solve.log_likelihood`.
        """
        check_event(x, self.event_shape)
        return solve.log_likelihood(self.sde, self, x, key=key, **options).log_prob

    def sample(
        self,
        sample_shape: int | tuple[int, ...] = (),
        *,
        method: str = "ode",
        dtype=None,
        key: Key,
        **options,
    ) -> Float[Array, "..."]:
        r"""Solve to $z_{t_{\min}}$ (`"ode"` or `"sde"`), then decode it.

        With `levels`, a draw of the discrete likelihood $p(x \mid z_{t_{\min}})$ (bin
        centres of `data_range`); without, its mean $z_{t_{\min}}/\alpha_{t_{\min}}$.
        Options go to `scoreflow.solve.sample` (`solver`, `grid`, ...).
        """
        _checks.key(key)
        k_solve, k_x = jr.split(key)
        z = sample_dynamics(self, sample_shape, method, dtype, k_solve, options)
        alpha, sigma = self.sde.marginal(jnp.asarray(self.sde.t_min, z.dtype))
        x_hat = z / alpha
        if self.levels is None:
            return x_hat
        centres = bin_centres(jnp.arange(self.levels), self.levels, self.data_range, z.dtype)
        centres_b = centres.reshape(*(1,) * x_hat.ndim, -1)
        logits = -0.5 * (x_hat[..., None] - centres_b) ** 2 * (alpha / sigma) ** 2
        return centres[jr.categorical(k_x, logits, axis=-1)]
