"""Shared pieces of the score transforms: boundary checks and shifts in any parameterisation."""

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from .. import _checks
from ..sde import AbstractPrediction, AbstractSDE, convert


def shift(sde: AbstractSDE, t, x, out, delta_score, parameterisation: str):
    r"""`out` moved by `delta_score` in score space, expressed in `parameterisation`.

    Every conversion is affine in the model's output with the same slope at $(t, x)$, so
    a shift $\delta$ of the score is the shift `convert(δ) - convert(0)` of the output,
    exactly; the output itself never makes a round trip through another parameterisation.
    """

    def to_native(value):
        return convert(sde, t, x, value, source="score", target=parameterisation)

    return out + (to_native(delta_score) - to_native(jnp.zeros_like(delta_score)))


def check_prediction(model, name: str = "model") -> AbstractPrediction:
    if not isinstance(model, AbstractPrediction):
        raise ValueError(
            f"`{name}` must be a `scoreflow.sde.AbstractPrediction` (a scoreflow model or "
            f"an exact oracle), got {type(model).__name__}."
        )
    return model


def check_scale(scale, name: str = "scale"):
    """A guidance scale: a finite real scalar (a traced one is checked at run time)."""
    scale = jnp.asarray(scale)
    real = jnp.issubdtype(scale.dtype, jnp.floating) or jnp.issubdtype(scale.dtype, jnp.integer)
    if scale.shape != () or not real:
        raise ValueError(f"`{name}` must be a real scalar, got shape {scale.shape}.")
    value = _checks.concrete(scale)
    if value is not None:
        _checks.check(bool(np.isfinite(value)), name, f"must be finite, got {value}.")
        return scale
    return eqx.error_if(scale, ~jnp.isfinite(scale), f"`{name}` must be finite.")


def check_mask(mask, observation, event_shape=None):
    """An event-shaped boolean mask (True = known) and a finite observation of its shape."""
    mask = jnp.asarray(mask)
    if mask.dtype != jnp.bool_:
        raise ValueError(f"`mask` must be a boolean array (True = known), got dtype {mask.dtype}.")
    observation = jnp.asarray(observation)
    if observation.shape != mask.shape:
        raise ValueError(
            f"`observation` must have the mask's shape {mask.shape}, got {observation.shape}."
        )
    if event_shape is not None and mask.shape != tuple(event_shape):
        raise ValueError(
            f"`mask` must have the event shape {tuple(event_shape)}, got {mask.shape}."
        )
    if not jnp.issubdtype(observation.dtype, jnp.floating):
        raise ValueError(f"`observation` must be floating point, got dtype {observation.dtype}.")
    _checks.finite(jnp.where(mask, observation, 0), "observation")
    return mask, observation
