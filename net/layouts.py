"""Layout detection, the official readers by name, and split sizes beside the official ones.

:func:`detect_layout` names a data set's layout (``data.layout: auto``); :data:`READERS` maps
each text-file layout to its reader: CUB-200-2011 (:mod:`net.cub200`), Stanford Online Products
(:mod:`net.sop`) and In-shop Clothes (:mod:`net.inshop`), whose shared line checks live in
:mod:`net.annotation_files` (Cars196 is :mod:`net.cars196`). Each reader returns
``(records, problems)``; :func:`net.data.read_dataset` reports the problems with the image
checks in one message.

Labels follow each data set's metric-learning protocol, training classes first, so that
:func:`net.data.metric_learning_split` with the profile's ``num_train_classes`` splits them.
:func:`split_counts_table` compares a split with :data:`EXPECTED_COUNTS`, the official sizes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from net.annotation_files import MARKERS, base_folder
from net.cub200 import read_cub200
from net.inshop import read_inshop
from net.records import ROLE_GALLERY, ROLE_QUERY, DataError, Records, Split
from net.sop import read_sop

__all__ = [
    "EXPECTED_COUNTS",
    "READERS",
    "TEXT_LAYOUTS",
    "base_folder",
    "detect_layout",
    "read_cub200",
    "read_inshop",
    "read_sop",
    "split_counts_table",
]

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
    for layout, marker in MARKERS.items():
        if (base_folder(root, layout) / marker).is_file():
            return layout
    if (root / "manifest.csv").is_file():
        return "csv"
    return "image_folder"


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
    text, differs = _aligned_table(_count_rows(split, expected))
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


def _train_and_val(split: Split) -> Records:
    """The training and validation records together, in the data set's labels.

    Training labels are dense over the training classes (:meth:`net.data.Records.dense`):
    they go back to the data set's labels, which the validation records keep.
    """
    position = {name: i for i, name in enumerate(split.val.class_names)}
    train_labels = np.array(
        [position[split.train.class_names[label]] for label in split.train.labels], np.int64
    )
    return Records(
        np.concatenate([split.train.paths, split.val.paths]),
        np.concatenate([train_labels, split.val.labels]),
        np.concatenate([split.train.bboxes, split.val.bboxes]),
        split.val.class_names,
    )


def _count_rows(
    split: Split, expected: dict[str, tuple[int, int]]
) -> list[tuple[str, Records, tuple[int, int] | None]]:
    """``[(row name, records, official (classes, images) or None)]`` of the counts table.

    Rows: train, val, train + val, test, and the test queries and gallery where the test
    split has them; only train + val, test, queries and gallery have official counts.
    """
    rows = [("train", split.train, None), ("val", split.val, None)]
    rows.append(("train + val", _train_and_val(split), expected.get("train")))
    rows.append(("test", split.test, expected.get("test")))
    if split.test.has_query_gallery:
        queries = split.test.subset(split.test.roles == ROLE_QUERY)
        gallery = split.test.subset(split.test.roles == ROLE_GALLERY)
        rows.append(("  queries", queries, expected.get("query")))
        rows.append(("  gallery", gallery, expected.get("gallery")))
    return rows


def _aligned_table(
    rows: list[tuple[str, Records, tuple[int, int] | None]],
) -> tuple[list[str], bool]:
    """The counts table's lines, and whether any official count differs.

    Names are left-aligned, numbers right-aligned; an official class count of -1 (not
    published) is shown as ``-`` and not compared.
    """
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
    return text, differs
