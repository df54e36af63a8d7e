r"""Conditional predictions $p_t(x \mid y)$ and noisy classifiers $p(y \mid x_t)$.

A conditional model of noisy data is an `AbstractPrediction` (its unconditional reading,
the null label $\varnothing$) that also answers for a class $y$: `model(t, x, y)`.
`model.condition(y)` fixes the label and is then an ordinary prediction, so every sampler
and likelihood of scoreflow takes it unchanged. A noisy classifier gives the log-probabilities
of the classes of noisy data, $\log p(y \mid x_t)$, for classifier guidance.
"""

import abc

import equinox as eqx
import jax
from jaxtyping import Array, Float, Int

from .. import _checks
from .._custom_types import ScalarLike
from ._base import AbstractSDE
from ._parameterisation import AbstractPrediction, AbstractWrappedPrediction


class AbstractConditionalPrediction(AbstractPrediction):
    r"""A prediction of noisy data given a class label, and without one.

    `model(t, x, y)` is the output for class `y` (an integer scalar in
    `0..num_classes - 1`), in the model's `parameterisation`; `model(t, x)` (or `y` equal
    to `num_classes`, the null label $\varnothing$ of classifier-free training) is the
    unconditional output. The readings `score`, `eps`, `x0`, `v` are the unconditional
    ones; `condition(y)` gives the conditional model as an `AbstractPrediction`.
    """

    num_classes: eqx.AbstractVar[int]

    @abc.abstractmethod
    def __call__(
        self, t: ScalarLike, x: Float[Array, "*shape"], y: Int[Array, ""] | int | None = None
    ) -> Float[Array, "*shape"]:
        """The output for class `y` at $(t, x)$; `None` or `num_classes`: unconditional."""

    def condition(self, y: Int[Array, ""] | int) -> "Conditioned":
        """This model with its label fixed to `y` (a scalar; `num_classes` is the null label)."""
        return Conditioned(self, y)


class Conditioned(AbstractWrappedPrediction):
    r"""A conditional prediction with its label fixed: $p_t(x \mid y)$.

    Args:
        model: the conditional prediction.
        y: integer scalar label in `0..model.num_classes` (the last is the null label).
            It may be traced, so `jax.vmap` over labels reuses one compilation.

    Raises:
        ValueError: on a label that is not an integer scalar, or out of range.
    """

    # Narrower than `AbstractWrappedPrediction.model`: safe, a module is immutable.
    model: AbstractConditionalPrediction  # pyright: ignore[reportIncompatibleVariableOverride]
    y: Int[Array, ""]

    def __init__(self, model: AbstractConditionalPrediction, y):
        self.model = model  # pyright: ignore[reportIncompatibleVariableOverride]
        y = _checks.label(y, model.num_classes, "y", null=True)
        self.y = y

    def __call__(self, t: ScalarLike, x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        return self.model(t, x, self.y)


class AbstractNoisyClassifier(eqx.Module):
    r"""A classifier of noisy data: `classifier(t, x)` is $\log p(y \mid x_t = x)$ over classes.

    Its output at one example is a `(num_classes,)` vector of log-probabilities (they
    need only be correct up to a constant in $y$: guidance differentiates one entry with
    respect to $x$, and a constant in $y$ that depends on $x$ would change the
    gradient, so concrete classifiers return normalised log-probabilities).
    """

    sde: eqx.AbstractVar[AbstractSDE]
    num_classes: eqx.AbstractVar[int]

    @abc.abstractmethod
    def __call__(self, t: ScalarLike, x: Float[Array, "*shape"]) -> Float[Array, " classes"]:
        r"""$\log p(\cdot \mid x_t = x)$, `(num_classes,)`, at one example."""

    def log_prob(self, t: ScalarLike, x: Float[Array, "*shape"], y) -> Float[Array, ""]:
        r"""$\log p(y \mid x_t = x)$ at one example (checked: one of `num_classes` classes)."""
        out = self(t, x)
        if out.shape != (self.num_classes,):
            raise ValueError(
                f"`classifier` must return ({self.num_classes},) log-probabilities at one "
                f"example, got shape {out.shape}."
            )
        return out[_checks.labels(y, self.num_classes, "y")]

    def grad_log_prob(self, t: ScalarLike, x: Float[Array, "*shape"], y) -> Float[Array, "*shape"]:
        r"""$\nabla_x \log p(y \mid x_t = x)$ at one example."""
        return jax.grad(lambda x_: self.log_prob(t, x_, y))(x)
