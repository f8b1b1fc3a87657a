"""Image search with a trained model: index a folder tree of images, then query it.

:func:`build_index` embeds every image below a folder (the suffixes of
:data:`net.data.IMAGE_SUFFIXES`, any case, recursively, hidden files and folders skipped, in
sorted order) and saves a
:class:`SearchIndex` as one ``.npz`` file: the embeddings, the image paths relative to the
images root, the root, the model's path and fingerprint, and the preprocessing (image size,
crop mode). :func:`query_index` embeds a query image with exactly that preprocessing and
returns its nearest indexed images (exact Euclidean search, :func:`net.neighbours.
nearest_neighbours`); :func:`net.figures.plot_query_results` draws them.

The model fingerprint (:func:`model_fingerprint`) is a SHA-256 over the model's architecture
(its Keras config, without compile and build settings) and every weight, so a query with
another model, or with a model retrained in place at the same path, is refused instead of
returning meaningless neighbours.

Images go through the evaluation pipeline (:func:`net.pipeline.eval_dataset`): decoded to RGB,
optionally padded to a square (``crop_mode="pad"``), resized to the model's input size, float32
in [0, 255]; the model normalises them itself. A folder of images has no bounding boxes, so the
crop modes are ``"none"`` and ``"pad"``.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from net import pipeline, runs
from net.data import IMAGE_SUFFIXES, check_image, is_image_name
from net.inference import embed_files
from net.neighbours import nearest_neighbours
from net.search_index import (  # noqa: F401 (re-exported: the index and its file live there)
    INDEX_FORMAT_VERSION,
    SearchError,
    SearchIndex,
    load_index,
    save_index,
)

logger = logging.getLogger(__name__)

#: Crop modes of an index: folder images have no bounding boxes (see the module docstring).
CROP_MODES: tuple[str, ...] = ("none", "pad")


class Match(NamedTuple):
    """One search result.

    Attributes:
        path: Absolute path of the indexed image.
        distance: Euclidean distance between its embedding and the query's.
    """

    path: str
    distance: float


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def model_fingerprint(model: keras.Model) -> str:
    """A SHA-256 fingerprint of a model's architecture and weights.

    Hashes the model's Keras config as sorted JSON (without ``compile_config`` and
    ``build_config``, so recompiling or resaving does not change it), then, for every weight in
    order, its path, dtype, shape and bytes. Optimizer state is not part of the model's weights.

    Args:
        model: A Keras model.

    Returns:
        64 hexadecimal digits.
    """
    config = json.loads(model.to_json())
    for key in ("compile_config", "build_config"):
        config.pop(key, None)
    digest = hashlib.sha256()
    digest.update(json.dumps(config, sort_keys=True).encode())
    for weight in model.weights:
        values = np.ascontiguousarray(keras.ops.convert_to_numpy(weight.value))
        digest.update(f"\n{weight.path}|{values.dtype.str}|{values.shape}\n".encode())
        digest.update(values.tobytes())
    return digest.hexdigest()


def model_image_size(model: keras.Model) -> int | None:
    """The side of the square images a model takes, or None when its input size is free.

    Args:
        model: A model with one image input (B, H, W, 3).

    Returns:
        H when H == W are fixed, else None.

    Raises:
        SearchError: If the model does not have exactly one 4-D input with 3 channels.
    """
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 4:
        raise SearchError(
            f"model {model.name!r} must have one image input (B, H, W, 3), got "
            f"{[tuple(x.shape) for x in model.inputs]}"
        )
    _, height, width, channels = model.inputs[0].shape
    if channels not in (None, 3):
        raise SearchError(f"model {model.name!r} takes {channels} channels, not RGB")
    return int(height) if height is not None and height == width else None


def _load_model(model_path: str | os.PathLike[str]) -> tuple[keras.Model, Path]:
    """Loads a ``.keras`` file or a run directory's ``best.keras``; returns (model, path).

    Raises:
        SearchError: If nothing loadable is there.
    """
    try:
        path = runs.resolve_model_path(model_path).resolve()
        return runs.load_model(path), path
    except runs.ModelFileError as error:
        raise SearchError(str(error)) from error


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


def find_images(images_dir: str | os.PathLike[str]) -> list[str]:
    """Lists the images below a folder, recursively, sorted.

    Files with a suffix in :data:`IMAGE_SUFFIXES` (any case) count; files and folders whose
    name starts with ``.`` (such as the default index file) are skipped.

    Args:
        images_dir: The folder.

    Returns:
        Paths relative to ``images_dir`` with POSIX separators, sorted.

    Raises:
        SearchError: If the folder does not exist or holds no image.
    """
    root = Path(images_dir)
    if not root.is_dir():
        raise SearchError(f"image folder not found: {root}")
    found = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        for name in files:
            if is_image_name(name):
                found.append(Path(directory, name).relative_to(root).as_posix())
    if not found:
        raise SearchError(
            f"no images under {root} (looked for files ending in {', '.join(IMAGE_SUFFIXES)})"
        )
    return sorted(found)


def image_problems(paths: Sequence[str], *, full_decode: bool) -> dict[str, str]:
    """Finds unreadable images with :mod:`net.data`'s checks.

    Args:
        paths: Image files.
        full_decode: Decode every image with TensorFlow (thorough, about 15 times slower)
            instead of checking its header and end marker.

    Returns:
        ``{path: reason}`` for each bad image, in the order of ``paths``.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda p: check_image(p, full_decode)[0], paths))
    return {path: problem for path, problem in zip(paths, results, strict=True) if problem}


def _problem_list(problems: dict[str, str], total: int) -> str:
    lines = "\n".join(f"  {path}: {reason}" for path, reason in problems.items())
    return f"{len(problems)} of {total} images cannot be read:\n{lines}"


# --------------------------------------------------------------------------------------------
# Index files
# --------------------------------------------------------------------------------------------


def _check_crop_mode(crop_mode: str) -> None:
    try:
        pipeline.check_crop_mode(crop_mode, CROP_MODES)
    except ValueError as error:
        raise SearchError(f"{error} (a folder of images has no bounding boxes)") from None


def build_index(
    model_path: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    index_path: str | os.PathLike[str],
    *,
    image_size: int | None = None,
    crop_mode: str = "none",
    batch_size: int = 64,
    progress: bool = True,
    skip_bad: bool = False,
) -> SearchIndex:
    """Embeds every image below a folder with a saved model and saves the index.

    Every image is checked up front (header and end marker); if TensorFlow still fails to
    decode one while embedding, all images are decoded once to find the culprits. Bad images
    raise one error listing them all, or with ``skip_bad`` are left out (logged, and recorded in
    :attr:`SearchIndex.skipped`).

    Args:
        model_path: A ``.keras`` model of this repository or a run directory (its best.keras).
        images_dir: The folder to index (searched recursively, see :func:`find_images`).
        index_path: The ``.npz`` file to write (atomically; parent folders are created).
        image_size: Side of the square model input; None takes it from the model. Required for
            a model whose input size is not fixed.
        crop_mode: ``"none"`` (plain resize) or ``"pad"`` (pad to a square first).
        batch_size: Images per embedding batch.
        progress: Show a progress bar.
        skip_bad: Leave unreadable images out instead of raising.

    Returns:
        The index that was saved.

    Raises:
        SearchError: On a missing or unloadable model, an image size the model does not take, a
            bad crop mode or batch size, a missing or empty folder, unreadable images (unless
            ``skip_bad``), or when every image is unreadable.
    """
    _check_crop_mode(crop_mode)
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise SearchError(f"batch_size must be a positive integer, got {batch_size!r}")
    root = Path(images_dir).resolve()
    relative = find_images(root)
    model, resolved_model_path = _load_model(model_path)
    image_size = _index_image_size(model, resolved_model_path, image_size)
    absolute = [str(root / p) for p in relative]
    embeddings, keep, bad = _embed_readable(
        model,
        root,
        absolute,
        image_size=image_size,
        crop_mode=crop_mode,
        batch_size=int(batch_size),
        progress=progress,
        skip_bad=skip_bad,
    )
    if bad:
        logger.warning("Skipped %s", _problem_list(bad, len(absolute)))

    index = SearchIndex(
        embeddings=embeddings,
        paths=np.asarray([relative[i] for i in keep], dtype=str),
        images_root=root,
        model_path=str(resolved_model_path),
        model_fingerprint=model_fingerprint(model),
        image_size=image_size,
        crop_mode=crop_mode,
        skipped=tuple(relative[i] for i, path in enumerate(absolute) if path in bad),
    )
    save_index(index, index_path)
    return index


def _index_image_size(model: keras.Model, model_path: Path, image_size: int | None) -> int:
    """The side of the square images to embed with a model, checked against what it takes.

    Args:
        model: the loaded model.
        model_path: its file, for messages.
        image_size: the requested side, or ``None`` to take the model's.

    Returns:
        The image side.

    Raises:
        SearchError: ``image_size`` is not a positive integer or not the model's fixed size, or
            is ``None`` for a model that takes images of any size.
    """
    model_size = model_image_size(model)
    if image_size is None:
        if model_size is None:
            raise SearchError(f"the model {model_path} takes images of any size: give image_size")
        return model_size
    if isinstance(image_size, bool) or int(image_size) != image_size or image_size < 1:
        raise SearchError(f"image_size must be a positive integer, got {image_size!r}")
    if model_size is not None and image_size != model_size:
        raise SearchError(
            f"image_size={image_size} but the model {model_path} takes "
            f"{model_size}x{model_size} images"
        )
    return image_size


def _embed_readable(
    model: keras.Model,
    root: Path,
    absolute: list[str],
    *,
    image_size: int,
    crop_mode: str,
    batch_size: int,
    progress: bool,
    skip_bad: bool,
) -> tuple[np.ndarray, list[int], dict[str, str]]:
    """Embeds the readable images among ``absolute``, finding the unreadable ones.

    Images are checked cheaply first; if TensorFlow still fails to decode one while embedding,
    all remaining images are decoded once to name the culprits, and the embedding is redone
    without them.

    Args:
        model: the loaded model.
        root: the indexed folder, for messages.
        absolute: the images' absolute paths.
        image_size: side of the square model input.
        crop_mode: as in :func:`build_index`.
        batch_size: images per embedding batch.
        progress: show a progress bar.
        skip_bad: leave unreadable images out instead of raising.

    Returns:
        The embeddings of the kept images, the kept images' positions in ``absolute``, and the
        problems of the left-out images (path to reason).

    Raises:
        SearchError: there are unreadable images and not ``skip_bad``, every image is
            unreadable, or embedding failed without any image being unreadable.
    """
    bad = image_problems(absolute, full_decode=False)
    while True:
        if bad and not skip_bad:
            raise SearchError(
                _problem_list(bad, len(absolute)) + "\nFix or remove them, or skip them "
                "(skip_bad / --skip-bad)."
            )
        keep = [i for i, path in enumerate(absolute) if path not in bad]
        if not keep:
            raise SearchError("every image is unreadable:\n" + _problem_list(bad, len(absolute)))
        try:
            embeddings = embed_files(
                model,
                [absolute[i] for i in keep],
                image_size=image_size,
                crop_mode=crop_mode,
                batch_size=batch_size,
                progress=progress,
            )
            return embeddings, keep, bad
        except tf.errors.OpError as error:
            # The cheap check missed a corrupt file; decode them all once to name it.
            missed = image_problems([absolute[i] for i in keep], full_decode=True)
            if not missed:
                raise SearchError(f"embedding the images of {root} failed: {error}") from error
            bad = {**bad, **missed}


# --------------------------------------------------------------------------------------------
# Queries
# --------------------------------------------------------------------------------------------


def query_index(
    index: SearchIndex,
    model_path: str | os.PathLike[str] | keras.Model,
    image_path: str | os.PathLike[str],
    *,
    top_k: int = 8,
) -> list[Match]:
    """Finds the indexed images nearest to a query image.

    The model must be the one the index was built with (same fingerprint); the query is
    embedded with the index's image size and crop mode.

    Args:
        index: The index.
        model_path: The model: a ``.keras`` file, a run directory, or a loaded Keras model.
        image_path: The query image (any format the pipeline decodes).
        top_k: Number of results; at most the number of indexed images is returned.

    Returns:
        Up to ``top_k`` :class:`Match` tuples ``(absolute path, distance)``, nearest first
        (ties by index order). A query that is itself indexed comes first at distance ~0.

    Raises:
        SearchError: If top_k < 1, the model cannot be loaded or is not the index's model
            (both fingerprints named), or the query image cannot be read.
    """
    if isinstance(top_k, bool) or int(top_k) != top_k or top_k < 1:
        raise SearchError(f"top_k must be a positive integer, got {top_k!r}")
    if isinstance(model_path, (str, os.PathLike)):
        model, where = _load_model(model_path)
    else:
        model, where = model_path, f"model {model_path.name!r}"
    fingerprint = model_fingerprint(model)
    if fingerprint != index.model_fingerprint:
        raise SearchError(
            f"the index was built with another model: {where} has fingerprint "
            f"{fingerprint[:16]}..., the index (built with {index.model_path}) expects "
            f"{index.model_fingerprint[:16]}...; rebuild the index with this model"
        )
    image_path = str(Path(image_path).resolve())
    problem = image_problems([image_path], full_decode=True).get(image_path)
    if problem:
        raise SearchError(f"cannot read the query image {image_path}: {problem}")
    query = embed_files(
        model,
        [image_path],
        image_size=index.image_size,
        crop_mode=index.crop_mode,
        batch_size=1,
        progress=False,
    )
    neighbours, distances = nearest_neighbours(
        query, index.embeddings, k=min(int(top_k), len(index)), exclude_self=False
    )
    return [
        Match(index.absolute_path(int(i)), float(d))
        for i, d in zip(neighbours[0], distances[0], strict=True)
    ]
