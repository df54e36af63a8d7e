"""Built-in datasets, user arrays, scalers, and the command line."""

import json

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from numpy.testing import assert_allclose

import scoreflow as sf
from scoreflow import data
from scoreflow.cli import main


@pytest.mark.parametrize("name", data.TOYS)
def test_toys(name):
    x = data.toy_sample(name, 500, key=jr.key(0))
    assert x.shape == (500, 2) and bool(jnp.all(jnp.isfinite(x)))
    assert float(jnp.abs(x).max()) < 8
    y = data.toy_sample(name, 500, key=jr.key(0))
    np.testing.assert_array_equal(x, y)


def test_toy_unknown_name():
    with pytest.raises(ValueError, match="`name`"):
        data.toy_sample("spiral", 10, key=jr.key(0))


def test_checkerboard_occupies_alternate_squares():
    x = np.asarray(data.toy_sample("checkerboard", 4000, key=jr.key(1)))
    cells = (np.floor(x[:, 0] / 2) + np.floor(x[:, 1] / 2)) % 2
    assert np.all(cells == cells[0])
    assert np.all(np.abs(x) <= 4)


def test_digits_split_and_scale():
    train, test = data.digits("train"), data.digits("test")
    assert train.shape == (1438, 1, 8, 8) and test.shape == (359, 1, 8, 8)
    assert float(train.min()) > -1 and float(train.max()) < 1
    # Fixed split: disjoint, and the same on every call.
    raw, _ = data.load_digits_raw()
    np.testing.assert_array_equal(data.digits("test"), test)
    n = raw.shape[0]
    perm = np.random.default_rng(0).permutation(n)
    assert_allclose(np.asarray(test)[:, 0], 2 * (raw[perm[n - 359 :]] + 0.5) / 17 - 1, rtol=1e-6)
    assert raw.shape == (1797, 8, 8) and raw.max() == 16
    # The integers behind the same split are what bits/dim dequantises.
    ints = data.digits_raw("test")
    assert ints.shape == (359, 1, 8, 8) and jnp.issubdtype(ints.dtype, jnp.integer)
    np.testing.assert_array_equal(np.asarray(ints)[:, 0], raw[perm[n - 359 :]])
    with pytest.raises(ValueError, match="`split`"):
        data.digits_raw("validation")


def test_digits_bits_per_dim_of_uniform_density():
    # The uniform density on [-1, 1]^64 has log p_y = -64 log 2; in the pixel bins it is
    # uniform over 17 levels: log2(17) bits per dimension, through the one dequantiser.
    uniform = lambda y, *, key: jnp.full(y.shape[:1], -64 * np.log(2.0))
    res = sf.metrics.bits_per_dim(
        uniform, data.digits_raw("test")[:4], levels=data.DIGITS_LEVELS, key=jr.key(0)
    )
    assert_allclose(res.bits_per_dim, np.log2(17), rtol=1e-12)


def test_load_array(tmp_path):
    a = np.random.default_rng(0).normal(size=(10, 3))
    np.save(tmp_path / "a.npy", a)
    np.savez(tmp_path / "b.npz", x=a, y=a[:, :1])
    np.savez(tmp_path / "c.npz", a, a)
    assert_allclose(data.load_array(tmp_path / "a.npy"), a)
    assert_allclose(data.load_array(tmp_path / "b.npz"), a)
    assert_allclose(data.load_array(tmp_path / "b.npz", name="y"), a[:, :1])
    with pytest.raises(ValueError, match="name"):
        data.load_array(tmp_path / "c.npz")
    np.save(tmp_path / "bad.npy", np.ones(3))
    with pytest.raises(ValueError, match="shape"):
        data.load_array(tmp_path / "bad.npy")
    with pytest.raises(ValueError, match=".npy or .npz"):
        data.load_array(tmp_path / "a.csv")
    a[0, 0] = np.nan
    np.save(tmp_path / "nan.npy", a)
    with pytest.raises(ValueError, match="NaN"):
        data.load_array(tmp_path / "nan.npy")


def test_standardiser_round_trip():
    x = jr.normal(jr.key(0), (100, 3)) * jnp.asarray([[2.0, 0.5, 1.0]]) + 3.0
    s = data.Standardiser.fit(x)
    y = s.transform(x)
    assert_allclose(y.mean(0), 0, atol=1e-6)
    assert_allclose(y.std(0), 1, rtol=1e-6)
    assert_allclose(s.inverse(y), x, rtol=1e-6)
    assert_allclose(s.log_det(), -jnp.sum(jnp.log(s.scale)))


def test_cli_train_sample_and_evaluate(tmp_path, capsys):
    # The sizes of test_checkpoints.py's CLI runs: the same programs, compiled once.
    cfg = {
        "dataset": "ring_mixture",
        "num_train": 128,
        "steps": 4,
        "batch_size": 16,
        "steps_per_chunk": 2,
        "network": {"width": 8, "depth": 1},
        "checkpoint": str(tmp_path / "run" / "m.eqx"),
    }
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    assert main(["train", "--config", str(path), "--quiet"]) == 0
    assert (tmp_path / "run" / "m.eqx").exists()
    out = tmp_path / "s.npy"
    png = tmp_path / "s.png"
    assert (
        main(
            [
                "sample",
                "--checkpoint",
                cfg["checkpoint"],
                "--num",
                "8",
                "--out",
                str(out),
                "--png",
                str(png),
            ]
        )
        == 0
    )
    assert np.load(out).shape == (8, 2) and png.exists()
    report = tmp_path / "r.json"
    args = ["evaluate", "--checkpoint", cfg["checkpoint"], "--num", "8", "--num-eval", "8"]
    args += ["--json", str(report)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "scoreflow train" in text and "scoreflow sample" in text
    assert "KL(data || model)" in text and "modes captured" in text
    fields = json.loads(report.read_text())
    assert fields["num_samples"] == 8 and fields["kl"] > 0 and 0 < fields["mmd_p_value"] <= 1


def test_cli_config_errors(tmp_path):
    p = tmp_path / "cfg.json"
    p.write_text(json.dumps({"modle": "ddpm"}))
    with pytest.raises(ValueError, match="Unknown config key"):
        main(["--debug", "train", "--config", str(p)])
    p.write_text(json.dumps({"model": "gan"}))
    with pytest.raises(ValueError, match="'model' must be one of"):
        main(["--debug", "train", "--config", str(p)])


@pytest.mark.slow
def test_cli_demo_smoke(tmp_path, capsys):
    png = tmp_path / "demo.png"
    args = ["demo", "--train-steps", "20", "--samples", "64", "--steps", "4", "--quiet"]
    assert main(args + ["--out", str(png)]) == 0
    text = capsys.readouterr().out
    assert "KL(data || model)" in text and png.exists()
