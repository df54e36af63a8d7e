from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .._custom_types import Key
from ._base import AbstractBijection


class AffineCoupling(AbstractBijection):
    r"""Masked affine coupling layer (Dinh et al. 2017, arXiv:1605.08803, eq. 9).

    From "Density estimation using Real NVP".

    With a binary mask $b$,
    $y = b \odot x + (1 - b) \odot (x \odot e^{s(b \odot x)} + t(b \odot x))$ and
    $\log|\det| = \sum_j (1 - b_j)\,s_j(b \odot x)$ (eq. 6). It is computed on the index
    sets of $b$: the conditioner maps the conditioning entries to a scale and shift of the
    transformed ones only. The conditioner's output starts at zero (the identity map),
    and the log-scale is soft-bounded, $s = B \tanh(\tilde s / B)$, which keeps the
    Jacobian well conditioned (Dinh et al. use a scaled tanh for the same reason).

    Args:
        mask: boolean sequence over the event: `True` entries condition, `False` entries
            are transformed.
        width: hidden width of the conditioner.
        depth: hidden layers of the conditioner.
        activation: conditioner non-linearity.
        log_scale_bound: $B > 0$.
        dtype: parameter dtype.
        key: PRNG key.

    Raises:
        ValueError: if `mask` is not 1-d or does not have both `True` and `False`
            entries (all-`True` is the identity, all-`False` an unconditioned affine map),
            or `log_scale_bound` is not positive.
    """

    mask: tuple[bool, ...] = eqx.field(static=True)
    conditioner: eqx.nn.MLP
    log_scale_bound: float = eqx.field(static=True)
    shape: tuple[int, ...] = eqx.field(static=True)

    def __init__(
        self,
        mask: Sequence[bool] | np.ndarray,
        *,
        width: int = 64,
        depth: int = 2,
        activation: Callable = jax.nn.relu,
        log_scale_bound: float = 5.0,
        dtype=None,
        key: Key,
    ):
        m = np.asarray(mask)
        if m.ndim != 1 or m.dtype != np.bool_:
            raise ValueError(f"`mask` must be a 1-d boolean sequence, got {mask!r}.")
        if m.all() or not m.any():
            raise ValueError(
                "`mask` must have both True (conditioning) and False (transformed) entries, "
                f"got {m.tolist()}."
            )
        if not log_scale_bound > 0:
            raise ValueError(f"`log_scale_bound` must be positive, got {log_scale_bound}.")
        dim = m.size
        n_cond = int(m.sum())
        n_out = 2 * (dim - n_cond)
        mlp = eqx.nn.MLP(n_cond, n_out, width, depth, activation=activation, key=key, dtype=dtype)
        last = mlp.layers[-1]
        mlp = eqx.tree_at(
            lambda n: (n.layers[-1].weight, n.layers[-1].bias),
            mlp,
            (jnp.zeros_like(last.weight), jnp.zeros_like(last.bias)),
        )
        self.mask = tuple(bool(v) for v in m)
        self.conditioner = mlp
        self.log_scale_bound = float(log_scale_bound)
        self.shape = (dim,)

    def _split(self):
        # Static index sets: the conditioner sees only the conditioning entries (no
        # wasted inputs or outputs, unlike multiplying by the mask).
        m = np.asarray(self.mask)
        return np.flatnonzero(m), np.flatnonzero(~m)

    def _scale_shift(self, x):
        cond, trans = self._split()
        raw_s, t = jnp.split(self.conditioner(x[cond]), 2)
        bound = self.log_scale_bound
        return trans, bound * jnp.tanh(raw_s / bound), t

    def _transform_and_log_det(self, x, key):
        trans, s, t = self._scale_shift(x)
        return x.at[trans].set(x[trans] * jnp.exp(s) + t), jnp.sum(s)

    def _inverse_and_log_det(self, y, key):
        trans, s, t = self._scale_shift(y)
        return y.at[trans].set((y[trans] - t) * jnp.exp(-s)), -jnp.sum(s)


class RealNVP(AbstractBijection):
    r"""A RealNVP stack: affine couplings with alternating masks (Dinh et al. 2017).

    Layer $i$ conditions on the even entries when $i$ is even and on the odd ones
    otherwise (the 1-d analogue of the checkerboard mask, sec. 3.4), so every entry is
    transformed by half of the layers; a `Permute` between layers (`shuffle=True`)
    mixes the entries further in higher dimension.

    Args:
        dim: event size (>= 2).
        num_layers: number of coupling layers (>= 2).
        width: conditioner hidden width.
        depth: conditioner hidden layers.
        shuffle: insert fixed random permutations between couplings.
        dtype: parameter dtype.
        key: PRNG key.

    Raises:
        ValueError: if `dim < 2` (no coupling is possible) or `num_layers < 2`.
    """

    chain: AbstractBijection
    shape: tuple[int, ...] = eqx.field(static=True)

    def __init__(
        self,
        dim: int,
        *,
        num_layers: int = 8,
        width: int = 64,
        depth: int = 2,
        shuffle: bool = False,
        dtype=None,
        key: Key,
    ):
        from ._chain import Chain
        from ._permute import Permute

        if not isinstance(dim, int) or dim < 2:
            raise ValueError(f"`dim` must be an integer >= 2 for a coupling flow, got {dim!r}.")
        if not isinstance(num_layers, int) or num_layers < 2:
            raise ValueError(f"`num_layers` must be an integer >= 2, got {num_layers!r}.")
        even = np.arange(dim) % 2 == 0
        keys = jr.split(key, num_layers + 1)
        rng = np.random.default_rng(np.asarray(jr.key_data(keys[-1])).ravel()[-1:])
        layers: list[AbstractBijection] = []
        for i in range(num_layers):
            mask = even if i % 2 == 0 else ~even
            layers.append(AffineCoupling(mask, width=width, depth=depth, dtype=dtype, key=keys[i]))
            if shuffle and i < num_layers - 1:
                layers.append(Permute(rng.permutation(dim)))
        self.chain = Chain(layers)
        self.shape = (dim,)

    def _transform_and_log_det(self, x, key):
        return self.chain.transform_and_log_det(x, key=key)

    def _inverse_and_log_det(self, y, key):
        return self.chain.inverse_and_log_det(y, key=key)
