import json
import os
import pathlib
import tempfile

import equinox as eqx

from ._state import TrainState


def save_checkpoint(path: str | os.PathLike, state: TrainState, metadata: dict | None = None):
    """Write `state` to `path` atomically (temporary file in the same folder, then rename).

    A crash mid-write leaves the previous checkpoint intact. `metadata` (JSON) goes to
    `path + ".json"`, written the same way after the state.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic(path, lambda f: eqx.tree_serialise_leaves(f, state))
    meta = {"step": int(state.step), **(metadata or {})}
    _atomic(path.with_name(path.name + ".json"), lambda f: f.write(json.dumps(meta).encode()))


def load_checkpoint(path: str | os.PathLike, like: TrainState) -> TrainState:
    """Read a state written by `save_checkpoint`; `like` gives the structure.

    `like` is a state of the same model and optimiser, e.g. `init_state(...)`.
    """
    return eqx.tree_deserialise_leaves(pathlib.Path(path), like)


def _atomic(path, write):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
