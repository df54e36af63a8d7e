r"""A Gaussian mixture whose components are classes: exact conditionals and classifiers.

Label each component $k$ of $p_0 = \sum_k w_k N(\mu_k, \Sigma_k)$ with a class $c_k$.
Then the class-conditional law is the sub-mixture of that class's components,
$p_0(x \mid y) \propto \sum_{k: c_k = y} w_k N(x; \mu_k, \Sigma_k)$, and under any linear
SDE both it and the noisy classifier are closed-form at every $t$:
$p_t(x \mid y)$ is the noised sub-mixture and
$p(y \mid x_t) = \sum_{k: c_k = y} r_k(x_t)$, the summed responsibilities of the class's
components under $p_t$. These are the oracles that classifier and classifier-free
guidance are checked against.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from .. import _checks
from .._custom_types import Key, ScalarLike
from ..sde import AbstractConditionalPrediction, AbstractNoisyClassifier, AbstractSDE
from ..sde._parameterisation import check_parameterisation
from ._mixture import GaussianMixture, _eigendecomposition, _Noisy, exact_output


def _class_log_weights(mixture, labels, y, num_classes):
    # log w_k on the components of class y, -inf elsewhere; the null label (num_classes)
    # keeps every component. Works for a traced y.
    log_w = jnp.log(mixture.weights)
    keep = (jnp.asarray(labels) == y) | (y == num_classes)
    return jnp.where(keep, log_w, -jnp.inf)


class ClassMixture(eqx.Module):
    r"""A `GaussianMixture` with a class label on every component.

    Args:
        mixture: the joint law $p_0(x)$.
        labels: `(K,)` integer class of each component, in `0..num_classes - 1`; every
            class needs at least one component.
        num_classes: number of classes (default: the largest label plus one).

    Raises:
        ValueError: on labels of the wrong length, out of range, or a class without a
            component.
    """

    mixture: GaussianMixture
    labels: tuple[int, ...] = eqx.field(static=True)
    num_classes: int = eqx.field(static=True)

    def __init__(self, mixture: GaussianMixture, labels, num_classes: int | None = None):
        if not isinstance(mixture, GaussianMixture):
            raise ValueError(
                f"`mixture` must be a `GaussianMixture`, got {type(mixture).__name__}."
            )
        lab = np.asarray(labels)
        K = mixture.weights.shape[0]
        if lab.shape != (K,) or not np.issubdtype(lab.dtype, np.integer):
            raise ValueError(f"`labels` must be {K} integer class labels, got {labels!r}.")
        n = int(lab.max()) + 1 if num_classes is None else num_classes
        _checks.positive_int(n, "num_classes")
        if lab.min() < 0 or lab.max() >= n:
            raise ValueError(f"`labels` must lie in 0..{n - 1}, got {lab}.")
        missing = sorted(set(range(n)) - set(lab.tolist()))
        if missing:
            raise ValueError(
                f"`labels` must give every class a component; classes {missing} have none."
            )
        self.mixture = mixture
        self.labels = tuple(int(v) for v in lab)
        self.num_classes = n

    def class_weights(self) -> Float[Array, " classes"]:
        r"""$p(y)$: the total weight of each class's components."""
        onehot = jax.nn.one_hot(
            jnp.asarray(self.labels), self.num_classes, dtype=self.mixture.weights.dtype
        )
        return self.mixture.weights @ onehot

    def given(self, y: int) -> GaussianMixture:
        r"""$p_0(x \mid y)$, the renormalised sub-mixture of class `y` (a concrete label)."""
        _checks.labels(y, self.num_classes, "y")
        idx = np.flatnonzero(np.asarray(self.labels) == int(y))
        m = self.mixture
        w = m.weights[idx]
        return GaussianMixture(w / jnp.sum(w), m.means[idx], m.covariances[idx])

    def sample(
        self, num: int, *, key: Key
    ) -> tuple[Float[Array, "{num} dim"], Int[Array, " {num}"]]:
        """Exact samples `(x, y)` of the joint law of data and class."""
        x, comp = self.mixture.sample_components(num, key=key)
        return x, jnp.asarray(self.labels)[comp]

    def log_prob(self, x: Float[Array, "*batch dim"], y=None) -> Float[Array, "*batch"]:
        r"""Exact $\log p_0(x \mid y)$, or $\log p_0(x)$ for `y=None`."""
        return self.noised_at(1.0, 0.0, y).log_prob(self.mixture._event(x))

    def noised_at(self, alpha, sigma, y=None, eig=None) -> _Noisy:
        # The class-y sub-mixture (renormalised) at fixed (alpha, sigma); `eig` the
        # mixture's `_eigendecomposition`, held by the noisy models.
        if y is None:
            return _Noisy(self.mixture, alpha, sigma, eig=eig)
        y = _checks.labels(y, self.num_classes, "y", null=True)
        log_w = _class_log_weights(self.mixture, self.labels, y, self.num_classes)
        return _Noisy(self.mixture, alpha, sigma, log_w - jax.nn.logsumexp(log_w), eig)

    def noised(self, sde: AbstractSDE, parameterisation: str = "score") -> "NoisyClassMixture":
        r"""The exact conditional noisy marginals $p_t(x \mid y)$ under `sde`."""
        return NoisyClassMixture(self, sde, parameterisation)

    def classifier(self, sde: AbstractSDE) -> "NoisyMixtureClassifier":
        r"""The exact noisy classifier $p(y \mid x_t)$ under `sde`."""
        return NoisyMixtureClassifier(self, sde)


class NoisyClassMixture(AbstractConditionalPrediction):
    r"""The exact $p_t(x \mid y)$ and $p_t(x)$ of a `ClassMixture` under an SDE.

    `model(t, x, y)` is the exact `parameterisation` quantity of class `y`'s noisy
    sub-mixture; `model(t, x)` (or `y = num_classes`) that of the whole mixture. It is the
    ideal classifier-free model: its conditional and unconditional predictions are both
    exact. Full covariances are eigendecomposed once, here, as in `NoisyMixture`.

    Args:
        classes: the labelled mixture.
        sde: the noising SDE.
        parameterisation: which exact quantity `__call__` returns.
    """

    classes: ClassMixture
    sde: AbstractSDE
    _eig: tuple[Array, Array] | None
    parameterisation: str = eqx.field(static=True, default="score")

    def __init__(self, classes: ClassMixture, sde: AbstractSDE, parameterisation: str = "score"):
        self.classes = classes
        self.sde = sde
        self.parameterisation = parameterisation
        self._eig = _eigendecomposition(classes.mixture)

    def __check_init__(self):
        check_parameterisation(self.parameterisation)

    @property
    def num_classes(self) -> int:  # pyright: ignore[reportIncompatibleVariableOverride]
        return self.classes.num_classes

    def _at(self, t, y):
        alpha, sigma = self.sde.marginal(t)
        return self.classes.noised_at(alpha, sigma, y, self._eig)

    def __call__(
        self, t: ScalarLike, x: Float[Array, "*batch dim"], y=None
    ) -> Float[Array, "*batch dim"]:
        x = self.classes.mixture._event(x)
        return exact_output(self._at(t, y), self.parameterisation, x)

    def log_prob(
        self, t: ScalarLike, x: Float[Array, "*batch dim"], y=None
    ) -> Float[Array, "*batch"]:
        r"""Exact $\log p_t(x \mid y)$ (`y=None`: $\log p_t(x)$)."""
        return self._at(t, y).log_prob(self.classes.mixture._event(x))


class NoisyMixtureClassifier(AbstractNoisyClassifier):
    r"""The exact noisy classifier $\log p(y \mid x_t)$ of a `ClassMixture` under an SDE.

    $p(y \mid x_t) = \sum_{k: c_k = y} r_k(x_t)$ with $r_k$ the responsibilities of the
    noised components, $r_k \propto w_k N(x_t; \alpha_t\mu_k, \alpha_t^2\Sigma_k + \sigma_t^2 I)$.
    Full covariances are eigendecomposed once, here, as in `NoisyMixture`.

    Args:
        classes: the labelled mixture.
        sde: the noising SDE.
    """

    classes: ClassMixture
    sde: AbstractSDE
    _eig: tuple[Array, Array] | None

    def __init__(self, classes: ClassMixture, sde: AbstractSDE):
        self.classes = classes
        self.sde = sde
        self._eig = _eigendecomposition(classes.mixture)

    @property
    def num_classes(self) -> int:  # pyright: ignore[reportIncompatibleVariableOverride]
        return self.classes.num_classes

    def __call__(
        self, t: ScalarLike, x: Float[Array, "*batch dim"]
    ) -> Float[Array, "*batch classes"]:
        alpha, sigma = self.sde.marginal(t)
        noisy = self.classes.noised_at(alpha, sigma, eig=self._eig)
        joint = noisy.joint(self.classes.mixture._event(x))
        member = jnp.asarray(self.classes.labels)[None, :] == jnp.arange(self.num_classes)[:, None]
        per_class = jax.nn.logsumexp(jnp.where(member, joint[..., None, :], -jnp.inf), axis=-1)
        return per_class - jax.nn.logsumexp(joint, axis=-1, keepdims=True)
