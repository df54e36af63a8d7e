"""Gaussian mixtures fitted by EM: against scikit-learn, EM's monotonicity, exactness.

Every EM fit here has the same shapes (60 points in 2-d, 3 components, 50 iterations) and
explicit initial values, so each covariance type compiles once for the whole file.
"""

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

import scoreflow as sf
from scoreflow import models

TYPES = ("full", "diag", "tied", "spherical")
N, D, K, MAX_ITER = 60, 2, 3, 50


def _blobs(seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [3.0, 1.0], [-1.0, 3.5]])
    scales = np.array([[0.6, 0.3], [0.4, 0.8], [0.5, 0.5]])
    return np.concatenate([c + s * rng.normal(size=(N // 3, D)) for c, s in zip(centres, scales)])


def _random_init(rng, x, covariance_type):
    weights = rng.dirichlet(2 * np.ones(K))
    means = x[rng.choice(len(x), K, replace=False)] + 0.1 * rng.normal(size=(K, D))
    if covariance_type in ("full", "tied"):
        shape = (K, D, D) if covariance_type == "full" else (D, D)
        a = rng.normal(size=shape)
        precisions = a @ np.swapaxes(a, -1, -2) + 0.5 * np.eye(D)
    else:
        precisions = rng.uniform(0.3, 3.0, (K, D) if covariance_type == "diag" else (K,))
    return weights, means, precisions


def _fit_both(x, covariance_type, init, tol=1e-6, reg_covar=1e-6):
    weights, means, precisions = init
    ours = models.fit_gmm(
        jnp.asarray(x),
        K,
        covariance_type=covariance_type,
        max_iter=MAX_ITER,
        tol=tol,
        reg_covar=reg_covar,
        weights_init=weights,
        means_init=means,
        precisions_init=precisions,
    )
    theirs = GaussianMixture(
        K,
        covariance_type=covariance_type,
        max_iter=MAX_ITER,
        tol=tol,
        reg_covar=reg_covar,
        weights_init=weights,
        means_init=means,
        precisions_init=precisions,
    )
    with warnings.catch_warnings():  # scikit-learn warns when it stops at max_iter
        warnings.simplefilter("ignore", ConvergenceWarning)
        theirs.fit(x)
    return ours, theirs


@eqx.filter_jit  # one program per covariance type: eager dispatch costs more here
def _answers(model, x):
    flat = model.mixture.log_prob(x.reshape(x.shape[0], -1))
    x = x.reshape(x.shape[0], *model.event_shape)
    return dict(
        weights=model.weights,
        means=model.means,
        covariances=model.covariances,
        precisions=model.precisions,
        precisions_cholesky=model.precisions_cholesky,
        log_prob=model.log_prob(x),
        predict_proba=model.predict_proba(x),
        predict=model.predict(x),
        bic=model.bic(x),
        aic=model.aic(x),
        mixture_log_prob=flat,
    )


@pytest.mark.parametrize("covariance_type", TYPES)
@given(
    seed=st.integers(0, 2**32 - 1),
    clusters=st.integers(1, 4),
    scale=st.floats(0.1, 2.0),
    spread=st.floats(0.0, 5.0),
)
def test_log_likelihood_never_decreases(covariance_type, seed, clusters, scale, spread):
    # Random data (1-4 blobs, any spread and scale) and random initial values.
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-spread, spread, (clusters, D))
    noise = scale * rng.uniform(0.2, 1.0, D)[None, :] * rng.normal(size=(N, D))
    x = centres[rng.integers(0, clusters, N)] + noise
    init = _random_init(rng, x, covariance_type)
    res = models.fit_gmm(
        jnp.asarray(x),
        K,
        covariance_type=covariance_type,
        max_iter=MAX_ITER,
        tol=1e-6,
        reg_covar=1e-9,
        weights_init=init[0],
        means_init=init[1],
        precisions_init=init[2],
    )
    n = int(res.num_iterations)
    h = np.asarray(res.history)
    assert 1 <= n <= MAX_ITER and np.all(np.isnan(h[n:]))
    h = h[:n]
    assert np.all(np.isfinite(h)) and h[-1] == float(res.log_likelihood)
    cov = np.asarray(res.model.covariances)
    assert np.all(np.isfinite(cov))
    # EM cannot lower the likelihood (Dempster et al. 1977, Theorem 1), but regularised
    # EM can where `reg_covar` binds (see the next test): the property is claimed
    # where no component has collapsed onto a point or a line.
    smallest = np.linalg.eigvalsh(cov).min() if covariance_type in ("full", "tied") else cov.min()
    assume(smallest > 1e-4)
    assert np.all(np.diff(h) >= -1e-10 * np.maximum(1.0, np.abs(h[1:]))), np.diff(h).min()


def test_regularised_em_can_lower_the_likelihood_as_scikit_learn_does():
    # 56 copies of one point and 4 others: a component collapses onto the copies, its
    # covariance is held at reg_covar, and from there the likelihood falls by 6e-4
    # over a few iterations, in scikit-learn exactly as here (found by the property
    # above, run with reg_covar = 1e-6 on unstructured data).
    points = np.array([[0, 0], [1, 0], [1, 1], [1, 16], [32, 1]]) / 16
    x = np.repeat(points, [1, 1, 56, 1, 1], axis=0)
    weights = np.array([0.23, 0.14, 0.63])
    means = np.array([[0.01, 0.16], [0.03, 0.03], [-0.02, 0.11]])
    precisions = np.array([[[0.81, 0.13], [0.13, 0.88]], [[2.0, 0.11], [0.11, 0.64]]])
    precisions = np.concatenate([precisions, [[[1.69, -1.76], [-1.76, 5.34]]]])
    ours, theirs = _fit_both(x, "full", (weights, means, precisions))
    h = np.asarray(ours.history)[: int(ours.num_iterations)]
    assert_allclose(h, theirs.lower_bounds_, rtol=0, atol=1e-9)
    assert np.diff(h).min() < -5e-4
    assert_allclose(np.linalg.eigvalsh(np.asarray(ours.model.covariances)).min(), 1e-6, rtol=1e-3)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_em_equals_scikit_learn_from_the_same_start(covariance_type):
    x = _blobs()
    init = _random_init(np.random.default_rng(1), x, covariance_type)
    ours, theirs = _fit_both(x, covariance_type, init)
    assert int(ours.num_iterations) == theirs.n_iter_ and bool(ours.converged) == theirs.converged_
    assert_allclose(float(ours.log_likelihood), theirs.lower_bound_, rtol=0, atol=1e-6)
    n = theirs.n_iter_
    assert_allclose(np.asarray(ours.history)[:n], theirs.lower_bounds_, rtol=0, atol=1e-6)
    a = _answers(ours.model, jnp.asarray(x))
    assert_allclose(a["weights"], np.asarray(theirs.weights_), rtol=1e-6, atol=1e-9)
    assert_allclose(a["means"], np.asarray(theirs.means_), rtol=1e-6, atol=1e-9)
    assert_allclose(a["covariances"], np.asarray(theirs.covariances_), rtol=1e-6, atol=1e-9)
    want = np.asarray(theirs.precisions_cholesky_)
    assert_allclose(a["precisions_cholesky"], want, rtol=1e-6, atol=1e-9)
    # The fitted model answers as scikit-learn's estimator does.
    assert_allclose(a["log_prob"], theirs.score_samples(x), rtol=1e-9)
    assert_allclose(a["predict_proba"], theirs.predict_proba(x), atol=1e-9)
    assert np.array_equal(np.asarray(a["predict"]), theirs.predict(x))
    assert ours.model.num_parameters == theirs._n_parameters()
    assert_allclose(float(a["bic"]), theirs.bic(x), rtol=1e-10)
    assert_allclose(float(a["aic"]), theirs.aic(x), rtol=1e-10)
    # Its analytic mixture is the same density.
    assert_allclose(a["mixture_log_prob"], a["log_prob"], rtol=1e-10)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_a_singular_component_is_regularised_as_scikit_learn_does(covariance_type):
    # A third of the points are one point repeated, away from the others; a component
    # that starts there collapses onto it, and reg_covar is what keeps it a Gaussian.
    x = _blobs(2)
    x[: N // 3] = [6.0, 6.0]
    weights, means, precisions = _random_init(np.random.default_rng(3), x, covariance_type)
    means[0] = [6.0, 6.0]
    ours, theirs = _fit_both(x, covariance_type, (weights, means, precisions), reg_covar=1e-4)
    assert np.isfinite(float(ours.log_likelihood))
    assert_allclose(float(ours.log_likelihood), theirs.lower_bound_, rtol=0, atol=1e-6)
    h = np.asarray(ours.history)[: int(ours.num_iterations)]
    assert_allclose(h, theirs.lower_bounds_, rtol=0, atol=1e-6)
    cov = np.asarray(ours.model.covariances)
    assert np.all(np.isfinite(cov))
    assert_allclose(cov, np.asarray(theirs.covariances_), rtol=1e-6, atol=1e-9)
    if covariance_type in ("full", "diag", "spherical"):
        # The collapsed component: exactly reg_covar on the diagonal, up to rounding.
        c0 = cov[0] if covariance_type != "full" else np.diagonal(cov[0])
        assert_allclose(c0, 1e-4, rtol=1e-6)


def test_kmeans_plus_plus_restarts_and_degenerate_data():
    x = jnp.asarray(_blobs(4))
    res = models.fit_gmm(x, K, max_iter=MAX_ITER, n_init=2, key=jr.key(0))
    assert bool(res.converged)
    # The three blobs are found: each fitted mean is near one true centre.
    centres = np.array([[0.0, 0.0], [3.0, 1.0], [-1.0, 3.5]])
    dist = np.linalg.norm(np.asarray(res.model.means)[:, None] - centres[None], axis=-1)
    assert sorted(np.argmin(dist, axis=1)) == [0, 1, 2] and dist.min(1).max() < 0.5
    # Two distinct points, repeated, and three components: finite, never NaN.
    twins = jnp.asarray(np.repeat(np.array([[0.0, 1.0], [2.0, -1.0]]), N // 2, axis=0))
    bad = models.fit_gmm(twins, K, max_iter=MAX_ITER, n_init=2, key=jr.key(2))
    assert np.isfinite(float(bad.log_likelihood))
    assert bool(jnp.all(jnp.isfinite(bad.model.covariances)))
    assert bool(jnp.all(jnp.isfinite(bad.model.log_prob(twins))))


@pytest.mark.slow  # one more compiled fit
def test_restarts_keep_the_best_run():
    # Restart i draws from fold_in(key, i), so the first of n runs is the run of n_init=1.
    x = jnp.asarray(_blobs(4))
    one = models.fit_gmm(x, K, max_iter=MAX_ITER, init="random", key=jr.key(0))
    five = models.fit_gmm(x, K, max_iter=MAX_ITER, init="random", n_init=5, key=jr.key(0))
    assert float(five.log_likelihood) >= float(one.log_likelihood) - 1e-12


def test_float32_fit_is_finite_and_close_to_float64():
    x = _blobs(5) + 100.0  # far from the origin: centring keeps float32 accurate
    init = _random_init(np.random.default_rng(6), x, "full")
    fit = lambda dtype: models.fit_gmm(
        jnp.asarray(x, dtype),
        K,
        max_iter=MAX_ITER,
        tol=1e-6,
        weights_init=np.asarray(init[0], dtype),
        means_init=np.asarray(init[1], dtype),
        precisions_init=np.asarray(init[2], dtype),
    )
    r32, r64 = fit(jnp.float32), fit(jnp.float64)
    assert r32.model.means.dtype == jnp.float32
    assert np.isfinite(float(r32.log_likelihood))
    assert_allclose(float(r32.log_likelihood), float(r64.log_likelihood), rtol=1e-4)


def test_the_fitted_mixture_is_an_exact_score_model():
    x = _blobs()
    init = _random_init(np.random.default_rng(1), x, "full")
    gmm = _fit_both(x, "full", init)[0].model
    sde = sf.VPSDE(t_min=1e-5)

    @eqx.filter_jit  # one program: eager dispatch of these small ops costs more
    def readings(gmm, pts, key):
        noisy = gmm.mixture.noised(sde)
        grad = jax.vmap(jax.grad(lambda p: gmm.log_prob(p[None])[0]))(pts)
        lp = (noisy.log_prob(sde.t_min, pts), gmm.log_prob(pts))
        moments = (gmm.mixture.mean(), gmm.mixture.covariance())
        return lp, (noisy(sde.t_min, pts), grad), gmm.sample(4000, key=key), moments

    (lp_t, lp), (score, grad), s, (mean, cov) = readings(gmm, jnp.asarray(x[:4]), jr.key(0))
    # At the time floor the noisy marginal is the fitted density, its score the gradient.
    assert_allclose(lp_t, lp, atol=1e-4)
    assert_allclose(score, grad, rtol=1e-3, atol=1e-3)
    # Its samples are the model's law (moments of 4000 draws).
    s = np.asarray(s)
    assert_allclose(s.mean(0), mean, atol=0.1)
    assert_allclose(np.cov(s.T), cov, atol=0.15)


@pytest.mark.slow  # a compiled likelihood solve and a compiled sampler
def test_the_fitted_mixture_through_the_probability_flow():
    x = _blobs()
    gmm = models.fit_gmm(jnp.asarray(x), K, key=jr.key(0)).model
    sde = sf.VPSDE(t_min=1e-5)
    noisy = gmm.mixture.noised(sde)
    pts = jnp.asarray(x[:2])
    # The probability-flow likelihood of p_{t_min}, with the exact p_T as its prior.
    prior = lambda z: noisy.log_prob(sde.T, z)
    ll = sf.solve.log_likelihood(sde, noisy, pts, prior_log_prob=prior, rtol=1e-6, atol=1e-6)
    assert_allclose(ll.log_prob, gmm.log_prob(pts), atol=1e-4)
    # Samples of the probability-flow ODE have the mixture's moments.
    s = np.asarray(sf.solve.sample(sde, noisy, (4000, D), key=jr.key(1)).samples)
    assert_allclose(s.mean(0), gmm.mixture.mean(), atol=0.1)
    assert_allclose(np.cov(s.T), gmm.mixture.covariance(), atol=0.15)


def test_every_covariance_type_is_one_analytic_mixture():
    x = jnp.asarray(_blobs())
    for covariance_type in TYPES:
        w, m, p = _random_init(np.random.default_rng(7), np.asarray(x), covariance_type)
        gmm = models.GMM(w, m, precisions=p, covariance_type=covariance_type)
        a = _answers(gmm, x)
        assert_allclose(a["precisions"], p, rtol=1e-10)
        assert_allclose(a["mixture_log_prob"], a["log_prob"], rtol=1e-10)
        again = models.GMM(w, m, a["covariances"], covariance_type=covariance_type)
        assert_allclose(_answers(again, x)["log_prob"], a["log_prob"], rtol=1e-10)
    # Events of any shape are flattened.
    w, m, p = _random_init(np.random.default_rng(8), np.asarray(x), "spherical")
    gmm = models.GMM(w, m, precisions=p, covariance_type="spherical", event_shape=(1, 2))
    assert gmm.sample((4, 5), key=jr.key(0)).shape == (4, 5, 1, 2)
    assert_allclose(gmm.log_prob(x.reshape(N, 1, 2)), _answers(gmm, x)["log_prob"], rtol=1e-12)


def test_blocked_products_equal_the_dense_ones():
    # The E- and M-step skip the known-zero and mirrored blocks of their products
    # (four blocks at 64 coordinates).
    from scoreflow.models._gmm import _full_mahalanobis, _full_second_moments

    rng = np.random.default_rng(0)
    x, means = rng.normal(size=(50, 64)), rng.normal(size=(3, 64))
    u = np.triu(rng.normal(size=(3, 64, 64)))
    resp = rng.dirichlet(np.ones(3), size=50)
    products = jax.jit(lambda *a: (_full_mahalanobis(*a[:3]), _full_second_moments(a[0], a[3])))
    maha, second = products(*map(jnp.asarray, (x, means, u, resp)))
    y = np.einsum("nd,kde->nke", x, u) - np.einsum("kd,kde->ke", means, u)[None]
    assert_allclose(maha, np.sum(y * y, -1), rtol=1e-12)
    assert_allclose(second, np.einsum("nk,nd,ne->kde", resp, x, x), rtol=1e-12)


def test_bad_input_names_the_argument():
    x = jnp.asarray(_blobs())

    def fit(data: jax.Array = x, **kw):
        return models.fit_gmm(data, kw.pop("k", K), key=jr.key(0), **kw)

    with pytest.raises(ValueError, match="`num_components`"):
        fit(k=N + 1)
    with pytest.raises(ValueError, match="`num_components`"):
        fit(k=0)
    with pytest.raises(ValueError, match="`covariance_type`"):
        fit(covariance_type="banded")
    with pytest.raises(ValueError, match="`x`"):
        fit(x.at[3, 1].set(jnp.nan))
    with pytest.raises(ValueError, match="`x`"):
        fit(x.at[0, 0].set(jnp.inf))
    with pytest.raises(ValueError, match="`x`"):
        fit(x[0])
    for name in ("reg_covar", "tol"):
        with pytest.raises(ValueError, match=f"`{name}`"):
            fit(x, **{name: 0.0})
        with pytest.raises(ValueError, match=f"`{name}`"):
            fit(x, **{name: -1e-3})
    for name in ("max_iter", "n_init"):
        with pytest.raises(ValueError, match=f"`{name}`"):
            fit(x, **{name: 0})
    with pytest.raises(ValueError, match="`init`"):
        fit(init="kmeans")
    with pytest.raises(ValueError, match="`weights_init`"):
        fit(weights_init=np.ones(K + 1) / (K + 1))
    with pytest.raises(ValueError, match="`weights_init`"):
        fit(weights_init=np.ones(K))
    with pytest.raises(ValueError, match="`means_init`"):
        fit(means_init=np.zeros((K, D + 1)))
    with pytest.raises(ValueError, match="`precisions_init`"):
        fit(precisions_init=np.ones((K, D)))  # full wants (K, D, D)
    with pytest.raises(ValueError, match="`precisions_init`"):
        fit(covariance_type="tied", precisions_init=-np.eye(D))
    with pytest.raises(ValueError, match="`precisions_init`"):
        fit(covariance_type="spherical", precisions_init=np.ones(K + 1))
    with pytest.raises(ValueError, match="`key`"):
        models.fit_gmm(x, K)
    w, m = np.ones(K) / K, np.zeros((K, D))
    with pytest.raises(ValueError, match="`covariance_type`"):
        models.GMM(w, m, np.ones(K), covariance_type="isotropic")
    with pytest.raises(ValueError, match="`covariances`"):
        models.GMM(w, m, np.ones((K, D)), covariance_type="full")
    with pytest.raises(ValueError, match="`covariances`"):
        models.GMM(w, m, -np.ones(K), covariance_type="spherical")
    with pytest.raises(ValueError, match="`weights`"):
        models.GMM(np.ones(K), m, np.ones(K), covariance_type="spherical")
    with pytest.raises(ValueError, match="exactly one"):
        models.GMM(w, m, covariance_type="spherical")
    with pytest.raises(ValueError, match="`event_shape`"):
        models.GMM(w, m, np.ones(K), covariance_type="spherical", event_shape=(3,))
