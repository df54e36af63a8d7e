"""Shared jaxtyping aliases."""

from typing import Literal, TypeAlias

from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

Scalar: TypeAlias = Float[Array, ""]
ScalarLike: TypeAlias = float | Float[ArrayLike, ""]
Key: TypeAlias = PRNGKeyArray
Parameterisation: TypeAlias = Literal["score", "eps", "x0", "v"]

PARAMETERISATIONS: tuple[str, ...] = ("score", "eps", "x0", "v")

# SDE schedule functions are elementwise in time: a scalar or any array of times.
TimeLike: TypeAlias = float | Float[ArrayLike, "*times"]
Times: TypeAlias = Float[Array, "*times"]
