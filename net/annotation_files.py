"""What the readers of the official text-file layouts share: folders, lines, problems, images.

The readers (:mod:`net.cub200`, :mod:`net.sop`, :mod:`net.inshop`) parse a data set's own text
files into :class:`net.records.Records`, checking them line by line on the way: a malformed
line, a number that is not one, an id that does not match between files, a duplicate, an image
listed but missing from its folder or present but not listed. Problems that leave a record
unusable drop that record and are collected by :class:`Problems` as one line each
(``file, line N: ...``), so that :func:`net.data.read_dataset` reports them together with the
image checks of :func:`net.data.validate_records` in one message, or skips them with
``skip_bad``. A missing or unreadable annotation file, or one whose header is wrong, raises
:class:`net.records.DataError` at once.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from net.records import ROLE_BOTH, DataError, Records, is_image_name

#: The file that marks each layout, relative to its base folder.
MARKERS = {
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


class Problems:
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
    marker = MARKERS[layout]
    if not root.is_dir():
        raise DataError(
            f"Data set folder not found: {root} (expected {_ARCHIVES[layout]}; see the README, "
            "'Obtaining and placing the data sets')"
        )
    if (root / marker).is_file():
        return root
    candidates = sorted(p for p in root.iterdir() if p.is_dir() and (p / marker).is_file())
    return candidates[0] if len(candidates) == 1 else root


def read_lines(path: Path) -> list[str]:
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


def numbered_rows(
    path: Path, lines: list[str], fields: int, problems: Problems, first_line: int = 1
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


def parse_integer(text: str) -> int | None:
    """``text`` as an integer, or None when it is not one."""
    try:
        return int(text)
    except ValueError:
        return None


def parse_number(text: str) -> float | None:
    """``text`` as a finite number, or None when it is not one."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


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


def check_image_files(
    base: Path,
    folder: str,
    listed: dict[str, tuple[Path, int]],
    problems: Problems,
) -> set[str]:
    """Compares the listed images with the files under ``base / folder``.

    Args:
        base: the data set's base folder; listed paths are relative to it.
        folder: the images' folder under ``base`` ("" for the category folders of SOP).
        listed: ``{relative path: (annotation file, line)}`` in the order the files list them.
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
    # In the order the annotation files list them (file by file, line by line): sorting by
    # line alone left images missing on the same line of two files in hash order.
    missing = [name for name in listed if name not in present]
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


def relative_path(text: str) -> bool:
    """Whether a listed path is relative and stays inside the data set's folder."""
    return bool(text) and not text.startswith("/") and ".." not in text.split("/")


def records_from_rows(
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
