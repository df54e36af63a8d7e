"""Save / load without a skeleton, checkpoint integrity and consistency, resume checks,
validation and early stopping, and the CLI's plain-spoken errors."""

import json

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import scoreflow as sf
from scoreflow import train
from scoreflow.cli import main

from .test_train import OPT, Quadratic, _data, _fit


def _score_sde(beta_max=20.0, parameterisation="eps", width=16):
    net = sf.nn.TimeMLP((2,), width=width, depth=1, key=jr.key(1))
    sde = sf.VPSDE(beta_max=beta_max)
    return sf.ScoreSDE(sde, net, parameterisation=parameterisation, event_shape=(2,))


def _fit_sde(model, path, num_steps=4, **kw):
    x = sf.data.ring_mixture().sample(64, key=jr.key(0)) / 4
    return train.fit(
        model, x, num_steps=num_steps, batch_size=8, steps_per_chunk=2, checkpoint=path,
        progress=False, key=jr.key(2), **kw,
    )  # fmt: skip


def test_a_fit_checkpoint_loads_without_a_skeleton_with_explicit_weights(tmp_path):
    path = tmp_path / "run.eqx"
    res = _fit(20, checkpoint=path)
    ema, last = sf.load(path), sf.load(path, weights="last")
    np.testing.assert_array_equal(ema.mu, res.ema_model.mu)
    np.testing.assert_array_equal(last.mu, res.model.mu)
    assert not np.array_equal(ema.mu, last.mu)
    state = train.load_checkpoint(path)  # the whole state, also without a skeleton
    assert int(state.step) == 20
    _fit(10, checkpoint=tmp_path / "no_ema.eqx", ema_decay=None)
    with pytest.raises(ValueError, match="kept no EMA"):
        sf.load(tmp_path / "no_ema.eqx")
    with pytest.raises(ValueError, match="`weights`"):
        sf.load(path, weights="best")


def test_resuming_a_different_model_names_the_differing_fields(tmp_path):
    path = tmp_path / "run.eqx"
    _fit_sde(_score_sde(beta_max=20.0), path)
    with pytest.raises(train.CheckpointMismatch) as info:
        _fit_sde(_score_sde(beta_max=10.0, parameterisation="x0"), path, num_steps=6)
    text = str(info.value)
    assert "model.sde.beta_max: checkpoint 20.0, given 10.0" in text
    assert "parameterisation: checkpoint 'eps', given 'x0'" in text
    assert len(info.value.differences) == 2  # the EMA and the optimiser's moments: once
    with pytest.raises(
        train.CheckpointMismatch,
        match=r"first.weight: checkpoint float\d+\[16, 2\], given float\d+\[32, 2\]",
    ):
        _fit_sde(_score_sde(width=32), path, num_steps=6)
    # Asked to, it warns and continues with what the checkpoint holds.
    with pytest.warns(UserWarning, match="beta_max"):
        res = _fit_sde(_score_sde(beta_max=10.0), path, num_steps=6, strict_resume=False)
    assert res.model.sde.beta_max == 20.0 and int(res.state.step) == 6


def test_a_flipped_bit_or_a_truncated_file_is_one_clear_error(tmp_path):
    path = tmp_path / "run.eqx"
    _fit(10, checkpoint=path)
    raw = bytearray(path.read_bytes())
    for name, broken in [("flip", raw[:900] + bytes([raw[900] ^ 4]) + raw[901:]),
                         ("cut", raw[: len(raw) // 2])]:  # fmt: skip
        bad = tmp_path / f"{name}.eqx"
        bad.write_bytes(bytes(broken))
        for load in (sf.load, train.load_checkpoint, train.checkpoint_info):
            with pytest.raises(train.CheckpointError, match=f"{name}.eqx' is corrupt or truncated"):
                load(bad)
    (tmp_path / "raw.eqx").write_bytes(b"\x93NUMPY")
    with pytest.raises(train.CheckpointError, match="not a scoreflow file"):
        sf.load(tmp_path / "raw.eqx")


def test_state_metadata_and_history_are_one_atomic_file(tmp_path):
    path = tmp_path / "run.eqx"
    (tmp_path / ".run.eqx.abc.tmp").write_bytes(b"left by a killed writer")
    _fit(20, checkpoint=path, checkpoint_every=10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.eqx"]
    info = train.checkpoint_info(path)
    assert info["step"] == 20 and info["kind"] == "train_state" and info["has_ema"]
    resumed = _fit(30, checkpoint=path)
    full = _fit(30)
    np.testing.assert_array_equal(resumed.history["loss"], full.history["loss"])
    assert resumed.losses.shape == (10,) and resumed.history["loss"].shape == (30,)


def test_validation_split_history_and_early_stopping(tmp_path):
    res = _fit(60, validation=0.25, validate_every=20)
    assert list(res.history["validation_step"]) == [20, 40, 60]
    v = res.history["validation_loss"]
    assert v[-1] < v[0] and res.best_model is not None
    # A model that cannot improve: patience 2 stops it after three validations.
    frozen = train.fit(
        Quadratic(jnp.zeros(3)), _data(), num_steps=200, batch_size=16, optimizer=OPT,
        filter_spec=lambda leaf: False, validation=_data()[:64], patience=2,
        steps_per_chunk=10, ema_decay=None, progress=False, key=jr.key(1),
    )  # fmt: skip
    assert frozen.stopped_early and int(frozen.state.step) == 30
    with pytest.raises(ValueError, match="`patience` needs `validation`"):
        _fit(10, patience=2)
    with pytest.raises(ValueError, match="fraction must lie in"):
        _fit(10, validation=1.5)


def test_fit_input_errors_name_the_argument(tmp_path):
    ints = jnp.ones((64, 2), jnp.int32)
    with pytest.raises(ValueError, match="`data` has integer dtype int32"):
        train.fit(_score_sde(), ints, num_steps=1, progress=False, key=jr.key(0))
    with pytest.raises(ValueError, match="`checkpoint` .* is a directory"):
        _fit(1, checkpoint=tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="`checkpoint` .* lies under"):
        _fit(1, checkpoint=tmp_path / "file" / "run.eqx")


def test_save_refuses_what_it_cannot_rebuild(tmp_path):
    model = _score_sde()
    net = sf.nn.TimeMLP((2,), width=8, depth=1, activation=lambda x: x, key=jr.key(0))
    with pytest.raises(TypeError, match=r"Cannot save `activation`: .*a lambda"):
        sf.save(tmp_path / "m.eqx", net)
    with pytest.raises(ValueError, match="`path` .* is a directory"):
        sf.save(tmp_path, model)


# ------------------------------------------------------------------------------- the CLI


def _config(tmp_path, **kw):
    cfg = {
        "num_train": 128, "steps": 4, "batch_size": 16, "steps_per_chunk": 2,
        "network": {"width": 8, "depth": 1}, "checkpoint": str(tmp_path / "m.eqx"), **kw,
    }  # fmt: skip
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    return path


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"steps": "20"}, "'steps' must be an integer, got '20' (str)"),
        ({"dtype": "float16"}, "'dtype' must be one of 'float32', 'float64', got 'float16'"),
        ({"network": {"widht": 8}}, "Unknown key(s) ['widht'] in the config's network table"),
        ({"learning_rate": -1.0}, "'learning_rate' must be > 0.0"),
        ({"ema_decay": 1.0}, "'ema_decay' must be < 1"),
        ({"batch_size": True}, "'batch_size' must be an integer, got True"),
        ({"dataset": "mnist"}, "'dataset' must be one of"),
    ],
)
def test_cli_config_errors_are_one_line_naming_the_key(tmp_path, capsys, change, fragment):
    assert main(["train", "--config", str(_config(tmp_path, **change)), "--quiet"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("scoreflow train: error: ") and fragment in err[0]
    assert err[1] == "(run with --debug for the traceback)" and len(err) == 2


def test_cli_json_syntax_error_version_and_print_config(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"steps": 3,}')
    assert main(["train", "--config", str(bad)]) == 2
    assert "is not valid JSON: " in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith(f"scoreflow {sf.__version__}")
    assert main(["train", "--config", str(_config(tmp_path, seed=3)), "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["seed"] == 3 and printed["learning_rate"] == 2e-3
    assert not (tmp_path / "m.eqx").exists()


def test_cli_rerun_with_another_width_is_refused_and_the_checkpoint_survives(tmp_path, capsys):
    assert main(["train", "--config", str(_config(tmp_path)), "--quiet"]) == 0
    before = (tmp_path / "m.eqx").read_bytes()
    wider = _config(tmp_path, network={"width": 16, "depth": 1}, steps=6)
    assert main(["train", "--config", str(wider), "--quiet"]) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert "resumed from step 4" in captured.out  # it tried, and refused
    assert "different model" in err and "checkpoint float32[8" in err
    assert (tmp_path / "m.eqx").read_bytes() == before
    out = tmp_path / "s.npy"
    assert main(["sample", "--checkpoint", str(tmp_path / "m.eqx"), "--num", "8",
                 "--out", str(out)]) == 0  # fmt: skip
    assert main(["train", "--config", str(_config(tmp_path, steps=6)), "--quiet"]) == 0
    assert "resumed from step 4" in capsys.readouterr().out


def test_cli_samples_a_checkpoint_written_from_python(tmp_path, capsys):
    path = tmp_path / "py.eqx"
    _fit_sde(_score_sde(), path)
    out, png = tmp_path / "s.npy", tmp_path / "s.png"
    data = tmp_path / "d.npy"
    np.save(data, np.zeros((5, 2)))
    args = ["sample", "--checkpoint", str(path), "--num", "8", "--out", str(out)]
    args += ["--solver", "dpmpp2m", "--steps", "5", "--png", str(png), "--data", str(data)]
    assert main(args) == 0
    assert np.load(out).shape == (8, 2) and png.exists()
    assert "8 samples of ScoreSDE" in capsys.readouterr().out
    assert main(["evaluate", "--checkpoint", str(path)]) == 2
    assert "records no dataset; pass --dataset" in capsys.readouterr().err
    assert main(["sample", "--checkpoint", str(tmp_path / "none.eqx")]) == 2
    assert "No checkpoint file" in capsys.readouterr().err
