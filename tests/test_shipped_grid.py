"""`OptimisedGrid`: the schedule shipped as data (issue 19)."""

import jax.numpy as jnp
import numpy as np
import pytest

import scoreflow as sf
from scoreflow.solve._grids._shipped import shipped_fractions

S = sf.solve
SDES = [
    sf.VPSDE(),
    sf.SubVPSDE(),
    sf.VESDE(),
    sf.EDMSDE(),
    sf.sde.DiscreteVPSDE(jnp.linspace(1e-4, 0.02, 1000)),
]


def test_shipped_tables():
    steps = S.OptimisedGrid.shipped_steps()
    assert len(steps) >= 1
    for n in steps:
        frac = shipped_fractions(n)
        assert frac.shape == (n + 1,)
        assert frac[0] == 0.0 and frac[-1] == 1.0
        assert np.all(np.diff(frac) > 0)


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("n", [1, 3, 9, 13, 19, 49, 120])
def test_decreasing_ends_pinned(sde, n):
    ts = np.asarray(S.OptimisedGrid(n).times(sde))
    assert ts.shape == (n + 1,)
    assert ts[0] == float(sde.T) and ts[-1] == float(sde.t_min)
    assert np.all(np.diff(ts) < 0)


def test_edm_is_log_sigma_fraction():
    # On EDM the table is the fraction of the way in log sigma from 80 to 0.002.
    n = S.OptimisedGrid.shipped_steps()[0]
    ts = np.asarray(S.OptimisedGrid(n).times(sf.EDMSDE()))
    frac = np.log(ts / 80.0) / np.log(0.002 / 80.0)
    np.testing.assert_allclose(frac, shipped_fractions(n), atol=1e-12)


def test_unshipped_count_interpolates_nearest_table():
    steps = S.OptimisedGrid.shipped_steps()
    m = steps[0]
    n = 2 * m  # nearest in log N is m or a larger table; either way a resampled one
    frac = shipped_fractions(n)
    assert frac.shape == (n + 1,)
    assert frac[0] == 0.0 and frac[-1] == 1.0 and np.all(np.diff(frac) > 0)
    if n not in steps:
        near = min(steps, key=lambda k: abs(np.log(k) - np.log(n)))
        # The resampled grid lies on the nearest table's piecewise-linear curve.
        table = shipped_fractions(near)
        u = np.linspace(0, 1, n + 1)
        np.testing.assert_allclose(frac, np.interp(u, np.linspace(0, 1, near + 1), table))
        assert not np.allclose(frac, np.linspace(0, 1, n + 1))


def test_samples_with_the_grid():
    mix = sf.GaussianMixture(
        jnp.asarray([0.5, 0.5]), jnp.asarray([[-2.0, 0.0], [2.0, 0.0]]), jnp.ones((2, 2))
    )
    sde = sf.EDMSDE()
    y0 = 80.0 * jnp.ones((3, 2))
    res = S.solve_probability_flow(
        sde, mix.noised(sde, "x0"), y0, solver=S.ExponentialAdamsPC(3), grid=S.OptimisedGrid(9)
    )
    assert int(res.nfe) == 10
    assert np.all(np.isfinite(np.asarray(res.samples)))


@pytest.mark.parametrize("bad", [0, -3, True])
def test_bad_num_steps(bad):
    with pytest.raises(ValueError, match="`num_steps` must be an int >= 1"):
        S.OptimisedGrid(bad)
