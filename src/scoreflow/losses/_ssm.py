from collections.abc import Callable

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float

from .._custom_types import PARAMETERISATIONS, Key, Scalar
from ..sde import AbstractSDE, Prediction
from ._common import (
    REDUCTIONS,
    TIME_SAMPLINGS,
    WEIGHTINGS,
    check_batch,
    check_choice,
    sample_times,
    score_weight,
    stop,
)

PROBES = ("rademacher", "gaussian")
TRACES = ("exact", "hutchinson")


def _noisy_batch(sde, x, time_sampling, weighting, sigma_data, p_mean, p_std, key):
    n, dtype = x.shape[0], x.dtype
    if sde is None:
        return jnp.zeros((n,), dtype), x, jnp.ones((n,), dtype)
    k_t, k_eps = jr.split(key)
    t, iw = sample_times(sde, n, time_sampling, p_mean, p_std, dtype, key=k_t)
    eps = jr.normal(k_eps, x.shape, dtype)
    alpha, sigma = sde.marginal(t)
    bshape = (n,) + (1,) * (x.ndim - 1)
    xt = (alpha.reshape(bshape) * x + sigma.reshape(bshape) * eps).astype(dtype)
    w = iw * score_weight(sde, t, weighting, sigma_data).astype(dtype)
    return t, xt, w


def _score_fn(model, sde, parameterisation):
    if sde is None:
        if parameterisation != "score":
            raise ValueError(
                "Without an `sde` there is no conversion: `parameterisation` must be "
                f"'score', got {parameterisation!r}."
            )
        return model
    return Prediction(sde, model, parameterisation).score


def _probe(key, shape, dtype, probe):
    if probe == "rademacher":
        return jr.rademacher(key, shape, dtype)
    return jr.normal(key, shape, dtype)


def _prepare(
    model,
    sde,
    x,
    parameterisation,
    probe,
    weighting,
    time_sampling,
    reduce,
    count,
    count_name,
    sigma_data,
    p_mean,
    p_std,
    key,
):
    # The checks and set-up both trace-based losses share: noisy batch, weights, the
    # model read as a score, and the key left for the probes.
    check_choice(parameterisation, PARAMETERISATIONS, "parameterisation")
    check_choice(probe, PROBES, "probe")
    check_choice(weighting, WEIGHTINGS, "weighting")
    check_choice(time_sampling, TIME_SAMPLINGS, "time_sampling")
    check_choice(reduce, REDUCTIONS, "reduce")
    check_batch(x)
    if count < 1:
        raise ValueError(f"`{count_name}` must be a positive int, got {count}.")
    sde = None if sde is None else stop(sde)
    k_noise, k_v = jr.split(key)
    t, xt, w = _noisy_batch(sde, x, time_sampling, weighting, sigma_data, p_mean, p_std, k_noise)
    return t, xt, w, _score_fn(model, sde, parameterisation), k_v


def _finish(per_example, w, x, reduce):
    d = x[0].size
    per = per_example / d if reduce == "mean" else per_example
    return jnp.mean(w * per)


def implicit_score_matching(
    model: Callable[..., Array],
    sde: AbstractSDE | None,
    x: Float[Array, "batch ..."],
    *,
    parameterisation: str = "score",
    trace: str = "exact",
    num_probes: int = 1,
    probe: str = "rademacher",
    weighting: str = "sigma2",
    time_sampling: str = "uniform",
    reduce: str = "mean",
    sigma_data: float = 0.5,
    p_mean: float = -1.2,
    p_std: float = 1.2,
    key: Key,
) -> Scalar:
    r"""Implicit score matching (Hyvärinen 2005, JMLR 6, eq. 4).

    $\mathbb{E}\,\lambda(t)\,[\|s_{\theta}(t, x_t)\|^2 + 2\operatorname{tr}\nabla_x
    s_{\theta}(t, x_t)]$ on samples $x_t$ of the noisy marginal (or on `x` itself when
    `sde` is `None`). Integration by parts makes it equal to
    $\mathbb{E}\,\lambda\|s_{\theta} - \nabla\log p_t\|^2$ up to a constant, and
    therefore to `denoising_score_matching` with the same weighting up to the constant
    $\mathbb{E}\,\lambda(t) d/\sigma_t^2$ (per event element with `reduce="mean"`).

    The trace is exact (`jax.jacfwd`, $d$ forward passes; small $d$) or Hutchinson's
    estimator $v^\top \nabla s\, v$ with `num_probes` Rademacher or Gaussian probes
    (Hutchinson 1989), one Jacobian-vector product each.

    Args:
        model: per-example network `(t, x) -> array`.
        sde: the noising SDE, or `None` for plain score matching on `x` (the model is
            then called with `t = 0` and must predict the score).
        x: `(batch, *event)` data.
        parameterisation: what `model` outputs; it is read as a score through
            `scoreflow.sde.Prediction`.
        trace: `"exact"` or `"hutchinson"`.
        num_probes: probes per example for `"hutchinson"`.
        probe: `"rademacher"` or `"gaussian"`.
        weighting: as in `denoising_score_matching`.
        time_sampling: as in `denoising_score_matching`.
        reduce: `"mean"` (divide by the event size) or `"sum"`.
        sigma_data: EDM weighting's data standard deviation.
        p_mean: EDM's $P_{\rm mean}$.
        p_std: EDM's $P_{\rm std}$.
        key: PRNG key.

    Returns:
        The scalar loss.
    """
    check_choice(trace, TRACES, "trace")
    t, xt, w, score, k_v = _prepare(
        model,
        sde,
        x,
        parameterisation,
        probe,
        weighting,
        time_sampling,
        reduce,
        num_probes,
        "num_probes",
        sigma_data,
        p_mean,
        p_std,
        key,
    )

    def one(t, x, k):
        s_fn = lambda y: score(t, y)
        s = s_fn(x)
        if trace == "exact":
            flat = lambda y: s_fn(y.reshape(x.shape)).reshape(-1)
            tr = jnp.trace(jax.jacfwd(flat)(x.reshape(-1)))
        else:
            vs = _probe(k, (num_probes,) + x.shape, x.dtype, probe)
            jvp = lambda v: jnp.sum(v * jax.jvp(s_fn, (x,), (v,))[1])
            tr = jnp.mean(jax.vmap(jvp)(vs))
        return jnp.sum(s**2) + 2 * tr

    per = jax.vmap(one)(t, xt, jr.split(k_v, x.shape[0]))
    return _finish(per, w, x, reduce)


def sliced_score_matching(
    model: Callable[..., Array],
    sde: AbstractSDE | None,
    x: Float[Array, "batch ..."],
    *,
    parameterisation: str = "score",
    num_slices: int = 1,
    probe: str = "gaussian",
    variance_reduction: bool = True,
    weighting: str = "sigma2",
    time_sampling: str = "uniform",
    reduce: str = "mean",
    sigma_data: float = 0.5,
    p_mean: float = -1.2,
    p_std: float = 1.2,
    key: Key,
) -> Scalar:
    r"""Sliced score matching (Song, Garg, Shi & Ermon 2019, arXiv:1905.07088, eq. 8).

    $\mathbb{E}\,\lambda(t)\,[2 v^\top\nabla_x s_{\theta}\,v + (v^\top s_{\theta})^2]$ with
    random projections $v$, $\mathbb{E}[vv^\top] = I$; with `variance_reduction` the
    second term is replaced by its expectation $\|s_{\theta}\|^2$ (SSM-VR, eq. 9). Both are
    unbiased for `implicit_score_matching`'s objective (the factor 2 keeps the scale
    of `denoising_score_matching`), at the cost of one Jacobian-vector product per
    slice, so they scale to any dimension.

    Args:
        model: per-example network `(t, x) -> array`.
        sde: the noising SDE, or `None` to match the score of `x` itself.
        x: `(batch, *event)` data.
        parameterisation: what `model` outputs.
        num_slices: projections per example.
        probe: `"gaussian"` or `"rademacher"`.
        variance_reduction: use SSM-VR.
        weighting: as in `denoising_score_matching`.
        time_sampling: as in `denoising_score_matching`.
        reduce: `"mean"` (divide by the event size) or `"sum"`.
        sigma_data: EDM weighting's data standard deviation.
        p_mean: EDM's $P_{\rm mean}$.
        p_std: EDM's $P_{\rm std}$.
        key: PRNG key.

    Returns:
        The scalar loss.
    """
    t, xt, w, score, k_v = _prepare(
        model,
        sde,
        x,
        parameterisation,
        probe,
        weighting,
        time_sampling,
        reduce,
        num_slices,
        "num_slices",
        sigma_data,
        p_mean,
        p_std,
        key,
    )

    def one(t, x, k):
        s_fn = lambda y: score(t, y)
        vs = _probe(k, (num_slices,) + x.shape, x.dtype, probe)

        def slice_(v):
            s, jv = jax.jvp(s_fn, (x,), (v,))
            second = jnp.sum(s**2) if variance_reduction else jnp.sum(v * s) ** 2
            return 2 * jnp.sum(v * jv) + second

        return jnp.mean(jax.vmap(slice_)(vs))

    per = jax.vmap(one)(t, xt, jr.split(k_v, x.shape[0]))
    return _finish(per, w, x, reduce)
