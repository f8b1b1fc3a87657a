"""Reading Stanford Cars196 in both of its published layouts (``cars_annos.mat`` and the devkit).

The annotation files are MATLAB ``.mat`` files read with ``scipy.io``; every problem with them
(missing, unreadable, lacking a variable or field, class numbers out of range) is one
:class:`DataError` naming the file. Cars196's 1-based inclusive boxes ``(X1, Y1, X2, Y2)`` become
the package's 0-based half-open ``(X1 - 1, Y1 - 1, X2, Y2)`` (see :mod:`net.data`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from net.records import DataError, Records


def _load_mat(path: Path, variables: Sequence[str]) -> dict[str, Any]:
    """Loads named variables from a ``.mat`` file, squeezing MATLAB's 1 x N shapes away.

    Args:
        path: the ``.mat`` file.
        variables: the variables that must be present.

    Returns:
        ``{name: value}`` for each requested variable, as returned by ``scipy.io.loadmat`` with
        ``squeeze_me=True`` (struct arrays become NumPy structured arrays).

    Raises:
        DataError: naming the file when it is missing, unreadable or lacks a variable.
    """
    if not path.is_file():
        raise DataError(f"Annotation file not found: {path}")
    try:
        content = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=True)
    except Exception as error:  # scipy raises ValueError, TypeError, OSError, MatReadError...
        with open(path, "rb") as handle:
            header = handle.read(128)
        kind = "" if header.startswith(b"MATLAB") else "not a MATLAB .mat file; "
        raise DataError(
            f"Cannot read annotation file {path}: {kind}scipy.io.loadmat says: "
            f"{error or type(error).__name__}"
        ) from error
    missing = [name for name in variables if name not in content]
    if missing:
        present = sorted(key for key in content if not key.startswith("__"))
        raise DataError(f"Annotation file {path} lacks variable(s) {missing}; it has {present}")
    return {name: content[name] for name in variables}


def _struct_field(struct: Any, field: str, path: Path) -> np.ndarray:
    """Returns one field of a (squeezed) MATLAB struct array as a 1-D object array.

    Args:
        struct: a NumPy structured array (0-d when the struct array had a single element).
        field: the field name.
        path: the file it came from, for error messages.

    Returns:
        (N,) object array with one entry per struct element.

    Raises:
        DataError: if ``struct`` is not a struct array or lacks the field.
    """
    names = getattr(getattr(struct, "dtype", None), "names", None)
    if not names:
        raise DataError(f"Annotation file {path}: 'annotations' is not a struct array")
    if field not in names:
        raise DataError(f"Annotation file {path}: annotations lack field '{field}' (have {names})")
    values = np.asarray(struct[field], dtype=object)
    return values.reshape(-1)


def _struct_ints(struct: Any, field: str, path: Path) -> np.ndarray:
    """Returns an integer field of a struct array as (N,) int64 (see :func:`_struct_field`)."""
    values = _struct_field(struct, field, path)
    try:
        return np.array([int(np.asarray(value).reshape(-1)[0]) for value in values], np.int64)
    except (TypeError, ValueError, IndexError) as error:
        raise DataError(
            f"Annotation file {path}: field '{field}' holds non-integer values"
        ) from error


def _struct_strings(struct: Any, field: str, path: Path) -> list[str]:
    """Returns a text field of a struct array as a list of N strings."""
    return [str(np.asarray(value).reshape(-1)[0]) for value in _struct_field(struct, field, path)]


def _class_names(value: Any) -> tuple[str, ...]:
    """Converts a squeezed MATLAB cell array of strings to a tuple of names."""
    return tuple(str(name).strip() for name in np.atleast_1d(np.asarray(value, dtype=object)))


def _cars_records(
    root: Path,
    image_paths: Sequence[str],
    classes: np.ndarray,
    boxes: np.ndarray,
    class_names: tuple[str, ...],
    source: Path,
) -> Records:
    """Builds Records from Cars196 annotations (1-based classes, 1-based inclusive boxes).

    Raises:
        DataError: if a class number does not name one of ``class_names``.
    """
    bad = np.flatnonzero((classes < 1) | (classes > len(class_names)))
    if len(bad):
        raise DataError(
            f"Annotation file {source}: class numbers must lie in 1..{len(class_names)}; "
            f"entries {bad[:10].tolist()} have {classes[bad[:10]].tolist()}"
        )
    # 1-based inclusive [X1, X2] -> 0-based half-open [X1 - 1, X2).
    bboxes = boxes - np.array([1, 1, 0, 0], dtype=np.int64)
    return Records(
        paths=np.array([str((root / path).resolve()) for path in image_paths], dtype=str),
        labels=classes - 1,
        bboxes=bboxes,
        class_names=class_names,
    )


def _read_cars196_annos(root: Path) -> Records:
    """Reads the all-in-one layout: ``cars_annos.mat`` beside ``car_ims/``."""
    path = root / "cars_annos.mat"
    content = _load_mat(path, ["annotations", "class_names"])
    annotations = content["annotations"]
    boxes = np.stack(
        [_struct_ints(annotations, f"bbox_{k}", path) for k in ("x1", "y1", "x2", "y2")], axis=1
    )
    return _cars_records(
        root,
        _struct_strings(annotations, "relative_im_path", path),
        _struct_ints(annotations, "class", path),
        boxes,
        _class_names(content["class_names"]),
        path,
    )


def _find(root: Path, candidates: Sequence[str]) -> Path:
    """Returns the first existing path among ``root / candidate`` (or the first one)."""
    for candidate in candidates:
        if (root / candidate).is_file():
            return root / candidate
    return root / candidates[0]


def _read_cars196_devkit(root: Path) -> Records:
    """Reads the devkit layout: ``cars_train/``, ``cars_test/`` and ``devkit/*.mat``."""
    meta = _find(root, ["devkit/cars_meta.mat", "cars_meta.mat"])
    class_names = _class_names(_load_mat(meta, ["class_names"])["class_names"])
    parts = []
    for folder, names in (
        ("cars_train", ["devkit/cars_train_annos.mat", "cars_train_annos.mat"]),
        (
            "cars_test",
            ["cars_test_annos_withlabels.mat", "devkit/cars_test_annos_withlabels.mat"],
        ),
    ):
        path = _find(root, names)
        if not path.is_file() and folder == "cars_test":
            unlabeled = _find(root, ["devkit/cars_test_annos.mat", "cars_test_annos.mat"])
            hint = f" ({unlabeled} has no labels)" if unlabeled.is_file() else ""
            raise DataError(
                f"Annotation file not found: {path}{hint}; the test labels are distributed as "
                "cars_test_annos_withlabels.mat"
            )
        annotations = _load_mat(path, ["annotations"])["annotations"]
        boxes = np.stack(
            [_struct_ints(annotations, f"bbox_{k}", path) for k in ("x1", "y1", "x2", "y2")],
            axis=1,
        )
        files = [f"{folder}/{name}" for name in _struct_strings(annotations, "fname", path)]
        parts.append(
            _cars_records(
                root, files, _struct_ints(annotations, "class", path), boxes, class_names, path
            )
        )
    return Records(
        paths=np.concatenate([part.paths for part in parts]),
        labels=np.concatenate([part.labels for part in parts]),
        bboxes=np.concatenate([part.bboxes for part in parts]),
        class_names=class_names,
    )


def read_cars196(root: str | os.PathLike, layout: str = "auto") -> Records:
    """Reads Stanford Cars196 in either published layout.

    Layouts:
        ``"annos"``: ``root/cars_annos.mat`` (struct array ``annotations`` with fields
        ``relative_im_path``, ``bbox_x1..bbox_y2`` (1-based, inclusive), ``class`` (1-based),
        ``test``; cell array ``class_names``) beside ``root/car_ims/``.
        ``"devkit"``: ``root/cars_train/``, ``root/cars_test/``,
        ``root/devkit/cars_train_annos.mat``, ``root/devkit/cars_meta.mat`` and
        ``root/cars_test_annos_withlabels.mat`` (also looked for in ``devkit/``).
        ``"auto"``: ``"annos"`` when ``cars_annos.mat`` exists, otherwise ``"devkit"``.

    Both give the same records (in file order): labels are the 1-based classes minus one,
    boxes are converted to 0-based half-open ``[x1, y1, x2, y2)``. The ``test`` flag (the
    classification split) is ignored; use :func:`metric_learning_split`.

    Args:
        root: the data set folder.
        layout: ``"auto"``, ``"annos"`` or ``"devkit"``.

    Returns:
        Records of all 16,185 images (for the real data set).

    Raises:
        DataError: naming the folder when ``root`` does not exist, the file when an annotation
            file is missing or unreadable.
        ValueError: for an unknown layout.
    """
    root = Path(root)
    if not root.is_dir():  # not "devkit/cars_meta.mat not found" for a wrong data.root
        raise DataError(f"Data set not found: {root}")
    if layout == "auto":
        layout = "annos" if (root / "cars_annos.mat").is_file() else "devkit"
    if layout == "annos":
        return _read_cars196_annos(root)
    if layout == "devkit":
        return _read_cars196_devkit(root)
    raise ValueError(f"Unknown Cars196 layout {layout!r}; use 'auto', 'annos' or 'devkit'")
