import os

import equinox as eqx
import numpy as np

from .._serialise import (
    CheckpointMismatch,
    describe,
    differences,
    read,
    read_header,
    write,
)
from ._state import TrainState


def save_checkpoint(
    path: str | os.PathLike,
    state: TrainState,
    metadata: dict | None = None,
    *,
    history: dict | None = None,
):
    """Write `state` to one file at `path`, atomically (a kill leaves the previous file).

    The file holds the state, its step, `metadata` (JSON), the loss `history` (a dict of
    NumPy arrays) and a checksum, all in one write, so they always agree. It describes
    the model, so `scoreflow.load(path)` (and `scoreflow sample`) read it with no
    skeleton.
    """
    header = {
        "kind": "train_state",
        "step": int(state.step),
        "has_ema": state.ema is not None,
        "metadata": metadata or {},
    }
    history = {k: np.asarray(v) for k, v in (history or {}).items()}
    write(path, {"state": state, "history": history}, header)


def checkpoint_info(path: str | os.PathLike) -> dict:
    """The header of a file written by `save_checkpoint` or `scoreflow.save`.

    Keys: `kind` (`"train_state"` or `"model"`), `metadata`, and for a training
    checkpoint `step` and `has_ema`. The file's checksum is checked.
    """
    header = read_header(path)
    return {k: v for k, v in header.items() if k not in ("structure", "format")}


def load_checkpoint(
    path: str | os.PathLike, like: TrainState | None = None, *, strict: bool = True
) -> TrainState:
    """Read a state written by `save_checkpoint`.

    Args:
        path: the checkpoint.
        like: the state this run would start from (e.g. `init_state(...)`). Its model
            and optimiser are compared with the stored ones, field by field (classes,
            hyperparameters, parameterisation, array shapes and dtypes): a difference
            raises. `None` rebuilds the state from the file alone.
        strict: `False` turns a difference into a warning, and the stored state is
            returned as stored (its hyperparameters, not `like`'s).

    Raises:
        CheckpointMismatch: naming every differing field.
        CheckpointError: the file is corrupt, truncated or not a checkpoint.
    """
    return load_checkpoint_and_history(path, like, strict=strict)[0]


def load_checkpoint_and_history(path, like=None, *, strict=True):
    header = read_header(path)
    if header.get("kind") != "train_state":
        raise ValueError(
            f"{str(path)!r} holds a model saved by `scoreflow.save`, not a training "
            "checkpoint; load it with `scoreflow.load`."
        )
    diff = []
    if like is not None:
        given = describe({"state": like, "history": {}})["dict"][0][1]
        stored = header["structure"]["dict"][0][1]
        diff = _dedupe(differences(stored, given))
        if diff:
            message = (
                f"The checkpoint {str(path)!r} was written for a different model or "
                "optimiser than the one given:\n  " + "\n  ".join(diff) + "\nUse a new "
                "checkpoint path, delete the file, or pass resume=False to start afresh."
            )
            if strict:
                raise CheckpointMismatch(message, diff)
            import warnings

            warnings.warn(message + "\nResuming with the checkpoint's values.", stacklevel=3)
    tree, _ = read(path)
    state = tree["state"]
    if like is not None and not diff:
        # The caller's static parts (equal to the stored ones), so jitted code is reused.
        state = eqx.combine(
            eqx.filter(state, eqx.is_array), eqx.filter(like, eqx.is_array, inverse=True)
        )
    history = {k: np.asarray(v) for k, v in tree["history"].items()}
    return state, history


def _dedupe(lines: list[str]) -> list[str]:
    # The EMA and the optimiser's moments mirror the model: one line per model field.
    seen, out = set(), []
    for line in lines:
        path, _, what = line.partition(": ")
        tail = (path.rsplit(".", 1)[-1], what)
        if tail not in seen:
            seen.add(tail)
            out.append(line)
    return out
