r"""A grid optimised once over a family of mixtures and shipped as data (issue 19)."""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ... import _checks
from ...sde import AbstractSDE
from ._grids import AbstractGrid, pin_ends
from ._shipped_data import SCHEDULES


def shipped_fractions(num_steps: int) -> np.ndarray:
    r"""The `num_steps + 1` fractions of the way in log-SNR of `OptimisedGrid(num_steps)`.

    A shipped step count returns its table; any other resamples the table of the
    nearest shipped count (nearest in $\log N$) linearly against the normalised step
    index, i.e. log-linearly in the noise level, as Align Your Steps interpolates its
    schedules (Sabour et al. 2024, arXiv:2404.14507, sec. 3.4).
    """
    _checks.positive_int(num_steps, "num_steps")
    if num_steps in SCHEDULES:
        return np.asarray(SCHEDULES[num_steps], np.float64)
    shipped = np.asarray(sorted(SCHEDULES))
    m = int(shipped[np.argmin(np.abs(np.log(shipped) - np.log(num_steps)))])
    table = np.asarray(SCHEDULES[m], np.float64)
    return np.interp(np.linspace(0.0, 1.0, num_steps + 1), np.linspace(0.0, 1.0, m + 1), table)


class OptimisedGrid(AbstractGrid):
    r"""A schedule optimised once over a family of random mixtures, shipped with scoreflow.

    No per-model fitting: the grid is a fixed table of log-SNRs in a normalised
    coordinate, the fraction $f_i \in [0, 1]$ of the way from $\lambda(T)$ to
    $\lambda(t_{\min})$,
    $\lambda_i = \lambda(T) + f_i(\lambda(t_{\min}) - \lambda(T))$, mapped to times by
    the SDE's inverse log-SNR, so one table serves every SDE (for `EDMSDE` it is a
    fraction of the way in $\log\sigma$ from 80 to 0.002). This is the idea of Align Your
    Steps (Sabour et al. 2024, arXiv:2404.14507): optimise one schedule per step count
    over many models and ship it. Here the objective is the mean over mixtures of the
    log mean squared error of `ExponentialAdamsPC(3)` against a 400-step log-SNR solve,
    under the EDM SDE, on 20 mixtures (the first five `TUNE_SEEDS` of each of the four
    families of `benchmarks/mixture_families.py`: full covariances in 8–16 dimensions,
    20 components in 64 dimensions, strongly anisotropic, unequal weights; never the
    benchmark's reported cases), 256 pilot draws each to fit and 256 to validate. The
    family searched is $(1 - a)$ x the log-SNR grid + $a$ x the Karras grid
    ($\rho = 7$) in that coordinate, $a$ by a bounded scalar search: a richer shape (a
    free density over the step index) fitted at 9 steps moved only $a$. The table
    shipped is the least on the validation draws of the fitted mix and the two end
    members. Regenerate the tables with `python benchmarks/default_design.py --fit`;
    the fitted $a$ are in `_shipped_data.py`.

    Step counts with a table of their own are listed by `shipped_steps()`; any other
    resamples the table of the nearest shipped count (`shipped_fractions`).

    Args:
        num_steps: number of steps $N$ ($N + 1$ times from `T` to `t_min`).
    """

    num_steps: int = eqx.field(static=True)

    def __check_init__(self):
        _checks.positive_int(self.num_steps, "num_steps")

    @staticmethod
    def shipped_steps() -> tuple[int, ...]:
        """The step counts that have a table of their own."""
        return tuple(sorted(SCHEDULES))

    def times(self, sde: AbstractSDE) -> Float[Array, " n"]:
        frac = jnp.asarray(shipped_fractions(self.num_steps))
        lam_T, lam_min = sde.log_snr(sde.T), sde.log_snr(sde.t_min)
        lam = lam_T + frac.astype(jnp.result_type(lam_T)) * (lam_min - lam_T)
        return pin_ends(sde.t_from_log_snr(lam), sde)
