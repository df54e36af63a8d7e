"""The 2-d protocol: KL against the exact density, MMD, mode coverage."""

import dataclasses
import math
import time
from typing import cast

import jax
import jax.random as jr

from .. import metrics
from .._custom_types import Key
from ..analytic import GaussianMixture
from ..models import (
    AbstractExactLikelihood,
    AbstractGenerativeModel,
    AbstractLatentVariableModel,
    AbstractUnnormalisedLikelihood,
)
from ._normalise import AIS_LABEL, normalised


@dataclasses.dataclass
class ToyReport:
    """One row of a 2-d table."""

    name: str
    kl: float | None
    kl_se: float | None
    mmd2: float
    mmd_p_value: float
    modes_captured: int
    num_modes: int
    high_quality: float
    kl_modes: float
    num_samples: int
    num_nonfinite: int
    likelihood_seconds: float | None
    sample_seconds: float
    # "exact", "estimate (AIS)", "bound (IWAE-K estimate)" or "none"
    likelihood: str = "exact"

    def asdict(self) -> dict:
        return dataclasses.asdict(self)


def evaluate_2d(
    model: AbstractGenerativeModel,
    mixture: GaussianMixture,
    *,
    name: str = "",
    num_samples: int = 2000,
    num_eval: int = 1000,
    num_permutations: int = 200,
    sample_options: dict | None = None,
    log_prob_options: dict | None = None,
    normaliser_options: dict | None = None,
    key: Key,
) -> ToyReport:
    r"""Score a model of a 2-d Gaussian mixture against the mixture itself.

    - $\mathrm{KL}(\text{data} \,\|\, \text{model})$ with its standard error, from the
      exact data log-density and the model's `log_prob` at `num_eval` fresh data samples
      (exact-likelihood models; an unnormalised model, an `EBM`, normalised by its
      `log_normaliser` estimate, whose standard error is added in quadrature; a
      latent-variable model, a `VAE` or `HierarchicalVAE`, by its importance-sampled
      `log_prob_estimate`, whose expectation is a lower bound on its $\log p$, so that
      this KL is an upper bound in expectation);
    - unbiased MMD² (Gaussian kernel, median heuristic) between `num_samples` model
      samples and as many exact ones, with its permutation p-value;
    - mode coverage (modes captured, share within 3 standard deviations, KL of the mass
      per mode; `metrics.mode_coverage`).

    Args:
        model: the model (event shape `(dim,)`, the mixture's).
        mixture: the exact data distribution.
        name: the row's label.
        num_samples: model samples (and exact samples for the MMD).
        num_eval: data points for the KL.
        num_permutations: relabellings of the MMD test.
        sample_options: keyword arguments of `model.sample`.
        log_prob_options: keyword arguments of `model.log_prob` (of
            `model.log_prob_estimate` for a latent-variable model: `num_samples`, the
            $K$ of the estimate, default 5000, and `chunk_size`).
        normaliser_options: keyword arguments of `model.log_normaliser` (an unnormalised
            model).
        key: PRNG key.

    Returns:
        A `ToyReport`.
    """
    if tuple(model.event_shape) != (mixture.dim,):
        raise ValueError(
            f"`model` must have event shape ({mixture.dim},) (the mixture's), got "
            f"{model.event_shape}."
        )
    k_eval, k_sample, k_ref, k_perm, k_lik = jr.split(key, 5)
    kl = kl_se = lik_s = None
    label = "none"
    unnormalised = isinstance(model, AbstractUnnormalisedLikelihood)
    latent = isinstance(model, AbstractLatentVariableModel)
    if isinstance(model, AbstractExactLikelihood) or unnormalised or latent:
        x_eval = mixture.sample(num_eval, key=k_eval)
        t0 = time.perf_counter()
        scored, log_z_se, label = model, 0.0, "exact"
        options = dict(log_prob_options or {})
        if unnormalised:
            k_z, k_lik = jr.split(k_lik)
            scored, log_z_se = normalised(model, normaliser_options, key=k_z)
            label = AIS_LABEL
        if isinstance(model, AbstractLatentVariableModel):
            options.setdefault("num_samples", 5000)
            label = f"bound (IWAE-{options['num_samples']} estimate)"
            est = model.log_prob_estimate(x_eval, key=k_lik, **options)
            log_q = jax.block_until_ready(est.value)
        else:
            # An exact-likelihood model, or an unnormalised one with its normaliser.
            exact = cast(AbstractExactLikelihood, scored)
            log_q = jax.block_until_ready(exact.log_prob(x_eval, key=k_lik, **options))
        lik_s = time.perf_counter() - t0
        est = metrics.kl_divergence(mixture.log_prob(x_eval), log_q)
        kl, kl_se = float(est.value), math.hypot(float(est.stderr), log_z_se)
    t0 = time.perf_counter()
    x = jax.block_until_ready(model.sample(num_samples, key=k_sample, **(sample_options or {})))
    sample_s = time.perf_counter() - t0
    x, dropped = metrics.drop_nonfinite(x)
    ref = mixture.sample(num_samples, key=k_ref).astype(x.dtype)
    test = metrics.mmd_test(x, ref, num_permutations=num_permutations, key=k_perm)
    modes = metrics.mode_coverage(x, mixture)
    return ToyReport(
        name=name or type(model).__name__,
        kl=kl,
        kl_se=kl_se,
        mmd2=float(test.mmd2),
        mmd_p_value=float(test.p_value),
        modes_captured=int(modes.modes_captured),
        num_modes=modes.num_modes,
        high_quality=float(modes.high_quality),
        kl_modes=float(modes.kl_modes),
        num_samples=int(x.shape[0]),
        num_nonfinite=dropped,
        likelihood_seconds=lik_s,
        sample_seconds=sample_s,
        likelihood=label,
    )
