"""Reading Stanford Online Products in its official layout (``Ebay_train.txt``, ``Ebay_test.txt``).

Label = ``class_id`` - 1: ``Ebay_train.txt`` holds classes 1-11,318 (59,551 images), the
training classes of the metric-learning protocol, and ``Ebay_test.txt`` 11,319-22,634 (60,502).
No boxes. The line checks are those of :mod:`net.annotation_files`.
"""

from __future__ import annotations

import os
from pathlib import Path

from net import annotation_files
from net.records import NO_BOX, DataError, Records

_SOP_HEADER = ["image_id", "class_id", "super_class_id", "path"]


def read_sop(root: str | os.PathLike) -> tuple[Records, list[str]]:
    """Reads Stanford Online Products in its official layout.

    Files: ``Ebay_train.txt``, ``Ebay_test.txt`` (header ``image_id class_id super_class_id
    path``) and the category folders, in ``root`` or its ``Stanford_Online_Products/`` folder.

    Class names are ``<category>/<class_id>`` (the category is the image's folder without its
    ``_final`` suffix).

    Args:
        root: the data set folder.

    Returns:
        ``(records, problems)``: the usable images (training file first) and one line per
        problem.

    Raises:
        DataError: a list file is missing or unreadable or has another header.
    """
    base = annotation_files.base_folder(root, "sop")
    problems = annotation_files.Problems()
    rows = []
    listed: dict[str, tuple[Path, int]] = {}
    class_files: dict[int, tuple[Path, int]] = {}
    for split in ("train", "test"):
        path = base / f"Ebay_{split}.txt"
        rows += _read_split(path, listed, class_files, problems)
    if not rows:
        raise DataError(f"{base / 'Ebay_train.txt'} and Ebay_test.txt list no usable image")
    names: dict[int, str] = {}
    for name, label, _ in rows:
        category = name.split("/")[0].removesuffix("_final")
        names.setdefault(label + 1, f"{category}/{label + 1}")
    missing = annotation_files.check_image_files(base, "", listed, problems)
    rows = [row for row in rows if row[0] not in missing]
    class_names = tuple(names.get(i, str(i)) for i in range(1, max(names) + 1))
    return annotation_files.records_from_rows(base, rows, class_names), problems.lines


def _read_split(
    path: Path,
    listed: dict[str, tuple[Path, int]],
    class_files: dict[int, tuple[Path, int]],
    problems: annotation_files.Problems,
) -> list[tuple[str, int, tuple[int, int, int, int]]]:
    """The usable lines of one list file (``Ebay_train.txt`` or ``Ebay_test.txt``).

    Args:
        path: the list file.
        listed: ``{image path: (list file, line)}`` of the images read so far; extended.
        class_files: ``{class_id: (list file, first line)}`` so far (a class belongs to one
            file); extended.
        problems: where the problems of each line go.

    Returns:
        ``[(image path, class_id - 1, no box)]`` in file order.

    Raises:
        DataError: the file is missing or unreadable or has another header.
    """
    lines = annotation_files.read_lines(path)
    if not lines or lines[0].split() != _SOP_HEADER:
        raise DataError(
            f"{path}, line 1: expected the header '{' '.join(_SOP_HEADER)}', got "
            f"{lines[0].strip() if lines else 'an empty file'!r}"
        )
    rows = []
    ids: dict[int, int] = {}
    for number, row in annotation_files.numbered_rows(path, lines[1:], 4, problems, first_line=2):
        image_id, class_id, super_id = [annotation_files.parse_integer(v) for v in row[:3]]
        if image_id is None or class_id is None or super_id is None:
            problems.add(
                path,
                number,
                f"image_id, class_id and super_class_id must be integers, got {row[:3]}",
            )
            continue
        if class_id < 1:
            problems.add(path, number, f"class_id {class_id} is not positive")
            continue
        if image_id in ids:
            problems.add(path, number, f"image_id {image_id} repeats line {ids[image_id]}")
            continue
        ids[image_id] = number
        name = row[3]
        if not annotation_files.relative_path(name) or "/" not in name:
            problems.add(path, number, f"path {name!r} is not '<category folder>/<file>'")
            continue
        if name in listed:
            source, line = listed[name]
            problems.add(
                path, number, f"image {name} is listed twice (also {source.name}, line {line})"
            )
            continue
        first = class_files.setdefault(class_id, (path, number))
        if first[0] is not path:
            problems.add(
                path,
                number,
                f"class_id {class_id} is also a class of {first[0].name} (line {first[1]}): "
                "training and test classes must be disjoint",
            )
            continue
        listed[name] = (path, number)
        rows.append((name, class_id - 1, NO_BOX))
    return rows
