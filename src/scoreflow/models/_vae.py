import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, Shaped

from .. import _checks, losses
from .._custom_types import Key, Scalar
from ..nn import AbstractPixelHead, GaussianEncoder, PixelDecoder
from ._latent import (
    AbstractLatentVariableModel,
    check_data_range,
    check_head,
    gaussian_log_prob,
    param_dtype,
    to_data,
)


def check_networks(encoder, decoder, event_shape, latent_dim, num_params, dtype):
    """Raise `ValueError` unless the encoder and decoder fit the event and latent sizes."""
    try:
        out = jax.eval_shape(encoder, jax.ShapeDtypeStruct(event_shape, dtype))
    except Exception as e:  # noqa: BLE001 - any failure to trace is a mismatch
        raise ValueError(
            f"`encoder` must map one example of shape {event_shape} to (mean, log_var); "
            f"calling it failed: {e}"
        ) from None
    shapes = [getattr(o, "shape", None) for o in out] if isinstance(out, tuple) else None
    if shapes != [(latent_dim,), (latent_dim,)]:
        raise ValueError(
            f"`latent_dim` ({latent_dim}) must match the encoder, which returns "
            f"{shapes if shapes is not None else out} (want (mean, log_var) of shape "
            f"({latent_dim},) each)."
        )
    want = (*event_shape, num_params)
    try:
        params = jax.eval_shape(decoder, jax.ShapeDtypeStruct((latent_dim,), dtype))
    except Exception as e:  # noqa: BLE001
        raise ValueError(
            f"`latent_dim` ({latent_dim}) must match the decoder's input; calling it on "
            f"a latent of that size failed: {e}"
        ) from None
    if getattr(params, "shape", None) != want:
        raise ValueError(
            f"`decoder` must return the head's parameters of shape {want} (event shape and "
            f"the head's num_params), got {getattr(params, 'shape', params)}."
        )


class VAE(AbstractLatentVariableModel):
    r"""Variational autoencoder (Kingma & Welling 2014, arXiv:1312.6114), and IWAE.

    A Gaussian encoder $q(z \mid x) = N(\mu(x), \mathrm{diag}\,\sigma^2(x))$ with
    bounded log-variances (`scoreflow.nn.GaussianEncoder`), the prior $N(0, I)$, and a
    decoder whose output parameterises a `scoreflow.nn` output head at every element:
    `Bernoulli()` (binary data), `Gaussian(learn_variance)` (real data, fixed or learned
    bounded variance), `Categorical(L)` or `DiscretisedLogisticMixture(L)` (Salimans et
    al. 2017) for images of $L$ levels (see `AbstractLatentVariableModel` for how data
    meet a discrete head).

    `loss` is the negative of the model's training bound, averaged over the batch (nats
    per example): with `num_samples=1` the ELBO (eq. 10) with the analytic KL (appendix
    B) and one reparameterised draw (eq. 6); with `num_samples=K > 1` the
    importance-weighted bound $\mathcal{L}_K$ of Burda et al. 2016 (arXiv:1509.00519,
    eq. 8), the IWAE, through `scoreflow.losses.iwae_bound`.

    Its likelihood is a bound (`AbstractLikelihoodBound`): `elbo(x, num_samples=K)` is
    $\mathcal{L}_1$ or $\mathcal{L}_K$ per example; `log_prob_estimate` is the
    importance-sampled $\log\hat p(x)$ with $K = 5000$ by default, chunked, with its
    standard error and effective sample size (`scoreflow.metrics.importance_log_likelihood`):
    an *estimate* whose expectation is a lower bound on $\log p(x)$ that tightens with
    $K$. `scoreflow.evaluation.evaluate_digits` reports either as a bound (bits/dim, "≤").

    Args:
        event_shape: the shape of one example.
        latent_dim: the size of $z$.
        head: the decoder's output head.
        width: hidden width of the default encoder and decoder (each a `ResidualMLP`).
        depth: their residual blocks.
        num_samples: $K$ of the training bound (1: the ELBO; > 1: the IWAE bound).
        encoder: a network `x -> (mean, log_var)` of one example (default a
            `GaussianEncoder`); its log-variance should be bounded.
        decoder: a network `z -> (*event_shape, head.num_params)` (default a
            `PixelDecoder`).
        data_range: the interval that a discrete head's levels divide (float data).
        log_var_bounds: the default encoder's log-variance bounds.
        key: PRNG key of the default networks.
    """

    encoder: Callable[..., tuple[Array, Array]]
    decoder: Callable[..., Array]
    head: AbstractPixelHead
    event_shape: tuple[int, ...] = eqx.field(static=True)
    latent_dim: int = eqx.field(static=True)
    num_samples: int = eqx.field(static=True)
    data_range: tuple[float, float] = eqx.field(static=True)

    def __init__(
        self,
        event_shape: tuple[int, ...],
        latent_dim: int,
        *,
        head: AbstractPixelHead,
        width: int = 128,
        depth: int = 2,
        num_samples: int = 1,
        encoder: Callable | None = None,
        decoder: Callable | None = None,
        data_range: tuple[float, float] = (-1.0, 1.0),
        log_var_bounds: tuple[float, float] = (-12.0, 4.0),
        key: Key,
    ):
        event_shape = _checks.shape(event_shape, "event_shape")
        _checks.positive_int(latent_dim, "latent_dim")
        _checks.positive_int(num_samples, "num_samples")
        check_head(head)
        _checks.key(key)
        k_enc, k_dec = jr.split(key)
        if encoder is None:
            encoder = GaussianEncoder(
                event_shape, latent_dim, width, depth, log_var_bounds=log_var_bounds, key=k_enc
            )
        if decoder is None:
            decoder = PixelDecoder(
                latent_dim, event_shape, head.num_params, width, depth, key=k_dec
            )
        check_networks(
            encoder, decoder, event_shape, latent_dim, head.num_params, param_dtype(encoder)
        )
        self.encoder = encoder
        self.decoder = decoder
        self.head = head
        self.event_shape = event_shape
        self.latent_dim = latent_dim
        self.num_samples = num_samples
        self.data_range = check_data_range(data_range)

    @property
    def _dtype(self):
        return param_dtype((self.encoder, self.decoder))

    def encode(
        self, x: Shaped[Array, "batch ..."]
    ) -> tuple[Float[Array, "batch z"], Float[Array, "batch z"]]:
        r"""$(\mu, \log\sigma^2)$ of $q(z \mid x)$ per example."""
        x_enc, _, _ = self._prepare(x)
        return jax.vmap(self.encoder)(x_enc)

    def decode(self, z: Float[Array, "batch z"]) -> Float[Array, "batch ..."]:
        """The head's parameters `(batch, *event_shape, num_params)` at latents `z`."""
        z = jnp.asarray(z)
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"`z` must have shape (batch, {self.latent_dim}), got {z.shape}.")
        return jax.vmap(self.decoder)(z)

    def _draw_data(self, params, key):
        draw = self.head.sample(params, key=key)
        return to_data(self.head, draw, self.data_range, params.dtype)

    def reconstruct(self, x: Shaped[Array, "batch ..."], *, key: Key) -> Float[Array, "batch ..."]:
        r"""A draw of $x' \sim p(x' \mid z)$, $z \sim q(z \mid x)$, per example (data space)."""
        _checks.key(key)
        mean, log_var = self.encode(x)
        k_z, k_x = jr.split(key)
        z = mean + jnp.exp(0.5 * log_var) * jr.normal(k_z, mean.shape, mean.dtype)
        return self._draw_data(self.decode(z), k_x)

    def sample(self, sample_shape: int | tuple[int, ...] = (), *, key: Key) -> Float[Array, "..."]:
        r"""`(*sample_shape, *event_shape)` draws of $z \sim N(0, I)$, $x \sim p(x \mid z)$."""
        shape, n = self._flat_shape(sample_shape)
        _checks.key(key)
        k_z, k_x = jr.split(key)
        z = jr.normal(k_z, (n, self.latent_dim), self._dtype)
        x = self._draw_data(self.decode(z), k_x)
        return x.reshape(*shape, *self.event_shape)

    def _log_weights(self, x_enc, x_head, key):
        # One reparameterised z per example: log p(x | z) + log p(z) - log q(z | x).
        def one(xe, xh, k):
            mean, log_var = self.encoder(xe)
            eps = jr.normal(k, mean.shape, mean.dtype)
            z = mean + jnp.exp(0.5 * log_var) * eps
            log_px = jnp.sum(self.head.log_prob(self.decoder(z), xh))
            log_pz = gaussian_log_prob(z, jnp.zeros_like(z), jnp.zeros_like(z))
            log_q = -0.5 * jnp.sum(eps**2 + log_var + math.log(2 * math.pi))
            return log_px + log_pz - log_q

        return jax.vmap(one)(x_enc, x_head, jr.split(key, x_enc.shape[0]))

    def _elbo_analytic(self, x_enc, x_head, key):
        def one(xe, xh, k):
            mean, log_var = self.encoder(xe)
            z = mean + jnp.exp(0.5 * log_var) * jr.normal(k, mean.shape, mean.dtype)
            log_px = jnp.sum(self.head.log_prob(self.decoder(z), xh))
            return log_px - losses.gaussian_kl(mean, log_var)

        return jax.vmap(one)(x_enc, x_head, jr.split(key, x_enc.shape[0]))

    def _bound(self, x_enc, x_head, num_samples, key):
        if num_samples == 1:
            return self._elbo_analytic(x_enc, x_head, key)
        return losses.iwae_bound(
            lambda _, *, key: self._log_weights(x_enc, x_head, key),
            x_enc,
            num_samples=num_samples,
            key=key,
        )

    def loss(self, x: Shaped[Array, "batch ..."], *, key: Key) -> Scalar:
        r"""$-\mathcal{L}_K$ (the ELBO for $K = 1$), averaged over the batch, in nats."""
        _checks.key(key)
        x_enc, x_head, log_width = self._prepare(x)
        return -jnp.mean(self._bound(x_enc, x_head, self.num_samples, key)) + log_width
