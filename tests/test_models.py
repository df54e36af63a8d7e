"""The model contract, checked on every registered model; then each model's own claims."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from numpy.testing import assert_allclose

import scoreflow as sf
from scoreflow import models, nn, train

from .helpers import case_a, tree_allclose
from .model_registry import MODELS, data, model_classes, registered_classes
from .test_sample import _check_reproduces_mixture

NAMES = sorted(MODELS)
EXACT = [n for n in NAMES if isinstance(MODELS[n].build(jr.key(0)), models.AbstractExactLikelihood)]


def _events(batch):
    # The examples of a model's batch: a conditional model's is the pair `(x, y)`.
    return batch[0] if isinstance(batch, tuple) else batch


def test_every_model_is_registered():
    assert model_classes() == registered_classes()


def test_likelihood_capability_is_declared_by_type():
    kinds = {
        name: (
            isinstance(m := MODELS[name].build(jr.key(0)), models.AbstractExactLikelihood),
            isinstance(m, models.AbstractLikelihoodBound),
        )
        for name in NAMES
    }
    assert kinds == {
        "conditional_ddpm": (True, False),
        "conditional_score_sde": (True, False),
        "ddpm": (True, True),
        "ebm": (False, False),
        "ffjord": (True, False),
        "gan": (False, False),
        "gmm": (True, False),
        "hvae": (False, True),
        "iwae": (False, True),
        "ncsn": (False, False),
        "pixelcnn": (True, False),
        "realnvp": (True, False),
        "score_sde": (True, False),
        "vae": (False, True),
        "vdm": (True, True),
    }


# Eagerly every primitive compiles on its own (a hundred compiles for a diffusion model's
# loss): the eager run is checked against the compiled one on two cheap models, a closed
# form and one whose loss samples and checks its data, and under `slow` on every model.
EAGER = ("gmm", "vae")


# FFJORD's gradient and training steps (a CNF solve per step, a third of this file's
# time) and the EBM's (Langevin chains inside every gradient) run under `slow`; their loss,
# sampling, save/load and normalised likelihood run by default (the EBM's persistent CD
# training, with its exact resume, in test_ebm.py).
@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in ("ffjord", "ebm") else n for n in NAMES],
)
def test_loss_gradient_and_training_steps(name, tmp_path):
    case = MODELS[name]
    model = case.build(jr.key(1))
    x = case.data(jr.key(2))
    key = jr.key(3)
    traces = []
    objective = case.objective or (lambda m, x, k: m.loss(x, key=k))

    @eqx.filter_jit
    def value_and_grad(m, x, k):
        traces.append(None)
        return eqx.filter_value_and_grad(lambda m: objective(m, x, k))(m)

    loss = lambda m, x, k: value_and_grad(m, x, k)[0]
    value, grads = value_and_grad(model, x, key)
    leaves = jax.tree_util.tree_leaves(eqx.filter(grads, eqx.is_inexact_array))
    assert np.isfinite(float(value))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert any(float(jnp.max(jnp.abs(g))) > 0 for g in leaves)
    # jit agrees with eager (see EAGER), and vmap over keys with a loop.
    if name in EAGER:
        assert_allclose(value, objective(model, x, key), rtol=1e-10)
    keys = jr.split(key, 3)
    batched = eqx.filter_jit(eqx.filter_vmap(lambda k: objective(model, x, k)))(keys)
    assert_allclose(batched, [loss(model, x, k) for k in keys], rtol=1e-9)
    # No recompilation when only values change: another model, another batch.
    loss(case.build(jr.key(4)), case.data(jr.key(5)), jr.key(6))
    assert len(traces) == 1
    # Save -> load is bit-exact, the model's static parts included (else it would retrace).
    _check_save_load(name, model, tmp_path, lambda m: loss(m, x, key), value)
    assert len(traces) == 1
    # A few steps of the one training loop lower the loss of a fixed batch and key.
    fixed = lambda m, _, *, key: objective(m, x, jr.key(7))
    res = train.fit(
        model,
        x,
        num_steps=20,
        batch_size=1,
        optimizer=train.default_optimizer(case.lr),
        ema_decay=None,
        steps_per_chunk=20,
        loss_fn=fixed,
        progress=False,
        key=jr.key(8),
    )
    before, after = res.losses[0], float(loss(res.model, x, jr.key(7)))
    assert after < before - 1e-3 * abs(before), (before, after)
    # Training moves the parameters and nothing else.
    assert tree_allclose(case.frozen(res.model), case.frozen(model), rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_sample_shape_rule(name):
    case = MODELS[name]
    model = case.build(jr.key(1))
    traces = []

    @eqx.filter_jit
    def draw(m, k):
        traces.append(None)
        return m.sample((2, 3), key=k, **case.sample_options)

    s = draw(model, jr.key(2))
    # A discrete model samples its integer levels.
    discrete = isinstance(model, models.AbstractDiscreteLikelihood)
    assert s.shape == (2, 3, *model.event_shape)
    assert s.dtype == (jnp.int32 if discrete else jnp.float64)
    if discrete:
        assert int(s.min()) >= 0 and int(s.max()) < model.num_levels
    assert bool(jnp.all(jnp.isfinite(s)))
    draw(model, jr.key(3))
    assert len(traces) == 1
    # The scalar shape by tracing alone (the values are those of the draw above). Every
    # model reads `sample_shape` by the base class's `_flat_shape`, so an int is the tuple
    # above once normalised; each model's int form is traced under `slow`.
    assert _sample_shape(case, model) == model.event_shape
    assert models._base.sample_shape_of(5) == (5,)
    with pytest.raises(ValueError, match="`sample_shape`"):
        model.sample(-1, key=jr.key(4), **case.sample_options)


def _sample_shape(case, model, *n):
    draw = lambda m: m.sample(*n, key=jr.key(4), **case.sample_options)
    return eqx.filter_eval_shape(draw, model).shape


@pytest.mark.slow  # one more trace of every sampler; the int rule itself runs by default
@pytest.mark.parametrize("name", NAMES)
def test_sample_shape_may_be_an_int(name):
    case = MODELS[name]
    model = case.build(jr.key(1))
    assert _sample_shape(case, model, 5) == (5, *model.event_shape)


def _check_save_load(name, model, tmp_path, loss, value):
    # `scoreflow.load` rebuilds the model from the file alone: no skeleton.
    sf.save(tmp_path / "model.eqx", model, metadata={"case": name})
    loaded = sf.load(tmp_path / "model.eqx")
    assert type(loaded) is type(model)
    assert jax.tree_util.tree_structure(loaded) == jax.tree_util.tree_structure(model)
    assert bool(eqx.tree_equal(eqx.filter(loaded, eqx.is_array), eqx.filter(model, eqx.is_array)))
    assert float(loss(loaded)) == float(value)


# The other models' save -> load runs in test_loss_gradient_and_training_steps, on its
# compiled loss; these two are under `slow` there.
@pytest.mark.parametrize("name", ["ebm", "ffjord"])
def test_save_load_is_bit_exact(name, tmp_path):
    case = MODELS[name]
    model = case.build(jr.key(1))
    loss = eqx.filter_jit(lambda m, x: m.loss(x, key=jr.key(4)))
    x = case.data(jr.key(3), 8)
    _check_save_load(name, model, tmp_path, lambda m: loss(m, x), loss(model, x))


@pytest.mark.slow  # the default run checks EAGER's models (in the test above)
@pytest.mark.parametrize("name", [n for n in NAMES if n not in EAGER])
def test_eager_loss_agrees_with_jit(name):
    case = MODELS[name]
    model = case.build(jr.key(1))
    x = case.data(jr.key(2))
    objective = case.objective or (lambda m, x, k: m.loss(x, key=k))
    jitted = eqx.filter_jit(objective)(model, x, jr.key(3))
    assert_allclose(jitted, objective(model, x, jr.key(3)), rtol=1e-10)


# ScoreSDE's and DDPM's densities are the same probability-flow likelihood (checked
# against exact densities in test_likelihood.py), and so are their conditional models'
# (test_conditional.py); the default run integrates DDPM's and ConditionalDDPM's.
SLOW_DENSITIES = ("score_sde", "conditional_score_sde")


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_DENSITIES else n for n in EXACT]
)
def test_exact_log_prob_integrates_to_one(name):
    # On a 2-d grid: the model's density sums to one (what every exact likelihood owes).
    # A discrete model's mass sums to one over every event of its tiny image.
    case = MODELS[name]
    model = case.build(jr.key(1))
    if isinstance(model, models.AbstractDiscreteLikelihood):
        d, levels = int(np.prod(model.event_shape)), model.num_levels
        assert levels**d <= 50_000, "enumeration needs a tiny event"
        codes = np.arange(levels**d)
        digits = (codes[:, None] // levels ** np.arange(d)[None, ::-1]) % levels
        events = jnp.asarray(digits.reshape(-1, *model.event_shape), jnp.int32)
        lp = eqx.filter_jit(lambda m, x: m.log_prob(x, **case.log_prob_options))(model, events)
        assert_allclose(float(jax.scipy.special.logsumexp(lp)), 0.0, atol=1e-9)
        return
    lo, hi, n = case.quadrature
    g = np.linspace(lo, hi, n)
    grid = jnp.asarray(np.stack(np.meshgrid(g, g), -1).reshape(-1, 2))
    lp = eqx.filter_jit(lambda m, x: m.log_prob(x, **case.log_prob_options))(model, grid)
    total = float(jnp.sum(jnp.exp(lp))) * (g[1] - g[0]) ** 2
    assert_allclose(total, 1.0, atol=1e-2)


@pytest.mark.slow  # one more compiled solve per model
@pytest.mark.parametrize("name", EXACT)
def test_exact_log_prob_vmaps_over_examples(name):
    # vmap over single examples agrees with the batch, up to the tolerance of adaptive
    # solves that take their own steps per example (a batch solve controls the error of
    # the batch as a whole).
    case = MODELS[name]
    model = case.build(jr.key(1))
    x = _events(case.data(jr.key(2), 4))
    one = eqx.filter_vmap(lambda xi: model.log_prob(xi[None], **case.log_prob_options)[0])(x)
    assert_allclose(one, model.log_prob(x, **case.log_prob_options), rtol=0, atol=2e-2)


# Each model's own claims, against closed forms.


def test_discrete_vp_sde_is_exactly_ddpm():
    betas = sf.sde.linear_betas(1000)
    sde = sf.sde.DiscreteVPSDE(betas)
    ab = np.cumprod(1 - np.asarray(betas))
    i = np.array([1, 10, 500, 1000])
    alpha, sigma = sde.marginal(jnp.asarray(i / 1000))
    assert_allclose(alpha, np.sqrt(ab[i - 1]), rtol=1e-10)
    assert_allclose(sigma, np.sqrt(1 - ab[i - 1]), rtol=1e-10)
    assert_allclose(sde.step_times(), np.arange(1, 1001) / 1000, rtol=1e-15)


def test_cosine_betas_and_bad_betas():
    b = sf.sde.cosine_betas(100)
    assert b.shape == (100,) and float(b.max()) <= 0.999
    with pytest.raises(ValueError, match="`betas`"):
        sf.sde.DiscreteVPSDE(jnp.asarray([0.1, 1.2]))


def _mlp(key=jr.key(0)):
    return nn.TimeMLP((2,), width=16, depth=2, key=key)


@pytest.mark.slow
def test_score_sde_objectives_differ_from_dsm_by_their_constant():
    # For one and the same model, implicit and sliced score matching equal denoising
    # score matching minus E[lambda(t) / sigma_t^2] = 1 per coordinate (sigma^2
    # weighting, mean reduction): the model passes its objective through unchanged.
    sde = sf.VPSDE()
    noisy = case_a().noised(sde)
    x = case_a().sample(8192, key=jr.key(1))

    def loss(objective):
        m = models.ScoreSDE(
            sde, noisy.eps, parameterisation="eps", event_shape=(2,), objective=objective
        )
        return float(eqx.filter_jit(lambda m, x, k: m.loss(x, key=k))(m, x, jr.key(2)))

    dsm, ism, ssm = loss("denoising"), loss("implicit"), loss("sliced")
    assert_allclose(dsm - ism, 1.0, atol=0.05)
    assert_allclose(dsm - ssm, 1.0, atol=0.1)


def test_score_sde_rejects_bad_choices():
    with pytest.raises(ValueError, match="`objective`"):
        models.ScoreSDE(
            sf.VPSDE(), _mlp(), parameterisation="eps", event_shape=(2,), objective="adversarial"
        )
    with pytest.raises(ValueError, match="`parameterisation`"):
        models.ScoreSDE(sf.VPSDE(), _mlp(), parameterisation="noise", event_shape=(2,))
    with pytest.raises(TypeError):
        models.ScoreSDE(sf.VPSDE(), _mlp(), event_shape=(2,))  # pyright: ignore[reportCallIssue]
    m = models.ScoreSDE(sf.VPSDE(), _mlp(), parameterisation="eps", event_shape=(2,))
    with pytest.raises(ValueError, match="`x`"):
        m.loss(jnp.zeros((4, 3)), key=jr.key(0))
    with pytest.raises(ValueError, match="`method`"):
        m.sample(2, method="langevin", key=jr.key(0))


@pytest.mark.slow  # the samplers' and likelihood's own tests cover each half
def test_score_sde_with_exact_score_samples_and_scores_the_mixture():
    # The model layer adds nothing to the solvers: with the exact score as its network it
    # reproduces the mixture (log-likelihood within solver error, samples in law).
    mix = case_a(weights=[0.3, 0.05, 0.1, 0.05, 0.2, 0.1, 0.1, 0.1])
    sde = sf.VPSDE(t_min=1e-5)
    model = models.ScoreSDE(sde, mix.noised(sde).score, parameterisation="score", event_shape=(2,))
    x = mix.sample(8, key=jr.key(3))
    assert_allclose(model.log_prob(x), mix.noised(sde).log_prob(sde.t_min, x), atol=2e-2)
    s = model.sample(8000, key=jr.key(4), grid=sf.solve.KarrasGrid(40))
    assert s.shape == (8000, 2)
    # Two-sided: a sampler that collapsed onto the modes would fail the covariance and
    # the log-density gap alike.
    _check_reproduces_mixture(mix, s)
    gap = float(mix.log_prob(s).mean() - mix.log_prob(mix.sample(50000, key=jr.key(5))).mean())
    assert abs(gap) < 0.05, gap


def test_ddpm_with_exact_eps_samples_the_data():
    mix = sf.Gaussian(jnp.asarray([1.0, -1.0]), jnp.asarray([0.3, 0.5]))
    betas = sf.sde.linear_betas(100, 1e-3, 0.2)
    noisy = mix.noised(sf.sde.DiscreteVPSDE(betas))
    ddpm = models.DDPM(noisy.eps, event_shape=(2,), betas=betas)
    x = ddpm.sample(2000, key=jr.key(6))
    assert_allclose(x.mean(0), [1.0, -1.0], atol=0.08)
    assert_allclose(x.var(0), [0.3, 0.5], rtol=0.15)
    # DDIM is first order: its exact map under-disperses by ~20 % at 20 steps and ~5 % at 100
    # (benchmarks/ddim_gaussian.py checks the sampler against that closed form).
    y = ddpm.sample(2000, method="ode", num_steps=100, key=jr.key(7))
    assert_allclose(y.mean(0), [1.0, -1.0], atol=0.08)
    assert_allclose(y.var(0), [0.3, 0.5], rtol=0.15)
    with pytest.raises(ValueError, match="`method`"):
        ddpm.sample(2, method="plms", key=jr.key(0))
    with pytest.raises(ValueError, match="`num_steps`"):
        ddpm.sample(2, num_steps=0, key=jr.key(0))


def _ddpm_neg_elbo_closed_form(betas, mean, var):
    # E over x0 ~ N(mean, diag var) of -ELBO with the exact eps network and the "small"
    # reverse variances: each KL between Gaussians in closed form, with
    # E||eps - E[eps | x_i]||^2 = sum_d ab_i V_d / (ab_i V_d + 1 - ab_i).
    b = np.asarray(betas)
    ab = np.cumprod(1 - b)
    ab_prev = np.concatenate([[1.0], ab[:-1]])
    post = b * (1 - ab_prev) / (1 - ab)
    model_var = post.copy()
    model_var[0] = post[1]
    m, v = np.asarray(mean), np.asarray(var)
    d = m.size
    resid = lambda i: np.sum(ab[i] * v / (ab[i] * v + 1 - ab[i]))
    prior = 0.5 * np.sum(ab[-1] * (m**2 + v) - ab[-1] - np.log1p(-ab[-1]))
    kl = sum(
        0.5
        * (
            d * (np.log(model_var[i] / post[i]) + post[i] / model_var[i] - 1)
            + b[i] ** 2 / ((1 - ab[i]) * (1 - b[i])) * resid(i) / model_var[i]
        )
        for i in range(1, len(b))
    )
    decoder = 0.5 * (
        d * np.log(2 * np.pi * model_var[0]) + b[0] / (1 - b[0]) * resid(0) / model_var[0]
    )
    return prior + kl + decoder


def test_ddpm_elbo_equals_its_closed_form():
    # Gaussian data and the exact eps network: the mean of -ELBO over data (one draw of
    # each x_i per example) against its expectation in closed form; and it bounds the
    # entropy, E[-log p(x0)], from above.
    mean, var = jnp.asarray([0.3, -0.2]), jnp.asarray([0.09, 0.04])
    mix = sf.Gaussian(mean, var)
    betas = sf.sde.linear_betas(50, 1e-3, 0.2)
    noisy = mix.noised(sf.sde.DiscreteVPSDE(betas))
    ddpm = models.DDPM(noisy.eps, event_shape=(2,), betas=betas)
    x = mix.sample(2048, key=jr.key(8))
    neg = -np.asarray(eqx.filter_jit(lambda m, x, k: m.elbo(x, key=k))(ddpm, x, jr.key(9)))
    want = _ddpm_neg_elbo_closed_form(betas, mean, var)
    se = neg.std(ddof=1) / np.sqrt(neg.size)
    assert abs(neg.mean() - want) < 4 * se, (neg.mean(), want, se)
    entropy = 0.5 * float(jnp.sum(jnp.log(2 * jnp.pi * jnp.e * var)))
    assert want > entropy
    with pytest.raises(ValueError, match="`variance`"):
        ddpm.elbo(x, variance="huge", key=jr.key(0))


def test_ddpm_discretised_decoder_is_the_gaussian_mass_of_each_bin():
    # Ho et al.'s eq. 13 against scipy: the outermost bins reach to infinity.
    from scipy.stats import norm

    from scoreflow.models._ddpm import _discretised_gaussian_log_prob

    levels, lo, hi = 17, -1.0, 1.0
    k = np.array([0, 1, 8, 15, 16])
    x = lo + (hi - lo) * (k + 0.5) / levels
    mean, std = np.array([-0.9, -0.7, 0.1, 0.85, 1.3]), 0.2
    half = (hi - lo) / levels / 2
    upper = np.where(k == levels - 1, np.inf, x + half)
    lower = np.where(k == 0, -np.inf, x - half)
    want = np.sum(np.log(norm.cdf(upper, mean, std) - norm.cdf(lower, mean, std)))
    got = _discretised_gaussian_log_prob(jnp.asarray(x), jnp.asarray(mean), std, levels, (lo, hi))
    assert_allclose(got, want, rtol=1e-10)


def test_ncsn_with_exact_score_samples_the_data():
    mean, var = jnp.asarray([1.0, -1.0]), jnp.asarray([0.3, 0.5])
    score = lambda s, x: -(x - mean) / (var + s**2)
    ncsn = models.NCSN(score, event_shape=(2,), sigmas=models.geometric_sigmas(5.0, 0.05, 8))
    x = ncsn.sample(2000, steps_per_level=30, step_size=2e-3, key=jr.key(8))
    assert_allclose(x.mean(0), [1.0, -1.0], atol=0.1)
    assert_allclose(x.var(0), [0.3, 0.5], rtol=0.15)  # annealed Langevin is biased
    with pytest.raises(ValueError, match="`sigmas`"):
        models.NCSN(score, event_shape=(2,), sigmas=jnp.asarray([0.1, 1.0]))
    with pytest.raises(ValueError, match="`method`"):
        ncsn.sample(2, method="ode", key=jr.key(0))


def test_ffjord_loss_is_its_negative_log_likelihood():
    # Without regularisers the loss is the flow's mean negative log-density; with them it
    # adds exactly the weighted Finlay et al. integrals of the same solves.
    model = models.FFJORD(2, width=8, depth=1, key=jr.key(1))
    x = data(jr.key(2), 8)
    assert_allclose(model.loss(x), -jnp.mean(model.log_prob(x)), rtol=1e-8)
    reg = models.FFJORD(2, width=8, depth=1, kinetic_weight=0.5, key=jr.key(1))
    _, kinetic, _ = reg._nll_and_regularisers(x, None)
    assert_allclose(reg.loss(x), model.loss(x) + 0.5 * jnp.mean(kinetic), rtol=1e-8)


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


def test_score_sde_passes_its_weighting_to_the_loss():
    sde = sf.VESDE(sigma_min=0.01, sigma_max=20.0)
    net = nn.EDMPrecond(sde, lambda c, x: jnp.zeros_like(x), sigma_data=2.0)
    x = case_a().sample(16, key=jr.key(1))
    weighting = sf.losses.EDMWeighting(2.0)
    model = models.ScoreSDE(sde, net, parameterisation="x0", event_shape=(2,), weighting=weighting)
    want = sf.losses.denoising_score_matching(sde, model, x, weighting=weighting, key=jr.key(2))
    assert_allclose(model.loss(x, key=jr.key(2)), want, rtol=1e-12)
    default = sf.losses.denoising_score_matching(
        sde, model, x, weighting=sf.losses.EDMWeighting(), key=jr.key(2)
    )
    assert not np.allclose(want, default, rtol=1e-3)
    assert tree_allclose(model, model)
