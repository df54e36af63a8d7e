r"""Annealed importance sampling against normalisers known exactly.

Every target here has a closed-form or enumerated $\log Z$: a scaled Gaussian, the
case-A ring mixture plus a constant, and two restricted Boltzmann machines small enough to
enumerate (a binary one through its 2^12 visible states, with Metropolis and Gibbs kernels
written here; a Gaussian–Bernoulli one through its 2^4 hidden states, with MALA).
"""

import itertools
from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from jaxtyping import Array
from numpy.testing import assert_allclose
from scipy.special import logsumexp

import scoreflow as sf
from scoreflow.solve import AbstractAISKernel, MALAKernel, ais, sigmoid_schedule

from .helpers import case_a


class ScaledGaussian(eqx.Module):
    r"""$c\,N(x; m, S)$ unnormalised: $\log Z = \log c$. A module, so it is traced."""

    mean: Array
    precision: Array
    log_norm: Array

    def __call__(self, x):
        r = x - self.mean
        return -0.5 * r @ (self.precision @ r) + self.log_norm


def _scaled_gaussian(log_c):
    d = 4
    mean = jnp.array([1.0, -0.5, 0.3, 2.0])
    a = 0.3 * jr.normal(jr.key(0), (d, d))
    cov = a @ a.T + 0.5 * jnp.eye(d)
    log_norm = log_c - 0.5 * jnp.linalg.slogdet(cov)[1] - 0.5 * d * jnp.log(2 * jnp.pi)
    return ScaledGaussian(mean, jnp.linalg.inv(cov), log_norm)


class Bernoulli(eqx.Module):
    """A factorised Bernoulli base on {0, 1}^d (states as floats)."""

    logits: Array

    def log_prob(self, x):
        return x @ self.logits - jnp.sum(jax.nn.softplus(self.logits))

    def sample(self, num, *, key):
        p = jax.nn.sigmoid(self.logits)
        p = jnp.broadcast_to(p, (num, self.logits.shape[0]))
        return jr.bernoulli(key, p).astype(self.logits.dtype)


class BinaryRBM(eqx.Module):
    """Free energy of a binary RBM: the hidden units summed out analytically."""

    w: Array  # (visible, hidden)
    b: Array  # visible biases
    c: Array  # hidden biases

    def __call__(self, v):
        return v @ self.b + jnp.sum(jax.nn.softplus(self.c + v @ self.w))

    def log_z_by_visible(self):
        states = jnp.asarray(list(itertools.product([0.0, 1.0], repeat=self.b.shape[0])))
        return float(jax.nn.logsumexp(jax.vmap(self)(states)))

    def log_z_by_hidden(self):
        states = jnp.asarray(list(itertools.product([0.0, 1.0], repeat=self.c.shape[0])))
        per_h = states @ self.c + jnp.sum(
            jax.nn.softplus(self.b[None] + states @ self.w.T), axis=-1
        )
        return float(jax.nn.logsumexp(per_h))


class GaussianBernoulliRBM(eqx.Module):
    r"""Unit-variance Gaussian visible units, binary hidden units summed out analytically.

    $E(v, h) = \|v - b\|^2/2 - c \cdot h - v \cdot W h$, so
    $\log\tilde p(v) = -\|v - b\|^2/2 + \sum_j \mathrm{softplus}(c_j + (W^T v)_j)$
    and, integrating $v$ out for each $h$,
    $Z = (2\pi)^{D/2}\sum_h \exp(c\cdot h + \|b + Wh\|^2/2 - \|b\|^2/2)$.
    """

    w: Array
    b: Array
    c: Array

    def __call__(self, v):
        r = v - self.b
        return -0.5 * r @ r + jnp.sum(jax.nn.softplus(self.c + v @ self.w))

    def log_z(self):
        d = self.b.shape[0]
        states = jnp.asarray(list(itertools.product([0.0, 1.0], repeat=self.c.shape[0])))
        m = self.b[None] + states @ self.w.T
        per_h = states @ self.c + 0.5 * jnp.sum(m**2, -1) - 0.5 * self.b @ self.b
        return float(jax.nn.logsumexp(per_h) + 0.5 * d * jnp.log(2 * jnp.pi))


class MetropolisFlip(AbstractAISKernel):
    r"""A user's kernel on binary states: Metropolis flips of one random site per chain.

    Proposing $v \to v^{(i)}$ (site $i$ flipped, $i$ uniform) is symmetric, so accepting
    with $\min\{1, \pi(v^{(i)})/\pi(v)\}$ leaves the tempered density invariant.
    """

    num_flips: int = eqx.field(static=True, default=1)

    def __call__(self, log_prob, x, *, beta, key):
        del beta
        n, d = x.shape
        batched = jax.vmap(log_prob)

        def flip(carry, k):
            v, lp, accepted = carry
            k_site, k_u = jr.split(k)
            site = jax.nn.one_hot(jr.randint(k_site, (n,), 0, d), d, dtype=v.dtype)
            proposal = v + site * (1 - 2 * v)
            lp_new = batched(proposal)
            accept = jnp.log(jr.uniform(k_u, (n,), v.dtype)) < lp_new - lp
            v = jnp.where(accept[:, None], proposal, v)
            lp = jnp.where(accept, lp_new, lp)
            return (v, lp, accepted + accept.astype(v.dtype)), None

        init = (x, batched(x), jnp.zeros((n,), x.dtype))
        (v, _, accepted), _ = jax.lax.scan(flip, init, jr.split(key, self.num_flips))
        return v, accepted / self.num_flips


class GibbsSweep(AbstractAISKernel):
    r"""A user's kernel on binary states: one systematic-scan Gibbs sweep.

    Site $i$ is redrawn from its conditional $\sigma(\log\pi(v^{i=1}) - \log\pi(v^{i=0}))$,
    read off the tempered `log_prob` alone, so the sweep leaves it invariant at any
    temperature. The "acceptance" reported is the fraction of sites that changed.
    """

    def __call__(self, log_prob, x, *, beta, key):
        del beta
        d = x.shape[1]
        us = jr.uniform(key, (d, x.shape[0]), x.dtype)
        batched = jax.vmap(log_prob)

        def site(i, state):
            v, changed = state
            lp1 = batched(v.at[:, i].set(1.0))
            lp0 = batched(v.at[:, i].set(0.0))
            new = (us[i] < jax.nn.sigmoid(lp1 - lp0)).astype(v.dtype)
            changed = changed + (new != v[:, i]).astype(v.dtype)
            return v.at[:, i].set(new), changed

        v, changed = jax.lax.fori_loop(0, d, site, (x, jnp.zeros(x.shape[:1], x.dtype)))
        return v, changed / d


class Stay(AbstractAISKernel):
    """The identity kernel (invariant for anything): plain importance sampling per step."""

    def __call__(self, log_prob, x, *, beta, key):
        return x, jnp.ones(x.shape[:1], x.dtype)


def _binary_rbm():
    k1, k2, k3 = jr.split(jr.key(7), 3)
    return BinaryRBM(
        w=1.2 * jr.normal(k1, (12, 4)),
        b=0.5 * jr.normal(k2, (12,)),
        c=0.5 * jr.normal(k3, (4,)),
    )


def _gaussian_rbm():
    # Four visible, four hidden units: 16 modes b + W h of unit variance on the corners of
    # a (nearly) square hypercube of edge 3. The hidden biases cancel each unit's own
    # term in Z, so the modes' masses (0.007 to 0.47) come from the columns' overlaps.
    k1, k2, k3 = jr.split(jr.key(11), 3)
    q, _ = jnp.linalg.qr(jr.normal(k1, (4, 4)))
    w = 3.0 * q + 0.2 * jr.normal(k2, (4, 4))
    b = 0.5 * jr.normal(k3, (4,))
    return GaussianBernoulliRBM(w=w, b=b, c=-(0.5 * jnp.sum(w**2, 0) + b @ w))


def _within(res, truth, nsd=2.0):
    err = float(res.log_z) - truth
    assert res.result == dfx.RESULTS.successful
    assert abs(err) < nsd * float(res.stderr), (float(res.log_z), float(res.stderr), truth)
    # A standard error of a few chains' weights only is not one to trust.
    assert float(res.ess) > 0.05 * res.log_weights.shape[0], float(res.ess)
    return err


def _group_log_z(log_weights, groups):
    # Independent replicates from one run: the chains split into equal groups.
    lw = np.asarray(log_weights).reshape(groups, -1)
    return logsumexp(lw, axis=1) - np.log(lw.shape[1])


# The MALA path against an exact normaliser also runs by default in test_ebm.py.
@pytest.mark.slow
def test_gaussian_with_known_normaliser():
    log_c = 3.7
    target = _scaled_gaussian(log_c)
    base = sf.analytic.Gaussian(jnp.zeros(4), jnp.ones(4))
    res = ais(
        target,
        base,
        num_chains=1000,
        betas=200,
        # Array step sizes are traced: the wide base below reuses this program.
        kernel=MALAKernel(jnp.asarray(0.3), base_step_size=jnp.asarray(1.0)),
        key=jr.key(1),
    )
    _within(res, log_c)
    assert res.samples.shape == (1000, 4)
    assert res.log_weights.shape == (1000,)
    assert res.acceptance_rate.shape == (200,)
    assert_allclose(np.asarray(res.betas), sigmoid_schedule(200), rtol=1e-15)
    assert 0.5 < float(res.acceptance_rate.mean()) < 1.0
    # The final states are the target's (unweighted, as far as the chains have mixed).
    cov = np.linalg.inv(np.asarray(target.precision))
    x = np.asarray(res.samples)
    se = np.sqrt(np.diag(cov) / x.shape[0])
    assert np.all(np.abs(x.mean(0) - np.asarray(target.mean)) < 5 * se)
    # The same figure through the log-space formulas the result uses, recomputed here.
    lw = np.asarray(res.log_weights)
    w = np.exp(lw - lw.max())
    assert_allclose(float(res.log_z), logsumexp(lw) - np.log(lw.size), rtol=1e-12)
    assert_allclose(float(res.stderr), w.std(ddof=1) / (np.sqrt(lw.size) * w.mean()), rtol=1e-10)
    assert_allclose(float(res.ess), w.sum() ** 2 / (w**2).sum(), rtol=1e-10)
    # A base 100 times wider in variance: the step interpolated harmonically between the
    # base's and the target's keeps every temperature's acceptance high (geometric
    # interpolation falls to 0 here). 200 temperatures are too few for this base to give
    # weights light-tailed enough for a trustworthy standard error, so only the
    # acceptance is asserted.
    wide = ais(
        target,
        sf.analytic.Gaussian(jnp.zeros(4), jnp.full(4, 100.0)),
        num_chains=1000,
        betas=200,
        kernel=MALAKernel(jnp.asarray(0.3), base_step_size=jnp.asarray(100.0)),
        key=jr.key(10),
    )
    assert wide.result == dfx.RESULTS.successful
    assert float(wide.acceptance_rate.min()) > 0.8, np.asarray(wide.acceptance_rate)


@pytest.mark.slow
def test_ring_mixture_unnormalised():
    # Case A (8 Gaussians of std 0.5 on a circle of radius 4) times e^{-2.5}.
    mix = case_a()
    shift = -2.5
    res = ais(
        lambda x: mix.log_prob(x) + shift,
        sf.analytic.Gaussian(jnp.zeros(2), jnp.full(2, 9.0)),
        num_chains=2000,
        betas=200,
        kernel=MALAKernel(0.2, base_step_size=4.0),
        key=jr.key(2),
    )
    _within(res, shift)
    # Every mode is visited: the final states spread over the eight components.
    comp = np.argmax(np.asarray(mix.component_log_probs(res.samples)), axis=-1)
    assert np.bincount(comp, minlength=8).min() > 0.5 * 2000 / 8


def test_binary_rbm_with_a_user_metropolis_kernel():
    rbm = _binary_rbm()
    truth = rbm.log_z_by_visible()
    assert_allclose(truth, rbm.log_z_by_hidden(), rtol=1e-12)
    base = Bernoulli(rbm.b)
    res = {
        k: ais(rbm, base, num_chains=1000, betas=k, kernel=MetropolisFlip(), key=jr.key(3))
        for k in (10, 100, 1000)
    }
    _within(res[1000], truth)
    # More temperatures, a better estimate: the gap of E[log w] below log Z (a
    # divergence between the forward and backward paths, about 1/K once the chains keep
    # up), the standard error, and the error of log Z_hat over independent groups.
    gap = {k: truth - float(r.log_weights.mean()) for k, r in res.items()}
    stderr = {k: float(r.stderr) for k, r in res.items()}
    err = {k: np.abs(_group_log_z(r.log_weights, 4) - truth).mean() for k, r in res.items()}
    assert gap[10] > gap[100] > gap[1000] > 0, gap
    assert gap[1000] < 0.1 * gap[10], gap
    assert stderr[10] > stderr[100] > stderr[1000], stderr
    assert err[10] > err[100] > err[1000], err


@pytest.mark.slow
def test_binary_rbm_with_a_user_gibbs_kernel():
    rbm = _binary_rbm()
    res = ais(
        rbm, Bernoulli(rbm.b), num_chains=1000, betas=300, kernel=GibbsSweep(), key=jr.key(12)
    )
    _within(res, rbm.log_z_by_visible())


@pytest.mark.slow
def test_gaussian_bernoulli_rbm_with_mala():
    rbm = _gaussian_rbm()
    truth = rbm.log_z()
    res = ais(
        rbm,
        _gaussian_rbm_base(rbm),
        num_chains=1000,
        betas=200,
        kernel=MALAKernel(0.8, base_step_size=2.0),
        key=jr.key(4),
    )
    _within(res, truth)
    # The chains end spread over the modes as the target's mass is (weighted).
    hidden = jnp.asarray(list(itertools.product([0.0, 1.0], repeat=4)))
    means = rbm.b[None] + hidden @ rbm.w.T
    mass = jax.nn.softmax(hidden @ rbm.c + 0.5 * jnp.sum(means**2, -1))
    nearest = np.argmin(np.sum((np.asarray(res.samples)[:, None] - np.asarray(means)) ** 2, -1), 1)
    w = np.exp(np.asarray(res.log_weights - res.log_z))
    found = np.bincount(nearest, weights=w, minlength=16) / w.sum()
    assert_allclose(found, np.asarray(mass), atol=0.05)


def _gaussian_rbm_base(rbm):
    # A Gaussian over the modes' hypercube: its centre, and their spread plus one.
    return sf.analytic.Gaussian(rbm.b + rbm.w.sum(1) / 2, jnp.full(4, 3.25))


def test_sigmoid_schedule():
    b = sigmoid_schedule(100)
    assert b.shape == (101,) and b[0] == 0 and b[-1] == 1
    assert np.all(np.diff(b) > 0)
    # Finer at both ends than a linear schedule, coarser in the middle; symmetric.
    assert np.diff(b)[0] < 0.2 / 100 and np.diff(b)[50] > 1.5 / 100
    assert_allclose(b, 1 - b[::-1], atol=1e-15)
    assert_allclose(sigmoid_schedule(1), [0.0, 1.0])
    with pytest.raises(ValueError, match="`num`"):
        sigmoid_schedule(0)


class HalfNaN(eqx.Module):
    r"""$-\|x\|^2/2$, NaN where $x_0$ exceeds `threshold` (never, for $+\infty$)."""

    threshold: Array

    def __call__(self, x):
        return jnp.where(x[0] > self.threshold, jnp.nan, -0.5 * x @ x)


def test_explicit_schedule_and_nonfinite_weights():
    base = sf.analytic.Gaussian(jnp.zeros(2), jnp.ones(2))
    kw: dict[str, Any] = dict(num_chains=64, kernel=Stay(), key=jr.key(5))
    betas = jnp.array([0.0, 0.5, 1.0])
    # Inside a user's `jit` (an energy model's `log_z`, say), with the target and the
    # schedule traced: one program for every threshold below.
    run = eqx.filter_jit(lambda t, b: ais(t, base, betas=b, throw=False, **kw))
    # The target is 2 pi times the base: with the identity kernel every path's weight is
    # exactly log(2 pi), whatever the schedule.
    res = run(HalfNaN(jnp.asarray(jnp.inf)), betas)
    assert res.result == dfx.RESULTS.successful
    assert_allclose(np.asarray(res.log_weights), np.log(2 * np.pi), rtol=1e-12)
    assert_allclose(float(res.log_z), np.log(2 * np.pi), rtol=1e-12)
    assert_allclose(float(res.stderr), 0.0, atol=1e-12)
    assert_allclose(float(res.ess), 64.0, rtol=1e-12)
    assert_allclose(np.asarray(res.betas), betas)
    # NaN weights are never a silent result: a result code, or an error.
    assert run(HalfNaN(jnp.asarray(0.0)), betas).result == dfx.RESULTS.nonfinite
    with pytest.raises(eqx.EquinoxRuntimeError, match="log-weight is NaN"):
        jax.block_until_ready(ais(HalfNaN(jnp.asarray(0.0)), base, betas=betas, **kw))


def test_bad_inputs():
    base = sf.analytic.Gaussian(jnp.zeros(2), jnp.ones(2))
    lp = lambda x: -0.5 * x @ x
    kw: dict[str, Any] = dict(num_chains=16, key=jr.key(6))
    with pytest.raises(ValueError, match="`betas`.*intermediate"):
        ais(lp, base, betas=0, **kw)
    with pytest.raises(ValueError, match="`betas`.*intermediate"):
        ais(lp, base, betas=jnp.array([1.0]), **kw)
    with pytest.raises(ValueError, match="`betas`.*increasing"):
        ais(lp, base, betas=jnp.array([0.0, 0.6, 0.4, 1.0]), **kw)
    with pytest.raises(ValueError, match="`betas`.*0 to 1"):
        ais(lp, base, betas=jnp.array([0.1, 0.5, 1.0]), **kw)
    with pytest.raises(ValueError, match="`betas`.*0 to 1"):
        ais(lp, base, betas=jnp.array([0.0, 0.5, 2.0]), **kw)
    with pytest.raises(ValueError, match="`betas`"):
        ais(lp, base, betas=jnp.ones((2, 2)), **kw)
    with pytest.raises(ValueError, match="`num_chains`"):
        ais(lp, base, num_chains=1, betas=10, key=jr.key(0))
    with pytest.raises(ValueError, match="`step_size`"):
        MALAKernel(0.0)
    with pytest.raises(ValueError, match="`step_size`"):
        MALAKernel(-0.1)
    with pytest.raises(ValueError, match="`base_step_size`"):
        MALAKernel(0.1, base_step_size=0.0)
    with pytest.raises(ValueError, match="`num_steps`"):
        MALAKernel(0.1, num_steps=0)
    with pytest.raises(ValueError, match="`log_prob` must return a scalar"):
        ais(lambda x: -0.5 * x**2, base, betas=10, **kw)
    with pytest.raises(ValueError, match="event shape"):
        ais(lambda x: -0.5 * x @ jnp.ones((3, 3)) @ x, base, betas=10, **kw)
    # Under the tests' runtime type checking the annotation refuses it first.
    with pytest.raises((ValueError, TypeError), match="kernel"):
        ais(lp, base, betas=10, kernel=object(), **kw)  # pyright: ignore[reportArgumentType]


@pytest.mark.slow
def test_gaussian_rbm_error_shrinks_with_temperatures_under_mala():
    rbm = _gaussian_rbm()
    truth = rbm.log_z()
    base = _gaussian_rbm_base(rbm)
    kernel = MALAKernel(0.8, base_step_size=2.0)
    res = {
        k: ais(rbm, base, num_chains=2000, betas=k, kernel=kernel, key=jr.key(8))
        for k in (10, 100, 1000)
    }
    _within(res[1000], truth)
    gap = {k: truth - float(r.log_weights.mean()) for k, r in res.items()}
    stderr = {k: float(r.stderr) for k, r in res.items()}
    assert gap[10] > gap[100] > gap[1000] > 0, gap
    assert stderr[10] > stderr[100] > stderr[1000], stderr


@pytest.mark.slow
def test_hmc_kernel_on_the_gaussian():
    pytest.importorskip("blackjax")
    log_c = -1.3
    res = ais(
        _scaled_gaussian(log_c),
        sf.analytic.Gaussian(jnp.zeros(4), jnp.ones(4)),
        num_chains=2000,
        betas=100,
        kernel=sf.solve.HMCKernel(0.3, num_integration_steps=5),
        key=jr.key(9),
    )
    _within(res, log_c)
    assert 0.5 < float(res.acceptance_rate.mean()) <= 1.0
