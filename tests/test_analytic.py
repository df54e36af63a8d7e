import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

import scoreflow as sf

from .helpers import SDES, case_a, case_b, full_cov_mixture

MIXTURES = {"case_a": case_a, "case_b": case_b, "full": full_cov_mixture}


@pytest.mark.parametrize("mix_name", MIXTURES)
@pytest.mark.parametrize("sde_name", SDES)
@settings(max_examples=10)
@given(u=st.floats(0.0, 1.0), seed=st.integers(0, 2**16))
def test_score_is_grad_log_prob(mix_name, sde_name, u, seed):
    sde = SDES[sde_name]()
    target = MIXTURES[mix_name]().noised(sde)
    t = jnp.asarray(sde.t_min + u * (sde.T - sde.t_min))
    score, grad, denoise, tweedie, alpha = _score_quantities(target, t, jax.random.key(seed))
    assert_allclose(score, grad, rtol=1e-8, atol=1e-10)
    assert_allclose(denoise, tweedie, rtol=1e-6, atol=1e-6 * float(1 / alpha))


@eqx.filter_jit
def _score_quantities(target, t, key):
    x = target.sample(t, 3, key=key)
    grad = jax.vmap(jax.grad(lambda y: target.log_prob(t, y)))(x)
    score = target.score(t, x)
    # Tweedie: E[x0 | x_t] = (x + sigma^2 score) / alpha.
    alpha, sigma = target.sde.marginal(t)
    tweedie = (x + sigma**2 * score) / alpha
    return score, grad, target.denoise(t, x), tweedie, alpha


@pytest.mark.parametrize("mix_name", MIXTURES)
def test_log_prob_at_zero_is_the_data_density(mix_name):
    mix = MIXTURES[mix_name]()
    sde = sf.VESDE()
    x = mix.sample(5, key=jax.random.key(0))
    # sigma_t -> 0 as t -> 0 for the VE kernel sigma^2 = sigma_min^2 (r^{2t} - 1).
    assert_allclose(mix.noised(sde).log_prob(0.0, x), mix.log_prob(x), rtol=1e-12)
    # Against a direct computation with scipy's multivariate normal.
    from scipy.stats import multivariate_normal

    covs = np.asarray(mix.full_covariances())
    dens = sum(
        float(w) * multivariate_normal(np.asarray(m), c).pdf(np.asarray(x))
        for w, m, c in zip(mix.weights, mix.means, covs)
    )
    assert_allclose(mix.log_prob(x), np.log(dens), rtol=1e-10)


def test_sample_moments(getkey):
    mix = full_cov_mixture()
    x = mix.sample(200000, key=getkey())
    assert_allclose(x.mean(0), mix.mean(), atol=0.03)
    assert_allclose(jnp.cov(x.T), mix.covariance(), atol=0.1)


def test_noisy_sample_moments(getkey):
    mix = case_a()
    sde = sf.VPSDE()
    t = 0.4
    x = mix.noised(sde).sample(t, 200000, key=getkey())
    alpha, sigma = sde.marginal(t)
    expected = alpha**2 * mix.covariance() + sigma**2 * jnp.eye(2)
    assert_allclose(jnp.cov(x.T), expected, rtol=0.02, atol=0.02)


def test_gaussian_is_closed_form():
    g = sf.Gaussian(jnp.asarray([1.0, -2.0]), jnp.asarray([[2.0, 0.5], [0.5, 1.0]]))
    sde = sf.VPSDE()
    t = 0.3
    alpha, sigma = sde.marginal(t)
    cov = alpha**2 * g.covariance() + sigma**2 * jnp.eye(2)
    x = jnp.asarray([0.1, 0.7])
    expected = -jnp.linalg.solve(cov, x - alpha * g.mean)
    assert_allclose(g.noised(sde).score(t, x), expected, rtol=1e-10)


@pytest.mark.parametrize(
    "args, name",
    [
        (([0.5, 0.5], [[0.0], [1.0]], [[1.0], [-1.0]]), "covariances"),
        (([0.5, 0.6], [[0.0], [1.0]], [[1.0], [1.0]]), "weights"),
        (([0.5, 0.5], [[0.0, 1.0]], [[1.0], [1.0]]), "means"),
        (([0.5, 0.5], [[0.0], [1.0]], [[1.0, 2.0, 3.0]]), "covariances"),
        (([[1.0]], [[0.0]], [[1.0]]), "weights"),
    ],
)
def test_bad_mixture(args, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        sf.GaussianMixture(*[jnp.asarray(a) for a in args])


def test_bad_event_shape():
    with pytest.raises(ValueError, match="`x` must have shape"):
        case_a().log_prob(jnp.zeros((4, 3)))


def _awkward_full_mixture():
    # Every eigenvalue of a component repeated (a multiple of I), a rotated component
    # with a repeated pair, and a nearly singular one (condition number 1e6).
    rng = np.random.default_rng(11)
    d = 5
    rot = np.linalg.qr(rng.normal(size=(d, d)))[0]
    covs = np.stack(
        [
            0.7 * np.eye(d),
            (rot * np.array([0.4, 0.4, 1.0, 2.0, 2.0])) @ rot.T,
            (rot[::-1] * np.array([2e-6, 0.3, 0.8, 1.1, 2.0])) @ rot[::-1].T,
        ]
    )
    covs = 0.5 * (covs + np.swapaxes(covs, -1, -2))
    means = rng.normal(0, 2, size=(3, d))
    return sf.GaussianMixture(jnp.asarray([0.2, 0.3, 0.5]), jnp.asarray(means), jnp.asarray(covs))


def _dense_reference(mix, alpha, sigma, x):
    # log p_t, score and E[x0 | x_t] by dense solves in NumPy float64.
    w, mu, cov = (np.asarray(a) for a in (mix.weights, mix.means, mix.covariances))
    x = np.asarray(x)
    d = mu.shape[1]
    logs, precs, posts = [], [], []
    for k in range(len(w)):
        c = alpha**2 * cov[k] + sigma**2 * np.eye(d)
        r = x - alpha * mu[k]
        p = np.linalg.solve(c, r.T).T
        logdet = np.linalg.slogdet(c)[1]
        logs.append(np.log(w[k]) - 0.5 * (np.sum(r * p, -1) + logdet + d * np.log(2 * np.pi)))
        precs.append(p)
        posts.append(mu[k] + alpha * p @ cov[k])
    from scipy.special import logsumexp, softmax

    joint = np.stack(logs, -1)
    resp = softmax(joint, -1)
    score = -np.einsum("nk,knd->nd", resp, np.stack(precs))
    return logsumexp(joint, -1), score, np.einsum("nk,knd->nd", resp, np.stack(posts))


@pytest.mark.parametrize("sde_name", ["vp", "edm"])
@pytest.mark.parametrize("u", [0.0, 1e-3, 0.1, 0.5, 1.0])
def test_full_covariance_matches_dense_solves(sde_name, u):
    # The eigendecomposed noisy model against direct dense solves (issue 19).
    mix = _awkward_full_mixture()
    sde = SDES[sde_name]()
    model = mix.noised(sde)
    t = sde.t_min + u * (sde.T - sde.t_min)
    alpha, sigma = (float(v) for v in sde.marginal(t))
    x = jnp.concatenate([model.sample(t, 6, key=jax.random.key(3)), 3 * jnp.ones((1, mix.dim))], 0)
    log_p, score, x0 = _dense_reference(mix, alpha, sigma, x)
    assert_allclose(model.log_prob(t, x), log_p, rtol=1e-10, atol=1e-10)
    scale = np.max(np.abs(score))
    assert_allclose(model.score(t, x), score, rtol=1e-9, atol=1e-10 * scale)
    assert_allclose(model.denoise(t, x), x0, rtol=1e-9, atol=1e-10)


def test_full_covariance_gradients():
    # W.r.t. the covariances (repeated eigenvalues included, where `eigh` has no
    # derivative) the noisy model's gradient is the Cholesky path's; w.r.t. time and
    # state, second derivatives too.
    from scoreflow.analytic._mixture import _Noisy

    mix = _awkward_full_mixture()
    sde = sf.EDMSDE()
    x = mix.noised(sde).sample(0.5, 4, key=jax.random.key(0))

    def loss(cov, t, y, cached):
        m = sf.GaussianMixture(mix.weights, mix.means, cov)
        if cached:
            noisy = m.noised(sde)._at(t)
        else:
            noisy = _Noisy(m, *sde.marginal(t))
        return jnp.sum(noisy.log_prob(y)) + jnp.sum(noisy.denoise(y) ** 2)

    # Jitted: op by op, the Hessians take seconds.
    for argnums in (0, 1):
        grad = jax.jit(jax.grad(loss, argnums), static_argnums=3)
        new = grad(mix.covariances, 0.5, x, True)
        old = grad(mix.covariances, 0.5, x, False)
        assert np.all(np.isfinite(new))
        assert_allclose(new, old, rtol=1e-9, atol=1e-9 * float(np.max(np.abs(old))))
    hessian = jax.jit(jax.hessian(loss, (1, 2)), static_argnums=3)
    hess = [hessian(mix.covariances, 0.5, x[0], c) for c in (True, False)]
    for new, old in zip(jax.tree.leaves(hess[0]), jax.tree.leaves(hess[1])):
        assert_allclose(new, old, rtol=1e-8, atol=1e-9 * float(np.max(np.abs(old))))


def _diagonal_mixture():
    rng = np.random.default_rng(12)
    k, d = 4, 6
    var = rng.uniform(0.05, 2.0, (k, d)) ** 2
    return sf.GaussianMixture(
        jnp.asarray(rng.dirichlet(np.ones(k))),
        jnp.asarray(rng.normal(0, 3, (k, d))),
        jnp.asarray(var),
    )


def _naive_diagonal(weights, means, var, alpha, sigma, y):
    # The textbook form for one draw, differentiated by JAX itself: the reference for
    # the contracted tangents of `_diagonal_mahalanobis`.
    v = alpha**2 * var + sigma**2
    r = y[None, :] - alpha * means
    joint = jnp.log(weights) - 0.5 * jnp.sum(r**2 / v + jnp.log(2 * jnp.pi * v), -1)
    post = means + alpha * var * r / v
    return jax.nn.logsumexp(joint), jax.nn.softmax(joint) @ post


@pytest.mark.parametrize("u", [0.0, 0.1, 1.0])
def test_diagonal_mixture_matches_dense_solves_and_its_derivatives(u):
    # Values against dense solves; first and second derivatives in time, state, means
    # and variances against JAX's own derivatives of the textbook form.
    mix = _diagonal_mixture()
    sde = sf.EDMSDE()
    t = sde.t_min + u * (sde.T - sde.t_min)
    alpha, sigma = (float(v) for v in sde.marginal(t))
    x = mix.noised(sde).sample(t, 5, key=jax.random.key(4))
    dense = sf.GaussianMixture(mix.weights, mix.means, jax.vmap(jnp.diag)(mix.covariances))
    log_p, score, x0 = _dense_reference(dense, alpha, sigma, x)
    model = mix.noised(sde, "x0")
    assert_allclose(model.log_prob(t, x), log_p, rtol=1e-11, atol=1e-11)
    assert_allclose(model.denoise(t, x), x0, rtol=1e-11, atol=1e-11)
    assert_allclose(
        mix.noised(sde).score(t, x), score, rtol=1e-10, atol=1e-11 * np.abs(score).max()
    )

    def ours(means, var, t, y):
        noisy = sf.GaussianMixture(mix.weights, means, var).noised(sde, "x0")
        return jnp.sum(noisy.log_prob(t, y)) + jnp.sum(jnp.sin(noisy(t, y)))

    def naive(means, var, t, y):
        one = lambda yi: _naive_diagonal(mix.weights, means, var, *sde.marginal(t), yi)  # noqa: E731
        lp, x0 = jax.vmap(one)(y) if y.ndim == 2 else one(y)
        return jnp.sum(lp) + jnp.sum(jnp.sin(x0))

    args = (mix.means, mix.covariances, jnp.asarray(t), x)
    check = jax.jit(
        lambda *a: [
            (jax.grad(f, (0, 1, 2, 3))(*a), jax.hessian(f, (2, 3))(*a[:3], a[3][0]))
            for f in (ours, naive)
        ]
    )
    got, want = check(*args)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert_allclose(g, w, rtol=1e-9, atol=1e-10 * (1 + float(np.max(np.abs(w)))))


def test_full_covariance_evaluations_call_no_lapack():
    # The Cholesky and triangular solves of a full-covariance mixture were LAPACK
    # custom calls inside every solve; concurrent ones deadlocked XLA:CPU (issue 19).
    mix = _awkward_full_mixture()
    sde = sf.EDMSDE()
    x = jnp.ones((8, mix.dim))
    classes = sf.analytic.ClassMixture(mix, [0, 1, 1])
    models = [mix.noised(sde, p) for p in ("score", "x0", "eps", "v")]
    models.append(classes.noised(sde, "x0"))
    for model in models:
        texts = [
            jax.jit(lambda t, y, m=model: m(t, y)).lower(0.5, x).as_text(),
            jax.jit(jax.grad(lambda t, y, m=model: jnp.sum(m(t, y) ** 2), (0, 1)))
            .lower(0.5, x)
            .as_text(),
        ]
        for text in texts:
            assert "lapack" not in text and "custom_call" not in text
    noisy, classifier = mix.noised(sde, "x0"), classes.classifier(sde)
    solver, grid = sf.solve.ExponentialAdamsPC(3), sf.solve.KarrasGrid(5)

    def sample(y):
        return sf.solve.solve_probability_flow(sde, noisy, y, solver=solver, grid=grid).samples

    texts = [
        jax.jit(lambda t, y: noisy.log_prob(t, y)).lower(0.5, x).as_text(),
        jax.jit(lambda t, y: classifier(t, y)).lower(0.5, x).as_text(),
    ]
    for text in texts:
        assert "lapack" not in text and "custom_call" not in text
    # A solve has custom calls of its own (diffrax's error check), none to LAPACK.
    assert "lapack" not in jax.jit(sample).lower(x).as_text()
    # The full-covariance case is the one checked: the reference path does call LAPACK.
    from scoreflow.analytic._mixture import _Noisy

    ref = jax.jit(lambda y: _Noisy(mix, 0.5, 0.3).denoise(y)).lower(x).as_text()
    assert "lapack" in ref
