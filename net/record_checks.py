"""Checking records up front, before training starts.

:func:`validate_records` finds missing, empty, truncated or undecodable images, bounding boxes
outside their image and classes with a single image, checking every image with a cheap header
and end-marker check (or a full decode) on a thread pool; :func:`report_problems` turns the
problems into one :class:`DataError` or, with ``skip_bad``, a warning. :mod:`net.data`
re-exports the public names and runs the check from :func:`net.data.read_dataset`.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import re
from collections.abc import Sequence

import numpy as np

from net.records import DataError, Records

logger = logging.getLogger(__name__)

#: Bytes read from the end of a file to look for the format's end marker.
_TAIL_BYTES = 4096


def check_image(path: str, full_decode: bool) -> tuple[str | None, tuple[int, int] | None]:
    """Checks one image file cheaply.

    Reads the header with PIL (format and size, no pixel decoding) and the last
    :data:`_TAIL_BYTES` bytes, where a complete JPEG has its end-of-image marker ``FF D9``
    and a complete PNG its ``IEND`` chunk. With ``full_decode`` the file is also decoded by
    ``tf.io.decode_image``, the decoder the pipeline uses.

    Args:
        path: the image file.
        full_decode: also decode the whole image (about 15x slower).

    Returns:
        ``(problem, (width, height))``: ``problem`` is None for a good file, else a short
        reason; the size is None when it could not be read.
    """
    from PIL import Image  # Local import: only validation needs PIL.

    path = str(path)  # PIL's messages repeat the path: no np.str_('...')
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return "file not found", None
    except OSError as error:
        return f"cannot access file ({error.strerror})", None
    if size == 0:
        return "empty file (0 bytes)", None
    try:
        with Image.open(path) as image:
            image_format, image_size = image.format, image.size
    except Exception as error:  # PIL raises many types for undecodable files.
        return f"not a decodable image ({type(error).__name__}: {error})", None
    if image_format not in ("JPEG", "PNG", "GIF", "BMP", "WEBP"):
        return (
            f"unsupported image format {image_format} (use JPEG, PNG, GIF, BMP or WebP)",
            image_size,
        )
    with open(path, "rb") as handle:
        handle.seek(max(0, size - _TAIL_BYTES))
        tail = handle.read()
    if image_format == "JPEG" and b"\xff\xd9" not in tail:
        return "truncated JPEG (no end-of-image marker)", image_size
    if image_format == "PNG" and b"IEND" not in tail:
        return "truncated PNG (no IEND chunk)", image_size
    if full_decode:
        import tensorflow as tf  # Local import: the cheap check needs no TensorFlow.

        try:
            tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        except tf.errors.OpError as error:
            return f"not a decodable image (TensorFlow: {tensorflow_reason(error)})", image_size
    return None, image_size


def tensorflow_reason(error: Exception) -> str:
    """The readable part of a TensorFlow op error (without its function name, op and ``name:``).

    ``"{{function_node __wrapped__DecodeImage_...}} jpeg::Uncompress failed. Invalid JPEG data or
    crop window. [Op:DecodeImage] name: "`` gives ``"jpeg::Uncompress failed. Invalid JPEG data
    or crop window."``.
    """
    text = getattr(error, "message", None) or str(error)
    text = re.sub(r"\{\{[^}]*\}\}", " ", text)
    text = re.sub(r"\[\[\{\{node [^]]*\]\]|\[Op:[^\]]*\].*$", " ", text, flags=re.S)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines[-1:]).strip().rstrip(":").strip() or type(error).__name__


def undecodable_images(paths: Sequence[str], *, num_threads: int = 16) -> list[str]:
    """``"path: reason"`` for each image that TensorFlow's decoder refuses (a full decode each).

    What the pipeline's decoder would stop on, found after the fact (the pipeline's error does
    not name its file): a full decode of every image, about 15 times the cost of the header
    check.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
        results = list(pool.map(lambda p: check_image(p, True)[0], paths))
    return [f"{path}: {problem}" for path, problem in zip(paths, results, strict=True) if problem]


def undecodable_error(problems: Sequence[str], *, skip_bad: bool) -> DataError:
    """The error naming the images the pipeline could not decode (with ``decode_check`` off)."""
    if skip_bad:
        hint = (
            "data.skip_bad_images leaves out only what the up-front check finds; set "
            "data.decode_check: true to decode every image up front and leave such files out"
        )
    else:
        hint = (
            "fix or remove it, or set data.decode_check: true and data.skip_bad_images: true "
            "to leave such files out"
        )
    if len(problems) == 1:
        return DataError(f"{problems[0]}; {hint}")
    return DataError(f"{len(problems)} images cannot be decoded ({hint}):\n" + _listing(problems))


#: Problems listed in full before "... and N more".
LISTED_PROBLEMS = 20


def _listing(lines: Sequence[str], limit: int = LISTED_PROBLEMS) -> str:
    """The first ``limit`` lines, indented, then how many more there are."""
    shown = [f"  {line}" for line in lines[:limit]]
    if len(lines) > limit:
        shown.append(f"  … and {len(lines) - limit} more")
    return "\n".join(shown)


def _box_problem(box: np.ndarray, size: tuple[int, int], tolerance: int) -> str | None:
    """Returns why a 0-based half-open box does not fit a (width, height) image, or None."""
    if np.all(box == -1):
        return None
    x1, y1, x2, y2 = (int(v) for v in box)
    width, height = size
    if x2 <= x1 or y2 <= y1:
        return f"empty bounding box [x1, y1, x2, y2) = [{x1}, {y1}, {x2}, {y2})"
    if x1 < -tolerance or y1 < -tolerance or x2 > width + tolerance or y2 > height + tolerance:
        return (
            f"bounding box [x1, y1, x2, y2) = [{x1}, {y1}, {x2}, {y2}) lies outside the "
            f"{width}x{height} image"
        )
    return None


def validate_records(
    records: Records,
    *,
    skip_bad: bool = False,
    full_decode: bool = False,
    bbox_tolerance: int = 2,
    num_threads: int = 16,
    annotation_problems: Sequence[str] = (),
) -> Records:
    """Checks a data set up front, so training never stops mid-epoch on a bad file.

    Finds, for every image: a missing file, an empty (0-byte) file, a file PIL cannot identify
    or an unsupported format, a truncated JPEG (no end-of-image marker in its last 4 KiB) or
    PNG (no ``IEND`` chunk), and a bounding box that is empty or extends more than
    ``bbox_tolerance`` pixels beyond the image (the pipeline clamps boxes to the image, so a box
    a pixel or two too large is harmless). Then, among the remaining images, finds classes with
    a single image (no positive pair to learn from, no relevant item to retrieve).

    Cost: the default check reads each file's header and tail only; ``full_decode=True`` also
    decodes every image with ``tf.io.decode_image`` (catching corruption inside the compressed
    data, e.g. a bad Huffman table), about 15 times slower on JPEGs like Cars196's.

    Args:
        records: the data set.
        skip_bad: drop bad images (and then single-image classes) with a logged warning that
            says how many were skipped, instead of raising.
        full_decode: decode every image completely instead of the header and tail check.
        bbox_tolerance: pixels a box may extend beyond the image.
        num_threads: threads reading files in parallel (helps on network disks).
        annotation_problems: problems the reader found in the annotation files (one line
            each, records already dropped), reported in the same message.

    Returns:
        ``records`` itself when nothing is wrong, else (with ``skip_bad``) the good records.

    Raises:
        DataError: listing every bad file and why, in one message (unless ``skip_bad``).
    """
    if len(records) == 0:
        raise DataError("The data set has no images")
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
        results = list(pool.map(lambda p: check_image(p, full_decode), records.paths))
    problems: dict[int, str] = {}
    for i, (problem, size) in enumerate(results):
        if problem is None and size is not None:
            problem = _box_problem(records.bboxes[i], size, bbox_tolerance)
        if problem is not None:
            problems[i] = problem
    good = np.ones(len(records), dtype=bool)
    good[list(problems)] = False
    classes, counts = np.unique(records.labels[good], return_counts=True)
    single = classes[counts == 1]
    for i in np.flatnonzero(good & np.isin(records.labels, single)):
        label = int(records.labels[i])
        problems[int(i)] = (
            f"only image of class {records.class_names[label]!r} (label {label}): a class needs "
            "at least two images"
        )
    lines = [f"{records.paths[i]}: {problems[i]}" for i in sorted(problems)]
    report_problems(annotation_problems, lines, total=len(records), skip_bad=skip_bad)
    if not problems:
        return records
    keep = np.ones(len(records), dtype=bool)
    keep[list(problems)] = False
    if not keep.any():
        raise DataError("Every image was skipped")
    dropped = np.setdiff1d(records.classes, records.labels[keep])
    if len(dropped):
        names = ", ".join(f"{records.class_names[c]!r} (label {c})" for c in dropped[:20])
        more = f" and {len(dropped) - 20} more" if len(dropped) > 20 else ""
        logger.warning(
            "Dropped %d class(es) left with fewer than two usable images: %s%s",
            len(dropped),
            names,
            more,
        )
    return records.subset(keep)


def report_problems(
    annotation_problems: Sequence[str], image_problems: Sequence[str], *, total: int, skip_bad: bool
) -> None:
    """Raises one :class:`DataError` listing every problem, or (``skip_bad``) logs it.

    Args:
        annotation_problems: one line per bad annotation line (its record already dropped).
        image_problems: one line per unusable image.
        total: the number of usable records before the image checks.
        skip_bad: log a warning that says how many were skipped instead of raising.

    Raises:
        DataError: there are problems and ``skip_bad`` is false.
    """
    if not annotation_problems and not image_problems:
        return
    missing = sum(line.endswith(": file not found") for line in image_problems)
    if total and missing == total:
        headline = f"none of the {total} images exists (is data.root right?)"
    elif skip_bad:
        headline = f"{len(image_problems)} of {total} images (unusable)"
    else:
        headline = f"{len(image_problems)} of {total} images are unusable"
    parts = []
    if image_problems:
        parts.append(f"{headline}:\n" + _listing(image_problems))
    if annotation_problems:
        parts.append(
            f"{len(annotation_problems)} problem(s) in the annotation files:\n"
            + _listing(annotation_problems)
        )
    summary = "\n".join(parts)
    if not skip_bad:
        raise DataError(
            summary + "\nFix or remove them, or set data.skip_bad_images: true to leave them out "
            "and continue."
        )
    logger.warning("Skipped %s", summary)
