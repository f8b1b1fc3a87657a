"""Reading In-shop Clothes Retrieval in its official layout (``Eval/list_eval_partition.txt``).

One class per item id: the training items come first (in file order), then the test items. Test
images are queries or gallery items (``Records.roles``), and evaluation searches the 14,218
queries in the 12,612 gallery images. Boxes come from the optional
``Anno/list_bbox_inshop.txt`` (``x_1 y_1 x_2 y_2``, 0-based pixels, ``x_2`` and ``y_2`` taken
as exclusive). The line checks are those of :mod:`net.annotation_files`.
"""

from __future__ import annotations

import os
from pathlib import Path

from net import annotation_files
from net.records import NO_BOX, ROLE_BOTH, ROLE_GALLERY, ROLE_QUERY, DataError, Records

_INSHOP_HEADER = ["image_name", "item_id", "evaluation_status"]
_INSHOP_BOX_HEADER = ["image_name", "clothes_type", "pose_type", "x_1", "y_1", "x_2", "y_2"]
_INSHOP_ROLES = {"train": ROLE_BOTH, "query": ROLE_QUERY, "gallery": ROLE_GALLERY}


def _counted_file(path: Path, header: list[str], problems: annotation_files.Problems) -> list[str]:
    """The lines after DeepFashion's two header lines (a count, then the column names).

    Raises:
        DataError: the file is missing or its first two lines are not a count and ``header``.
    """
    lines = annotation_files.read_lines(path)
    if not lines or annotation_files.parse_integer(lines[0].strip()) is None:
        raise DataError(
            f"{path}, line 1: expected the number of entries, got "
            f"{lines[0].strip() if lines else 'an empty file'!r}"
        )
    if len(lines) < 2 or lines[1].split() != header:
        raise DataError(
            f"{path}, line 2: expected the header '{' '.join(header)}', got "
            f"{lines[1].strip() if len(lines) > 1 else 'nothing'!r}"
        )
    count = int(lines[0].strip())
    entries = sum(1 for text in lines[2:] if text.strip())
    if count != entries:
        problems.add(path, 1, f"says {count} entries but the file lists {entries}")
    return lines[2:]


def read_inshop(root: str | os.PathLike) -> tuple[Records, list[str]]:
    """Reads In-shop Clothes Retrieval in its official layout.

    Files: ``Eval/list_eval_partition.txt``, ``img/`` and the optional
    ``Anno/list_bbox_inshop.txt``, in ``root`` or its one sub-folder holding them.

    Args:
        root: the data set folder.

    Returns:
        ``(records, problems)``: the usable images, training items' labels first, test images
        marked as queries or gallery items in ``roles``; and one line per problem.

    Raises:
        DataError: the partition file is missing or unreadable or its two header lines are not
            a count and ``image_name item_id evaluation_status``.
    """
    base = annotation_files.base_folder(root, "inshop")
    problems = annotation_files.Problems()
    path = base / "Eval" / "list_eval_partition.txt"
    entries, listed, item_status = _read_partition(path, problems)
    box_path = base / "Anno" / "list_bbox_inshop.txt"
    boxes = _read_boxes(box_path, listed, problems) if box_path.is_file() else {}
    train_items = [item for item, (part, _) in item_status.items() if part == "train"]
    test_items = [item for item, (part, _) in item_status.items() if part == "test"]
    index = {item: i for i, item in enumerate(train_items + test_items)}
    missing = annotation_files.check_image_files(base, "img", listed, problems)
    rows = [
        (name, index[item], boxes.get(name, NO_BOX), role)
        for name, item, role in entries
        if name not in missing
    ]
    if not rows:
        raise DataError(f"{path} lists no usable image")
    return annotation_files.records_from_rows(
        base, rows, tuple(train_items + test_items)
    ), problems.lines


def _read_partition(
    path: Path, problems: annotation_files.Problems
) -> tuple[list[tuple[str, str, int]], dict[str, tuple[Path, int]], dict[str, tuple[str, int]]]:
    """The usable lines of ``Eval/list_eval_partition.txt``.

    Returns:
        ``(entries, listed, item_status)``: ``[(image name, item id, role)]`` in file order;
        ``{image name: (path, line)}`` of those images; ``{item id: ("train" or "test", first
        line)}`` in the order the items first appear.

    Raises:
        DataError: the file is missing or unreadable or its two header lines are wrong.
    """
    lines = _counted_file(path, _INSHOP_HEADER, problems)
    entries = []
    listed: dict[str, tuple[Path, int]] = {}
    item_status: dict[str, tuple[str, int]] = {}
    for number, (name, item, status) in annotation_files.numbered_rows(
        path, lines, 3, problems, first_line=3
    ):
        if status not in _INSHOP_ROLES:
            problems.add(
                path, number, f"evaluation_status {status!r} is not train, query or gallery"
            )
            continue
        if not annotation_files.relative_path(name) or not name.startswith("img/"):
            problems.add(path, number, f"image_name {name!r} is not a path under img/")
            continue
        if name in listed:
            problems.add(path, number, f"image {name} repeats line {listed[name][1]}")
            continue
        part = "train" if status == "train" else "test"
        first = item_status.setdefault(item, (part, number))
        if first[0] != part:
            problems.add(
                path,
                number,
                f"item {item} is a {first[0]} item (line {first[1]}) but this line makes it a "
                f"{part} item: training and test items must be disjoint",
            )
            continue
        listed[name] = (path, number)
        entries.append((name, item, _INSHOP_ROLES[status]))
    return entries, listed, item_status


def _read_boxes(
    box_path: Path, listed: dict[str, tuple[Path, int]], problems: annotation_files.Problems
) -> dict[str, tuple[int, ...]]:
    """``{image name: (x_1, y_1, x_2, y_2)}`` of ``Anno/list_bbox_inshop.txt``.

    Only boxes of images in ``listed`` (the partition file's usable images) are kept; the
    others, and boxes that are not integers or are empty or negative, are problems.

    Raises:
        DataError: the file is unreadable or its two header lines are wrong.
    """
    boxes: dict[str, tuple[int, ...]] = {}
    box_lines = _counted_file(box_path, _INSHOP_BOX_HEADER, problems)
    for number, row in annotation_files.numbered_rows(
        box_path, box_lines, 7, problems, first_line=3
    ):
        values = [annotation_files.parse_integer(v) for v in row[1:]]
        if any(v is None for v in values):
            problems.add(box_path, number, f"expected integers after the image name, got {row[1:]}")
            continue
        x1, y1, x2, y2 = values[2:]
        if x1 < 0 or y1 < 0 or x2 <= x1 or y2 <= y1:
            problems.add(
                box_path,
                number,
                f"box x_1={x1} y_1={y1} x_2={x2} y_2={y2} is empty or negative",
            )
            continue
        if row[0] not in listed:
            problems.add(box_path, number, f"image {row[0]} is not in list_eval_partition.txt")
            continue
        boxes[row[0]] = (x1, y1, x2, y2)
    return boxes
