"""A figure that is an estimate carries its standard error."""

import equinox as eqx
from jaxtyping import Array


class Estimate(eqx.Module):
    """A Monte Carlo estimate and its standard error (same shape).

    Attributes:
        value: the estimate.
        stderr: its standard error (an estimate too; see each metric for how it is
            computed and when it is approximate).
    """

    value: Array
    stderr: Array

    def __format__(self, spec: str) -> str:
        spec = spec or ".4g"
        return f"{float(self.value):{spec}} ± {float(self.stderr):{spec}}"
