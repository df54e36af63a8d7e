"""The evaluation protocol (scoreflow.evaluation) on cases with known answers."""

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from numpy.testing import assert_allclose
from threadpoolctl import threadpool_limits

import scoreflow as sf
from scoreflow import data, evaluation
from scoreflow.models import AbstractExactLikelihood, AbstractGenerativeModel


class _Exact(AbstractExactLikelihood):
    """The ring mixture itself, or one of its components, on the model contract."""

    mixture: sf.analytic.GaussianMixture
    event_shape: tuple[int, ...] = eqx.field(static=True, default=(2,))

    def loss(self, x, *, key):
        raise NotImplementedError

    def log_prob(self, x, *, key=None):
        return self.mixture.log_prob(x)

    def sample(self, sample_shape=(), *, key):
        return self.mixture.sample(sample_shape, key=key)


class _TestSplit(AbstractGenerativeModel):
    """Samples are the digits test split itself: every sample metric at its best."""

    event_shape: tuple[int, ...] = eqx.field(static=True, default=(1, 8, 8))

    def loss(self, x, *, key):
        raise NotImplementedError

    def sample(self, sample_shape=(), *, key):
        return data.digits("test")


def test_evaluate_2d_against_the_exact_mixture_and_a_collapsed_one():
    ring = data.ring_mixture()
    opts = dict(num_samples=300, num_eval=300, num_permutations=100, key=jr.key(0))
    good = evaluation.evaluate_2d(_Exact(ring), ring, **opts)
    assert good.kl == 0.0 and good.kl_se == 0.0
    assert good.modes_captured == 8 and good.mmd_p_value > 0.01
    one = sf.analytic.GaussianMixture(
        ring.weights[:1] * 0 + 1, ring.means[:1], ring.covariances[:1]
    )
    bad = evaluation.evaluate_2d(_Exact(one), ring, **opts)
    assert bad.modes_captured == 1 and bad.mmd_p_value < 0.01
    assert bad.kl == np.inf or bad.kl > 1.0
    with pytest.raises(ValueError, match="event shape"):
        evaluation.evaluate_2d(_TestSplit(), ring, key=jr.key(0))


def test_digits_baselines_and_the_protocol():
    # Small candidate sets: the choice, not its size, is what is tested here. One BLAS
    # thread: on a busy machine (xdist workers on every core) the threads of the mixtures'
    # EM spin against each other, some twenty times slower than one.
    with threadpool_limits(1):
        baselines = evaluation.digits_baselines(components=(1, 3), bandwidths=(0.1, 0.2))
    # 359 samples, as many as the test split: the metrics compile once, for every call
    # here and for `test_the_test_split_scores_perfectly_against_itself`.
    uniform = evaluation.evaluate_digits(
        baselines["uniform"][0], name="uniform", num_samples=359, key=jr.key(1)
    )
    # Uniform over 17 levels: log2(17) bits per dimension, exactly, for every image.
    assert_allclose(uniform.bits_per_dim, np.log2(17), rtol=1e-12)
    assert uniform.likelihood == "exact" and uniform.num_nonfinite == 0
    gmm, info = baselines["GMM (full)"]
    assert info["components"] in (1, 3) and set(info["validation_loglik"]) == {1, 3}
    best = max(info["validation_loglik"], key=info["validation_loglik"].get)
    assert info["components"] == best
    with threadpool_limits(1):
        row = evaluation.evaluate_digits(
            gmm, name="GMM", num_samples=359, num_test=128, key=jr.key(2)
        )
    assert row.bits_per_dim < uniform.bits_per_dim and row.num_test == 128
    assert row.fd < uniform.fd and row.precision > uniform.precision
    table = evaluation.digits_table([uniform, row])
    assert "| uniform | 4.087 ± 0.000 |" in table and "(128 images)" in table


def test_the_test_split_scores_perfectly_against_itself(tmp_path):
    png = tmp_path / "grid.png"
    r = evaluation.evaluate_digits(_TestSplit(), num_samples=359, png=str(png), key=jr.key(3))
    assert r.bits_per_dim is None and r.likelihood == "none"
    assert r.fd < 1e-6 and r.precision == 1.0 and r.recall == 1.0 and r.coverage == 1.0
    assert png.exists()


def test_quantise_rounds_to_bin_centres():
    x = jnp.array([-3.0, -1.0, -0.99, 0.0, 0.999, 5.0])
    q = np.asarray(evaluation.quantise(x))
    centres = np.asarray(sf.metrics.bin_centres(jnp.arange(17), levels=17))
    assert np.all(np.isin(q, centres))
    assert q[0] == centres[0] and q[-1] == centres[-1] and q[3] == centres[8]


def test_protocol_bad_input():
    ring = data.ring_mixture()
    with pytest.raises(ValueError, match="event shape"):
        evaluation.evaluate_digits(_Exact(ring), key=jr.key(0))
    with pytest.raises(ValueError, match="no bound likelihood"):
        evaluation.evaluate_digits(
            evaluation.UniformDensity((1, 8, 8)), likelihood="bound", key=jr.key(0)
        )
