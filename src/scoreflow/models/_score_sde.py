from collections.abc import Callable

import equinox as eqx
from jaxtyping import Array, Float

from .. import losses, solve
from .._custom_types import Key, Scalar
from ..losses import AbstractTimeSampling, AbstractWeighting, SigmaSquaredWeighting, UniformTime
from ..losses._common import REDUCTIONS, check_choice
from ..sde import AbstractPrediction, AbstractSDE
from ..sde._parameterisation import check_parameterisation
from ._base import AbstractExactLikelihood, check_event, check_method

OBJECTIVES = ("denoising", "sliced", "implicit")


def sample_dynamics(model, sample_shape, method, dtype, key, options, prediction=None):
    """Samples of `model` through `scoreflow.solve.sample`, in the models' shape rule.

    `prediction` is what the dynamics follow (default `model` itself; a conditional
    model passes `model.condition(y)`).
    """
    check_method(method, ("ode", "sde"))
    shape, n = model._flat_shape(sample_shape)
    prediction = model if prediction is None else prediction
    res = solve.sample(
        model.sde,
        prediction,
        (n, *model.event_shape),
        method=method,
        dtype=dtype,
        key=key,
        **options,
    )
    return res.samples.reshape(*shape, *model.event_shape)


class ScoreSDE(AbstractExactLikelihood, AbstractPrediction):
    r"""A score-based generative model under any SDE, in any parameterisation.

    Song et al. 2021, "Score-Based Generative Modeling through Stochastic Differential
    Equations" (arXiv:2011.13456): a network trained by (denoising, sliced or implicit)
    score matching on the SDE's noisy marginals, sampled by the probability-flow ODE
    (eq. 13) or the reverse-time SDE (eq. 6), and with an exact likelihood through the
    probability-flow ODE and the instantaneous change of variables (sec. 4.3, app. D.2).
    The model is itself the `scoreflow.sde.AbstractPrediction` it trains: `model(t, x)` is
    the network's output and `model.score`, `.eps`, `.x0`, `.v` read it, so it plugs
    into every sampler and likelihood of `scoreflow.solve` as it is. Everything is
    delegated to `scoreflow.losses` and `scoreflow.solve`.

    Args:
        sde: the noising SDE (`VPSDE`, `VESDE`, `SubVPSDE`, `EDMSDE`, ...).
        network: per-example `(t, x) -> array` of `x`'s shape.
        parameterisation: what `network` predicts: `"score"`, `"eps"`, `"x0"`, `"v"`.
        event_shape: the shape of one example.
        weighting: the loss weighting (`scoreflow.losses.SigmaSquaredWeighting()`,
            `LikelihoodWeighting()`, `EDMWeighting(sigma_data)`, `UnitWeighting()`).
        time_sampling: the loss's time sampling (`UniformTime()`, `LogSNRUniformTime()`,
            `LogNormalTime(p_mean, p_std)`, `DiscreteTime(times)`).
        objective: `"denoising"`, `"sliced"` or `"implicit"` score matching.
        reduce: `"mean"` or `"sum"` of the per-example loss over the event axes.
    """

    sde: AbstractSDE
    network: Callable[..., Array]
    parameterisation: str = eqx.field(static=True)
    event_shape: tuple[int, ...] = eqx.field(static=True)
    weighting: AbstractWeighting
    time_sampling: AbstractTimeSampling
    objective: str = eqx.field(static=True)
    reduce: str = eqx.field(static=True)

    def __init__(
        self,
        sde: AbstractSDE,
        network: Callable[..., Array],
        *,
        parameterisation: str,
        event_shape: tuple[int, ...],
        weighting: AbstractWeighting = SigmaSquaredWeighting(),
        time_sampling: AbstractTimeSampling = UniformTime(),
        objective: str = "denoising",
        reduce: str = "mean",
    ):
        self.sde = sde
        self.network = network
        self.parameterisation = parameterisation
        self.event_shape = tuple(event_shape)
        self.weighting = weighting
        self.time_sampling = time_sampling
        self.objective = objective
        self.reduce = reduce

    def __check_init__(self):
        check_parameterisation(self.parameterisation)
        check_choice(self.objective, OBJECTIVES, "objective")
        check_choice(self.reduce, REDUCTIONS, "reduce")

    def __call__(self, t, x: Float[Array, "..."]) -> Float[Array, "..."]:
        """The network's output at one example (in `parameterisation`)."""
        return self.network(t, x)

    def loss(self, x: Float[Array, "batch ..."], *, key: Key) -> Scalar:
        """The score-matching loss of a batch of data."""
        check_event(x, self.event_shape)
        loss = {
            "denoising": losses.denoising_score_matching,
            "sliced": losses.sliced_score_matching,
            "implicit": losses.implicit_score_matching,
        }[self.objective]
        return loss(
            self.sde,
            self,
            x,
            weighting=self.weighting,
            time_sampling=self.time_sampling,
            reduce=self.reduce,
            key=key,
        )

    def sample(
        self,
        sample_shape: int | tuple[int, ...] = (),
        *,
        method: str = "ode",
        dtype=None,
        key: Key,
        **options,
    ) -> Float[Array, "..."]:
        """Draw `(*sample_shape, *event_shape)` samples with `scoreflow.solve.sample`.

        Args:
            sample_shape: the batch shape (an int `n` is `(n,)`).
            method: `"ode"` (probability flow) or `"sde"` (reverse-time SDE).
            dtype: dtype of the noise.
            key: PRNG key.
            **options: solver options (`solver`, `grid`, `stepsize_controller`, ...).

        Returns:
            The samples.
        """
        return sample_dynamics(self, sample_shape, method, dtype, key, options)

    def log_prob(
        self, x: Float[Array, "batch ..."], *, key: Key | None = None, **options
    ) -> Float[Array, " batch"]:
        r"""Log-density $\log p_{t_{\min}}(x)$ through the probability-flow ODE.

        Delegates to `scoreflow.solve.log_likelihood` (exact trace by default; pass
        `trace=scoreflow.solve.Hutchinson(...)` and a `key` for high dimensions).
        """
        check_event(x, self.event_shape)
        return solve.log_likelihood(self.sde, self, x, key=key, **options).log_prob
