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
    paths = {name: base / f"{name}.txt" for name in ("classes", "images", "image_class_labels")}
    boxes_path = base / "bounding_boxes.txt"
    class_lines = annotation_files.read_lines(paths["classes"])
    classes: dict[int, str] = {}
    for number, row in annotation_files.numbered_rows(paths["classes"], class_lines, 2, problems):
        class_id = annotation_files.parse_integer(row[0])
        if class_id is None or class_id < 1:
            problems.add(paths["classes"], number, f"class id {row[0]!r} is not a positive integer")
        elif class_id in classes:
            problems.add(paths["classes"], number, f"class id {class_id} is listed twice")
        else:
            classes[class_id] = row[1]
    if not classes:
        raise DataError(f"{paths['classes']} lists no classes")
    if sorted(classes) != list(range(1, max(classes) + 1)):
        gaps = sorted(set(range(1, max(classes) + 1)) - set(classes))[:10]
        problems.add(paths["classes"], None, f"class ids are not 1..{max(classes)}: {gaps} absent")
    class_names = tuple(classes.get(i, f"class {i}") for i in range(1, max(classes) + 1))

    images = _id_table(paths["images"], annotation_files.read_lines(paths["images"]), problems)
    labels = _id_table(
        paths["image_class_labels"],
        annotation_files.read_lines(paths["image_class_labels"]),
        problems,
    )
    boxes = _id_table(boxes_path, annotation_files.read_lines(boxes_path), problems)
    listed: dict[str, tuple[Path, int]] = {}
    rows = []
    for image_id in sorted(images):
        line, fields = images[image_id]
        if len(fields) != 1 or not annotation_files.relative_path(fields[0]):
            problems.add(
                paths["images"], line, f"expected '<image id> <relative path>', got {fields}"
            )
            continue
        name = "images/" + fields[0]
        if name in listed:
            problems.add(paths["images"], line, f"image {fields[0]} repeats line {listed[name][1]}")
            continue
        listed[name] = (paths["images"], line)
        if image_id not in labels:
            problems.add(
                paths["images"],
                line,
                f"image id {image_id} has no line in {paths['image_class_labels'].name}",
            )
            continue
        label_line, label_fields = labels[image_id]
        class_id = (
            annotation_files.parse_integer(label_fields[0]) if len(label_fields) == 1 else None
        )
        if class_id is None or class_id not in classes:
            problems.add(
                paths["image_class_labels"],
                label_line,
                f"class {' '.join(label_fields)!r} of image id {image_id} is not a class id of "
                f"{paths['classes'].name}",
            )
            continue
        folder = fields[0].split("/")[0]
        if "/" in fields[0] and folder != classes[class_id]:
            problems.add(
                paths["image_class_labels"],
                label_line,
                f"image id {image_id} has class {class_id} ({classes[class_id]}) but lies in "
                f"folder {folder}",
            )
            continue
        if image_id not in boxes:
            problems.add(
                paths["images"], line, f"image id {image_id} has no line in {boxes_path.name}"
            )
            continue
        box_line, box_fields = boxes[image_id]
        values = [annotation_files.parse_number(v) for v in box_fields]
        if len(values) != 4 or any(v is None for v in values):
            problems.add(
                boxes_path,
                box_line,
                f"expected '<image id> <x> <y> <width> <height>' numbers, got {box_fields}",
            )
            continue
        x, y, width, height = values
        if width <= 0 or height <= 0 or x < 0 or y < 0:
            problems.add(
                boxes_path,
                box_line,
                f"box x={x} y={y} width={width} height={height} is empty or negative",
            )
            continue
        box = (math.floor(x), math.floor(y), math.ceil(x + width), math.ceil(y + height))
        rows.append((name, class_id - 1, box))
    for table, path in ((labels, paths["image_class_labels"]), (boxes, boxes_path)):
        for image_id in sorted(set(table) - set(images)):
            problems.add(
                path, table[image_id][0], f"image id {image_id} is not in {paths['images'].name}"
            )
    missing = annotation_files.check_image_files(base, "images", listed, problems)
    rows = [row for row in rows if row[0] not in missing]
    return annotation_files.records_from_rows(base, rows, class_names), problems.lines
