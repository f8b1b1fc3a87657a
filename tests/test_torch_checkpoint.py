"""Tests of the restricted PyTorch checkpoint reader, with checkpoints written here without torch.

The writers below reproduce ``torch.save``'s two layouts byte for byte in structure: a pickle
(protocol 2, torch's default) whose tensors are ``torch._utils._rebuild_tensor_v2(storage,
offset, size, stride, requires_grad, OrderedDict())`` and whose storages are persistent ids
``("storage", torch.FloatStorage, key, "cpu", numel)``. To make ``pickle`` emit those globals
without PyTorch, stand-in ``torch`` modules are put in ``sys.modules`` only while pickling.
"""

import collections
import contextlib
import io
import os
import pickle
import struct
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

from net.torch_checkpoint import (
    CheckpointFormatError,
    UnsafeCheckpointError,
    load_torch_checkpoint,
)

_STORAGE_NAMES = {
    np.dtype("float32"): "FloatStorage",
    np.dtype("float16"): "HalfStorage",
    np.dtype("int64"): "LongStorage",
}


class _Storage:
    """A storage to be written: a 1-D array and its key."""

    def __init__(self, key: str, data: np.ndarray) -> None:
        self.key = key
        self.data = np.ascontiguousarray(data).reshape(-1)


class _Tensor:
    """A view of a storage, pickled like a torch tensor."""

    def __init__(self, storage: _Storage, offset: int, shape: tuple, stride: tuple) -> None:
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride


def _tensor(storage: _Storage, offset: int = 0, shape=None, stride=None) -> _Tensor:
    """A C-contiguous view by default."""
    shape = (storage.data.size,) if shape is None else tuple(shape)
    if stride is None:
        stride = tuple(int(np.prod(shape[i + 1 :])) for i in range(len(shape)))
    return _Tensor(storage, offset, shape, tuple(stride))


@contextlib.contextmanager
def _fake_torch_modules():
    """Registers importable stand-ins for torch.FloatStorage & co and _rebuild_tensor_v2."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")
    for name in _STORAGE_NAMES.values():
        setattr(torch, name, type(name, (), {"__module__": "torch"}))

    def _rebuild_tensor_v2(*args):  # Only pickled by reference, never called.
        raise AssertionError("not to be called")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    saved = {name: sys.modules.get(name) for name in ("torch", "torch._utils")}
    sys.modules["torch"], sys.modules["torch._utils"] = torch, utils
    try:
        yield torch, utils
    finally:
        for name, module in saved.items():
            if module is None:
                del sys.modules[name]
            else:
                sys.modules[name] = module


def _pickle_state_dict(state: dict, *, legacy: bool, build_state=None) -> bytes:
    """Pickles ``{name: _Tensor}`` as torch.save would (protocol 2)."""
    with _fake_torch_modules() as (torch, utils):

        class Pickler(pickle.Pickler):
            def persistent_id(self, obj):
                if isinstance(obj, _Storage):
                    storage_type = getattr(torch, _STORAGE_NAMES[obj.data.dtype])
                    pid = ("storage", storage_type, obj.key, "cpu", obj.data.size)
                    return pid + (None,) if legacy else pid
                return None

            def reducer_override(self, obj):
                if isinstance(obj, _Tensor):
                    args = (obj.storage, obj.offset, obj.shape, obj.stride, False)
                    args += (collections.OrderedDict(),)
                    if build_state is not None:
                        return utils._rebuild_tensor_v2, args, build_state
                    return utils._rebuild_tensor_v2, args
                return NotImplemented

        buffer = io.BytesIO()
        Pickler(buffer, protocol=2).dump(collections.OrderedDict(state))
        return buffer.getvalue()


def _storages(state: dict) -> dict[str, _Storage]:
    return {t.storage.key: t.storage for t in state.values()}


def write_zip_checkpoint(path: Path, state: dict, *, data_pkl: bytes | None = None) -> Path:
    """The PyTorch >= 1.6 layout: archive/data.pkl + archive/data/<key> (+ byteorder)."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl or _pickle_state_dict(state, legacy=False))
        archive.writestr("archive/byteorder", "little")
        for key, storage in _storages(state).items():
            archive.writestr(f"archive/data/{key}", storage.data.tobytes())  # Little-endian host.
        archive.writestr("archive/version", "3\n")
    return path


def write_legacy_checkpoint(path: Path, state: dict, *, graph: bytes | None = None) -> Path:
    """The pre-1.6 layout: magic, protocol, sys info, graph, keys, then (int64 numel, bytes)*."""
    keys = list(_storages(state))
    with open(path, "wb") as file:
        pickle.dump(0x1950A86A20F9469CFC6C, file, protocol=2)
        pickle.dump(1001, file, protocol=2)
        sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {}}
        pickle.dump(sys_info, file, protocol=2)
        file.write(graph or _pickle_state_dict(state, legacy=True))
        pickle.dump(keys, file, protocol=2)
        for key in keys:
            data = _storages(state)[key].data
            file.write(struct.pack("<q", data.size) + data.tobytes())
    return path


def _sample_state():
    """A conv weight, a transposed view and an offset slice sharing one storage, and others.

    Storage "0" holds 0..23 (float32). Views of it:
      conv:  offset 0, shape (2, 3, 2, 2), C-contiguous     -> arange(24).reshape(2, 3, 2, 2)
      t:     offset 0, shape (4, 6), stride (1, 4)           -> arange(24).reshape(6, 4).T
      tail:  offset 20, shape (4,), stride (1,)              -> [20, 21, 22, 23]
    """
    shared = _Storage("0", np.arange(24, dtype=np.float32))
    half = _Storage("1", np.array([0.5, -2.0, 65504.0], dtype=np.float16))
    count = _Storage("2", np.array([7], dtype=np.int64))
    state = {
        "conv.weight": _tensor(shared, 0, (2, 3, 2, 2)),
        "t": _tensor(shared, 0, (4, 6), (1, 4)),
        "tail": _tensor(shared, 20, (4,)),
        "bn.num_batches_tracked": _tensor(count, 0, (), ()),
        "half": _tensor(half),
    }
    expected = {
        "conv.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2),
        "t": np.arange(24, dtype=np.float32).reshape(6, 4).T,
        "tail": np.array([20, 21, 22, 23], dtype=np.float32),
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),
        "half": np.array([0.5, -2.0, 65504.0], dtype=np.float16),
    }
    return state, expected


@pytest.mark.parametrize("writer", [write_zip_checkpoint, write_legacy_checkpoint])
def test_reads_state_dict_written_like_torch_save(tmp_path, writer):
    state, expected = _sample_state()
    loaded = load_torch_checkpoint(writer(tmp_path / "model.pth", state))
    assert list(loaded) == list(expected)  # File order kept.
    for name, want in expected.items():
        assert loaded[name].dtype == want.dtype, name
        assert loaded[name].shape == want.shape, name
        np.testing.assert_array_equal(loaded[name], want, err_msg=name)
        assert loaded[name].flags.c_contiguous and loaded[name].flags.writeable


class _RunsCommand:
    """Unpickling this calls os.system(command): what a malicious checkpoint would do."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _Evaluates:
    def __init__(self, expression: str) -> None:
        self.expression = expression

    def __reduce__(self):
        return eval, (self.expression,)


@pytest.mark.parametrize("layout", ["zip", "legacy"])
@pytest.mark.parametrize("payload_kind", ["os.system", "builtins.eval"])
def test_refuses_checkpoint_that_runs_code(tmp_path, layout, payload_kind):
    marker = tmp_path / "pwned"
    if payload_kind == "os.system":
        payload = _RunsCommand(f"echo pwned > {marker}")
    else:
        payload = _Evaluates(f"open({str(marker)!r}, 'w').write('pwned')")
    # The payload sits where the weights would, inside an otherwise ordinary state dict.
    graph = pickle.dumps(collections.OrderedDict({"conv.weight": payload}), protocol=2)
    assert marker.name.encode() in graph
    path = tmp_path / "evil.pth"
    if layout == "zip":
        write_zip_checkpoint(path, {}, data_pkl=graph)
    else:
        write_legacy_checkpoint(path, {}, graph=graph)

    # Protocol 2 names os.system by its module, posix, and eval by its Python 2 module name.
    name = "posix.system" if payload_kind == "os.system" else "__builtin__.eval"
    with pytest.raises(UnsafeCheckpointError, match=f"refusing to load global '{name}'"):
        load_torch_checkpoint(path)
    assert not marker.exists()


def test_refuses_pickled_module(tmp_path):
    """A whole-module save refers to ("module", ...) persistent ids, not storages."""

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("module", "Net", "net.py", "class Net: ...") if obj is module else None

    module = object()
    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump({"model": module})
    path = write_zip_checkpoint(tmp_path / "module.pth", {}, data_pkl=buffer.getvalue())
    with pytest.raises(UnsafeCheckpointError, match="only tensor storages"):
        load_torch_checkpoint(path)


def test_refuses_view_outside_its_storage(tmp_path):
    """Storage of 6 floats; a (2, 3) view with stride (4, 1) would reach element 4 + 2 = 6."""
    storage = _Storage("0", np.arange(6, dtype=np.float32))
    path = write_zip_checkpoint(tmp_path / "oob.pth", {"w": _tensor(storage, 0, (2, 3), (4, 1))})
    with pytest.raises(CheckpointFormatError, match="reaches element 6 of a 6-element storage"):
        load_torch_checkpoint(path)


def test_refuses_pickle_that_alters_a_rebuilt_tensor(tmp_path):
    """A BUILD opcode after the rebuild could otherwise set a negative offset on the view."""
    storage = _Storage("0", np.arange(6, dtype=np.float32))
    graph = _pickle_state_dict({"w": _tensor(storage)}, legacy=False, build_state={"offset": -4})
    path = write_zip_checkpoint(tmp_path / "build.pth", {"w": _tensor(storage)}, data_pkl=graph)
    with pytest.raises(CheckpointFormatError, match="unreadable pickle"):
        load_torch_checkpoint(path)


def test_rejects_truncated_and_foreign_files(tmp_path):
    state, _ = _sample_state()
    legacy = write_legacy_checkpoint(tmp_path / "full.pth", state)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(legacy.read_bytes()[:-10])
    with pytest.raises(CheckpointFormatError, match="storage"):
        load_torch_checkpoint(truncated)

    missing_blob = tmp_path / "missing.pth"
    with zipfile.ZipFile(write_zip_checkpoint(tmp_path / "ok.pth", state)) as source:
        with zipfile.ZipFile(missing_blob, "w") as target:
            for name in source.namelist():
                if name != "archive/data/1":
                    target.writestr(name, source.read(name))
    with pytest.raises(CheckpointFormatError, match=r"storage '1' missing"):
        load_torch_checkpoint(missing_blob)

    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointFormatError, match="notes.pth: neither a zip nor"):
        load_torch_checkpoint(text)

    listing = write_zip_checkpoint(
        tmp_path / "list.pth", {}, data_pkl=pickle.dumps([1, 2], protocol=2)
    )
    with pytest.raises(CheckpointFormatError, match="top-level object is a list"):
        load_torch_checkpoint(listing)

    with pytest.raises(FileNotFoundError, match="absent.pth"):
        load_torch_checkpoint(tmp_path / "absent.pth")


def test_a_legacy_storage_claiming_2_to_the_40_elements_is_a_format_error(tmp_path):
    """The count is checked against the bytes left in the file before anything is read (it
    was a bare MemoryError)."""
    huge = object.__new__(_Storage)  # a storage whose array would not fit in memory
    huge.key, huge.data = "0", types.SimpleNamespace(dtype=np.dtype("float32"), size=2**40)
    tensor = _Tensor(huge, 0, (2**40,), (1,))
    path = tmp_path / "huge.pth"
    with open(path, "wb") as file:
        pickle.dump(0x1950A86A20F9469CFC6C, file, protocol=2)
        pickle.dump(1001, file, protocol=2)
        pickle.dump({"protocol_version": 1001, "little_endian": True}, file, protocol=2)
        file.write(_pickle_state_dict({"w": tensor}, legacy=True))
        pickle.dump(["0"], file, protocol=2)
        file.write(struct.pack("<q", 2**40) + b"\0" * 64)
    with pytest.raises(CheckpointFormatError) as error:
        load_torch_checkpoint(path)
    assert f"storage '0' claims {2**40} elements ({2**42} bytes) but only 64 bytes remain" in str(
        error.value
    )
