"""Reading retrieval data sets into records, splitting them and checking them up front.

A data set is a :class:`Records`: parallel NumPy arrays of absolute image paths, 0-based integer
labels and bounding boxes, plus the class names. Readers exist for a folder-per-class layout and
for a CSV manifest, so a new data set needs no code; :mod:`net.cars196` reads Stanford Cars196 in
both of its published layouts and :mod:`net.layouts` reads CUB-200-2011, Stanford Online Products
and In-shop Clothes in their official layouts. :func:`metric_learning_split` applies the
metric-learning protocol (train and test classes disjoint, an optional validation split held out
of the training classes), and :func:`validate_records` finds missing, empty, truncated or
undecodable images, bounding boxes outside their image and classes with a single image before
training starts, reporting all of them in one :class:`DataError`.

Bounding boxes are stored everywhere in this package as 0-based, half-open pixel coordinates
``[x1, y1, x2, y2)``: the box covers columns ``x1 .. x2 - 1`` and rows ``y1 .. y2 - 1``, so
``image[y1:y2, x1:x2]`` is the crop. Cars196's 1-based inclusive boxes ``(X1, Y1, X2, Y2)``
become ``(X1 - 1, Y1 - 1, X2, Y2)``. A row of four ``-1`` means "no box": the whole image.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from net import layouts
from net.cars196 import read_cars196 as read_cars196  # re-exported (Cars196 lives there)
from net.record_checks import (  # noqa: F401 (re-exported: the checks live there)
    LISTED_PROBLEMS,
    check_image,
    report_problems,
    tensorflow_reason,
    undecodable_error,
    undecodable_images,
    validate_records,
)
from net.records import IMAGE_SUFFIXES, NO_BOX, DataError, Records, Split, is_image_name
from net.records import ROLE_BOTH as ROLE_BOTH  # re-exported (the roles live in net.records)
from net.records import ROLE_GALLERY as ROLE_GALLERY
from net.records import ROLE_QUERY as ROLE_QUERY

#: Data set layouts understood by :func:`read_dataset` (``auto`` detects the others).
LAYOUTS = ("auto", "cars196", "cub200", "sop", "inshop", "image_folder", "csv")


def class_id(label: int, class_names: Sequence[str]) -> str:
    """The data set's own number of a class, for people to read (figures, projector metadata).

    Labels count classes from 0 in the order of ``class_names``; data sets number them from 1
    (Cars196's annotation files, the sorted class folders of a folder data set), so label 15 is
    class "16". A class whose name is itself an integer (a CSV manifest with integer labels) is
    numbered by that integer.

    Args:
        label: a 0-based label, an index into ``class_names``.
        class_names: the names of the data set's classes.
    """
    name = str(class_names[int(label)]).strip()
    if name.lstrip("+-").isdigit():
        return str(int(name))
    return str(int(label) + 1)


# --------------------------------------------------------------------------------------------
# Generic layouts
# --------------------------------------------------------------------------------------------


def _is_image(path: Path) -> bool:
    return is_image_name(path.name) and path.is_file()


def read_image_folder(root: str | os.PathLike) -> Records:
    """Reads a folder-per-class layout: ``root/<class name>/**/<image>``.

    Classes are the sub-folders of ``root`` in sorted order (label = position); images are the
    files with a suffix in :data:`IMAGE_SUFFIXES` (any case) anywhere below a class folder, in
    sorted order. There are no bounding boxes (every box is ``-1``: the whole image).

    Args:
        root: the data set folder.

    Returns:
        Records of all images.

    Raises:
        DataError: if ``root`` is not a folder or holds no class folder with images.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"Image folder not found: {root}")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths: list[str] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(p for p in class_dir.rglob("*") if _is_image(p))
        paths.extend(str(p.resolve()) for p in files)
        labels.extend([label] * len(files))
    if not paths:
        raise DataError(
            f"No images in {root}: expected one sub-folder per class holding files ending in "
            f"{', '.join(IMAGE_SUFFIXES)}"
        )
    return Records(
        paths=np.array(paths, dtype=str),
        labels=np.array(labels, dtype=np.int64),
        bboxes=np.full((len(paths), 4), -1, dtype=np.int64),
        class_names=tuple(p.name for p in class_dirs),
    )


def _parse_int(text: str, path: Path, line: int, column: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DataError(f"{path}, line {line}: {column} {text!r} is not an integer") from None


def read_csv_manifest(path: str | os.PathLike) -> Records:
    """Reads a CSV manifest with rows ``path,label[,x1,y1,x2,y2]``.

    - ``path`` is relative to the CSV file's folder (or absolute).
    - ``label`` is a class name or an integer. When every label is an integer, the distinct
      integers in increasing order become labels ``0, 1, ...`` (named by the integers);
      otherwise the distinct names in sorted order do.
    - The box, when given, is 0-based half-open ``[x1, y1, x2, y2)`` in pixels; a row without
      one (or with four empty fields) uses the whole image.
    - An optional header row whose first field is ``path`` is skipped; blank lines are ignored.

    Args:
        path: the CSV file.

    Returns:
        Records in file order.

    Raises:
        DataError: naming the file and line for a missing file, a malformed row, a non-integer
            box or an empty manifest.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"CSV manifest not found: {path}")
    rows: list[tuple[int, list[str]]] = []
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            for line, row in enumerate(csv.reader(handle), start=1):
                row = [field.strip() for field in row]
                if not row or not any(row):
                    continue
                if not rows and row[0].lower() == "path":
                    continue
                rows.append((line, row))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"Cannot read CSV manifest {path}: {error}") from error
    if not rows:
        raise DataError(f"CSV manifest {path} lists no images")
    files, raw_labels, boxes = [], [], []
    for line, row in rows:
        if len(row) not in (2, 6):
            raise DataError(
                f"{path}, line {line}: expected 'path,label' or 'path,label,x1,y1,x2,y2', "
                f"got {len(row)} fields: {row}"
            )
        if not row[0] or not row[1]:
            raise DataError(f"{path}, line {line}: empty path or label: {row}")
        files.append(str((path.parent / row[0]).resolve()))
        raw_labels.append(row[1])
        if len(row) == 2 or not any(row[2:]):
            boxes.append(NO_BOX)
        else:
            boxes.append(
                tuple(
                    _parse_int(v, path, line, c)
                    for v, c in zip(row[2:], ("x1", "y1", "x2", "y2"), strict=True)
                )
            )
    try:
        keys: list[Any] = [int(label) for label in raw_labels]
    except ValueError:
        keys = raw_labels
    names = sorted(set(keys))
    index = {name: i for i, name in enumerate(names)}
    return Records(
        paths=np.array(files, dtype=str),
        labels=np.array([index[key] for key in keys], dtype=np.int64),
        bboxes=np.array(boxes, dtype=np.int64),
        class_names=tuple(str(name) for name in names),
    )


def read_dataset(
    layout: str,
    root: str | os.PathLike,
    *,
    cars196_layout: str = "auto",
    validate: bool = True,
    skip_bad: bool = False,
    full_decode: bool = False,
) -> Records:
    """Reads a data set by layout name (as written in the configuration) and checks it.

    Args:
        layout: ``"auto"`` (detected, see :func:`net.layouts.detect_layout`), ``"cars196"``
            (``root`` is the Cars196 folder, see :func:`read_cars196`), ``"cub200"``,
            ``"sop"``, ``"inshop"`` (official layouts, see :mod:`net.layouts`),
            ``"image_folder"`` (see :func:`read_image_folder`) or ``"csv"`` (``root`` is the
            CSV file, or a folder holding ``manifest.csv``; see :func:`read_csv_manifest`).
        root: where the data set lives.
        cars196_layout: ``"auto"``, ``"annos"`` or ``"devkit"``, for ``layout="cars196"``.
        validate: run :func:`validate_records` on the result.
        skip_bad: drop bad images and annotation lines (see :func:`validate_records`).
        full_decode: passed to :func:`validate_records`.

    Returns:
        Records of the whole data set.

    Raises:
        ValueError: for an unknown layout.
        DataError: for unreadable annotations, or bad annotation lines or (when validating)
            bad images, all listed in one message (unless ``skip_bad``).
    """
    if layout == "auto":
        layout = layouts.detect_layout(root)
    problems: list[str] = []
    if layout == "cars196":
        records = read_cars196(root, layout=cars196_layout)
    elif layout in layouts.READERS:
        records, problems = layouts.READERS[layout](root)
    elif layout == "image_folder":
        records = read_image_folder(root)
    elif layout == "csv":
        manifest = Path(root)
        records = read_csv_manifest(manifest / "manifest.csv" if manifest.is_dir() else manifest)
    else:
        raise ValueError(f"Unknown data set layout {layout!r}; use one of {LAYOUTS}")
    if not validate:
        report_problems(problems, [], total=len(records), skip_bad=skip_bad)
        return records
    return validate_records(
        records, skip_bad=skip_bad, full_decode=full_decode, annotation_problems=problems
    )


# --------------------------------------------------------------------------------------------
# Split
# --------------------------------------------------------------------------------------------


def metric_learning_split(
    records: Records, *, num_train_classes: int | None = None, num_val_classes: int = 0
) -> Split:
    """Splits a data set by class, following the metric-learning protocol.

    Classes (by label, i.e. by their position in ``class_names``) ``0 .. num_train_classes - 1``
    are the training classes and the rest the test classes; for Cars196 that is classes 1-98
    (8,054 images) for training and 99-196 (8,131 images) for testing. The last
    ``num_val_classes`` training classes are held out as a validation split for model
    selection, so nothing is ever chosen on the test classes. The split is deterministic. The
    training records are renumbered densely (:meth:`Records.dense`): their labels are exactly
    ``0 .. C - 1`` for the C training classes that have images, so they index a classifier's
    logits directly even when skipped images emptied a class (which is then left out; the
    split's class positions are those of the whole data set, so the other classes stay where
    they were). Validation and test records keep the data set's labels.

    Args:
        records: the whole data set.
        num_train_classes: number of training classes (validation included); defaults to half
            of ``len(records.class_names)`` rounded down (98 for Cars196).
        num_val_classes: number of training classes held out for validation.

    Returns:
        A :class:`Split` with class-disjoint ``train``, ``val`` and ``test`` records.

    Raises:
        ValueError: if the class counts leave a split without classes.
    """
    total = len(records.class_names)
    if num_train_classes is None:
        num_train_classes = total // 2
    if not 0 < num_train_classes < total:
        raise ValueError(
            f"num_train_classes must lie in [1, {total - 1}] for {total} classes, "
            f"got {num_train_classes}"
        )
    if not 0 <= num_val_classes < num_train_classes:
        raise ValueError(
            f"num_val_classes must lie in [0, {num_train_classes - 1}] "
            f"(num_train_classes={num_train_classes}), got {num_val_classes}"
        )
    first_val = num_train_classes - num_val_classes
    labels = records.labels
    return Split(
        train=records.subset(labels < first_val).dense(),
        val=records.subset((labels >= first_val) & (labels < num_train_classes)),
        test=records.subset(labels >= num_train_classes),
    )
