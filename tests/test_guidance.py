"""Guidance and inpainting, checked against exact conditionals of labelled mixtures."""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from jaxtyping import TypeCheckError
from numpy.testing import assert_allclose

import scoreflow as sf
from scoreflow import analytic, guidance

from .helpers import case_a
from .test_sample import _check_reproduces_mixture

VP = sf.VPSDE()
VE = sf.VESDE(sigma_min=0.01, sigma_max=20.0)


def _classes():
    # Case A with uneven weights; components alternate between two classes, so each
    # class is a 4-component sub-mixture and the noisy classifier is far from trivial.
    mix = case_a(weights=[0.3, 0.05, 0.1, 0.05, 0.2, 0.1, 0.1, 0.1])
    return analytic.ClassMixture(mix, [0, 1, 0, 1, 0, 1, 0, 1])


def _points(n=16):
    return 5 * jr.normal(jr.key(0), (n, 2))


TIMES = [1e-3, 0.05, 0.3, 0.7, 1.0]


def test_class_mixture_oracles_obey_bayes_rule():
    cm = _classes()
    assert_allclose(cm.class_weights(), [0.7, 0.3], rtol=1e-12)
    x = _points()

    @jax.jit
    def at(t):
        clf, noisy = cm.classifier(VP), cm.noised(VP)
        logp = jax.vmap(lambda xi: clf(t, xi))(x)
        bayes = (
            jnp.stack([noisy.log_prob(t, x, y) - noisy.log_prob(t, x) for y in (0, 1)], -1)
            + jnp.log(cm.class_weights())[None, :]
        )
        grads = jnp.stack([jax.vmap(lambda xi: clf.grad_log_prob(t, xi, y))(x) for y in (0, 1)])
        scores = jnp.stack([noisy(t, x, y) for y in (0, 1)])
        return logp, bayes, grads, scores, noisy(t, x)

    for t in TIMES:
        logp, bayes, grads, scores, uncond = at(jnp.asarray(t))
        assert_allclose(jnp.sum(jnp.exp(logp), -1), 1.0, rtol=1e-12)
        # log p(y | x_t) = log p_t(x | y) + log p(y) - log p_t(x)
        assert_allclose(logp, bayes, rtol=1e-10, atol=1e-10)
        # score(x | y) = score(x) + grad log p(y | x_t)
        assert_allclose(scores, uncond[None] + grads, rtol=1e-8, atol=1e-8)

    # The class-conditional law at t = 0 is the renormalised sub-mixture. One jit for
    # the rest: op by op, each of these small reads compiles every primitive apart.
    @jax.jit
    def at_zero(x, key):
        sub = cm.given(1)
        return sub.weights, cm.log_prob(x, 1), sub.log_prob(x), cm.sample(4000, key=key)

    weights, logp, sub_logp, (xs, ys) = at_zero(x, jr.key(1))
    assert_allclose(weights, np.array([0.05, 0.05, 0.1, 0.1]) / 0.3, rtol=1e-12)
    assert_allclose(logp, sub_logp, rtol=1e-12)
    assert abs(float(jnp.mean(ys)) - 0.3) < 4 * np.sqrt(0.21 / 4000)


@pytest.mark.parametrize("parameterisation", ["score", "eps", "x0", "v"])
def test_classifier_guidance_in_any_parameterisation_is_the_conditional_score(parameterisation):
    cm = _classes()
    model = cm.mixture.noised(VP, parameterisation)
    clf = cm.classifier(VP)
    exact = cm.noised(VP)
    x = _points()
    assert guidance.ClassifierGuidance(model, clf, 1, 2.0).parameterisation == parameterisation

    @jax.jit
    def at(t, w):
        guided = guidance.ClassifierGuidance(model, clf, 1, w)
        got = jax.vmap(lambda xi: guided.score(t, xi))(x)
        grad = jax.vmap(lambda xi: clf.grad_log_prob(t, xi, 1))(x)
        return got, exact(t, x) + w * grad, exact(t, x, 1)

    for t in TIMES:
        for w in (1.0, 2.5):
            got, want, conditional = at(jnp.asarray(t), jnp.asarray(w))
            assert_allclose(got, want, rtol=1e-7, atol=1e-7)
            if w == 1.0:
                assert_allclose(got, conditional, rtol=1e-7, atol=1e-7)
    unguided = jax.jit(
        lambda x: (
            jax.vmap(lambda xi: guidance.ClassifierGuidance(model, clf, 0, 0.0)(0.3, xi))(x),
            jax.vmap(lambda xi: model(0.3, xi))(x),
        )
    )
    # Both sides vmapped alike: a batched call may reduce in another order (to 1 ulp,
    # depending on XLA's CPU flags), which says nothing about the guidance.
    got, want = unguided(x)
    assert_allclose(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("method", ["ode", "sde"])
def test_classifier_guidance_with_exact_classifier_samples_the_class_mixture(method):
    cm = _classes()
    guided = guidance.ClassifierGuidance(cm.mixture.noised(VP), cm.classifier(VP), 0, 1.0)
    options = (
        dict(solver=dfx.Heun(), grid=sf.solve.KarrasGrid(40))
        if method == "ode"
        else dict(grid=sf.solve.LogSNRGrid(150))
    )
    res = sf.sample(VP, guided, (4000, 2), method=method, key=jr.key(2), **options)
    # Moments, and the mass of each of the class's components by a chi-square test.
    _check_reproduces_mixture(cm.given(0), res.samples)


@pytest.mark.parametrize("parameterisation", ["score", "eps", "x0", "v"])
def test_classifier_free_guidance_is_the_closed_form_combination(parameterisation):
    cm = _classes()
    model = cm.noised(VP, parameterisation)
    exact = cm.noised(VP)
    x = _points()

    @jax.jit
    def at(t, w):
        cfg = guidance.ClassifierFreeGuidance(model, 1, w)
        cg = guidance.ClassifierGuidance(cm.mixture.noised(VP), cm.classifier(VP), 1, 1 + w)
        read = lambda m: jax.vmap(lambda xi: m.score(t, xi))(x)
        own = jax.vmap(lambda xi: cfg(t, xi))(x)
        return own, read(cfg), read(cg), (1 + w) * exact(t, x, 1) - w * exact(t, x)

    for t in TIMES:
        own, _, _, _ = at(jnp.asarray(t), jnp.asarray(0.0))
        assert_allclose(own, model(t, x, 1), rtol=1e-12)  # w = 0: the conditional model
        for w in (0.5, 3.0):
            _, got, classifier, want = at(jnp.asarray(t), jnp.asarray(w))
            assert_allclose(got, want, rtol=1e-8, atol=1e-8)
            # With exact parts it is classifier guidance at scale 1 + w.
            assert_allclose(classifier, want, rtol=1e-7, atol=1e-7)


def test_guidance_interval_is_in_noise_level_and_rescale_matches_std():
    cm = _classes()
    model = cm.noised(VP, "eps")
    x = _points(4)
    lo, hi = 0.2, 2.0
    cfg = guidance.ClassifierFreeGuidance(model, 0, 2.0, interval=(lo, hi))
    plain = guidance.ClassifierFreeGuidance(model, 0, 2.0)

    # One program for every time (op by op, each call compiles every primitive apart).
    @jax.jit
    def at(t):
        alpha, sigma = VP.marginal(t)
        got = jax.vmap(lambda xi: cfg(t, xi))(x)
        return sigma / alpha, got, jax.vmap(lambda xi: plain(t, xi))(x), model(t, x, 0)

    for t in np.linspace(1e-3, 1.0, 13):
        level, got, guided, conditional = at(jnp.asarray(t))
        inside = lo < float(level) <= hi
        assert_allclose(got, guided if inside else conditional, rtol=0, atol=1e-12)
    # phi = 1: the guided x0 prediction has the conditional one's standard deviation.
    t = 0.4
    full = guidance.ClassifierFreeGuidance(model, 0, 4.0, rescale=1.0)
    half = guidance.ClassifierFreeGuidance(model, 0, 4.0, rescale=0.5)
    unscaled = guidance.ClassifierFreeGuidance(model, 0, 4.0)

    @jax.jit
    @jax.vmap
    def x0s(xi):
        c = sf.sde.convert(VP, t, xi, model(t, xi, 0), source="eps", target="x0")
        return full.x0(t, xi), c, half.x0(t, xi), unscaled.x0(t, xi)

    g, c, h, u = x0s(x)
    assert_allclose(jnp.std(g, -1), jnp.std(c, -1), rtol=1e-10)
    assert_allclose(h, 0.5 * g + 0.5 * u, rtol=1e-10)


def test_guidance_composes_with_every_sampler_and_vmaps_over_labels():
    cm = _classes()
    model = cm.noised(VP, "eps")

    @eqx.filter_jit
    def per_label(y, key):
        cfg = guidance.ClassifierFreeGuidance(model, y, 0.0)
        return sf.sample(
            VP,
            cfg,
            (2000, 2),
            grid=sf.solve.LogSNRGrid(15),
            solver=sf.solve.DPMSolverPP(2),
            key=key,
        ).samples

    samples = jax.vmap(per_label)(jnp.arange(2), jr.split(jr.key(3), 2))
    for y in (0, 1):
        sub = cm.given(y)
        assert_allclose(samples[y].mean(0), sub.mean(), atol=0.25)
    # The likelihood of a guided model at w = 0 is that of the class-conditional mixture.
    cfg = guidance.ClassifierFreeGuidance(model, 1, 0.0)
    x = cm.given(1).sample(4, key=jr.key(4))
    options = dict(rtol=1e-6, atol=1e-6)
    lp = sf.solve.log_likelihood(VP, cfg, x, **options).log_prob
    want = sf.solve.log_likelihood(VP, cm.given(1).noised(VP), x, **options).log_prob
    assert_allclose(lp, want, rtol=0, atol=1e-4)


def _correlated_gaussian():
    cov = jnp.array([[1.0, 0.8], [0.8, 1.5]])
    return sf.GaussianMixture(jnp.ones(1), jnp.array([[0.5, -1.0]]), cov[None])


@pytest.mark.parametrize("method", ["ode", pytest.param("sde", marks=pytest.mark.slow)])
def test_posterior_sampling_is_exact_for_a_gaussian_prior(method):
    # p(x0 | x_t) is Gaussian, so the Tweedie-covariance twist is the exact conditional
    # score and the samples follow analytic.conditional.
    mix = _correlated_gaussian()
    known = jnp.array([True, False])
    y = jnp.array([1.3, 0.0])
    post = guidance.PosteriorSampling(mix.noised(VP), known, y)
    cond = analytic.conditional(mix, known, y)
    grid = sf.solve.LogSNRGrid(100 if method == "sde" else 30)
    res = sf.sample(VP, post, (3000, 2), method=method, grid=grid, key=jr.key(5))
    x = post.fill(res.samples)
    assert bool(jnp.all(x[:, 0] == y[0]))
    n = x.shape[0]
    se = np.sqrt(float(cond.covariance()[0, 0]) / n)
    assert abs(float(x[:, 1].mean() - cond.mean()[0])) < 5 * se
    assert_allclose(jnp.var(x[:, 1]), cond.covariance()[0, 0], rtol=0.1)


def test_posterior_sampling_above_its_noise_cap_is_replacement():
    mix = _correlated_gaussian()
    known = jnp.array([True, False])
    y = jnp.array([1.3, 0.0])
    model = mix.noised(VP, "eps")
    capped = guidance.PosteriorSampling(model, known, y, max_noise_level=1.0)
    post = guidance.PosteriorSampling(model, known, y)
    rep = guidance.Replacement(model, known, y)
    x = jnp.array([0.4, -0.7])

    @jax.jit  # one program for every time
    def at(t):
        alpha, sigma = VP.marginal(t)
        return sigma / alpha, capped(t, x), rep(t, x), post(t, x)

    for t in (0.05, 0.3, 0.6, 0.9):
        level, got, replaced, posterior = at(jnp.asarray(t))
        assert_allclose(got, replaced if float(level) > 1.0 else posterior, rtol=0, atol=0)


def _weights_of(cond, x):
    comp = np.asarray(jnp.argmax(cond.component_log_probs(x), -1))
    return np.bincount(comp, minlength=cond.weights.shape[0]) / comp.shape[0]


def test_twisted_smc_is_unbiased_where_replacement_is_not():
    # Case A given x_0 = 2.8: three well-separated modes in x_1, the one at 0 light.
    mix = case_a()
    known = jnp.array([True, False])
    y = jnp.array([2.8, 0.0])
    cond = analytic.conditional(mix, known, y)
    post = guidance.PosteriorSampling(mix.noised(VP), known, y)
    res = guidance.twisted_smc(post, 4000, grid=sf.solve.UniformGrid(100), key=jr.key(6))
    got = _weights_of(cond, res.samples[:, 1:])
    exact = np.asarray(cond.weights)
    # Resampled particles are not independent: allow for an ESS of a quarter of them.
    ess = 1000
    se = np.sqrt(exact * (1 - exact) / ess) + 1e-3
    assert np.all(np.abs(got - exact) < 4 * se), (got, exact)
    marginal = sf.GaussianMixture(mix.weights, mix.means[:, :1], mix.covariances[:, :1])
    assert_allclose(res.log_evidence, marginal.log_prob(y[:1][None])[0], atol=0.1)
    # Replacement, on the same sampler budget, puts several times too much mass at 0.
    rep = guidance.Replacement(mix.noised(VP), known, y)
    x = rep.fill(
        sf.sample(
            VP, rep, (4000, 2), method="sde", grid=sf.solve.UniformGrid(100), key=jr.key(7)
        ).samples
    )
    assert _weights_of(cond, x[:, 1:])[0] > 3 * exact[0]


def test_replacement_works_with_annealed_langevin_and_pins_the_known_coordinates():
    mix = _correlated_gaussian()
    known = jnp.array([False, True])
    y = jnp.array([0.0, -0.5])
    rep = guidance.Replacement(mix.noised(VE), known, y)
    x0 = jr.uniform(jr.key(8), (1000, 2), minval=-8.0, maxval=8.0)
    res = sf.solve.annealed_langevin(
        VE,
        rep,
        x0,
        ladder=jnp.geomspace(10.0, 0.05, 8),
        step_size=jnp.asarray(2.5e-3),
        steps_per_level=20,
        key=jr.key(9),
    )
    x = rep.fill(res.samples)
    assert bool(jnp.all(x[:, 1] == y[1]))
    # The known coordinate's own dynamics follow the noised observation.
    for t in (0.3, 0.9):
        alpha, sigma = VE.marginal(t)
        xi = jnp.array([0.2, 1.0])
        assert_allclose(rep.score(t, xi)[1], -(xi[1] - alpha * y[1]) / sigma**2, rtol=1e-10)
    cond = analytic.conditional(mix, known, y)
    assert abs(float(x[:, 0].mean() - cond.mean()[0])) < 0.15


def test_bad_input_names_the_argument():
    cm = _classes()
    model = cm.noised(VP)
    clf = cm.classifier(VP)
    plain = cm.mixture.noised(VP)
    with pytest.raises(ValueError, match="`y`"):
        guidance.ClassifierFreeGuidance(model, 2, 1.0)
    with pytest.raises(ValueError, match="`y`"):
        guidance.ClassifierGuidance(plain, clf, -1, 1.0)
    with pytest.raises(ValueError, match="`y`"):
        guidance.ClassifierGuidance(plain, clf, 0.5, 1.0)
    with pytest.raises(ValueError, match="`scale`"):
        guidance.ClassifierFreeGuidance(model, 0, float("nan"))
    with pytest.raises(ValueError, match="`scale`"):
        guidance.ClassifierGuidance(plain, clf, 0, float("inf"))
    with pytest.raises(ValueError, match="`rescale`"):
        guidance.ClassifierFreeGuidance(model, 0, 1.0, rescale=1.5)
    with pytest.raises(ValueError, match="`interval`"):
        guidance.ClassifierFreeGuidance(model, 0, 1.0, interval=(2.0, 1.0))
    with pytest.raises((ValueError, TypeCheckError), match="model"):
        guidance.ClassifierFreeGuidance(plain, 0, 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`classifier`"):
        guidance.ClassifierGuidance(plain, cm.classifier(VE), 0, 1.0)
    with pytest.raises((ValueError, TypeCheckError), match="classifier"):
        guidance.ClassifierGuidance(plain, model, 0, 1.0)  # type: ignore[arg-type]

    class WrongShape(sf.sde.AbstractNoisyClassifier):
        sde: sf.sde.AbstractSDE = VP
        num_classes: int = 2

        def __call__(self, t, x):
            return jnp.zeros(3)

    with pytest.raises(ValueError, match="`classifier`"):
        guidance.ClassifierGuidance(plain, WrongShape(), 0, 1.0).score(0.5, jnp.zeros(2))
    with pytest.raises(ValueError, match="`mask`"):
        guidance.Replacement(plain, jnp.array([1, 0]), jnp.zeros(2))
    with pytest.raises(ValueError, match="`observation`"):
        guidance.Replacement(plain, jnp.array([True, False]), jnp.zeros(3))
    with pytest.raises(ValueError, match="`observation`"):
        guidance.PosteriorSampling(plain, jnp.array([True, False]), jnp.array([jnp.nan, 0.0]))
    with pytest.raises(ValueError, match="`mask`"):
        guidance.Replacement(plain, jnp.array([True, False, True]), jnp.zeros(3)).score(
            0.5, jnp.zeros(2)
        )
    with pytest.raises(ValueError, match="`noise_std`"):
        guidance.PosteriorSampling(plain, jnp.array([True, False]), jnp.zeros(2), covariance=0.0)
    with pytest.raises(ValueError, match="`max_noise_level`"):
        guidance.PosteriorSampling(
            plain, jnp.array([True, False]), jnp.zeros(2), max_noise_level=0.0
        )
    with pytest.raises(ValueError, match="`covariance`"):
        guidance.PosteriorSampling(
            plain, jnp.array([True, False]), jnp.zeros(2), covariance="exact"
        )
    post = guidance.PosteriorSampling(plain, jnp.array([True, False]), jnp.zeros(2))
    with pytest.raises(ValueError, match="`num_particles`"):
        guidance.twisted_smc(post, 1, grid=sf.solve.UniformGrid(4), key=jr.key(0))
    with pytest.raises(ValueError, match="`ess_threshold`"):
        guidance.twisted_smc(
            post, 8, grid=sf.solve.UniformGrid(4), ess_threshold=0.0, key=jr.key(0)
        )
    # A traced label out of range fails at run time, not silently.
    with pytest.raises(Exception, match="`y`"):
        eqx.filter_jit(lambda y: guidance.ClassifierFreeGuidance(model, y, 1.0)(0.5, jnp.zeros(2)))(
            jnp.asarray(5)
        )
