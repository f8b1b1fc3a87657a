"""The P x K training sampler: which records form each training batch (indices only).

Every batch holds ``P = classes_per_batch`` distinct classes, laid out as P groups of
``K = images_per_class`` consecutive images. Each batch draws its P classes afresh by systematic
sampling (a random class order, then P equally spaced points on the cumulative inclusion
probabilities). With ``class_sampling="proportional"`` (the default) this includes class ``c``
with probability ``pi_c = P * n_c / N`` exactly (``n_c`` its images, ``N`` all images), so every
image is seen equally often in expectation; a class larger than ``N / P`` is capped at
``pi_c = 1`` (in every batch) and its images are seen less often. With
``class_sampling="uniform"`` (the seed's) every class is included with probability ``P / C``
(``C`` classes), whatever its size, so images of small classes are seen more often.

Each class walks through its images in a random order, reshuffled after each pass; a class with
at least K images never repeats one within a batch (when fewer than K are left in a pass, the
batch starts the next pass, so the leftovers, a different random few each pass, wait for a later
pass), and a class with fewer than K images gives all of its images and then repeats some (a new
pass) to fill its K places: with Stanford Online Products' classes of 2-12 images and K = 2 or
4, every class group still holds min(n_c, K) distinct images, so at least one real positive
pair. All randomness is stateless and derived from ``seed``, so a seed fixes the whole stream of
batches.

:mod:`net.pipeline` loads the images of these indices.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from net.records import Records

#: How the training sampler draws the classes of a batch (see the module docstring).
CLASS_SAMPLING = ("proportional", "uniform")


def check_class_sampling(class_sampling: str) -> None:
    """Checks a class-sampling mode.

    Raises:
        ValueError: naming the mode and the allowed ones.
    """
    if class_sampling not in CLASS_SAMPLING:
        raise ValueError(f"Unknown class_sampling {class_sampling!r}; use one of {CLASS_SAMPLING}")


def check_batch_shape(records: Records, classes_per_batch: int, images_per_class: int) -> None:
    """Checks P and K against the training records.

    Raises:
        ValueError: for a non-positive P or K, or P larger than the number of classes.
    """
    if classes_per_batch < 1 or images_per_class < 1:
        raise ValueError(
            f"classes_per_batch and images_per_class must be >= 1, got {classes_per_batch} and "
            f"{images_per_class}"
        )
    if records.num_classes < classes_per_batch:
        raise ValueError(
            f"classes_per_batch={classes_per_batch} exceeds the {records.num_classes} classes of "
            "the training records"
        )


def steps_per_epoch(records: Records, classes_per_batch: int, images_per_class: int) -> int:
    """Returns how many P x K batches make one nominal epoch (every image about once).

    Args:
        records: the training records.
        classes_per_batch: P.
        images_per_class: K.

    Returns:
        ``max(1, len(records) // (P * K))``.

    Raises:
        ValueError: for a non-positive P or K, or P larger than the number of classes.
    """
    check_batch_shape(records, classes_per_batch, images_per_class)
    return max(1, len(records) // (classes_per_batch * images_per_class))


def inclusion_probabilities(
    class_sizes: np.ndarray, classes_per_batch: int, class_sampling: str = "proportional"
) -> np.ndarray:
    """Per-batch inclusion probabilities of the classes.

    Args:
        class_sizes: (C,) number of images of each class.
        classes_per_batch: P, at most C.
        class_sampling: ``"proportional"`` (to class size, capped at 1) or ``"uniform"``.

    Returns:
        (C,) float64 probabilities summing to P. Proportional: ``pi_c = min(1, s * n_c)``,
        where the scale ``s`` is found by repeatedly capping the largest classes at 1 and
        rescaling the rest. Uniform: ``pi_c = P / C``.

    Raises:
        ValueError: for an unknown ``class_sampling``.
    """
    check_class_sampling(class_sampling)
    sizes = np.asarray(class_sizes, dtype=np.float64)
    if class_sampling == "uniform":
        return np.full(len(sizes), classes_per_batch / len(sizes))
    capped = np.zeros(len(sizes), dtype=bool)
    while not capped.all():
        free = classes_per_batch - capped.sum()
        pi = np.where(capped, 1.0, free * sizes / sizes[~capped].sum())
        if not (pi[~capped] > 1.0).any():
            return pi
        capped |= pi > 1.0
    return np.ones(len(sizes))


def batch_indices(
    records: Records,
    classes_per_batch: int,
    images_per_class: int,
    seed: int,
    class_sampling: str = "proportional",
) -> tf.data.Dataset:
    """An infinite dataset of P x K record-index batches (see the module docstring).

    Args:
        records: the training records (at least ``classes_per_batch`` classes).
        classes_per_batch: P.
        images_per_class: K.
        seed: fixes the whole stream.
        class_sampling: ``"proportional"`` or ``"uniform"``.

    Returns:
        Dataset of ``(indices, element_ids)``: (P*K,) int64 indices into ``records`` (P groups
        of K same-class images) and (P*K,) int64 running element numbers for augmentation seeds.
    """
    classes, inverse, counts = np.unique(records.labels, return_inverse=True, return_counts=True)
    grouped = tf.constant(np.argsort(inverse, kind="stable"), tf.int64)  # indices by class
    offsets = tf.constant(np.cumsum(counts) - counts, tf.int64)
    sizes = tf.constant(counts, tf.int64)
    inclusion = tf.constant(
        inclusion_probabilities(counts, classes_per_batch, class_sampling), tf.float64
    )
    num_classes, p, k = len(classes), classes_per_batch, images_per_class

    def step(cursors: tf.Tensor, batch: tf.Tensor) -> tuple[tf.Tensor, tuple[tf.Tensor, ...]]:
        # P distinct classes by systematic sampling: class intervals of length pi_c <= 1 laid
        # end to end in a random order (total length P), hit by the points u, u + 1, ...
        draws = tf.random.stateless_uniform([num_classes + 1], seed=tf.stack([seed, batch]))
        order = tf.argsort(draws[:num_classes])
        ends = tf.cumsum(tf.gather(inclusion, order))
        points = tf.cast(draws[num_classes], tf.float64) + tf.range(p, dtype=tf.float64)
        hit = tf.minimum(tf.searchsorted(ends, points, side="right"), num_classes - 1)
        chosen = tf.cast(tf.gather(order, hit), tf.int64)
        # Positions start .. start + K - 1 of each chosen class's endless walk, where a walk
        # that would run past the end of the current pass starts the next pass instead, so a
        # class with at least K images never repeats one within a batch.
        start, n = tf.gather(cursors, chosen), tf.gather(sizes, chosen)
        offset = start % n
        start = tf.where((offset > 0) & (offset + k > n), start + n - offset, start)
        walk = start[:, None] + tf.range(k, dtype=tf.int64)[None, :]
        size = tf.broadcast_to(n[:, None], [p, k])
        cls = tf.broadcast_to(chosen[:, None], [p, k])
        # Pass number `walk // size` over class `cls` uses its own random permutation.
        seeds = tf.stack([tf.fill([p, k], tf.cast(seed, tf.int64)), cls, walk // size], axis=-1)
        position = tf.raw_ops.RandomIndexShuffle(
            index=tf.reshape(walk % size, [-1]),
            seed=tf.reshape(seeds, [-1, 3]),
            max_index=tf.reshape(size - 1, [-1]),
        )
        indices = tf.gather(grouped, tf.reshape(tf.gather(offsets, cls), [-1]) + position)
        cursors = tf.tensor_scatter_nd_update(cursors, chosen[:, None], start + k)
        element_ids = batch * (p * k) + tf.range(p * k, dtype=tf.int64)
        return cursors, (indices, element_ids)

    return tf.data.Dataset.counter().scan(tf.zeros([num_classes], tf.int64), step)
