import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .. import _checks
from .._custom_types import Key, Scalar
from ..sde import AbstractNoisyClassifier, AbstractSDE
from ..solve._shared._model import check_classifier
from ._common import check_labels, check_time_sampling, noisy_batch, stop
from ._options import AbstractTimeSampling, UniformTime


def noisy_classifier_loss(
    sde: AbstractSDE,
    classifier: AbstractNoisyClassifier,
    x: Float[Array, "batch ..."],
    y: Array,
    *,
    time_sampling: AbstractTimeSampling = UniformTime(),
    key: Key,
) -> Scalar:
    r"""Cross-entropy of a classifier of noisy data, $-\mathbb{E}\log p_{\phi}(y \mid x_t, t)$.

    With $t$ drawn by `time_sampling`, $\varepsilon \sim N(0, I)$ and
    $x_t = \alpha_t x + \sigma_t\varepsilon$ (the SDE's marginal, the same draw as
    `denoising_score_matching` makes for the same key), the loss is the batch mean of
    $-w(t)\log p_{\phi}(y \mid x_t, t)$, $w$ the time sampling's importance weight. Its
    minimiser is the posterior over classes of noisy data that classifier guidance
    differentiates: Dhariwal & Nichol 2021 (arXiv:2105.05233, sec. 4) train it on noisy
    images; Song et al. 2021 (arXiv:2011.13456, sec. 5, app. I) as here, on the
    continuous-time marginals.

    Args:
        sde: the noising SDE.
        classifier: the classifier being trained (a `scoreflow.sde.AbstractNoisyClassifier`
            of this SDE's type; it acts on one example and is vmapped here).
        x: `(batch, *event)` clean data.
        y: `(batch,)` integer class labels in `0..classifier.num_classes - 1`.
        time_sampling: how $t$ is drawn.
        key: PRNG key.

    Returns:
        The scalar loss (nats).

    Raises:
        ValueError: on a classifier of another kind or SDE, one that does not return
            `(num_classes,)` log-probabilities, an unknown time sampling, or labels that
            are not `(batch,)` class labels of `x`.
    """
    check_classifier(sde, classifier)
    check_time_sampling(time_sampling)
    _checks.batch_array(x, "x")
    y = check_labels(y, x, classifier.num_classes, "y")
    t, iw, _, xt = noisy_batch(stop(sde), x, time_sampling, key=key)
    want = (classifier.num_classes,)

    def one(t, xt, label):
        log_p = classifier(t, xt)
        if log_p.shape != want:
            raise ValueError(
                f"`classifier` must return {want} log-probabilities at one example, got "
                f"shape {log_p.shape}."
            )
        return log_p[label].astype(x.dtype)

    return -jnp.mean(iw * jax.vmap(one)(t, xt, y))
