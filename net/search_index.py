"""A search index and its file: the embeddings of a folder of images and how they were made.

:class:`SearchIndex` checks that its embeddings and paths line up; :func:`save_index` writes it
as one uncompressed ``.npz`` (through a temporary file) and :func:`load_index` reads it back,
refusing a corrupt file, a foreign one or another format version with one :class:`SearchError`.
Building and querying an index is :mod:`net.search`, which re-exports these names; this module
imports no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from pathlib import Path

import numpy as np

from net.files import atomic_write_npz

#: Version of the ``.npz`` layout written by :func:`save_index`.
INDEX_FORMAT_VERSION = 1

_INDEX_KEYS: tuple[str, ...] = (
    "format_version",
    "embeddings",
    "paths",
    "images_root",
    "images_root_from_index",
    "model_path",
    "model_fingerprint",
    "image_size",
    "crop_mode",
    "skipped",
)


class SearchError(ValueError):
    """An index, model or image that cannot be used for a search, with the reason."""


@dataclasses.dataclass(frozen=True, eq=False)
class SearchIndex:
    """Embeddings of a folder of images and how they were made.

    Attributes:
        embeddings: (N, D) float32 embeddings, one row per image.
        paths: (N,) str, image paths relative to ``images_root`` (POSIX separators), sorted.
        images_root: The indexed folder (absolute).
        model_path: The ``.keras`` file the embeddings came from (absolute).
        model_fingerprint: :func:`net.search.model_fingerprint` of that model.
        image_size: Side of the square images fed to the model, pixels.
        crop_mode: ``"none"`` or ``"pad"`` (see :func:`net.pipeline.crop_or_pad`).
        skipped: Relative paths of unreadable images left out (with ``skip_bad``).
    """

    embeddings: np.ndarray
    paths: np.ndarray
    images_root: Path
    model_path: str
    model_fingerprint: str
    image_size: int
    crop_mode: str
    skipped: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Normalises types and checks that embeddings and paths line up.

        Raises:
            SearchError: If the embeddings are not (N, D) with N >= 1 finite values, or the
                number of paths differs from N.
        """
        embeddings = np.asarray(self.embeddings)
        paths = np.asarray(self.paths, dtype=str).reshape(-1)
        if embeddings.ndim != 2 or embeddings.shape[0] == 0 or embeddings.shape[1] == 0:
            raise SearchError(f"index embeddings must have shape (N, D), got {embeddings.shape}")
        if not np.issubdtype(embeddings.dtype, np.floating):
            raise SearchError(f"index embeddings must be floats, got {embeddings.dtype}")
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        if not np.isfinite(embeddings).all():
            raise SearchError("index embeddings contain NaN or infinite values")
        if len(paths) != len(embeddings):
            raise SearchError(
                f"index has {len(embeddings)} embeddings but {len(paths)} image paths"
            )
        object.__setattr__(self, "embeddings", embeddings)
        object.__setattr__(self, "paths", paths)
        object.__setattr__(self, "images_root", Path(self.images_root))
        object.__setattr__(self, "image_size", int(self.image_size))
        object.__setattr__(self, "skipped", tuple(str(p) for p in self.skipped))

    def __len__(self) -> int:
        """Returns the number of indexed images."""
        return len(self.paths)

    @property
    def embedding_dim(self) -> int:
        """The embedding dimension D."""
        return int(self.embeddings.shape[1])

    def absolute_path(self, position: int) -> str:
        """Returns the absolute path of the indexed image at ``position``."""
        return str(self.images_root / self.paths[position])


def save_index(index: SearchIndex, path: str | os.PathLike[str]) -> Path:
    """Writes an index as one uncompressed ``.npz`` through a temporary file and a rename.

    Besides the absolute images root, the root relative to the index file's folder is stored,
    so an index saved inside (or beside) its image folder still works after both are moved.

    Args:
        index: The index.
        path: The file to write; parent folders are created. The name is kept as given.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        from_index = os.path.relpath(index.images_root, path.parent.resolve())
    except ValueError:  # Different drives on Windows.
        from_index = ""
    arrays = {
        "format_version": np.asarray(INDEX_FORMAT_VERSION, dtype=np.int64),
        "embeddings": index.embeddings,
        "paths": np.asarray(index.paths, dtype=str),
        "images_root": np.asarray(str(index.images_root)),
        "images_root_from_index": np.asarray(from_index),
        "model_path": np.asarray(index.model_path),
        "model_fingerprint": np.asarray(index.model_fingerprint),
        "image_size": np.asarray(index.image_size, dtype=np.int64),
        "crop_mode": np.asarray(index.crop_mode),
        "skipped": np.asarray(index.skipped, dtype=str).reshape(-1),
    }
    return atomic_write_npz(path, arrays)


def load_index(path: str | os.PathLike[str]) -> SearchIndex:
    """Reads an index written by :func:`save_index`.

    When the recorded images root no longer exists but the root relative to the index file's
    folder does (both were moved together), the latter is used.

    Args:
        path: The ``.npz`` file.

    Returns:
        The index.

    Raises:
        SearchError: If the file is missing, not an index (corrupt, truncated, keys missing)
            or of another format version.
    """
    path = Path(path)
    if not path.is_file():
        raise SearchError(f"no search index at {path}")
    try:
        with np.load(path, allow_pickle=False) as stored:
            missing = [key for key in _INDEX_KEYS if key not in stored.files]
            if missing:
                raise SearchError(
                    f"{path} is not a search index of this version: keys {missing} are missing"
                )
            values = {key: stored[key] for key in _INDEX_KEYS}
    except SearchError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
        raise SearchError(
            f"cannot read the search index {path} (corrupt or not an index): "
            f"{type(error).__name__}: {error}"
        ) from error
    version = int(values["format_version"])
    if version != INDEX_FORMAT_VERSION:
        raise SearchError(
            f"{path} has index format {version}; this version reads {INDEX_FORMAT_VERSION}: "
            "rebuild the index"
        )
    root = Path(str(values["images_root"]))
    from_index = str(values["images_root_from_index"])
    if not root.is_dir() and from_index and (path.parent / from_index).is_dir():
        root = (path.parent / from_index).resolve()
    try:
        return SearchIndex(
            embeddings=values["embeddings"],
            paths=values["paths"],
            images_root=root,
            model_path=str(values["model_path"]),
            model_fingerprint=str(values["model_fingerprint"]),
            image_size=int(values["image_size"]),
            crop_mode=str(values["crop_mode"]),
            skipped=tuple(values["skipped"].reshape(-1)),
        )
    except SearchError as error:
        raise SearchError(f"{path}: {error}") from error
