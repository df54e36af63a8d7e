"""The training loop: checkpoints, exact resume, divergence, alternating updates, EMA."""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
from numpy.testing import assert_allclose

import scoreflow as sf
from scoreflow import train


class Quadratic(eqx.Module):
    """A tiny model: loss = mean ||x - mu||^2 + noise from its key, so keys matter."""

    mu: jax.Array

    def loss(self, x, *, key):
        jitter = 1e-3 * jr.normal(key, ())
        return jnp.mean(jnp.sum((x - self.mu[None]) ** 2, -1)) + jitter


def _data():
    return jr.normal(jr.key(0), (512, 3)) + jnp.asarray([[1.0, -2.0, 0.5]])


OPT = train.default_optimizer(5e-2)


def _fit(num_steps, **kw):
    return train.fit(
        Quadratic(jnp.zeros(3)),
        _data(),
        num_steps=num_steps,
        batch_size=16,
        optimizer=OPT,
        steps_per_chunk=10,
        progress=False,
        key=jr.key(1),
        **kw,
    )


def _assert_tree_equal(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    for u, v in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_fit_learns_the_mean():
    res = _fit(200)
    assert_allclose(res.model.mu, [1.0, -2.0, 0.5], atol=0.15)
    assert res.losses.shape == (200,)
    assert int(res.state.step) == 200
    # The EMA lags the iterate but has converged too.
    assert_allclose(res.ema_model.mu, [1.0, -2.0, 0.5], atol=0.3)


def test_checkpoint_round_trip_is_bit_exact(tmp_path):
    state = _fit(20).state
    path = tmp_path / "ckpt.eqx"
    train.save_checkpoint(path, state)
    like = train.init_state(Quadratic(jnp.ones(3)), OPT, key=jr.key(9))
    loaded = train.load_checkpoint(path, like)
    _assert_tree_equal(loaded, state)
    assert int(loaded.step) == 20
    assert train.checkpoint_info(path)["step"] == 20  # one file: state and metadata agree
    assert not list(tmp_path.glob("*.tmp"))  # the write was atomic: no leftovers


def test_resume_equals_uninterrupted_run(tmp_path):
    path = tmp_path / "run.eqx"
    full = _fit(50)
    first = _fit(30, checkpoint=path)
    assert int(first.state.step) == 30
    resumed = _fit(50, checkpoint=path)
    _assert_tree_equal(resumed.state, full.state)
    np.testing.assert_array_equal(resumed.losses, full.losses[30:])


class Exploding(eqx.Module):
    """Loss NaN once the parameter crosses zero (log of a negative number)."""

    a: jax.Array

    def loss(self, x, *, key):
        return jnp.log(self.a) + 0.0 * jnp.sum(x)


def test_nan_loss_stops_with_message_and_keeps_checkpoint(tmp_path):
    path = tmp_path / "ckpt.eqx"
    kw: dict[str, Any] = dict(
        batch_size=4,
        optimizer=optax.sgd(0.03),
        steps_per_chunk=5,
        checkpoint=path,
        checkpoint_every=5,
        ema_decay=None,
        progress=False,
        key=jr.key(0),
    )
    # d/da log a = 1/a: a decreases by 0.03/a per step and crosses 0 after ~17 steps.
    with pytest.raises(train.TrainingDiverged, match=r"loss was nan at step \d+") as info:
        train.fit(Exploding(jnp.asarray(1.0)), jnp.ones((8, 1)), num_steps=100, **kw)
    err = info.value
    assert "last good checkpoint" in str(err)
    good = int(err.state.step)
    assert good % 5 == 0 and good < err.step
    assert np.isfinite(float(err.state.model.a)) and float(err.state.model.a) > 0
    like = train.init_state(Exploding(jnp.asarray(1.0)), optax.sgd(0.03), ema=False, key=jr.key(0))
    on_disk = train.load_checkpoint(path, like)
    assert int(on_disk.step) == good
    _assert_tree_equal(on_disk, err.state)


class TwoPlayers(eqx.Module):
    g: jax.Array
    d: jax.Array

    def loss(self, x, *, key):
        # Each group's gradient is its own objective (the stop-gradient split of a GAN).
        sg = jax.lax.stop_gradient
        return jnp.sum((self.g - 1.0) ** 2 * (1 + sg(self.d) ** 2)) + jnp.sum(
            (self.d + 2.0) ** 2 * (1 + sg(self.g) ** 2)
        )


def test_alternating_updates_one_group_per_step():
    # An optax label tree: the model's structure with a group name at each leaf.
    labels = TwoPlayers(g="gen", d="disc")  # pyright: ignore[reportArgumentType]  # labels, not arrays
    opt = train.alternating(
        {"gen": optax.sgd(0.1), "disc": optax.sgd(0.1)}, labels, order=("disc", "disc", "gen")
    )
    model = TwoPlayers(jnp.zeros(2), jnp.zeros(2))
    history = [model]
    for n in range(1, 7):
        res = train.fit(
            model,
            jnp.zeros((4, 1)),
            num_steps=n,
            batch_size=2,
            optimizer=opt,
            ema_decay=None,
            steps_per_chunk=1,
            progress=False,
            key=jr.key(0),
        )
        history.append(res.model)
    moved = [
        ("g" if not np.array_equal(a.g, b.g) else "")
        + ("d" if not np.array_equal(a.d, b.d) else "")
        for a, b in zip(history[:-1], history[1:])
    ]
    assert moved == ["d", "d", "g", "d", "d", "g"]


@pytest.mark.slow
def test_fit_accepts_a_sampler_and_trains_a_score_model():
    sde = sf.VPSDE()
    net = sf.nn.TimeMLP((2,), width=16, depth=1, key=jr.key(0))
    model = sf.ScoreSDE(sde, net, parameterisation="eps", event_shape=(2,))
    mix = sf.data.ring_mixture()
    res = train.fit(
        model,
        mix.sample,
        num_steps=20,
        batch_size=32,
        steps_per_chunk=10,
        progress=False,
        key=jr.key(1),
    )
    assert res.losses.shape == (20,) and np.all(np.isfinite(res.losses))
    # The SDE's Python floats are not trained.
    assert res.model.sde == sde


@pytest.mark.parametrize(
    "kw,name",
    [
        (dict(num_steps=-1), "num_steps"),
        (dict(batch_size=0), "batch_size"),
        (dict(steps_per_chunk=0), "steps_per_chunk"),
        (dict(ema_decay=1.0), "ema_decay"),
    ],
)
def test_bad_arguments_raise(kw, name):
    args = dict(num_steps=10, batch_size=4, key=jr.key(0), progress=False) | kw
    with pytest.raises(ValueError, match=f"`{name}`"):
        train.fit(Quadratic(jnp.zeros(3)), _data(), **args)


def test_alternating_rejects_unknown_labels():
    with pytest.raises(ValueError, match="order"):
        train.alternating({"gen": optax.sgd(0.1)}, None, order=("gen", "disc"))


@pytest.mark.slow
def test_short_training_reaches_kl_below_0_1():
    from scoreflow._demo import run_training_demo

    s = run_training_demo(
        train_steps=3000, num_samples=500, num_eval=1000, out=None, progress=False
    )
    assert s["kl"] <= 0.1, s
