"""Embeddings for TensorBoard's Embedding Projector (``tensorboard.plugins.projector``).

:func:`write_projector` writes, into one folder:

- ``embeddings.ckpt-1.*`` and ``checkpoint``: a TensorFlow checkpoint holding the (N, D)
  embeddings as the variable ``embedding`` (tensor ``embedding/.ATTRIBUTES/VARIABLE_VALUE``),
  as the projector reads them;
- ``metadata.tsv``: a header ``class id<TAB>class name<TAB>file`` and one row per embedding
  (the projector wants a header when there is more than one column);
- ``sprite.png``: the thumbnails in row-major order on a square grid (at most 8192 x 8192
  pixels, the projector's limit), when thumbnails are given;
- ``projector_config.pbtxt``: the projector's configuration naming those files (paths relative
  to the folder, so the folder can be moved);
- a TensorBoard event file holding a short description, which makes the folder a TensorBoard
  run: ``tensorboard --logdir`` on the folder or on any folder above it (the run directory)
  shows the embeddings in the Projector tab.

:func:`read_projector` reads such a folder back.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from PIL import Image
from tensorboard.plugins import projector

from net import files

#: File names inside the projector folder.
METADATA_FILE = "metadata.tsv"
SPRITE_FILE = "sprite.png"
CHECKPOINT_PREFIX = "embeddings.ckpt"
CONFIG_FILE = "projector_config.pbtxt"
#: The checkpoint key of the embeddings.
TENSOR_NAME = "embedding/.ATTRIBUTES/VARIABLE_VALUE"
METADATA_HEADER = ("class id", "class name", "file")
#: The projector's largest sprite side in pixels.
MAX_SPRITE_SIDE = 8192


def sprite_tile_size(count: int, requested: int) -> int:
    """The side of one thumbnail so that ``count`` of them fit a sprite of the projector's size.

    Args:
        count: thumbnails.
        requested: the wished side in pixels.
    """
    columns = max(1, math.ceil(math.sqrt(count)))
    return max(1, min(int(requested), MAX_SPRITE_SIDE // columns))


def sprite_image(thumbnails: np.ndarray) -> np.ndarray:
    """The thumbnails on a square grid, row-major, unused cells black.

    Args:
        thumbnails: (N, t, t, 3) uint8 images.

    Returns:
        (c * t, c * t, 3) uint8, with c = ceil(sqrt(N)).
    """
    thumbnails = np.asarray(thumbnails)
    if thumbnails.ndim != 4 or thumbnails.shape[1] != thumbnails.shape[2]:
        raise ValueError(f"thumbnails must be (N, t, t, 3), got {thumbnails.shape}")
    count, side = thumbnails.shape[:2]
    columns = max(1, math.ceil(math.sqrt(count)))
    grid = np.zeros((columns * columns, side, side, 3), dtype=np.uint8)
    grid[:count] = thumbnails
    grid = grid.reshape(columns, columns, side, side, 3).transpose(0, 2, 1, 3, 4)
    return grid.reshape(columns * side, columns * side, 3)


def _cell(text: object) -> str:
    """A TSV cell: tabs and line breaks would split rows or columns, so they become spaces."""
    return " ".join(str(text).split()) if any(c in str(text) for c in "\t\r\n") else str(text)


def write_projector(
    directory: str | os.PathLike,
    embeddings: np.ndarray,
    metadata: Sequence[Sequence[object]],
    *,
    thumbnails: np.ndarray | None = None,
    description: str = "",
) -> Path:
    """Writes embeddings, their metadata and optional thumbnails for the Embedding Projector.

    Args:
        directory: the folder (created if needed); earlier projector files in it are replaced.
        embeddings: (N, D) float embeddings.
        metadata: N rows of (class id, class name, file).
        thumbnails: (N, t, t, 3) uint8 images for the sprite, or ``None`` for no sprite.
        description: text shown in TensorBoard's Text tab of this run.

    Returns:
        The path of ``projector_config.pbtxt``.

    Raises:
        ValueError: the counts disagree, or the embeddings are not (N, D) with N >= 1.
    """
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or len(embeddings) == 0:
        raise ValueError(f"embeddings must be (N, D) with N >= 1, got {embeddings.shape}")
    if len(metadata) != len(embeddings):
        raise ValueError(f"{len(metadata)} metadata rows for {len(embeddings)} embeddings")
    if thumbnails is not None and len(thumbnails) != len(embeddings):
        raise ValueError(f"{len(thumbnails)} thumbnails for {len(embeddings)} embeddings")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)

    lines = ["\t".join(METADATA_HEADER)]
    lines += ["\t".join(_cell(value) for value in row) for row in metadata]
    files.atomic_write_text(directory / METADATA_FILE, "\n".join(lines) + "\n")

    checkpoint = tf.train.Checkpoint(embedding=tf.Variable(embeddings, trainable=False))
    for old in directory.glob(f"{CHECKPOINT_PREFIX}-*"):
        old.unlink()
    checkpoint.save(str(directory / CHECKPOINT_PREFIX))

    config = projector.ProjectorConfig()
    embedding = config.embeddings.add()
    embedding.tensor_name = TENSOR_NAME
    embedding.metadata_path = METADATA_FILE
    if thumbnails is not None:
        sprite = sprite_image(np.asarray(thumbnails, dtype=np.uint8))
        with files.atomic_path(directory / SPRITE_FILE, suffix=".png") as temporary:
            Image.fromarray(sprite).save(temporary, format="PNG")
        embedding.sprite.image_path = SPRITE_FILE
        embedding.sprite.single_image_dim.extend([thumbnails.shape[2], thumbnails.shape[1]])
    else:
        (directory / SPRITE_FILE).unlink(missing_ok=True)
    config_path = directory / CONFIG_FILE
    files.atomic_write_text(config_path, text_format.MessageToString(config))

    if description:
        for old in directory.glob("events.out.tfevents.*"):
            old.unlink()
        writer = tf.summary.create_file_writer(str(directory))
        with writer.as_default():
            tf.summary.text("embeddings", description, step=0)
        writer.close()
    return config_path


@dataclasses.dataclass
class ProjectorData:
    """A projector folder read back.

    Attributes:
        config: the parsed ``projector_config.pbtxt``.
        embeddings: (N, D) float32 from the checkpoint the projector would read.
        header: the metadata's header.
        metadata: N rows of strings.
        sprite: the sprite (H, W, 3) uint8, or ``None``.
    """

    config: projector.ProjectorConfig
    embeddings: np.ndarray
    header: list[str]
    metadata: list[list[str]]
    sprite: np.ndarray | None


def read_projector(directory: str | os.PathLike) -> ProjectorData:
    """Reads what :func:`write_projector` wrote, the way the projector finds it.

    The configuration is parsed from ``projector_config.pbtxt``, the checkpoint found with
    ``tf.train.latest_checkpoint`` (as the projector does when the configuration names none),
    the embeddings read by the configuration's tensor name, and the metadata and sprite from
    the paths the configuration gives, relative to the folder.

    Raises:
        FileNotFoundError: a file is missing.
    """
    directory = Path(directory)
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(f"no projector configuration at {config_path}")
    config = text_format.Parse(config_path.read_text(), projector.ProjectorConfig())
    (embedding,) = config.embeddings
    checkpoint = tf.train.latest_checkpoint(str(directory))
    if checkpoint is None:
        raise FileNotFoundError(f"no embeddings checkpoint in {directory}")
    embeddings = tf.train.load_checkpoint(checkpoint).get_tensor(embedding.tensor_name)
    rows = [
        line.split("\t")
        for line in (directory / embedding.metadata_path).read_text().splitlines()
        if line
    ]
    sprite = None
    if embedding.sprite.image_path:
        with Image.open(directory / embedding.sprite.image_path) as image:
            sprite = np.asarray(image.convert("RGB"))
    return ProjectorData(config, np.asarray(embeddings), rows[0], rows[1:], sprite)
