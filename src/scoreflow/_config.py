"""Build datasets, models and optimisers from a plain config (JSON or TOML) for the CLI."""

import json
import pathlib

import jax.numpy as jnp
import jax.random as jr

from . import data as data_lib
from . import losses, models, nn, train
from . import sde as sde_lib

DEFAULTS = {
    "dataset": "ring_mixture",
    "num_train": 20000,
    "model": "score_sde",
    "sde": "vp",
    "parameterisation": "eps",
    "weighting": "sigma2",
    "time_sampling": "uniform",
    "sigma_data": 0.5,
    "network": {},
    "steps": 3000,
    "batch_size": 256,
    "learning_rate": 2e-3,
    "warmup_steps": 100,
    "clip_norm": 1.0,
    "ema_decay": 0.999,
    "steps_per_chunk": 250,
    "seed": 0,
    "checkpoint": "scoreflow_run/model.eqx",
    "checkpoint_every": None,
    "dtype": "float32",
}
MODELS = ("score_sde", "ddpm", "ncsn")
SDES = {
    "vp": lambda: sde_lib.VPSDE(t_min=1e-5),
    "subvp": lambda: sde_lib.SubVPSDE(t_min=1e-5),
    "ve": lambda: sde_lib.VESDE(sigma_min=0.01, sigma_max=20.0),
    "edm": lambda: sde_lib.EDMSDE(T=20.0),
}
# The config names the loss options; the library takes them as modules.
WEIGHTINGS = {
    "sigma2": lambda cfg: losses.SigmaSquaredWeighting(),
    "likelihood": lambda cfg: losses.LikelihoodWeighting(),
    "edm": lambda cfg: losses.EDMWeighting(cfg["sigma_data"]),
    "unit": lambda cfg: losses.UnitWeighting(),
}
TIME_SAMPLINGS = {
    "uniform": losses.UniformTime,
    "importance": losses.LogSNRUniformTime,
    "lognormal": losses.LogNormalTime,
}


def load_config(path: str | None, overrides: dict | None = None) -> dict:
    """Read a JSON or TOML config, fill in `DEFAULTS`, apply `overrides`, validate."""
    cfg = dict(DEFAULTS)
    if path is not None:
        p = pathlib.Path(path)
        if p.suffix == ".json":
            cfg.update(json.loads(p.read_text()))
        elif p.suffix == ".toml":
            try:
                import tomllib
            except ImportError as e:  # Python 3.10
                raise ValueError("TOML configs need Python >= 3.11; use JSON.") from e
            cfg.update(tomllib.loads(p.read_text()))
        else:
            raise ValueError(f"The config must be a .json or .toml file, got {p.name!r}.")
    cfg.update({k: v for k, v in (overrides or {}).items() if v is not None})
    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"Unknown config keys {sorted(unknown)}; known: {sorted(DEFAULTS)}.")
    if cfg["model"] not in MODELS:
        raise ValueError(f"`model` must be one of {MODELS}, got {cfg['model']!r}.")
    for name, choices in (
        ("sde", SDES),
        ("weighting", WEIGHTINGS),
        ("time_sampling", TIME_SAMPLINGS),
    ):
        if cfg[name] not in choices:
            raise ValueError(f"`{name}` must be one of {sorted(choices)}, got {cfg[name]!r}.")
    return cfg


def dtype_of(cfg):
    return {"float32": jnp.float32, "float64": jnp.float64}[cfg["dtype"]]


def load_data(cfg: dict, split: str = "train"):
    """The training (or test) array of the configured dataset."""
    name, dtype = cfg["dataset"], dtype_of(cfg)
    if name in data_lib.TOYS:
        n = cfg["num_train"] if split == "train" else 2000
        key = jr.key(cfg["seed"] + (1 if split == "train" else 2))
        return data_lib.toy_sample(name, n, dtype=dtype, key=key)
    if name == "digits":
        return data_lib.digits(split, dtype=dtype)
    p = pathlib.Path(name)
    if p.suffix in (".npy", ".npz"):
        return data_lib.load_array(p, dtype=dtype)
    raise ValueError(
        f"`dataset` must be one of {data_lib.TOYS + ('digits',)} or a .npy/.npz path, got {name!r}."
    )


def _network(cfg, event_shape, time_transform, key, log_noise=False):
    # A log noise level spans ~10 units: lower Fourier frequencies than for t in [0, 1].
    opts = {"embedding_scale": 1.0 if log_noise else 16.0, **cfg["network"]}
    if len(event_shape) == 3:
        return nn.UNet(event_shape, time_transform=time_transform, key=key, **opts)
    return nn.TimeMLP(event_shape, time_transform=time_transform, key=key, **opts)


def build_model(cfg: dict, event_shape: tuple[int, ...]):
    """The configured model, freshly initialised from `seed`."""
    key = jr.key(cfg["seed"])
    if cfg["model"] == "ncsn":
        net = nn.ScaledScore(_network(cfg, event_shape, None, key, log_noise=True))
        return models.NCSN(net, event_shape=event_shape)
    if cfg["model"] == "ddpm":
        return models.DDPM(_network(cfg, event_shape, None, key), event_shape=event_shape)
    sde = SDES[cfg["sde"]]()
    # Condition VE / EDM networks on the log noise level, whose range is O(1).
    transform = None if cfg["sde"] in ("vp", "subvp") else nn.LogNoiseLevel(sde)
    net = _network(cfg, event_shape, transform, key, log_noise=transform is not None)
    return models.ScoreSDE(
        sde,
        net,
        parameterisation=cfg["parameterisation"],
        event_shape=event_shape,
        weighting=WEIGHTINGS[cfg["weighting"]](cfg),
        time_sampling=TIME_SAMPLINGS[cfg["time_sampling"]](),
    )


def build_optimizer(cfg: dict):
    return train.default_optimizer(
        cfg["learning_rate"],
        num_steps=cfg["steps"],
        warmup_steps=cfg["warmup_steps"],
        clip_norm=cfg["clip_norm"],
    )
