"""Inference: turning images into embeddings with a compiled step (not ``model.predict``).

One way for every caller: :func:`compute_embeddings` runs a data set of (images, labels) batches
through the model's cached, compiled inference step; :func:`embed_records` does it for records
through the evaluation pipeline, and :func:`embed_files` for a list of image files.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from net import pipeline
from net.data import NO_BOX, Records

#: The compiled inference steps of each live model, one per image shape and dtype, so repeated
#: calls (validation every epoch) reuse the traced graph instead of tracing again.
_INFERENCE_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _inference_step(model: keras.Model, images: tf.TensorSpec):
    """The compiled ``images -> embeddings`` step of a model for batches like ``images``.

    The step's input signature leaves the batch dimension open, so it is traced once for a
    model and an image shape: a partial last batch, or another batch size, reuses the trace.
    It holds the model by a weak reference (the traced graph needs only its variables), so the
    cache does not keep models alive.
    """
    steps = _INFERENCE_STEPS.setdefault(model, {})
    shape = tf.TensorShape([None]).concatenate(images.shape[1:])
    key = (tuple(shape.as_list()), images.dtype)
    step = steps.get(key)
    if step is None:
        model_ref = weakref.ref(model)

        @tf.function(jit_compile=False, input_signature=[tf.TensorSpec(shape, images.dtype)])
        def step(batch: tf.Tensor) -> tf.Tensor:
            outputs = model_ref()(batch, training=False)
            if isinstance(outputs, Mapping):
                if "embeddings" not in outputs:
                    raise ValueError(
                        f"model returns a dict without 'embeddings' (keys: {sorted(outputs)})"
                    )
                outputs = outputs["embeddings"]
            return outputs

        steps[key] = step
    return step


def compute_embeddings(
    model: keras.Model, dataset: tf.data.Dataset, *, progress: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Embeds every element of a data set with a compiled inference step.

    The step is a ``tf.function`` (no XLA) calling ``model(images, training=False)``, traced once
    per model and image shape (its batch dimension is left open, so a partial last batch costs
    no second trace); a dict output contributes its ``"embeddings"`` entry.

    Args:
        model: A Keras model mapping images (B, H, W, 3) to embeddings (B, D) or to a dict with
            an ``"embeddings"`` entry.
        dataset: A ``tf.data.Dataset`` of (images (B, H, W, 3), labels (B,)) batches.
        progress: Whether to show a tqdm progress bar (only ever on a terminal).

    Returns:
        A tuple (embeddings (N, D) float32, labels (N,)) in data set order.

    Raises:
        ValueError: If the data set does not yield (images, labels) pairs, is empty, or the model
            returns a dict without ``"embeddings"``.
    """
    spec = dataset.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2):
        raise ValueError(f"dataset must yield (images, labels) pairs, got element_spec {spec}")

    embed = _inference_step(model, spec[0])

    cardinality = int(dataset.cardinality())
    batches: list[np.ndarray] = []
    batch_labels: list[np.ndarray] = []
    for images, labels in tqdm(
        dataset,
        total=cardinality if cardinality >= 0 else None,
        desc="embedding",
        unit="batch",
        # None: tqdm shows the bar only on a terminal (no carriage returns in logs and files).
        disable=None if progress else True,
    ):
        batches.append(np.asarray(embed(images), dtype=np.float32))
        batch_labels.append(np.asarray(labels))
    if not batches:
        raise ValueError("dataset is empty: nothing to embed")
    return np.concatenate(batches, axis=0), np.concatenate(batch_labels, axis=0)


def embed_records(
    model: keras.Model,
    records: Records,
    *,
    image_size: int,
    crop_mode: str,
    batch_size: int,
    cache: bool = False,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Embeds every image of some records through the evaluation pipeline, in order.

    Args:
        model: the model (see :func:`compute_embeddings`).
        records: the images, labels and boxes.
        image_size: side of the square model input, pixels.
        crop_mode: ``"bbox"``, ``"pad"`` or ``"none"`` (see :func:`net.pipeline.crop_or_pad`).
        batch_size: images per batch.
        cache: keep the decoded images in memory (see :func:`net.pipeline.eval_dataset`).
        progress: show a progress bar.

    Returns:
        A tuple (embeddings (N, D) float32, labels (N,)) in record order.

    Raises:
        tf.errors.OpError: If TensorFlow cannot decode one of the files.
    """
    dataset = pipeline.eval_dataset(
        records, batch_size=batch_size, image_size=image_size, crop_mode=crop_mode, cache=cache
    )
    return compute_embeddings(model, dataset, progress=progress)


def embed_files(
    model: keras.Model,
    paths: Sequence[str],
    *,
    image_size: int,
    crop_mode: str,
    batch_size: int,
    progress: bool = True,
) -> np.ndarray:
    """Embeds image files (no bounding boxes) through the evaluation pipeline, in order.

    Args and Raises as in :func:`embed_records`.

    Returns:
        (N, D) float32 embeddings.
    """
    records = Records(
        paths=np.asarray(paths, dtype=str),
        labels=np.zeros(len(paths), dtype=np.int64),
        bboxes=np.tile(np.asarray(NO_BOX, dtype=np.int64), (len(paths), 1)),
        class_names=("images",),
    )
    embeddings, _ = embed_records(
        model,
        records,
        image_size=image_size,
        crop_mode=crop_mode,
        batch_size=batch_size,
        progress=progress,
    )
    return embeddings
