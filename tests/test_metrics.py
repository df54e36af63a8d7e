"""scoreflow.metrics against NumPy/SciPy computations and against known answers."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import scipy.linalg
import scipy.special
import scipy.stats
from numpy.testing import assert_allclose

import scoreflow as sf
from scoreflow import metrics

RTOL = 1e-6


def _sets(key, n=120, m=90, d=3, shift=0.3):
    kx, ky = jr.split(key)
    return jr.normal(kx, (n, d)), jr.normal(ky, (m, d)) * 1.2 + shift


def _np_sq(a, b):
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


def _np_median_sq(x, y):
    z = np.concatenate([x[:1000], y[:1000]])
    d = _np_sq(z, z)
    return np.median(d[np.triu_indices(len(z), 1)])


def _np_unbiased(kxx, kyy, kxy):
    n, m = len(kxx), len(kyy)
    return (
        (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
        + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        - 2 * kxy.mean()
    )


def _np_kernels(x, y):
    med = _np_median_sq(x, y)

    def gauss(mults):
        return lambda a, b: np.mean(
            [np.exp(-_np_sq(a, b) / (2 * mm**2 * med)) for mm in mults], axis=0
        )

    return {
        "gauss": (metrics.GaussianKernel(), gauss((1.0,))),
        "gauss-set": (metrics.GaussianKernel(multipliers=(0.5, 1.0, 2.0)), gauss((0.5, 1.0, 2.0))),
        "gauss-fixed": (
            metrics.GaussianKernel(bandwidth=0.7),
            lambda a, b: np.exp(-_np_sq(a, b) / (2 * 0.49)),
        ),
        "imq": (metrics.InverseMultiquadricKernel(), lambda a, b: med / (med + _np_sq(a, b))),
        "poly": (metrics.PolynomialKernel(), lambda a, b: (a @ b.T / a.shape[1] + 1) ** 3),
    }


@pytest.mark.parametrize("name", ["gauss", "gauss-set", "gauss-fixed", "imq", "poly"])
def test_mmd2_matches_numpy(name):
    x, y = _sets(jr.key(0))
    kernel, ref = _np_kernels(np.asarray(x), np.asarray(y))[name]
    # Block 32 against 120 and 90 rows: several tiles and a padded last one.
    got = metrics.mmd2(x, y, kernel=kernel, block_size=32)
    xn, yn = np.asarray(x), np.asarray(y)
    want = _np_unbiased(ref(xn, xn), ref(yn, yn), ref(xn, yn))
    assert_allclose(got, want, rtol=RTOL)
    assert_allclose(jax.jit(lambda a, b: metrics.mmd2(a, b, kernel=kernel))(x, y), want, rtol=RTOL)


def test_mmd_permutation_test_matches_numpy_and_is_calibrated():
    x, y = _sets(jr.key(1), n=40, m=30)
    key = jr.key(7)
    res = metrics.mmd_test(x, y, num_permutations=50, block_size=16, key=key)
    assert_allclose(res.mmd2, metrics.mmd2(x, y), rtol=RTOL)
    # The relabellings the test draws, recomputed in NumPy.
    ranks = np.asarray(jax.vmap(lambda k: jr.permutation(k, 70))(jr.split(key, 50)))
    z = np.concatenate([np.asarray(x), np.asarray(y)])
    kern = _np_kernels(np.asarray(x), np.asarray(y))["gauss"][1]
    kzz = kern(z, z)
    null = []
    for r in ranks:
        ix, iy = np.where(r < 40)[0], np.where(r >= 40)[0]
        null.append(_np_unbiased(kzz[np.ix_(ix, ix)], kzz[np.ix_(iy, iy)], kzz[np.ix_(ix, iy)]))
    assert_allclose(res.null, np.array(null), rtol=RTOL, atol=1e-12)
    assert_allclose(res.p_value, (1 + np.sum(np.array(null) >= float(res.mmd2))) / 51)

    # Under P = Q the p-value is uniform; a clear shift is detected.
    def p_of(k):
        k1, k2, k3 = jr.split(k, 3)
        a, b = jr.normal(k1, (30, 2)), jr.normal(k2, (30, 2))
        return metrics.mmd_test(a, b, num_permutations=99, key=k3).p_value

    ps = np.asarray(jax.jit(jax.vmap(p_of))(jr.split(jr.key(3), 40)))
    assert scipy.stats.kstest(ps, "uniform").pvalue > 0.01
    shifted = metrics.mmd_test(x, y + 1.0, num_permutations=99, key=key)
    assert float(shifted.p_value) == pytest.approx(0.01)


def test_mmd_of_a_distribution_with_itself_is_near_zero():
    x, y = _sets(jr.key(2), n=400, m=400, shift=0.0)
    y = y / 1.2
    same = float(metrics.mmd2(x, y))
    assert abs(same) < 5e-3
    assert float(metrics.mmd2(x, y + 0.5)) > 20 * abs(same)


def test_frechet_distance_matches_scipy_and_the_closed_form():
    x, y = _sets(jr.key(3), n=200, m=150, d=4)
    xn, yn = np.asarray(x), np.asarray(y)
    m1, m2 = xn.mean(0), yn.mean(0)
    s1, s2 = np.cov(xn, rowvar=False), np.cov(yn, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    want = ((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean)
    assert_allclose(metrics.frechet_distance(x, y), want, rtol=RTOL)
    assert_allclose(jax.jit(metrics.frechet_distance)(x, y), want, rtol=RTOL)
    # Commuting (diagonal) covariances: W2^2 = |m1 - m2|^2 + sum (sqrt(a) - sqrt(b))^2.
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    closed = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    got = metrics.gaussian_frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert_allclose(got, closed, rtol=1e-12)
    # A full-covariance pair against the symmetric form computed by SciPy the other way round.
    rng = np.random.default_rng(0)
    c1 = rng.normal(size=(4, 4))
    c2 = rng.normal(size=(4, 4))
    s1, s2 = c1 @ c1.T, c2 @ c2.T
    r2 = scipy.linalg.sqrtm(s2).real
    want = (
        np.trace(s1 + s2) - 2 * np.sqrt(np.clip(scipy.linalg.eigvalsh(r2 @ s1 @ r2), 0, None)).sum()
    )
    assert_allclose(
        metrics.gaussian_frechet_distance(np.zeros(4), s1, np.zeros(4), s2), want, rtol=1e-9
    )


def test_frechet_distance_is_finite_on_a_near_singular_covariance():
    # Features on a 2-d subspace of 6 dimensions: rank-deficient covariances.
    rng = np.random.default_rng(1)
    basis = rng.normal(size=(2, 6))
    x = rng.normal(size=(300, 2)) @ basis
    y = (rng.normal(size=(300, 2)) * 1.3 + 0.2) @ basis
    got = float(metrics.frechet_distance(jnp.asarray(x), jnp.asarray(y)))
    # The same distance in the 2-d coordinates, where the covariances are regular.
    coords = np.linalg.lstsq(basis.T, np.concatenate([x, y]).T, rcond=None)[0].T
    q, _ = np.linalg.qr(basis.T)  # orthonormal frame of the subspace
    xa, ya = x @ q, y @ q
    want = float(metrics.frechet_distance(jnp.asarray(xa), jnp.asarray(ya)))
    assert np.isfinite(got) and coords.shape == (600, 2)
    assert_allclose(got, want, rtol=1e-6)


def test_kid_matches_numpy():
    x, y = _sets(jr.key(4), n=60, m=50, d=5)
    key = jr.key(5)
    res = metrics.kid(x, y, num_subsets=7, subset_size=20, key=key)
    ix, iy = (np.asarray(i) for i in metrics.kid_subsets(60, 50, 7, 20, key=key))
    kern = _np_kernels(np.asarray(x), np.asarray(y))["poly"][1]
    vals = []
    for a, b in zip(ix, iy):
        xa, yb = np.asarray(x)[a], np.asarray(y)[b]
        vals.append(_np_unbiased(kern(xa, xa), kern(yb, yb), kern(xa, yb)))
    assert_allclose(res.value, np.mean(vals), rtol=RTOL)
    assert_allclose(res.stderr, np.std(vals, ddof=1) / np.sqrt(7), rtol=RTOL)
    assert all(len(set(r)) == 20 for r in ix)  # without replacement


def _np_radii(a, k):
    return np.sort(_np_sq(a, a), axis=1)[:, k]


def test_precision_recall_density_coverage_match_numpy():
    x, y = _sets(jr.key(6), n=150, m=130, d=3, shift=0.5)
    xn, yn = np.asarray(x), np.asarray(y)
    pr = metrics.precision_recall(x, y, k=3, block_size=32)
    rr, rf = _np_radii(xn, 3), _np_radii(yn, 3)
    d = _np_sq(yn, xn)  # fake x real
    assert_allclose(pr.precision, np.mean((d <= rr[None]).any(1)), rtol=RTOL)
    assert_allclose(pr.recall, np.mean((d.T <= rf[None]).any(1)), rtol=RTOL)
    dc = metrics.density_coverage(x, y, k=5, block_size=32)
    r5 = _np_radii(xn, 5)
    assert_allclose(dc.density, (d <= r5[None]).sum() / (5 * len(yn)), rtol=RTOL)
    assert_allclose(dc.coverage, np.mean(d.min(0) <= r5), rtol=RTOL)
    same = metrics.precision_recall(x, x)
    assert float(same.precision) == 1.0 and float(same.recall) == 1.0
    jitted = jax.jit(lambda a, b: metrics.density_coverage(a, b, k=5, block_size=32))(x, y)
    assert_allclose(jitted.coverage, dc.coverage)


def test_mode_coverage():
    ring = sf.data.ring_mixture()
    x = ring.sample(4000, key=jr.key(8))
    res = metrics.mode_coverage(x, ring)
    assert int(res.modes_captured) == 8 and res.num_modes == 8
    # Within 3 sd in 2-d: a chi distribution with 2 dof, P = 1 - exp(-9/2).
    assert abs(float(res.high_quality) - (1 - np.exp(-4.5))) < 4e-3
    assert float(res.kl_modes) < 5e-3
    xn, means = np.asarray(x), np.asarray(ring.means)
    sd = np.sqrt(np.asarray(ring.full_covariances())[:, 0, 0])
    dist = np.sqrt(_np_sq(xn, means)) / sd[None]
    good = dist.min(1) <= 3
    counts = np.bincount(dist.argmin(1)[good], minlength=8)
    assert_allclose(res.counts, counts)
    assert_allclose(res.high_quality, good.mean())
    # Collapse onto one mode, plus far-away junk that counts for nothing.
    collapsed = jnp.concatenate([x[np.asarray(dist.argmin(1) == 0)], jnp.full((50, 2), 40.0)])
    res = metrics.mode_coverage(collapsed, ring)
    assert int(res.modes_captured) == 1
    assert_allclose(res.kl_modes, -np.log(float(ring.weights[0])), rtol=1e-6)


def test_kl_divergence_against_a_closed_form():
    x = jr.normal(jr.key(9), (20000,))
    log_p = jax.scipy.stats.norm.logpdf(x)
    log_q = jax.scipy.stats.norm.logpdf(x, loc=1.0)
    est = metrics.kl_divergence(log_p, log_q)
    gap = np.asarray(log_p - log_q)
    assert_allclose(est.value, gap.mean(), rtol=RTOL)
    assert_allclose(est.stderr, gap.std(ddof=1) / np.sqrt(gap.size), rtol=RTOL)
    assert abs(float(est.value) - 0.5) < 4 * float(est.stderr)
    assert float(metrics.kl_divergence(log_p, jnp.full_like(log_q, -jnp.inf)).value) == np.inf


def _mvn_logpdf(x, mean, cov):
    chol = jnp.linalg.cholesky(cov)
    sol = jax.scipy.linalg.solve_triangular(chol, (x - mean).T, lower=True)
    logdet = 2 * jnp.log(jnp.diag(chol)).sum()
    return -0.5 * ((sol**2).sum(0) + logdet + x.shape[-1] * np.log(2 * np.pi))


def _linear_gaussian():
    # z ~ N(0, I_2), x | z ~ N(W z + b, s^2 I_3): log p(x) = N(x; b, W W^T + s^2 I).
    # NumPy constants: built op by op in JAX, each primitive would compile on its own.
    w = np.array([[1.0, 0.5], [-0.3, 0.8], [0.2, -1.1]])
    b, s2 = np.array([0.1, -0.2, 0.3]), 0.25
    cov = w @ w.T + s2 * np.eye(3)
    post_cov = np.linalg.inv(np.eye(2) + w.T @ w / s2)

    def log_joint(x, z):
        lz = _mvn_logpdf(z, jnp.zeros_like(z), jnp.eye(2))
        lx = _mvn_logpdf(x, z @ w.T + b[None], s2 * jnp.eye(3))
        return lz + lx

    def prior_weight(x, *, key):
        z = jr.normal(key, (x.shape[0], 2))
        return log_joint(x, z) - _mvn_logpdf(z, jnp.zeros_like(z), jnp.eye(2))

    def posterior_weight(x, *, key):
        mean = (x - b[None]) @ w @ post_cov / s2
        z = mean + jr.normal(key, (x.shape[0], 2)) @ jnp.linalg.cholesky(post_cov).T
        return log_joint(x, z) - _mvn_logpdf(z, mean, post_cov)

    exact = jax.jit(lambda x: _mvn_logpdf(x, b[None], cov))
    return prior_weight, posterior_weight, exact


def test_importance_log_likelihood_against_an_exact_marginal():
    prior_weight, posterior_weight, exact = _linear_gaussian()
    x = jr.normal(jr.key(10), (6, 3))
    key = jr.key(11)
    est = metrics.importance_log_likelihood(
        prior_weight, x, num_samples=1000, chunk_size=500, key=key
    )
    draws = jax.jit(jax.vmap(lambda k: prior_weight(x, key=k)))
    lw = np.concatenate([np.asarray(draws(jr.split(jr.fold_in(key, c), 500))) for c in (0, 1)])
    assert_allclose(est.value, scipy.special.logsumexp(lw, axis=0) - np.log(1000), rtol=RTOL)
    w = np.exp(lw - lw.max(0))
    assert_allclose(est.ess, w.sum(0) ** 2 / (w**2).sum(0), rtol=RTOL)
    assert_allclose(est.stderr, w.std(0, ddof=1) / np.sqrt(1000) / w.mean(0), rtol=RTOL)
    assert np.all(np.abs(np.asarray(est.value - exact(x))) < 4 * np.asarray(est.stderr) + 1e-3)
    # With the exact posterior as proposal every weight is p(x): no error at all. 70
    # proposals in chunks of 64: a full chunk and a remainder.
    exact_est = metrics.importance_log_likelihood(
        posterior_weight, x, num_samples=70, chunk_size=64, key=key
    )
    assert_allclose(exact_est.value, exact(x), rtol=1e-9)
    assert np.all(np.asarray(exact_est.stderr) < 1e-6)
    assert_allclose(exact_est.ess, 70.0, rtol=1e-6)


def test_bad_input_is_named():
    x, y = _sets(jr.key(12))
    with pytest.raises(ValueError, match="same event shape"):
        metrics.mmd2(x, y[:, :2])
    bad = y.at[3].set(jnp.nan).at[5, 1].set(jnp.inf)
    with pytest.raises(ValueError, match="`y` has 2 of 90 samples that are not finite"):
        metrics.mmd2(x, bad)
    with pytest.raises(ValueError, match="`fake` has 2 of 90"):
        metrics.precision_recall(x, bad)
    kept, dropped = metrics.drop_nonfinite(bad)
    assert dropped == 2 and kept.shape == (88, 3)
    with pytest.raises(ValueError, match="`x` has 3 samples of 3 features: its covariance"):
        metrics.frechet_distance(x[:3], y)
    assert np.isfinite(float(metrics.frechet_distance(x[:3], y, eps=1e-6)))
    # Any feature function; a wrong one is named.
    proj = lambda a: a @ jnp.ones((3, 2))
    assert_allclose(
        metrics.frechet_distance(x, y, features=proj), metrics.frechet_distance(proj(x), proj(y))
    )
    with pytest.raises(ValueError, match="`features` must map `x` of shape"):
        metrics.frechet_distance(x, y, features=lambda a: a.sum(1))
    with pytest.raises(ValueError, match="`features` must map"):
        metrics.kid(x, y, features=lambda a: a[:5], key=jr.key(0))
    with pytest.raises(ValueError, match="subset_size"):
        metrics.kid(x, y, subset_size=100, key=jr.key(0))
    with pytest.raises(ValueError, match="`samples` must have 2 dimensions"):
        metrics.mode_coverage(x, sf.data.ring_mixture())
    with pytest.raises(ValueError, match="`k` must"):
        metrics.knn_radii(x[:3], 3)
    # Under jit the NaN is still an error, never a figure.
    with pytest.raises(Exception, match="not finite"):
        jax.jit(metrics.mmd2)(x, bad)
