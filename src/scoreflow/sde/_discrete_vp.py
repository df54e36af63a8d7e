import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .. import _checks
from .._custom_types import ScalarLike, TimeLike, Times
from ._base import AbstractSDE


def _floating(t):
    t = jnp.asarray(t)
    if not jnp.issubdtype(t.dtype, jnp.floating):
        t = t.astype(jnp.result_type(float))
    return t


class DiscreteVPSDE(AbstractSDE):
    r"""DDPM's discrete noise schedule as an exact continuous-time VP SDE.

    Given betas $\beta_1..\beta_N$, $\log\bar\alpha(t)$ is the piecewise-linear
    interpolation of $\log\bar\alpha_i = \sum_{j\le i}\log(1-\beta_j)$ at $t_i = i/N$,
    i.e. $\beta(t) = -N\log(1-\beta_i)$ is constant on $(t_{i-1}, t_i]$. Then
    `marginal(i/N)` is exactly DDPM's $(\sqrt{\bar\alpha_i}, \sqrt{1-\bar\alpha_i})$
    (Ho et al. 2020, eq. 4) at every step, so every solver, grid and likelihood of
    `scoreflow.solve` applies to a DDPM unchanged. The inverse log-SNR is exact
    (the interpolation is linear in $\log\bar\alpha$, and $\log\bar\alpha =
    \log\operatorname{sigmoid}(2\lambda)$).

    Args:
        betas: `(N,)` betas in $(0, 1)$.
        t_min: time floor, default $1/N$ (DDPM's first step).
    """

    betas: Float[Array, " N"]
    T: ScalarLike = eqx.field(static=True)
    t_min: ScalarLike = eqx.field(static=True)

    def __init__(self, betas, t_min: float | None = None):
        betas = jnp.asarray(betas)
        if betas.ndim != 1 or betas.shape[0] < 2:
            raise ValueError(f"`betas` must be a 1-d array of >= 2 values, got {betas.shape}.")
        b = _checks.concrete(betas)
        if b is not None:
            _checks.check(bool(np.all((b > 0) & (b < 1))), "betas", "must lie in (0, 1).")
        if t_min is not None:
            _checks.scalar(t_min, "t_min")
        self.betas = betas
        self.T = 1.0
        self.t_min = 1.0 / betas.shape[0] if t_min is None else float(t_min)
        _checks.time_floor(self.t_min, self.T)

    @property
    def num_steps(self) -> int:
        return self.betas.shape[0]

    def _log_alpha_bars(self, dtype):
        la = jnp.cumsum(jnp.log1p(-self.betas.astype(dtype)))
        return jnp.concatenate([jnp.zeros((1,), dtype), la])

    def _grid(self, dtype):
        return jnp.linspace(0.0, 1.0, self.num_steps + 1, dtype=dtype)

    def alpha_bars(self) -> Float[Array, " N"]:
        r"""$\bar\alpha_1, \dots, \bar\alpha_N$."""
        return jnp.exp(self._log_alpha_bars(self.betas.dtype)[1:])

    def _log_alpha_bar(self, t):
        t = _floating(t)
        return jnp.interp(t, self._grid(t.dtype), self._log_alpha_bars(t.dtype))

    def marginal(self, t: TimeLike) -> tuple[Times, Times]:
        la = self._log_alpha_bar(t)
        return jnp.exp(0.5 * la), jnp.sqrt(-jnp.expm1(la))

    def log_snr(self, t: TimeLike) -> Times:
        la = self._log_alpha_bar(t)
        return 0.5 * (la - jnp.log(-jnp.expm1(la)))

    def _beta(self, t):
        t = _floating(t)
        N = self.num_steps
        i = jnp.clip(jnp.ceil(t * N).astype(jnp.int32) - 1, 0, N - 1)
        return -N * jnp.log1p(-self.betas.astype(t.dtype)[i])

    def drift_coefficient(self, t: TimeLike) -> Times:
        return -0.5 * self._beta(t)

    def diffusion(self, t: TimeLike) -> Times:
        return jnp.sqrt(self._beta(t))

    def t_from_log_snr(self, log_snr: TimeLike) -> Times:
        lam = _floating(log_snr)
        target = jnp.log(jnp.reciprocal(1 + jnp.exp(-2 * lam)))
        la = self._log_alpha_bars(lam.dtype)
        return jnp.interp(-target, -la, self._grid(lam.dtype))

    def step_times(self) -> Float[Array, " N"]:
        r"""DDPM's training steps $i = 1, \dots, N$ as the times $t_i = i/N$."""
        N = self.num_steps
        return (jnp.arange(1, N + 1) / N).astype(self.betas.dtype)


def linear_betas(num_steps: int = 1000, beta_1: float = 1e-4, beta_N: float = 0.02):
    """DDPM's linear schedule (Ho et al. 2020, sec. 4)."""
    _checks.positive_int(num_steps, "num_steps", least=2)
    return jnp.linspace(beta_1, beta_N, num_steps)


def cosine_betas(num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999):
    r"""The cosine schedule $\bar\alpha(t) \propto \cos^2(\frac{t + s}{1 + s}\frac\pi2)$.

    Nichol & Dhariwal 2021 (arXiv:2102.09672, eq. 17), betas clipped at `max_beta`.
    """
    _checks.positive_int(num_steps, "num_steps", least=2)
    t = np.linspace(0, 1, num_steps + 1)
    f = np.cos((t + s) / (1 + s) * np.pi / 2) ** 2
    return jnp.asarray(np.clip(1 - f[1:] / f[:-1], 0, max_beta))
