r"""The digits protocol: one function that scores any model on the test split.

The test split is `scoreflow.data.digits_raw("test")`: 359 images of 17 levels. A model
is scored on what it declares (`scoreflow.models`): an exact likelihood gives test
bits/dim by uniform dequantisation (`metrics.bits_per_dim`), an exact mass over the
integer pixels (`AbstractDiscreteLikelihood`, PixelCNN) gives them with no
dequantisation (the dequantised figures of continuous models are upper bounds on
this same quantity), a bound gives bits/dim
that are an upper bound (marked so), neither gives none. Samples are quantised to the
17 levels, as a saved image would be, and read by the shipped digits classifier: FD,
KID, IS, precision / recall and density / coverage against the test split's features.
"""

import dataclasses
import math
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .. import data, metrics
from .._custom_types import Key
from ..models import (
    AbstractDiscreteLikelihood,
    AbstractExactLikelihood,
    AbstractGenerativeModel,
    AbstractLatentVariableModel,
    AbstractLikelihoodBound,
    AbstractUnnormalisedLikelihood,
)
from ._normalise import AIS_LABEL, normalised

_EVENT = (1, 8, 8)


def quantise(x, *, levels: int = data.DIGITS_LEVELS) -> jax.Array:
    """Samples on $[-1, 1]$ rounded to the nearest of `levels` bin centres (clipped)."""
    k = jnp.clip(jnp.floor((jnp.asarray(x) + 1.0) * levels / 2.0), 0, levels - 1)
    return metrics.bin_centres(k.astype(jnp.int32), levels=levels, dtype=jnp.asarray(x).dtype)


@dataclasses.dataclass
class DigitsReport:
    """One row of the digits table. Times are wall seconds on the machine that ran it."""

    name: str
    bits_per_dim: float | None
    bits_per_dim_se: float | None
    # "exact", "exact (discrete)", "estimate (Hutchinson)", "estimate (AIS)", "bound",
    # "bound (IWAE-K estimate)" or "none"
    likelihood: str
    fd: float
    kid: float
    kid_se: float
    inception_score: float
    inception_score_se: float | None  # None: one split, no error estimate
    precision: float
    recall: float
    density: float
    coverage: float
    num_samples: int
    num_nonfinite: int
    num_test: int
    train_seconds: float | None
    likelihood_seconds: float | None
    sample_seconds: float
    metric_seconds: float
    png: str | None = None
    notes: str = ""

    def asdict(self) -> dict:
        return dataclasses.asdict(self)


def _to_event(x, event_shape):
    return jnp.reshape(x, (x.shape[0], *event_shape))


def _bpd(model, raw, likelihood, options, batch_size, key):
    event = tuple(model.event_shape)
    if likelihood in ("exact", "normaliser"):

        def fn(y, *, key):
            return model.log_prob(_to_event(y, event), key=key, **options)
    else:

        def fn(y, *, key):
            return model.elbo(_to_event(y, event), key=key, **options)

    vals = []
    for i in range(0, raw.shape[0], batch_size):
        res = metrics.bits_per_dim(
            fn,
            raw[i : i + batch_size],
            levels=data.DIGITS_LEVELS,
            key=jr.fold_in(key, i),
        )
        vals.append(np.asarray(res.bits_per_dim, np.float64))
    v = np.concatenate(vals)
    if not np.all(np.isfinite(v)):
        raise FloatingPointError(
            f"{int(np.sum(~np.isfinite(v)))} of {v.size} test images have non-finite bits/dim."
        )
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size))


DISCRETE_LABEL = "exact (discrete)"


def _discrete_bpd(model, raw, options, batch_size):
    # -log2 P(x) / D of the integer images: the mass itself, nothing dequantised.
    log_prob = eqx.filter_jit(lambda m, x: m.log_prob(x, **options))
    vals = []
    for i in range(0, raw.shape[0], batch_size):
        lp = log_prob(model, raw[i : i + batch_size])
        vals.append(-np.asarray(lp, np.float64) / (math.prod(_EVENT) * math.log(2)))
    v = np.concatenate(vals)
    if not np.all(np.isfinite(v)):
        raise FloatingPointError(
            f"{int(np.sum(~np.isfinite(v)))} of {v.size} test images have non-finite bits/dim."
        )
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size))


def sample_grid(x, path: str, *, title: str | None = None, num: int = 64) -> str:
    """Save the first `num` digits of `x` (`(n, 1, 8, 8)` in [-1, 1]) as a square grid PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.asarray(x, np.float64).reshape(-1, 8, 8)
    side = int(math.floor(math.sqrt(min(num, len(x)))))
    imgs = x[: side * side].reshape(side, side, 8, 8)
    grid = np.ones((side * 9 + 1, side * 9 + 1))
    for i in range(side):
        for j in range(side):
            grid[1 + 9 * i : 9 + 9 * i, 1 + 9 * j : 9 + 9 * j] = (1 - imgs[i, j]) / 2
    fig, ax = plt.subplots(figsize=(3, 3))
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def evaluate_digits(
    model: AbstractGenerativeModel,
    *,
    name: str = "",
    num_samples: int = 1000,
    sample_options: dict | None = None,
    log_prob_options: dict | None = None,
    normaliser_options: dict | None = None,
    likelihood: str = "auto",
    batch_size: int = 128,
    num_test: int | None = None,
    train_seconds: float | None = None,
    png: str | None = None,
    key: Key,
) -> DigitsReport:
    r"""Score `model` on the digits test split by the one protocol.

    1. **Test bits/dim** (`likelihood="auto"`): with an exact likelihood, uniform
       dequantisation of the integer test images (`metrics.bits_per_dim`, levels 17);
       with an exact mass over the 17 integer levels (`AbstractDiscreteLikelihood`),
       $-\log_2 P(x) / 64$ itself, labelled `"exact (discrete)"` (no dequantisation:
       the continuous models' dequantised figures are upper bounds on it);
       the figure is the mean over images with its standard error over images, which
       includes the noise of a stochastic trace estimate when `log_prob_options` ask for
       one. A model with only a bound (`elbo`) gives bits/dim marked as a bound (an upper
       bound, in expectation). An unnormalised model (an `EBM`) is normalised by its
       `log_normaliser` estimate (annealed importance sampling, `normaliser_options`)
       and marked as an estimate; the standard error adds that of $\log\hat Z$ (common
       to every image) in quadrature. Neither: none.
    2. **Samples**: `num_samples` draws (`model.sample(num, key=..., **sample_options)`),
       reshaped to `(n, 1, 8, 8)`; non-finite samples are counted, reported and dropped;
       the rest are quantised to the 17 levels (`quantise`).
    3. **Sample metrics** against the test split, all in the shipped classifier's
       features (`metrics.digits_features`): FD, KID (50 subsets of
       $\min(n, 359)$), IS (one split of all samples: the class marginal of a small
       split is noisy and biases the score low), precision / recall ($k = 3$) and
       density / coverage ($k = 5$).

    Args:
        model: any model on the contract whose event shape is `(1, 8, 8)` or `(64,)`
            (data on $[-1, 1]$, the scale of `scoreflow.data.digits`).
        name: the row's label.
        num_samples: samples to draw.
        sample_options: keyword arguments of `model.sample`.
        log_prob_options: keyword arguments of `model.log_prob` (or `elbo`).
        normaliser_options: keyword arguments of `model.log_normaliser` (an unnormalised
            model).
        likelihood: `"auto"`, `"exact"`, `"bound"`, `"normaliser"` (estimate the
            normaliser of an unnormalised model) or `"none"`.
        batch_size: test images per likelihood call.
        num_test: score the likelihood on the first `num_test` test images only (a
            reduced run; the report records it). Sample metrics always use all 359.
        train_seconds: the model's training wall time, recorded in the report.
        png: write a sample grid there.
        key: PRNG key.

    Returns:
        A `DigitsReport`.
    """
    shape = tuple(model.event_shape)
    if shape not in (_EVENT, (64,)):
        raise ValueError(
            f"`model` must have event shape (1, 8, 8) or (64,) for the digits, got {shape}."
        )
    if likelihood not in ("auto", "exact", "bound", "normaliser", "none"):
        raise ValueError(
            "`likelihood` must be 'auto', 'exact', 'bound', 'normaliser' or 'none', got "
            f"{likelihood!r}."
        )
    exact = isinstance(model, AbstractExactLikelihood)
    bound = isinstance(model, AbstractLikelihoodBound)
    unnormalised = isinstance(model, AbstractUnnormalisedLikelihood)
    if likelihood == "auto":
        likelihood = (
            "exact" if exact else "bound" if bound else "normaliser" if unnormalised else "none"
        )
    if (
        (likelihood == "exact" and not exact)
        or (likelihood == "bound" and not bound)
        or (likelihood == "normaliser" and not unnormalised)
    ):
        raise ValueError(f"`model` ({type(model).__name__}) has no {likelihood} likelihood.")
    discrete = isinstance(model, AbstractDiscreteLikelihood)
    if discrete and model.num_levels != data.DIGITS_LEVELS:
        raise ValueError(
            f"`model` must have {data.DIGITS_LEVELS} pixel levels for the digits, got "
            f"{model.num_levels}."
        )
    k_lik, k_sample, k_kid = jr.split(key, 3)
    raw = np.asarray(data.digits_raw("test"))
    n_test = raw.shape[0] if num_test is None else int(num_test)
    options = dict(log_prob_options or {})

    bpd = bpd_se = lik_s = None
    label = likelihood
    if likelihood != "none":
        t0 = time.perf_counter()
        scored, log_z_se = model, 0.0
        if likelihood == "normaliser":
            assert isinstance(model, AbstractUnnormalisedLikelihood)
            k_z, k_lik = jr.split(k_lik)
            scored, log_z_se = normalised(model, normaliser_options, key=k_z)
            label = AIS_LABEL
        if discrete and likelihood == "exact":
            bpd, bpd_se = _discrete_bpd(model, jnp.asarray(raw[:n_test]), options, batch_size)
            label = DISCRETE_LABEL
        else:
            bpd, bpd_se = _bpd(
                scored, jnp.asarray(raw[:n_test]), likelihood, options, batch_size, k_lik
            )
        bpd_se = math.hypot(bpd_se, log_z_se / (math.prod(_EVENT) * math.log(2)))
        lik_s = time.perf_counter() - t0
        trace = options.get("trace")
        if likelihood == "exact" and type(trace).__name__ == "Hutchinson":
            label = "estimate (Hutchinson)"
        k = options.get("num_samples", 1)
        if likelihood == "bound" and isinstance(model, AbstractLatentVariableModel) and k > 1:
            # The importance-sampled estimate: its expectation is still a lower bound.
            label = f"bound (IWAE-{k} estimate)"

    t0 = time.perf_counter()
    x = jax.block_until_ready(model.sample(num_samples, key=k_sample, **(sample_options or {})))
    sample_s = time.perf_counter() - t0
    if discrete:
        # Integer levels to the bin centres on [-1, 1] that the classifier reads.
        x = metrics.bin_centres(jnp.asarray(x).astype(jnp.int32), levels=data.DIGITS_LEVELS)
    x, dropped = metrics.drop_nonfinite(jnp.reshape(x, (x.shape[0], *_EVENT)))
    if x.shape[0] < 10:
        raise FloatingPointError(
            f"Only {x.shape[0]} of {num_samples} samples are finite: no sample metric is "
            "meaningful."
        )
    x = quantise(x.astype(jnp.float64 if jax.config.read("jax_enable_x64") else jnp.float32))

    t0 = time.perf_counter()
    test = data.digits("test", dtype=x.dtype)
    f_fake = metrics.digits_features(x)
    f_real = metrics.digits_features(test)
    fd = float(metrics.frechet_distance(f_fake, f_real))
    kid = metrics.kid(f_fake, f_real, num_subsets=50, key=k_kid)
    isc = metrics.is_digits(x, num_splits=1)
    pr = metrics.precision_recall(f_real, f_fake, k=3)
    dc = metrics.density_coverage(f_real, f_fake, k=5)
    metric_s = time.perf_counter() - t0
    if png is not None:
        sample_grid(x, png, title=name or None)
    return DigitsReport(
        name=name or type(model).__name__,
        bits_per_dim=bpd,
        bits_per_dim_se=bpd_se,
        likelihood=label,
        fd=fd,
        kid=float(kid.value),
        kid_se=float(kid.stderr),
        inception_score=float(isc.value),
        inception_score_se=None if not np.isfinite(float(isc.stderr)) else float(isc.stderr),
        precision=float(pr.precision),
        recall=float(pr.recall),
        density=float(dc.density),
        coverage=float(dc.coverage),
        num_samples=int(x.shape[0]),
        num_nonfinite=dropped,
        num_test=n_test,
        train_seconds=train_seconds,
        likelihood_seconds=lik_s,
        sample_seconds=sample_s,
        metric_seconds=metric_s,
        png=png,
    )


def _fmt(v, spec=".3f"):
    return "—" if v is None else f"{v:{spec}}"


def digits_table(reports: list[DigitsReport]) -> str:
    """The reports as a markdown table (bits/dim marked ≥ where it is a bound)."""
    head = (
        "| model | test bits/dim | FD-digits | KID-digits ×10³ | IS-digits | precision | recall "
        "| density | coverage | NaN samples | train s | likelihood s | sample s |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for r in reports:
        if r.bits_per_dim is None:
            bpd = "—"
        else:
            mark = "≤ " if r.likelihood.startswith("bound") else ""
            bpd = f"{mark}{r.bits_per_dim:.3f} ± {r.bits_per_dim_se:.3f}"
            if r.likelihood == DISCRETE_LABEL:
                bpd += " (exact mass)"
            if r.num_test != 359:
                bpd += f" ({r.num_test} images)"
        rows.append(
            f"| {r.name} | {bpd} | {r.fd:.2f} | {1e3 * r.kid:.2f} ± {1e3 * r.kid_se:.2f} "
            f"| {r.inception_score:.2f} | {r.precision:.3f} | {r.recall:.3f} | {r.density:.3f} "
            f"| {r.coverage:.3f} | {r.num_nonfinite} | {_fmt(r.train_seconds, '.0f')} "
            f"| {_fmt(r.likelihood_seconds, '.1f')} | {r.sample_seconds:.1f} |"
        )
    return head + "\n".join(rows) + "\n"
