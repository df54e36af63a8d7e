"""scikit-learn's 8x8 handwritten digits (shipped with scikit-learn; no download)."""

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ..metrics import bin_centres

DIGITS_LEVELS = 17
"""Pixel values of the digits are integers 0..16: 17 quantisation levels."""

SPLITS = ("train", "test", "all")


def load_digits_raw() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 images as integers `(1797, 8, 8)` in 0..16, and their labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - sklearn is a dependency
        raise ImportError("The digits dataset needs scikit-learn: pip install scikit-learn") from e
    flat, labels = load_digits(return_X_y=True)
    return flat.reshape(-1, 8, 8).astype(np.int64), labels.astype(np.int64)


def _split_indices(split: str, num: int, test_fraction: float) -> np.ndarray:
    # The one fixed split: a NumPy seed-0 permutation, the last `test_fraction` for test.
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}, got {split!r}.")
    perm = np.random.default_rng(0).permutation(num)
    n_test = int(round(test_fraction * num))
    return {"train": perm[: num - n_test], "test": perm[num - n_test :], "all": perm}[split]


def digits_raw(split: str = "train", *, test_fraction: float = 0.2) -> Int[Array, "n 1 8 8"]:
    """The integer pixels (0..16) of a fixed split, `(n, 1, 8, 8)`.

    A permutation drawn with NumPy seed 0; the last `test_fraction` (20 %: 359 of 1797
    images) is the test set. Pass these to `scoreflow.metrics.bits_per_dim` with
    `levels=DIGITS_LEVELS`, which dequantises them.

    Args:
        split: `"train"`, `"test"` or `"all"`.
        test_fraction: share of the test split.

    Returns:
        The integer images.
    """
    images, _ = load_digits_raw()
    return jnp.asarray(images[_split_indices(split, images.shape[0], test_fraction)][:, None])


def digits_labels(split: str = "train", *, test_fraction: float = 0.2) -> Int[Array, " n"]:
    """The classes (0..9) of the images of `digits_raw(split)` / `digits(split)`, in order.

    Args:
        split: `"train"`, `"test"` or `"all"`.
        test_fraction: share of the test split.

    Returns:
        The integer labels `(n,)`.
    """
    _, labels = load_digits_raw()
    return jnp.asarray(labels[_split_indices(split, labels.shape[0], test_fraction)])


def digits(
    split: str = "train", *, dtype=None, test_fraction: float = 0.2
) -> Float[Array, "n 1 8 8"]:
    r"""The 8×8 digits as `(n, 1, 8, 8)` images at the centres of their bins in $[-1, 1]$.

    Pixel $k \in \{0..16\}$ maps to $y = 2(k + \tfrac12)/17 - 1$ (`metrics.bin_centres`),
    on the split of `digits_raw`. The bins have width $2/17$; likelihoods of the integer
    data come from `scoreflow.metrics.bits_per_dim(..., digits_raw(split), levels=17)`.

    Args:
        split: `"train"`, `"test"` or `"all"`.
        dtype: floating dtype.
        test_fraction: share of the test split.

    Returns:
        The images.
    """
    raw = digits_raw(split, test_fraction=test_fraction)
    return bin_centres(raw, levels=DIGITS_LEVELS, data_range=(-1.0, 1.0), dtype=dtype)
