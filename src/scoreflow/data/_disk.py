import os
import pathlib
import struct
import zipfile
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


class DiskDataset:
    """Rows of arrays that stay on disk (memory-mapped) and are read when a batch needs them.

    `scoreflow.train.fit` takes one as its `data`: each chunk's row indices are drawn
    on the host with the same key stream as an in-memory array (so a `DiskDataset` and
    the same rows held in memory train identically, and a resumed run reads the rows the
    uninterrupted one read), and on a mesh each process reads only the rows of its own
    devices' shards of each batch.

    Not an `equinox.Module`: it holds open file maps, never enters a traced function,
    and is not part of a checkpoint.

    Args:
        arrays: one array `(N, ...)` or a tuple / dict of arrays with a common leading
            axis (`(x, y)`), typically `numpy.memmap` arrays (see `open_npy`, `open_npz`,
            `open_idx`).
        transform: applied on the host to every block of rows read, as a pytree of NumPy
            arrays (e.g. `lambda x: x.astype(np.float32) / 255`); it must act on each
            row alone, so that reading a batch in shards gives the batch.

    Raises:
        ValueError: `arrays` holds something that is not an array, arrays of no rows or
            with different numbers of rows, or `transform` is not callable.
    """

    def __init__(self, arrays: Any, *, transform: Callable | None = None):
        leaves = jax.tree_util.tree_leaves(arrays)
        if not leaves or not all(isinstance(leaf, np.ndarray) for leaf in leaves):
            raise ValueError(
                "`arrays` must be a NumPy array (a `numpy.memmap`) or a tuple / dict of "
                f"them, got {type(arrays).__name__}."
            )
        rows = {leaf.shape[0] if leaf.ndim else -1 for leaf in leaves}
        if len(rows) != 1 or min(rows) < 1:
            raise ValueError(
                "`arrays` must share one leading axis of N >= 1 rows, got shapes "
                f"{[leaf.shape for leaf in leaves]}."
            )
        if transform is not None and not callable(transform):
            raise ValueError(f"`transform` must be callable, got {type(transform).__name__}.")
        self.arrays = arrays
        self.transform = transform
        self.num_rows = int(rows.pop())
        self._example = None

    def __len__(self) -> int:
        return self.num_rows

    def __repr__(self) -> str:
        shapes = jax.tree_util.tree_map(lambda a: (a.shape, str(a.dtype)), self.arrays)
        return f"DiskDataset({shapes}, num_rows={self.num_rows})"

    def rows(self, idx) -> Any:
        """The rows `idx` (a 1-d integer array) of every array, transformed, in memory.

        Reads in increasing row order (the cheap order for a file) and puts the rows
        back in the order asked for.
        """
        idx = np.asarray(idx, np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_rows):
            raise ValueError(
                f"`idx` must lie in [0, {self.num_rows}), got {idx.min()}..{idx.max()}."
            )
        order = np.argsort(idx, kind="stable")
        inverse = np.empty_like(order)
        inverse[order] = np.arange(order.size)
        sorted_idx = idx[order]

        def read(leaf):
            out = np.ascontiguousarray(leaf[sorted_idx])[inverse]
            # IDX files are big-endian; JAX takes native byte order only.
            return out if out.dtype.isnative else out.astype(out.dtype.newbyteorder("="))

        out = jax.tree_util.tree_map(read, self.arrays)
        return out if self.transform is None else self.transform(out)

    def example(self) -> Any:
        """Row 0, transformed, as a batch of one (read once, then kept): the layout."""
        if self._example is None:
            self._example = self.rows(np.zeros((1,), np.int64))
        return self._example

    def load(self) -> Any:
        """Every row in memory as JAX arrays (for data that fits after all)."""
        return jax.tree_util.tree_map(jnp.asarray, self.rows(np.arange(self.num_rows)))


def _path(path, suffixes: tuple[str, ...], name: str = "path") -> pathlib.Path:
    path = pathlib.Path(path)
    if not any(path.name.endswith(s) for s in suffixes):
        raise ValueError(f"`{name}` must end in {' or '.join(suffixes)}, got {path.name!r}.")
    if not path.is_file():
        raise FileNotFoundError(f"No file {str(path)!r}.")
    return path


def open_npy(path: str | os.PathLike, *, transform: Callable | None = None) -> DiskDataset:
    """A memory-mapped `.npy` file of shape `(N, ...)` as a `DiskDataset`.

    Raises:
        ValueError: the file does not end in `.npy` or holds an array of no axes.
        FileNotFoundError: no such file.
    """
    path = _path(path, (".npy",))
    arr = np.load(path, mmap_mode="r", allow_pickle=False)
    if arr.ndim < 1:
        raise ValueError(f"`path` {str(path)!r} holds a scalar; it needs shape (N, ...).")
    return DiskDataset(arr, transform=transform)


def _npz_member(path: pathlib.Path, zf: zipfile.ZipFile, name: str) -> np.ndarray:
    member = name if name.endswith(".npy") else name + ".npy"
    try:
        info = zf.getinfo(member)
    except KeyError:
        held = [n.removesuffix(".npy") for n in zf.namelist()]
        raise ValueError(f"`names` {name!r} is not in {str(path)!r} (it holds {held}).") from None
    if info.compress_type != zipfile.ZIP_STORED:
        raise ValueError(
            f"`path` {str(path)!r} is compressed (`numpy.savez_compressed`), and a "
            "compressed member cannot be memory-mapped; save it with `numpy.savez` or as "
            ".npy files."
        )
    with open(path, "rb") as f:
        # The member's bytes start after its local file header (30 bytes, then its name
        # and extra field, whose lengths the header holds).
        f.seek(info.header_offset)
        local = f.read(30)
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        offset = f.tell()
    if dtype.hasobject:
        raise ValueError(f"`path` {str(path)!r} member {name!r} holds Python objects.")
    return np.memmap(
        path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C"
    )


def open_npz(
    path: str | os.PathLike,
    names: str | tuple[str, ...] | None = None,
    *,
    transform: Callable | None = None,
) -> DiskDataset:
    """Arrays of an uncompressed `.npz` (`numpy.savez`), memory-mapped, as a `DiskDataset`.

    Args:
        path: the file.
        names: the member, or a tuple of members such as `("x", "y")` (a pytree of the
            same structure); default its only member, else `"x"` / `"data"`.
        transform: see `DiskDataset`.

    Raises:
        ValueError: another suffix, a member that is not there, an ambiguous default,
            or a compressed file (`numpy.savez_compressed` cannot be memory-mapped).
        FileNotFoundError: no such file.
    """
    path = _path(path, (".npz",))
    with zipfile.ZipFile(path) as zf:
        held = [n.removesuffix(".npy") for n in zf.namelist()]
        if names is None:
            common = [k for k in ("x", "data") if k in held]
            if len(held) == 1:
                names = held[0]
            elif common:
                names = common[0]
            else:
                raise ValueError(f"`names`: {str(path)!r} holds {held}; say which to read.")
        if isinstance(names, str):
            arrays: Any = _npz_member(path, zf, names)
        elif isinstance(names, tuple) and names and all(isinstance(n, str) for n in names):
            arrays = tuple(_npz_member(path, zf, n) for n in names)
        else:
            raise ValueError(f"`names` must be a member name or a tuple of them, got {names!r}.")
    return DiskDataset(arrays, transform=transform)


# The IDX type codes (LeCun's MNIST files): element type, stored big-endian.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _idx_array(path, name: str) -> np.ndarray:
    path = pathlib.Path(path)
    if path.name.endswith(".gz"):
        raise ValueError(
            f"`{name}` {str(path)!r} is gzipped, and a compressed file cannot be "
            "memory-mapped; gunzip it first."
        )
    if not path.is_file():
        raise FileNotFoundError(f"No file {str(path)!r}.")
    with open(path, "rb") as f:
        head = f.read(4)
        if len(head) < 4 or head[:2] != b"\x00\x00" or head[2] not in _IDX_TYPES:
            raise ValueError(
                f"`{name}` {str(path)!r} is not an IDX file (it must start with two zero "
                "bytes, a type code and the number of axes)."
            )
        ndim = head[3]
        if ndim < 1:
            raise ValueError(f"`{name}` {str(path)!r} declares 0 axes.")
        shape = struct.unpack(f">{ndim}I", f.read(4 * ndim))
    dtype = np.dtype(_IDX_TYPES[head[2]])
    size = 4 + 4 * ndim + int(np.prod(shape)) * dtype.itemsize
    if path.stat().st_size < size:
        raise ValueError(
            f"`{name}` {str(path)!r} is truncated: shape {shape} of {dtype} needs {size} "
            f"bytes, the file has {path.stat().st_size}."
        )
    return np.memmap(path, dtype=dtype, mode="r", offset=4 + 4 * ndim, shape=shape)


def open_idx(
    images: str | os.PathLike,
    labels: str | os.PathLike | None = None,
    *,
    transform: Callable | None = None,
) -> DiskDataset:
    """MNIST-style IDX files (`train-images-idx3-ubyte`, ...), memory-mapped.

    Args:
        images: the IDX file of the examples, `(N, ...)` (uncompressed).
        labels: the IDX file of their labels `(N,)`, if any: the dataset is then the
            pair `(x, y)`, as conditional models train on.
        transform: see `DiskDataset` (e.g. `lambda xy: (xy[0] / 255.0, xy[1])`).

    Raises:
        ValueError: a file that is not IDX, is gzipped or truncated, or labels whose
            count differs from the examples'.
        FileNotFoundError: no such file.
    """
    x = _idx_array(images, "images")
    if labels is None:
        return DiskDataset(x, transform=transform)
    y = _idx_array(labels, "labels")
    if y.shape[0] != x.shape[0]:
        raise ValueError(
            f"`labels` has {y.shape[0]} rows but `images` has {x.shape[0]}; they must pair."
        )
    return DiskDataset((x, y), transform=transform)
