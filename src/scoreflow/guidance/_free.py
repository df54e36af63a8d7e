import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .. import _checks
from .._custom_types import ScalarLike
from ..sde import (
    AbstractConditionalPrediction,
    AbstractWrappedPrediction,
    convert,
)
from ..sde._parameterisation import check_parameterisation
from ._common import check_scale


class ClassifierFreeGuidance(AbstractWrappedPrediction):
    r"""Classifier-free guidance, $(1 + w)\,\hat\varepsilon(x, y) - w\,\hat\varepsilon(x)$.

    Ho & Salimans 2022 (arXiv:2207.12598, eq. 6). The weights sum to one and every
    conversion between parameterisations is affine in the output, so the same
    combination of the conditional and unconditional outputs is the same guided model in
    any parameterisation (score, eps, x0 or v): $w = 0$ is the conditional model, and the
    score is $\nabla\log p_t(x \mid y) + w\,\nabla\log p_t(y \mid x)$ with the implicit
    classifier $p_t(y \mid x) \propto p_t(x \mid y) / p_t(x)$.

    For $w > 0$ the samples do not follow the tilted density
    $p(x \mid y)^{1+w} p(x)^{-w}$: guiding each noisy marginal is not the noised tilted
    law (Bradley & Nakkiran 2024, arXiv:2408.09000; Chidambaram et al. 2024,
    arXiv:2409.13074). The guidance tutorial measures the gap.

    **Guidance interval** (Kynkäänniemi et al. 2024, arXiv:2404.07724): guidance acts only
    at noise levels $\sigma_t/\alpha_t$ in `interval` = $(\sigma_{lo}, \sigma_{hi}]$ (EDM's
    $\sigma$; a noise level rather than a fraction of the steps, so the same interval
    serves every grid and step count) and the model is the conditional one elsewhere.

    **Guidance rescale** (Lin et al. 2024, arXiv:2305.08891, sec. 3.4, eqs. 15-16): the
    guided prediction $g$ is rescaled to the conditional prediction's standard deviation
    over the event, $g_{\rm r} = g\,\mathrm{std}(c)/\mathrm{std}(g)$, and mixed back,
    $\phi\,g_{\rm r} + (1 - \phi)\,g$. Lin et al. rescale the $x_0$ prediction (the
    default); diffusers rescales the network's own output (`rescale_on="eps"` or
    `"v"`).

    Args:
        model: a conditional prediction (`ConditionalScoreSDE`, `ConditionalDDPM`, or the
            exact `ClassMixture.noised(sde)`); its unconditional output is the null label.
        y: the class asked for, an integer scalar (it may be traced).
        scale: $w$, a finite scalar; 0 is the conditional model, -1 the unconditional one.
        rescale: $\phi \in [0, 1]$ (a Python number); 0 (default) is plain guidance.
        rescale_on: the parameterisation in which the rescaling acts.
        interval: `(sigma_lo, sigma_hi)` noise levels, or `None` (guide at every level).

    Raises:
        ValueError: on a model that is not conditional, a label out of range, a scale or
            rescale that is not finite (or a rescale outside [0, 1]), or a bad interval.
    """

    # Narrower than `AbstractWrappedPrediction.model`: safe, a module is immutable.
    model: AbstractConditionalPrediction  # pyright: ignore[reportIncompatibleVariableOverride]
    y: Int[Array, ""]
    scale: Float[Array, ""]
    rescale: float = eqx.field(static=True)
    rescale_on: str = eqx.field(static=True)
    interval: tuple[float, float] | None = eqx.field(static=True)

    def __init__(
        self,
        model: AbstractConditionalPrediction,
        y,
        scale=1.0,
        *,
        rescale: float = 0.0,
        rescale_on: str = "x0",
        interval: tuple[float, float] | None = None,
    ):
        if not isinstance(model, AbstractConditionalPrediction):
            raise ValueError(
                "`model` must be a conditional prediction (`scoreflow.sde."
                "AbstractConditionalPrediction`: `ConditionalScoreSDE`, `ConditionalDDPM`, "
                f"`ClassMixture.noised(sde)`), got {type(model).__name__}."
            )
        self.model = model  # pyright: ignore[reportIncompatibleVariableOverride]
        y = _checks.label(y, model.num_classes, "y")
        self.y = y
        self.scale = check_scale(scale)
        phi = float(rescale)
        _checks.check(0 <= phi <= 1, "rescale", f"must be a number in [0, 1], got {rescale!r}.")
        self.rescale = phi
        check_parameterisation(rescale_on, "rescale_on")
        self.rescale_on = rescale_on
        if interval is not None:
            lo, hi = (float(v) for v in interval)
            _checks.check(
                0 <= lo < hi,
                "interval",
                f"must be (sigma_lo, sigma_hi) with 0 <= lo < hi, got {interval}.",
            )
            interval = (lo, hi)
        self.interval = interval

    def __call__(self, t: ScalarLike, x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        cond = self.model(t, x, self.y)
        uncond = self.model(t, x, None)
        w = self.scale.astype(cond.dtype)
        if self.interval is not None:
            alpha, sigma = self.sde.marginal(t)
            level = sigma / alpha
            lo, hi = self.interval
            w = jnp.where((level > lo) & (level <= hi), w, jnp.zeros_like(w))
        guided = cond + w * (cond - uncond)
        if self.rescale == 0:
            return guided
        return self._rescaled(t, x, cond, guided)

    def _rescaled(self, t, x, cond, guided):
        own, on = self.parameterisation, self.rescale_on
        c = convert(self.sde, t, x, cond, source=own, target=on)
        g = convert(self.sde, t, x, guided, source=own, target=on)
        ratio = jnp.std(c) / jnp.maximum(jnp.std(g), jnp.finfo(g.dtype).tiny)
        mixed = self.rescale * (g * ratio) + (1 - self.rescale) * g
        return convert(self.sde, t, x, mixed, source=on, target=own)
