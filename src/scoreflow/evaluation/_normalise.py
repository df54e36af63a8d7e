from .._custom_types import Key
from ..models import AbstractUnnormalisedLikelihood

AIS_LABEL = "estimate (AIS)"


def normalised(
    model: AbstractUnnormalisedLikelihood, options: dict | None, *, key: Key
) -> tuple[AbstractUnnormalisedLikelihood, float]:
    r"""`model` normalised by its estimate of $\log Z$, and that estimate's standard error."""
    est = model.log_normaliser(key=key, **(options or {}))
    return model.with_log_normaliser(est.log_z), float(est.stderr)
