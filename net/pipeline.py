"""The tf.data input pipeline: class-balanced P x K training batches and ordered evaluation.

Everything per image runs as TensorFlow ops inside ``Dataset.map(num_parallel_calls=AUTOTUNE)``:
read the file, decode JPEG/PNG/GIF/BMP to 3 channels (grayscale expanded, alpha dropped), crop
to the bounding box or pad to a square, resize, and for training augment. Images leave the
pipeline as float32 RGB in [0, 255] (whole numbers before augmentation); normalisation for the
backbone happens inside the model.

Training batches (:func:`train_dataset`) hold P classes of K images each; which records form
each batch is decided by the sampler of :mod:`net.sampler` (re-exported here:
:func:`steps_per_epoch`, :func:`inclusion_probabilities`, :data:`CLASS_SAMPLING`). All
randomness is stateless and derived from ``seed``, so a seed fixes the whole stream of batches.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from net.augment_ops import augment_image, draw_augmentation  # noqa: F401 (re-exported)
from net.augmentation import DEFAULT, Augmentation
from net.data import Records
from net.sampler import (  # noqa: F401 (re-exported: the sampler lives there)
    CLASS_SAMPLING,
    batch_indices,
    check_batch_shape,
    check_class_sampling,
    inclusion_probabilities,
    steps_per_epoch,
)

AUTOTUNE = tf.data.AUTOTUNE

#: Crop modes of :func:`load_image`.
CROP_MODES = ("bbox", "pad", "none")


def check_crop_mode(crop_mode: str, allowed: tuple[str, ...] = CROP_MODES) -> None:
    """Checks a crop mode.

    Args:
        crop_mode: the mode to check.
        allowed: the modes accepted where it is used (a subset of :data:`CROP_MODES`).

    Raises:
        ValueError: naming the mode and the allowed ones.
    """
    if crop_mode not in allowed:
        raise ValueError(f"unknown crop_mode {crop_mode!r}: crop_mode must be one of {allowed}")


# --------------------------------------------------------------------------------------------
# Per-image ops
# --------------------------------------------------------------------------------------------


def crop_or_pad(image: tf.Tensor, bbox: tf.Tensor, crop_mode: str) -> tf.Tensor:
    """Crops an image to its bounding box or pads it to a centred square.

    Args:
        image: (H, W, C) image of any dtype.
        bbox: (4,) int, 0-based half-open ``[x1, y1, x2, y2)``; all ``-1`` means the whole
            image. Used only by ``"bbox"``; clamped to the image (a box outside it keeps at
            least one pixel).
        crop_mode: ``"bbox"`` (crop to the box, the CGD paper's protocol), ``"pad"`` (pad with
            zeros to a square of side max(H, W), the image centred, the extra row or column of
            an odd difference going to the bottom or right) or ``"none"``.

    Returns:
        (h, w, C) cropped, (S, S, C) padded or the unchanged image, same dtype.

    Raises:
        ValueError: for an unknown crop mode.
    """
    check_crop_mode(crop_mode)
    if crop_mode == "none":
        return image
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    if crop_mode == "pad":
        side = tf.maximum(height, width)
        top = (side - height) // 2
        left = (side - width) // 2
        return tf.pad(image, [[top, side - height - top], [left, side - width - left], [0, 0]])
    bbox = tf.cast(bbox, tf.int32)
    missing = tf.reduce_all(tf.equal(bbox, -1))
    x1 = tf.clip_by_value(bbox[0], 0, width - 1)
    y1 = tf.clip_by_value(bbox[1], 0, height - 1)
    x2 = tf.clip_by_value(bbox[2], x1 + 1, width)
    y2 = tf.clip_by_value(bbox[3], y1 + 1, height)
    x1, y1 = tf.where(missing, 0, x1), tf.where(missing, 0, y1)
    x2, y2 = tf.where(missing, width, x2), tf.where(missing, height, y2)
    return image[y1:y2, x1:x2]


def decode_image(contents: tf.Tensor) -> tf.Tensor:
    """Decodes JPEG, PNG, GIF (first frame), BMP or WebP bytes to an RGB image.

    Args:
        contents: scalar string, the file's bytes.

    Returns:
        (H, W, 3) uint8 RGB; grayscale is expanded to 3 channels, alpha dropped.
    """
    image = tf.io.decode_image(contents, channels=3, expand_animations=False, dtype=tf.uint8)
    image.set_shape([None, None, 3])
    return image


#: JPEG decoding scales (libjpeg's DCT-domain downscaling), largest last.
JPEG_SCALES = (1, 2, 4, 8)


def _kept_region_side(
    height: tf.Tensor, width: tf.Tensor, bbox: tf.Tensor, crop_mode: str
) -> tf.Tensor:
    """The side of the kept region that the resize maps to ``image_size`` most tightly."""
    if crop_mode == "pad":
        return tf.maximum(height, width)
    if crop_mode == "bbox":
        bbox = tf.cast(bbox, tf.int32)
        missing = tf.reduce_all(tf.equal(bbox, -1))
        box_w = tf.clip_by_value(bbox[2], 0, width) - tf.clip_by_value(bbox[0], 0, width)
        box_h = tf.clip_by_value(bbox[3], 0, height) - tf.clip_by_value(bbox[1], 0, height)
        return tf.where(missing, tf.minimum(height, width), tf.maximum(tf.minimum(box_w, box_h), 1))
    return tf.minimum(height, width)


def decode_for_size(
    contents: tf.Tensor, bbox: tf.Tensor, *, image_size: int, crop_mode: str
) -> tuple[tf.Tensor, tf.Tensor]:
    """Decodes an image, a JPEG at the smallest DCT scale that still covers the output.

    libjpeg can decode at 1/2, 1/4 or 1/8 scale in the DCT domain: several times faster than a
    full decode followed by a downscale, and filtered, so it does not alias. The scale is the
    largest of :data:`JPEG_SCALES` that keeps the region to be resized (the box, the padded
    square or the whole image) at least ``image_size`` pixels a side; the box is scaled with it.

    Args:
        contents: scalar string, the file's bytes.
        bbox: (4,) int box, see :func:`crop_or_pad`.
        image_size: side S of the final square output.
        crop_mode: ``"bbox"``, ``"pad"`` or ``"none"``.

    Returns:
        ``(image, bbox)``: (H', W', 3) uint8 RGB and the box in its coordinates.
    """

    def jpeg() -> tuple[tf.Tensor, tf.Tensor]:
        shape = tf.io.extract_jpeg_shape(contents)
        side = _kept_region_side(shape[0], shape[1], bbox, crop_mode)
        fits = [tf.cast(side >= scale * image_size, tf.int32) for scale in JPEG_SCALES[1:]]
        index = tf.add_n(fits)  # scales are powers of two: count those that still fit
        branches = [
            (lambda scale=scale: tf.io.decode_jpeg(contents, channels=3, ratio=scale))
            for scale in JPEG_SCALES
        ]
        image = tf.switch_case(index, branches)
        scale = tf.gather(tf.constant(JPEG_SCALES, tf.int32), index)
        box = tf.cast(bbox, tf.int32)
        scaled = tf.concat([box[:2] // scale, (box[2:] + scale - 1) // scale], axis=0)
        return image, tf.where(tf.reduce_all(tf.equal(box, -1)), box, scaled)

    def other() -> tuple[tf.Tensor, tf.Tensor]:
        return decode_image(contents), tf.cast(bbox, tf.int32)

    image, box = tf.cond(tf.io.is_jpeg(contents), jpeg, other)
    image.set_shape([None, None, 3])
    return image, box


def load_image(
    path: tf.Tensor, bbox: tf.Tensor, *, image_size: int, crop_mode: str = "bbox"
) -> tf.Tensor:
    """Reads, decodes, crops or pads, and resizes one image.

    JPEGs are decoded at a reduced DCT scale when much larger than needed (see
    :func:`decode_for_size`); what is left to the resize is then under 2x, done bilinearly. A
    resize of 2x or more (other formats, tiny outputs) is antialiased, so no image aliases.

    Args:
        path: scalar string, the image file.
        bbox: (4,) int box, see :func:`crop_or_pad`.
        image_size: side S of the square output.
        crop_mode: ``"bbox"``, ``"pad"`` or ``"none"`` (see :func:`crop_or_pad`).

    Returns:
        (S, S, 3) float32 RGB with whole-number values in [0, 255] (rounded, so caching as
        uint8 is lossless).
    """
    image, box = decode_for_size(
        tf.io.read_file(path), bbox, image_size=image_size, crop_mode=crop_mode
    )
    image = crop_or_pad(image, box, crop_mode)
    size = [image_size, image_size]
    large = tf.reduce_max(tf.shape(image)[:2]) >= 2 * image_size
    image = tf.cond(
        large,
        lambda: tf.image.resize(image, size, method="bilinear", antialias=True),
        lambda: tf.image.resize(image, size, method="bilinear"),
    )
    image = tf.round(tf.clip_by_value(image, 0.0, 255.0))
    image.set_shape([image_size, image_size, 3])
    return image


# --------------------------------------------------------------------------------------------
# Data sets
# --------------------------------------------------------------------------------------------


def _image_cache(records: Records, image_size: int, crop_mode: str) -> tf.Variable:
    """Decodes and resizes every image once into a (N, S, S, 3) uint8 CPU variable."""
    dataset = eval_dataset(records, batch_size=64, image_size=image_size, crop_mode=crop_mode)
    images = np.concatenate([batch.numpy().astype(np.uint8) for batch, _ in dataset])
    with tf.device("/cpu:0"):
        return tf.Variable(images, trainable=False, name="image_cache")


def train_dataset(
    records: Records,
    *,
    classes_per_batch: int,
    images_per_class: int,
    image_size: int,
    crop_mode: str = "bbox",
    augment: bool | Augmentation | None = True,
    seed: int | None = None,
    cache: bool = False,
    class_sampling: str = "proportional",
    start_batch: int = 0,
) -> tf.data.Dataset:
    """An infinite stream of class-balanced P x K training batches.

    See :mod:`net.sampler` for the sampling scheme. Use :func:`steps_per_epoch` for a
    nominal epoch length.

    Args:
        records: the training records (at least ``classes_per_batch`` classes).
        classes_per_batch: P, distinct classes per batch.
        images_per_class: K, images per class in a batch.
        image_size: side S of the square images.
        crop_mode: ``"bbox"``, ``"pad"`` or ``"none"`` (see :func:`crop_or_pad`).
        augment: the settings of :func:`augment_image`; ``True`` is
            :data:`net.augmentation.DEFAULT`, ``False`` or ``None`` no augmentation.
        seed: fixes the batches and augmentations; None draws one at random.
        cache: decode and resize every image once, up front, and keep them in memory as uint8
            (N * S * S * 3 bytes: 2.4 GB for 16k images at 224 px); for small data sets.
        class_sampling: ``"proportional"`` (classes drawn in proportion to their size) or
            ``"uniform"`` (every class equally likely; see :mod:`net.sampler`).
        start_batch: start the stream at this batch of ``seed``'s stream (where a resumed run
            was): the sampler replays the earlier batches' indices, loading no images, so
            batch ``n`` (images, labels and augmentation) is the same whatever the start.

    Returns:
        Dataset of ``(images, labels)``: (P*K, S, S, 3) float32 RGB in [0, 255] and (P*K,)
        int32, image ``i`` of class group ``j`` at position ``j * K + i``.

    Raises:
        ValueError: for bad batch sizes, crop mode or class sampling.
    """
    check_batch_shape(records, classes_per_batch, images_per_class)
    check_crop_mode(crop_mode)
    check_class_sampling(class_sampling)
    if seed is None:
        seed = int(np.random.default_rng().integers(2**31 - 1))
    seed = int(seed)
    paths = tf.constant(records.paths)
    bboxes = tf.constant(records.bboxes, tf.int32)
    labels = tf.constant(records.labels, tf.int32)
    cached = _image_cache(records, image_size, crop_mode) if cache else None
    settings = DEFAULT if augment is True else (augment or None)

    def load(index: tf.Tensor, element_id: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        if cached is not None:
            image = tf.cast(tf.gather(cached, index), tf.float32)
        else:
            image = load_image(
                paths[index], bboxes[index], image_size=image_size, crop_mode=crop_mode
            )
        if settings is not None:
            # Offset the stream so augmentation draws never reuse the sampler's seeds.
            element_seed = tf.stack([tf.cast(seed, tf.int64) + 1, element_id])
            image = augment_image(image, element_seed, settings)
        return image, labels[index]

    batch_size = classes_per_batch * images_per_class
    return (
        batch_indices(records, classes_per_batch, images_per_class, seed, class_sampling)
        .skip(int(start_batch))
        .unbatch()
        .map(load, num_parallel_calls=AUTOTUNE, deterministic=True)
        .batch(batch_size, drop_remainder=True)
        .prefetch(AUTOTUNE)
    )


def eval_dataset(
    records: Records,
    *,
    batch_size: int,
    image_size: int,
    crop_mode: str = "bbox",
    cache: bool = False,
) -> tf.data.Dataset:
    """Every image exactly once, in record order, last partial batch included.

    Args:
        records: the records to embed.
        batch_size: images per batch.
        image_size: side S of the square images.
        crop_mode: ``"bbox"``, ``"pad"`` or ``"none"`` (see :func:`crop_or_pad`).
        cache: keep decoded, resized images in memory after the first pass.

    Returns:
        Dataset of ``(images, labels)``: (B, S, S, 3) float32 RGB in [0, 255] and (B,) int32,
        with B = ``batch_size`` except for the last batch.

    Raises:
        ValueError: for a bad batch size or crop mode.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    check_crop_mode(crop_mode)

    def load(path: tf.Tensor, bbox: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return load_image(path, bbox, image_size=image_size, crop_mode=crop_mode), label

    dataset = tf.data.Dataset.from_tensor_slices(
        (records.paths, records.bboxes.astype(np.int32), records.labels.astype(np.int32))
    ).map(load, num_parallel_calls=AUTOTUNE, deterministic=True)
    if cache:
        dataset = dataset.cache()
    return dataset.batch(batch_size).prefetch(AUTOTUNE)
