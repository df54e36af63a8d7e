from collections.abc import Callable

import equinox as eqx
from jaxtyping import Array, Float

from .. import losses, solve
from .._custom_types import PARAMETERISATIONS, Key, Scalar
from ..losses._common import TIME_SAMPLINGS, WEIGHTINGS, check_choice
from ..sde import AbstractSDE, Prediction

OBJECTIVES = ("denoising", "sliced", "implicit")


class ScoreSDE(eqx.Module):
    r"""A score-based generative model under any SDE, in any parameterisation.

    Song et al. 2021, "Score-Based Generative Modeling through Stochastic Differential
    Equations" (arXiv:2011.13456): a network trained by (denoising, sliced or implicit)
    score matching on the SDE's noisy marginals, sampled by the probability-flow ODE
    (eq. 13) or the reverse-time SDE (eq. 6), and with an exact likelihood through the
    probability-flow ODE and the instantaneous change of variables (sec. 4.3, app. D.2).
    Everything is delegated to `scoreflow.losses` and `scoreflow.solve`.

    Args:
        sde: the noising SDE (`VPSDE`, `VESDE`, `SubVPSDE`, `EDMSDE`, ...).
        network: per-example `(t, x) -> array` of `x`'s shape.
        parameterisation: what `network` predicts: `"score"`, `"eps"`, `"x0"`, `"v"`.
        weighting: loss weighting (see `scoreflow.losses.denoising_score_matching`).
        time_sampling: `"uniform"`, `"importance"` or `"lognormal"`.
        objective: `"denoising"`, `"sliced"` or `"implicit"` score matching.
        reduce: `"mean"` or `"sum"` of the per-example loss over the event axes.
        sigma_data: the data's standard deviation $\sigma_{\rm data}$ of the EDM weighting
            (pass the same value as to `scoreflow.nn.EDMPrecond`).
    """

    sde: AbstractSDE
    network: Callable[..., Array]
    parameterisation: str = eqx.field(static=True, default="eps")
    weighting: str = eqx.field(static=True, default="sigma2")
    time_sampling: str = eqx.field(static=True, default="uniform")
    objective: str = eqx.field(static=True, default="denoising")
    reduce: str = eqx.field(static=True, default="mean")
    sigma_data: float = eqx.field(static=True, default=0.5)

    def __check_init__(self):
        check_choice(self.parameterisation, PARAMETERISATIONS, "parameterisation")
        check_choice(self.weighting, WEIGHTINGS, "weighting")
        check_choice(self.time_sampling, TIME_SAMPLINGS, "time_sampling")
        check_choice(self.objective, OBJECTIVES, "objective")
        check_choice(self.reduce, ("mean", "sum"), "reduce")

    @property
    def prediction(self) -> Prediction:
        """The network read through its parameterisation (`.score`, `.eps`, `.x0`, `.v`)."""
        return Prediction(self.sde, self.network, self.parameterisation)

    def score(self, t, x: Float[Array, "..."]) -> Float[Array, "..."]:
        r"""$s_{\theta}(t, x) \approx \nabla_x \log p_t(x)$ on one example."""
        return self.prediction.score(t, x)

    def loss(self, x: Float[Array, "batch ..."], *, key: Key) -> Scalar:
        """The score-matching loss of a batch of data."""
        kw = dict(
            parameterisation=self.parameterisation,
            weighting=self.weighting,
            time_sampling=self.time_sampling,
            reduce=self.reduce,
            sigma_data=self.sigma_data,
            key=key,
        )
        if self.objective == "denoising":
            return losses.denoising_score_matching(self.network, self.sde, x, **kw)
        if self.objective == "sliced":
            return losses.sliced_score_matching(self.network, self.sde, x, **kw)
        return losses.implicit_score_matching(self.network, self.sde, x, **kw)

    def sample(
        self, shape: tuple[int, ...], *, method: str = "ode", dtype=None, key: Key, **kwargs
    ) -> Float[Array, "..."]:
        """Draw `shape[0]` samples with `scoreflow.solve.sample`.

        Args:
            shape: `(batch, *event)`.
            method: `"ode"` (probability flow) or `"sde"` (reverse-time SDE).
            dtype: dtype of the noise.
            key: PRNG key.
            **kwargs: solver options (`solver`, `grid`, `stepsize_controller`, ...).

        Returns:
            The samples.
        """
        res = solve.sample(
            self.sde,
            self.network,
            shape,
            method=method,
            parameterisation=self.parameterisation,
            dtype=dtype,
            key=key,
            **kwargs,
        )
        return res.samples

    def log_prob(
        self, x: Float[Array, "batch ..."], *, key: Key | None = None, **kwargs
    ) -> Float[Array, " batch"]:
        r"""Log-density $\log p_{t_{\min}}(x)$ through the probability-flow ODE.

        Delegates to `scoreflow.solve.log_likelihood` (exact trace by default; pass
        `trace="hutchinson"` and a `key` for high dimensions).
        """
        from ._likelihood import log_likelihood

        return log_likelihood(
            self.sde, self.network, x, parameterisation=self.parameterisation, key=key, **kwargs
        )
