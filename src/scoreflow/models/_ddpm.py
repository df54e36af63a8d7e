from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.scipy.stats import norm
from jaxtyping import Array, Float

from .. import _checks, losses, solve
from .._custom_types import Key, Scalar
from ..sde import AbstractPrediction, DiscreteVPSDE, linear_betas
from ._base import AbstractExactLikelihood, AbstractLikelihoodBound, check_event, check_method
from ._score_sde import sample_dynamics

VARIANCES = ("small", "large")


def _log_diff_cdf(lo, hi):
    # log(Phi(hi) - Phi(lo)) for lo < hi, computed on the side of zero where the two
    # CDFs are far from one (no cancellation in either tail).
    right = (lo + hi) > 0
    a = jnp.where(right, -hi, lo)
    b = jnp.where(right, -lo, hi)
    log_a, log_b = norm.logcdf(a), norm.logcdf(b)
    return log_b + jnp.log1p(-jnp.exp(log_a - log_b))


def _discretised_gaussian_log_prob(x, mean, std, levels, data_range):
    # Ho et al. 2020, eq. 13: the Gaussian's mass over each pixel's bin, the outermost
    # bins extended to infinity, summed over the event.
    lo, hi = data_range
    half = 0.5 * (hi - lo) / levels
    # The first and last bins are told apart at mid-bin, safe from rounding of x.
    lower = jnp.where(x < lo + 2 * half, -jnp.inf, (x - half - mean) / std)
    upper = jnp.where(x > hi - 2 * half, jnp.inf, (x + half - mean) / std)
    return jnp.sum(_log_diff_cdf(lower, upper))


def sampling_options(sde: DiscreteVPSDE, method: str, num_steps, solver) -> dict:
    """DDPM's sampler: a grid on the training steps and its default solver per method."""
    check_method(method, ("ode", "sde"))
    N = sde.num_steps
    n = (N if method == "sde" else min(50, N)) if num_steps is None else num_steps
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= N:
        raise ValueError(f"`num_steps` must be an int in [1, {N}], got {n!r}.")
    idx = np.unique(np.round(np.linspace(N, 1, n + 1)).astype(int))[::-1]
    if solver is None:
        solver = solve.StochasticDDIM(1.0) if method == "sde" else solve.DDIM()
    return dict(grid=solve.CustomGrid(jnp.asarray(idx / N)), solver=solver)


def l_simple(sde: DiscreteVPSDE, model, x, *, labels=None, key: Key) -> Scalar:
    r"""$L_{\rm simple}$ (Ho et al. 2020, eq. 14): denoising score matching on the steps."""
    time_sampling = losses.DiscreteTime(sde.step_times())
    return losses.denoising_score_matching(
        sde, model, x, time_sampling=time_sampling, labels=labels, key=key
    )


class DDPM(AbstractExactLikelihood, AbstractLikelihoodBound, AbstractPrediction):
    r"""Denoising diffusion probabilistic model (Ho et al. 2020, arXiv:2006.11239).

    An eps network trained with $L_{\rm simple}$ (eq. 14), which is denoising score
    matching in the eps parameterisation with $\lambda = \sigma^2$ on the discrete steps
    $t_i = i/N$ (`scoreflow.losses.DiscreteTime`). The schedule is embedded exactly as a
    `scoreflow.sde.DiscreteVPSDE`, so the model samples through `scoreflow.solve`
    (ancestral sampling, DDIM or any probability-flow solver) and has two likelihoods:
    the exact one of its probability-flow ODE (`log_prob`) and the discrete evidence
    lower bound that Ho et al. report in bits/dim (`elbo`).

    Args:
        network: per-example eps network `(t, x) -> array`; it sees step $i$ as
            $t = i/N$.
        event_shape: the shape of one example.
        betas: `(N,)` betas (default `linear_betas(1000)`).
    """

    network: Callable[..., Array]
    # Narrower than `AbstractPrediction.sde`: safe, a module is immutable.
    sde: DiscreteVPSDE  # pyright: ignore[reportIncompatibleVariableOverride]
    event_shape: tuple[int, ...] = eqx.field(static=True)
    parameterisation: str = eqx.field(static=True)

    def __init__(self, network: Callable[..., Array], *, event_shape: tuple[int, ...], betas=None):
        self.network = network
        self.sde = DiscreteVPSDE(linear_betas() if betas is None else betas)  # pyright: ignore[reportIncompatibleVariableOverride]
        self.event_shape = tuple(event_shape)
        self.parameterisation = "eps"  # Ho et al.'s network predicts the noise

    def __call__(self, t, x: Float[Array, "..."]) -> Float[Array, "..."]:
        r"""The predicted noise $\varepsilon_\theta(t, x)$ at one example."""
        return self.network(t, x)

    def loss(self, x: Float[Array, "batch ..."], *, key: Key) -> Scalar:
        r"""$L_{\rm simple}$ on a batch (denoising score matching on DDPM's steps)."""
        check_event(x, self.event_shape)
        return l_simple(self.sde, self, x, key=key)

    def sample(
        self,
        sample_shape: int | tuple[int, ...] = (),
        *,
        method: str = "sde",
        num_steps: int | None = None,
        solver=None,
        dtype=None,
        key: Key,
    ) -> Float[Array, "..."]:
        r"""Sample by ancestral sampling (`"sde"`) or DDIM (`"ode"`) on the training steps.

        Args:
            sample_shape: the batch shape (an int `n` is `(n,)`).
            method: `"sde"`: the reverse SDE, by default with
                `scoreflow.solve.StochasticDDIM(eta=1)`, which is Ho et al.'s Algorithm 2
                exactly on the training grid; `"ode"`: the probability-flow ODE, by
                default with `DDIM()` (Song, Meng & Ermon 2021, $\eta = 0$).
            num_steps: steps, on the training steps $t_i = i/N$ evenly strided (default
                all $N$ for `"sde"`, 50 for `"ode"`).
            solver: another scoreflow or diffrax solver of that method.
            dtype: dtype of the noise.
            key: PRNG key.

        Returns:
            `(*sample_shape, *event_shape)` samples.
        """
        options = sampling_options(self.sde, method, num_steps, solver)
        return sample_dynamics(self, sample_shape, method, dtype, key, options)

    def log_prob(
        self, x: Float[Array, "batch ..."], *, key: Key | None = None, **options
    ) -> Float[Array, " batch"]:
        r"""$\log p_{t_{\min}}(x)$ by the probability-flow ODE of the embedded SDE.

        `t_min` is the first step $1/N$: the density of the data noised by DDPM's first
        step. Options go to `scoreflow.solve.log_likelihood`.
        """
        check_event(x, self.event_shape)
        return solve.log_likelihood(self.sde, self, x, key=key, **options).log_prob

    def elbo(
        self,
        x: Float[Array, "batch ..."],
        *,
        levels: int | None = None,
        data_range: tuple[float, float] = (-1.0, 1.0),
        variance: str = "small",
        key: Key,
    ) -> Float[Array, " batch"]:
        r"""The evidence lower bound of Ho et al. 2020 (eq. 5), per example, in nats.

        $\log p(x_0) \ge -\mathbb{E}_q[L_N + \sum_{i=2}^N L_{i-1} + L_0]$ with
        $L_N = \mathrm{KL}(q(x_N \mid x_0) \,\|\, N(0, I))$, the Gaussian KLs
        $L_{i-1} = \mathrm{KL}(q(x_{i-1} \mid x_i, x_0) \,\|\, p_\theta(x_{i-1} \mid x_i))$
        in closed form, and the decoder $L_0 = -\log p_\theta(x_0 \mid x_1)$. Every term
        is computed (the sum over $i$ is exact; each $x_i$ is one draw of
        $q(x_i \mid x_0)$), which costs $N$ network evaluations per example.

        With `levels` the decoder is Ho et al.'s discretised Gaussian (eq. 13): `x` are
        bin centres of `levels` equal bins of `data_range` (e.g. `data.digits(...)`,
        `levels=17`) and the bound is on the probability mass, so
        $-\mathrm{ELBO}/(D\ln 2)$ is their bits/dim. Without, the decoder is a Gaussian
        density and the bound is on the density of continuous `x`.

        The reverse variances $\sigma_i^2$ are $\tilde\beta_i$ (`"small"`) or $\beta_i$
        (`"large"`), with $\sigma_1^2 = \tilde\beta_2$ in both, as in Ho et al.'s code
        ($\tilde\beta_1 = 0$).

        Args:
            x: `(batch, *event)` data.
            levels: number of quantisation levels of the data, or `None`.
            data_range: the interval the levels divide.
            variance: `"small"` or `"large"`.
            key: PRNG key of the draws of $x_i$.

        Returns:
            `(batch,)` lower bounds on $\log p(x)$ in nats.
        """
        check_event(x, self.event_shape)
        _checks.check(variance in VARIANCES, "variance", f"must be one of {VARIANCES}.")
        if levels is not None:
            _checks.positive_int(levels, "levels", least=2)
        dtype = x.dtype
        betas = jax.lax.stop_gradient(self.sde.betas.astype(dtype))
        log_ab = jnp.cumsum(jnp.log1p(-betas))
        ab = jnp.exp(log_ab)
        ab_prev = jnp.concatenate([jnp.ones((1,), dtype), ab[:-1]])
        post_var = betas * (1 - ab_prev) / (1 - ab)
        model_var = post_var if variance == "small" else betas
        model_var = model_var.at[0].set(post_var[1])
        times = self.sde.step_times().astype(dtype)
        d = int(np.prod(self.event_shape))
        # L_N: KL(N(sqrt(ab_N) x0, 1 - ab_N) || N(0, 1)), summed over the event.
        prior = 0.5 * jnp.sum(
            ab[-1] * x.reshape(x.shape[0], -1) ** 2 - ab[-1] - jnp.log1p(-ab[-1]), axis=-1
        )

        def one(x0, k):
            def term(i):
                eps = jr.normal(jr.fold_in(k, i), x0.shape, dtype)
                xt = jnp.sqrt(ab[i]) * x0 + jnp.sqrt(1 - ab[i]) * eps
                eps_hat = self(times[i], xt)
                coef = betas[i] / jnp.sqrt(1 - ab[i])
                mean = (xt - coef * eps_hat) / jnp.sqrt(1 - betas[i])
                var = model_var[i]
                # KL(q || p) for i >= 1 (steps 2..N), per event, closed form; at i = 0
                # (where q's variance is 0) it is not used, and kept finite.
                q_var = jnp.where(i == 0, var, post_var[i])
                diff2 = jnp.sum((coef * (eps_hat - eps)) ** 2) / (1 - betas[i])
                kl = 0.5 * (d * (jnp.log(var) - jnp.log(q_var) + q_var / var - 1) + diff2 / var)
                std = jnp.sqrt(var)
                if levels is None:
                    dec = jnp.sum(norm.logpdf(x0, mean, std))
                else:
                    dec = _discretised_gaussian_log_prob(x0, mean, std, levels, data_range)
                return jnp.where(i == 0, -dec, kl)

            return jnp.sum(jax.lax.map(term, jnp.arange(times.shape[0])))

        keys = jr.split(key, x.shape[0])
        return -(prior + jax.vmap(one)(x, keys))
