import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jaxtyping import TypeCheckError
from numpy.testing import assert_allclose

import scoreflow as sf

from .helpers import SDES, case_a

KINDS = ("score", "eps", "x0", "v")


@eqx.filter_jit
def _exact_quantities(noisy, t, key):
    x = noisy.sample(t, 4, key=key)
    alpha, sigma = noisy.sde.marginal(t)
    exact = {
        "score": noisy.score(t, x),
        "eps": noisy.eps(t, x),
        "x0": noisy.denoise(t, x),
    }
    exact["v"] = alpha * exact["eps"] - sigma * exact["x0"]
    converted = {
        (s, d): sf.sde.convert(noisy.sde, t, x, exact[s], source=s, target=d)
        for s, d in itertools.permutations(KINDS, 2)
    }
    return exact, converted


@pytest.mark.parametrize("sde_name", SDES)
@given(u=st.floats(0.05, 0.95))
def test_conversion_matches_exact_quantities(sde_name, u):
    sde = SDES[sde_name]()
    t = jnp.asarray(sde.t_min + u * (sde.T - sde.t_min))
    exact, converted = _exact_quantities(case_a().noised(sde), t, jax.random.key(0))
    for (source, target), out in converted.items():
        scale = float(jnp.max(jnp.abs(exact[target]))) + 1.0
        assert_allclose(
            out,
            exact[target],
            rtol=1e-8,
            atol=1e-8 * scale,
            err_msg=f"{source}->{target}",
        )


def test_prediction_feeds_every_quantity():
    sde = sf.VPSDE()
    noisy = case_a().noised(sde)
    pred = sf.Prediction(sde, noisy.eps, "eps")
    t, x = 0.3, jnp.asarray([0.5, -1.0])
    assert_allclose(pred.score(t, x), noisy.score(t, x), rtol=1e-10)
    assert_allclose(pred.x0(t, x), noisy.denoise(t, x), rtol=1e-10)


def test_prediction_errors():
    sde = sf.VPSDE()
    with pytest.raises(ValueError, match="`parameterisation`"):
        sf.Prediction(sde, lambda t, x: x, "noise")
    pred = sf.Prediction(sde, lambda t, x: x[:1], "eps")
    # Our check, or jaxtyping's on the return annotation (under pytest).
    with pytest.raises((ValueError, TypeCheckError), match="return"):
        pred.score(0.5, jnp.ones(2))
    with pytest.raises(ValueError, match="`target`"):
        sf.sde.convert(sde, 0.5, jnp.ones(2), jnp.ones(2), source="eps", target="s")


def test_prediction_is_a_pytree_over_model_parameters():
    class Scaled(eqx.Module):
        w: jax.Array

        def __call__(self, t, x):
            return self.w * x

    sde = sf.VPSDE()
    pred = sf.Prediction(sde, Scaled(jnp.asarray(2.0)), "eps")
    leaves = jax.tree_util.tree_leaves(eqx.filter(pred, eqx.is_array))
    assert any(leaf.shape == () and float(leaf) == 2.0 for leaf in leaves)


def test_prediction_needs_its_parameterisation():
    # No default: a network's parameterisation is a fact about it, never a guess.
    with pytest.raises(TypeError):
        sf.Prediction(sf.VPSDE(), lambda t, x: x)  # pyright: ignore[reportCallIssue]


@pytest.mark.parametrize("kind", KINDS)
def test_noisy_mixture_outputs_the_exact_quantity_it_names(kind):
    sde = sf.VPSDE()
    mix = case_a()
    noisy = mix.noised(sde, kind)
    t = jnp.asarray(0.4)
    x = mix.noised(sde).sample(t, 8, key=jax.random.key(1))
    alpha, sigma = sde.marginal(t)
    score = mix.noised(sde).score(t, x)
    exact = {
        "score": score,
        "eps": -sigma * score,
        "x0": noisy.denoise(t, x),
        "v": alpha * (-sigma * score) - sigma * noisy.denoise(t, x),
    }
    assert noisy.parameterisation == kind
    assert_allclose(noisy(t, x), exact[kind], rtol=1e-12)
    # Every reading agrees with the exact quantity, whichever one is native.
    for target in KINDS:
        assert_allclose(getattr(noisy, target)(t, x), exact[target], rtol=1e-7, atol=1e-9)
    with pytest.raises(ValueError, match="`parameterisation`"):
        mix.noised(sde, "noise")
