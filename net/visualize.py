"""Figures (PNG) of images (data, rankings) and the self-contained HTML pages that show figures.

The charts of numbers (training curves, the learning-rate range test, bar charts) are in
:mod:`net.charts`.

Figures are drawn on ``matplotlib.figure.Figure`` objects directly (the Agg canvas that
``Figure.savefig`` uses by default), so no display and no pyplot global state are needed.
Images are expected as the data pipeline delivers them: RGB, float in [0, 255] (uint8 is
accepted too), shape (H, W, 3).
"""

from __future__ import annotations

import base64
import html
import math
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from net.data import class_id

QUERY_COLOR = "#1565c0"  # Blue: the query.
MATCH_COLOR = "#2e7d32"  # Green: a retrieved item of the query's class.
MISMATCH_COLOR = "#c62828"  # Red: a retrieved item of another class.
BORDER_WIDTH = 5.0  # Points.

_MIME_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}

PathLike = str | os.PathLike[str]


def _to_display(image: np.ndarray, name: str) -> np.ndarray:
    """Converts one RGB image in [0, 255] to float32 in [0, 1] for ``imshow``.

    Args:
        image: Array of shape (H, W, 3), float in [0, 255] or uint8.
        name: Description of the image for error messages.

    Returns:
        The image as float32 in [0, 1], shape (H, W, 3).

    Raises:
        ValueError: If the image is not (H, W, 3).
    """
    values = np.asarray(image)
    if values.ndim != 3 or values.shape[-1] != 3:
        raise ValueError(f"{name} must have shape (H, W, 3), got {values.shape}")
    return np.clip(values.astype(np.float32), 0.0, 255.0) / 255.0


def class_text(label: object, class_names: Sequence[str] | None) -> str:
    """The data set's own number and the name of a class.

    For example "16: animals/fish" for label 15 (see :func:`net.data.class_id`); a class named
    by its integer id is shown by that id alone.

    Args:
        label: an integer label, or any other value (shown as it is).
        class_names: names indexed by label, or ``None``.
    """
    if class_names is None or not isinstance(label, (int, np.integer)):
        return str(label)
    if not 0 <= int(label) < len(class_names):
        return str(label)
    number, name = class_id(int(label), class_names), str(class_names[int(label)])
    return number if number == name.strip() else f"{number}: {name}"


def shorten_middle(text: str, width: int) -> str:
    """Cuts the middle of a text longer than ``width``, keeping its start and its end.

    Class names often share a prefix ("animals/mammals/cat", "animals/mammals/dog"), so cutting
    the end would make them identical; the end is what tells them apart.
    """
    if len(text) <= width:
        return text
    if width < 3:
        return text[:width]
    head = (width - 1) // 2
    tail = width - 1 - head
    return text[:head] + "\u2026" + text[len(text) - tail :]


def wrap_label(text: str, width: int, lines: int = 2) -> str:
    """Wraps a label onto at most ``lines`` lines of ``width`` characters.

    The middle is cut when the text does not fit (see :func:`shorten_middle`).
    """
    text = shorten_middle(text, width * lines)
    # A "/" (folder-like class names) is a break opportunity too: wrap with a space after each.
    spaced = text.replace("/", "/ ")
    wrapped = [
        line.replace("/ ", "/")
        for line in textwrap.wrap(spaced, width, break_on_hyphens=False) or [""]
    ]
    if len(wrapped) > lines:  # Wrapping at spaces wasted room: cut at exact widths instead.
        wrapped = [text[i : i + width] for i in range(0, len(text), width)]
    return "\n".join(wrapped)


def _label_text(label: object, class_names: Sequence[str] | None, width: int = 28) -> str:
    """The caption of a label: the data set's class number and name on two wrapped lines.

    Lines hold ``width`` characters; the middle is cut if the text is still too long.
    """
    return wrap_label(class_text(label, class_names), width)


def save_figure(
    figure: Figure, path: PathLike, *, title: str | None = None, **title_style: Any
) -> Path:
    """Lays a figure out and writes it as PNG, creating the parent directory; returns the path.

    ``title``, when given, becomes the figure's title (``title_style``: e.g. ``fontsize``).
    """
    if title:
        figure.suptitle(title, **title_style)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=100)
    return path


def _framed(axes: object, color: str) -> None:
    """Hides the ticks of an image axes and draws its frame as a coloured border."""
    axes.set_xticks([])
    axes.set_yticks([])
    for spine in axes.spines.values():
        spine.set_edgecolor(color)
        spine.set_linewidth(BORDER_WIDTH)


def plot_image_grid(
    images: np.ndarray | Sequence[np.ndarray],
    labels: np.ndarray | Sequence[object],
    path: PathLike,
    *,
    columns: int = 8,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """Draws images in a grid, each captioned with its label, e.g. one training batch.

    Args:
        images: N images, array (N, H, W, 3) or a sequence of (H, W, 3) arrays, RGB in [0, 255].
        labels: N labels (integer class ids or names).
        path: Output PNG file; parent directories are created.
        columns: Images per row.
        class_names: Optional names indexed by integer label, shown beside the id.
        title: Optional figure title.

    Returns:
        The path of the PNG written.

    Raises:
        ValueError: If there are no images, the counts differ, an image is not (H, W, 3), or
            columns < 1.
    """
    count = len(images)
    if count == 0 or len(labels) != count:
        raise ValueError(f"need N >= 1 images and N labels, got {count} and {len(labels)}")
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    columns = min(columns, count)
    rows = math.ceil(count / columns)
    figure = Figure(figsize=(1.9 * columns, 2.3 * rows + (0.4 if title else 0.0)))
    grid = figure.subplots(rows, columns, squeeze=False)
    for position, axes in enumerate(grid.ravel()):
        axes.set_axis_off()
        if position < count:
            axes.imshow(_to_display(images[position], f"images[{position}]"))
            axes.set_title(_label_text(labels[position], class_names), fontsize=7)
    return save_figure(figure, path, title=title)


def plot_rankings(
    query_images: np.ndarray | Sequence[np.ndarray],
    query_labels: np.ndarray | Sequence[object],
    ranked_images: np.ndarray | Sequence[Sequence[np.ndarray]],
    ranked_labels: np.ndarray | Sequence[Sequence[object]],
    ranked_distances: np.ndarray | Sequence[Sequence[float]],
    path: PathLike,
    *,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """Draws one row per query: the query (blue border) and its ranked matches.

    A match of the query's class gets a green border and title, any other a red one; each
    title gives the rank and the distance to the query.

    Args:
        query_images: Q query images, (Q, H, W, 3) or a sequence of (H, W, 3), RGB in [0, 255].
        query_labels: Q query labels.
        ranked_images: For each query its K nearest, (Q, K, H, W, 3) or nested sequences.
        ranked_labels: Labels of the ranked items, (Q, K).
        ranked_distances: Distances of the ranked items to their query, (Q, K).
        path: Output PNG file; parent directories are created.
        class_names: Optional names indexed by integer label.
        title: Optional figure title.

    Returns:
        The path of the PNG written.

    Raises:
        ValueError: If there are no queries or the per-query counts differ.
    """
    num_queries = len(query_images)
    if num_queries == 0 or not (
        len(query_labels)
        == len(ranked_images)
        == len(ranked_labels)
        == len(ranked_distances)
        == num_queries
    ):
        raise ValueError(
            "need Q >= 1 queries and Q rows of ranked images, labels and distances, got "
            f"{num_queries}, {len(query_labels)}, {len(ranked_images)}, {len(ranked_labels)}, "
            f"{len(ranked_distances)}"
        )
    num_ranked = max(len(row) for row in ranked_images)
    for row in range(num_queries):
        if not len(ranked_images[row]) == len(ranked_labels[row]) == len(ranked_distances[row]):
            raise ValueError(f"row {row}: ranked images, labels and distances differ in length")

    figure = Figure(figsize=(1.7 * (num_ranked + 1), 2.3 * num_queries + (0.4 if title else 0)))
    grid = figure.subplots(num_queries, num_ranked + 1, squeeze=False)
    for row in range(num_queries):
        query_axes = grid[row, 0]
        query_axes.imshow(_to_display(query_images[row], f"query_images[{row}]"))
        _framed(query_axes, QUERY_COLOR)
        query_axes.set_title(
            "query\n" + _label_text(query_labels[row], class_names, width=26),
            fontsize=7,
            color=QUERY_COLOR,
        )
        for rank in range(num_ranked):
            axes = grid[row, rank + 1]
            if rank >= len(ranked_images[row]):
                axes.set_axis_off()
                continue
            label = ranked_labels[row][rank]
            color = MATCH_COLOR if label == query_labels[row] else MISMATCH_COLOR
            axes.imshow(_to_display(ranked_images[row][rank], f"ranked_images[{row}][{rank}]"))
            _framed(axes, color)
            distance = float(ranked_distances[row][rank])
            axes.set_title(
                f"#{rank + 1}  d = {distance:.3f}\n" + _label_text(label, class_names, width=26),
                fontsize=7,
                color=color,
            )
    return save_figure(figure, path, title=title)


def plot_batch_ranking(
    query_image: np.ndarray,
    query_label: object,
    ranked_images: np.ndarray | Sequence[np.ndarray],
    ranked_labels: np.ndarray | Sequence[object],
    ranked_distances: np.ndarray | Sequence[float],
    path: PathLike,
    *,
    class_names: Sequence[str] | None = None,
    columns: int = 16,
    title: str | None = None,
) -> Path:
    """Draws one query and a whole ranked batch in a grid (the seed's batch figure).

    The first cell is the query (blue border); the ranked items follow in reading order, each
    captioned with its rank and distance, items of the query's class with a green border and
    caption, the others red. Captions carry no class names (a batch holds up to hundreds of
    images); the query's caption and the title name the class.

    Args:
        query_image: The query, (H, W, 3) RGB in [0, 255].
        query_label: Its label.
        ranked_images: The other images of its batch, nearest first, (N, H, W, 3).
        ranked_labels: Their labels (N,).
        ranked_distances: Their distances to the query (N,).
        path: Output PNG file; parent directories are created.
        class_names: Optional names indexed by integer label (for the query's caption).
        columns: Cells per row, the query's included.
        title: Optional figure title.

    Returns:
        The path of the PNG written.

    Raises:
        ValueError: If nothing is ranked, the lengths differ, or ``columns`` < 2.
    """
    count = len(ranked_images)
    if count == 0 or not count == len(ranked_labels) == len(ranked_distances):
        raise ValueError(
            "need N >= 1 ranked images with N labels and distances, got "
            f"{count}, {len(ranked_labels)}, {len(ranked_distances)}"
        )
    if columns < 2:
        raise ValueError(f"columns must be at least 2, got {columns}")
    rows = -(-(count + 1) // columns)
    figure = Figure(figsize=(1.25 * columns, 1.45 * rows + (0.6 if title else 0)))
    grid = figure.subplots(rows, columns, squeeze=False)
    cells = grid.reshape(-1)
    cells[0].imshow(_to_display(query_image, "query_image"))
    _framed(cells[0], QUERY_COLOR)
    cells[0].set_title(
        "query\n" + _label_text(query_label, class_names, width=20), fontsize=6, color=QUERY_COLOR
    )
    for rank in range(count):
        axes = cells[rank + 1]
        color = MATCH_COLOR if ranked_labels[rank] == query_label else MISMATCH_COLOR
        axes.imshow(_to_display(ranked_images[rank], f"ranked_images[{rank}]"))
        _framed(axes, color)
        axes.set_title(
            f"#{rank + 1} d={float(ranked_distances[rank]):.2f}", fontsize=6, color=color
        )
    for axes in cells[count + 1 :]:
        axes.set_axis_off()
    return save_figure(figure, path, title=title, fontsize=9)


def write_html_report(
    title: str,
    sections: Sequence[tuple[str, Sequence[PathLike]]],
    path: PathLike,
    *,
    notes: str | None = None,
) -> Path:
    """Writes one self-contained HTML page with the given images embedded as data URIs.

    The page references no external file: every image is inlined as a base64 ``data:`` URI, so
    it can be moved, archived or attached on its own.

    Args:
        title: Page title and top heading.
        sections: ``(heading, image paths)`` pairs, shown in order; images are PNG or JPEG.
        path: Output HTML file; parent directories are created.
        notes: Optional preformatted text (e.g. a metrics table) shown under the title.

    Returns:
        The path of the HTML page written.

    Raises:
        FileNotFoundError: If an image does not exist.
        ValueError: If an image is not PNG or JPEG (by suffix).
    """
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1600px}"
        "figure{margin:1em 0}img{max-width:100%;border:1px solid #ddd}"
        "figcaption{color:#555;font-size:90%}pre{background:#f6f6f6;padding:1em}</style>",
        "</head>",
        "<body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if notes:
        parts.append(f"<pre>{html.escape(notes)}</pre>")
    for heading, image_paths in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        for image_path in map(Path, image_paths):
            mime = _MIME_TYPES.get(image_path.suffix.lower())
            if mime is None:
                raise ValueError(
                    f"cannot embed {image_path}: only PNG and JPEG images are supported"
                )
            if not image_path.is_file():
                raise FileNotFoundError(f"image for the report not found: {image_path}")
            data = base64.b64encode(image_path.read_bytes()).decode("ascii")
            name = html.escape(image_path.name)
            parts.append(
                f'<figure><img src="data:{mime};base64,{data}" alt="{name}">'
                f"<figcaption>{name}</figcaption></figure>"
            )
    parts += ["</body>", "</html>", ""]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
