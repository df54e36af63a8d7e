r"""The one place where score / eps / x0 / v predictions are converted.

With $x_t = \alpha_t x_0 + \sigma_t \varepsilon$:
score $= -\varepsilon / \sigma_t$ (Tweedie), and
$v = \alpha_t \varepsilon - \sigma_t x_0$ (Salimans & Ho 2022, arXiv:2202.00512,
sec. 4), inverted for any $(\alpha_t, \sigma_t)$, not only $\alpha^2 + \sigma^2 = 1$.
"""

import abc
from collections.abc import Callable

import equinox as eqx
from jaxtyping import Array, Float

from .._custom_types import PARAMETERISATIONS, ScalarLike
from ._base import AbstractSDE


def check_parameterisation(value: str, name: str = "parameterisation") -> None:
    """Raise `ValueError` naming `name` unless `value` is a known parameterisation."""
    if value not in PARAMETERISATIONS:
        raise ValueError(f"`{name}` must be one of {PARAMETERISATIONS}, got {value!r}.")


def _to_eps(alpha, sigma, x, value, source):
    if source == "eps":
        return value
    if source == "score":
        return -sigma * value
    if source == "x0":
        return (x - alpha * value) / sigma
    return (sigma * x + alpha * value) / (alpha**2 + sigma**2)


def _to_x0(alpha, sigma, x, value, source):
    if source == "x0":
        return value
    if source == "eps":
        return (x - sigma * value) / alpha
    if source == "score":
        return (x + sigma**2 * value) / alpha
    return (alpha * x - sigma * value) / (alpha**2 + sigma**2)


def convert(
    sde: AbstractSDE,
    t: ScalarLike,
    x: Float[Array, "*shape"],
    value: Float[Array, "*shape"],
    *,
    source: str,
    target: str,
) -> Float[Array, "*shape"]:
    """Convert a model output at $(t, x)$ from one parameterisation to another.

    Args:
        sde: the SDE whose `marginal(t)` defines the conversion.
        t: time.
        x: the noisy input $x_t$.
        value: the model's output, in the `source` parameterisation.
        source: one of `"score"`, `"eps"`, `"x0"`, `"v"`.
        target: one of `"score"`, `"eps"`, `"x0"`, `"v"`.

    Returns:
        The same prediction in the `target` parameterisation.

    Raises:
        ValueError: if `source` or `target` is not a known parameterisation.
    """
    check_parameterisation(source, "source")
    check_parameterisation(target, "target")
    if source == target:
        return value
    alpha, sigma = sde.marginal(t)
    if target == "x0":
        return _to_x0(alpha, sigma, x, value, source)
    eps = _to_eps(alpha, sigma, x, value, source)
    if target == "eps":
        return eps
    if target == "score":
        return -eps / sigma
    x0 = _to_x0(alpha, sigma, x, value, source)
    return alpha * eps - sigma * x0


class AbstractPrediction(eqx.Module):
    r"""A model of noisy data that knows what it predicts.

    Calling it, `model(t, x)`, gives its own output at one example $x_t$: the
    `parameterisation` says whether that is the score $\nabla\log p_t$, the noise
    $\varepsilon$, the data $x_0$ or the velocity $v$, under its `sde`. Every sampler,
    likelihood, loss and guidance transform of scoreflow receives one of these and asks
    it for the quantity it needs (`score`, `eps`, `x0`, `v`), so a network can never be
    read as something it was not trained to predict: there is no `parameterisation`
    argument anywhere else to get wrong.

    Concrete predictions: `Prediction` (any network, wrapped), the models of
    `scoreflow.models` (`ScoreSDE`, `DDPM`, `NCSN`), and the exact noisy marginals
    `scoreflow.analytic.GaussianMixture(...).noised(sde)`.
    """

    sde: eqx.AbstractVar[AbstractSDE]
    parameterisation: eqx.AbstractVar[str]

    @abc.abstractmethod
    def __call__(self, t: ScalarLike, x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        """The model's own output at $(t, x)$, in its `parameterisation`."""

    def _read(self, target, t, x):
        value = self(t, x)
        if value.shape != x.shape:
            raise ValueError(
                f"`model` must return an array of the input's shape {x.shape}, got {value.shape}."
            )
        return convert(self.sde, t, x, value, source=self.parameterisation, target=target)

    def score(self, t: ScalarLike, x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        r"""$\nabla_x \log p_t(x)$."""
        return self._read("score", t, x)

    def eps(self, t: ScalarLike, x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        r"""$E[\varepsilon \mid x_t = x]$."""
        return self._read("eps", t, x)

    def x0(self, t: ScalarLike, x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        r"""$E[x_0 \mid x_t = x]$, the denoiser."""
        return self._read("x0", t, x)

    def v(self, t: ScalarLike, x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        r"""$E[v \mid x_t = x]$, $v = \alpha_t\varepsilon - \sigma_t x_0$."""
        return self._read("v", t, x)


class AbstractWrappedPrediction(AbstractPrediction):
    """A prediction made from another one, `model`, with that model's SDE and parameterisation.

    Conditioned models, guided models and inpainting transforms are these.
    """

    model: eqx.AbstractVar[AbstractPrediction]

    @property
    def sde(self) -> AbstractSDE:  # pyright: ignore[reportIncompatibleVariableOverride]
        return self.model.sde

    @property
    def parameterisation(self) -> str:  # pyright: ignore[reportIncompatibleVariableOverride]
        return self.model.parameterisation


class Prediction(AbstractPrediction):
    """A network `(t, x) -> array` together with what it predicts.

    Args:
        sde: the SDE the network was trained under (its `marginal(t)` converts).
        network: callable `(t, x) -> array` on one example (diffrax argument order),
            returning an array of `x`'s shape.
        parameterisation: what `network` outputs: `"score"`, `"eps"`, `"x0"` or `"v"`.
            Required: a default would be a guess about the network.

    Raises:
        ValueError: on an unknown `parameterisation`.
    """

    sde: AbstractSDE
    network: Callable[..., Array]
    parameterisation: str = eqx.field(static=True)

    # Written out so that type checkers read the arguments in this order, not the
    # order in which `AbstractPrediction` declares its abstract attributes.
    def __init__(self, sde: AbstractSDE, network: Callable[..., Array], parameterisation: str):
        self.sde = sde
        self.network = network
        self.parameterisation = parameterisation

    def __check_init__(self):
        check_parameterisation(self.parameterisation)

    def __call__(self, t: ScalarLike, x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        return self.network(t, x)
