r"""Class-conditional diffusion models and the noisy classifier of classifier guidance.

A conditional model's data is the pair `(x, y)`: `(batch, *event_shape)` examples and
`(batch,)` integer labels in `0..num_classes - 1`. `model.loss((x, y), key=...)` is what
`scoreflow.train.fit(model, (x, y), ...)` minimises. The models are trained for
classifier-free guidance (Ho & Salimans 2022, arXiv:2207.12598): each label is replaced
by the null label $\varnothing$ (`num_classes`) with probability `label_dropout`, so one
network learns $p_t(x \mid y)$ and $p_t(x)$ together. `NoisyClassifier` learns
$p(y \mid x_t)$ for classifier guidance (Dhariwal & Nichol 2021, arXiv:2105.05233;
Song et al. 2021, arXiv:2011.13456, sec. 5).
"""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, Int, PyTree

from .. import _checks, losses, solve
from .._custom_types import Key, Scalar, ScalarLike
from ..losses import AbstractTimeSampling, AbstractWeighting, SigmaSquaredWeighting, UniformTime
from ..losses._common import REDUCTIONS, check_choice, check_labels
from ..sde import (
    AbstractConditionalPrediction,
    AbstractNoisyClassifier,
    AbstractPrediction,
    AbstractSDE,
    DiscreteVPSDE,
    linear_betas,
)
from ..sde._parameterisation import check_parameterisation
from ._base import AbstractExactLikelihood, check_event
from ._ddpm import l_simple, sampling_options
from ._score_sde import sample_dynamics

# The label dropout's key is `fold_in(key, _DROP)`: not a key that the loss's own split
# of `key` reaches, so the times and noise are those of the unconditional loss.
_DROP = 0x64726F70


def labelled_batch(batch, event_shape: tuple[int, ...], num_classes: int):
    """Check a conditional model's batch, the pair `(x, y)`, and return it."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError(
            "`x` of a conditional model must be the pair (x, y) of `(batch, *event_shape)` "
            f"data and `(batch,)` integer labels, got {type(batch).__name__}."
        )
    x, y = batch
    if not isinstance(x, jax.Array):
        raise ValueError(f"`x` must be a JAX array, got {type(x).__name__}.")
    check_event(x, event_shape)
    return x, check_labels(y, x, num_classes, "y")


class AbstractConditionalModel(AbstractExactLikelihood, AbstractConditionalPrediction):
    r"""A class-conditional diffusion model trained for classifier-free guidance.

    What `ConditionalScoreSDE` and `ConditionalDDPM` share: the network
    `network(t, x, y)` with the null label `num_classes` for the unconditional output,
    the label dropout of training, and the likelihood of the probability-flow ODE of
    $p_t(x \mid y)$ (or of $p_t(x)$ without a label).
    """

    network: eqx.AbstractVar[Callable[..., Array]]
    label_dropout: eqx.AbstractVar[float]

    def __check_init__(self):
        _checks.positive_int(self.num_classes, "num_classes")
        if not 0.0 <= self.label_dropout <= 1.0:
            raise ValueError(f"`label_dropout` must lie in [0, 1], got {self.label_dropout}.")

    def __call__(
        self, t: ScalarLike, x: Float[Array, "*shape"], y: Int[Array, ""] | int | None = None
    ) -> Float[Array, "*shape"]:
        """The network's output for class `y` (`None`: the null label) at one example."""
        return self.network(t, x, self.num_classes if y is None else y)

    def prediction(self, y: Int[Array, ""] | int | None = None) -> AbstractPrediction:
        """`self.condition(y)`, or the model itself (unconditional) for `y=None`."""
        return self if y is None else self.condition(y)

    def _dropped(self, batch, key) -> tuple[Array, Array]:
        # Ho & Salimans 2022, Algorithm 1: each label is the null one with p_uncond.
        x, y = labelled_batch(batch, self.event_shape, self.num_classes)
        drop = jr.bernoulli(jr.fold_in(key, _DROP), self.label_dropout, y.shape)
        return x, jnp.where(drop, self.num_classes, y)

    def log_prob(
        self,
        x: Float[Array, "batch ..."],
        *,
        y: Int[Array, ""] | int | None = None,
        key: Key | None = None,
        **options,
    ) -> Float[Array, " batch"]:
        r"""$\log p_{t_{\min}}(x \mid y)$ (or $\log p_{t_{\min}}(x)$) by the probability flow.

        Args:
            x: `(batch, *event_shape)` data.
            y: one class label for the whole batch, or `None`: the unconditional density.
            key: PRNG key of a stochastic trace estimate.
            **options: options of `scoreflow.solve.log_likelihood` (`rtol`, `atol`,
                `trace`, ...).

        Returns:
            `(batch,)` log-densities.
        """
        check_event(x, self.event_shape)
        prediction = self.prediction(y)
        return solve.log_likelihood(self.sde, prediction, x, key=key, **options).log_prob


class ConditionalScoreSDE(AbstractConditionalModel):
    r"""A class-conditional score-based model under any SDE, for classifier-free guidance.

    The conditional form of `ScoreSDE` (Song et al. 2021, arXiv:2011.13456, sec. 5): one
    network `network(t, x, y)` predicts the noisy data of class `y`, and with the null
    label `num_classes` the unconditional noisy data. It is trained by denoising score
    matching with labels (`scoreflow.losses.denoising_score_matching(..., labels=...)`),
    each label dropped to the null label with probability `label_dropout` (Ho & Salimans
    2022, arXiv:2207.12598, Algorithm 1). The model is an
    `scoreflow.sde.AbstractConditionalPrediction`: `model(t, x)` is unconditional,
    `model(t, x, y)` conditional, and `model.condition(y)` a prediction that every
    sampler and likelihood of `scoreflow.solve` takes (and the guidance transforms
    combine).

    Args:
        sde: the noising SDE.
        network: per-example `(t, x, y) -> array` of `x`'s shape (e.g.
            `scoreflow.nn.TimeMLP(..., num_classes=num_classes)`), `y` an integer label
            in `0..num_classes` (the last the null label).
        parameterisation: what `network` predicts: `"score"`, `"eps"`, `"x0"`, `"v"`.
        event_shape: the shape of one example.
        num_classes: number of classes ($\ge 1$).
        label_dropout: probability $p_{\rm uncond}$ of training a label as the null one,
            in $[0, 1]$ (0: no unconditional model; 1: only the unconditional one).
        weighting: the loss weighting.
        time_sampling: the loss's time sampling.
        reduce: `"mean"` or `"sum"` of the per-example loss over the event axes.
    """

    sde: AbstractSDE
    network: Callable[..., Array]
    num_classes: int = eqx.field(static=True)
    label_dropout: float = eqx.field(static=True)
    parameterisation: str = eqx.field(static=True)
    event_shape: tuple[int, ...] = eqx.field(static=True)
    weighting: AbstractWeighting
    time_sampling: AbstractTimeSampling
    reduce: str = eqx.field(static=True)

    def __init__(
        self,
        sde: AbstractSDE,
        network: Callable[..., Array],
        *,
        parameterisation: str,
        event_shape: tuple[int, ...],
        num_classes: int,
        label_dropout: float = 0.1,
        weighting: AbstractWeighting = SigmaSquaredWeighting(),
        time_sampling: AbstractTimeSampling = UniformTime(),
        reduce: str = "mean",
    ):
        self.sde = sde
        self.network = network
        self.num_classes = num_classes
        self.label_dropout = float(label_dropout)
        self.parameterisation = parameterisation
        self.event_shape = tuple(event_shape)
        self.weighting, self.time_sampling, self.reduce = weighting, time_sampling, reduce

    def __check_init__(self):
        check_parameterisation(self.parameterisation)
        check_choice(self.reduce, REDUCTIONS, "reduce")

    def loss(self, x: PyTree[Array], *, key: Key) -> Scalar:
        """Denoising score matching of a batch `(x, y)`, labels dropped at `label_dropout`.

        With `key` the times and noise are those of the unconditional loss
        `denoising_score_matching(sde, model, x, key=key)`; the dropout draws from a
        stream of its own.
        """
        data, labels = self._dropped(x, key)
        return losses.denoising_score_matching(
            self.sde,
            self,
            data,
            weighting=self.weighting,
            time_sampling=self.time_sampling,
            reduce=self.reduce,
            labels=labels,
            key=key,
        )

    def sample(
        self,
        sample_shape: int | tuple[int, ...] = (),
        *,
        y: Int[Array, ""] | int | None = None,
        method: str = "ode",
        dtype=None,
        key: Key,
        **options,
    ) -> Float[Array, "..."]:
        """Draw `(*sample_shape, *event_shape)` samples of class `y` (or unconditional ones).

        Args:
            sample_shape: the batch shape (an int `n` is `(n,)`).
            y: one class label for all samples (it may be traced: `jax.vmap` over
                labels compiles once), or `None`: samples of the unconditional model.
            method: `"ode"` (probability flow) or `"sde"` (reverse-time SDE).
            dtype: dtype of the noise.
            key: PRNG key.
            **options: options of `scoreflow.solve.sample` (`solver`, `grid`, ...).

        Returns:
            The samples.
        """
        prediction = self.prediction(y)
        return sample_dynamics(self, sample_shape, method, dtype, key, options, prediction)


class ConditionalDDPM(AbstractConditionalModel):
    r"""A class-conditional DDPM (Ho et al. 2020) trained for classifier-free guidance.

    `DDPM` with a label: an eps network `network(t, x, y)` on the steps $t_i = i/N$ of
    its `scoreflow.sde.DiscreteVPSDE`, trained with $L_{\rm simple}$ (eq. 14) per
    example's label, each label dropped to the null label `num_classes` with
    probability `label_dropout` (Ho & Salimans 2022, arXiv:2207.12598, Algorithm 1).
    It samples like `DDPM` (ancestral sampling or DDIM on the training steps) and has
    the exact likelihood of its probability-flow ODE, of $p(x \mid y)$ or of $p(x)$.

    Args:
        network: per-example eps network `(t, x, y) -> array`; it sees step $i$ as
            $t = i/N$ and the null label as `y = num_classes`.
        event_shape: the shape of one example.
        num_classes: number of classes ($\ge 1$).
        label_dropout: probability of training a label as the null one, in $[0, 1]$.
        betas: `(N,)` betas (default `linear_betas(1000)`).
    """

    network: Callable[..., Array]
    # Narrower than `AbstractPrediction.sde`: safe, a module is immutable.
    sde: DiscreteVPSDE  # pyright: ignore[reportIncompatibleVariableOverride]
    event_shape: tuple[int, ...] = eqx.field(static=True)
    num_classes: int = eqx.field(static=True)
    label_dropout: float = eqx.field(static=True)
    parameterisation: str = eqx.field(static=True)

    def __init__(
        self,
        network: Callable[..., Array],
        *,
        event_shape: tuple[int, ...],
        num_classes: int,
        label_dropout: float = 0.1,
        betas=None,
    ):
        self.network = network
        self.sde = DiscreteVPSDE(linear_betas() if betas is None else betas)  # pyright: ignore[reportIncompatibleVariableOverride]
        self.event_shape = tuple(event_shape)
        self.num_classes = num_classes
        self.label_dropout = float(label_dropout)
        self.parameterisation = "eps"

    def loss(self, x: PyTree[Array], *, key: Key) -> Scalar:
        r"""$L_{\rm simple}$ of a batch `(x, y)`, labels dropped at `label_dropout`."""
        data, labels = self._dropped(x, key)
        return l_simple(self.sde, self, data, labels=labels, key=key)

    def sample(
        self,
        sample_shape: int | tuple[int, ...] = (),
        *,
        y: Int[Array, ""] | int | None = None,
        method: str = "sde",
        num_steps: int | None = None,
        solver=None,
        dtype=None,
        key: Key,
    ) -> Float[Array, "..."]:
        """Samples of class `y` (or unconditional ones) by ancestral sampling or DDIM.

        Args:
            sample_shape: the batch shape (an int `n` is `(n,)`).
            y: one class label for all samples (it may be traced), or `None`.
            method: `"sde"` (ancestral, `StochasticDDIM(eta=1)`) or `"ode"` (`DDIM()`),
                as `DDPM.sample`.
            num_steps: how many of the training steps, evenly strided (default all $N$
                for `"sde"`, 50 for `"ode"`).
            solver: a scoreflow or diffrax solver of that method instead of the default.
            dtype: the noise's dtype.
            key: PRNG key.

        Returns:
            Samples of shape `(*sample_shape, *event_shape)`.
        """
        options = sampling_options(self.sde, method, num_steps, solver)
        prediction = self.prediction(y)
        return sample_dynamics(self, sample_shape, method, dtype, key, options, prediction)


class NoisyClassifier(AbstractNoisyClassifier):
    r"""A classifier of noisy data $p_{\phi}(y \mid x_t)$, for classifier guidance.

    A network `network(t, x) -> (num_classes,)` logits (e.g.
    `scoreflow.nn.TimeMLP(..., out_size=num_classes)` or `scoreflow.nn.TimeConvClassifier`)
    trained by cross-entropy on the SDE's noisy marginals
    (`scoreflow.losses.noisy_classifier_loss`), as Dhariwal & Nichol 2021
    (arXiv:2105.05233, sec. 4) and Song et al. 2021 (arXiv:2011.13456, sec. 5, app. I)
    do. `classifier(t, x)` is $\log p_{\phi}(\cdot \mid x_t = x)$ (a log-softmax), and
    `classifier.grad_log_prob(t, x, y)` the gradient that guidance adds to the score.
    It is not a generative model; `scoreflow.train.fit(classifier, (x, y), ...)` trains it.

    Args:
        sde: the noising SDE.
        network: per-example `(t, x) -> (num_classes,)` logits.
        num_classes: number of classes ($\ge 1$).
        event_shape: the shape of one example.
        time_sampling: the loss's time sampling.
    """

    sde: AbstractSDE
    network: Callable[..., Array]
    num_classes: int = eqx.field(static=True)
    event_shape: tuple[int, ...] = eqx.field(static=True)
    time_sampling: AbstractTimeSampling

    def __init__(
        self,
        sde: AbstractSDE,
        network: Callable[..., Array],
        *,
        num_classes: int,
        event_shape: tuple[int, ...],
        time_sampling: AbstractTimeSampling = UniformTime(),
    ):
        self.sde = sde
        self.network = network
        self.num_classes = num_classes
        self.event_shape = tuple(event_shape)
        self.time_sampling = time_sampling

    def __check_init__(self):
        _checks.positive_int(self.num_classes, "num_classes")

    def __call__(self, t: ScalarLike, x: Float[Array, "*shape"]) -> Float[Array, " classes"]:
        r"""$\log p_{\phi}(\cdot \mid x_t = x)$, `(num_classes,)`, at one example."""
        logits = self.network(jnp.asarray(t), x)
        if logits.shape != (self.num_classes,):
            raise ValueError(
                f"`network` must return ({self.num_classes},) logits at one example, got "
                f"shape {logits.shape}."
            )
        return jax.nn.log_softmax(logits)

    def loss(self, x: PyTree[Array], *, key: Key) -> Scalar:
        """The cross-entropy of a batch `(x, y)` on noisy data (`noisy_classifier_loss`)."""
        data, labels = labelled_batch(x, self.event_shape, self.num_classes)
        return losses.noisy_classifier_loss(
            self.sde, self, data, labels, time_sampling=self.time_sampling, key=key
        )

    def accuracy(self, t: ScalarLike, x: Float[Array, "batch ..."], y: Array) -> Scalar:
        """The fraction of the batch `x` (noisy data at time `t`) classified as `y`."""
        check_event(x, self.event_shape)
        y = check_labels(y, x, self.num_classes, "y")
        log_p = jax.vmap(self, in_axes=(None, 0))(t, x)
        return jnp.mean((jnp.argmax(log_p, axis=-1) == y).astype(x.dtype))
