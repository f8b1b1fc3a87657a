"""Reading CUB-200-2011 in its official layout (``images.txt``, ``image_class_labels.txt``, ...).

Label = class number - 1, so classes 1-100 are the training classes (5,864 images) and 101-200
the test classes (5,924) of the metric-learning protocol. ``train_test_split.txt`` is the
classification split and is not read. Boxes (``x y width height``, floats, 0-based pixels)
become ``[floor(x), floor(y), ceil(x + width), ceil(y + height))``. The line checks are those of
:mod:`net.annotation_files`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from net import annotation_files
from net.records import DataError, Records


def _id_table(
    path: Path, lines: list[str], problems: annotation_files.Problems
) -> dict[int, tuple[int, list[str]]]:
    """``{id: (line, other fields)}`` of a CUB ``<id> <value...>`` file (two or five fields)."""
    table: dict[int, tuple[int, list[str]]] = {}
    for number, text in enumerate(lines, start=1):
        row = text.split()
        if not row:
            continue
        key = annotation_files.parse_integer(row[0])
        if key is None:
            problems.add(path, number, f"image id {row[0]!r} is not an integer")
            continue
        if key in table:
            problems.add(path, number, f"image id {key} repeats line {table[key][0]}")
            continue
        table[key] = (number, row[1:])
    return table


def read_cub200(root: str | os.PathLike) -> tuple[Records, list[str]]:
    """Reads CUB-200-2011 in its official layout.

    Files: ``images.txt``, ``image_class_labels.txt``, ``bounding_boxes.txt``, ``classes.txt``
    and ``images/``, in ``root`` or its ``CUB_200_2011/`` folder.

    Args:
        root: the data set folder.

    Returns:
        ``(records, problems)``: the usable images in id order and one line per problem.

    Raises:
        DataError: an annotation file is missing or unreadable, or ``images/`` is missing.
    """
    base = annotation_files.base_folder(root, "cub200")
    problems = annotation_files.Problems()
    paths = {name: base / f"{name}.txt" for name in _FILES}
    classes = _read_classes(paths["classes"], problems)
    class_names = tuple(classes.get(i, f"class {i}") for i in range(1, max(classes) + 1))
    tables = _Tables(
        paths,
        classes,
        *(
            _id_table(paths[name], annotation_files.read_lines(paths[name]), problems)
            for name in ("images", "image_class_labels", "bounding_boxes")
        ),
    )
    listed: dict[str, tuple[Path, int]] = {}
    rows = []
    for image_id in sorted(tables.images):
        row = _image_row(image_id, tables, listed, problems)
        if row is not None:
            rows.append(row)
    for table, name in ((tables.labels, "image_class_labels"), (tables.boxes, "bounding_boxes")):
        for image_id in sorted(set(table) - set(tables.images)):
            problems.add(
                paths[name], table[image_id][0], f"image id {image_id} is not in images.txt"
            )
    missing = annotation_files.check_image_files(base, "images", listed, problems)
    rows = [row for row in rows if row[0] not in missing]
    return annotation_files.records_from_rows(base, rows, class_names), problems.lines


_FILES = ("classes", "images", "image_class_labels", "bounding_boxes")


@dataclass(frozen=True)
class _Tables:
    """The four annotation files of one CUB-200-2011 folder, parsed.

    Attributes:
        paths: ``{file name without .txt: path}`` for the names of ``_FILES``.
        classes: ``{class id: class name}`` of ``classes.txt``.
        images, labels, boxes: ``{image id: (line, other fields)}`` of ``images.txt``,
            ``image_class_labels.txt`` and ``bounding_boxes.txt``.
    """

    paths: dict[str, Path]
    classes: dict[int, str]
    images: dict[int, tuple[int, list[str]]]
    labels: dict[int, tuple[int, list[str]]]
    boxes: dict[int, tuple[int, list[str]]]


def _read_classes(path: Path, problems: annotation_files.Problems) -> dict[int, str]:
    """``{class id: class name}`` of ``classes.txt`` (ids should be 1..number of classes).

    Raises:
        DataError: the file is missing or unreadable, or lists no class.
    """
    lines = annotation_files.read_lines(path)
    classes: dict[int, str] = {}
    for number, row in annotation_files.numbered_rows(path, lines, 2, problems):
        class_id = annotation_files.parse_integer(row[0])
        if class_id is None or class_id < 1:
            problems.add(path, number, f"class id {row[0]!r} is not a positive integer")
        elif class_id in classes:
            problems.add(path, number, f"class id {class_id} is listed twice")
        else:
            classes[class_id] = row[1]
    if not classes:
        raise DataError(f"{path} lists no classes")
    if sorted(classes) != list(range(1, max(classes) + 1)):
        gaps = sorted(set(range(1, max(classes) + 1)) - set(classes))[:10]
        problems.add(path, None, f"class ids are not 1..{max(classes)}: {gaps} absent")
    return classes


def _image_row(
    image_id: int,
    tables: _Tables,
    listed: dict[str, tuple[Path, int]],
    problems: annotation_files.Problems,
) -> tuple[str, int, tuple[int, int, int, int]] | None:
    """``(path under the base folder, label, box)`` of one line of ``images.txt``.

    Adds the image to ``listed`` once its path is valid and new. Returns None (after adding the
    problem) when its path, class or box is not usable.
    """
    images_path = tables.paths["images"]
    line, fields = tables.images[image_id]
    if len(fields) != 1 or not annotation_files.relative_path(fields[0]):
        problems.add(images_path, line, f"expected '<image id> <relative path>', got {fields}")
        return None
    name = "images/" + fields[0]
    if name in listed:
        problems.add(images_path, line, f"image {fields[0]} repeats line {listed[name][1]}")
        return None
    listed[name] = (images_path, line)
    class_id = _image_class(image_id, line, fields[0], tables, problems)
    if class_id is None:
        return None
    box = _image_box(image_id, line, tables, problems)
    if box is None:
        return None
    return name, class_id - 1, box


def _image_class(
    image_id: int, line: int, image: str, tables: _Tables, problems: annotation_files.Problems
) -> int | None:
    """The class id of an image (``image_class_labels.txt``), checked.

    The id must be one of ``classes.txt`` and match the image's class folder. Returns None
    (after adding the problem) when it is not usable.
    """
    paths = tables.paths
    if image_id not in tables.labels:
        problems.add(
            paths["images"], line, f"image id {image_id} has no line in image_class_labels.txt"
        )
        return None
    label_line, label_fields = tables.labels[image_id]
    class_id = annotation_files.parse_integer(label_fields[0]) if len(label_fields) == 1 else None
    if class_id is None or class_id not in tables.classes:
        problems.add(
            paths["image_class_labels"],
            label_line,
            f"class {' '.join(label_fields)!r} of image id {image_id} is not a class id of "
            "classes.txt",
        )
        return None
    folder = image.split("/")[0]
    if "/" in image and folder != tables.classes[class_id]:
        problems.add(
            paths["image_class_labels"],
            label_line,
            f"image id {image_id} has class {class_id} ({tables.classes[class_id]}) but lies in "
            f"folder {folder}",
        )
        return None
    return class_id


def _image_box(
    image_id: int, line: int, tables: _Tables, problems: annotation_files.Problems
) -> tuple[int, int, int, int] | None:
    """An image's box (``bounding_boxes.txt``) as half-open integer pixels ``(x1, y1, x2, y2)``.

    Returns None (after adding the problem) when it is missing, not four numbers, empty or
    negative.
    """
    boxes_path = tables.paths["bounding_boxes"]
    if image_id not in tables.boxes:
        problems.add(
            tables.paths["images"], line, f"image id {image_id} has no line in {boxes_path.name}"
        )
        return None
    box_line, box_fields = tables.boxes[image_id]
    values = [annotation_files.parse_number(v) for v in box_fields]
    if len(values) != 4 or any(v is None for v in values):
        problems.add(
            boxes_path,
            box_line,
            f"expected '<image id> <x> <y> <width> <height>' numbers, got {box_fields}",
        )
        return None
    x, y, width, height = values
    if width <= 0 or height <= 0 or x < 0 or y < 0:
        problems.add(
            boxes_path,
            box_line,
            f"box x={x} y={y} width={width} height={height} is empty or negative",
        )
        return None
    return math.floor(x), math.floor(y), math.ceil(x + width), math.ceil(y + height)
