"""Build datasets, models and optimisers from a plain config (JSON or TOML) for the CLI."""

import dataclasses
import inspect
import json
import pathlib
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr

from . import data as data_lib
from . import losses, models, nn, train
from . import sde as sde_lib

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
PARAMETERISATIONS = ("eps", "x0", "v", "score")
DTYPES = ("float32", "float64")


@dataclasses.dataclass(frozen=True)
class Option:
    """One config key: its type, default, help and allowed values.

    `type` is a type or a tuple of types (`type(None)` where the key may be null); an
    `int` is accepted where a `float` is wanted, a `bool` never where a number is.
    `minimum` bounds numbers from below (`exclusive` makes the bound strict).
    """

    type: Any  # a type, or a tuple of types
    default: object
    help: str
    choices: tuple | None = None
    minimum: int | float | None = None
    exclusive: bool = False


_NONE = type(None)
SCHEMA: dict[str, Option] = {
    "dataset": Option(
        str, "ring_mixture", "a 2-d toy, `digits`, or the path of a `.npy` / `.npz` file"
    ),
    "num_train": Option(int, 20000, "points drawn from a 2-d toy for training", minimum=1),
    "model": Option(str, "score_sde", "the model family", choices=MODELS),
    "sde": Option(str, "vp", "the SDE of `score_sde`", choices=tuple(SDES)),
    "parameterisation": Option(
        str, "eps", "what the network of `score_sde` predicts", choices=PARAMETERISATIONS
    ),
    "weighting": Option(
        str, "sigma2", "the loss weighting of `score_sde`", choices=tuple(WEIGHTINGS)
    ),
    "time_sampling": Option(
        str, "uniform", "how `score_sde` draws training times", choices=tuple(TIME_SAMPLINGS)
    ),
    "sigma_data": Option(
        float, 0.5, "the data scale of the `edm` weighting", minimum=0.0, exclusive=True
    ),
    "network": Option(
        dict, {}, "keyword arguments of the network (`TimeMLP` for vectors, `UNet` for images)"
    ),
    "steps": Option(
        int, 3000, "optimisation steps in all (a resumed run counts its own)", minimum=1
    ),
    "batch_size": Option(int, 256, "examples per step", minimum=1),
    "learning_rate": Option(
        float, 2e-3, "peak learning rate (warm-up, then cosine decay)", minimum=0.0, exclusive=True
    ),
    "warmup_steps": Option(int, 100, "linear warm-up steps", minimum=0),
    "clip_norm": Option(
        (float, _NONE), 1.0, "global gradient-norm clip (null: none)", minimum=0.0, exclusive=True
    ),
    "ema_decay": Option(
        (float, _NONE), 0.999, "EMA decay of the parameters (null: no EMA)", minimum=0.0
    ),
    "steps_per_chunk": Option(
        int,
        250,
        "steps per jitted chunk (progress, checks and checkpoints happen between chunks)",
        minimum=1,
    ),
    "seed": Option(int, 0, "seed of the initialisation, the data and the training key"),
    "checkpoint": Option(
        str, "scoreflow_run/model.eqx", "checkpoint file (a rerun resumes from it)"
    ),
    "checkpoint_every": Option(
        (int, _NONE), None, "steps between checkpoints (null: only at the end)", minimum=1
    ),
    "dtype": Option(str, "float32", "floating dtype of data and parameters", choices=DTYPES),
}
DEFAULTS = {name: option.default for name, option in SCHEMA.items()}


class ConfigError(ValueError):
    """A config that cannot be run: the message names the key, what it wants and what it got."""


def _type_name(t) -> str:
    types = t if isinstance(t, tuple) else (t,)
    names: dict[Any, str] = {int: "an integer", float: "a number", str: "a string"}
    names.update({bool: "true or false", dict: "a table", _NONE: "null"})
    return " or ".join(names.get(x, getattr(x, "__name__", str(x))) for x in types)


def check_value(name: str, value: Any):
    """Raise `ConfigError` unless `value` suits the config key `name`."""
    if name not in SCHEMA:
        raise ConfigError(f"Unknown config key {name!r}; known keys: {', '.join(SCHEMA)}.")
    opt = SCHEMA[name]
    types = opt.type if isinstance(opt.type, tuple) else (opt.type,)
    ok = any(
        (value is None if t is _NONE else False)
        or (t is float and isinstance(value, (int, float)) and not isinstance(value, bool))
        or (t is int and isinstance(value, int) and not isinstance(value, bool))
        or (t in (str, dict, bool) and isinstance(value, t))
        for t in types
    )
    if not ok:
        raise ConfigError(
            f"Config key {name!r} must be {_type_name(opt.type)}, got {value!r} "
            f"({type(value).__name__})."
        )
    if opt.choices is not None and value not in opt.choices:
        raise ConfigError(
            f"Config key {name!r} must be one of {', '.join(map(repr, opt.choices))}, "
            f"got {value!r}."
        )
    number: float = value  # pyright: ignore[reportAssignmentType]  (checked numeric above)
    if opt.minimum is not None and value is not None:
        if number < opt.minimum or (opt.exclusive and value == opt.minimum):
            bound = ">" if opt.exclusive else ">="
            raise ConfigError(f"Config key {name!r} must be {bound} {opt.minimum}, got {value!r}.")
    if name == "ema_decay" and value is not None and number >= 1:
        raise ConfigError(f"Config key 'ema_decay' must be < 1, got {value!r}.")


def _read(path: pathlib.Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"Config file {str(path)!r} does not exist or is not a file.")
    text = path.read_text()
    if path.suffix == ".json":
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(
                f"Config file {str(path)!r} is not valid JSON: {e.msg} at line {e.lineno}, "
                f"column {e.colno}."
            ) from None
    elif path.suffix == ".toml":
        try:
            import tomllib
        except ImportError as e:  # Python 3.10
            raise ConfigError("TOML configs need Python >= 3.11; use JSON.") from e
        try:
            loaded = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"Config file {str(path)!r} is not valid TOML: {e}.") from None
    else:
        raise ConfigError(f"The config must be a .json or .toml file, got {path.name!r}.")
    if not isinstance(loaded, dict):
        raise ConfigError(f"Config file {str(path)!r} must hold a table of keys, got {loaded!r}.")
    return loaded


def load_config(path: str | None, overrides: dict | None = None) -> dict:
    """Read a JSON or TOML config, fill in the defaults, apply `overrides`, check every value.

    Raises:
        ConfigError: naming the key, the type or values it takes, and the value it got.
    """
    cfg = dict(DEFAULTS)
    if path is not None:
        cfg.update(_read(pathlib.Path(path)))
    cfg.update({k: v for k, v in (overrides or {}).items() if v is not None})
    for name, value in cfg.items():
        check_value(name, value)
    return cfg


def _check_network(cfg: dict, cls) -> None:
    params = inspect.signature(cls).parameters
    fixed = {"key", "time_transform", "data_shape", "event_shape", "self"}
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    known = [p for p, v in params.items() if p not in fixed and v.kind in kinds]
    unknown = sorted(set(cfg["network"]) - set(known))
    if unknown:
        raise ConfigError(
            f"Unknown key(s) {unknown} in the config's network table for {cls.__name__}; "
            f"it takes {', '.join(known)}."
        )


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
    raise ConfigError(
        f"Config key 'dataset' must be one of {data_lib.TOYS + ('digits',)} or a .npy/.npz "
        f"path, got {name!r}."
    )


def _network(cfg, event_shape, time_transform, key, log_noise=False):
    # A log noise level spans ~10 units: lower Fourier frequencies than for t in [0, 1].
    opts = {"embedding_scale": 1.0 if log_noise else 16.0, **cfg["network"]}
    cls = nn.UNet if len(event_shape) == 3 else nn.TimeMLP
    _check_network(cfg, cls)
    try:
        return cls(event_shape, time_transform=time_transform, key=key, **opts)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"The config's network table {cfg['network']} is invalid: {e}") from e


def build_model(cfg: dict, event_shape: tuple[int, ...]):
    """The configured model, freshly initialised from `seed`, its arrays in `dtype`."""
    dtype = dtype_of(cfg)
    model = _build_model(cfg, event_shape)
    cast = lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a
    return jax.tree_util.tree_map(cast, model)


def _build_model(cfg: dict, event_shape: tuple[int, ...]):
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
