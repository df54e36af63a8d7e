import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, Int, PyTree, Shaped

from .. import _checks, losses
from .._custom_types import Key, Scalar
from ..nn import AbstractPixelHead, PixelDecoder, ResidualMLP, soft_clamp
from ._base import AbstractStatefulModel
from ._latent import (
    AbstractLatentVariableModel,
    check_data_range,
    check_head,
    gaussian_log_prob,
    param_dtype,
    to_data,
)

INFERENCE = ("top-down", "residual", "bottom-up")


def _shift_log_var(net: ResidualMLP, size: int, value: float) -> ResidualMLP:
    bias = net.last.bias
    assert bias is not None  # ResidualMLP's output layer has a bias
    return eqx.tree_at(lambda m: m.last.bias, net, bias.at[size:].set(value))


class HierarchicalVAE(AbstractLatentVariableModel, AbstractStatefulModel):
    r"""A VAE with $L$ stochastic layers: Ladder-VAE top-down inference, or the Markovian chain.

    Generative model (top to bottom): $p(z_L) = N(0, I)$,
    $p(z_l \mid z_{l+1}) = N(\mu_l(z_{l+1}), \mathrm{diag}\,\sigma_l^2(z_{l+1}))$ and the
    decoder's head $p(x \mid z_1)$; every network a small residual MLP
    (`scoreflow.nn.ResidualMLP`, the NVAE / VDVAE residual cell at the scale of vectors).

    Inference `"top-down"` (Ladder VAE, Sønderby et al. 2016, arXiv:1602.02282, eq.
    17-19): a deterministic bottom-up pass $d_1 = f_1(x)$, $d_{l+1} = f_{l+1}(d_l)$ gives
    likelihood terms $(\hat\mu_l, \hat\sigma_l^2)$; the posterior is then sampled top
    down, each layer's Gaussian the precision-weighted combination of its bottom-up term
    and its prior given the $z_{l+1}$ just drawn,
    $\sigma_q^{-2} = \hat\sigma^{-2} + \sigma_p^{-2}$,
    $\mu_q = \sigma_q^2(\hat\mu\hat\sigma^{-2} + \mu_p\sigma_p^{-2})$, so every layer's
    KL is analytic given the layer above. Inference `"residual"`: the same bottom-up
    pass, but each layer's posterior is NVAE's residual Normal relative to its prior
    (Vahdat & Kautz 2020, arXiv:2007.03898, eq. 2),
    $\mu_q = \mu_p + \Delta\mu$, $\log\sigma_q^2 = \log\sigma_p^2 + \Delta\log\sigma^2$,
    with $(\Delta\mu, \Delta\log\sigma^2)$ a linear map of $d_l$ and $z_{l+1}$, so that
    $q(z_l \mid x, z_{l+1})$ depends on both, and its KL is analytic too. Inference
    `"bottom-up"`: the Markovian
    hierarchical VAE (Luo 2022, arXiv:2208.11970, eq. 23-24),
    $q(z_1 \mid x)\prod_l q(z_{l+1} \mid z_l)$, whose KL terms are one-draw estimates.

    Training (`stateful_loss`, what `scoreflow.train.fit` runs): the negative ELBO with
    the KL of each layer weighted by a warm-up $\beta = \min(1, s/S)$ at step $s$
    (`warmup_steps` $= S$; Sønderby et al. 2016, sec. 2.3; the step is the model's
    training state, checkpointed with it) and floored at `free_bits` nats per layer
    (batch-averaged; Kingma et al. 2016, arXiv:1606.04934, eq. 15), or with
    `num_samples=K > 1` the IWAE bound (Burda et al. 2016; the two ELBO devices do not
    apply to it). `loss` is that objective at $\beta = 1$. Pair it with gradient clipping
    and `scoreflow.train.skip_large_updates` (VDVAE, Child 2021, arXiv:2011.10650,
    sec. 3.3) for the rare exploding step. `elbo` and `log_prob_estimate` are the
    exact bound and the importance-sampled estimate, as for `VAE`.

    Args:
        event_shape: the shape of one example.
        latent_sizes: the sizes of $z_1$ (bottom) to $z_L$ (top).
        head: the decoder's output head.
        width: hidden width of every network.
        depth: residual blocks of every network.
        inference: `"top-down"`, `"residual"` or `"bottom-up"`.
        num_samples: $K$ of the training bound.
        warmup_steps: KL warm-up steps $S$ (0: none).
        free_bits: nats per layer below which a layer's KL is not penalised (0: none).
        zero_init: start as a one-layer VAE with unused upper layers: the output layer
            of every top-down prior network is zero and its log-variance bias the one
            that the clamp maps to 0, so every $p(z_l \mid z_{l+1})$ starts as
            $N(0, I)$; with `"residual"` inference the weights by which each posterior
            reads $z_{l+1}$ start at zero too. Training then switches the upper layers
            on, instead of the bottom layer fitting a random prior from the first step
            (the zero-initialised last layer of each residual branch of Fixup, Zhang et
            al. 2019, arXiv:1901.09321, applied to the hierarchy). On the digits it
            scored worse than the random start (`benchmarks/RESULTS.md`).
        data_range: the interval a discrete head's levels divide (float data).
        log_var_bounds: bounds of every log-variance (`scoreflow.nn.soft_clamp`).
        key: PRNG key.
    """

    bottom_up: tuple[ResidualMLP, ...]
    posterior: tuple[eqx.nn.Linear, ...]
    top_down: tuple[ResidualMLP, ...]
    decoder: PixelDecoder
    head: AbstractPixelHead
    event_shape: tuple[int, ...] = eqx.field(static=True)
    latent_sizes: tuple[int, ...] = eqx.field(static=True)
    inference: str = eqx.field(static=True)
    num_samples: int = eqx.field(static=True)
    warmup_steps: int = eqx.field(static=True)
    free_bits: float = eqx.field(static=True)
    data_range: tuple[float, float] = eqx.field(static=True)
    log_var_bounds: tuple[float, float] = eqx.field(static=True)

    def __init__(
        self,
        event_shape: tuple[int, ...],
        latent_sizes: tuple[int, ...],
        *,
        head: AbstractPixelHead,
        width: int = 128,
        depth: int = 1,
        inference: str = "top-down",
        num_samples: int = 1,
        warmup_steps: int = 0,
        free_bits: float = 0.0,
        zero_init: bool = False,
        data_range: tuple[float, float] = (-1.0, 1.0),
        log_var_bounds: tuple[float, float] = (-12.0, 4.0),
        key: Key,
    ):
        event_shape = _checks.shape(event_shape, "event_shape")
        sizes = _checks.shape(latent_sizes, "latent_sizes")
        if len(sizes) < 1 or min(sizes) < 1:
            raise ValueError(
                f"`latent_sizes` must be a non-empty tuple of ints >= 1, got {latent_sizes!r}."
            )
        if inference not in INFERENCE:
            raise ValueError(f"`inference` must be one of {INFERENCE}, got {inference!r}.")
        _checks.positive_int(num_samples, "num_samples")
        _checks.positive_int(warmup_steps, "warmup_steps", least=0)
        _checks.scalar(free_bits, "free_bits")
        _checks.nonnegative(free_bits, "free_bits")
        check_head(head)
        _checks.key(key)
        lo, hi = log_var_bounds
        _checks.less(lo, hi, "log_var_bounds[0]", "log_var_bounds[1]")
        L = len(sizes)
        keys = jr.split(key, 3 * L + 1)
        d = math.prod(event_shape)
        if inference == "bottom-up":
            ins = [d, *sizes[:-1]]
        else:
            ins = [d] + [width] * (L - 1)
        self.bottom_up = tuple(
            ResidualMLP(ins[i], width, width, depth, key=keys[i]) for i in range(L)
        )
        # A residual layer's posterior reads the layer above's draw beside d_l.
        extra = [sizes[i + 1] if inference == "residual" and i < L - 1 else 0 for i in range(L)]
        posterior = [
            eqx.nn.Linear(width + extra[i], 2 * sizes[i], key=keys[L + i]) for i in range(L)
        ]
        if zero_init:
            posterior = [
                eqx.tree_at(lambda m: m.weight, lin, lin.weight.at[:, width:].set(0.0))
                for lin in posterior
            ]
        self.posterior = tuple(posterior)
        top_down = [
            ResidualMLP(
                sizes[i + 1],
                2 * sizes[i],
                width,
                depth,
                zero_output=bool(zero_init),
                key=keys[2 * L + i],
            )
            for i in range(L - 1)
        ]
        if zero_init and lo < 0.0 < hi:
            # The log-variance bias that `soft_clamp` maps to 0: the prior starts at N(0, I).
            v0 = lo + math.log(math.expm1(hi - lo - math.log(math.expm1(hi))))
            top_down = [_shift_log_var(net, sizes[i], v0) for i, net in enumerate(top_down)]
        self.top_down = tuple(top_down)
        self.decoder = PixelDecoder(
            sizes[0], event_shape, head.num_params, width, depth, key=keys[-1]
        )
        self.head = head
        self.event_shape = event_shape
        self.latent_sizes = sizes
        self.inference = inference
        self.num_samples = num_samples
        self.warmup_steps = int(warmup_steps)
        self.free_bits = float(free_bits)
        self.data_range = check_data_range(data_range)
        self.log_var_bounds = (float(lo), float(hi))

    @property
    def _dtype(self):
        return param_dtype(self.decoder)

    def _split(self, out, size):
        return out[:size], soft_clamp(out[size:], *self.log_var_bounds)

    def _prior(self, i, z_above):
        # p(z_l | z_{l+1}); the top layer's prior is N(0, I).
        size = self.latent_sizes[i]
        if z_above is None:
            zeros = jnp.zeros((size,), self._dtype)
            return zeros, zeros
        return self._split(self.top_down[i](z_above), size)

    def _one_pass(self, xe, xh, key):
        # One posterior draw of every layer: (log p(x | z_1), the analytic KL of each
        # layer where there is one, log q - log p of each layer at the draw).
        L = len(self.latent_sizes)
        keys = jr.split(key, L)
        zs: list = [None] * L
        kls: list = [None] * L
        ratios: list = [None] * L
        if self.inference in ("top-down", "residual"):
            h, hs = xe, []
            for i in range(L):
                h = self.bottom_up[i](h)
                hs.append(h)
            for i in reversed(range(L)):
                mu_p, lv_p = self._prior(i, zs[i + 1] if i + 1 < L else None)
                size = self.latent_sizes[i]
                if self.inference == "residual" and i < L - 1:
                    out = self.posterior[i](jnp.concatenate([hs[i], zs[i + 1]]))
                    raw_p = self.top_down[i](zs[i + 1])[size:]  # lv_p before its clamp
                    mu_q = mu_p + out[:size]
                    lv_q = soft_clamp(raw_p + out[size:], *self.log_var_bounds)
                elif i == L - 1:
                    mu_q, lv_q = self._split(self.posterior[i](hs[i]), size)
                else:
                    mu_hat, lv_hat = self._split(self.posterior[i](hs[i]), size)
                    lv_q = -jnp.logaddexp(-lv_hat, -lv_p)
                    mu_q = jnp.exp(lv_q) * (mu_hat * jnp.exp(-lv_hat) + mu_p * jnp.exp(-lv_p))
                eps = jr.normal(keys[i], mu_q.shape, mu_q.dtype)
                zs[i] = mu_q + jnp.exp(0.5 * lv_q) * eps
                kls[i] = losses.gaussian_kl(mu_q, lv_q, mu_p, lv_p)
                log_q = -0.5 * jnp.sum(eps**2 + lv_q + math.log(2 * math.pi))
                ratios[i] = log_q - gaussian_log_prob(zs[i], mu_p, lv_p)
        else:
            h = xe
            qs = []
            for i in range(L):
                mu_q, lv_q = self._split(
                    self.posterior[i](self.bottom_up[i](h)), self.latent_sizes[i]
                )
                eps = jr.normal(keys[i], mu_q.shape, mu_q.dtype)
                zs[i] = h = mu_q + jnp.exp(0.5 * lv_q) * eps
                qs.append(-0.5 * jnp.sum(eps**2 + lv_q + math.log(2 * math.pi)))
            for i in range(L):
                mu_p, lv_p = self._prior(i, zs[i + 1] if i + 1 < L else None)
                ratios[i] = qs[i] - gaussian_log_prob(zs[i], mu_p, lv_p)
                kls[i] = ratios[i]  # q(z_i | z_{i-1}), p(z_i | z_{i+1}): no closed form
        log_px = jnp.sum(self.head.log_prob(self.decoder(zs[0]), xh))
        return log_px, jnp.stack(kls), jnp.stack(ratios)

    def _passes(self, x_enc, x_head, key):
        return jax.vmap(self._one_pass)(x_enc, x_head, jr.split(key, x_enc.shape[0]))

    def _log_weights(self, x_enc, x_head, key):
        log_px, _, ratios = self._passes(x_enc, x_head, key)
        return log_px - jnp.sum(ratios, axis=-1)

    def _elbo_analytic(self, x_enc, x_head, key):
        log_px, kls, _ = self._passes(x_enc, x_head, key)
        return log_px - jnp.sum(kls, axis=-1)

    def _objective(self, x, beta, key):
        _checks.key(key)
        x_enc, x_head, log_width = self._prepare(x)
        if self.num_samples > 1:
            bound = losses.iwae_bound(
                lambda _, *, key: self._log_weights(x_enc, x_head, key),
                x_enc,
                num_samples=self.num_samples,
                key=key,
            )
            return -jnp.mean(bound) + log_width
        log_px, kls, _ = self._passes(x_enc, x_head, key)
        kl = jnp.maximum(jnp.mean(kls, axis=0), self.free_bits)
        return -jnp.mean(log_px) + beta * jnp.sum(kl) + log_width

    def loss(self, x: Shaped[Array, "batch ..."], *, key: Key) -> Scalar:
        r"""The training objective at full KL weight ($\beta = 1$, free bits applied)."""
        return self._objective(x, 1.0, key)

    def init_state(self, *, key: Key) -> PyTree:
        """The warm-up step counter (an int32 0), or `None` without warm-up."""
        return None if self.warmup_steps == 0 else jnp.zeros((), jnp.int32)

    def stateful_loss(
        self, x: Shaped[Array, "batch ..."], state: Int[Array, ""] | None, *, key: Key
    ) -> tuple[Scalar, PyTree]:
        r"""The objective with the warm-up weight $\beta = \min(1, s/S)$, and $s + 1$."""
        if state is None:
            return self.loss(x, key=key), None
        beta = jnp.minimum(1.0, state.astype(self._dtype) / self.warmup_steps)
        return self._objective(x, beta, key), state + 1

    def sample(self, sample_shape: int | tuple[int, ...] = (), *, key: Key) -> Float[Array, "..."]:
        r"""`(*sample_shape, *event_shape)` ancestral draws: $z_L, \dots, z_1$, then $x$."""
        shape, n = self._flat_shape(sample_shape)
        _checks.key(key)
        L = len(self.latent_sizes)
        k_z, k_x = jr.split(key)

        def one(k):
            ks = jr.split(k, L)
            z = None
            for i in reversed(range(L)):
                mu, lv = self._prior(i, z)
                z = mu + jnp.exp(0.5 * lv) * jr.normal(ks[i], mu.shape, mu.dtype)
            assert z is not None  # L >= 1
            return self.decoder(z)

        params = jax.vmap(one)(jr.split(k_z, n))
        draw = self.head.sample(params, key=k_x)
        x = to_data(self.head, draw, self.data_range, params.dtype)
        return x.reshape(*shape, *self.event_shape)
