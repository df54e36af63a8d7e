import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .. import _checks
from .._custom_types import ScalarLike, TimeLike, Times
from ..nn import MonotoneMLP
from ._base import AbstractSDE

_BISECTIONS = 64


def _floating(t):
    t = jnp.asarray(t)
    if not jnp.issubdtype(t.dtype, jnp.floating):
        t = t.astype(jnp.result_type(float))
    return t


def _inverse_softplus(y: float) -> float:
    return float(y + np.log(-np.expm1(-y)))


class LearnedVPSDE(AbstractSDE):
    r"""A variance-preserving SDE whose noise schedule is learned: VDM's $\gamma(t)$.

    Kingma et al. 2021, "Variational Diffusion Models" (arXiv:2107.00630): the schedule
    is $\gamma(t) = -\log\mathrm{SNR}(t)$, $\alpha_t^2 = \mathrm{sigmoid}(-\gamma(t))$,
    $\sigma_t^2 = \mathrm{sigmoid}(\gamma(t))$ (eq. 3-4), with
    $\gamma(t) = \gamma_{\min} + (\gamma_{\max} - \gamma_{\min})
    \frac{\tilde\gamma(u) - \tilde\gamma(0)}{\tilde\gamma(1) - \tilde\gamma(0)}$,
    $u = (t - t_{\min})/(T - t_{\min})$, $\tilde\gamma$ a `scoreflow.nn.MonotoneMLP`
    (appendix H) or, without a network, the identity (VDM's fixed linear schedule).
    The end points are parameters too, and $\gamma_{\max} = \gamma_{\min} +
    \mathrm{softplus}(\cdot)$, so the schedule is strictly increasing for every value
    of its parameters. Its SDE is $dx = -\tfrac12\beta(t)x\,dt + \sqrt{\beta(t)}\,dW$
    with $\beta = \gamma'(t)\,\sigma_t^2$ (from $f = d\log\alpha/dt$,
    $g^2 = d\sigma^2/dt - 2f\sigma^2$), so every sampler and likelihood of
    `scoreflow.solve` runs on it unchanged.

    VDM's $t = 0$ is this SDE's time floor $t_{\min}$, where $\gamma = \gamma_{\min}$.
    Below it $\sigma_t^2$ falls linearly to zero at $t = 0$, so that the data sit at
    $t = 0$ exactly ($\alpha_0 = 1$, $\sigma_0 = 0$) as scoreflow's SDE contract asks.

    Args:
        gamma_min: $\gamma$ at $t_{\min}$ (VDM: -13.3).
        gamma_max: $\gamma$ at $T$ (VDM: 5), larger than `gamma_min`.
        network: a `scoreflow.nn.MonotoneMLP`, or `None` for the linear schedule.
        T: final time.
        t_min: time floor (VDM's $t = 0$).
    """

    gamma_min: Float[Array, ""]
    gamma_gap: Float[Array, ""]  # softplus(gamma_gap) = gamma_max - gamma_min
    network: MonotoneMLP | None
    T: ScalarLike = eqx.field(static=True)
    t_min: ScalarLike = eqx.field(static=True)

    def __init__(
        self,
        gamma_min: float = -13.3,
        gamma_max: float = 5.0,
        network: MonotoneMLP | None = None,
        *,
        T: float = 1.0,
        t_min: float = 1e-4,
        dtype=None,
    ):
        _checks.scalar(gamma_min, "gamma_min")
        _checks.scalar(gamma_max, "gamma_max")
        for name, v in (("gamma_min", gamma_min), ("gamma_max", gamma_max)):
            _checks.check(bool(np.isfinite(float(v))), name, f"must be finite, got {v}.")
        _checks.less(gamma_min, gamma_max, "gamma_min", "gamma_max")
        if network is not None and not isinstance(network, MonotoneMLP):
            raise ValueError(
                "`network` must be a `scoreflow.nn.MonotoneMLP` (a monotone schedule) or "
                f"None, got {type(network).__name__}."
            )
        _checks.time_floor(t_min, T)
        dtype = _checks.float_dtype(dtype)
        self.gamma_min = jnp.asarray(float(gamma_min), dtype)
        self.gamma_gap = jnp.asarray(_inverse_softplus(float(gamma_max) - float(gamma_min)), dtype)
        self.network = network
        self.T = float(T)
        self.t_min = float(t_min)

    @property
    def gamma_max(self) -> Array:
        r"""$\gamma(T)$."""
        return self.gamma_min + jax.nn.softplus(self.gamma_gap)

    def _shape(self, u):
        # The normalised schedule on [0, 1]: 0 at u = 0, 1 at u = 1, increasing.
        if self.network is None:
            return u
        g0, g1, gu = (
            self.network(jnp.zeros_like(u)),
            self.network(jnp.ones_like(u)),
            self.network(u),
        )
        return (gu - g0) / (g1 - g0)

    def _u(self, t):
        t_min = jnp.asarray(self.t_min, t.dtype)
        return (t - t_min) / (jnp.asarray(self.T, t.dtype) - t_min)

    def gamma(self, t: TimeLike) -> Times:
        r"""$\gamma(t) = -\log\mathrm{SNR}(t) = -2\lambda_t$ on $[t_{\min}, T]$."""
        t = _floating(t)
        u = self._u(jnp.maximum(t, self.t_min))
        g0 = self.gamma_min.astype(t.dtype)
        return g0 + (self.gamma_max.astype(t.dtype) - g0) * self._shape(u).astype(t.dtype)

    def _gamma_and_slope(self, t):
        t = _floating(t)
        tc = jnp.maximum(t, self.t_min)
        return jax.jvp(self.gamma, (tc,), (jnp.ones_like(tc),))

    def _variance(self, t):
        # (sigma^2, alpha^2) without cancellation in either branch.
        t = _floating(t)
        g = self.gamma(t)
        low = jax.nn.sigmoid(self.gamma_min.astype(t.dtype)) * t / self.t_min
        above = t >= self.t_min
        return (
            jnp.where(above, jax.nn.sigmoid(g), low),
            jnp.where(above, jax.nn.sigmoid(-g), 1 - low),
        )

    def marginal(self, t: TimeLike) -> tuple[Times, Times]:
        var, alpha2 = self._variance(t)
        return jnp.sqrt(alpha2), jnp.sqrt(var)

    def log_snr(self, t: TimeLike) -> Times:
        t = _floating(t)
        var, alpha2 = self._variance(t)
        return jnp.where(
            t >= self.t_min, -0.5 * self.gamma(t), 0.5 * (jnp.log(alpha2) - jnp.log(var))
        )

    def beta(self, t: TimeLike) -> Times:
        r"""$\beta(t) = g(t)^2$: $\gamma'(t)\sigma_t^2$ above $t_{\min}$."""
        t = _floating(t)
        g, slope = self._gamma_and_slope(t)
        var, alpha2 = self._variance(t)
        s_min = jax.nn.sigmoid(self.gamma_min.astype(t.dtype))
        return jnp.where(t >= self.t_min, slope * jax.nn.sigmoid(g), s_min / self.t_min / alpha2)

    def drift_coefficient(self, t: TimeLike) -> Times:
        return -0.5 * self.beta(t)

    def diffusion(self, t: TimeLike) -> Times:
        return jnp.sqrt(self.beta(t))

    def t_from_log_snr(self, log_snr: TimeLike) -> Times:
        lam = _floating(log_snr)
        target = -2 * lam  # the gamma to reach
        g0 = self.gamma_min.astype(lam.dtype)
        g1 = self.gamma_max.astype(lam.dtype)
        # Below t_min: sigma^2 = sigmoid(gamma_min) t / t_min.
        low = self.t_min * jax.nn.sigmoid(target) / jax.nn.sigmoid(g0)
        level = jnp.clip((target - g0) / (g1 - g0), 0.0, 1.0)
        if self.network is None:
            u = level
        else:
            # The normalised schedule is increasing: bisect for shape(u) = level.
            def body(_, bracket):
                lo, hi = bracket
                mid = 0.5 * (lo + hi)
                go_up = self._shape(mid) < level
                return jnp.where(go_up, mid, lo), jnp.where(go_up, hi, mid)

            lo, hi = jax.lax.fori_loop(
                0, _BISECTIONS, body, (jnp.zeros_like(level), jnp.ones_like(level))
            )
            u = 0.5 * (lo + hi)
        t_min = jnp.asarray(self.t_min, lam.dtype)
        t = t_min + u * (jnp.asarray(self.T, lam.dtype) - t_min)
        return jnp.where(target <= g0, low, t)
