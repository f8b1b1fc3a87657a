"""Readers of the CGD paper's other benchmarks in their official layouts, and layout detection.

Each reader parses the data set's own text files into :class:`net.data.Records`, checking them
line by line on the way: a malformed line, a number that is not one, an id that does not match
between files, a duplicate, an image listed but missing from its folder or present but not
listed. Problems that leave a record unusable drop that record and are returned as one line
each (``file, line N: ...``), so that :func:`net.data.read_dataset` reports them together with
the image checks of :func:`net.data.validate_records` in one message, or skips them with
``skip_bad``. A missing or unreadable annotation file, or one whose header is wrong, raises
:class:`net.data.DataError` at once.

Labels follow each data set's metric-learning protocol, training classes first, so that
:func:`net.data.metric_learning_split` with the profile's ``num_train_classes`` splits them:

- CUB-200-2011 (``cub200``): label = class number - 1; classes 1-100 train (5,864 images),
  101-200 test (5,924). ``train_test_split.txt`` is the classification split and is not read.
  Boxes (``x y width height``, floats, 0-based pixels) become ``[floor(x), floor(y),
  ceil(x + width), ceil(y + height))``.
- Stanford Online Products (``sop``): label = ``class_id`` - 1; ``Ebay_train.txt`` holds
  classes 1-11,318 (59,551 images), ``Ebay_test.txt`` 11,319-22,634 (60,502). No boxes.
- In-shop Clothes (``inshop``): one class per item id; the training items come first (in file
  order), then the test items. Test images are queries or gallery items (``Records.roles``),
  and evaluation searches the 14,218 queries in the 12,612 gallery images. Boxes from the
  optional ``Anno/list_bbox_inshop.txt`` (``x_1 y_1 x_2 y_2``, 0-based pixels, ``x_2`` and
  ``y_2`` taken as exclusive).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from net.records import (
    NO_BOX,
    ROLE_BOTH,
    ROLE_GALLERY,
    ROLE_QUERY,
    DataError,
    Records,
    Split,
    is_image_name,
)

#: The text-file layouts read here.
TEXT_LAYOUTS = ("cub200", "sop", "inshop")

#: What each layout's official split holds: ``{split: (classes, images)}`` (-1: not published).
EXPECTED_COUNTS: dict[str, dict[str, tuple[int, int]]] = {
    "cars196": {"train": (98, 8054), "test": (98, 8131)},
    "cub200": {"train": (100, 5864), "test": (100, 5924)},
    "sop": {"train": (11318, 59551), "test": (11316, 60502)},
    "inshop": {
        "train": (3997, 25882),
        "test": (3985, 26830),
        "query": (-1, 14218),
        "gallery": (-1, 12612),
    },
}

#: The file that marks each layout, relative to its base folder.
_MARKERS = {
    "cub200": "images.txt",
    "sop": "Ebay_train.txt",
    "inshop": "Eval/list_eval_partition.txt",
}

#: What each layout's folder should hold, for the message when it is missing.
_ARCHIVES = {
    "cub200": "CUB_200_2011/ with images.txt and images/",
    "sop": "Stanford_Online_Products/ with Ebay_train.txt and Ebay_test.txt",
    "inshop": "Eval/list_eval_partition.txt and img/",
}


class _Problems:
    """Collects the problems of one reader (one line each)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, path: Path, line: int | None, message: str) -> None:
        where = f"{path}, line {line}" if line is not None else f"{path}"
        self.lines.append(f"{where}: {message}")


def base_folder(root: str | os.PathLike, layout: str) -> Path:
    """The folder holding a layout's files: ``root`` itself or its one sub-folder that does.

    The official archives unpack into a folder of their own (``CUB_200_2011/``,
    ``Stanford_Online_Products/``, ``In-shop Clothes Retrieval Benchmark/``), so ``data.root``
    may name either that folder or the folder it was unpacked in.

    Args:
        root: ``data.root``.
        layout: ``cub200``, ``sop`` or ``inshop``.

    Returns:
        The base folder (``root`` when no sub-folder holds the marker file either).

    Raises:
        DataError: ``root`` is not a folder.
    """
    root = Path(root)
    marker = _MARKERS[layout]
    if not root.is_dir():
        raise DataError(
            f"Data set folder not found: {root} (expected {_ARCHIVES[layout]}; see the README, "
            "'Obtaining and placing the data sets')"
        )
    if (root / marker).is_file():
        return root
    candidates = sorted(p for p in root.iterdir() if p.is_dir() and (p / marker).is_file())
    return candidates[0] if len(candidates) == 1 else root


def detect_layout(root: str | os.PathLike) -> str:
    """Names the layout of the data set at ``root`` (``data.layout: auto``).

    Args:
        root: a data set folder, or a CSV manifest.

    Returns:
        ``cars196``, ``cub200``, ``sop``, ``inshop``, ``csv`` or ``image_folder``.

    Raises:
        DataError: ``root`` does not exist.
    """
    root = Path(root)
    if root.is_file() and root.suffix.lower() == ".csv":
        return "csv"
    if not root.is_dir():
        raise DataError(f"Data set not found: {root}")
    if any(
        (root / name).is_file()
        for name in ("cars_annos.mat", "devkit/cars_train_annos.mat", "cars_train_annos.mat")
    ):
        return "cars196"
    for layout, marker in _MARKERS.items():
        if (base_folder(root, layout) / marker).is_file():
            return layout
    if (root / "manifest.csv").is_file():
        return "csv"
    return "image_folder"


def _read_lines(path: Path) -> list[str]:
    """The lines of an annotation file (without line ends).

    Raises:
        DataError: naming the file when it is missing or not UTF-8 text.
    """
    if not path.is_file():
        raise DataError(f"Annotation file not found: {path}")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"Cannot read annotation file {path}: {error}") from error


def _numbered_rows(
    path: Path, lines: list[str], fields: int, problems: _Problems, first_line: int = 1
) -> Iterable[tuple[int, list[str]]]:
    """Yields ``(line number, fields)`` of the non-blank lines with ``fields`` fields."""
    for number, text in enumerate(lines, start=first_line):
        row = text.split()
        if not row:
            continue
        if len(row) != fields:
            problems.add(
                path, number, f"expected {fields} fields, got {len(row)}: {text.strip()!r}"
            )
            continue
        yield number, row


def _integer(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _id_table(
    path: Path, lines: list[str], problems: _Problems
) -> dict[int, tuple[int, list[str]]]:
    """``{id: (line, other fields)}`` of a CUB ``<id> <value...>`` file (two or five fields)."""
    table: dict[int, tuple[int, list[str]]] = {}
    for number, text in enumerate(lines, start=1):
        row = text.split()
        if not row:
            continue
        key = _integer(row[0])
        if key is None:
            problems.add(path, number, f"image id {row[0]!r} is not an integer")
            continue
        if key in table:
            problems.add(path, number, f"image id {key} repeats line {table[key][0]}")
            continue
        table[key] = (number, row[1:])
    return table


def _listed_files(folder: Path) -> set[str]:
    """Relative POSIX paths of the image files under ``folder`` (recursively).

    Plain strings and ``os.scandir`` (no ``pathlib`` per file): SOP has 120,053 images.
    """
    found: set[str] = set()
    stack = [("", os.fspath(folder))]
    while stack:
        prefix, current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=True):
                stack.append((f"{prefix}{entry.name}/", entry.path))
            elif is_image_name(entry.name):
                found.add(prefix + entry.name)
    return found


def _check_image_files(
    base: Path,
    folder: str,
    listed: dict[str, tuple[Path, int]],
    problems: _Problems,
) -> set[str]:
    """Compares the listed images with the files under ``base / folder``.

    Args:
        base: the data set's base folder; listed paths are relative to it.
        folder: the images' folder under ``base`` ("" for the category folders of SOP).
        listed: ``{relative path: (annotation file, line)}``.
        problems: where missing and unlisted images are reported.

    Returns:
        The listed paths whose file is missing.
    """
    root = base / folder if folder else base
    if not root.is_dir():
        raise DataError(f"Image folder not found: {root}")
    present = _listed_files(root)
    prefix = f"{folder}/" if folder else ""
    present = {prefix + name for name in present}
    missing = sorted(set(listed) - present, key=lambda name: listed[name][1])
    for name in missing:
        source, line = listed[name]
        problems.add(source, line, f"image {base / name} not found")
    extra = sorted(present - set(listed))
    if extra:
        files = sorted({str(source) for source, _ in listed.values()})
        shown = ", ".join(extra[:5]) + (", ..." if len(extra) > 5 else "")
        problems.add(
            root,
            None,
            f"{len(extra)} image(s) not listed in {' or '.join(files)} (a different version of "
            f"the annotations?): {shown}",
        )
    return set(missing)


def _relative_path(text: str) -> bool:
    """Whether a listed path is relative and stays inside the data set's folder."""
    return bool(text) and not text.startswith("/") and ".." not in text.split("/")


# --------------------------------------------------------------------------------------------
# CUB-200-2011
# --------------------------------------------------------------------------------------------


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
    base = base_folder(root, "cub200")
    problems = _Problems()
    paths = {name: base / f"{name}.txt" for name in ("classes", "images", "image_class_labels")}
    boxes_path = base / "bounding_boxes.txt"
    class_lines = _read_lines(paths["classes"])
    classes: dict[int, str] = {}
    for number, row in _numbered_rows(paths["classes"], class_lines, 2, problems):
        class_id = _integer(row[0])
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

    images = _id_table(paths["images"], _read_lines(paths["images"]), problems)
    labels = _id_table(
        paths["image_class_labels"], _read_lines(paths["image_class_labels"]), problems
    )
    boxes = _id_table(boxes_path, _read_lines(boxes_path), problems)
    listed: dict[str, tuple[Path, int]] = {}
    rows = []
    for image_id in sorted(images):
        line, fields = images[image_id]
        if len(fields) != 1 or not _relative_path(fields[0]):
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
        class_id = _integer(label_fields[0]) if len(label_fields) == 1 else None
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
        values = [_number(v) for v in box_fields]
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
    missing = _check_image_files(base, "images", listed, problems)
    rows = [row for row in rows if row[0] not in missing]
    return _records(base, rows, class_names), problems.lines


def _records(
    base: Path,
    rows: list[tuple],
    class_names: tuple[str, ...],
) -> Records:
    """Records from ``(relative path, label, box[, role])`` rows."""
    prefix = os.path.abspath(base) + os.sep
    return Records(
        paths=np.array([prefix + row[0] for row in rows], dtype=str).reshape(-1),
        labels=np.array([row[1] for row in rows], dtype=np.int64),
        bboxes=np.array([row[2] for row in rows], dtype=np.int64).reshape(-1, 4),
        class_names=class_names,
        roles=np.array([row[3] if len(row) > 3 else ROLE_BOTH for row in rows], dtype=np.int8),
    )


# --------------------------------------------------------------------------------------------
# Stanford Online Products
# --------------------------------------------------------------------------------------------

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
    base = base_folder(root, "sop")
    problems = _Problems()
    rows = []
    listed: dict[str, tuple[Path, int]] = {}
    class_files: dict[int, tuple[Path, int]] = {}
    names: dict[int, str] = {}
    for split in ("train", "test"):
        path = base / f"Ebay_{split}.txt"
        lines = _read_lines(path)
        if not lines or lines[0].split() != _SOP_HEADER:
            raise DataError(
                f"{path}, line 1: expected the header '{' '.join(_SOP_HEADER)}', got "
                f"{lines[0].strip() if lines else 'an empty file'!r}"
            )
        ids: dict[int, int] = {}
        for number, row in _numbered_rows(path, lines[1:], 4, problems, first_line=2):
            image_id, class_id, super_id = [_integer(v) for v in row[:3]]
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
            if not _relative_path(name) or "/" not in name:
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
            category = name.split("/")[0].removesuffix("_final")
            names.setdefault(class_id, f"{category}/{class_id}")
            rows.append((name, class_id - 1, NO_BOX))
    if not rows:
        raise DataError(f"{base / 'Ebay_train.txt'} and Ebay_test.txt list no usable image")
    missing = _check_image_files(base, "", listed, problems)
    rows = [row for row in rows if row[0] not in missing]
    class_names = tuple(names.get(i, str(i)) for i in range(1, max(names) + 1))
    return _records(base, rows, class_names), problems.lines


# --------------------------------------------------------------------------------------------
# In-shop Clothes Retrieval
# --------------------------------------------------------------------------------------------

_INSHOP_HEADER = ["image_name", "item_id", "evaluation_status"]
_INSHOP_BOX_HEADER = ["image_name", "clothes_type", "pose_type", "x_1", "y_1", "x_2", "y_2"]
_INSHOP_ROLES = {"train": ROLE_BOTH, "query": ROLE_QUERY, "gallery": ROLE_GALLERY}


def _counted_file(path: Path, header: list[str], problems: _Problems) -> list[str]:
    """The lines after DeepFashion's two header lines (a count, then the column names).

    Raises:
        DataError: the file is missing or its first two lines are not a count and ``header``.
    """
    lines = _read_lines(path)
    if not lines or _integer(lines[0].strip()) is None:
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
    base = base_folder(root, "inshop")
    problems = _Problems()
    path = base / "Eval" / "list_eval_partition.txt"
    lines = _counted_file(path, _INSHOP_HEADER, problems)
    entries = []
    listed: dict[str, tuple[Path, int]] = {}
    item_status: dict[str, tuple[str, int]] = {}
    for number, (name, item, status) in _numbered_rows(path, lines, 3, problems, first_line=3):
        if status not in _INSHOP_ROLES:
            problems.add(
                path, number, f"evaluation_status {status!r} is not train, query or gallery"
            )
            continue
        if not _relative_path(name) or not name.startswith("img/"):
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

    boxes: dict[str, tuple[int, ...]] = {}
    box_path = base / "Anno" / "list_bbox_inshop.txt"
    if box_path.is_file():
        box_lines = _counted_file(box_path, _INSHOP_BOX_HEADER, problems)
        for number, row in _numbered_rows(box_path, box_lines, 7, problems, first_line=3):
            values = [_integer(v) for v in row[1:]]
            if any(v is None for v in values):
                problems.add(
                    box_path, number, f"expected integers after the image name, got {row[1:]}"
                )
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
                problems.add(box_path, number, f"image {row[0]} is not in {path.name}")
                continue
            boxes[row[0]] = (x1, y1, x2, y2)

    train_items = [item for item, (part, _) in item_status.items() if part == "train"]
    test_items = [item for item, (part, _) in item_status.items() if part == "test"]
    index = {item: i for i, item in enumerate(train_items + test_items)}
    missing = _check_image_files(base, "img", listed, problems)
    rows = [
        (name, index[item], boxes.get(name, NO_BOX), role)
        for name, item, role in entries
        if name not in missing
    ]
    if not rows:
        raise DataError(f"{path} lists no usable image")
    return _records(base, rows, tuple(train_items + test_items)), problems.lines


#: The reader of each text-file layout.
READERS = {"cub200": read_cub200, "sop": read_sop, "inshop": read_inshop}


# --------------------------------------------------------------------------------------------
# Split sizes against the official ones
# --------------------------------------------------------------------------------------------


def split_counts_table(split: Split, layout: str, images_per_class: int | None = None) -> str:
    """A table of each split's classes and images beside the data set's official counts.

    The training and validation splits together are compared with the official training
    split; a mismatch says so (a partial download, or another version of the files).

    Args:
        split: the data set's split.
        layout: the layout it was read with (``cars196``, ``cub200``, ``sop``, ``inshop``; any
            other has no official counts).
        images_per_class: K of the P x K batches, to count the training classes smaller
            than K; None leaves that line out.

    Returns:
        The table and its notes, without a trailing newline.
    """
    expected = EXPECTED_COUNTS.get(layout, {})
    # Training labels are dense over the training classes (net.data.Records.dense): back to
    # the data set's labels, which the validation records keep.
    position = {name: i for i, name in enumerate(split.val.class_names)}
    train_labels = np.array(
        [position[split.train.class_names[label]] for label in split.train.labels], np.int64
    )
    train_val = Records(
        np.concatenate([split.train.paths, split.val.paths]),
        np.concatenate([train_labels, split.val.labels]),
        np.concatenate([split.train.bboxes, split.val.bboxes]),
        split.val.class_names,
    )
    rows = [("train", split.train, None), ("val", split.val, None)]
    rows.append(("train + val", train_val, expected.get("train")))
    rows.append(("test", split.test, expected.get("test")))
    if split.test.has_query_gallery:
        rows.append(("  queries", split.test.subset(split.test.roles == ROLE_QUERY), None))
        rows.append(("  gallery", split.test.subset(split.test.roles == ROLE_GALLERY), None))
        rows[-2] = rows[-2][:2] + (expected.get("query"),)
        rows[-1] = rows[-1][:2] + (expected.get("gallery"),)
    header = ("split", "classes", "images", "official classes", "official images", "")
    lines = [header]
    differs = False
    for name, records, official in rows:
        cells = [name, f"{records.num_classes:,}", f"{len(records):,}", "", "", ""]
        if official is not None:
            classes, images = official
            same = images == len(records) and classes in (-1, records.num_classes)
            differs |= not same
            cells[3:] = [
                f"{classes:,}" if classes >= 0 else "-",
                f"{images:,}",
                "ok" if same else "DIFFERS",
            ]
        lines.append(tuple(cells))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [
        "  ".join(
            [line[0].ljust(widths[0])]
            + [c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=True)]
        ).rstrip()
        for line in lines
    ]
    if not expected:
        text.append(f"(no official counts for layout {layout!r})")
    elif differs:
        text.append(
            "The counts differ from the official split: a partial download, another version of "
            "the files, or images dropped by skip_bad_images or the configured class counts."
        )
    else:
        text.append("All counts match the official split.")
    if images_per_class is not None and len(split.train):
        _, sizes = np.unique(split.train.labels, return_counts=True)
        small = int((sizes < images_per_class).sum())
        if small:
            text.append(
                f"{small:,} of {len(sizes):,} training classes hold fewer than K = "
                f"{images_per_class} images: a batch holds all of their images, then repeats."
            )
    return "\n".join(text)
