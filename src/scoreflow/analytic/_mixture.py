import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, Int

from .. import _checks
from .._custom_types import Key, ScalarLike
from ..sde import AbstractPrediction, AbstractSDE
from ..sde._parameterisation import check_parameterisation


class GaussianMixture(eqx.Module):
    r"""A Gaussian mixture $p_0 = \sum_k w_k N(\mu_k, \Sigma_k)$.

    Under any linear SDE its noisy marginal is again a mixture,
    $p_t = \sum_k w_k N(\alpha_t \mu_k, \alpha_t^2 \Sigma_k + \sigma_t^2 I)$, so the
    log-density, score and posterior mean $E[x_0 \mid x_t]$ are exact at every $t$:
    see `noised`. This is the oracle the tests and benchmarks check against.

    Methods accept one example `(dim,)` or any batch `(*batch, dim)`.

    Args:
        weights: `(K,)` positive mixture weights summing to one.
        means: `(K, dim)` component means.
        covariances: `(K, dim)` diagonal variances, or `(K, dim, dim)` full
            symmetric positive-definite covariances.

    Raises:
        ValueError: on mismatched shapes, a non-floating dtype, NaN or infinite
            parameters, weights that are not a probability vector, or non-positive
            (definite) covariances. Parameters traced under `jit` are not inspected.
    """

    weights: Float[Array, " K"]
    means: Float[Array, "K dim"]
    covariances: Float[Array, "K dim"] | Float[Array, "K dim dim"]

    def __init__(self, weights, means, covariances):
        self.weights = jnp.asarray(weights)
        self.means = jnp.asarray(means)
        self.covariances = jnp.asarray(covariances)

    def __check_init__(self):
        K, d = self._check_shapes()
        for name, value in (
            ("weights", self.weights),
            ("means", self.means),
            ("covariances", self.covariances),
        ):
            if not jnp.issubdtype(value.dtype, jnp.floating):
                raise ValueError(f"`{name}` must be floating-point, got dtype {value.dtype}.")
            # Checked on concrete values only: a mixture built inside `jit` is traced.
            v = _checks.concrete(value)
            if v is not None and not bool(np.all(np.isfinite(v))):
                raise ValueError(f"`{name}` must be finite, got {v}.")
        w = _checks.concrete(self.weights)
        if w is not None:
            _checks.check(bool(np.all(w > 0)), "weights", f"must be positive, got {w}.")
            _checks.check(
                bool(abs(w.sum() - 1) < 1e-5),
                "weights",
                f"must sum to 1, got {w.sum()}.",
            )
        c = _checks.concrete(self.covariances)
        if c is not None:
            if c.ndim == 2:
                ok = bool(np.all(c > 0))
            else:
                ok = bool(np.allclose(c, np.swapaxes(c, -1, -2))) and bool(
                    np.all(np.linalg.eigvalsh(c) > 0)
                )
            _checks.check(ok, "covariances", "must be positive (definite and symmetric).")

    def _check_shapes(self):
        if self.weights.ndim != 1:
            raise ValueError(f"`weights` must have shape (K,), got {self.weights.shape}.")
        K = self.weights.shape[0]
        if self.means.ndim != 2 or self.means.shape[0] != K:
            raise ValueError(f"`means` must have shape (K={K}, dim), got {self.means.shape}.")
        d = self.means.shape[1]
        if self.covariances.shape not in ((K, d), (K, d, d)):
            raise ValueError(
                f"`covariances` must have shape (K, dim) = {(K, d)} (diagonal) or "
                f"(K, dim, dim) = {(K, d, d)} (full), got {self.covariances.shape}."
            )
        return K, d

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def diagonal(self) -> bool:
        return self.covariances.ndim == 2

    def full_covariances(self) -> Float[Array, "K dim dim"]:
        if self.diagonal:
            return jax.vmap(jnp.diag)(self.covariances)
        return self.covariances

    def mean(self) -> Float[Array, " dim"]:
        """Mean of the mixture."""
        return self.weights @ self.means

    def covariance(self) -> Float[Array, "dim dim"]:
        """Covariance of the mixture (law of total covariance)."""
        m = self.mean()
        dev = self.means - m[None, :]
        within = jnp.einsum("k,kij->ij", self.weights, self.full_covariances())
        return within + jnp.einsum("k,ki,kj->ij", self.weights, dev, dev)

    def log_prob(self, x: Float[Array, "*batch dim"]) -> Float[Array, "*batch"]:
        r"""Exact $\\log p_0(x)$."""
        return _Noisy(self, 1.0, 0.0).log_prob(self._event(x))

    def sample(self, num: int, *, key: Key) -> Float[Array, "{num} dim"]:
        """Draw `num` exact samples of $p_0$."""
        return self.sample_components(num, key=key)[0]

    def sample_components(
        self, num: int, *, key: Key
    ) -> tuple[Float[Array, "{num} dim"], Int[Array, " {num}"]]:
        """Exact samples of $p_0$ and the component each was drawn from.

        Raises:
            ValueError: on a `num` that is not an int >= 0, or a `key` that is not one
                PRNG key.
        """
        _checks.positive_int(num, "num", least=0)
        _checks.key(key)
        kc, kz = jr.split(key)
        comp = jr.categorical(kc, jnp.log(self.weights), shape=(num,))
        z = jr.normal(kz, (num, self.dim), self.means.dtype)
        if self.diagonal:
            noise = jnp.sqrt(self.covariances[comp]) * z
        else:
            chol = jnp.linalg.cholesky(self.covariances)
            noise = jnp.einsum("nij,nj->ni", chol[comp], z)
        return self.means[comp] + noise, comp

    def component_log_probs(self, x: Float[Array, "*batch dim"]) -> Float[Array, "*batch K"]:
        r"""$\log w_k + \log N(x; \mu_k, \Sigma_k)$ for every component."""
        return _Noisy(self, 1.0, 0.0).joint(self._event(x))

    def noised(self, sde: AbstractSDE, parameterisation: str = "score") -> "NoisyMixture":
        """The exact noisy marginals $p_t$ of this mixture under `sde` (see `NoisyMixture`).

        `parameterisation` names the exact quantity the returned model outputs.
        """
        return NoisyMixture(self, sde, parameterisation)

    def _event(self, x):
        x = jnp.asarray(x)
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise ValueError(f"`x` must have shape (*batch, dim={self.dim}), got {x.shape}.")
        return x


def _eigendecomposition(mixture: GaussianMixture):
    r"""$\Sigma_k = U_k \operatorname{diag}(s_k) U_k^\top$ of every component, or None if diagonal.

    Computed once per noisy model, so that its evaluations need no LAPACK call. Nothing
    is differentiated through `eigh` (its derivative is undefined at repeated eigenvalues):
    `_precision_terms` carries the covariances' own derivative.
    """
    if mixture.diagonal:
        return None
    s, u = jnp.linalg.eigh(mixture.covariances)
    return jax.lax.stop_gradient(u), jax.lax.stop_gradient(s)


@jax.custom_jvp
def _precision_terms(cov, u, s, alpha, sigma, r):
    r"""$\log\det C_k$ and $C_k^{-1} r_k$ for $C_k = \alpha^2\Sigma_k + \sigma^2 I$, by products.

    $C_k = U_k \operatorname{diag}(q_k) U_k^\top$ with $q_k = \alpha^2 s_k + \sigma^2$, so
    $\log\det C_k = \sum \log q_k$ and $C_k^{-1} r_k = U_k (U_k^\top r_k / q_k)$.
    """
    q = alpha**2 * s + sigma**2
    prec_r = jnp.einsum("kij,kj->ki", u, jnp.einsum("kji,kj->ki", u, r) / q)
    return jnp.sum(jnp.log(q), -1), prec_r


@jax.custom_jvp
def _diagonal_mahalanobis(x, am, ivar):
    r"""$\sum_j (x_j - \alpha\mu_{kj})^2 / v_{kj}$ for every component $k$, from the residuals.

    The value is summed from the residuals, so no digits cancel; the tangent is
    contracted over the coordinates by matrix products,
    $\sum_j 2 r_{kj} w_{kj} dx_j = 2 (w_k \cdot (x \odot dx) - (\alpha\mu_k w_k) \cdot dx)$
    with $w = 1/v$ (and likewise for $d(\alpha\mu)$ and $dw$), so that a reverse pass
    over a batch of draws keeps no (batch, K, dim) residuals: that pass was about 90 % of
    the cost of differentiating a solve through a diagonal mixture (9x slower than
    the contracted form on 1024 draws, K = 20, dim 64). Exact to every order.
    """
    r = x[None, :] - am
    # As a contraction, not `sum(r * r * ivar, -1)`: on jaxlib 0.10's CPU backend the
    # reduction form is fused (YNNPACK) with the softmax and products around it into
    # code about 8x slower than this, for the same arithmetic.
    return jnp.einsum("kd,kd->k", r * r, ivar)


def _diagonal_mahalanobis_jvp(primals, tangents):
    x, am, ivar = primals
    dx, dam, divar = tangents
    maha = _diagonal_mahalanobis(x, am, ivar)
    am_ivar = am * ivar
    dmaha = jnp.zeros_like(maha)
    if not _is_zero(dx):
        dmaha = dmaha + 2 * (ivar @ (x * dx) - am_ivar @ dx)
    if not _is_zero(dam):
        dmaha = dmaha + 2 * (jnp.sum(am_ivar * dam, -1) - (ivar * dam) @ x)
    if not _is_zero(divar):
        dmaha = dmaha + divar @ (x * x) - 2 * (am * divar) @ x + jnp.sum(am * am * divar, -1)
    return maha, dmaha


def _is_zero(tangent):
    return type(tangent) is jax.custom_derivatives.SymbolicZero


def _precision_terms_jvp(primals, tangents):
    # d log det C = tr(C^{-1} dC), d(C^{-1} r) = C^{-1} (dr - dC C^{-1} r), with
    # dC = 2 alpha dalpha Sigma + alpha^2 dSigma + 2 sigma dsigma I; the first and last
    # terms are diagonal in U's basis. (U, s) are a cache of `cov` and carry no tangent
    # of their own. Exact to every order in (alpha, sigma, r); to first order in `cov`.
    # Zero tangents are symbolic, so a solve that differentiates w.r.t. time and state
    # alone pays nothing for the covariance terms.
    cov, u, s, alpha, sigma, r = primals
    dcov, _, _, dalpha, dsigma, dr = tangents
    q = alpha**2 * s + sigma**2
    w = jnp.einsum("kji,kj->ki", u, r) / q
    prec_r = jnp.einsum("kij,kj->ki", u, w)
    logdet = jnp.sum(jnp.log(q), -1)
    dw = jnp.zeros_like(w)
    dlogdet = jnp.zeros_like(logdet)
    if not _is_zero(dr):
        dw = dw + jnp.einsum("kji,kj->ki", u, dr) / q
    dq = jnp.zeros_like(q)
    if not _is_zero(dalpha):
        dq = dq + 2 * alpha * dalpha * s
    if not _is_zero(dsigma):
        dq = dq + 2 * sigma * dsigma
    dw = dw - dq * w / q
    dlogdet = dlogdet + jnp.sum(dq / q, -1)
    if not _is_zero(dcov):
        # Symmetrised, as `cholesky` and `eigh` read their input.
        dcov = 0.5 * (dcov + jnp.swapaxes(dcov, -1, -2))
        dw = dw - alpha**2 * jnp.einsum("kji,kj->ki", u, jnp.einsum("kij,kj->ki", dcov, prec_r)) / q
        dlogdet = dlogdet + alpha**2 * jnp.sum(jnp.einsum("kji,kjl,kli->ki", u, dcov, u) / q, -1)
    return (logdet, prec_r), (dlogdet, jnp.einsum("kij,kj->ki", u, dw))


_precision_terms.defjvp(_precision_terms_jvp, symbolic_zeros=True)
_diagonal_mahalanobis.defjvp(_diagonal_mahalanobis_jvp, symbolic_zeros=True)


def _rotated_terms(u, s, means, log_w, alpha, sigma, x):
    # (log w_k + log N_k(x), score, E[x0 | x]) of a full-covariance mixture from its
    # eigendecomposition, with (U, s) constants. Every product with a draw is either
    # x against all K rotations at once or a sum over k and the coordinates together,
    # so that under `vmap` both are one matrix product over the batch (about 3x faster
    # than rotating each residual x - alpha mu_k separately, at K = 20, d = 64). The
    # difference U^T x - alpha U^T mu_k costs |x| / |x - alpha mu_k| ulps of each rotated
    # residual (the dense-solve checks hold at 1e-10).
    q = alpha**2 * s + sigma**2
    rot = jnp.einsum("j,kji->ki", x, u) - alpha * jnp.einsum("kj,kji->ki", means, u)
    w = rot / q
    d = x.shape[-1]
    maha = jnp.einsum("ki,ki->k", rot, w)
    log_n = -0.5 * (maha + jnp.sum(jnp.log(q), -1) + d * jnp.log(2 * jnp.pi))
    joint = log_w + log_n
    resp = jax.nn.softmax(joint)
    cw = resp[:, None] * w
    score = -jnp.einsum("kji,ki->j", u, cw)
    denoise = resp @ means + alpha * jnp.einsum("kji,ki->j", u, s * cw)
    return joint, score, denoise


def _residual_terms(cov, u, s, means, log_w, alpha, sigma, x):
    # The same three through `_precision_terms` (which carries the covariances'
    # derivative): each residual rotated on its own.
    r = x[None, :] - alpha * means
    logdet, prec_r = _precision_terms(cov, u, s, alpha, sigma, r)
    d = x.shape[-1]
    joint = log_w - 0.5 * (jnp.sum(r * prec_r, -1) + logdet + d * jnp.log(2 * jnp.pi))
    resp = jax.nn.softmax(joint)
    post = means + alpha * jnp.einsum("kij,kj->ki", cov, prec_r)
    return joint, -resp @ prec_r, resp @ post


@jax.custom_jvp
def _full_terms(cov, u, s, means, log_w, alpha, sigma, x):
    """`_rotated_terms`, whose derivative w.r.t. `cov` is `_residual_terms`'."""
    return _rotated_terms(u, s, means, log_w, alpha, sigma, x)


def _full_terms_jvp(primals, tangents):
    # W.r.t. everything but the covariances: JAX's derivative of `_rotated_terms` (exact
    # to every order). W.r.t. the covariances, to first order: `_residual_terms`'.
    cov, u, s, means, log_w, alpha, sigma, x = primals
    dcov, _, _, *rest = tangents
    args = (means, log_w, alpha, sigma, x)
    dargs = tuple(jnp.zeros_like(a) if _is_zero(t) else t for a, t in zip(args, rest, strict=True))
    out, dout = jax.jvp(lambda *a: _rotated_terms(u, s, *a), args, dargs)
    if not _is_zero(dcov):
        _, dc = jax.jvp(lambda c: _residual_terms(c, u, s, *args), (cov,), (dcov,))
        dout = jax.tree.map(jnp.add, dout, dc)
    return out, dout


_full_terms.defjvp(_full_terms_jvp, symbolic_zeros=True)


class _Noisy(eqx.Module):
    r"""The mixture's marginal at fixed $(\alpha, \sigma)$, vectorised over x."""

    mixture: GaussianMixture
    alpha: ScalarLike
    sigma: ScalarLike
    # Log-weights replacing the mixture's, -inf for dropped components (a class's
    # sub-mixture with a traced label); None: the mixture's own.
    log_weights: Array | None = None
    # `_eigendecomposition(mixture)` of full covariances; None: a batched Cholesky and two
    # triangular solves per evaluation instead (the mixture's own `log_prob`, outside any
    # solver loop, where it is differentiable to every order in the covariances).
    eig: tuple[Array, Array] | None = None

    def _log_w(self):
        return jnp.log(self.mixture.weights) if self.log_weights is None else self.log_weights

    def _per_component(self, x):
        # Returns log N_k(x) and the precision-times-residual P_k (x - alpha mu_k); for a
        # diagonal mixture `None` in place of P_k, which `_score1` and `_denoise1` never
        # form (see `_diagonal_mahalanobis`).
        m = self.mixture
        a, s = self.alpha, self.sigma
        d = m.dim
        prec_r = None
        if m.diagonal:
            var = a**2 * m.covariances + s**2
            logdet = jnp.sum(jnp.log(var), axis=-1)
            maha = _diagonal_mahalanobis(x, a * m.means, 1 / var)
        else:  # full covariances without `eig` (with it: `_full1`)
            r = x[None, :] - a * m.means
            cov = a**2 * m.covariances + s**2 * jnp.eye(d, dtype=m.covariances.dtype)[None]
            chol = jnp.linalg.cholesky(cov)
            half = jax.vmap(lambda L, v: jax.scipy.linalg.solve_triangular(L, v, lower=True))(
                chol, r
            )
            prec_r = jax.vmap(lambda L, v: jax.scipy.linalg.solve_triangular(L.T, v, lower=False))(
                chol, half
            )
            logdet = 2 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), -1)
            maha = jnp.sum(half**2, axis=-1)
        log_n = -0.5 * (maha + logdet + d * jnp.log(2 * jnp.pi))
        return log_n, prec_r

    def _full1(self, x):
        m = self.mixture
        assert self.eig is not None
        u, eigvals = self.eig
        alpha, sigma = jnp.asarray(self.alpha), jnp.asarray(self.sigma)
        return _full_terms(m.covariances, u, eigvals, m.means, self._log_w(), alpha, sigma, x)

    def _joint1(self, x):
        if self.eig is not None:
            return self._full1(x)[0]
        log_n, _ = self._per_component(x)
        return self._log_w() + log_n

    def _log_prob1(self, x):
        return jax.nn.logsumexp(self._joint1(x))

    def _diagonal_precision(self):
        m = self.mixture
        ivar = 1 / (self.alpha**2 * m.covariances + self.sigma**2)
        return ivar, self.alpha * m.means * ivar

    def _score1(self, x):
        if self.eig is not None:
            return self._full1(x)[1]
        log_n, prec_r = self._per_component(x)
        resp = jax.nn.softmax(self._log_w() + log_n)
        if prec_r is None:
            # sum_k resp_k P_k (x - alpha mu_k), contracted over k before x enters. The x
            # and alpha mu_k terms cancel to |x| / |x - alpha mu_k| ulps of the result
            # (the responsibilities, from the residuals, lose nothing).
            ivar, am_ivar = self._diagonal_precision()
            return resp @ am_ivar - x * (resp @ ivar)
        return -resp @ prec_r

    def _denoise1(self, x):
        if self.eig is not None:
            return self._full1(x)[2]
        m = self.mixture
        log_n, prec_r = self._per_component(x)
        resp = jax.nn.softmax(self._log_w() + log_n)
        # E[x0 | x_t, k] = mu_k + alpha Sigma_k (Sigma_t,k)^{-1} (x - alpha mu_k)
        if prec_r is None:
            ivar, am_ivar = self._diagonal_precision()
            gain = self.alpha * m.covariances
            return resp @ (m.means - gain * am_ivar) + x * (resp @ (gain * ivar))
        post = m.means + self.alpha * jnp.einsum("kij,kj->ki", m.covariances, prec_r)
        return resp @ post

    def joint(self, x):
        return jnp.vectorize(self._joint1, signature="(d)->(k)")(x)

    def log_prob(self, x):
        return jnp.vectorize(self._log_prob1, signature="(d)->()")(x)

    def score(self, x):
        return jnp.vectorize(self._score1, signature="(d)->(d)")(x)

    def denoise(self, x):
        return jnp.vectorize(self._denoise1, signature="(d)->(d)")(x)


def exact_output(noisy: _Noisy, parameterisation: str, x):
    """The exact `parameterisation` quantity of a noisy mixture, each from its closed form."""
    if parameterisation == "x0":
        return noisy.denoise(x)
    exact_score = noisy.score(x)
    if parameterisation == "score":
        return exact_score
    alpha, sigma = jnp.asarray(noisy.alpha), jnp.asarray(noisy.sigma)
    eps = -sigma * exact_score
    if parameterisation == "eps":
        return eps
    return alpha * eps - sigma * noisy.denoise(x)


class NoisyMixture(AbstractPrediction):
    r"""The noisy marginals $p_t$ of a `GaussianMixture` under an SDE, in closed form.

    It is an exact model of the noisy data (`scoreflow.sde.AbstractPrediction`), so it
    plugs straight into every sampler, likelihood and loss of scoreflow. Its own output
    `noisy(t, x)` is the exact quantity named by `parameterisation` (the score by
    default, or the posterior mean for `"x0"`, ...); the other readings (`score`, `eps`,
    `x0`, `v`) are converted from it. `log_prob`, `denoise` and `sample` are always
    exact.

    Full covariances are eigendecomposed once, here,
    $\Sigma_k = U_k \operatorname{diag}(s_k) U_k^\top$, so that every evaluation at
    $(\alpha_t, \sigma_t)$ is matrix products: $\alpha_t^2\Sigma_k + \sigma_t^2 I =
    U_k \operatorname{diag}(\alpha_t^2 s_k + \sigma_t^2) U_k^\top$
    (no Cholesky or triangular solve per evaluation, and no LAPACK call inside a solve:
    batched LAPACK calls running concurrently can deadlock XLA:CPU's thread pool, see
    `benchmarks/RESULTS.md`, issue 19). The decomposition is a cache of
    `mixture.covariances`: build a new `NoisyMixture` (or call `mixture.noised`) for new
    covariances rather than replacing them with `eqx.tree_at`. Derivatives with respect
    to time and state are exact to every order; with respect to the covariances, to
    first order (gradients), and none passes through the decomposition itself.

    Args:
        mixture: the data distribution $p_0$.
        sde: the noising SDE.
        parameterisation: which exact quantity `__call__` returns (`"score"`, `"eps"`,
            `"x0"` or `"v"`).
    """

    mixture: GaussianMixture
    sde: AbstractSDE
    _eig: tuple[Array, Array] | None
    parameterisation: str = eqx.field(static=True, default="score")

    def __init__(self, mixture: GaussianMixture, sde: AbstractSDE, parameterisation="score"):
        if not isinstance(mixture, GaussianMixture):
            raise ValueError(
                f"`mixture` must be a `GaussianMixture`, got {type(mixture).__name__}."
            )
        if not isinstance(sde, AbstractSDE):
            raise ValueError(
                f"`sde` must be a `scoreflow.sde.AbstractSDE`, got {type(sde).__name__}."
            )
        self.mixture = mixture
        self.sde = sde
        self.parameterisation = parameterisation
        self._eig = _eigendecomposition(mixture)

    def __check_init__(self):
        check_parameterisation(self.parameterisation)

    def _at(self, t):
        alpha, sigma = self.sde.marginal(t)
        return _Noisy(self.mixture, alpha, sigma, eig=self._eig)

    def __call__(self, t: ScalarLike, x: Float[Array, "*batch dim"]) -> Float[Array, "*batch dim"]:
        r"""The exact `parameterisation` quantity at $(t, x)$."""
        return exact_output(self._at(t), self.parameterisation, self.mixture._event(x))

    def log_prob(self, t: ScalarLike, x: Float[Array, "*batch dim"]) -> Float[Array, "*batch"]:
        r"""Exact $\log p_t(x)$."""
        return self._at(t).log_prob(self.mixture._event(x))

    def denoise(self, t: ScalarLike, x: Float[Array, "*batch dim"]) -> Float[Array, "*batch dim"]:
        r"""Exact posterior mean $E[x_0 \mid x_t = x]$ (the ideal denoiser)."""
        return self._at(t).denoise(self.mixture._event(x))

    def sample(self, t: ScalarLike, num: int, *, key: Key) -> Float[Array, "{num} dim"]:
        """Exact samples of $p_t$: noised samples of $p_0$."""
        _checks.positive_int(num, "num", least=0)
        _checks.key(key)
        k0, kz = jr.split(key)
        x0 = self.mixture.sample(num, key=k0)
        alpha, sigma = self.sde.marginal(t)
        return alpha * x0 + sigma * jr.normal(kz, x0.shape, x0.dtype)
