"""Charts of numbers (PNG): training curves, the learning-rate range test and bar charts.

Like :mod:`net.visualize` (the figures of images and the HTML pages), they are drawn on
``matplotlib.figure.Figure`` objects directly, with no display and no pyplot global state.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from net.visualize import MATCH_COLOR, QUERY_COLOR, PathLike, save_figure, shorten_middle


def _read_csv_log(csv_path: Path) -> dict[str, np.ndarray]:
    """Reads a Keras CSVLogger file into {column: float64 values}; blanks become NaN.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it has no header or no rows.
    """
    if not csv_path.is_file():
        raise FileNotFoundError(f"training log not found: {csv_path}")
    with csv_path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        columns = reader.fieldnames or []
    if not columns or not rows:
        raise ValueError(f"training log {csv_path} has no header or no rows")

    def number(text: str | None) -> float:
        try:
            return float(text) if text not in (None, "") else math.nan
        except ValueError:
            return math.nan

    return {name: np.array([number(row.get(name)) for row in rows]) for name in columns}


#: Retrieval metrics of a training log drawn in the "retrieval" panel (any ``val_`` prefix).
RETRIEVAL_COLUMNS = ("recall@", "precision@", "r_precision", "map@r")


def training_curve_panels(
    columns: Sequence[str], selection_metric: str = "val_map@r"
) -> list[tuple[str, list[str]]]:
    """Which columns of a training log go into which panel of the training curves.

    Args:
        columns: The log's column names.
        selection_metric: The column that selects the best model; always drawn when present.

    Returns:
        ``[(title, columns)]`` for the non-empty panels, in order: "losses" (columns ending in
        ``loss``), "retrieval" (Recall@K, Precision@1, R-Precision, MAP@R and the selection
        metric), "learning rate" (``learning_rate`` or ``lr``).
    """
    losses = [name for name in columns if name.endswith("loss")]
    retrieval = [
        name
        for name in columns
        if name == selection_metric
        or any(name.lower().removeprefix("val_").startswith(p) for p in RETRIEVAL_COLUMNS)
    ]
    learning_rate = next((name for name in ("learning_rate", "lr") if name in columns), None)
    panels = [("losses", losses), ("retrieval", retrieval)]
    panels.append(("learning rate", [learning_rate] if learning_rate else []))
    return [(title, names) for title, names in panels if names]


def best_epoch(values: np.ndarray) -> int | None:
    """Index of the first highest finite value (the epoch whose model is kept), or None."""
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).any():
        return None
    return int(np.nanargmax(np.where(np.isfinite(values), values, np.nan)))


def plot_training_curves(
    csv_path: PathLike, path: PathLike, *, selection_metric: str = "val_map@r"
) -> Path:
    """Plots a Keras CSVLogger log: losses, retrieval metrics and the learning rate.

    One panel with every column whose name ends in ``loss`` (validation columns dashed in the
    colour of their training column), one with the retrieval metrics (Recall@K, MAP@R, ...;
    see :func:`training_curve_panels`) in which the metric that selects the best model is drawn
    thick, its best epoch marked with a star, and one with ``learning_rate`` (or ``lr``) on a
    log scale if present. The x axis is the ``epoch`` column (shown 1-based) or the row number.

    Args:
        csv_path: The CSV log.
        path: Output PNG file; parent directories are created.
        selection_metric: The log column that selects the best model (validation MAP@R).

    Returns:
        The path of the PNG written.

    Raises:
        FileNotFoundError: If the log does not exist.
        ValueError: If the log is empty or has no loss, retrieval or learning-rate column.
    """
    csv_path = Path(csv_path)
    log = _read_csv_log(csv_path)
    steps = len(next(iter(log.values())))
    x = np.arange(1, steps + 1, dtype=np.float64)
    if "epoch" in log:
        # Epochs count from 1 (net.callbacks); logs of runs before that counted from 0.
        x = log["epoch"] + 1 if log["epoch"][0] == 0 else log["epoch"]
    panels = training_curve_panels(list(log), selection_metric)
    if not panels:
        raise ValueError(
            f"training log {csv_path} has no loss, retrieval or learning-rate column "
            f"(columns: {list(log)})"
        )

    figure = Figure(figsize=(5.0 * len(panels), 3.8))
    grid = figure.subplots(1, len(panels), squeeze=False)[0]
    for axes, (title, names) in zip(grid, panels, strict=True):
        colors: dict[str, str] = {}
        for name in names:
            base = name.removeprefix("val_")
            style = "--" if name.startswith("val_") else "-"
            selected = name == selection_metric
            (line,) = axes.plot(
                x,
                log[name],
                style,
                marker=".",
                label=f"{name} (selects the best model)" if selected else name,
                color=colors.get(base),
                linewidth=2.5 if selected else 1.2,
            )
            colors.setdefault(base, line.get_color())
            best = best_epoch(log[name]) if selected else None
            if best is not None:
                axes.plot(
                    x[best], log[name][best], "*", markersize=14, color=line.get_color(),
                    label=f"best: epoch {x[best]:.0f}, {log[name][best]:.4f}",
                )  # fmt: skip
        axes.set_title(title)
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(True, alpha=0.3)
        if title == "learning rate" and np.nanmin(log[names[0]]) > 0:
            axes.set_yscale("log")
        else:
            axes.legend(fontsize=7)
    return save_figure(figure, path)


def plot_lr_range_test(
    learning_rates: np.ndarray,
    losses: np.ndarray,
    smoothed: np.ndarray,
    path: PathLike,
    *,
    suggestion: float,
    minimum_lr: float | None = None,
    steepest_lr: float | None = None,
    title: str | None = None,
) -> Path:
    """Plots a learning-rate range test: loss against learning rate on a log axis.

    Args:
        learning_rates: (n,) positive rates, increasing.
        losses: (n,) the loss of each batch (drawn faint).
        smoothed: (n,) the smoothed loss (drawn bold).
        path: Output PNG file; parent directories are created.
        suggestion: the suggested rate (a vertical line, labelled).
        minimum_lr: the rate at the smoothed minimum, marked if given.
        steepest_lr: the rate of steepest descent, marked if given.
        title: Optional figure title.

    Returns:
        The path of the PNG written.

    Raises:
        ValueError: lengths differ, a rate is not positive, or there is no point.
    """
    rates = np.asarray(learning_rates, dtype=np.float64)
    if not (len(rates) == len(losses) == len(smoothed)) or len(rates) == 0:
        raise ValueError(
            f"need n >= 1 rates, losses and smoothed losses, got {len(rates)}, {len(losses)} and "
            f"{len(smoothed)}"
        )
    if (rates <= 0).any():
        raise ValueError("learning rates must be positive (log axis)")
    figure = Figure(figsize=(6.4, 4.2))
    axes = figure.subplots()
    axes.plot(rates, losses, color="#90a4ae", linewidth=0.8, label="loss of each batch")
    axes.plot(rates, smoothed, color=QUERY_COLOR, linewidth=2.0, label="smoothed")
    for rate, label, marker in (
        (minimum_lr, "smoothed minimum", "o"),
        (steepest_lr, "steepest descent", "v"),
    ):
        if rate is not None:
            y = float(np.interp(np.log(rate), np.log(rates), smoothed))
            axes.plot([rate], [y], marker, color="black", label=f"{label}: {rate:.2g}")
    axes.axvline(
        suggestion, color=MATCH_COLOR, linestyle="--", label=f"suggestion: {suggestion:.2g}"
    )
    axes.set_xscale("log")
    axes.set_xlabel("learning rate")
    axes.set_ylabel("training loss")
    low, high = np.nanmin(smoothed), np.nanmax(smoothed)
    spread = max(high - low, 1e-6)
    axes.set_ylim(low - 0.1 * spread, high + 0.3 * spread)  # raw spikes may leave the frame
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7)
    if title:
        axes.set_title(title)
    return save_figure(figure, path)


def plot_bar_chart(
    labels: Sequence[str],
    series: dict[str, Sequence[float]],
    path: PathLike,
    *,
    title: str | None = None,
) -> Path:
    """Horizontal grouped bars: one group per label (the first at the top), one bar per series.

    Args:
        labels: the groups, e.g. a sweep's run names, in the order to show from the top.
        series: ``{name: one value per label}``, e.g. ``{"recall@1": [...], "map@r": [...]}``;
            NaN values draw no bar.
        path: output PNG file; parent directories are created.
        title: the figure's title.

    Returns:
        The path of the PNG written.

    Raises:
        ValueError: no labels, no series, or a series whose length is not the labels'.
    """
    if not labels or not series:
        raise ValueError("a bar chart needs at least one label and one series")
    for name, values in series.items():
        if len(values) != len(labels):
            raise ValueError(f"series {name!r} has {len(values)} values for {len(labels)} labels")
    count = len(series)
    height = 0.8 / count
    figure = Figure(figsize=(9.0, 1.2 + 0.25 * len(labels) * max(count, 2)))
    axes = figure.subplots()
    rows = np.arange(len(labels))[::-1].astype(np.float64)  # the first label at the top
    for index, (name, values) in enumerate(series.items()):
        offsets = rows + (count - 1) / 2 * height - index * height
        bars = axes.barh(offsets, np.asarray(values, dtype=np.float64), height=height, label=name)
        axes.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
    axes.set_yticks(rows, [shorten_middle(label, 60) for label in labels], fontsize=8)
    axes.grid(True, axis="x", alpha=0.3)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars
    if title:
        axes.set_title(title)
    return save_figure(figure, path)
