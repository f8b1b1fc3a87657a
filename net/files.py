"""Safe file writes: every file goes to a temporary name beside it and is renamed into place.

A crash (or ``kill -9``) at any moment leaves either the previous complete file or the new
complete one, never a half-written file: :func:`os.replace` is atomic within one folder. The
temporary name starts with a dot and carries the process id, so concurrent writers (several
workers of one run) never share one, and a leftover from a killed process is hidden and harmless.

Keras is imported only by the model and weights savers, so this module loads without TensorFlow.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import keras


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yields a temporary path beside ``path``; on success it replaces ``path`` atomically.

    The parent folder is created. When the body raises, the temporary file is removed and
    ``path`` is left as it was.

    Args:
        path: The destination file.
        suffix: Ending of the temporary name (writers that choose the format from the file
            name, such as Keras, need ``.keras`` or ``.weights.h5``).

    Yields:
        The temporary path to write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}{suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


#: Names :func:`atomic_path` gives its temporary files: ``.<name>.<pid>.tmp[<suffix>]``.
_TEMPORARY_NAME = re.compile(r"^\..+\.\d+\.tmp(\..+)?$")


def is_temporary(path: str | os.PathLike) -> bool:
    """Whether a file name is one :func:`atomic_path` gives its temporary files."""
    return bool(_TEMPORARY_NAME.match(Path(path).name))


def remove_temporary_files(folder: str | os.PathLike) -> list[Path]:
    """Removes the temporary files :func:`atomic_path` left in a folder (not in subfolders).

    A process killed while writing leaves its temporary file behind; call this only where no
    other process is writing (a run directory being resumed by its one writer).

    Returns:
        The files removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in sorted(folder.iterdir()):
        if path.is_file() and is_temporary(path):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def free_bytes(folder: str | os.PathLike) -> int:
    """Bytes free to an unprivileged user on the file system holding ``folder``."""
    return shutil.disk_usage(folder).free


def _write_through(path: str | os.PathLike, write: Callable[[Any], None], mode: str) -> Path:
    """Opens a temporary file, lets ``write`` fill it, syncs it to disk and moves it to ``path``."""
    with atomic_path(path) as temporary:
        with open(temporary, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Writes bytes to ``path`` atomically; returns the path."""
    return _write_through(path, lambda handle: handle.write(data), "wb")


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Writes text (UTF-8) to ``path`` atomically; returns the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(value: Any) -> Any:
    """Converts NumPy scalars and arrays and paths for :func:`json.dumps`."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def atomic_write_json(path: str | os.PathLike, data: Any) -> Path:
    """Writes ``data`` as indented JSON atomically (NumPy values and paths converted).

    Raises:
        TypeError: If ``data`` holds a value JSON cannot represent.
    """
    text = json.dumps(data, indent=2, default=_json_default, allow_nan=True)
    return atomic_write_text(path, text + "\n")


def atomic_write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    """Writes arrays as one uncompressed ``.npz`` file atomically; returns the path."""
    return _write_through(path, lambda handle: np.savez(handle, **arrays), "wb")


def atomic_save_model(model: keras.Model, path: str | os.PathLike) -> Path:
    """Saves a model's architecture and weights to ``.keras``, atomically.

    What is saved is an uncompiled view sharing the model's layers: no optimizer state (a third
    of ResNet-50's file; resuming uses the run's ``state/`` weights instead) and no losses, so
    loading needs only this package's layers registered.

    Args:
        model: The model.
        path: Destination, ending in ``.keras``.

    Returns:
        The path written.
    """
    import keras

    view = keras.Model(model.input, model.output, name=model.name)
    with atomic_path(path, suffix=".tmp.keras") as temporary:
        view.save(temporary)
    return Path(path)


def atomic_save_weights(model: keras.Model, path: str | os.PathLike) -> Path:
    """Saves a model's weights (with its optimizer's variables) to ``.weights.h5`` atomically.

    Args:
        model: The model.
        path: Destination, ending in ``.weights.h5``.

    Returns:
        The path written.
    """
    with atomic_path(path, suffix=".tmp.weights.h5") as temporary:
        model.save_weights(temporary, overwrite=True)
    return Path(path)
