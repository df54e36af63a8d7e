r"""The one place where score / eps / x0 / v predictions are converted.

With $x_t = \\alpha_t x_0 + \\sigma_t \\varepsilon$:
score $= -\\varepsilon / \\sigma_t$ (Tweedie), and
$v = \\alpha_t \\varepsilon - \\sigma_t x_0$ (Salimans & Ho 2022, arXiv:2202.00512,
sec. 4), inverted for any $(\\alpha_t, \\sigma_t)$, not only $\\alpha^2 + \\sigma^2 = 1$.
"""

from collections.abc import Callable

import equinox as eqx
from jaxtyping import Array, Float

from .._custom_types import PARAMETERISATIONS, ScalarLike
from ._base import AbstractSDE


def _check_name(value: str, name: str) -> None:
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
    _check_name(source, "source")
    _check_name(target, "target")
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


class Prediction(eqx.Module):
    """A network `(t, x) -> array` read through its parameterisation.

    Every sampler, loss and likelihood asks a `Prediction` for the quantity it needs
    (`score`, `eps`, `x0` or `v`), so a model trained in any parameterisation plugs
    into all of them.

    Args:
        sde: the SDE the model was trained under.
        model: callable `(t, x) -> array` on one example (diffrax argument order).
        parameterisation: what `model` outputs: `"score"`, `"eps"`, `"x0"` or `"v"`.

    Raises:
        ValueError: on an unknown `parameterisation`.
    """

    sde: AbstractSDE
    model: Callable[..., Array]
    parameterisation: str = eqx.field(static=True, default="score")

    def __check_init__(self):
        _check_name(self.parameterisation, "parameterisation")

    def _as(self, target, t, x):
        value = self.model(t, x)
        if value.shape != x.shape:
            raise ValueError(
                f"`model` must return an array of the input's shape {x.shape}, got {value.shape}."
            )
        return convert(self.sde, t, x, value, source=self.parameterisation, target=target)

    def score(self, t: ScalarLike, x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        return self._as("score", t, x)

    def eps(self, t: ScalarLike, x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        return self._as("eps", t, x)

    def x0(self, t: ScalarLike, x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        return self._as("x0", t, x)

    def v(self, t: ScalarLike, x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        return self._as("v", t, x)
