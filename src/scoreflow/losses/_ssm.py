from collections.abc import Callable

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float

from .. import _checks
from .._custom_types import Key, Scalar
from ..sde import AbstractPrediction, AbstractSDE
from ..solve import AbstractTrace, Exact, Hutchinson
from ..solve._likelihood._trace import check_trace
from ._common import REDUCTIONS, check_choice, check_options, noisy_batch, stop
from ._options import (
    AbstractTimeSampling,
    AbstractWeighting,
    SigmaSquaredWeighting,
    UniformTime,
)


def _score_and_trace(sde, model, x, trace, weighting, time_sampling, reduce, key):
    # The set-up both trace-based losses share: the noisy batch (or the data when
    # `sde` is None), the weights, and per example the score with its trace estimates.
    check_trace(trace)
    if sde is None:
        if isinstance(model, AbstractPrediction) or not callable(model):
            raise ValueError(
                "Without an `sde`, `model` must be a callable `x -> score` of the data."
            )
        check_choice(reduce, REDUCTIONS, "reduce")
        _checks.batch_array(x, "x")
        if key is not None:  # with an SDE, the noisy batch checks it
            _checks.key(key)
        n, dtype = x.shape[0], x.dtype
        t, w, xt = jnp.zeros((n,), dtype), jnp.ones((n,), dtype), x
        score = lambda t, y: model(y)
    else:
        check_options(sde, model, x, weighting, time_sampling, reduce)
        sde = stop(sde)
        _checks.key(key)
        k_noise, key = jr.split(key)
        t, iw, _, xt = noisy_batch(sde, x, time_sampling, key=k_noise)
        w = iw * weighting(sde, t).astype(x.dtype)
        score = model.score
    probes = trace.probes(xt.shape, key=key, dtype=xt.dtype)

    def one(t, x, p):
        return trace.estimate(lambda y: score(t, y), x, p)[:2]

    axis = None if probes is None else 0
    s, traces = jax.vmap(one, in_axes=(0, 0, axis))(t, xt, probes)
    return w, s, traces, probes


def _finish(per_example, w, x, reduce):
    d = x[0].size
    per = per_example / d if reduce == "mean" else per_example
    return jnp.mean(w * per)


def implicit_score_matching(
    sde: AbstractSDE | None,
    model: AbstractPrediction | Callable[[Array], Array],
    x: Float[Array, "batch ..."],
    *,
    trace: AbstractTrace = Exact(),
    weighting: AbstractWeighting = SigmaSquaredWeighting(),
    time_sampling: AbstractTimeSampling = UniformTime(),
    reduce: str = "mean",
    key: Key,
) -> Scalar:
    r"""Implicit score matching (Hyvärinen 2005, JMLR 6, eq. 4).

    $\mathbb{E}\,\lambda(t)\,[\|s_{\theta}(t, x_t)\|^2 + 2\operatorname{tr}\nabla_x
    s_{\theta}(t, x_t)]$ on samples $x_t$ of the noisy marginal (or on `x` itself when
    `sde` is `None`). Integration by parts makes it equal to
    $\mathbb{E}\,\lambda\|s_{\theta} - \nabla\log p_t\|^2$ up to a constant, and
    therefore to `denoising_score_matching` with the same weighting up to the constant
    $\mathbb{E}\,\lambda(t) d/\sigma_t^2$ (per event element with `reduce="mean"`).

    The trace is the shared estimator of `scoreflow.solve` (`Exact()`: the Jacobian by
    forward mode, $d$ passes, small $d$; `Hutchinson(K)`: $K$ vector–Jacobian products).

    Args:
        sde: the noising SDE, or `None` for plain score matching on `x`.
        model: the model (a `scoreflow.sde.AbstractPrediction`, read as a score), or,
            with `sde=None`, a callable `x -> score` on one example.
        x: `(batch, *event)` data.
        trace: the trace estimator.
        weighting: as in `denoising_score_matching` (unused without an `sde`).
        time_sampling: as in `denoising_score_matching` (unused without an `sde`).
        reduce: `"mean"` (divide by the event size) or `"sum"`.
        key: PRNG key.

    Returns:
        The scalar loss.
    """
    w, s, traces, _ = _score_and_trace(sde, model, x, trace, weighting, time_sampling, reduce, key)
    axes = tuple(range(1, s.ndim))
    per = jnp.sum(s**2, axis=axes) + 2 * jnp.mean(traces, axis=-1)
    return _finish(per, w, x, reduce)


def sliced_score_matching(
    sde: AbstractSDE | None,
    model: AbstractPrediction | Callable[[Array], Array],
    x: Float[Array, "batch ..."],
    *,
    slices: Hutchinson = Hutchinson(num_probes=1, probe="gaussian"),
    variance_reduction: bool = True,
    weighting: AbstractWeighting = SigmaSquaredWeighting(),
    time_sampling: AbstractTimeSampling = UniformTime(),
    reduce: str = "mean",
    key: Key,
) -> Scalar:
    r"""Sliced score matching (Song, Garg, Shi & Ermon 2019, arXiv:1905.07088, eq. 8).

    $\mathbb{E}\,\lambda(t)\,[2 v^\top\nabla_x s_{\theta}\,v + (v^\top s_{\theta})^2]$ with
    random projections $v$, $\mathbb{E}[vv^\top] = I$; with `variance_reduction` the
    second term is replaced by its expectation $\|s_{\theta}\|^2$ (SSM-VR, eq. 9), which
    makes it `implicit_score_matching` with a Hutchinson trace. Both are unbiased for
    `implicit_score_matching`'s objective (the factor 2 keeps the scale of
    `denoising_score_matching`), at the cost of one vector–Jacobian product per slice,
    so they scale to any dimension.

    Args:
        sde: the noising SDE, or `None` to match the score of `x` itself.
        model: as in `implicit_score_matching`.
        x: `(batch, *event)` data.
        slices: the projections, `Hutchinson(num_probes, probe)` (default one Gaussian
            slice per example, as Song et al.).
        variance_reduction: use SSM-VR.
        weighting: as in `denoising_score_matching`.
        time_sampling: as in `denoising_score_matching`.
        reduce: `"mean"` (divide by the event size) or `"sum"`.
        key: PRNG key.

    Returns:
        The scalar loss.
    """
    if not isinstance(slices, Hutchinson):
        raise ValueError(f"`slices` must be a `Hutchinson(num_probes, probe)`, got {slices!r}.")
    w, s, traces, probes = _score_and_trace(
        sde, model, x, slices, weighting, time_sampling, reduce, key
    )
    axes = tuple(range(1, s.ndim))
    if variance_reduction:
        second = jnp.sum(s**2, axis=axes)
    else:
        assert probes is not None  # a Hutchinson estimator always draws its probes
        v_s = jnp.sum(probes * s[:, None], axis=tuple(range(2, probes.ndim)))
        second = jnp.mean(v_s**2, axis=-1)
    per = 2 * jnp.mean(traces, axis=-1) + second
    return _finish(per, w, x, reduce)
