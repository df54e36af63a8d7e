"""ScoreSDE, DDPM (exact discrete schedule), NCSN and the networks."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from numpy.testing import assert_allclose

import scoreflow as sf
from scoreflow import models, nn

from .helpers import case_a


def test_discrete_vp_sde_is_exactly_ddpm():
    betas = models.linear_betas(1000)
    sde = models.DiscreteVPSDE(betas)
    ab = np.cumprod(1 - np.asarray(betas))
    i = np.array([1, 10, 500, 1000])
    alpha, sigma = sde.marginal(jnp.asarray(i / 1000))
    assert_allclose(alpha, np.sqrt(ab[i - 1]), rtol=1e-10)
    assert_allclose(sigma, np.sqrt(1 - ab[i - 1]), rtol=1e-10)
    t = jnp.asarray([0.0013, 0.37, 0.9])
    assert_allclose(sde.t_from_log_snr(sde.log_snr(t)), t, rtol=1e-8)
    # g^2 = d sigma^2/dt - 2 f sigma^2 holds inside each step (the SDE is exact).
    s2 = lambda u: sde.marginal(u)[1] ** 2
    for u in (0.2345, 0.77):
        lhs = sde.diffusion(u) ** 2
        rhs = jax.grad(s2)(u) - 2 * sde.drift_coefficient(u) * s2(u)
        assert_allclose(lhs, rhs, rtol=1e-5)  # (a wrong segment would be off by 4e-3)


def test_cosine_betas_and_bad_betas():
    b = models.cosine_betas(100)
    assert b.shape == (100,) and float(b.max()) <= 0.999
    with pytest.raises(ValueError, match="`betas`"):
        models.DiscreteVPSDE(jnp.asarray([0.1, 1.2]))


def _mlp(key=jr.key(0)):
    return nn.TimeMLP((2,), width=16, depth=2, key=key)


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["denoising", "sliced", "implicit"])
def test_score_sde_loss_objectives(objective):
    model = models.ScoreSDE(sf.VPSDE(), _mlp(), objective=objective)
    x = case_a().sample(32, key=jr.key(1))
    loss = eqx.filter_jit(lambda m, x, k: m.loss(x, key=k))(model, x, jr.key(2))
    assert np.isfinite(loss)


def test_score_sde_rejects_bad_choices():
    with pytest.raises(ValueError, match="`objective`"):
        models.ScoreSDE(sf.VPSDE(), _mlp(), objective="adversarial")
    with pytest.raises(ValueError, match="`parameterisation`"):
        models.ScoreSDE(sf.VPSDE(), _mlp(), parameterisation="noise")


def test_score_sde_with_exact_score_samples_and_scores_the_mixture():
    # The model layer adds nothing to the solvers: with the exact score as its network it
    # reproduces the mixture (log-likelihood within solver error).
    mix = case_a()
    sde = sf.VPSDE(t_min=1e-5)
    model = models.ScoreSDE(sde, mix.noised(sde).score, parameterisation="score")
    x = mix.sample(8, key=jr.key(3))
    lp = model.log_prob(x)
    assert_allclose(lp, mix.noised(sde).log_prob(sde.t_min, x), atol=2e-2)
    s = model.sample((256, 2), key=jr.key(4), grid=sf.solve.KarrasGrid(16))
    assert s.shape == (256, 2)
    assert (
        float(mix.log_prob(s).mean())
        > float(mix.log_prob(mix.sample(256, key=jr.key(5))).mean()) - 0.3
    )


def test_ddpm_with_exact_eps_samples_the_data():
    mix = sf.Gaussian(jnp.asarray([1.0, -1.0]), jnp.asarray([0.3, 0.5]))
    betas = models.linear_betas(100, 1e-3, 0.2)
    ddpm = models.DDPM(lambda t, x: mix.noised(models.DiscreteVPSDE(betas)).eps(t, x), betas)
    x = ddpm.sample((2000, 2), key=jr.key(6))
    assert_allclose(x.mean(0), [1.0, -1.0], atol=0.08)
    assert_allclose(x.var(0), [0.3, 0.5], rtol=0.15)
    # DDIM is first order: its exact map under-disperses by ~20 % at 20 steps and ~5 % at 100
    # (benchmarks/ddim_gaussian.py checks the sampler against that closed form).
    y = ddpm.sample((2000, 2), method="ddim", num_steps=100, key=jr.key(7))
    assert_allclose(y.mean(0), [1.0, -1.0], atol=0.08)
    assert_allclose(y.var(0), [0.3, 0.5], rtol=0.15)
    with pytest.raises(ValueError, match="`method`"):
        ddpm.sample((2, 2), method="plms", key=jr.key(0))
    with pytest.raises(ValueError, match="`num_steps`"):
        ddpm.sample((2, 2), num_steps=0, key=jr.key(0))


def test_ncsn_with_exact_score_samples_the_data():
    mean, var = jnp.asarray([1.0, -1.0]), jnp.asarray([0.3, 0.5])
    score = lambda s, x: -(x - mean) / (var + s**2)
    ncsn = models.NCSN(score, models.geometric_sigmas(5.0, 0.05, 8))
    x = ncsn.sample((2000, 2), steps_per_level=30, step_size=2e-3, key=jr.key(8))
    assert_allclose(x.mean(0), [1.0, -1.0], atol=0.1)
    assert_allclose(x.var(0), [0.3, 0.5], rtol=0.15)  # annealed Langevin is biased
    with pytest.raises(ValueError, match="`sigmas`"):
        models.NCSN(score, jnp.asarray([0.1, 1.0]))


def test_networks_shapes_and_embeddings():
    k = jr.key(0)
    f = nn.GaussianFourierEmbedding(8, key=k)
    s = nn.SinusoidalEmbedding(8)
    assert f(jnp.asarray(0.3)).shape == (8,) and s(jnp.asarray(0.3)).shape == (8,)
    # Fourier features are fixed: no gradient reaches them.
    g = jax.grad(lambda e: jnp.sum(e(jnp.asarray(0.3))))(f)
    assert float(jnp.abs(g.weights).max()) == 0.0
    with pytest.raises(ValueError, match="`dim`"):
        nn.SinusoidalEmbedding(7)
    mlp = nn.TimeMLP((3,), width=8, depth=2, embedding="sinusoidal", key=k)
    assert mlp(jnp.asarray(0.1), jnp.ones(3)).shape == (3,)
    with pytest.raises(ValueError, match="shape"):
        mlp(jnp.asarray(0.1), jnp.ones(2))


@pytest.mark.slow
def test_unet_shapes():
    k = jr.key(0)
    unet = nn.UNet((1, 8, 8), base_channels=8, channel_mults=(1, 2), key=k)
    x = jnp.ones((1, 8, 8))
    assert eqx.filter_jit(lambda u, t, x: u(t, x))(unet, jnp.asarray(0.5), x).shape == (1, 8, 8)
    with pytest.raises(ValueError, match="divisible"):
        nn.UNet((1, 6, 6), channel_mults=(1, 2, 2), key=k)


def test_edm_preconditioning_matches_table_1():
    sde = sf.EDMSDE()
    raw = lambda c, x: jnp.full_like(x, c)
    D = nn.EDMPrecond(sde, raw, sigma_data=0.5)
    sigma, x = 2.0, jnp.asarray([1.0, -3.0])
    c_skip = 0.25 / (sigma**2 + 0.25)
    c_out = sigma * 0.5 / np.sqrt(sigma**2 + 0.25)
    expected = c_skip * x + c_out * 0.25 * np.log(sigma)
    assert_allclose(D(jnp.asarray(sigma), x), expected, rtol=1e-12)
    # A zero network is the Wiener filter for data of std sigma_data: x0 = c_skip x.
    D0 = nn.EDMPrecond(sde, lambda c, x: jnp.zeros_like(x))
    assert_allclose(D0(jnp.asarray(sigma), x), c_skip * x, rtol=1e-12)


def test_score_sde_passes_sigma_data_to_the_edm_weighting():
    sde = sf.VESDE(sigma_min=0.01, sigma_max=20.0)
    net = nn.EDMPrecond(sde, lambda c, x: jnp.zeros_like(x), sigma_data=2.0)
    x = case_a().sample(16, key=jr.key(1))
    model = models.ScoreSDE(sde, net, parameterisation="x0", weighting="edm", sigma_data=2.0)
    kw = dict(parameterisation="x0", weighting="edm", key=jr.key(2))
    want = sf.losses.denoising_score_matching(net, sde, x, sigma_data=2.0, **kw)
    assert_allclose(model.loss(x, key=jr.key(2)), want, rtol=1e-12)
    default = sf.losses.denoising_score_matching(net, sde, x, **kw)
    assert not np.allclose(want, default, rtol=1e-3)
