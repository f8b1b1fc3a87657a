"""The types of a data set: :class:`Records` (images, labels, boxes, roles), :class:`Split`.

Every reader (:mod:`net.data`, :mod:`net.layouts`) returns :class:`Records`; nothing here reads
files, so both build on this module without importing each other.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np

#: Bounding box value meaning "no box, use the whole image".
NO_BOX = (-1, -1, -1, -1)

#: File name suffixes of images (formats ``tf.io.decode_image`` reads), compared lower-case.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")

#: Values of :attr:`Records.roles`: an image is a query and a gallery item at once (the
#: standard protocol), only a query, or only a gallery item (In-shop's test split).
ROLE_BOTH, ROLE_QUERY, ROLE_GALLERY = 0, 1, 2


class DataError(ValueError):
    """A data set cannot be used as it is: missing or bad files, bad annotations."""


@dataclasses.dataclass(frozen=True, eq=False)
class Records:
    """The images of a data set (or of one of its splits), as parallel arrays.

    Attributes:
        paths: (N,) str, absolute image paths.
        labels: (N,) int64, 0-based class labels, indices into ``class_names``. Labels number
            the classes of the whole data set, so a split keeps the labels of its parent.
        bboxes: (N, 4) int64, 0-based half-open ``[x1, y1, x2, y2)`` pixel boxes; a row of
            ``-1`` means the whole image.
        class_names: names of all classes of the whole data set, indexed by label.
        roles: (N,) int8, each image's part in retrieval evaluation: :data:`ROLE_BOTH` (query
            and gallery at once; the default), :data:`ROLE_QUERY` or :data:`ROLE_GALLERY`.
    """

    paths: np.ndarray
    labels: np.ndarray
    bboxes: np.ndarray
    class_names: tuple[str, ...]
    roles: np.ndarray | None = None

    def __post_init__(self) -> None:
        """Normalises dtypes and checks that the arrays line up.

        Raises:
            ValueError: if the arrays disagree in length, a box is not 4 numbers, or a label
                does not index ``class_names``.
        """
        paths = np.asarray(self.paths, dtype=str).reshape(-1)
        labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        bboxes = np.asarray(self.bboxes, dtype=np.int64)
        if bboxes.size == 0:
            bboxes = bboxes.reshape(0, 4)
        names = tuple(str(name) for name in self.class_names)
        roles = np.zeros(len(paths), np.int8) if self.roles is None else self.roles
        roles = np.asarray(roles, dtype=np.int8).reshape(-1)
        if len(roles) != len(paths) or not np.isin(roles, (0, 1, 2)).all():
            raise ValueError(
                f"Records.roles must hold one of 0, 1, 2 per record ({len(paths)}), got "
                f"{len(roles)} values"
            )
        if bboxes.ndim != 2 or bboxes.shape[1] != 4:
            raise ValueError(f"Records.bboxes must have shape (N, 4), got {bboxes.shape}")
        if not len(paths) == len(labels) == len(bboxes):
            raise ValueError(
                f"Records arrays differ in length: {len(paths)} paths, {len(labels)} labels, "
                f"{len(bboxes)} bboxes"
            )
        if len(labels) and (labels.min() < 0 or labels.max() >= len(names)):
            raise ValueError(
                f"Records labels must lie in [0, {len(names)}) (one per class name), "
                f"got range [{labels.min()}, {labels.max()}]"
            )
        object.__setattr__(self, "paths", paths)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "bboxes", bboxes)
        object.__setattr__(self, "class_names", names)
        object.__setattr__(self, "roles", roles)

    def __len__(self) -> int:
        """Returns the number of images."""
        return len(self.paths)

    @property
    def classes(self) -> np.ndarray:
        """(C,) int64: the sorted distinct labels present in these records."""
        return np.unique(self.labels)

    @property
    def num_classes(self) -> int:
        """The number of distinct labels present in these records."""
        return len(self.classes)

    @property
    def has_query_gallery(self) -> bool:
        """True when some images are only queries or only gallery items (In-shop's test)."""
        return bool((self.roles != ROLE_BOTH).any())

    def queries(self) -> Records:
        """The records searched with: every image but the gallery-only ones."""
        return self.subset(self.roles != ROLE_GALLERY)

    def gallery(self) -> Records:
        """The records searched in: every image but the query-only ones."""
        return self.subset(self.roles != ROLE_QUERY)

    def subset(self, mask_or_indices: np.ndarray | Sequence[int] | Sequence[bool]) -> Records:
        """Returns the records selected by a boolean mask or an array of indices.

        Args:
            mask_or_indices: (N,) bool mask, or int indices (any order, repeats allowed).

        Returns:
            New Records with the same ``class_names`` and unchanged labels.

        Raises:
            ValueError: if a boolean mask does not have one entry per record.
        """
        selection = np.asarray(mask_or_indices)
        if selection.dtype == bool:
            if selection.shape != (len(self),):
                raise ValueError(
                    f"Boolean mask of shape {selection.shape} does not match {len(self)} records"
                )
        else:
            selection = selection.astype(np.int64).reshape(-1)
        return Records(
            paths=self.paths[selection],
            labels=self.labels[selection],
            bboxes=self.bboxes[selection],
            class_names=self.class_names,
            roles=self.roles[selection],
        )

    def dense(self) -> Records:
        """The same images with labels renumbered ``0 .. C - 1`` over the classes present.

        ``class_names`` keeps only the present classes, in their order, so every image keeps
        its class name; labels index a classifier's C logits directly. Records whose labels
        already are ``0 .. C - 1`` are returned as they are.
        """
        present = self.classes
        if np.array_equal(present, np.arange(len(present))):
            return self
        return Records(
            paths=self.paths,
            labels=np.searchsorted(present, self.labels),
            bboxes=self.bboxes,
            class_names=tuple(self.class_names[i] for i in present),
            roles=self.roles,
        )


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
    """The metric-learning split of a data set: three class-disjoint Records.

    Attributes:
        train: images of the training classes, labels dense (``0 .. C - 1`` over the C classes
            it holds, indexing its own ``class_names``; see :meth:`Records.dense`).
        val: images of the validation classes, held out of the training classes (may be empty).
        test: images of the test classes (query set and gallery at once).
    """

    train: Records
    val: Records
    test: Records


def is_image_name(name: str) -> bool:
    """Whether a file name is an image: a suffix in :data:`IMAGE_SUFFIXES`, not hidden.

    The suffix is compared in any case; a name starting with a dot is hidden.
    """
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES
