"""scikit-learn's 8x8 handwritten digits (shipped with scikit-learn; no download)."""

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

DIGITS_LEVELS = 17
"""Pixel values of the digits are integers 0..16: 17 quantisation levels."""


def load_digits_raw() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 images as integers `(1797, 8, 8)` in 0..16, and their labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - sklearn is a dependency
        raise ImportError("The digits dataset needs scikit-learn: pip install scikit-learn") from e
    d = load_digits()
    return d.images.astype(np.int64), d.target.astype(np.int64)


def digits(
    split: str = "train",
    *,
    dequantise_key=None,
    dtype=None,
    test_fraction: float = 0.2,
) -> Float[Array, "n 1 8 8"]:
    r"""The 8×8 digits as `(n, 1, 8, 8)` images scaled to $[-1, 1]$.

    A fixed split: a permutation drawn with NumPy seed 0, the last `test_fraction`
    (20 %: 359 of 1797 images) is the test set. Pixel $k \in \{0..16\}$ maps to
    $y = 2(k + u)/17 - 1$ with $u = 1/2$, or $u \sim U[0, 1)$ drawn with
    `dequantise_key` (uniform dequantisation; Theis et al. 2016). The density of the
    dequantised pixel $k + u$ is $p_y(y)\,(2/17)^D$, which `bits_per_dim` uses.

    Args:
        split: `"train"`, `"test"` or `"all"`.
        dequantise_key: PRNG key for uniform dequantisation (None: bin centres).
        dtype: floating dtype.
        test_fraction: share of the test split.

    Returns:
        The images.
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"`split` must be 'train', 'test' or 'all', got {split!r}.")
    images, _ = load_digits_raw()
    perm = np.random.default_rng(0).permutation(images.shape[0])
    n_test = int(round(test_fraction * images.shape[0]))
    idx = {"train": perm[: len(perm) - n_test], "test": perm[len(perm) - n_test :], "all": perm}[
        split
    ]
    k = jnp.asarray(images[idx][:, None])
    dtype = jnp.result_type(float) if dtype is None else dtype
    if dequantise_key is None:
        u = jnp.full(k.shape, 0.5, dtype)
    else:
        import jax.random as jr

        u = jr.uniform(dequantise_key, k.shape, dtype)
    return (2 * (k.astype(dtype) + u) / DIGITS_LEVELS - 1).astype(dtype)


def digits_bits_per_dim(log_prob: Float[Array, "..."], dim: int = 64) -> Float[Array, "..."]:
    r"""Bits per dimension of dequantised digits from $\log p_y$ in the $[-1, 1]$ scale.

    $\text{bpd} = -(\log p_y + D\log(2/17)) / (D \ln 2)$: the change of variables from
    the unit-width bins of the integer pixels to the scaled images.
    """
    return -(log_prob + dim * np.log(2 / DIGITS_LEVELS)) / (dim * np.log(2))
