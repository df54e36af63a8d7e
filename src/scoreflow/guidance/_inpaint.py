r"""Inpainting and imputation as score transforms: replacement and posterior sampling.

Both take an unconditional prediction, a boolean `mask` of the event (True = known) and
the `observation` $y$ of the known coordinates, and return a prediction, so they work
with every sampler of scoreflow (probability flow, reverse SDE, the diffusion solvers,
the calibrated grid, annealed Langevin). The target is $p(x_u \mid x_k = y)$, which
`scoreflow.analytic.conditional` gives in closed form for a mixture.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from .. import _checks
from .._custom_types import ScalarLike
from ..sde import AbstractPrediction, AbstractWrappedPrediction, convert
from ._common import check_mask, check_prediction, shift


class _AbstractInpainting(AbstractWrappedPrediction):
    # The shared fields and boundary checks of the two inpainting transforms.
    model: AbstractPrediction
    mask: Bool[Array, "..."]
    observation: Float[Array, "..."]

    def _check(self, x):
        if x.shape != self.mask.shape:
            raise ValueError(
                f"`mask` must have the shape of one example {x.shape}, got {self.mask.shape}."
            )

    def fill(self, x: Float[Array, "..."]) -> Float[Array, "..."]:
        """Samples with their known coordinates set to the observation exactly."""
        return jnp.where(self.mask, self.observation.astype(x.dtype), x)


class Replacement(_AbstractInpainting):
    r"""Inpainting by replacement (Song et al. 2021, arXiv:2011.13456, app. I.2).

    The known coordinates are driven along the observation noised to the current level,
    $x_{t,k} \sim N(\alpha_t y, \sigma_t^2)$, while the unknown ones follow the model's
    score at the joint state, $\nabla_{x_u}\log p_t(x_u, x_{t,k})$. Written as a score
    transform: on the known coordinates the prediction is that of a point mass at $y$
    (the denoiser is $y$, the score $-(x_k - \alpha_t y)/\sigma_t^2$), whose reverse-time
    SDE has exactly the forward-noised marginals $N(\alpha_t y, \sigma_t^2)$ at every
    $t$ (the probability-flow ODE carries $y$ with the initial noise held fixed). On the
    unknown coordinates it is the model's own prediction. Finish with `fill` to set the
    known coordinates to $y$.

    Like NCSN's Algorithm 2 this is approximate: it conditions on a *noisy* observation,
    so where $p(x_u \mid y)$ has well-separated modes their weights are set at noise
    levels where $y$ is still blurred, and they come out biased (the tutorial and
    `benchmarks/RESULTS.md` measure it against `scoreflow.analytic.conditional`).
    `PosteriorSampling` does not condition on a noised $y$.

    Args:
        model: the unconditional prediction.
        mask: boolean array of one example's shape, True = known.
        observation: array of the same shape; only the known entries are read.

    Raises:
        ValueError: on a mask that is not boolean, an observation of another shape or
            with non-finite known entries; when called, a mask of another shape than the
            example.
    """

    def __init__(self, model: AbstractPrediction, mask, observation):
        self.model = check_prediction(model)
        self.mask, self.observation = check_mask(mask, observation)

    def __call__(self, t: ScalarLike, x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        self._check(x)
        out = self.model(t, x)
        y = self.observation.astype(x.dtype)
        known = convert(self.sde, t, x, y, source="x0", target=self.parameterisation)
        return jnp.where(self.mask, known, out)


class PosteriorSampling(_AbstractInpainting):
    r"""Inpainting by posterior sampling: the score of $p_t(x \mid x_{0,k} = y)$.

    Bayes' rule on the noisy marginals gives
    $\nabla\log p_t(x \mid y) = \nabla\log p_t(x) + \nabla_x\log p(y \mid x_t = x)$, and
    diffusion posterior sampling (Chung et al. 2023, arXiv:2209.14687, eq. 11)
    approximates the intractable $p(y \mid x_t) = \int p(y \mid x_0)\,p(x_0 \mid x_t)\,dx_0$
    by moving $p(x_0 \mid x_t)$ to a Gaussian around the model's denoiser
    $\hat x_0(x_t) = E[x_0 \mid x_t]$. With the observation model
    $y = x_{0,k} + \sigma_y z$ that is
    $p(y \mid x_t) \approx N(y;\, \hat x_{0,k}(x_t),\, (\sigma_y^2 + r_t^2) I)$ and the
    gradient flows through the model's denoiser (one vector–Jacobian product per call).

    The variance $r_t^2$ of $x_0$ given $x_t$ is chosen by `covariance`:

    - `"tweedie"` (default): the exact posterior covariance of the known coordinates by
      the second-order Tweedie formula,
      $\mathrm{Cov}[x_0 \mid x_t] = (\sigma_t^2/\alpha_t)\,\partial\hat x_0/\partial x_t$
      (Boys et al. 2023, arXiv:2310.06721, "TMPD"), whose block on the known coordinates
      is formed from their columns of the denoiser's Jacobian (one forward-mode product
      per known coordinate: for small masks, or small events);
    - a number $s^2$: the Gaussian-prior value $r_t^2 = s^2\sigma_t^2/(\alpha_t^2 s^2 +
      \sigma_t^2)$ of $\Pi$GDM (Song et al. 2023, "Pseudoinverse-guided diffusion
      models", ICLR), with $s^2$ the data variance per coordinate (cheap for images);
    - `0.0`: DPS's point mass (then `noise_std` must be positive).

    With `"tweedie"` the conditional score is exact whenever $p(x_0 \mid x_t)$ is
    Gaussian (a Gaussian prior), and its moments are exact for any prior; in a mixture it
    keeps the observation un-noised, so the weights of well-separated modes are set by
    the exact $y$ rather than a blurred one. It is still an approximation; the tutorial
    and `benchmarks/RESULTS.md` give its bias beside that of `Replacement`.

    **Learned models at high noise.** Every variant differentiates the model's denoiser
    $\hat x_0 = (x - \sigma_t\hat\varepsilon)/\alpha_t$, whose Jacobian amplifies an eps
    network's errors by $\sigma_t/\alpha_t$: on the digits benchmark's trained network the
    Tweedie covariance estimate of the known pixels has eigenvalues of $\pm 10^3$ at
    $\sigma/\alpha = 150$ (the truth is below 1) and the guided solve diverges.
    `max_noise_level` applies the posterior term only at noise levels
    $\sigma_t/\alpha_t \le$ it, and `Replacement`'s dynamics above; choose it where the
    model's covariance estimate is nearly positive semi-definite on training data (the
    digits benchmark does so).

    Args:
        model: the unconditional prediction.
        mask: boolean array of one example's shape, True = known.
        observation: array of the same shape; only the known entries are read.
        noise_std: $\sigma_y \ge 0$, the observation noise.
        covariance: `"tweedie"`, or a data variance $s^2 \ge 0$ (see above).
        max_noise_level: the largest noise level $\sigma_t/\alpha_t$ at which the
            posterior term acts (`None`: all); above it the transform is `Replacement`.

    Raises:
        ValueError: on bad masks or observations (as `Replacement`), a negative or
            non-finite `noise_std`, or an unknown `covariance`.
    """

    noise_std: float = eqx.field(static=True)
    covariance: str | float = eqx.field(static=True)
    max_noise_level: float | None = eqx.field(static=True)
    known: tuple[int, ...] = eqx.field(static=True)

    def __init__(
        self,
        model: AbstractPrediction,
        mask,
        observation,
        *,
        noise_std: float = 0.0,
        covariance: str | float = "tweedie",
        max_noise_level: float | None = None,
    ):
        self.model = check_prediction(model)
        self.mask, self.observation = check_mask(mask, observation)
        concrete = _checks.concrete(self.mask)
        if concrete is None:
            raise ValueError(
                "`mask` must be concrete (not traced): it fixes which coordinates are known."
            )
        self.known = tuple(int(i) for i in np.flatnonzero(concrete.reshape(-1)))
        _checks.check(len(self.known) > 0, "mask", "must mark at least one known coordinate.")
        _checks.nonnegative(noise_std, "noise_std")
        self.noise_std = float(noise_std)
        if isinstance(covariance, str):
            _checks.check(
                covariance == "tweedie",
                "covariance",
                f"must be 'tweedie' or a number, got {covariance!r}.",
            )
        else:
            _checks.nonnegative(covariance, "covariance")
            covariance = float(covariance)
            _checks.check(
                covariance > 0 or self.noise_std > 0,
                "noise_std",
                "must be positive when `covariance` is 0 (DPS's point mass).",
            )
        self.covariance = covariance
        if max_noise_level is not None:
            _checks.positive(max_noise_level, "max_noise_level")
            max_noise_level = float(max_noise_level)
        self.max_noise_level = max_noise_level

    def _log_likelihood(self, t, x):
        # PiGDM / DPS: log N(y_k; x0hat_k(x), (sigma_y^2 + r_t^2) I), differentiated
        # through the denoiser by `twist`.
        known = np.asarray(self.known)
        y = self.observation.reshape(-1)[known].astype(x.dtype)
        x0 = self.model.x0(t, x).reshape(-1)[known]
        alpha, sigma = self.sde.marginal(t)
        s2 = jnp.asarray(self.covariance, x.dtype)
        r2 = s2 * sigma**2 / (alpha**2 * s2 + sigma**2)
        var = self.noise_std**2 + r2
        return -0.5 * (jnp.sum((y - x0) ** 2) / var + known.shape[0] * jnp.log(2 * jnp.pi * var))

    def _tweedie_twist(self, t, x):
        # With C = Cov[x0_k | x_t] = sigma^2/alpha * J_kk (J the denoiser's Jacobian, one
        # forward-mode product per known coordinate), log N(y_k; x0hat_k, C + sigma_y^2)
        # and its gradient with C held fixed (TMPD's choice), J[:, k] (C + sigma_y^2)^-1 r.
        # On the known coordinates that gradient is (alpha / sigma^2) r when J is exact:
        # the Jacobian cancels, so a learned denoiser's noisy Jacobian at high noise (its
        # x0 = (x - sigma eps) / alpha amplifies eps's errors by 1 / alpha) does not blow
        # the guidance up, as it does for PiGDM's fixed variance.
        known = np.asarray(self.known)
        flat = x.reshape(-1)
        y = self.observation.reshape(-1)[known].astype(x.dtype)

        def x0_flat(v):
            return self.model.x0(t, v.reshape(x.shape)).reshape(-1)

        tangents = jax.nn.one_hot(known, flat.shape[0], dtype=x.dtype)
        x0s, cols = jax.vmap(lambda e: jax.jvp(x0_flat, (flat,), (e,)))(tangents)
        # cols[a] is column known[a] of J; its known rows are J_kk (symmetric when exact).
        j_kk = cols[:, known]
        alpha, sigma = self.sde.marginal(t)
        lam, vec = jnp.linalg.eigh(0.5 * (sigma**2 / alpha) * (j_kk + j_kk.T))
        # An exact posterior covariance is positive definite; a learned one's estimate
        # need not be. Floor it at 0.1 % of the posterior variance of unit-variance
        # Gaussian data, sigma^2 / (alpha^2 + sigma^2).
        lam = jnp.maximum(lam, 1e-3 * sigma**2 / (alpha**2 + sigma**2))
        var = lam + self.noise_std**2
        proj = vec.T @ (y - x0s[0][known])
        value = -0.5 * jnp.sum(proj**2 / var + jnp.log(2 * jnp.pi * var))
        grad = cols.T @ (vec @ (proj / var))
        return value, grad.reshape(x.shape)

    def __call__(self, t: ScalarLike, x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        self._check(x)
        out = self.model(t, x)
        guided = self.guide(t, x, out)
        if self.max_noise_level is None:
            return guided
        alpha, sigma = self.sde.marginal(t)
        y = self.observation.astype(x.dtype)
        pinned = jnp.where(
            self.mask, convert(self.sde, t, x, y, source="x0", target=self.parameterisation), out
        )
        return jnp.where(sigma / alpha > self.max_noise_level, pinned, guided)

    def guide(self, t, x, out):
        r"""The model's output `out` at $(t, x)$ shifted by $\nabla\log\tilde p(y \mid x_t)$."""
        return shift(self.sde, t, x, out, self.twist(t, x)[1], self.parameterisation)

    def twist(self, t: ScalarLike, x: Float[Array, "*shape"]) -> tuple[Array, Array]:
        r"""$\log\tilde p(y \mid x_t = x)$ (normalised in $y$) and its gradient in $x$."""
        self._check(x)
        if self.covariance == "tweedie":
            return self._tweedie_twist(t, x)
        return jax.value_and_grad(lambda v: self._log_likelihood(t, v))(x)
