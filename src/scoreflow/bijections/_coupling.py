from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .. import _checks
from .._custom_types import Key
from ..nn._init import zero_output
from ._base import AbstractBijection
from ._chain import Chain
from ._permute import Permute

SCALES: tuple[str, ...] = ("softplus", "exp")
# softplus(_SOFTPLUS_ONE) = 1: a zero conditioner output is the identity map.
_SOFTPLUS_ONE = float(np.log(np.expm1(1.0)))


class AffineCoupling(AbstractBijection):
    r"""Masked affine coupling layer (Dinh et al. 2017, arXiv:1605.08803, eq. 9).

    From "Density estimation using Real NVP".

    With a binary mask $b$, $y = b \odot x + (1 - b) \odot (x \odot a(b \odot x) +
    t(b \odot x))$ and $\log|\det| = \sum_j (1 - b_j)\log a_j(b \odot x)$ (eq. 6 with
    $a = e^s$). It is computed on the index sets of $b$: the conditioner maps the
    conditioning entries to a scale and shift of the transformed ones only.

    The scale. `scale_fn="softplus"` (default) takes $a = \mathrm{softplus}(u + c)$ of the
    conditioner's raw output $u$, with $c = \log(e - 1)$ so that $u = 0$ is the identity,
    as flowjax's `Affine` transformer does. Its derivative in $u$ is at most one and it
    grows linearly in $u$, so a large conditioner output cannot make the forward scale
    explode exponentially (towards zero it behaves like $e^u$); exploding scales and
    inverses of affine couplings are the failure mode that Behrmann et al. 2021
    ("Understanding and mitigating exploding inverses in invertible neural networks",
    arXiv:2006.09347) trace to large Lipschitz constants. `scale_fn="exp"` is Dinh et
    al.'s $a = e^s$ with the log-scale soft-bounded, $s = B \tanh(u / B)$, for the same
    reason.

    The initialisation. By default the conditioner keeps equinox's random (LeCun-uniform)
    initialisation of every layer, output included, as flowjax does; `zero_init=True`
    zeroes the output layer so that the layer starts as the identity (Glow, Kingma &
    Dhariwal 2018, arXiv:1807.03039, sec. 3.3). A zero output layer also zeroes the
    gradient that reaches the hidden layers at the first step ($\partial L/\partial h =
    W^\top \partial L/\partial u = 0$), so they only start learning once the output
    layer has moved. (On the 2-d benchmarks of `benchmarks/flows_2d.py` neither choice
    mattered much; what did is the direction, see `scoreflow.models.RealNVP`.)

    Args:
        mask: boolean sequence over the event: `True` entries condition, `False` entries
            are transformed.
        width: hidden width of the conditioner.
        depth: hidden layers of the conditioner.
        activation: conditioner non-linearity.
        scale_fn: `"softplus"` or `"exp"` (see above).
        log_scale_bound: $B > 0$ (for `scale_fn="exp"`).
        zero_init: zero the conditioner's output layer (the identity at initialisation).
        dtype: parameter dtype.
        key: PRNG key.

    Raises:
        ValueError: if `mask` is not 1-d or does not have both `True` and `False`
            entries (all-`True` is the identity, all-`False` an unconditioned affine map),
            an unknown `scale_fn`, or `log_scale_bound` is not positive.
    """

    mask: tuple[bool, ...] = eqx.field(static=True)
    conditioner: eqx.nn.MLP
    log_scale_bound: float = eqx.field(static=True)
    scale_fn: str = eqx.field(static=True)
    shape: tuple[int, ...] = eqx.field(static=True)

    def __init__(
        self,
        mask: Sequence[bool] | np.ndarray,
        *,
        width: int = 64,
        depth: int = 2,
        activation: Callable = jax.nn.relu,
        scale_fn: str = "softplus",
        log_scale_bound: float = 5.0,
        zero_init: bool = False,
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
        if scale_fn not in SCALES:
            raise ValueError(f"`scale_fn` must be one of {SCALES}, got {scale_fn!r}.")
        if not log_scale_bound > 0:
            raise ValueError(f"`log_scale_bound` must be positive, got {log_scale_bound}.")
        dtype = _checks.float_dtype(dtype)
        _checks.key(key)
        dim = m.size
        n_cond = int(m.sum())
        n_out = 2 * (dim - n_cond)
        mlp = eqx.nn.MLP(n_cond, n_out, width, depth, activation=activation, key=key, dtype=dtype)
        if zero_init:
            mlp = eqx.tree_at(lambda n: n.layers[-1], mlp, zero_output(mlp.layers[-1]))
        self.mask = tuple(bool(v) for v in m)
        self.conditioner = mlp
        self.log_scale_bound = float(log_scale_bound)
        self.scale_fn = scale_fn
        self.shape = (dim,)

    def _split(self):
        # Static index sets: the conditioner sees only the conditioning entries (no
        # wasted inputs or outputs, unlike multiplying by the mask).
        m = np.asarray(self.mask)
        return np.flatnonzero(m), np.flatnonzero(~m)

    def _scale_shift(self, x):
        # Returns the scale a, its log, and the shift.
        cond, trans = self._split()
        raw, t = jnp.split(self.conditioner(x[cond]), 2)
        if self.scale_fn == "softplus":
            a = jax.nn.softplus(raw + _SOFTPLUS_ONE)
            return trans, a, jnp.log(a), t
        bound = self.log_scale_bound
        log_a = bound * jnp.tanh(raw / bound)
        return trans, jnp.exp(log_a), log_a, t

    def _transform_and_log_det(self, x, key):
        trans, a, log_a, t = self._scale_shift(x)
        return x.at[trans].set(x[trans] * a + t), jnp.sum(log_a)

    def _inverse_and_log_det(self, y, key):
        trans, a, log_a, t = self._scale_shift(y)
        return y.at[trans].set((y[trans] - t) / a), -jnp.sum(log_a)


class AffineCouplingStack(AbstractBijection):
    r"""RealNVP's bijection: affine couplings with alternating masks (Dinh et al. 2017).

    The density model built on it is `scoreflow.models.RealNVP`.

    Layer $i$ conditions on the even entries when $i$ is even and on the odd ones
    otherwise (the 1-d analogue of the checkerboard mask, sec. 3.4), so every entry is
    transformed by half of the layers; a `Permute` between layers (`shuffle=True`)
    mixes the entries further in higher dimension.

    Args:
        dim: event size (>= 2).
        num_layers: number of coupling layers (>= 2).
        width: conditioner hidden width.
        depth: conditioner hidden layers.
        scale_fn: the couplings' scale, `"softplus"` or `"exp"` (see `AffineCoupling`).
        zero_init: start every coupling at the identity (see `AffineCoupling`).
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
        scale_fn: str = "softplus",
        zero_init: bool = False,
        shuffle: bool = False,
        dtype=None,
        key: Key,
    ):
        if not isinstance(dim, int) or dim < 2:
            raise ValueError(f"`dim` must be an integer >= 2 for a coupling flow, got {dim!r}.")
        if not isinstance(num_layers, int) or num_layers < 2:
            raise ValueError(f"`num_layers` must be an integer >= 2, got {num_layers!r}.")
        dtype = _checks.float_dtype(dtype)
        _checks.key(key)
        even = np.arange(dim) % 2 == 0
        keys = jr.split(key, num_layers + 1)
        rng = np.random.default_rng(np.asarray(jr.key_data(keys[-1])).ravel()[-1:])
        layers: list[AbstractBijection] = []
        for i in range(num_layers):
            mask = even if i % 2 == 0 else ~even
            layers.append(
                AffineCoupling(
                    mask,
                    width=width,
                    depth=depth,
                    scale_fn=scale_fn,
                    zero_init=zero_init,
                    dtype=dtype,
                    key=keys[i],
                )
            )
            if shuffle and i < num_layers - 1:
                layers.append(Permute(rng.permutation(dim)))
        self.chain = Chain(layers)
        self.shape = (dim,)

    def _transform_and_log_det(self, x, key):
        return self.chain.transform_and_log_det(x, key=key)

    def _inverse_and_log_det(self, y, key):
        return self.chain.inverse_and_log_det(y, key=key)
