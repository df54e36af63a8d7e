"""Shared jaxtyping aliases."""

from typing import Literal, TypeAlias

import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

Scalar: TypeAlias = Float[Array, ""]
# A real scalar as diffrax's controllers take it (no complex `ArrayLike`).
RealScalarLike: TypeAlias = float | int | Float[Array, ""] | Float[np.ndarray, ""]
ScalarLike: TypeAlias = float | Float[ArrayLike, ""]
Key: TypeAlias = PRNGKeyArray
Parameterisation: TypeAlias = Literal["score", "eps", "x0", "v"]

PARAMETERISATIONS: tuple[str, ...] = ("score", "eps", "x0", "v")

# SDE schedule functions are elementwise in time: a scalar or any array of times.
TimeLike: TypeAlias = float | Float[ArrayLike, "*times"]
Times: TypeAlias = Float[Array, "*times"]
