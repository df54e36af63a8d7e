r"""The replay buffer of persistent contrastive divergence, as an immutable value."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, Int

from .. import _checks
from .._custom_types import Key


class ReplayBuffer(eqx.Module):
    r"""A pool of persistent Langevin chains (Du & Mordatch 2019, arXiv:1903.08689, sec. 3.1).

    Each training step `draw`s a batch of chain states without replacement, restarts a
    fraction `restart` of them from uniform noise on $[\text{low}, \text{high}]^d$,
    advances them with a short Langevin run, and writes them back with `update`. The
    buffer is a value (an `equinox.Module` of one array), not a mutable host object: it
    lives in `scoreflow.train.TrainState.model_state`, so it is checkpointed with the
    parameters and a resumed run draws exactly what an uninterrupted run would.

    Args:
        size: number of chains kept.
        event_shape: the shape of one chain's state.
        low: lower end of the uniform noise box.
        high: upper end of the uniform noise box.
        dtype: floating dtype of the states.
        key: PRNG key of the initial (uniform noise) states.
    """

    samples: Float[Array, "size ..."]
    low: float = eqx.field(static=True)
    high: float = eqx.field(static=True)

    def __init__(
        self,
        size: int,
        event_shape: tuple[int, ...],
        *,
        low: float = -1.0,
        high: float = 1.0,
        dtype=None,
        key: Key,
    ):
        _checks.positive_int(size, "size")
        _checks.less(low, high, "low", "high")
        _checks.key(key)
        self.low, self.high = float(low), float(high)
        dtype = _checks.float_dtype(dtype)
        self.samples = self.noise((size, *event_shape), dtype, key=key)

    @property
    def size(self) -> int:
        return self.samples.shape[0]

    def noise(self, shape: tuple[int, ...], dtype, *, key: Key) -> Array:
        """Uniform noise on the box, the state a restarted chain begins from."""
        return jr.uniform(key, shape, dtype, self.low, self.high)

    def draw(
        self, num: int, *, restart: float = 0.05, key: Key
    ) -> tuple[Int[Array, " num"], Float[Array, "num ..."]]:
        r"""`num` distinct chains, each restarted from noise with probability `restart`.

        Returns:
            `(indices, states)`: where the chains are kept, and their initial states.

        Raises:
            ValueError: if `num` exceeds the buffer's size or `restart` is not in [0, 1].
        """
        _checks.positive_int(num, "num")
        if num > self.size:
            raise ValueError(f"`num` ({num}) must not exceed the buffer's size ({self.size}).")
        r = _checks.concrete(restart)
        if r is not None:
            _checks.check(bool(0 <= r <= 1), "restart", f"must lie in [0, 1], got {r}.")
        _checks.key(key)
        k_idx, k_restart, k_noise = jr.split(key, 3)
        idx = jr.choice(k_idx, self.size, (num,), replace=False)
        old = self.samples[idx]
        fresh = self.noise(old.shape, old.dtype, key=k_noise)
        pick = jr.bernoulli(k_restart, restart, (num,))
        pick = jnp.reshape(pick, (num,) + (1,) * (old.ndim - 1))
        return idx, jnp.where(pick, fresh, old)

    def update(
        self, indices: Int[Array, " num"], states: Float[Array, "num ..."]
    ) -> "ReplayBuffer":
        """The buffer with the chains at `indices` replaced by `states` (stopped)."""
        states = jax.lax.stop_gradient(states).astype(self.samples.dtype)
        return eqx.tree_at(lambda b: b.samples, self, self.samples.at[indices].set(states))
