r"""Classical density baselines on the digits, fitted by scikit-learn.

Every baseline is a continuous density on the model scale $[-1, 1]^{64}$, fitted to the
*uniformly dequantised* training split (each integer pixel spread over its bin), so its
test bits/dim come from `scoreflow.metrics.bits_per_dim` exactly as a flow's do. The
number of components (mixtures) or the bandwidth (kernel density) is chosen on a
validation part of the training split, never on the test split.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .. import data
from .._custom_types import Key
from ..models import AbstractExactLikelihood
from ..models._base import check_event


class UniformDensity(AbstractExactLikelihood):
    r"""The uniform density on $[a, b)^D$: $\log_2 L$ bits/dim on $L$-level data (4.087 for 17)."""

    event_shape: tuple[int, ...] = eqx.field(static=True)
    low: float = eqx.field(static=True, default=-1.0)
    high: float = eqx.field(static=True, default=1.0)

    def loss(self, x, *, key):
        raise NotImplementedError("UniformDensity has nothing to train.")

    def log_prob(self, x, *, key=None):
        check_event(x, self.event_shape)
        d = int(np.prod(self.event_shape))
        inside = jnp.all((x >= self.low) & (x < self.high), axis=tuple(range(1, x.ndim)))
        return jnp.where(inside, -d * np.log(self.high - self.low), -jnp.inf).astype(x.dtype)

    def sample(self, sample_shape=(), *, key):
        shape, n = self._flat_shape(sample_shape)
        u = jr.uniform(key, (n, *self.event_shape), minval=self.low, maxval=self.high)
        return u.reshape(*shape, *self.event_shape)


class DequantisedSklearnDensity(AbstractExactLikelihood):
    """A fitted scikit-learn density (`GaussianMixture`, `KernelDensity`) on the contract.

    `log_prob` calls the estimator's `score_samples` on the host through
    `jax.pure_callback` (so it also runs under `jit`, at host speed); `sample` draws with
    the estimator's own `sample`, seeded from the key. It is not trainable: it was fitted
    by scikit-learn.

    Args:
        estimator: a fitted estimator with `score_samples` and `sample`.
        event_shape: the event shape the estimator's flat features are reshaped to.
        name: a label for tables.
    """

    estimator: object = eqx.field(static=True)
    event_shape: tuple[int, ...] = eqx.field(static=True)
    name: str = eqx.field(static=True, default="")

    def loss(self, x, *, key):
        raise NotImplementedError("A scikit-learn baseline is fitted by scikit-learn.")

    def log_prob(self, x, *, key=None):
        check_event(x, self.event_shape)
        n = x.shape[0]

        def host(v):
            flat = np.asarray(v, np.float64).reshape(n, -1)
            return np.asarray(self.estimator.score_samples(flat), v.dtype)  # type: ignore

        return jax.pure_callback(host, jax.ShapeDtypeStruct((n,), x.dtype), x)

    def sample(self, sample_shape=(), *, key):
        shape, n = self._flat_shape(sample_shape)
        seed = int(jr.randint(key, (), 0, 2**31 - 1))
        from sklearn.mixture import GaussianMixture

        est = self.estimator
        if isinstance(est, GaussianMixture):  # its `sample` reads the estimator's own seed
            est.random_state = seed
            x, _ = est.sample(n)
        else:
            x = est.sample(n, random_state=seed)  # type: ignore
        return jnp.asarray(x, jnp.result_type(float)).reshape(*shape, *self.event_shape)


def _dequantised(raw: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    levels = data.DIGITS_LEVELS
    u = rng.uniform(size=raw.shape)
    return (-1.0 + 2.0 * (raw + u) / levels).reshape(raw.shape[0], -1)


def digits_baselines(
    *,
    components: tuple[int, ...] = (1, 5, 10, 20, 40, 80, 120),
    bandwidths: tuple[float, ...] = (0.05, 0.08, 0.12, 0.16, 0.2, 0.3),
    validation_fraction: float = 0.2,
    seed: int = 0,
    key: Key | None = None,
) -> dict[str, tuple[AbstractExactLikelihood, dict]]:
    """The digits baselines, each chosen on a validation part of the training split.

    Returns `{name: (model, info)}` for "uniform", "GMM (diagonal)", "GMM (full)" and
    "KDE (Gaussian)", where `info` records the choice and the validation log-likelihood
    of every candidate. After the choice, each is refitted on the whole training split.

    Args:
        components: candidate numbers of mixture components.
        bandwidths: candidate kernel-density bandwidths (in units of the $[-1, 1]$ scale).
        validation_fraction: share of the training split held out for the choice.
        seed: seed of the dequantisation noise, the split and the fits.
        key: unused (the fits are seeded by `seed`); accepted for a uniform call.
    """
    del key
    from sklearn.mixture import GaussianMixture
    from sklearn.neighbors import KernelDensity

    rng = np.random.default_rng(seed)
    raw = np.asarray(data.digits_raw("train"))
    y = _dequantised(raw, rng)
    perm = rng.permutation(len(y))
    n_val = int(round(validation_fraction * len(y)))
    val, fit = y[perm[:n_val]], y[perm[n_val:]]
    shape = tuple(raw.shape[1:])
    out: dict[str, tuple[AbstractExactLikelihood, dict]] = {
        "uniform": (UniformDensity(shape), {"choice": "none"})
    }

    for cov in ("diag", "full"):
        scores = {}
        for k in components:
            est = GaussianMixture(k, covariance_type=cov, reg_covar=1e-4, random_state=seed)
            scores[k] = float(est.fit(fit).score(val))
        best = max(scores, key=lambda k: scores[k])
        est = GaussianMixture(best, covariance_type=cov, reg_covar=1e-4, random_state=seed)
        est.fit(y)
        label = f"GMM ({'diagonal' if cov == 'diag' else 'full'})"
        info = {"components": best, "validation_loglik": scores, "reg_covar": 1e-4}
        out[label] = (DequantisedSklearnDensity(estimator=est, event_shape=shape, name=label), info)

    scores = {}
    for h in bandwidths:
        scores[h] = float(KernelDensity(bandwidth=h).fit(fit).score(val) / len(val))
    best_h = max(scores, key=lambda h: scores[h])
    kde = KernelDensity(bandwidth=best_h).fit(y)
    out["KDE (Gaussian)"] = (
        DequantisedSklearnDensity(estimator=kde, event_shape=shape, name="KDE (Gaussian)"),
        {"bandwidth": best_h, "validation_loglik": scores},
    )
    return out
