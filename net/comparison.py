"""The comparison of a sweep's runs: one table of test metrics, as Markdown, CSV and a chart.

Rows are the runs of :mod:`net.sweep`'s record, best first by the test value of the metric that
selected each run's best model (``best_val_<metric>`` in its ``metrics.json``); the sweep's
settings are the first columns. Imports no TensorFlow (parameters are read from the saved
model's weights file).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from net.files import atomic_write_text
from net.grid import format_value
from net.sweep import read_record

#: The comparison files, in the sweep's folder.
COMPARISON_NAME = "comparison"


def saved_model_parameters(path: str | os.PathLike) -> int | None:
    """The number of weights (trainable or not) of a saved ``.keras`` model, read without Keras.

    Sums the sizes of the model's variables in the archive's ``model.weights.h5`` (what
    ``model.count_params()`` counts; optimizer variables are left out).

    Returns:
        The count, or ``None`` when the file is missing or not a ``.keras`` archive.
    """
    import h5py

    try:
        with zipfile.ZipFile(path) as archive, archive.open("model.weights.h5") as stored:
            weights = h5py.File(io.BytesIO(stored.read()), "r")
    except (OSError, KeyError, zipfile.BadZipFile):
        return None
    total = 0

    def add(name: str, item: Any) -> None:
        nonlocal total
        if isinstance(item, h5py.Dataset) and not name.startswith("optimizer/"):
            total += int(math.prod(item.shape))

    with weights:
        weights.visititems(add)
    return total


def _log_columns(path: Path) -> dict[str, list[float]]:
    """The numeric columns of a run's ``log.csv`` (empty when absent)."""
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError:
        return {}
    columns: dict[str, list[float]] = {}
    for row in rows:
        for key, text in row.items():
            try:
                columns.setdefault(key, []).append(float(text))
            except (TypeError, ValueError):
                pass
    return columns


#: ``log.csv`` columns of a run's training speed and epoch wall time (net.callbacks).
SPEED_COLUMN = "train_images_per_second"
SECONDS_COLUMN = "epoch_seconds"


def _throughput(log: Mapping[str, list[float]]) -> tuple[float | None, float | None]:
    """Training images/s (mean over epochs) and training seconds (sum) from a run's log.

    ``None`` for what the log lacks (logs written before these columns existed).
    """
    speeds, seconds = log.get(SPEED_COLUMN), log.get(SECONDS_COLUMN)
    return (sum(speeds) / len(speeds) if speeds else None), (sum(seconds) if seconds else None)


def sweep_results(sweep_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """One row per run of a sweep: settings, status, test metrics, time, images/s, parameters.

    Rows are sorted by the test value of the metric that selected the runs' best models (best
    first); runs without metrics last.

    Raises:
        SweepError: the folder is not a sweep.
    """
    sweep_dir = Path(sweep_dir)
    record = read_record(sweep_dir)
    rows = []
    for name, entry in record["runs"].items():
        run_dir = sweep_dir / name
        try:
            metrics = json.loads((run_dir / "metrics.json").read_text())
        except (OSError, ValueError):
            metrics = None
        images_per_second, train_seconds = _throughput(_log_columns(run_dir / "log.csv"))
        status = "finished" if metrics else entry.get("status", "pending")
        if status == "finished" and not metrics:  # e.g. deleted or truncated by hand
            status = f"finished, but {run_dir / 'metrics.json'} is missing or unreadable"
        rows.append(
            {
                "name": name,
                "settings": entry.get("settings", {}),
                "status": status,
                "message": None if metrics else entry.get("message"),
                "selection_metric": selection_metric(metrics or {}),
                "test": (metrics or {}).get("test", {}),
                "epochs": (metrics or {}).get("epochs_done"),
                # A run rejected before it started (or still pending) has no time, not 0.
                "seconds": train_seconds
                if train_seconds is not None
                else entry.get("seconds") or None,
                "images_per_second": images_per_second,
                "parameters": saved_model_parameters(run_dir / "best.keras") if metrics else None,
            }
        )

    def order(row: dict[str, Any]) -> tuple[bool, float]:
        score = row["test"].get(row["selection_metric"] or "")
        return (score is None, -(score or 0.0))

    return sorted(rows, key=order)


def selection_metric(metrics: Mapping[str, Any]) -> str | None:
    """The metric that selected a run's best model (``best_val_<metric>`` in its summary)."""
    return next((key[len("best_val_") :] for key in metrics if key.startswith("best_val_")), None)


def _metric_keys(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    keys = list(dict.fromkeys(k for row in rows for k in row["test"]))
    recalls = sorted(
        (k for k in keys if k.startswith("recall@") and k[7:].isdigit()), key=lambda k: int(k[7:])
    )
    return recalls + [k for k in ("map@r",) if k in keys]


def comparison_table(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """The comparison as a header and rows of raw values (settings first, then metrics).

    A ``status`` column is added when some run did not finish.
    """
    keys = list(dict.fromkeys(k for row in rows for k in row["settings"]))
    metrics = _metric_keys(rows)
    header = [*keys, *metrics, "epochs", "time (s)", "images/s", "parameters"]
    with_status = any(row["status"] != "finished" for row in rows)
    if with_status:
        header.append("status")
    table = []
    for row in rows:
        values = [row["settings"].get(k) for k in keys]
        values += [row["test"].get(k) for k in metrics]
        values += [row["epochs"], row["seconds"], row["images_per_second"], row["parameters"]]
        if with_status:
            message = f": {row['message']}" if row["message"] else ""
            values.append(f"{row['status']}{message}")
        table.append(values)
    return header, table


def _cell(column: str, value: Any) -> str:
    if value is None:
        return ""
    if column.startswith("recall@") or column == "map@r":
        return f"{100 * value:.2f}"
    if column == "time (s)":
        return f"{value:.0f}"
    if column == "images/s":
        return f"{value:.1f}"
    if column == "parameters":
        return f"{value:,}"
    if isinstance(value, str):
        return value
    return format_value(value)


_NUMERIC = ("map@r", "epochs", "time (s)", "images/s", "parameters")


def markdown_table(header: Sequence[str], table: Sequence[Sequence[Any]]) -> str:
    """The comparison as a Markdown table (Recall@K and MAP@R in %)."""
    numeric = [h in _NUMERIC or h.startswith("recall@") for h in header]
    titles = [f"{h} (%)" if h.startswith("recall@") or h == "map@r" else h for h in header]
    lines = [
        "| " + " | ".join(titles) + " |",
        "|" + "|".join("---:" if n else "---" for n in numeric) + "|",
    ]
    for values in table:
        cells = [_cell(h, v).replace("|", "\\|") for h, v in zip(header, values, strict=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_comparison(sweep_dir: str | os.PathLike) -> dict[str, Path]:
    """Writes the sweep's comparison: Markdown and CSV tables, a bar chart PNG and an HTML page.

    Returns:
        ``{"markdown": ..., "csv": ..., "png": ..., "html": ...}`` (no PNG or HTML page when
        no run has finished).

    Raises:
        SweepError: the folder is not a sweep.
    """
    from net import charts, visualize  # matplotlib: only when drawing

    sweep_dir = Path(sweep_dir)
    rows = sweep_results(sweep_dir)
    header, table = comparison_table(rows)
    markdown = markdown_table(header, table)
    paths = {
        "markdown": atomic_write_text(sweep_dir / f"{COMPARISON_NAME}.md", markdown + "\n"),
    }
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(
        [v if v is None or isinstance(v, (int, float, str)) else format_value(v) for v in values]
        for values in table
    )
    paths["csv"] = atomic_write_text(sweep_dir / f"{COMPARISON_NAME}.csv", buffer.getvalue())
    finished = [row for row in rows if row["test"]]
    if finished:
        metric = finished[0]["selection_metric"]
        metrics = _metric_keys(finished)
        paths["png"] = charts.plot_bar_chart(
            [row["name"] for row in finished],
            {key: [100 * row["test"].get(key, math.nan) for row in finished] for key in metrics},
            sweep_dir / f"{COMPARISON_NAME}.png",
            title=f"Sweep {sweep_dir.name}: test metrics (%), best {metric} first",
        )
        paths["html"] = visualize.write_html_report(
            f"Sweep {sweep_dir.name}",
            [("test metrics (%)", [paths["png"]])],
            sweep_dir / f"{COMPARISON_NAME}.html",
            notes=markdown,
        )
    return paths
