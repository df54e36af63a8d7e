from jaxtyping import Array, Float, Int

from .. import _checks
from .._custom_types import ScalarLike
from ..sde import (
    AbstractNoisyClassifier,
    AbstractPrediction,
    AbstractWrappedPrediction,
)
from ..solve._shared._model import check_classifier
from ._common import check_prediction, check_scale, shift


class ClassifierGuidance(AbstractWrappedPrediction):
    r"""Classifier guidance: $\nabla\log p_t(x) + w\,\nabla_x\log p(y \mid x_t = x)$.

    Song et al. 2021 (arXiv:2011.13456, sec. 5, eq. 14): the score of the conditional
    $p_t(x \mid y) \propto p_t(x)\,p(y \mid x_t)$ is the model's score plus the gradient
    of a noisy classifier; Dhariwal & Nichol 2021 (arXiv:2105.05233, sec. 4) scale the
    gradient by $w$, which samples $\propto p_t(x)\,p(y \mid x_t)^w$ at each $t$ (exactly
    the conditional at $w = 1$ with the exact classifier). The shift is made in score
    space and carried into the model's own parameterisation (an eps model moves by
    $-w\sigma_t\nabla\log p(y \mid x_t)$, an x0 model by $w\sigma_t^2/\alpha_t$ times it, ...),
    so the result is a prediction of the same kind that every sampler and likelihood of
    scoreflow takes.

    Args:
        model: the (unconditional, or already conditioned) prediction.
        classifier: the noisy classifier $\log p(y \mid x_t)$, trained under the same kind
            of SDE (`scoreflow.models.NoisyClassifier`, or the exact
            `ClassMixture.classifier(sde)`).
        y: the class asked for, an integer scalar (it may be traced).
        scale: $w$, a finite scalar; 0 gives the model back.

    Raises:
        ValueError: on a model or classifier of the wrong kind or SDE, a label out of
            range, or a scale that is not a finite scalar.
    """

    model: AbstractPrediction
    classifier: AbstractNoisyClassifier
    y: Int[Array, ""]
    scale: Float[Array, ""]

    def __init__(
        self, model: AbstractPrediction, classifier: AbstractNoisyClassifier, y, scale=1.0
    ):
        self.model = check_prediction(model)
        self.classifier = check_classifier(model.sde, classifier)
        y = _checks.label(y, classifier.num_classes, "y")
        self.y = y
        self.scale = check_scale(scale)

    def __call__(self, t: ScalarLike, x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        out = self.model(t, x)
        grad = self.classifier.grad_log_prob(t, x, self.y)
        if grad.shape != x.shape:
            raise ValueError(
                f"`classifier`'s gradient must have the input's shape {x.shape}, got {grad.shape}."
            )
        delta = (self.scale * grad).astype(out.dtype)
        return shift(self.sde, t, x, out, delta, self.parameterisation)
