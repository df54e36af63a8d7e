from collections.abc import Callable

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float

from .._custom_types import Key
from ..bijections import CNF, StandardNormal
from ..nn import ConcatSquashMLP


class FFJORD(eqx.Module):
    r"""FFJORD: a continuous normalizing flow trained by maximum likelihood.

    Grathwohl et al. 2019 ("FFJORD: Free-form Continuous Dynamics for Scalable
    Reversible Generative Models", arXiv:1810.01367). Data $x = \mu + s \odot z(t_1)$
    where $z$ solves $dz/dt = f_{\theta}(t, z)$ from $z(0) \sim N(0, I)$, $f_{\theta}$ a
    ConcatSquash MLP; $\log p(x)$ by the instantaneous change of variables (eq. 4) with an
    exact or Hutchinson trace (eq. 7). The loss optionally adds the kinetic-energy and
    Jacobian-Frobenius regularisers of Finlay et al. 2020 (arXiv:2002.02798, eq. 7),
    which straighten trajectories and cut the number of solver steps.

    Args:
        dim: event size.
        width: hidden width of the ConcatSquash MLP.
        depth: hidden layers.
        activation: MLP non-linearity (smooth; default softplus). Grathwohl et al.'s
            2-d experiments use `jnp.tanh`; on the 8-Gaussian ring of
            `benchmarks/flows_2d.py` it trained where softplus did not (held-out KL
            0.03 after 2 000 steps, against 0.67 and then a blow-up of the solver's
            step count with softplus), while on two moons softplus was the better of
            the two after 1 000 steps. Try both.
        t1: integration time.
        trace: `"exact"` or `"hutchinson"`.
        num_probes: Hutchinson probes.
        solver: diffrax ODE solver (default `Tsit5`).
        rtol: relative tolerance. Train at about 1e-5 (Grathwohl et al.): at loose
            tolerances the network can learn to exploit the solver's error, so the
            training loss drops below the data's entropy while the likelihood evaluated
            at a tight tolerance is poor.
        atol: absolute tolerance.
        adjoint: diffrax adjoint for the gradients.
        kinetic_weight: $\lambda_K \ge 0$.
        frobenius_weight: $\lambda_J \ge 0$.
        loc: data location $\mu$ (fixed; default 0).
        scale: data scale $s$ (fixed; default 1).
        dtype: parameter dtype.
        key: PRNG key.

    Raises:
        ValueError: on a negative regulariser weight or bad CNF options.
    """

    cnf: CNF
    loc: Array
    scale: Array
    kinetic_weight: float = eqx.field(static=True)
    frobenius_weight: float = eqx.field(static=True)

    def __init__(
        self,
        dim: int,
        *,
        width: int = 64,
        depth: int = 3,
        activation: Callable = jax.nn.softplus,
        t1: float = 1.0,
        trace: str = "exact",
        num_probes: int = 1,
        solver: dfx.AbstractSolver | None = None,
        rtol: float = 1e-5,
        atol: float = 1e-5,
        adjoint: dfx.AbstractAdjoint = dfx.RecursiveCheckpointAdjoint(),
        kinetic_weight: float = 0.0,
        frobenius_weight: float = 0.0,
        loc: Float[ArrayLike, " dim"] | None = None,
        scale: Float[ArrayLike, " dim"] | None = None,
        dtype=None,
        key: Key,
    ):
        for name, w in (("kinetic_weight", kinetic_weight), ("frobenius_weight", frobenius_weight)):
            if not w >= 0:
                raise ValueError(f"`{name}` must be non-negative, got {w}.")
        dtype = jnp.result_type(float) if dtype is None else dtype
        net = ConcatSquashMLP(dim, width, depth, activation, dtype=dtype, key=key)
        self.cnf = CNF(
            net,
            (dim,),
            t1=float(t1),
            trace=trace,
            num_probes=num_probes,
            solver=dfx.Tsit5() if solver is None else solver,
            rtol=rtol,
            atol=atol,
            adjoint=adjoint,
        )
        self.loc = jnp.zeros(dim, dtype) if loc is None else jnp.asarray(loc, dtype)
        self.scale = jnp.ones(dim, dtype) if scale is None else jnp.asarray(scale, dtype)
        self.kinetic_weight = float(kinetic_weight)
        self.frobenius_weight = float(frobenius_weight)

    def _encode(self, x, key):
        loc, scale = jax.lax.stop_gradient((self.loc, self.scale))
        z = (x - loc[None, :]) / scale[None, :]
        sol = self.cnf.solve(z, inverse=True, key=key)
        base = jax.vmap(StandardNormal(self.cnf.shape).log_prob)(sol.z)
        return base + sol.log_det - jnp.sum(jnp.log(scale)), sol

    def log_prob(
        self, x: Float[Array, "batch dim"], *, key: Key | None = None
    ) -> Float[Array, " batch"]:
        """Log-density (exact up to solver tolerance, or a Hutchinson estimate)."""
        return self._encode(x, key)[0]

    def loss(self, x: Float[Array, "batch dim"], *, key: Key | None = None) -> Float[Array, ""]:
        """Mean negative log-likelihood plus the weighted Finlay et al. regularisers."""
        lp, sol = self._encode(x, key)
        loss = -jnp.mean(lp)
        if self.kinetic_weight:
            loss = loss + self.kinetic_weight * jnp.mean(sol.kinetic)
        if self.frobenius_weight:
            loss = loss + self.frobenius_weight * jnp.mean(sol.frobenius)
        return loss

    def sample(self, shape: tuple[int, ...], *, key: Key) -> Float[Array, "batch dim"]:
        """Draw samples of `shape = (batch, dim)`: integrate the ODE from noise."""
        shape = tuple(shape)
        if len(shape) != 2 or shape[1:] != self.cnf.shape:
            raise ValueError(f"`shape` must be (batch, {self.cnf.shape[0]}), got {shape}.")
        k_z, k_tr = jr.split(key)
        z = jr.normal(k_z, shape, self.loc.dtype)
        sol = self.cnf.solve(z, key=k_tr)
        return self.loc[None, :] + self.scale[None, :] * sol.z
