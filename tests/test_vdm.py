"""The variational diffusion model and its learned schedule, against closed forms."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from scipy.integrate import quad

import scoreflow as sf
from scoreflow import evaluation, models, nn

MEAN, VAR = np.array([0.3, -0.2]), np.array([0.09, 0.04])


def _learned(width=16, key=jr.key(0), gamma=(-13.3, 5.0)):
    net = None if width is None else nn.MonotoneMLP(width, key=key)
    return sf.sde.LearnedVPSDE(*gamma, net)


@pytest.mark.parametrize("width", [None, 16], ids=["linear", "monotone"])
def test_learned_schedule_generates_its_marginal(width):
    # f = d log(alpha)/dt and g^2 = d sigma^2/dt - 2 f sigma^2, on both sides of t_min
    # (below it sigma^2 falls linearly to 0: the data sit at t = 0).
    sde = sf.sde.LearnedVPSDE(
        -6.0, 5.0, None if width is None else nn.MonotoneMLP(16, key=jr.key(1)), t_min=0.01
    )

    # One compiled program for every t (eagerly each primitive would compile on its own).
    @eqx.filter_jit
    def at(sde, t):
        dlog_alpha = jax.grad(lambda s: jnp.log(sde.marginal(s)[0]))(t)
        dvar = jax.grad(lambda s: sde.marginal(s)[1] ** 2)(t)
        alpha, sigma = sde.marginal(t)
        f = sde.drift_coefficient(t)
        g2 = sde.diffusion(t) ** 2
        return (
            dlog_alpha,
            dvar,
            alpha,
            sigma,
            f,
            g2,
            sde.t_from_log_snr(sde.log_snr(t)),
            sde.log_snr(t),
        )

    for t in (0.003, 0.02, 0.4, 0.97):
        t = jnp.asarray(t)
        dlog_alpha, dvar, alpha, sigma, f, g2, t_back, log_snr = at(sde, t)
        assert_allclose(f, dlog_alpha, rtol=1e-9)
        assert_allclose(g2, dvar - 2 * f * sigma**2, rtol=1e-9)
        assert_allclose(alpha**2 + sigma**2, 1.0, rtol=1e-12)
        assert_allclose(t_back, t, rtol=1e-10)
        assert_allclose(log_snr, np.log(alpha / sigma), rtol=1e-10)
    assert_allclose(sde.marginal(0.0), (1.0, 0.0), atol=1e-15)
    assert_allclose(sde.gamma(sde.t_min), -6.0, rtol=1e-12)
    assert_allclose(sde.gamma(sde.T), 5.0, rtol=1e-12)


@eqx.filter_jit
def _gamma_and_beta(sde, t):
    return sde.gamma(t), sde.beta(t)


@given(
    seed=st.integers(0, 10_000),
    scale=st.floats(0.05, 20.0),
    lo=st.floats(-15.0, 0.0),
    gap=st.floats(0.1, 25.0),
)
def test_learned_schedule_is_monotone_for_every_parameter(seed, scale, lo, gap):
    # Every weight enters through a softplus: gamma is strictly increasing, beta > 0 and
    # the end points are where they were put, whatever the parameters are.
    net = nn.MonotoneMLP(16, key=jr.key(seed))
    net = jax.tree_util.tree_map(lambda v: scale * v, net)
    sde = sf.sde.LearnedVPSDE(lo, lo + gap, net)
    # Jitted once for every example: the parameters are arrays, only their values change.
    g, beta = _gamma_and_beta(sde, jnp.linspace(sde.t_min, sde.T, 257))
    assert bool(jnp.all(jnp.diff(g) > 0))
    assert bool(jnp.all(beta > 0))
    assert_allclose([g[0], g[-1]], [lo, lo + gap], rtol=1e-9, atol=1e-9)


def _diffusion_closed_form(gamma_min, gamma_max):
    # (1/2) int E||s* - grad log q(z_t | x)||^2 g^2 dt for Gaussian data and the exact
    # score, written over gamma = -log SNR: the same for every schedule with these ends.
    def integrand(g):
        a2, s2 = 1 / (1 + np.exp(g)), 1 / (1 + np.exp(-g))
        return np.sum(a2 * VAR / (a2 * VAR + s2))

    return 0.5 * quad(integrand, gamma_min, gamma_max, limit=200)[0]


def _terms(sde, n=8192, key=jr.key(3)):
    noisy = sf.Gaussian(jnp.asarray(MEAN), jnp.asarray(VAR)).noised(sde)
    model = models.VDM(noisy.eps, event_shape=(2,), sde=sde)
    x = sf.Gaussian(jnp.asarray(MEAN), jnp.asarray(VAR)).sample(n, key=jr.key(4))
    terms = eqx.filter_jit(lambda m, x, k: m.bound_terms(x, key=k))(model, x, key)
    return [np.asarray(v) for v in terms]


def _check_terms(terms, sde, diffusion):
    prior, rec, diff = terms
    alpha_T, sigma_T = (float(v) for v in sde.marginal(sde.T))
    alpha_0, sigma_0 = (float(v) for v in sde.marginal(sde.t_min))
    want_prior = 0.5 * (alpha_T / sigma_T) ** 2 * np.sum(MEAN**2 + VAR)
    want_rec = 0.5 * 2 * (1 + np.log(2 * np.pi * (sigma_0 / alpha_0) ** 2))
    for got, want in ((prior, want_prior), (rec, want_rec), (diff, diffusion)):
        se = got.std(ddof=1) / np.sqrt(got.size)
        assert abs(got.mean() - want) < 4 * se + 1e-9, (got.mean(), want, se)
    # -ELBO bounds the entropy E[-log p(x)] from above.
    entropy = 0.5 * np.sum(np.log(2 * np.pi * np.e * VAR))
    assert want_prior + want_rec + diffusion > entropy


def test_vdm_bound_under_the_vp_sde_is_its_continuous_time_elbo():
    # The VDM's three terms with scoreflow's VP SDE (a fixed linear-beta schedule) and the
    # exact eps network, against the continuous-time ELBO computed from the VP's own
    # beta(t) and marginals by quadrature.
    sde = sf.VPSDE(t_min=1e-3)

    def integrand(t):
        alpha, sigma = (float(v) for v in sde.marginal(t))
        return float(sde.beta(t)) * np.sum(
            alpha**2 * VAR / (sigma**2 * (alpha**2 * VAR + sigma**2))
        )

    diffusion = 0.5 * quad(integrand, sde.t_min, sde.T, points=[0.01, 0.1], limit=200)[0]
    _check_terms(_terms(sde), sde, diffusion)


@pytest.mark.parametrize("width", [None, 16], ids=["linear", "monotone"])
def test_vdm_diffusion_term_depends_on_the_schedule_only_through_its_ends(width):
    # Kingma et al. 2021, eq. 20: in continuous time the diffusion loss is an integral
    # over the SNR, so two schedules with the same end points give the same term.
    sde = _learned(width)
    _check_terms(_terms(sde), sde, _diffusion_closed_form(-13.3, 5.0))


def test_vdm_network_conditioned_on_the_noise_level_gives_the_same_bound():
    # The exact eps written as a function of the normalised gamma instead of t: under a
    # learned (non-linear) schedule the noise-level-input model must give the t-input
    # model's three terms draw for draw, so the normalisation and its end points are right.
    sde = _learned(16, key=jr.key(2), gamma=(-8.0, 6.0))
    noisy = sf.Gaussian(jnp.asarray(MEAN), jnp.asarray(VAR)).noised(sde)

    def eps_of_level(u, x):
        return noisy.eps(sde.t_from_log_snr(-0.5 * (-8.0 + 14.0 * u)), x)

    x = sf.Gaussian(jnp.asarray(MEAN), jnp.asarray(VAR)).sample(64, key=jr.key(4))
    by_t = models.VDM(noisy.eps, event_shape=(2,), sde=sde)
    by_level = models.VDM(eps_of_level, event_shape=(2,), sde=sde, network_input="gamma")
    assert_allclose(by_level.gamma_range, (-8.0, 6.0), rtol=1e-6)
    terms = eqx.filter_jit(lambda m, x, k: m.bound_terms(x, key=k))
    for a, b in zip(terms(by_t, x, jr.key(3)), terms(by_level, x, jr.key(3)), strict=True):
        assert_allclose(b, a, rtol=1e-7, atol=1e-9)


def test_vdm_trains_its_schedule_and_scores_discrete_data():
    k1, k2 = jr.split(jr.key(5))
    sde = _learned(8, key=k2, gamma=(-8.0, 6.0))
    net = nn.TimeMLP((4,), width=16, depth=1, key=k1)
    model = models.VDM(net, event_shape=(4,), sde=sde, levels=5)
    levels = jr.randint(jr.key(6), (6, 4), 0, 5)
    centres = sf.metrics.bin_centres(levels, levels=5)
    key = jr.key(7)
    # The mass, the density and the gradient in one compiled program.
    mass, density, grads = eqx.filter_jit(
        lambda m, levels, centres: (
            m.elbo(levels, key=key),
            m.elbo(centres, key=key),
            eqx.filter_grad(lambda m: m.loss(centres, key=key))(m),
        )
    )(model, levels, centres)
    assert_allclose(density, mass - 4 * np.log(2 / 5), rtol=1e-12)
    assert bool(jnp.all(mass < 0))
    for g in (grads.sde.gamma_min, grads.sde.gamma_gap, grads.sde.network.w2):
        assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.max(jnp.abs(g))) > 0
    with pytest.raises(ValueError, match="`x`.*levels"):
        model.elbo(jnp.full((2, 4), 5), key=key)
    with pytest.raises(ValueError, match="`levels`"):
        models.VDM(net, event_shape=(4,), levels=1)
    with pytest.raises(ValueError, match="`gamma_min`"):
        sf.sde.LearnedVPSDE(2.0, 1.0)


@pytest.mark.slow  # a compiled probability-flow solve
def test_vdm_samples_are_levels_of_its_discrete_decoder():
    k1, k2 = jr.split(jr.key(5))
    sde = _learned(8, key=k2, gamma=(-8.0, 6.0))
    net = nn.TimeMLP((4,), width=16, depth=1, key=k1)
    model = models.VDM(net, event_shape=(4,), sde=sde, levels=5)
    s = eqx.filter_jit(lambda m: m.sample(3, key=jr.key(8), grid=sf.solve.UniformGrid(4)))(model)
    assert s.shape == (3, 4)
    assert_allclose(evaluation.quantise(s, levels=5), s, atol=1e-12)


def test_low_discrepancy_times_cover_the_interval():
    sde = sf.VPSDE(t_min=0.1)
    t, w = sf.losses.LowDiscrepancyTime().sample(sde, 8, jnp.float64, key=jr.key(0))
    u = np.sort((np.asarray(t) - 0.1) / 0.9)
    assert_allclose(np.diff(u), 1 / 8, rtol=1e-9)
    assert_allclose(w, 1.0)
