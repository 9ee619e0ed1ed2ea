"""Reading ``torch.save`` checkpoints of plain tensors without torch.

Both of torch's formats are read: the legacy one (torch < 1.6: pickles followed by raw
storages), in which Resemblyzer's ``pretrained.pt`` is saved, and the zip one (a ``data.pkl``
beside one file per storage). The unpickler accepts only the few globals a state dict needs
and refuses anything else, so a checkpoint cannot run code. Tensors come back as numpy
arrays.
"""

from __future__ import annotations

import collections
import pickle
import struct
import zipfile
from pathlib import Path
from typing import IO, Any

import numpy as np

# torch's typed storage classes, as named in checkpoints, and their element types.
_STORAGE_DTYPES = {
    f"{kind}Storage": np.dtype(code)
    for kind, code in zip(
        ["Float", "Double", "Half", "Long", "Int", "Short", "Char", "Byte", "Bool"],
        ["f4", "f8", "f2", "i8", "i4", "i2", "i1", "u1", "b1"],
        strict=True,
    )
}


class _Storage:
    """A torch storage: its element type and, once read, its elements."""

    def __init__(self, dtype: type, numel: int) -> None:
        self.dtype = np.dtype(dtype)
        self.numel = numel
        self.array: np.ndarray | None = None


def _rebuild_tensor(storage: _Storage, offset: int, size: tuple, stride: tuple, *_: Any) -> np.ndarray | None:
    """``torch._utils._rebuild_tensor_v2`` as a numpy view (``None`` while storages are unread)."""
    if storage.array is None:
        return None
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage.array[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride)
    )
    return np.array(view)  # a copy: the checkpoint's big storages can be freed


class _StateDictUnpickler(pickle.Unpickler):
    """Rebuilds tensors as numpy arrays; any global but the few a state dict needs is refused."""

    def __init__(self, file: IO[bytes], storages: dict[str, _Storage], read_storage: Any = None) -> None:
        super().__init__(file)
        self._storages = storages
        self._read_storage = read_storage

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a checkpoint")

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
        dtype, key, numel = pid[1], str(pid[2]), int(pid[4])
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError("storage views are not supported")
        if key not in self._storages:
            self._storages[key] = _Storage(dtype, numel)
            if self._read_storage is not None:
                self._storages[key].array = self._read_storage(key, self._storages[key])
        return self._storages[key]


def load_checkpoint(path: str | Path) -> Any:
    """Read a torch checkpoint of plain tensors without torch.

    Args:
        path: A ``torch.save`` file, legacy (torch < 1.6) or zip format.

    Returns:
        The saved object with every tensor as a numpy array.

    Raises:
        pickle.UnpicklingError: The checkpoint holds anything but tensors, dicts, lists and
            plain values (such a pickle could run arbitrary code).
    """
    path = Path(path)
    if zipfile.is_zipfile(path):
        return _load_zip(path)
    return _load_legacy(path)


def load_state_dict(path: str | Path, key: str = "model_state") -> dict[str, np.ndarray]:
    """Read a checkpoint's state dict without torch.

    Args:
        path: A ``torch.save`` file, legacy or zip format (see :func:`load_checkpoint`).
        key: Where a training checkpoint keeps its state dict; a checkpoint without this key
            is taken to be the state dict itself.

    Returns:
        Parameter names and their values as numpy arrays, in the checkpoint's order.

    Raises:
        pickle.UnpicklingError: As :func:`load_checkpoint`.
    """
    checkpoint = load_checkpoint(path)
    return checkpoint.get(key, checkpoint)


def _load_zip(path: Path) -> Any:
    """Zip format: ``<prefix>data.pkl`` for the object, ``<prefix>data/<key>`` for each storage."""
    with zipfile.ZipFile(path) as archive:
        pkl = next(n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl")
        prefix = pkl[: -len("data.pkl")]

        def read(key: str, storage: _Storage) -> np.ndarray:
            raw = archive.read(f"{prefix}data/{key}")
            return np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"), count=storage.numel)

        with archive.open(pkl) as f:
            return _StateDictUnpickler(f, {}, read).load()


def _load_legacy(path: Path) -> Any:
    """Legacy format: magic, version and system-info pickles, the object, its storage keys, the storages.

    The storages follow the object's pickle, so the object is unpickled twice: once to learn
    the storages, then again, once they are read, to build the arrays.
    """
    storages: dict[str, _Storage] = {}
    with path.open("rb") as f:
        for _ in range(3):
            _StateDictUnpickler(f, storages).load()
        object_start = f.tell()
        _StateDictUnpickler(f, storages).load()
        keys = _StateDictUnpickler(f, storages).load()
        for key in keys:
            storage = storages[str(key)]
            (numel,) = struct.unpack("<q", f.read(8))
            raw = f.read(numel * storage.dtype.itemsize)
            storage.array = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"), count=numel)
        f.seek(object_start)
        return _StateDictUnpickler(f, storages).load()
