r"""Gaussian mixtures fitted by expectation-maximisation, on the model contract.

`fit_gmm` runs EM (Dempster, Laird & Rubin 1977, "Maximum likelihood from incomplete
data via the EM algorithm", JRSS B 39(1)) as one jitted `jax.lax.while_loop`, with the
M-step, the regularisation `reg_covar` and the stopping rule of scikit-learn's
`GaussianMixture`, so that from the same initial parameters both reach the same
mixture. The result is a `GMM`: an exact-likelihood model that `scoreflow.train.fit` can
also train by gradient descent, and whose `mixture` is a `scoreflow.analytic`
`GaussianMixture`, an exact score model under every SDE.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from .. import _checks
from .._custom_types import Key, Scalar
from ..analytic import GaussianMixture
from ._base import AbstractExactLikelihood, check_event

COVARIANCE_TYPES: tuple[str, ...] = ("full", "diag", "tied", "spherical")
INITS: tuple[str, ...] = ("k-means++", "random")


def _check_covariance_type(covariance_type) -> None:
    if covariance_type not in COVARIANCE_TYPES:
        raise ValueError(
            f"`covariance_type` must be one of {COVARIANCE_TYPES}, got {covariance_type!r}."
        )


def _covariance_shape(covariance_type: str, K: int, d: int) -> tuple[int, ...]:
    # scikit-learn's layout of covariances, precisions and their Cholesky factors.
    return {"full": (K, d, d), "tied": (d, d), "diag": (K, d), "spherical": (K,)}[covariance_type]


def _matrix_type(covariance_type: str) -> bool:
    return covariance_type in ("full", "tied")


def _diagonal(m: Array) -> Array:
    return jnp.diagonal(m, axis1=-2, axis2=-1)


def _set_diagonal(m: Array, v: Array) -> Array:
    i = jnp.arange(m.shape[-1])
    return m.at[..., i, i].set(v)


def _add_to_diagonal(m: Array, v) -> Array:
    i = jnp.arange(m.shape[-1])
    return m.at[..., i, i].add(v)


def _identity_like(m: Array) -> Array:
    return jnp.broadcast_to(jnp.eye(m.shape[-1], dtype=m.dtype), m.shape)


def _precision_cholesky(covariances: Array, covariance_type: str) -> Array:
    r"""scikit-learn's `precisions_cholesky_`: upper $U$ with $U U^T = \Sigma^{-1}$."""
    if _matrix_type(covariance_type):
        lower = jnp.linalg.cholesky(covariances)
        # L^T U = I: U = L^{-T}, upper triangular (scikit-learn's solve, transposed).
        return jax.lax.linalg.triangular_solve(
            lower, _identity_like(lower), left_side=True, lower=True, transpose_a=True
        )
    return 1 / jnp.sqrt(covariances)


def _covariance_cholesky(precision_cholesky: Array, covariance_type: str) -> Array:
    r"""Lower $A = U^{-T}$ with $A A^T = \Sigma$ (diagonal types: the standard deviations)."""
    if _matrix_type(covariance_type):
        return jax.lax.linalg.triangular_solve(
            precision_cholesky,
            _identity_like(precision_cholesky),
            left_side=True,
            lower=False,
            transpose_a=True,
        )
    return 1 / precision_cholesky


def _covariances_from_precision_cholesky(precision_cholesky: Array, covariance_type: str):
    a = _covariance_cholesky(precision_cholesky, covariance_type)
    if _matrix_type(covariance_type):
        return a @ jnp.swapaxes(a, -1, -2)
    return a * a


def _precision_cholesky_from_precisions(precisions: Array, covariance_type: str) -> Array:
    # The upper factor of P = U U^T is J chol(J P J) J, J the exchange matrix (as
    # scikit-learn's `_compute_precision_cholesky_from_precisions`).
    if _matrix_type(covariance_type):
        flip = lambda m: m[..., ::-1, ::-1]
        return flip(jnp.linalg.cholesky(flip(precisions)))
    return jnp.sqrt(precisions)


def _raw_from_precision_cholesky(precision_cholesky: Array, covariance_type: str) -> Array:
    # Unconstrained storage: the strict upper triangle as is, the diagonal in log space.
    if _matrix_type(covariance_type):
        return _set_diagonal(
            jnp.triu(precision_cholesky, 1), jnp.log(_diagonal(precision_cholesky))
        )
    return jnp.log(precision_cholesky)


def _precision_cholesky_from_raw(raw: Array, covariance_type: str) -> Array:
    if _matrix_type(covariance_type):
        return _set_diagonal(jnp.triu(raw, 1), jnp.exp(_diagonal(raw)))
    return jnp.exp(raw)


def _two_pass(dtype) -> bool:
    # Below float64 the one-pass sums (products of data, then a difference) lose what
    # the residual-first sums keep; in float64 the one-pass sums are scikit-learn's own
    # and run as single matrix products.
    return jnp.finfo(dtype).bits < 64


def _blocks(d: int) -> list[int]:
    # Edges of up to four blocks of at least 16 coordinates: the triangular and
    # symmetric products below skip the blocks that are known zeros or mirror images.
    nb = max(1, min(4, d // 16))
    return [round(j * d / nb) for j in range(nb + 1)]


def _full_mahalanobis(x: Array, means: Array, u: Array) -> Array:
    # ||x U_k - mu_k U_k||^2 for every component, `(n, K)`. U_k is upper triangular, so
    # column block j of x U_k needs only the rows up to that block: about 5/8 of the
    # multiply-adds of the dense product at four blocks.
    edges = _blocks(x.shape[1])
    maha = jnp.zeros((x.shape[0], means.shape[0]), x.dtype)
    for lo, hi in zip(edges[:-1], edges[1:]):
        block = u[:, :hi, lo:hi]
        y = jnp.einsum("nd,kde->nke", x[:, :hi], block)
        y = y - jnp.einsum("kd,kde->ke", means[:, :hi], block)[None, :, :]
        maha = maha + jnp.sum(y * y, axis=-1)
    return maha


def _full_second_moments(x: Array, resp: Array) -> Array:
    # sum_n r_nk x_n x_n^T for every component, `(K, d, d)`, as one product per row block
    # of its lower triangle, then mirrored (the matrices are symmetric).
    n, d = x.shape
    K = resp.shape[1]
    weighted = resp.T[:, None, :] * x.T[None, :, :]  # (K, d, n)
    edges = _blocks(d)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        block = weighted[:, lo:hi].reshape(K * (hi - lo), n) @ x[:, :hi]
        rows.append(jnp.pad(block.reshape(K, hi - lo, hi), ((0, 0), (0, 0), (0, d - hi))))
    lower = jnp.concatenate(rows, axis=1)  # the diagonal blocks are whole
    return jnp.tril(lower) + jnp.swapaxes(jnp.tril(lower, -1), -1, -2)


def _component_log_probs(
    x: Array, means: Array, precision_cholesky: Array, covariance_type: str
) -> Array:
    r"""`(n, K)` $\log N(x_n; \mu_k, \Sigma_k)$ from the precisions' Cholesky factors.

    $\log N = -\frac12 (d \log 2\pi + \|U_k^T (x - \mu_k)\|^2) + \log\det U_k$ with
    $U_k^T(x - \mu_k)$ as $x U_k - \mu_k U_k$, matrix products over all components
    (scikit-learn's form; the data are centred by the caller). Diagonal and spherical
    types expand the square as scikit-learn does in float64 and take the residual first
    below float64.
    """
    d = x.shape[1]
    u = precision_cholesky
    if covariance_type == "full":
        maha = _full_mahalanobis(x, means, u)
        log_det = jnp.sum(jnp.log(_diagonal(u)), axis=-1)
    elif covariance_type == "tied":
        y = (x @ u)[:, None, :] - (means @ u)[None, :, :]
        maha = jnp.sum(y * y, axis=-1)
        log_det = jnp.broadcast_to(jnp.sum(jnp.log(_diagonal(u))), means.shape[:1])
    else:
        prec = u * u if covariance_type == "diag" else (u * u)[:, None]  # (K, d) or (K, 1)
        if _two_pass(x.dtype):
            diff = x[:, None, :] - means[None, :, :]  # (n, K, d)
            maha = jnp.sum(diff * diff * prec[None, :, :], axis=-1)
        else:
            maha = (
                jnp.sum(means * means * prec, axis=1)[None, :]
                - 2 * x @ (means * prec).T
                + (x * x) @ jnp.broadcast_to(prec, means.shape).T
            )
        log_det = jnp.sum(jnp.log(u), axis=-1) if covariance_type == "diag" else d * jnp.log(u)
    return -0.5 * (d * math.log(2 * math.pi) + maha) + log_det[None, :]


def _m_step(x: Array, resp: Array, reg_covar, covariance_type: str):
    r"""Weights, means and covariances from responsibilities, as scikit-learn's M-step.

    `nk` carries scikit-learn's `10 * eps` (an empty component keeps finite parameters);
    `reg_covar` is added to the diagonal of every covariance
    (`sklearn.mixture._gaussian_mixture._estimate_gaussian_parameters`). In float64 the
    scatter matrices are one-pass sums, $\sum_n r_{nk} x_n x_n^T / n_k - \mu_k \mu_k^T$,
    in matrix products over all components (scikit-learn's formulas for the diagonal,
    spherical and tied types; its full type sums residuals, equal to rounding); below
    float64 they are two-pass sums over the residuals, which do not cancel. The
    caller's centring of the data keeps the one-pass sums accurate.
    """
    nk = jnp.sum(resp, axis=0) + 10 * float(jnp.finfo(x.dtype).eps)
    means = (resp.T @ x) / nk[:, None]
    if _two_pass(x.dtype):
        diff = x[None, :, :] - means[:, None, :]  # (K, n, d)
        weighted = resp.T[:, :, None] * diff
        if covariance_type == "full":
            cov = jnp.einsum("knd,kne->kde", weighted, diff) / nk[:, None, None]
        elif covariance_type == "tied":
            cov = jnp.einsum("knd,kne->de", weighted, diff) / jnp.sum(nk)
        else:
            cov = jnp.sum(weighted * diff, axis=1) / nk[:, None]
    elif covariance_type == "full":
        second = _full_second_moments(x, resp) / nk[:, None, None]
        cov = second - means[:, :, None] * means[:, None, :]
    elif covariance_type == "tied":
        cov = (x.T @ x - (nk[None, :] * means.T) @ means) / jnp.sum(nk)
    else:
        cov = (resp.T @ (x * x)) / nk[:, None] - means * means
    if _matrix_type(covariance_type):
        cov = _add_to_diagonal(cov, reg_covar)
    else:
        cov = cov + reg_covar
        if covariance_type == "spherical":
            cov = jnp.mean(cov, axis=1)
    return nk / jnp.sum(nk), means, cov


def _validate_covariances(c: np.ndarray, covariance_type: str, name: str) -> None:
    if _matrix_type(covariance_type):
        sym = bool(np.allclose(c, np.swapaxes(c, -1, -2)))
        ok = sym and bool(np.all(np.linalg.eigvalsh(c) > 0))
        _checks.check(ok, name, "must be symmetric positive definite.")
    else:
        _checks.check(bool(np.all(c > 0)), name, "must be positive.")


class GMM(AbstractExactLikelihood):
    r"""A Gaussian mixture $p(x) = \sum_k w_k N(x; \mu_k, \Sigma_k)$ on the model contract.

    Fitted by `fit_gmm` (EM) or trained by `scoreflow.train.fit` on `loss`, the mean
    negative log-likelihood: the parameters are stored unconstrained (weight logits,
    means, and the Cholesky factor $U_k$ of each precision $\Sigma_k^{-1} = U_k U_k^T$,
    upper triangular as scikit-learn's `precisions_cholesky_`, with its diagonal in log
    space), so any gradient step leaves a valid mixture. Events of any shape are
    flattened to $D$ coordinates; `mixture` is the same density as a
    `scoreflow.analytic.GaussianMixture` on the flat events, whose `noised(sde)` is an
    exact score model for every sampler and for `scoreflow.solve.log_likelihood`.

    Covariance types (scikit-learn's): `"full"`, one $\Sigma_k$ each, `(K, D, D)`;
    `"tied"`, one shared $\Sigma$, `(D, D)`; `"diag"`, diagonal $\Sigma_k$, `(K, D)`;
    `"spherical"`, $\sigma_k^2 I$, `(K,)`.

    Args:
        weights: `(K,)` positive mixture weights summing to one.
        means: `(K, D)` component means ($D$ the size of an event).
        covariances: covariances in the layout of `covariance_type` (above).
        precisions: the inverse covariances instead, in the same layout.
        covariance_type: `"full"`, `"diag"`, `"tied"` or `"spherical"`.
        event_shape: the shape of one event (default `(D,)`); its size must be $D$.

    Raises:
        ValueError: on an unknown `covariance_type`, mismatched shapes, weights that are
            not a probability vector, covariances that are not positive (definite), or
            not exactly one of `covariances` and `precisions`.
    """

    logits: Float[Array, " K"]
    means: Float[Array, "K D"]
    raw_precisions_cholesky: Float[Array, "..."]
    covariance_type: str = eqx.field(static=True)
    event_shape: tuple[int, ...] = eqx.field(static=True)

    def __init__(
        self,
        weights: Float[ArrayLike, " K"],
        means: Float[ArrayLike, "K D"],
        covariances: Float[ArrayLike, "..."] | None = None,
        *,
        precisions: Float[ArrayLike, "..."] | None = None,
        covariance_type: str = "full",
        event_shape: tuple[int, ...] | None = None,
    ):
        _check_covariance_type(covariance_type)
        means = jnp.asarray(means)
        if means.ndim != 2 or not jnp.issubdtype(means.dtype, jnp.floating):
            raise ValueError(f"`means` must be a floating (K, D) array, got {means.shape}.")
        K, d = means.shape
        weights = jnp.asarray(weights).astype(means.dtype)
        if weights.shape != (K,):
            raise ValueError(f"`weights` must have shape (K={K},), got {weights.shape}.")
        if (covariances is None) == (precisions is None):
            raise ValueError("Give exactly one of `covariances` and `precisions`.")
        name = "covariances" if covariances is not None else "precisions"
        given = jnp.asarray(covariances if covariances is not None else precisions)
        given = given.astype(means.dtype)
        want = _covariance_shape(covariance_type, K, d)
        if given.shape != want:
            raise ValueError(
                f"`{name}` must have shape {want} for covariance_type={covariance_type!r}, "
                f"got {given.shape}."
            )
        w = _checks.concrete(weights)
        if w is not None:
            _checks.check(bool(np.all(w > 0)), "weights", f"must be positive, got {w}.")
            _checks.check(bool(abs(w.sum() - 1) < 1e-5), "weights", "must sum to 1.")
        c = _checks.concrete(given)
        if c is not None:
            _validate_covariances(c, covariance_type, name)
        if covariances is not None:
            chol = _precision_cholesky(given, covariance_type)
        else:
            chol = _precision_cholesky_from_precisions(given, covariance_type)
        event_shape = (d,) if event_shape is None else tuple(event_shape)
        if math.prod(event_shape) != d:
            raise ValueError(
                f"`event_shape` {event_shape} must have size D={d} (the means' last axis)."
            )
        self.logits = jnp.log(weights)
        self.means = means
        self.raw_precisions_cholesky = _raw_from_precision_cholesky(chol, covariance_type)
        self.covariance_type = covariance_type
        self.event_shape = event_shape

    def __check_init__(self):
        K, d = self.means.shape
        want = _covariance_shape(self.covariance_type, K, d)
        if self.logits.shape != (K,) or self.raw_precisions_cholesky.shape != want:
            raise ValueError(
                f"`GMM` parameters do not fit together: logits {self.logits.shape}, means "
                f"{self.means.shape}, precision factors {self.raw_precisions_cholesky.shape} "
                f"(want {want} for {self.covariance_type!r})."
            )

    @property
    def num_components(self) -> int:
        """$K$."""
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        """$D$, the size of one (flattened) event."""
        return self.means.shape[1]

    @property
    def weights(self) -> Float[Array, " K"]:
        """The mixture weights, `softmax(logits)`."""
        return jax.nn.softmax(self.logits)

    @property
    def precisions_cholesky(self) -> Float[Array, "..."]:
        r"""scikit-learn's `precisions_cholesky_` (upper $U$, $U U^T = \Sigma^{-1}$)."""
        return _precision_cholesky_from_raw(self.raw_precisions_cholesky, self.covariance_type)

    @property
    def precisions(self) -> Float[Array, "..."]:
        """The inverse covariances, in the layout of `covariance_type`."""
        u = self.precisions_cholesky
        return u @ jnp.swapaxes(u, -1, -2) if _matrix_type(self.covariance_type) else u * u

    @property
    def covariances(self) -> Float[Array, "..."]:
        """The covariances, in the layout of `covariance_type` (scikit-learn's)."""
        return _covariances_from_precision_cholesky(self.precisions_cholesky, self.covariance_type)

    @property
    def mixture(self) -> GaussianMixture:
        """This density as a `scoreflow.analytic.GaussianMixture` on flat `(D,)` events.

        Tied covariances are broadcast to one full matrix per component, spherical ones
        to one diagonal per component; `mixture.noised(sde)` gives the exact noisy
        scores, denoisers and densities under `sde`.
        """
        K, d = self.means.shape
        cov = self.covariances
        if self.covariance_type == "tied":
            cov = jnp.broadcast_to(cov[None], (K, d, d))
        elif self.covariance_type == "spherical":
            cov = jnp.broadcast_to(cov[:, None], (K, d))
        return GaussianMixture(self.weights, self.means, cov)

    @property
    def num_parameters(self) -> int:
        """Free parameters, counted as scikit-learn's `_n_parameters` (for BIC and AIC)."""
        K, d = self.means.shape
        cov = {
            "full": K * d * (d + 1) // 2,
            "diag": K * d,
            "tied": d * (d + 1) // 2,
            "spherical": K,
        }[self.covariance_type]
        return cov + K * d + K - 1

    def _flat(self, x) -> Array:
        x = check_event(jnp.asarray(x), self.event_shape)
        return x.reshape(x.shape[0], self.dim)

    def _joint(self, x) -> Array:
        log_w = jax.nn.log_softmax(self.logits)
        lp = _component_log_probs(
            self._flat(x), self.means, self.precisions_cholesky, self.covariance_type
        )
        return log_w[None, :] + lp

    def log_prob(
        self, x: Float[Array, "batch ..."], *, key: Key | None = None
    ) -> Float[Array, " batch"]:
        r"""Exact $\log p(x)$ per example (a log-sum-exp over components)."""
        return jax.nn.logsumexp(self._joint(x), axis=1)

    def loss(self, x: Float[Array, "batch ..."], *, key: Key | None = None) -> Scalar:
        """Negative log-likelihood per example, averaged over the batch (nats)."""
        return -jnp.mean(self.log_prob(x))

    def predict_proba(self, x: Float[Array, "batch ..."]) -> Float[Array, "batch K"]:
        r"""Responsibilities $p(k \mid x)$, `(batch, K)`."""
        return jax.nn.softmax(self._joint(x), axis=1)

    def predict(self, x: Float[Array, "batch ..."]) -> Int[Array, " batch"]:
        """The most probable component of each example."""
        return jnp.argmax(self._joint(x), axis=1)

    def bic(self, x: Float[Array, "batch ..."]) -> Scalar:
        r"""Bayesian information criterion $-2 \log L + p \log n$ (lower is better)."""
        n = jnp.asarray(x).shape[0]
        return -2 * jnp.sum(self.log_prob(x)) + self.num_parameters * math.log(n)

    def aic(self, x: Float[Array, "batch ..."]) -> Scalar:
        r"""Akaike information criterion $-2 \log L + 2p$ (lower is better)."""
        return -2 * jnp.sum(self.log_prob(x)) + 2 * self.num_parameters

    def sample(self, sample_shape: int | tuple[int, ...] = (), *, key: Key) -> Float[Array, "..."]:
        """Draw `(*sample_shape, *event_shape)` exact samples."""
        shape, n = self._flat_shape(sample_shape)
        _checks.key(key)
        k_comp, k_noise = jr.split(key)
        comp = jr.categorical(k_comp, self.logits, shape=(n,))
        z = jr.normal(k_noise, (n, self.dim), self.means.dtype)
        a = _covariance_cholesky(self.precisions_cholesky, self.covariance_type)
        if self.covariance_type == "full":
            noise = jnp.einsum("nij,nj->ni", a[comp], z)
        elif self.covariance_type == "tied":
            noise = z @ a.T
        elif self.covariance_type == "diag":
            noise = a[comp] * z
        else:
            noise = a[comp][:, None] * z
        return (self.means[comp] + noise).reshape(*shape, *self.event_shape)


class EMResult(eqx.Module):
    """What `fit_gmm` returns (the best of its `n_init` runs).

    Attributes:
        model: the fitted `GMM` (the parameters after the last M-step).
        log_likelihood: the final mean per-sample log-likelihood, scikit-learn's
            `lower_bound_`: the E-step value of the last iteration, that is of the
            parameters that entered it.
        history: `(max_iter,)` the mean log-likelihood at each iteration's E-step
            (scikit-learn's `lower_bounds_`), NaN after the last iteration.
        num_iterations: the iterations run (scikit-learn's `n_iter_`).
        converged: whether the last change of the mean log-likelihood was below `tol`.
    """

    model: GMM
    log_likelihood: Float[Array, ""]
    history: Float[Array, " max_iter"]
    num_iterations: Int[Array, ""]
    converged: Bool[Array, ""]


def _kmeans_plusplus(x: Array, num_components: int, key: Key) -> Array:
    r"""Greedy k-means++ seeds (Arthur & Vassilvitskii 2007), as scikit-learn draws them.

    Each new centre is the best, by the potential $\sum_n \min_c \|x_n - c\|^2$, of
    $2 + \lfloor\log K\rfloor$ candidates drawn with probability proportional to the
    squared distance to the nearest centre chosen so far (Arthur & Vassilvitskii 2007,
    sec. 2.2 and the greedy variant of their sec. 6; scikit-learn's `_kmeans_plusplus`).
    """
    n = x.shape[0]
    trials = 2 + int(math.log(num_components))
    k_first, k_rest = jr.split(key)
    first = x[jr.randint(k_first, (), 0, n)]
    centres = jnp.zeros((num_components, x.shape[1]), x.dtype).at[0].set(first)
    closest = jnp.sum((x - first[None, :]) ** 2, axis=1)

    def add_centre(c, state):
        centres, closest = state
        u = jr.uniform(jr.fold_in(k_rest, c), (trials,), x.dtype) * jnp.sum(closest)
        cand = jnp.clip(jnp.searchsorted(jnp.cumsum(closest), u), 0, n - 1)
        d2 = jnp.sum((x[None, :, :] - x[cand][:, None, :]) ** 2, axis=-1)  # (trials, n)
        new = jnp.minimum(closest[None, :], d2)
        best = jnp.argmin(jnp.sum(new, axis=1))
        return centres.at[c].set(x[cand[best]]), new[best]

    centres, _ = jax.lax.fori_loop(1, num_components, add_centre, (centres, closest))
    return centres


def _nearest(x: Array, centres: Array) -> Array:
    d2 = (
        jnp.sum(x * x, axis=1)[:, None]
        - 2 * x @ centres.T
        + jnp.sum(centres * centres, axis=1)[None, :]
    )
    return jnp.argmin(d2, axis=1)


def _kmeans_responsibilities(x: Array, num_components: int, kmeans_iter: int, key: Key):
    # k-means++ seeds, `kmeans_iter` Lloyd iterations (an empty cluster keeps its
    # centre), then the hard assignment: scikit-learn's "kmeans" initialisation with a
    # fixed number of Lloyd steps.
    centres = _kmeans_plusplus(x, num_components, key)

    def lloyd(_, centres):
        onehot = jax.nn.one_hot(_nearest(x, centres), num_components, dtype=x.dtype)
        counts = jnp.sum(onehot, axis=0)
        means = (onehot.T @ x) / jnp.maximum(counts, 1)[:, None]
        return jnp.where(counts[:, None] > 0, means, centres)

    centres = jax.lax.fori_loop(0, kmeans_iter, lloyd, centres)
    return jax.nn.one_hot(_nearest(x, centres), num_components, dtype=x.dtype)


def _initial_parameters(
    x, key, reg_covar, weights_init, means_init, chol_init, *, K, covariance_type, init, kmeans
):
    if weights_init is not None and means_init is not None and chol_init is not None:
        cov = _covariances_from_precision_cholesky(chol_init, covariance_type)
        return weights_init, means_init, cov, chol_init
    if init == "k-means++":
        resp = _kmeans_responsibilities(x, K, kmeans, key)
    else:
        resp = jr.uniform(key, (x.shape[0], K), x.dtype)
        resp = resp / jnp.sum(resp, axis=1, keepdims=True)
    weights, means, cov = _m_step(x, resp, reg_covar, covariance_type)
    chol = _precision_cholesky(cov, covariance_type)
    # As scikit-learn: what is given replaces what the responsibilities gave.
    weights = weights if weights_init is None else weights_init
    means = means if means_init is None else means_init
    if chol_init is not None:
        chol = chol_init
        cov = _covariances_from_precision_cholesky(chol_init, covariance_type)
    return weights, means, cov, chol


def _em(x, params, tol, reg_covar, *, covariance_type: str, max_iter: int):
    """EM from `params` as one `while_loop`, with scikit-learn's stopping rule."""
    dtype = x.dtype

    def cond(state):
        i, _, _, converged, failed, _ = state
        return (i < max_iter) & ~converged & ~failed

    def body(state):
        i, params, lb_prev, _, _, history = state
        weights, means, _, chol = params
        joint = jnp.log(weights)[None, :] + _component_log_probs(x, means, chol, covariance_type)
        norm = jax.nn.logsumexp(joint, axis=1)
        lb = jnp.mean(norm)
        # Responsibilities below sqrt(smallest normal) (1e-154 in float64) are flushed
        # to zero: their share of any sum of the M-step is far below rounding, and the
        # subnormal products they would make slow its matrix products many-fold on CPUs.
        log_resp = joint - norm[:, None]
        floor = 0.5 * math.log(float(jnp.finfo(dtype).tiny))
        resp = jnp.where(log_resp > floor, jnp.exp(log_resp), 0)
        weights, means, cov = _m_step(x, resp, reg_covar, covariance_type)
        new = (weights, means, cov, _precision_cholesky(cov, covariance_type))
        ok = jnp.isfinite(lb) & jnp.all(jnp.stack([jnp.all(jnp.isfinite(p)) for p in new]))
        params = jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, params)
        converged = ok & (jnp.abs(lb - lb_prev) < tol)
        history = history.at[i].set(jnp.where(ok, lb, jnp.nan))
        return (
            i + ok.astype(i.dtype),
            params,
            jnp.where(ok, lb, lb_prev),
            converged,
            ~ok,
            history,
        )

    state = (
        jnp.asarray(0, jnp.int32),
        params,
        jnp.asarray(-jnp.inf, dtype),
        jnp.asarray(False),
        jnp.asarray(False),
        jnp.full((max_iter,), jnp.nan, dtype),
    )
    i, params, lb, converged, _, history = jax.lax.while_loop(cond, body, state)
    return params, lb, history, i, converged


@eqx.filter_jit
def _fit(
    x,
    key,
    tol,
    reg_covar,
    weights_init,
    means_init,
    precisions_init,
    *,
    K: int,
    covariance_type: str,
    max_iter: int,
    n_init: int,
    init: str,
    kmeans_iter: int,
    event_shape: tuple[int, ...],
):
    # EM is translation-equivariant: centring the data keeps the one-pass sums (tied
    # covariances, the k-means distances) accurate in float32.
    centre = jnp.mean(x, axis=0)
    xc = x - centre[None, :]
    if means_init is not None:
        means_init = means_init - centre[None, :]
    chol_init = (
        None
        if precisions_init is None
        else _precision_cholesky_from_precisions(precisions_init, covariance_type)
    )

    def one_run(k):
        params = _initial_parameters(
            xc,
            k,
            reg_covar,
            weights_init,
            means_init,
            chol_init,
            K=K,
            covariance_type=covariance_type,
            init=init,
            kmeans=kmeans_iter,
        )
        return _em(xc, params, tol, reg_covar, covariance_type=covariance_type, max_iter=max_iter)

    # Run i draws from fold_in(key, i): the first of n runs is the run of n_init=1.
    runs = jax.lax.map(one_run, jax.vmap(lambda i: jr.fold_in(key, i))(jnp.arange(n_init)))
    best = jnp.argmax(runs[1])  # the first of the best, as scikit-learn keeps
    (weights, means, cov, _), lb, history, num_iterations, converged = jax.tree_util.tree_map(
        lambda a: a[best], runs
    )
    model = GMM(
        weights,
        means + centre[None, :],
        cov,
        covariance_type=covariance_type,
        event_shape=event_shape,
    )
    return EMResult(model, lb, history, num_iterations, converged)


def _init_array(value, shape, dtype, name) -> Array:
    a = jnp.asarray(value)
    if not jnp.issubdtype(a.dtype, jnp.floating) and not jnp.issubdtype(a.dtype, jnp.integer):
        raise ValueError(f"`{name}` must be a real array, got dtype {a.dtype}.")
    if a.shape != shape:
        raise ValueError(f"`{name}` must have shape {shape}, got {a.shape}.")
    a = a.astype(dtype)
    _checks.finite(a, name)
    return a


def fit_gmm(
    x: Float[ArrayLike, "n ..."],
    num_components: int,
    *,
    covariance_type: str = "full",
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    n_init: int = 1,
    init: str = "k-means++",
    kmeans_iter: int = 10,
    weights_init: Float[ArrayLike, " K"] | None = None,
    means_init: Float[ArrayLike, "K ..."] | None = None,
    precisions_init: Float[ArrayLike, "..."] | None = None,
    key: Key | None = None,
) -> EMResult:
    r"""Fit a Gaussian mixture by expectation-maximisation (Dempster et al. 1977).

    Each iteration is an E-step, the responsibilities
    $r_{nk} = w_k N(x_n; \mu_k, \Sigma_k) / \sum_j w_j N(x_n; \mu_j, \Sigma_j)$ and the
    mean log-likelihood $\frac1n \sum_n \log \sum_k w_k N(x_n; \mu_k, \Sigma_k)$, then an
    M-step, $n_k = \sum_n r_{nk}$, $w_k = n_k / n$, $\mu_k = \sum_n r_{nk} x_n / n_k$,
    $\Sigma_k = \sum_n r_{nk} (x_n - \mu_k)(x_n - \mu_k)^T / n_k + \epsilon I$ (Dempster,
    Laird & Rubin 1977, JRSS B 39(1), sec. 4.3; per covariance type as scikit-learn's
    `_estimate_gaussian_parameters`, `reg_covar` $= \epsilon$ added to the diagonal, so
    a component collapsed onto one point or a few duplicated points stays a proper
    Gaussian of variance $\ge \epsilon$). Without regularisation each iteration cannot
    lower the likelihood (Dempster et al. 1977, Theorem 1); where `reg_covar` binds (a
    component collapsed onto a point or a line) it can, in scikit-learn exactly as here,
    so `history` is monotone only while $\epsilon$ is negligible. EM stops when the change of
    the mean log-likelihood falls below `tol` (converged) or after `max_iter`
    iterations: scikit-learn's rule, so from the same initial parameters scoreflow and
    `sklearn.mixture.GaussianMixture` run the same iterations. The whole fit, all
    `n_init` restarts included, is one compiled program: a `jax.lax.map` over restarts
    of a `jax.lax.while_loop` over iterations.

    Initialisation, unless `weights_init`, `means_init` and `precisions_init` are all
    given: `"k-means++"` seeds $K$ centres by greedy k-means++ (Arthur & Vassilvitskii
    2007, "k-means++: the advantages of careful seeding", SODA; the greedy variant
    scikit-learn uses), runs `kmeans_iter` Lloyd iterations (jitted), and starts from
    the M-step of the hard k-means assignment (scikit-learn's `"kmeans"` with a fixed
    number of Lloyd steps); `"random"` starts from the M-step of random
    responsibilities (scikit-learn's `"random"`). Given initial values replace the
    corresponding initialised ones, as in scikit-learn. Of the `n_init` runs (run $i$
    draws from `fold_in(key, i)`) the one with the highest final log-likelihood is kept.

    Numerics: the data are centred before EM (an exact symmetry of EM); densities come
    from the Cholesky factors of the precisions and responsibilities from a log-sum-exp
    (those below $10^{-154}$ in float64 are flushed to zero: below rounding in every sum,
    and subnormal products slow CPUs down). In float64 the E- and M-steps are
    scikit-learn's product forms, as matrix products over all components that skip the
    zero blocks of the triangular factors and the mirrored blocks of the symmetric
    scatter matrices; below float64 the M-step (and the diagonal types' E-step) sums
    residuals, which do not cancel, so fits run in float32 too. Should an M-step still
    give non-finite parameters (a float32 covariance that is not positive definite), EM
    stops there and keeps the last finite parameters (`converged` is then False).

    Args:
        x: `(n, *event_shape)` floating-point data; events are flattened to $D$.
        num_components: $K \le n$.
        covariance_type: `"full"`, `"diag"`, `"tied"` or `"spherical"` (see `GMM`).
        max_iter: the most EM iterations per run, $\ge 1$.
        tol: convergence threshold on the change of the mean log-likelihood, $> 0$.
        reg_covar: added to the diagonal of every covariance, $> 0$.
        n_init: independent initialisations; the best run is kept.
        init: `"k-means++"` or `"random"`.
        kmeans_iter: Lloyd iterations after the k-means++ seeding ($\ge 0$).
        weights_init: `(K,)` initial weights (non-negative, summing to one).
        means_init: `(K, D)` or `(K, *event_shape)` initial means.
        precisions_init: initial inverse covariances in the layout of `covariance_type`
            (`(K, D, D)`, `(D, D)`, `(K, D)` or `(K,)`).
        key: PRNG key of the initialisation (unused, and optional, when all three
            initial values are given).

    Returns:
        An `EMResult`.

    Raises:
        ValueError: naming the argument: `x` not floating, without a batch axis or not
            finite; `num_components` above the number of points; an unknown
            `covariance_type` or `init`; non-positive `max_iter`, `n_init`, `tol` or
            `reg_covar`; initial values of the wrong shape or that are not a valid
            mixture; a missing `key`.
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"`x` must hold floating-point data, got dtype {x.dtype}.")
    _checks.float_dtype(x.dtype, "x")
    if x.ndim < 2:
        raise ValueError(f"`x` must have shape (n, *event_shape), got {x.shape}.")
    _checks.finite(x, "x")
    n = x.shape[0]
    event_shape = tuple(x.shape[1:])
    d = math.prod(event_shape)
    _checks.positive_int(num_components, "num_components")
    if num_components > n:
        raise ValueError(
            f"`num_components` must be at most the number of points n={n}, got {num_components}."
        )
    K = num_components
    _check_covariance_type(covariance_type)
    _checks.positive_int(max_iter, "max_iter")
    _checks.positive_int(n_init, "n_init")
    _checks.positive_int(kmeans_iter, "kmeans_iter", least=0)
    _checks.positive(tol, "tol")
    _checks.positive(reg_covar, "reg_covar")
    if init not in INITS:
        raise ValueError(f"`init` must be one of {INITS}, got {init!r}.")
    dtype = x.dtype
    if weights_init is not None:
        weights_init = _init_array(weights_init, (K,), dtype, "weights_init")
        w = _checks.concrete(weights_init)
        if w is not None:
            _checks.check(bool(np.all(w >= 0)), "weights_init", "must be non-negative.")
            atol = 1e-6 if dtype == jnp.float32 else 1e-8
            _checks.check(bool(abs(w.sum() - 1) <= atol), "weights_init", "must sum to 1.")
    if means_init is not None:
        m = jnp.asarray(means_init)
        if m.shape == (K, *event_shape):
            m = m.reshape(K, d)
        means_init = _init_array(m, (K, d), dtype, "means_init")
    if precisions_init is not None:
        want = _covariance_shape(covariance_type, K, d)
        precisions_init = _init_array(precisions_init, want, dtype, "precisions_init")
        p = _checks.concrete(precisions_init)
        if p is not None:
            _validate_covariances(p, covariance_type, "precisions_init")
    explicit = weights_init is not None and means_init is not None and precisions_init is not None
    if key is None:
        if not explicit:
            raise ValueError(
                "`key` is required unless weights_init, means_init and precisions_init "
                "are all given."
            )
        key = jr.key(0)
    _checks.key(key)
    return _fit(
        x.reshape(n, d),
        key,
        jnp.asarray(tol, dtype),
        jnp.asarray(reg_covar, dtype),
        weights_init,
        means_init,
        precisions_init,
        K=K,
        covariance_type=covariance_type,
        max_iter=max_iter,
        n_init=n_init,
        init="explicit" if explicit else init,
        kmeans_iter=kmeans_iter,
        event_shape=event_shape,
    )
