import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .. import _checks
from .._custom_types import Key
from ..bijections import Affine, AffineCouplingStack, Chain, Flow, Invert, StandardNormal
from ._base import AbstractExactLikelihood, check_event


class RealNVP(AbstractExactLikelihood):
    r"""RealNVP density model (Dinh et al. 2017, arXiv:1605.08803), trained by likelihood.

    A `Flow` whose bijection maps a standard normal through alternating affine
    couplings (`scoreflow.bijections.AffineCouplingStack`) and then an elementwise `Affine` started
    at the data's location and scale (learnable), so the couplings see standardised data.
    The couplings' forward map $x \odot a + t$ is the *normalising* direction, data to
    latent, as Dinh et al. define it (their $f: X \to Z$, eqs. 4-5 and 9; flowjax's
    `coupling_flow` does the same), so sampling applies their inverse. With
    `scale_fn="exp"` the two directions span the same maps; with the softplus scale they
    do not, and this is the one Dinh et al.'s likelihood is written for.

    Args:
        dim: event size (>= 2).
        num_layers: coupling layers.
        width: conditioner hidden width.
        depth: conditioner hidden layers.
        scale_fn: the couplings' scale, `"softplus"` (default) or `"exp"` (see
            `scoreflow.bijections.AffineCoupling`).
        zero_init: start every coupling at the identity (default: random output layer).
        shuffle: random permutations between couplings.
        loc: initial location of the output affine layer (default 0).
        scale: initial scale of the output affine layer (default 1).
        dtype: parameter dtype.
        key: PRNG key.
    """

    flow: Flow
    event_shape: tuple[int, ...] = eqx.field(static=True)

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
        loc: Float[ArrayLike, " dim"] | None = None,
        scale: Float[ArrayLike, " dim"] | None = None,
        dtype=None,
        key: Key,
    ):
        dtype = _checks.float_dtype(dtype)
        loc = jnp.zeros(dim, dtype) if loc is None else jnp.asarray(loc, dtype)
        scale = jnp.ones(dim, dtype) if scale is None else jnp.asarray(scale, dtype)
        coupling = AffineCouplingStack(
            dim,
            num_layers=num_layers,
            width=width,
            depth=depth,
            scale_fn=scale_fn,
            zero_init=zero_init,
            shuffle=shuffle,
            dtype=dtype,
            key=key,
        )
        self.flow = Flow(StandardNormal((dim,)), Chain([Invert(coupling), Affine(loc, scale)]))
        self.event_shape = (dim,)

    def log_prob(
        self, x: Float[Array, "batch dim"], *, key: Key | None = None
    ) -> Float[Array, " batch"]:
        """Exact log-density (change of variables, Dinh et al. 2017, eq. 3)."""
        return self.flow.log_prob(check_event(jnp.asarray(x), self.event_shape))

    def loss(self, x: Float[Array, "batch dim"], *, key: Key | None = None) -> Float[Array, ""]:
        """Negative log-likelihood per example, averaged over the batch (nats)."""
        return -jnp.mean(self.log_prob(x))

    def sample(self, sample_shape: int | tuple[int, ...] = (), *, key: Key) -> Float[Array, "..."]:
        """Draw `(*sample_shape, dim)` samples."""
        shape, _ = self._flat_shape(sample_shape)
        dtype = jax.tree_util.tree_leaves(self.flow)[0].dtype  # the parameters' dtype
        return self.flow.sample(shape, key=key, dtype=dtype)
