r"""Adversarial losses and the discriminator's gradient regularisers.

The discriminator's output is a logit (a critic value for the Wasserstein loss), $D(x)
\in \mathbb{R}$. With $\sigma$ the logistic function and $\mathrm{softplus}(u) = \log(1
+ e^u)$, the minimax game of Goodfellow et al. 2014 (arXiv:1406.2661, eq. 1) has the
discriminator loss $\mathbb{E}\,\mathrm{softplus}(-D(x)) + \mathbb{E}\,
\mathrm{softplus}(D(G(z)))$ and, at the optimal discriminator, the generator minimises
$2\,\mathrm{JS}(p_{\text{data}} \,\|\, p_G) - \log 4$ (their Theorem 1).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float

from .._custom_types import Key, Scalar

ADVERSARIAL_LOSSES: tuple[str, ...] = ("non_saturating", "minimax", "hinge", "wasserstein")


def _check_kind(kind: str) -> None:
    if kind not in ADVERSARIAL_LOSSES:
        raise ValueError(f"`kind` must be one of {ADVERSARIAL_LOSSES}, got {kind!r}.")


def _check_logits(a, name):
    if a.ndim != 1:
        raise ValueError(f"`{name}` must be one logit per example, shape (n,), got {a.shape}.")


def discriminator_loss(
    real: Float[Array, " n"], fake: Float[Array, " m"], *, kind: str = "non_saturating"
) -> Scalar:
    r"""The discriminator's (critic's) loss on real and generated logits.

    - `"non_saturating"` and `"minimax"` (Goodfellow et al. 2014, eq. 1): the logistic
      loss $\mathbb{E}\,\mathrm{softplus}(-D(x)) + \mathbb{E}\,\mathrm{softplus}(D(\tilde x))$;
    - `"hinge"` (Lim & Ye 2017; Miyato et al. 2018, eq. 16):
      $\mathbb{E}\max(0, 1 - D(x)) + \mathbb{E}\max(0, 1 + D(\tilde x))$;
    - `"wasserstein"` (Arjovsky et al. 2017, eq. 3): $\mathbb{E} D(\tilde x) - \mathbb{E} D(x)$,
      for a Lipschitz critic (add `gradient_penalty`).

    Args:
        real: $D$ of data, `(n,)`.
        fake: $D$ of generated samples, `(m,)`.
        kind: the loss.

    Returns:
        The scalar loss.
    """
    _check_kind(kind)
    _check_logits(real, "real")
    _check_logits(fake, "fake")
    if kind in ("non_saturating", "minimax"):
        return jnp.mean(jax.nn.softplus(-real)) + jnp.mean(jax.nn.softplus(fake))
    if kind == "hinge":
        return jnp.mean(jax.nn.relu(1 - real)) + jnp.mean(jax.nn.relu(1 + fake))
    return jnp.mean(fake) - jnp.mean(real)


def generator_loss(fake: Float[Array, " m"], *, kind: str = "non_saturating") -> Scalar:
    r"""The generator's loss on the logits of its samples.

    - `"non_saturating"` (Goodfellow et al. 2014, section 3): $\mathbb{E}\,
      \mathrm{softplus}(-D(\tilde x)) = -\mathbb{E}\log\sigma(D(\tilde x))$, strong
      gradients where the discriminator rejects the samples;
    - `"minimax"`: $-\mathbb{E}\,\mathrm{softplus}(D(\tilde x)) = \mathbb{E}\log(1 -
      \sigma(D(\tilde x)))$, the game's own objective, which saturates early in training;
    - `"hinge"` and `"wasserstein"`: $-\mathbb{E} D(\tilde x)$.

    Args:
        fake: $D$ of generated samples, `(m,)`.
        kind: the loss.

    Returns:
        The scalar loss.
    """
    _check_kind(kind)
    _check_logits(fake, "fake")
    if kind == "non_saturating":
        return jnp.mean(jax.nn.softplus(-fake))
    if kind == "minimax":
        return -jnp.mean(jax.nn.softplus(fake))
    return -jnp.mean(fake)


def _input_grads(critic, x):
    g = jax.vmap(jax.grad(critic))(x)
    return g.reshape(g.shape[0], -1)


def gradient_penalty(
    critic: Callable[[Array], Array],
    real: Float[Array, "n ..."],
    fake: Float[Array, "n ..."],
    *,
    key: Key,
) -> Scalar:
    r"""WGAN-GP's penalty $\mathbb{E}(\|\nabla D(\hat x)\|_2 - 1)^2$ (Gulrajani et al. 2017).

    At $\hat x = \epsilon x + (1 - \epsilon)\tilde x$ with $\epsilon \sim U[0, 1]$ per
    pair (arXiv:1704.00028, eq. 3 and Algorithm 1); multiply by $\lambda$ (10 there).

    Args:
        critic: $D$ on one example, `x -> scalar`.
        real: data, `(n, *event)`.
        fake: generated samples, the same shape.
        key: PRNG key of $\epsilon$.

    Returns:
        The scalar penalty.
    """
    if real.shape != fake.shape:
        raise ValueError(f"`fake` must have the shape of `real`, {real.shape}, got {fake.shape}.")
    eps = jr.uniform(key, (real.shape[0],) + (1,) * (real.ndim - 1), real.dtype)
    mixed = eps * real + (1 - eps) * fake
    norms = jnp.sqrt(jnp.sum(_input_grads(critic, mixed) ** 2, axis=-1) + 1e-12)
    return jnp.mean((norms - 1) ** 2)


def r1_penalty(critic: Callable[[Array], Array], real: Float[Array, "n ..."]) -> Scalar:
    r"""R1: $\mathbb{E}_{x \sim p_{\text{data}}}\|\nabla D(x)\|_2^2$ (Mescheder et al. 2018).

    "Which Training Methods for GANs do actually Converge?" (arXiv:1801.04406), eq. 9
    weights it by $\gamma / 2$.

    Args:
        critic: $D$ on one example, `x -> scalar`.
        real: data, `(n, *event)`.

    Returns:
        The scalar penalty.
    """
    return jnp.mean(jnp.sum(_input_grads(critic, real) ** 2, axis=-1))
