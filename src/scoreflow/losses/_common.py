"""Shared pieces of the score-matching losses: checks, the noisy batch, reductions."""

import jax
import jax.numpy as jnp
import jax.random as jr

from .. import _checks
from ..sde import AbstractPrediction, AbstractSDE, convert
from ..solve._shared._model import check_model
from ._options import AbstractTimeSampling, AbstractWeighting

REDUCTIONS = ("mean", "sum")


def check_choice(value, choices, name):
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}, got {value!r}.")


def check_time_sampling(time_sampling):
    if not isinstance(time_sampling, AbstractTimeSampling):
        raise ValueError(
            "`time_sampling` must be a `scoreflow.losses` time sampling (e.g. "
            f"`UniformTime()`), got {time_sampling!r}."
        )


def check_options(sde, model, x, weighting, time_sampling, reduce) -> AbstractPrediction:
    """The checks every score-matching loss makes at its boundary."""
    check_model(sde, model)
    if not isinstance(weighting, AbstractWeighting):
        raise ValueError(
            "`weighting` must be a `scoreflow.losses` weighting (e.g. "
            f"`SigmaSquaredWeighting()`), got {weighting!r}."
        )
    check_time_sampling(time_sampling)
    check_choice(reduce, REDUCTIONS, "reduce")
    _checks.batch_array(x, "x")
    _checks.float_dtype(x.dtype, "x")
    return model


def check_labels(y, x, num_classes, name, *, null=False):
    """`y` as `(batch,)` integer class labels of the batch `x` (see `_checks.labels`)."""
    y = _checks.labels(y, num_classes, name, null=null)
    if y.shape != (x.shape[0],):
        raise ValueError(
            f"`{name}` must be ({x.shape[0]},) labels, one per example of `x` "
            f"{tuple(x.shape)}, got shape {y.shape}."
        )
    return y


def noisy_batch(sde: AbstractSDE, x, time_sampling, *, key):
    r"""Times, weights, noise $\varepsilon$ and $x_t = \alpha_t x + \sigma_t\varepsilon$."""
    _checks.key(key)
    n, dtype = x.shape[0], x.dtype
    k_t, k_eps = jr.split(key)
    t, iw = time_sampling.sample(sde, n, dtype, key=k_t)
    eps = jr.normal(k_eps, x.shape, dtype)
    alpha, sigma = sde.marginal(t)
    bshape = (n,) + (1,) * (x.ndim - 1)
    xt = (alpha.reshape(bshape) * x + sigma.reshape(bshape) * eps).astype(dtype)
    return t, iw, eps, xt


def native_scale(sde, t, x, parameterisation):
    r"""$\partial\,\mathrm{score} / \partial\,\mathrm{output}$ of the conversion.

    Conversions are affine in the model output; their slope, taken with `jax.jvp` of
    `scoreflow.sde.convert` (so nothing is re-derived here), maps an error in the
    model's own parameterisation to an error in score space.
    """

    def to_score(value):
        return convert(sde, t, x, value, source=parameterisation, target="score")

    return jax.jvp(to_score, (jnp.zeros_like(x),), (jnp.ones_like(x),))[1]


def reduce_event(v, reduce):
    axes = tuple(range(1, v.ndim))
    return jnp.mean(v, axes) if reduce == "mean" else jnp.sum(v, axes)


def stop(tree):
    """Stop gradients into an SDE's (or any pytree's) array hyperparameters."""
    return jax.tree_util.tree_map(
        lambda v: jax.lax.stop_gradient(v) if isinstance(v, jax.Array) else v, tree
    )
