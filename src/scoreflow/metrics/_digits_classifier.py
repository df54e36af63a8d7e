r"""Sample metrics for scikit-learn's 8×8 digits, read by a small shipped classifier.

The ImageNet metrics (FID, KID, Inception score) read generated images through an
Inception network; 8×8 digits need a network of their own. `DigitsClassifier` is a small
CNN trained on the digits training split only (`benchmarks/train_digits_classifier.py`
made the shipped weights, `digits_classifier.eqx`; `digits_classifier.json` records its
accuracy and the command). Its penultimate features give

- `fd_digits`: the Fréchet distance between Gaussians fitted to the features of the
  samples and of a reference set (the test split by default): FID's recipe,
  Heusel et al. 2017, arXiv:1706.08500, eq. 6;
- `kid_digits`: the kernel inception distance, an unbiased MMD² with the cubic
  polynomial kernel over the same features (Bińkowski et al. 2018, arXiv:1801.01401,
  sec. 4);

and its softmax gives `is_digits`, the Inception score
$\exp(E_x \mathrm{KL}(p(y \mid x) \,\|\, p(y)))$ (Salimans et al. 2016,
arXiv:1606.03498, sec. 4), at most 10 (the number of classes), and `digits_accuracy`,
the share of class-conditional samples read as the class they were asked for.

These numbers compare samplers and models on the digits with each other; they are not
comparable with FID or IS on other datasets or with other feature networks.
"""

import functools
import json
import pathlib

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.core import Tracer
from jaxtyping import Array, ArrayLike, Float, Int

from .._custom_types import Key
from . import _samples
from ._estimate import Estimate
from ._frechet import frechet_distance
from ._kid import kid

WEIGHTS = pathlib.Path(__file__).parent / "digits_classifier.eqx"
"""The shipped weights (float32), written by `benchmarks/train_digits_classifier.py`."""

NUM_CLASSES = 10
_EVENT = (1, 8, 8)


class DigitsClassifier(eqx.Module):
    """A small CNN for 8×8 digits in $[-1, 1]$ (the scale of `scoreflow.data.digits`).

    Three 3×3 convolutions (GELU; average pooling to 4×4 after the second and to 2×2
    after the third), then a hidden layer whose GELU activations are the features, then
    a linear layer to the 10 logits.

    Args:
        width: channels of the first convolution (the others have twice as many).
        num_features: size of the feature layer.
        key: initialisation key.
    """

    conv1: eqx.nn.Conv2d
    conv2: eqx.nn.Conv2d
    conv3: eqx.nn.Conv2d
    hidden: eqx.nn.Linear
    head: eqx.nn.Linear

    def __init__(self, *, width: int = 16, num_features: int = 128, key: Key):
        k1, k2, k3, k4, k5 = jr.split(key, 5)
        self.conv1 = eqx.nn.Conv2d(1, width, 3, padding=1, key=k1)
        self.conv2 = eqx.nn.Conv2d(width, 2 * width, 3, padding=1, key=k2)
        self.conv3 = eqx.nn.Conv2d(2 * width, 2 * width, 3, padding=1, key=k3)
        self.hidden = eqx.nn.Linear(2 * width * 2 * 2, num_features, key=k4)
        self.head = eqx.nn.Linear(num_features, NUM_CLASSES, key=k5)

    def _features_one(self, x: Float[Array, "1 8 8"]) -> Float[Array, " features"]:
        h = jax.nn.gelu(self.conv1(x))
        h = _pool(jax.nn.gelu(self.conv2(h)))
        h = _pool(jax.nn.gelu(self.conv3(h)))
        return jax.nn.gelu(self.hidden(h.reshape(-1)))

    def features(self, x: Float[Array, "n 1 8 8"]) -> Float[Array, "n features"]:
        """Penultimate features of a batch of images `(n, 1, 8, 8)`."""
        return jax.vmap(self._features_one)(x)

    def logits(self, x: Float[Array, "n 1 8 8"]) -> Float[Array, "n 10"]:
        """Class logits of a batch of images `(n, 1, 8, 8)`."""
        return jax.vmap(self.head)(self.features(x))


def _pool(h):
    c, height, width = h.shape
    return h.reshape(c, height // 2, 2, width // 2, 2).mean(axis=(2, 4))


@functools.lru_cache(maxsize=4)
def _load(dtype: np.dtype) -> DigitsClassifier:
    like = eqx.filter_eval_shape(DigitsClassifier, key=jr.key(0))
    # The weights are float32 on disk whatever the default float is.
    like = jax.tree_util.tree_map(
        lambda s: (
            jax.ShapeDtypeStruct(s.shape, jnp.float32) if isinstance(s, jax.ShapeDtypeStruct) else s
        ),
        like,
    )
    model = eqx.tree_deserialise_leaves(WEIGHTS, like)
    return jax.tree_util.tree_map(
        lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, model
    )


def load_digits_classifier(dtype=None) -> DigitsClassifier:
    """The shipped `DigitsClassifier` (cached), its parameters cast to `dtype`.

    Args:
        dtype: floating dtype of the parameters (default: JAX's default float, float64
            when `jax_enable_x64` is on). The weights are stored in float32.

    Returns:
        The trained classifier.
    """
    dtype = jnp.dtype(jnp.result_type(float) if dtype is None else dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"`dtype` must be a floating dtype, got {dtype}.")
    return _load(dtype)


def _images(x, name: str) -> Float[Array, "n 1 8 8"]:
    """`x` as float images `(n, 1, 8, 8)`; `(n, 64)` is reshaped; non-finite rows refused."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(
            f"`{name}` must be floating images in [-1, 1] (`scoreflow.data.digits`), got dtype "
            f"{x.dtype}; integer pixels 0..16 (`digits_raw`) map there by "
            "`scoreflow.metrics.bin_centres(x, levels=17)`."
        )
    if x.ndim == 2 and x.shape[1] == 64:
        x = x.reshape(x.shape[0], *_EVENT)
    if x.ndim != 4 or x.shape[1:] != _EVENT:
        raise ValueError(
            f"`{name}` must be digits images of shape (n, 1, 8, 8) (or (n, 64)) in [-1, 1], "
            f"got shape {x.shape}."
        )
    if x.shape[0] < 1:
        raise ValueError(f"`{name}` needs at least one image, got shape {x.shape}.")
    return _samples.finite(x, name)


@eqx.filter_jit
def _features(model, x):
    return model.features(x)


@eqx.filter_jit
def _logits(model, x):
    return model.logits(x)


@functools.lru_cache(maxsize=1)
def _feature_rms() -> float:
    # Written with the weights: the RMS of the training split's raw features.
    return float(json.loads(WEIGHTS.with_suffix(".json").read_text())["feature_rms"])


def digits_features(x: Float[ArrayLike, "n ..."]) -> Float[Array, "n features"]:
    r"""Features of the shipped digits classifier (its penultimate layer), scaled to RMS 1.

    The raw activations are divided by their root mean square over the training split
    (recorded with the weights in `digits_classifier.json`), so that, like Inception's
    pooled features, they are of order one and KID's cubic kernel
    $(a^\top b / d + 1)^3$ is not dominated by the feature scale.

    Args:
        x: images `(n, 1, 8, 8)` (or `(n, 64)`) on the scale of `scoreflow.data.digits`,
            $[-1, 1]$. Computed in the dtype of `x`.

    Returns:
        `(n, 128)` features.

    Raises:
        ValueError: on a wrong shape or non-finite images.
    """
    x = _images(x, "x")
    return _features(load_digits_classifier(x.dtype), x) / jnp.asarray(_feature_rms(), x.dtype)


def digits_logits(x: Float[ArrayLike, "n ..."]) -> Float[Array, "n 10"]:
    """Class logits of the shipped digits classifier.

    Args:
        x: images `(n, 1, 8, 8)` (or `(n, 64)`) in $[-1, 1]$.

    Returns:
        `(n, 10)` logits.

    Raises:
        ValueError: on a wrong shape or non-finite images.
    """
    x = _images(x, "x")
    return _logits(load_digits_classifier(x.dtype), x)


def _reference_features(reference, dtype) -> Array:
    return digits_features(_images(reference, "reference").astype(dtype))


def fd_digits(
    samples: Float[ArrayLike, "n ..."], reference: Float[ArrayLike, "m ..."]
) -> Float[Array, ""]:
    r"""Fréchet distance of digits samples to a reference set in the classifier's features.

    FID's recipe (Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule
    Converge to a Local Nash Equilibrium", arXiv:1706.08500, eq. 6) with the shipped
    `DigitsClassifier` in place of Inception:
    $\|\mu_s - \mu_r\|^2 + \mathrm{tr}(\Sigma_s + \Sigma_r - 2(\Sigma_s\Sigma_r)^{1/2})$
    between Gaussians fitted to the features (`scoreflow.metrics.frechet_distance`).
    The estimate is biased upwards at small sample sizes: compare figures at equal
    sizes (the test split has 359 images).

    Args:
        samples: images `(n, 1, 8, 8)` (or `(n, 64)`) in $[-1, 1]$.
        reference: reference images, e.g. the test split `scoreflow.data.digits("test")`
            (what `scoreflow.evaluation.evaluate_digits` compares with).

    Returns:
        The scalar distance (0 for identical feature statistics).

    Raises:
        ValueError: on a wrong shape or non-finite images, or 128 images or fewer in a
            set (their feature covariance is singular).
    """
    samples = _images(samples, "samples")
    feats = digits_features(samples)
    return frechet_distance(feats, _reference_features(reference, feats.dtype))


def kid_digits(
    samples: Float[ArrayLike, "n ..."],
    reference: Float[ArrayLike, "m ..."],
    *,
    num_subsets: int = 100,
    subset_size: int | None = None,
    key: Key,
) -> Estimate:
    r"""Kernel distance of digits samples to a reference set in the classifier's features.

    KID (Bińkowski et al. 2018, "Demystifying MMD GANs", arXiv:1801.01401, sec. 4): the
    unbiased MMD² with the kernel $k(a, b) = (a^\top b / F + 1)^3$, averaged over random
    subsets (`scoreflow.metrics.kid`), over the shipped classifier's $F = 128$ features.
    Unbiased, so near 0 (and possibly negative) for samples of the reference
    distribution, and comparable across sample sizes.

    Args:
        samples: images `(n, 1, 8, 8)` (or `(n, 64)`) in $[-1, 1]$.
        reference: reference images, e.g. the test split `scoreflow.data.digits("test")`
            (what `scoreflow.evaluation.evaluate_digits` compares with).
        key: key of the subset draws.
        num_subsets: number of random subsets.
        subset_size: images per subset (default: see `scoreflow.metrics.kid`).

    Returns:
        An `Estimate`: the mean over subsets and its standard error.

    Raises:
        ValueError: on a wrong shape or non-finite images.
    """
    samples = _images(samples, "samples")
    feats = digits_features(samples)
    return kid(
        feats,
        _reference_features(reference, feats.dtype),
        key=key,
        num_subsets=num_subsets,
        subset_size=subset_size,
    )


@functools.partial(jax.jit, static_argnames="num_splits")
def _inception_score(logits, num_splits):
    n = logits.shape[0] // num_splits
    log_p = jax.nn.log_softmax(logits[: n * num_splits]).reshape(num_splits, n, -1)
    # log p(y) of each split, by log-mean-exp over its images.
    log_marginal = jax.nn.logsumexp(log_p, axis=1, keepdims=True) - jnp.log(n)
    kl = jnp.sum(jnp.exp(log_p) * (log_p - log_marginal), axis=-1)
    scores = jnp.exp(kl.mean(axis=1))
    stderr = jnp.std(scores, ddof=1) / jnp.sqrt(num_splits) if num_splits > 1 else jnp.nan
    return scores.mean(), jnp.asarray(stderr, scores.dtype)


def is_digits(samples: Float[ArrayLike, "n ..."], *, num_splits: int = 10) -> Estimate:
    r"""Inception score of digits samples, read by the shipped classifier.

    $\exp(E_x \mathrm{KL}(p(y \mid x) \,\|\, p(y)))$ with $p(y)$ the mean of
    $p(y \mid x)$ over the split (Salimans et al. 2016, "Improved Techniques for
    Training GANs", arXiv:1606.03498, sec. 4), computed on `num_splits` equal splits of
    the samples (a remainder of fewer than `num_splits` images is left out). It lies in
    $[1, 10]$: 10 when every sample is read as one class with certainty and the classes
    are equally frequent. It sees neither diversity within a class nor the data
    distribution: report it with `fd_digits`.

    Args:
        samples: images `(n, 1, 8, 8)` (or `(n, 64)`) in $[-1, 1]$, `n >= num_splits`.
        num_splits: number of splits.

    Returns:
        An `Estimate`: the mean score over the splits and its standard error
        (std over splits $/\sqrt{\text{num\_splits}}$; NaN for one split).

    Raises:
        ValueError: on a wrong shape, non-finite images or too few samples.
    """
    if isinstance(num_splits, bool) or not isinstance(num_splits, int) or num_splits < 1:
        raise ValueError(f"`num_splits` must be a positive int, got {num_splits!r}.")
    samples = _images(samples, "samples")
    if samples.shape[0] < num_splits:
        raise ValueError(
            f"`samples` needs at least `num_splits` = {num_splits} images, got {samples.shape[0]}."
        )
    value, stderr = _inception_score(digits_logits(samples), num_splits)
    return Estimate(value=value, stderr=stderr)


def digits_accuracy(
    samples: Float[ArrayLike, "n ..."], labels: Int[ArrayLike, " num_labels"]
) -> Float[Array, ""]:
    """Share of samples the shipped classifier reads as their intended class.

    For class-conditional samples: `labels[i]` is the class sample `i` was drawn for.

    Args:
        samples: images `(n, 1, 8, 8)` (or `(n, 64)`) in $[-1, 1]$.
        labels: `(n,)` integer classes in 0..9.

    Returns:
        The accuracy in $[0, 1]$.

    Raises:
        ValueError: on a wrong shape, non-finite images, or labels that are not `n`
            integers in 0..9.
    """
    samples = _images(samples, "samples")
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"`labels` must be integers in 0..9, got dtype {labels.dtype}.")
    if labels.shape != samples.shape[:1]:
        raise ValueError(
            f"`labels` must have shape ({samples.shape[0]},), one per sample, got {labels.shape}."
        )
    return _accuracy(digits_logits(samples), _label_range(labels))


def _label_range(labels):
    if isinstance(labels, Tracer):
        return eqx.error_if(
            labels, jnp.any((labels < 0) | (labels >= NUM_CLASSES)), "`labels` must lie in 0..9."
        )
    values = np.asarray(labels)
    if values.size and (values.min() < 0 or values.max() >= NUM_CLASSES):
        raise ValueError(
            f"`labels` must lie in 0..9, got values from {values.min()} to {values.max()}."
        )
    return labels


@jax.jit
def _accuracy(logits, labels):
    hits = jnp.argmax(logits, axis=-1) == labels
    return hits.mean(dtype=logits.dtype)
