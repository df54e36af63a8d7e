import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._custom_types import Key, Scalar
from ..sde import AbstractConditionalPrediction, AbstractPrediction, AbstractSDE, convert
from ._common import check_labels, check_options, native_scale, noisy_batch, reduce_event, stop
from ._options import (
    AbstractTimeSampling,
    AbstractWeighting,
    SigmaSquaredWeighting,
    UniformTime,
)


def denoising_score_matching(
    sde: AbstractSDE,
    model: AbstractPrediction,
    x: Float[Array, "batch ..."],
    *,
    weighting: AbstractWeighting = SigmaSquaredWeighting(),
    time_sampling: AbstractTimeSampling = UniformTime(),
    reduce: str = "mean",
    labels: Array | None = None,
    per_example: bool = False,
    schedule_gradient: bool = False,
    key: Key,
) -> Scalar | Float[Array, " batch"]:
    r"""Denoising score matching (Vincent 2011) for a model in any parameterisation.

    With $t$ drawn by `time_sampling`, $\varepsilon \sim N(0, I)$ and
    $x_t = \alpha_t x_0 + \sigma_t\varepsilon$, the loss is

    $$\mathbb{E}\,\lambda(t)\,\|s_{\theta}(t, x_t) - \nabla\log p(x_t \mid x_0)\|^2,
    \qquad \nabla\log p(x_t\mid x_0) = -\varepsilon/\sigma_t$$

    (Song et al. 2021, arXiv:2011.13456, eq. 7). It is evaluated in the model's own
    parameterisation (`model.parameterisation`): the target $\varepsilon$ is converted
    with `scoreflow.sde.convert` and the weight is rescaled by the conversion's slope,
    so an eps model with `SigmaSquaredWeighting()` is exactly
    $\|\hat\varepsilon - \varepsilon\|^2$ (Ho et al. 2020's $L_{\rm simple}$ in
    continuous time), without a division by $\sigma_t$.

    The discrete classics are this loss with a discrete time sampling (`DiscreteTime`):
    DDPM's $L_{\rm simple}$ (Ho et al. 2020, eq. 14) on the steps $t_i = i/N$ of a
    `scoreflow.sde.DiscreteVPSDE`, and NCSN's noise-conditional score matching (Song &
    Ermon 2019, eq. 6, $\lambda(\sigma) = \sigma^2$) on the times of its noise ladder.

    Weightings $\lambda(t)$ (score space): `SigmaSquaredWeighting()`,
    `LikelihoodWeighting()` (a bound on the negative log-likelihood),
    `EDMWeighting(sigma_data)`, `UnitWeighting()`. Time samplings: `UniformTime()` on
    $[t_{\min}, T]$, `LogSNRUniformTime()` (unbiased importance sampling of the uniform
    objective), `LogNormalTime(p_mean, p_std)` (EDM's, which defines the objective) and
    `DiscreteTime(times)`.

    With `labels` the model is a `scoreflow.sde.AbstractConditionalPrediction` and each
    example is scored by `model(t, x_t, y)` with its own label (`num_classes`, the null
    label, for the unconditional output): the conditional objective of classifier-free
    training (Ho & Salimans 2022, arXiv:2207.12598, Algorithm 1), which draws the same
    times and noise as the unconditional loss of the same key.

    In SNR form: for every linear SDE $g(t)^2 = -\frac{d\,\mathrm{SNR}}{dt}
    \frac{\sigma_t^4}{\alpha_t^2}$ ($\mathrm{SNR} = \alpha_t^2/\sigma_t^2$), so
    `LikelihoodWeighting()` with `reduce="sum"` is
    $-\mathrm{SNR}'(t)\,\lVert\hat x_0 - x_0\rVert^2 = \gamma'(t)\lVert\hat\varepsilon
    - \varepsilon\rVert^2$ ($\gamma = -\log\mathrm{SNR}$, VP), and
    $\tfrac12(T - t_{\min})$ times it is the diffusion term of the variational diffusion
    model's bound (Kingma et al. 2021, arXiv:2107.00630, eq. 17), which
    `scoreflow.models.VDM` uses with `per_example=True` and, for its learned schedule,
    `schedule_gradient=True`.

    Args:
        sde: the noising SDE.
        model: the model being trained (a `scoreflow.sde.AbstractPrediction`; it acts on
            one example and is vmapped over the batch here).
        x: `(batch, *event)` clean data.
        weighting: $\lambda(t)$.
        time_sampling: how $t$ is drawn.
        reduce: `"mean"` or `"sum"` over the event axes (then mean over the batch).
        labels: `(batch,)` integer class labels in `0..model.num_classes` (the last is
            the null label), or `None`: the model is called without one.
        per_example: return the `(batch,)` per-example losses (times their importance
            weights) instead of their mean.
        schedule_gradient: let gradients reach the SDE's arrays (a learned schedule,
            `scoreflow.sde.LearnedVPSDE`); by default the SDE is a constant.
        key: PRNG key.

    Returns:
        The scalar loss (or `(batch,)` with `per_example`).

    Raises:
        ValueError: on a model that does not say what it predicts, an unknown option,
            a batch without a batch axis, or labels that are not `(batch,)` class
            labels of a conditional model.
    """
    check_options(sde, model, x, weighting, time_sampling, reduce)
    if labels is not None:
        if not isinstance(model, AbstractConditionalPrediction):
            raise ValueError(
                "`model` must be a `scoreflow.sde.AbstractConditionalPrediction` to be "
                f"trained with `labels`, got {type(model).__name__}."
            )
        labels = check_labels(labels, x, model.num_classes, "labels", null=True)
    if not schedule_gradient:
        sde = stop(sde)
    dtype = x.dtype
    parameterisation = model.parameterisation
    t, iw, eps, xt = noisy_batch(sde, x, time_sampling, key=key)

    def one(t, xt, e, *y):
        out = model(t, xt, *y)
        if out.shape != xt.shape:
            raise ValueError(f"`model` must return the input's shape {xt.shape}, got {out.shape}.")
        target = convert(sde, t, xt, e, source="eps", target=parameterisation)
        scale = native_scale(sde, t, xt, parameterisation)
        w = weighting(sde, t)
        return (w * (scale * (out - target)) ** 2).astype(dtype)

    per = jax.vmap(one)(t, xt, eps, *(() if labels is None else (labels,)))
    losses = iw * reduce_event(per, reduce)
    return losses if per_example else jnp.mean(losses)
