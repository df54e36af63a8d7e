"""Energy-based models: the losses against closed forms, the replay buffer, exact resume."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from jaxtyping import TypeCheckError
from numpy.testing import assert_allclose

import scoreflow as sf
from scoreflow import losses, models, nn, train


class Quadratic(eqx.Module):
    r"""$E(x) = \|x - \mu\|^2 / (2 s^2)$: $p = N(\mu, s^2 I)$, $\log Z = d\log(s\sqrt{2\pi})$."""

    mu: jax.Array
    log_s: jax.Array

    def __call__(self, x):
        return 0.5 * jnp.sum((x - self.mu) ** 2) * jnp.exp(-2 * self.log_s)

    def log_z(self):
        d = self.mu.shape[0]
        return d * (self.log_s + 0.5 * jnp.log(2 * jnp.pi))


def _gaussian_data(n, key, mu=(1.0, -0.5), s=0.7):
    return jnp.asarray(mu)[None] + s * jr.normal(key, (n, len(mu)))


def _fit(ebm, x, num_steps):
    return train.fit(
        ebm,
        x,
        num_steps=num_steps,
        batch_size=256,
        optimizer=train.default_optimizer(2e-2),
        ema_decay=None,
        progress=False,
        key=jr.key(1),
    )


def test_cd_gradient_with_exact_negatives_is_the_likelihood_gradient():
    # The MLE gradient is the data term minus the model term: with exact samples of the
    # model as negatives, the CD surrogate's gradient is the negative log-likelihood's.
    energy = Quadratic(jnp.asarray([0.3, 0.2]), jnp.asarray(-0.2))

    @eqx.filter_jit  # one program: op by op, every primitive would compile on its own
    def gradients(energy, key_x, key_n):
        x = _gaussian_data(512, key_x)
        s = jnp.exp(energy.log_s)
        negatives = energy.mu[None] + s * jr.normal(key_n, (200_000, 2))
        cd = eqx.filter_grad(lambda e: losses.contrastive_divergence(e, x, negatives))(energy)
        nll = eqx.filter_grad(lambda e: jnp.mean(jax.vmap(e)(x)) + e.log_z())(energy)
        # And the gradient with respect to the negatives themselves.
        g = jax.grad(lambda n: losses.contrastive_divergence(energy, x, n))(negatives[:8])
        return cd, nll, g

    cd, nll, g = gradients(energy, jr.key(0), jr.key(1))
    assert_allclose(cd.mu, nll.mu, atol=1e-2)
    assert_allclose(cd.log_s, nll.log_s, atol=1e-2)
    # No gradient reaches the negatives.
    assert float(jnp.max(jnp.abs(g))) == 0.0


def test_energy_penalty_is_the_mean_squared_energies():
    energy = Quadratic(jnp.zeros(2), jnp.asarray(0.0))
    x, neg = jr.normal(jr.key(0), (16, 2)), jr.normal(jr.key(1), (8, 2))
    e_x, e_n = jax.vmap(energy)(x), jax.vmap(energy)(neg)
    want = e_x.mean() - e_n.mean() + 0.5 * (jnp.mean(e_x**2) + jnp.mean(e_n**2))
    assert_allclose(losses.contrastive_divergence(energy, x, neg, energy_penalty=0.5), want)


def test_nce_is_minimised_by_the_data_density_and_its_normaliser():
    # Gutmann & Hyvärinen 2012, Theorem 2: the minimiser is p_data, with c = log Z.
    x = _gaussian_data(4000, jr.key(0))
    noise = models.gaussian_noise(x)
    ebm = models.EBM(
        Quadratic(jnp.zeros(2), jnp.asarray(0.0)),
        event_shape=(2,),
        training=models.NoiseContrastive(noise, ratio=2.0),
        low=-3.0,
        high=3.0,
    )
    res = _fit(ebm, x, 1500)
    m = res.model
    assert_allclose(m.energy.mu, [1.0, -0.5], atol=0.08)
    assert_allclose(jnp.exp(m.energy.log_s), 0.7, atol=0.05)
    # The learned constant is the energy's log-normaliser (self-normalisation).
    assert_allclose(m.log_z, m.energy.log_z(), atol=0.06)


@pytest.mark.parametrize("kind", ["sliced", pytest.param("implicit", marks=pytest.mark.slow)])
def test_score_matching_of_the_energy_recovers_a_gaussian(kind):
    x = _gaussian_data(4000, jr.key(0))
    ebm = models.EBM(
        Quadratic(jnp.zeros(2), jnp.asarray(0.0)),
        event_shape=(2,),
        training=models.EnergyScoreMatching(kind, num_slices=4),
    )
    res = _fit(ebm, x, 800)
    assert_allclose(res.model.energy.mu, [1.0, -0.5], atol=0.06)
    assert_allclose(jnp.exp(res.model.energy.log_s), 0.7, atol=0.04)


@pytest.mark.slow
def test_denoising_score_matching_of_the_energy_is_dsm_at_one_level():
    # At the one level sigma it fits the data convolved with N(0, sigma^2): a Gaussian
    # of variance s^2 + sigma^2.
    x = _gaussian_data(4000, jr.key(0))
    ebm = models.EBM(
        Quadratic(jnp.zeros(2), jnp.asarray(0.0)),
        event_shape=(2,),
        training=models.EnergyScoreMatching("denoising", sigma=0.3),
    )
    res = _fit(ebm, x, 800)
    assert_allclose(jnp.exp(res.model.energy.log_s), np.hypot(0.7, 0.3), atol=0.04)


def test_replay_buffer_draws_distinct_chains_and_restarts_a_fraction():
    buf = losses.ReplayBuffer(1000, (2,), low=5.0, high=6.0, key=jr.key(0))
    # Move every chain out of the noise box, so restarted ones are recognisable.
    buf = buf.update(jnp.arange(1000), jnp.zeros((1000, 2)))
    idx, y0 = buf.draw(500, restart=0.05, key=jr.key(1))
    assert len(np.unique(np.asarray(idx))) == 500
    restarted = np.asarray(jnp.all(y0 >= 5.0, axis=1))
    assert 0.02 < restarted.mean() < 0.09
    assert bool(jnp.all((y0 == 0) | restarted[:, None]))
    new = buf.update(idx, jnp.ones((500, 2)))
    assert float(new.samples[idx].min()) == 1.0 and float(buf.samples.max()) == 0.0
    with pytest.raises(ValueError, match="`num`"):
        buf.draw(1001, key=jr.key(2))
    with pytest.raises(ValueError, match="`restart`"):
        buf.draw(10, restart=1.5, key=jr.key(2))


def _pcd_ebm():
    energy = nn.EnergyMLP((2,), width=16, depth=2, key=jr.key(0))
    training = models.ContrastiveDivergence(num_steps=3, step_size=1e-2, buffer_size=64)
    return models.EBM(energy, event_shape=(2,), training=training, low=-2.0, high=2.0)


def _pcd_fit(num_steps, **kw):
    x = sf.data.ring_mixture().sample(256, key=jr.key(1)) / 4
    return train.fit(
        _pcd_ebm(),
        x,
        num_steps=num_steps,
        batch_size=16,
        steps_per_chunk=5,
        progress=False,
        key=jr.key(2),
        **kw,
    )


def test_persistent_cd_resumes_exactly_with_its_buffer(tmp_path):
    full = _pcd_fit(15)
    buf = full.state.model_state
    assert isinstance(buf, losses.ReplayBuffer)
    # The buffer moved: chains were advanced and written back.
    start = _pcd_ebm().init_state(key=jr.fold_in(jr.key(2), 1))
    assert not np.array_equal(np.asarray(buf.samples), np.asarray(start.samples))
    path = tmp_path / "pcd.eqx"
    _pcd_fit(10, checkpoint=path)
    resumed = _pcd_fit(15, checkpoint=path)
    for a, b in zip(
        jax.tree_util.tree_leaves(resumed.state), jax.tree_util.tree_leaves(full.state)
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(resumed.losses, full.losses[10:])


@pytest.mark.slow  # fit's divergence stop is checked by default in test_train.py
def test_diverging_chains_stop_training():
    ebm = models.EBM(
        Quadratic(jnp.zeros(2), jnp.asarray(-3.0)),
        event_shape=(2,),
        training=models.ContrastiveDivergence(num_steps=50, step_size=10.0, persistent=False),
    )
    with pytest.raises(train.TrainingDiverged):
        train.fit(
            ebm,
            jr.normal(jr.key(0), (64, 2)),
            num_steps=5,
            batch_size=8,
            steps_per_chunk=5,
            progress=False,
            key=jr.key(1),
        )


@pytest.mark.slow  # MALA itself is checked by default in test_langevin.py
def test_mala_samples_of_a_gaussian_energy():
    ebm = models.EBM(
        Quadratic(jnp.asarray([1.0, -1.0]), jnp.log(0.5)), event_shape=(2,), low=-3.0, high=3.0
    )
    s = ebm.sample(4000, method="mala", num_steps=300, step_size=0.1, key=jr.key(0))
    assert_allclose(s.mean(0), [1.0, -1.0], atol=0.05)
    assert_allclose(s.std(0), [0.5, 0.5], atol=0.04)


def test_ais_normaliser_of_a_gaussian_energy_and_the_normalised_density():
    energy = Quadratic(jnp.asarray([0.5, -0.5]), jnp.log(0.6))
    ebm = models.EBM(energy, event_shape=(2,), low=-3.0, high=3.0)
    est = ebm.log_normaliser(num_chains=512, betas=200, key=jr.key(0))
    truth = float(energy.log_z())
    assert abs(float(est.log_z) - truth) < max(2 * float(est.stderr), 0.02)
    # Normalised by the estimate, the density integrates to one on a grid.
    g = np.linspace(-4, 4, 161)
    grid = jnp.asarray(np.stack(np.meshgrid(g, g), -1).reshape(-1, 2))
    lp = ebm.with_log_normaliser(est).log_prob(grid)
    assert_allclose(float(jnp.sum(jnp.exp(lp))) * (g[1] - g[0]) ** 2, 1.0, atol=0.05)


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="`energy`"):
        models.EBM(lambda x: x, event_shape=(2,))
    # (jaxtyping's error under the test suite, the ValueError for users.)
    with pytest.raises((ValueError, TypeCheckError), match="training"):
        models.EBM(Quadratic(jnp.zeros(2), jnp.asarray(0.0)), event_shape=(2,), training="cd")
    with pytest.raises(ValueError, match="`method`"):
        models.ContrastiveDivergence(sampler="hmc")
    with pytest.raises(ValueError, match="`step_size`"):
        models.ContrastiveDivergence(step_size=-1.0)
    with pytest.raises(ValueError, match="`restart`"):
        models.ContrastiveDivergence(restart=2.0)
    with pytest.raises((ValueError, TypeCheckError), match="noise"):
        models.NoiseContrastive(noise=lambda x: x)
    with pytest.raises(ValueError, match="`energy`"):
        losses.contrastive_divergence(lambda x: x, jnp.zeros((4, 2)), jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match="`negatives`"):
        losses.contrastive_divergence(jnp.sum, jnp.zeros((4, 2)), jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match="`high`|`low`"):
        models.EBM(Quadratic(jnp.zeros(2), jnp.asarray(0.0)), event_shape=(2,), low=1.0, high=0.0)


def test_spectral_normalisation_bounds_the_energy_lipschitz_constant():
    # Every weight divided by its largest singular value: with silu (slope <= 1.1) the MLP
    # part of the energy is at most 1.1^depth-Lipschitz, whatever the weights' scale.
    k1, k2 = jr.split(jr.key(0))

    def build(spectral_norm):
        net = nn.EnergyMLP((3,), 32, 2, scale=None, spectral_norm=spectral_norm, key=k1)
        return jax.tree_util.tree_map(lambda a: 10 * a if eqx.is_inexact_array(a) else a, net)

    net, plain = build(True), build(False)
    x, y = jr.normal(k1, (500, 3)), jr.normal(k2, (500, 3))

    @eqx.filter_jit  # a program per network, not an eager op-by-op run
    def max_ratio(net):
        return jnp.max(
            jnp.abs(jax.vmap(net)(x) - jax.vmap(net)(y)) / jnp.linalg.norm(x - y, axis=1)
        )

    assert float(max_ratio(net)) <= 1.1**2
    assert float(max_ratio(plain)) > 1.1**2  # the same weights, unnormalised, are not
