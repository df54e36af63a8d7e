"""The VAE family against probabilistic PCA, whose likelihood and posterior are closed-form.

A linear-Gaussian VAE, $p(z) = N(0, I)$, $p(x \\mid z) = N(Wz + \\mu, \\sigma^2 I)$, is
probabilistic PCA (Tipping & Bishop 1999): $p(x) = N(\\mu, WW^T + \\sigma^2 I)$ and
$p(z \\mid x) = N(M^{-1}W^T(x - \\mu), \\sigma^2 M^{-1})$, $M = W^TW + \\sigma^2 I$. With
orthogonal columns of $W$ the posterior is diagonal, so a diagonal Gaussian encoder can
be exact.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
from numpy.testing import assert_allclose

import scoreflow as sf
from scoreflow import evaluation, losses, models, nn, train

D, Z, NOISE = 4, 2, 0.3


class LinearEncoder(eqx.Module):
    a: jax.Array
    b: jax.Array
    log_var: jax.Array

    def __call__(self, x):
        return self.a @ x + self.b, self.log_var


class LinearDecoder(eqx.Module):
    # The mean, and with `learn` the head's raw log-variance, one shared number.
    w: jax.Array
    mu: jax.Array
    raw: jax.Array | None = None

    def __call__(self, z):
        mean = self.w @ z + self.mu
        if self.raw is None:
            return mean[:, None]
        return jnp.stack([mean, jnp.broadcast_to(self.raw, mean.shape)], -1)


def _ppca(key=jr.key(0)):
    q, _ = jnp.linalg.qr(jr.normal(key, (D, Z)))
    w = q * jnp.asarray([[2.0, 1.0]])
    mu = jnp.asarray([0.5, -1.0, 0.0, 1.0])
    return w, mu


def _mvn_logpdf(x, mean, cov):
    chol = jnp.linalg.cholesky(cov)
    sol = jax.scipy.linalg.solve_triangular(chol, (x - mean[None]).T, lower=True)
    half_logdet = jnp.sum(jnp.log(jnp.diag(chol)))
    return -0.5 * jnp.sum(sol**2, axis=0) - half_logdet - 0.5 * x.shape[-1] * np.log(2 * np.pi)


@jax.jit
def _exact(w, mu, x):
    cov = w @ w.T + NOISE * jnp.eye(D)
    return _mvn_logpdf(x, mu, cov)


def _posterior(w, mu):
    # The exact posterior as an encoder (diagonal: W's columns are orthogonal).
    m = jnp.diag(w.T @ w) + NOISE
    return LinearEncoder(w.T / m[:, None], -(w.T @ mu) / m, jnp.log(NOISE / m))


def _vae(encoder, decoder, head=None, **kw):
    head = nn.Gaussian(variance=NOISE) if head is None else head
    return models.VAE((D,), Z, head=head, encoder=encoder, decoder=decoder, key=jr.key(0), **kw)


def _data(n, key=jr.key(1)):
    w, mu = _ppca()
    z = jr.normal(key, (n, Z))
    return z @ w.T + mu[None] + np.sqrt(NOISE) * jr.normal(jr.fold_in(key, 1), (n, D))


# The tests run each model's computations under one jit: eagerly every primitive would
# compile on its own, which is most of this file's time.
@eqx.filter_jit
def _mean_elbo(model, x, num_keys=4000):
    # The ELBO's expectation per example, by averaging one-draw ELBOs over many keys.
    draws = jax.vmap(lambda k: model.elbo(x, key=k))(jr.split(jr.key(5), num_keys))
    return draws.mean(0), draws.std(0, ddof=1) / np.sqrt(num_keys)


def test_elbo_is_log_p_minus_the_kl_to_the_posterior():
    # ELBO = log p(x) - KL(q(z|x) || p(z|x)) <= log p(x), for a wrong encoder.
    w, mu = _ppca()
    exact = _posterior(w, mu)
    wrong = LinearEncoder(exact.a * 0.7, exact.b + 0.3, exact.log_var + 0.5)
    model = _vae(wrong, LinearDecoder(w, mu))
    x = _data(8)
    log_p = _exact(w, mu, x)
    elbo, se = _mean_elbo(model, x)
    kl = eqx.filter_jit(lambda q, p, x: losses.gaussian_kl(*jax.vmap(q)(x), *jax.vmap(p)(x)))(
        wrong, exact, x
    )
    assert bool(jnp.all(kl > 0.05))
    assert_allclose(elbo, log_p - kl, atol=float(5 * se.max()) + 1e-6)
    assert bool(jnp.all(elbo < log_p))


def test_exact_posterior_makes_every_bound_log_p():
    # With the exact posterior every importance weight is p(x): the IWAE bound and the
    # estimate are log p(x) for every draw, with zero standard error; the ELBO's
    # expectation is log p(x).
    w, mu = _ppca()
    model = _vae(_posterior(w, mu), LinearDecoder(w, mu))
    x = _data(8)
    log_p = _exact(w, mu, x)
    iwae, est = eqx.filter_jit(
        lambda m, x: (
            m.elbo(x, num_samples=7, key=jr.key(2)),
            m.log_prob_estimate(x, num_samples=100, chunk_size=30, key=jr.key(3)),
        )
    )(model, x)
    assert_allclose(iwae, log_p, rtol=1e-10)
    assert_allclose(est.value, log_p, rtol=1e-10)
    assert float(est.stderr.max()) < 1e-6
    elbo, se = _mean_elbo(model, x)
    assert_allclose(elbo, log_p, atol=float(5 * se.max()))


def test_evaluate_2d_scores_a_vae_by_its_estimate_against_the_exact_density():
    # The PPCA marginal as the "mixture": with the exact posterior as encoder the
    # IWAE estimate is log p, so the KL is 0; a wrong encoder gives a positive one.
    w, mu = _ppca()
    ppca = sf.GaussianMixture(jnp.ones(1), mu[None], (w @ w.T + NOISE * jnp.eye(D))[None])
    opts = dict(num_samples=200, num_eval=300, num_permutations=20, key=jr.key(4))
    opts["log_prob_options"] = {"num_samples": 50}
    exact = evaluation.evaluate_2d(_vae(_posterior(w, mu), LinearDecoder(w, mu)), ppca, **opts)
    assert exact.likelihood == "bound (IWAE-50 estimate)"
    assert abs(exact.kl) < 1e-9 and exact.modes_captured == 1
    e = _posterior(w, mu)
    wrong = _vae(LinearEncoder(e.a * 0.7, e.b + 0.3, e.log_var + 0.5), LinearDecoder(w, mu))
    assert evaluation.evaluate_2d(wrong, ppca, **opts).kl > 1e-3


def test_iwae_bound_increases_with_k_towards_log_p():
    # Burda et al. 2016, Theorem 1: L_1 <= L_5 <= L_50 <= ... <= log p(x), with a proposal
    # that is wider and shifted from the posterior.
    w, mu = _ppca()
    exact = _posterior(w, mu)
    model = _vae(LinearEncoder(exact.a, exact.b + 0.4, exact.log_var + 1.0), LinearDecoder(w, mu))
    x = _data(128)
    log_p = float(jnp.mean(_exact(w, mu, x)))

    # One key and chunks of 5 for every K: the K = 50 draws start with the K = 5 ones (common
    # random numbers), so the differences are not lost in the estimates' noise.
    @eqx.filter_jit
    def bounds(m, x):
        iwae = {
            k: jnp.mean(m.elbo(x, num_samples=k, chunk_size=5, key=jr.key(7))) for k in (5, 50, 500)
        }
        return iwae, m.log_prob_estimate(x, key=jr.key(9))  # K = 5000

    iwae, est = bounds(model, x)
    bound = {k: float(v) for k, v in iwae.items()}
    bound[1] = float(jnp.mean(_mean_elbo(model, x, num_keys=200)[0]))
    # Beyond K = 50 this proposal's bound has converged to within the estimates' noise.
    assert bound[1] < bound[5] < bound[50] < bound[500] + 0.01, bound
    assert bound[50] < log_p
    assert log_p - bound[1] > 0.3
    assert abs(float(jnp.mean(est.value)) - log_p) < 0.02
    assert float(jnp.mean(est.stderr)) < 0.05  # per example


def test_iwae_gradient_is_the_normalised_weights_estimator():
    # d/dtheta log mean_k w_k = sum_k w~_k d log w_k: autodiff of the log-mean-exp is
    # Burda et al.'s estimator (eq. 14); treating the weights as constants is not.
    model = models.VAE(
        (2,),
        2,
        head=nn.Gaussian(learn_variance=True),
        width=8,
        depth=1,
        num_samples=4,
        key=jr.key(0),
    )
    x = sf.data.ring_mixture().sample(5, key=jr.key(1)) / 4
    key = jr.key(2)

    def log_weights(m):
        xe, xh, _ = m._prepare(x)
        return jax.vmap(lambda k: m._log_weights(xe, xh, k))(jr.split(key, 4))

    def surrogate(m):
        lw = log_weights(m)
        return -jnp.sum(jax.lax.stop_gradient(jax.nn.softmax(lw, axis=0)) * lw) / x.shape[0]

    def naive(m):
        return -jnp.mean(log_weights(m))

    @eqx.filter_jit
    def grads(m):
        return (
            eqx.filter_grad(lambda m: m.loss(x, key=key))(m),
            eqx.filter_grad(surrogate)(m),
            eqx.filter_grad(naive)(m),
            m.loss(x, key=key),
            -jnp.mean(jax.nn.logsumexp(log_weights(m), axis=0) - jnp.log(4.0)),
        )

    g, want, wrong, loss, iwae = grads(model)
    leaves = lambda t: jnp.concatenate(
        [v.ravel() for v in jax.tree_util.tree_leaves(eqx.filter(t, eqx.is_inexact_array))]
    )
    assert_allclose(leaves(g), leaves(want), rtol=1e-9, atol=1e-12)
    assert not np.allclose(leaves(g), leaves(wrong), rtol=1e-3)
    assert_allclose(loss, iwae, rtol=1e-12)


@pytest.mark.slow  # about 10 s: 1500 optimiser steps
def test_linear_vae_trained_on_ppca_data_reaches_the_ppca_maximum_likelihood():
    # Tipping & Bishop's ML solution: sigma^2 the mean of the discarded eigenvalues of the
    # sample covariance, W = U (Lambda - sigma^2)^(1/2). At the ELBO's optimum a linear VAE
    # with a diagonal encoder recovers it (the ELBO is tight there; Lucas et al. 2019).
    x = _data(2000, key=jr.key(11))
    xc = np.asarray(x) - np.asarray(x).mean(0)
    lam, u = np.linalg.eigh(xc.T @ xc / x.shape[0])
    lam, u = lam[::-1], u[:, ::-1]
    s2 = lam[Z:].mean()
    w_ml = u[:, :Z] * np.sqrt(lam[:Z] - s2)
    ml = float(jnp.mean(_mvn_logpdf(x, x.mean(0), jnp.asarray(w_ml @ w_ml.T + s2 * np.eye(D)))))
    head = nn.Gaussian(learn_variance=True)
    k1, k2 = jr.split(jr.key(12))
    enc = LinearEncoder(0.1 * jr.normal(k1, (Z, D)), jnp.zeros(Z), jnp.zeros(Z))
    dec = LinearDecoder(0.1 * jr.normal(k2, (D, Z)), jnp.zeros(D), jnp.asarray(0.0))
    model = _vae(enc, dec, head=head)
    res = train.fit(
        model,
        x,
        num_steps=1500,
        batch_size=500,
        optimizer=optax.adam(2e-2),
        ema_decay=None,
        progress=False,
        key=jr.key(13),
    )
    m = res.model
    lo, hi = head.log_variance_bounds
    var = float(np.exp(lo + (hi - lo) * jax.nn.sigmoid(m.decoder.raw)))
    cov = m.decoder.w @ m.decoder.w.T + var * jnp.eye(D)
    fitted = float(jnp.mean(_mvn_logpdf(x, m.decoder.mu, cov)))
    elbo = float(jnp.mean(_mean_elbo(m, x[:200], num_keys=200)[0]))
    exact_200 = float(jnp.mean(_mvn_logpdf(x[:200], m.decoder.mu, cov)))
    # Stated tolerance: 0.01 nats per example of the ML log-likelihood, and an ELBO within
    # 0.02 nats of the fitted model's exact log-likelihood (the bound is tight).
    assert fitted <= ml + 1e-6
    assert ml - fitted < 0.01, (ml, fitted)
    assert abs(exact_200 - elbo) < 0.02, (exact_200, elbo)
    assert_allclose(var, s2, rtol=0.05)


# Decoders, data and bad input.


def _digits_vae(head, **kw):
    return models.VAE((1, 8, 8), 3, head=head, width=16, depth=1, key=jr.key(0), **kw)


@pytest.mark.parametrize(
    "head",
    [nn.Categorical(17), nn.DiscretisedLogisticMixture(17, 2)],
    ids=["categorical", "logistic_mixture"],
)
def test_discrete_decoders_score_levels_and_bin_densities_alike(head):
    # Integer levels are scored as a probability mass; their bin centres (or any point of
    # the bin) as the piecewise-constant density P / w^D on [-1, 1]; the protocol's
    # bits/dim turns that back into exactly -log2 P / D.
    model = _digits_vae(head)
    raw = sf.data.digits_raw("test")[:4].reshape(4, 1, 8, 8)
    centres = sf.metrics.bin_centres(raw, levels=17)
    inside = centres + 0.4 * (2 / 17) * (jr.uniform(jr.key(1), centres.shape) - 0.5)
    elbo = eqx.filter_jit(lambda m, x: m.elbo(x, key=jr.key(2)))
    mass = elbo(model, raw)
    log_w = 64 * np.log(2 / 17)
    assert bool(jnp.all(mass < 0))
    assert_allclose(elbo(model, centres), mass - log_w, rtol=1e-12)
    assert_allclose(elbo(model, inside), mass - log_w, rtol=1e-12)
    bpd = sf.metrics.bits_per_dim(
        lambda y, *, key: elbo(model, y.reshape(-1, 1, 8, 8)),
        raw.reshape(4, -1),
        levels=17,
        key=jr.key(3),
    ).bits_per_dim
    assert_allclose(bpd, -mass / (64 * np.log(2)), rtol=1e-10)
    s = eqx.filter_jit(lambda m: m.sample(5, key=jr.key(4)))(model)
    assert s.shape == (5, 1, 8, 8)
    assert_allclose(evaluation.quantise(s), s, atol=1e-12)  # bin centres


def test_bad_data_and_sizes_are_refused():
    binary = _digits_vae(nn.Bernoulli())
    with pytest.raises(ValueError, match="`x`.*binary"):
        binary.loss(jnp.full((2, 1, 8, 8), 0.5), key=jr.key(0))
    eqx.filter_jit(lambda m, x: m.loss(x, key=jr.key(0)))(binary, jnp.ones((2, 1, 8, 8)))
    cat = _digits_vae(nn.Categorical(17))
    with pytest.raises(ValueError, match="`x`.*levels"):
        cat.elbo(jnp.full((2, 1, 8, 8), 17), key=jr.key(0))
    with pytest.raises(ValueError, match="`x`.*data_range"):
        cat.elbo(jnp.full((2, 1, 8, 8), 1.5), key=jr.key(0))
    with pytest.raises(ValueError, match="`num_samples`"):
        cat.elbo(jnp.zeros((2, 1, 8, 8)), num_samples=0, key=jr.key(0))
    with pytest.raises(ValueError, match="`num_samples`"):
        _digits_vae(nn.Bernoulli(), num_samples=0)
    w, mu = _ppca()
    with pytest.raises(ValueError, match="`latent_dim`"):
        models.VAE(
            (D,),
            3,
            head=nn.Gaussian(),
            encoder=_posterior(w, mu),
            decoder=LinearDecoder(w, mu),
            key=jr.key(0),
        )
    with pytest.raises(ValueError, match="`decoder`"):
        models.VAE(
            (D,),
            Z,
            head=nn.Gaussian(learn_variance=True),
            encoder=_posterior(w, mu),
            decoder=LinearDecoder(w, mu),
            key=jr.key(0),
        )


# The hierarchical VAE.


def _hvae(**kw):
    options = dict(head=nn.Gaussian(learn_variance=True), width=16, depth=1, key=jr.key(0))
    return models.HierarchicalVAE((2,), (2, 2), **(options | kw))


@pytest.mark.parametrize("inference", ["top-down", "residual", "bottom-up"])
def test_hierarchical_bounds_are_ordered(inference):
    # E[ELBO] <= E[L_K] (the same model's bounds), each a finite bound per example.
    model = _hvae(inference=inference)
    x = sf.data.ring_mixture().sample(16, key=jr.key(1)) / 4
    elbo, se = _mean_elbo(model, x, num_keys=200)
    est, s = eqx.filter_jit(
        lambda m, x: (
            m.log_prob_estimate(x, num_samples=500, chunk_size=500, key=jr.key(2)),
            m.sample((2, 3), key=jr.key(3)),
        )
    )(model, x)
    assert bool(jnp.all(jnp.isfinite(est.value)))
    assert float(jnp.mean(est.value - elbo)) > 0
    assert bool(jnp.all(est.value - elbo > -5 * se - 3 * est.stderr))
    assert s.shape == (2, 3, 2)


def test_residual_posterior_is_the_prior_when_its_offsets_vanish():
    # NVAE's residual Normal: q(z_1 | x, z_2) = p(z_1 | z_2) when the offsets are 0, so
    # the lower layer's KL is 0 and only the top layer's remains.
    model = _hvae(inference="residual")
    zero = lambda m: jax.tree_util.tree_map(jnp.zeros_like, m)
    model = eqx.tree_at(lambda m: m.posterior[0], model, zero(model.posterior[0]))
    x = sf.data.ring_mixture().sample(8, key=jr.key(1)) / 4
    _, kls, ratios = eqx.filter_jit(lambda m, x: m._passes(*m._prepare(x)[:2], jr.key(2)))(model, x)
    assert_allclose(kls[:, 0], 0.0, atol=1e-12)
    assert_allclose(ratios[:, 0], 0.0, atol=1e-10)
    assert bool(jnp.all(kls[:, 1] > 0))


@pytest.mark.parametrize("inference", ["top-down", "residual"])
def test_zero_init_starts_as_a_one_layer_vae(inference):
    # With zero_init the bottom layer's terms (log p(x | z_1) and z_1's KL) do not depend
    # on the top layer's posterior at all, and p(z_1 | z_2) is N(0, I); without it they do.
    x = sf.data.ring_mixture().sample(8, key=jr.key(1)) / 4

    @eqx.filter_jit
    def bottom(m):
        log_px, kls, _ = m._passes(*m._prepare(x)[:2], jr.key(2))
        return log_px - kls[:, 0]

    def moved_top(m):
        top = m.posterior[-1]
        return eqx.tree_at(lambda m: m.posterior[-1].bias, m, top.bias + 3.0)

    for zero_init in (True, False):
        model = _hvae(inference=inference, zero_init=zero_init)
        change = np.max(np.abs(np.asarray(bottom(model) - bottom(moved_top(model)))))
        if zero_init:
            assert change == 0.0
            mu, lv = model._prior(0, jnp.array([1.5, -2.0]))
            assert_allclose(mu, 0.0, atol=0)
            assert_allclose(lv, 0.0, atol=0)
        else:
            assert change > 1e-3


def test_warm_up_free_bits_and_skipped_updates():
    x = sf.data.ring_mixture().sample(32, key=jr.key(1)) / 4
    key = jr.key(2)
    plain, warm, free = _hvae(), _hvae(warmup_steps=10), _hvae(free_bits=2.0)

    @eqx.filter_jit
    def values(plain, warm, free, state):
        log_px, kls, _ = plain._passes(*plain._prepare(x)[:2], key)
        return (
            log_px,
            kls,
            warm.stateful_loss(x, state, key=key),
            warm.stateful_loss(x, jnp.asarray(5, jnp.int32), key=key)[0],
            warm.loss(x, key=key),
            free.loss(x, key=key),
        )

    log_px, kls, (value, new), value5, warm_loss, free_loss = values(
        plain, warm, free, warm.init_state(key=jr.key(0))
    )
    recon = -float(jnp.mean(log_px))
    kl = np.asarray(jnp.mean(kls, 0))
    assert int(new) == 1
    assert_allclose(value, recon, rtol=1e-12)  # beta = 0 at step 0
    assert_allclose(value5, recon + 0.5 * kl.sum(), rtol=1e-10)
    assert_allclose(warm_loss, recon + kl.sum(), rtol=1e-10)
    assert_allclose(free_loss, recon + np.maximum(kl, 2.0).sum(), rtol=1e-10)
    # fit carries the warm-up step as the model's state; a threshold no gradient is
    # under skips every update and leaves the parameters and the inner state alone.
    opt = train.skip_large_updates(train.default_optimizer(1e-2), max_norm=1e-12)
    res = train.fit(
        warm,
        x,
        num_steps=6,
        batch_size=8,
        optimizer=opt,
        ema_decay=None,
        steps_per_chunk=6,
        progress=False,
        key=jr.key(3),
    )
    assert int(res.state.model_state) == 6
    assert int(res.state.opt_state.num_skipped) == 6
    assert bool(eqx.tree_equal(eqx.filter(res.model, eqx.is_array), eqx.filter(warm, eqx.is_array)))


def test_skip_large_updates_skips_non_finite_gradients():
    params = {"w": jnp.ones(3)}
    opt = train.skip_large_updates(optax.sgd(0.1), max_norm=10.0)
    state = opt.init(params)
    up, state = opt.update({"w": jnp.asarray([1.0, jnp.nan, 0.0])}, state, params)
    assert_allclose(up["w"], 0.0)
    up, state = opt.update({"w": jnp.asarray([1.0, 2.0, 2.0])}, state, params)
    assert_allclose(up["w"], [-0.1, -0.2, -0.2])
    up, state = opt.update({"w": jnp.asarray([100.0, 0.0, 0.0])}, state, params)
    assert_allclose(up["w"], 0.0)
    assert int(state.num_skipped) == 2
    with pytest.raises(ValueError, match="`max_norm`"):
        train.skip_large_updates(optax.sgd(0.1), max_norm=0.0)


@pytest.mark.slow  # the protocol's sample metrics: tens of seconds on the shared machine
def test_the_digits_protocol_labels_the_importance_estimate_a_bound():
    # The IWAE-K estimate is reported as a bound (its expectation is one), marked "≤".
    model = _digits_vae(nn.Categorical(17))
    report = evaluation.evaluate_digits(
        model,
        num_samples=130,
        num_test=4,
        log_prob_options={"num_samples": 20},
        key=jr.key(0),
    )
    assert report.likelihood == "bound (IWAE-20 estimate)"
    assert "≤ " in evaluation.digits_table([report])
    assert report.bits_per_dim is not None and 0 < report.bits_per_dim < 4.09 + 1.0
