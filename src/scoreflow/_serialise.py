"""One file format for trained models and training checkpoints, readable without a skeleton.

A file is ``MAGIC``, an 8-byte little-endian header length, a JSON header, the leaves as
Equinox serialises them (`eqx.tree_serialise_leaves`), and a SHA-256 digest of everything
between the magic and the digest. The header describes the whole pytree: for every
Equinox module its class and fields, for every array its shape and dtype, and every
Python value (hyperparameters, a parameterisation, an activation function by its import
path). `read` rebuilds the tree from that description and then reads the leaves into it,
so loading needs no model skeleton; the same description compared field by field tells
a resumed run when the model it was given differs from the one on disk.

Nothing is unpickled and no code from the file runs. A class or function is found by its
import path; modules of scoreflow and of its JAX stack are imported as needed, any other
module must already be imported by the reader (so that a file cannot make the reader
import arbitrary code).
"""

import dataclasses
import hashlib
import importlib
import io
import json
import os
import pathlib
import struct
import sys
import tempfile
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

MAGIC = b"SCOREFLOW-EQX\n"
FORMAT = 1
# Modules a file may make the reader import; any other must be imported already.
_IMPORTABLE = (
    "scoreflow",
    "equinox",
    "jax",
    "jaxlib",
    "diffrax",
    "optax",
    "lineax",
    "numpy",
    "builtins",
    "math",
    "operator",
    "functools",
)
# Where a callable without a usable `__module__` (jnp ufuncs, say) is looked up by name.
_NAMESPACES = ("jax.nn", "jax.numpy", "jax.lax", "jax.scipy.special", "numpy", "math", "operator")


class CheckpointError(ValueError):
    """A file that cannot be read as written: corrupt, truncated, or not a scoreflow file."""


class CheckpointMismatch(ValueError):
    """The model (or optimiser) given differs from the one stored in the checkpoint.

    Attributes:
        differences: one line per differing field, `path: checkpoint ..., given ...`.
    """

    def __init__(self, message, differences):
        super().__init__(message)
        self.differences = differences


# --------------------------------------------------------------------------- structure


def _qualified(obj) -> str:
    return f"{obj.__module__}:{obj.__qualname__}"


def _resolve(path: str) -> Any:
    module_name, _, qualname = path.partition(":")
    root = module_name.split(".")[0]
    if module_name in sys.modules:
        module = sys.modules[module_name]
    elif root in _IMPORTABLE:
        module = importlib.import_module(module_name)
    else:
        raise CheckpointError(
            f"The file refers to {path!r}, whose module {module_name!r} is not imported; "
            "import it before loading (a file never makes scoreflow import other code)."
        )
    obj = module
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _callable_path(fn, where: str) -> str:
    candidates = []
    module, name = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if module and name:
        candidates.append(f"{module}:{name}")
    if module in sys.modules:  # a module-level lambda (`_identity = lambda x: x`)
        candidates += [f"{module}:{k}" for k, v in vars(sys.modules[module]).items() if v is fn]
    short = getattr(fn, "__name__", None)
    if short:
        candidates += [f"{ns}:{short}" for ns in _NAMESPACES]
    for path in candidates:
        try:
            if _resolve(path) is fn:
                return path
        except (CheckpointError, AttributeError, ImportError):
            continue
    raise TypeError(
        f"Cannot save `{where}`: {fn!r} is not a function importable by name (a lambda or a "
        "local function?). Use a function defined at the top level of a module."
    )


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def describe(tree, where: str = "") -> Any:
    """A JSON-able description of `tree`: structure, array shapes and dtypes, Python values."""
    if tree is None:
        return {"none": None}
    if isinstance(tree, bool | int | float | str):
        return {"py": tree}
    if isinstance(tree, complex):
        return {"complex": [tree.real, tree.imag]}
    if _is_key(tree):
        impl = str(jax.random.key_impl(tree))
        return {"key": impl, "shape": list(tree.shape), "data": list(jr.key_data(tree).shape)}
    if isinstance(tree, jax.Array):
        return {"array": list(tree.shape), "dtype": str(tree.dtype)}
    if isinstance(tree, np.ndarray):
        return {"ndarray": list(tree.shape), "dtype": str(tree.dtype)}
    if isinstance(tree, np.generic):
        return {"npscalar": str(tree.dtype)}
    if isinstance(tree, np.dtype):
        return {"dtype": str(tree)}
    if isinstance(tree, eqx.Module):
        # Only the fields the instance holds: an `init=False` field with a default lives
        # on the class, and setting it on the instance would change the treedef.
        held = vars(tree)
        fields = {
            f.name: describe(held[f.name], f"{where}.{f.name}".lstrip("."))
            for f in dataclasses.fields(tree)
            if f.name in held
        }
        return {"module": _qualified(type(tree)), "fields": fields}
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        items = [
            describe(v, f"{where}.{k}".lstrip(".")) for k, v in zip(getattr(tree, "_fields"), tree)
        ]
        return {"namedtuple": _qualified(type(tree)), "items": items}
    if isinstance(tree, tuple | list):
        items = [describe(v, f"{where}[{i}]") for i, v in enumerate(tree)]
        return {type(tree).__name__: items}
    if isinstance(tree, dict):
        return {
            "dict": [[describe(k, where), describe(v, f"{where}[{k!r}]")] for k, v in tree.items()]
        }
    if isinstance(tree, type):
        path = _qualified(tree)
        if _resolve(path) is not tree:
            raise TypeError(f"Cannot save `{where}`: the class {tree!r} is not importable by name.")
        return {"type": path}
    if callable(tree):
        return {"callable": _callable_path(tree, where or "the tree")}
    raise TypeError(
        f"Cannot save `{where or 'the tree'}`: values of type {type(tree).__name__} have no "
        "file representation (arrays, Python scalars and strings, tuples, lists, dicts, "
        "Equinox modules and importable functions do)."
    )


def build(desc) -> Any:
    """A tree with the structure `desc` describes and placeholders for its arrays."""
    (kind, value), *rest = desc.items()
    if kind == "none":
        return None
    if kind == "py":
        return value
    if kind == "complex":
        return complex(*value)
    if kind == "key":
        return jax.ShapeDtypeStruct(tuple(desc["data"]), jnp.uint32)
    if kind == "array":
        return jax.ShapeDtypeStruct(tuple(value), np.dtype(desc["dtype"]))
    if kind == "ndarray":
        return np.empty(tuple(value), np.dtype(desc["dtype"]))
    if kind == "npscalar":
        return np.dtype(value).type(0)
    if kind == "dtype":
        return np.dtype(value)
    if kind == "module":
        cls = _resolve(value)
        if not (isinstance(cls, type) and issubclass(cls, eqx.Module)):
            raise CheckpointError(f"{value!r} in the file is not an Equinox module.")
        obj = object.__new__(cls)
        for name, field_desc in desc["fields"].items():
            object.__setattr__(obj, name, build(field_desc))
        return obj
    if kind == "namedtuple":
        return _resolve(value)(*[build(v) for v in desc["items"]])
    if kind in ("tuple", "list"):
        items = [build(v) for v in value]
        return tuple(items) if kind == "tuple" else items
    if kind == "dict":
        return {build(k): build(v) for k, v in value}
    if kind in ("type", "callable"):
        return _resolve(value)
    raise CheckpointError(f"Unknown entry {kind!r} in the file's description.")


def differences(stored, given, path: str = "") -> list[str]:
    """Where two descriptions differ, ignoring array values (shapes and dtypes count)."""
    if stored == given:
        return []
    label = path or "(root)"
    (k1, v1), (k2, v2) = next(iter(stored.items())), next(iter(given.items()))
    if k1 != k2 or k1 not in ("module", "namedtuple", "tuple", "list", "dict"):
        return [f"{label}: checkpoint {_show(stored)}, given {_show(given)}"]
    if k1 in ("module", "namedtuple") and v1 != v2:
        return [f"{label}: checkpoint {v1.split(':')[-1]}, given {v2.split(':')[-1]}"]
    if k1 == "module":
        f1, f2 = stored["fields"], given["fields"]
        out = []
        for name in dict.fromkeys([*f1, *f2]):
            if name not in f1 or name not in f2:
                out.append(f"{path}.{name}: present in only one of checkpoint and given")
            else:
                out += differences(f1[name], f2[name], f"{path}.{name}".lstrip("."))
        return out
    a, b = (stored["items"], given["items"]) if k1 == "namedtuple" else (v1, v2)
    if len(a) != len(b):
        return [f"{label}: checkpoint has {len(a)} entries, given {len(b)}"]
    out = []
    for i, (x, y) in enumerate(zip(a, b)):
        out += differences(x, y, f"{path}[{i}]")
    return out


def _show(desc) -> str:
    (kind, value), *_ = desc.items()
    if kind == "py":
        return repr(value)
    if kind in ("array", "ndarray"):
        return f"{desc['dtype']}{value}"
    if kind in ("callable", "type", "module", "namedtuple"):
        return value.split(":")[-1]
    return kind


# --------------------------------------------------------------------------------- file


def _to_storable(tree):
    return jax.tree_util.tree_map(lambda x: jr.key_data(x) if _is_key(x) else x, tree)


def _from_storable(tree, desc):
    (kind, value), *_ = desc.items()
    if kind == "key":
        return jr.wrap_key_data(tree, impl=value)
    if kind == "module":
        for name, field_desc in desc["fields"].items():
            object.__setattr__(tree, name, _from_storable(getattr(tree, name), field_desc))
        return tree
    if kind == "namedtuple":
        return type(tree)(*[_from_storable(x, d) for x, d in zip(tree, desc["items"])])
    if kind in ("tuple", "list"):
        items = [_from_storable(x, d) for x, d in zip(tree, value)]
        return tuple(items) if kind == "tuple" else items
    if kind == "dict":
        # Pytree dicts come back in sorted key order: match entries by key, not position.
        descs = {build(k): d for k, d in value}
        return {k: _from_storable(v, descs[k]) for k, v in tree.items()}
    return tree


def write(path, tree, header: dict) -> None:
    """Write `tree` with `header` (JSON) to `path` atomically: a kill leaves the old file."""
    path = check_file_path(path)
    storable = _to_storable(tree)
    payload = io.BytesIO()
    eqx.tree_serialise_leaves(payload, storable)
    head = json.dumps({"format": FORMAT, **header, "structure": describe(tree)}).encode()
    body = struct.pack("<Q", len(head)) + head + payload.getvalue()
    digest = hashlib.sha256(body).digest()
    _atomic(path, MAGIC + body + digest)


def read_header(path) -> dict:
    """The header of a file written by `write`, after checking the whole file's digest."""
    return _read(path)[0]


def read(path, like=None) -> tuple[Any, dict]:
    """`(tree, header)` from `path`; the tree rebuilt from the file unless `like` is given."""
    header, leaves = _read(path)
    desc = header["structure"]
    template = build(desc) if like is None else _to_storable(like)
    try:
        tree = eqx.tree_deserialise_leaves(io.BytesIO(leaves), template)
    except Exception as e:  # the digest matched, so the file and its description disagree
        raise CheckpointError(f"{path}: the stored leaves do not fit its description ({e}).") from e
    return (
        _from_storable(tree, desc) if like is None else _from_storable(tree, describe(like))
    ), header


def _read(path):
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No file {str(path)!r}.")
    if path.is_dir():
        raise IsADirectoryError(f"{str(path)!r} is a directory, not a scoreflow file.")
    raw = path.read_bytes()
    if not raw.startswith(MAGIC):
        raise CheckpointError(
            f"{str(path)!r} is not a scoreflow file (written by `scoreflow.save` or "
            "`scoreflow.train.fit`); an older raw Equinox file loads with "
            "`eqx.tree_deserialise_leaves(path, like)`."
        )
    body, digest = raw[len(MAGIC) : -32], raw[-32:]
    if len(raw) < len(MAGIC) + 8 + 32 or hashlib.sha256(body).digest() != digest:
        raise CheckpointError(
            f"{str(path)!r} is corrupt or truncated: its SHA-256 checksum does not match "
            f"its contents ({len(raw)} bytes). Restore it from a copy or retrain."
        )
    (n,) = struct.unpack("<Q", body[:8])
    header = json.loads(body[8 : 8 + n])
    if header.get("format") != FORMAT:
        raise CheckpointError(
            f"{str(path)!r} has format {header.get('format')}; this reads {FORMAT}."
        )
    return header, body[8 + n :]


def check_file_path(path, name: str = "path") -> pathlib.Path:
    """`path` as a `Path`, or a `ValueError` naming `name` if no file can be written there."""
    path = pathlib.Path(path)
    if path.is_dir():
        raise ValueError(f"`{name}` {str(path)!r} is a directory; give a file name.")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"`{name}` {str(path)!r} lies under {str(parent)!r}, a file.")
    return path


def _atomic(path: pathlib.Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # A writer killed mid-write leaves its temporary file; the next write removes it.
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


# ------------------------------------------------------------------------------- public


def save(path: str | os.PathLike, model, *, metadata: dict | None = None) -> None:
    """Save a model (any Equinox module) to one file that `load` reads without a skeleton.

    The analogue of diffusers' `save_pretrained`: the file holds the weights, a
    description of how to rebuild the module (classes, hyperparameters, shapes) and a
    checksum; it is written atomically. Nothing is pickled. Functions stored in the
    model (an activation, say) must be importable by name: a lambda cannot be saved.

    Args:
        path: the file to write (its folder is created).
        model: the module.
        metadata: JSON-able notes stored with it (read them with
            `scoreflow.train.checkpoint_info`).

    Raises:
        TypeError: naming the field that has no file representation.
    """
    write(path, model, {"kind": "model", "metadata": metadata or {}})


def load(path: str | os.PathLike, *, weights: str = "ema") -> Any:
    """Load a model saved by `save`, or the model of a `scoreflow.train.fit` checkpoint.

    No skeleton is needed: the file describes the module. A training checkpoint holds two
    sets of weights, and `weights` says which comes back: `"ema"` (the moving average,
    the one to sample from; an error if the run kept none) or `"last"` (the last
    iterate). A file saved by `save` holds one model and `weights` is not used.

    Classes are found by import path: scoreflow's and its JAX stack's are imported as
    needed; a class of your own must be imported before `load` (the file never makes the
    reader import other code).

    Raises:
        CheckpointError: the file is corrupt, truncated or not a scoreflow file.
        ValueError: `weights` is not `"ema"` / `"last"`, or `"ema"` for a run without EMA.
    """
    if weights not in ("ema", "last"):
        raise ValueError(f"`weights` must be 'ema' or 'last', got {weights!r}.")
    tree, header = read(path)
    if header.get("kind") == "model":
        return tree
    state = tree["state"]
    if weights == "last":
        return state.model
    if state.ema is None:
        raise ValueError(
            f"`weights='ema'`, but the run that wrote {str(path)!r} kept no EMA "
            "(ema_decay=None); pass weights='last'."
        )
    return state.ema_model()
