"""Metric tables for people: one model's metrics, or several models side by side.

Recall@K columns come first (by K), then the scalar metrics of
:func:`net.analysis.retrieval_metrics`, then anything else; fractions are shown as percentages,
ranks and counts as plain numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

# Metric keys of retrieval_metrics() (besides one "recall@K" per requested K), in table order.
_SCALAR_METRICS: tuple[str, ...] = (
    "precision@1",
    "r_precision",
    "map@r",
    "average_ranking_position",
)
#: Metrics that are ranks (shown as numbers, not percentages).
_RANK_KEYS: tuple[str, ...] = ("average_ranking_position",)
_COUNT_KEYS: tuple[str, ...] = ("num_queries", "num_gallery", "embedding_dim")


def _metric_columns(metrics: Iterable[str]) -> list[str]:
    """Orders metric keys: recall@K by K, then the scalar metrics, then anything else."""
    keys = list(dict.fromkeys(metrics))
    recalls = sorted(
        (key for key in keys if key.startswith("recall@") and key[7:].isdigit()),
        key=lambda key: int(key[7:]),
    )
    scalars = [key for key in _SCALAR_METRICS if key in keys]
    rest = [key for key in keys if key not in recalls and key not in scalars]
    return recalls + scalars + rest


def _format_value(key: str, value: object) -> str:
    """Formats one metric: counts as integers, ranks and fractions (as %) with two decimals."""
    if key in _RANK_KEYS and isinstance(value, (float, np.floating)):
        return f"{float(value):.2f}"
    if key in _COUNT_KEYS or isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{100.0 * float(value):.2f}"
    return str(value)


def _display_name(key: str) -> str:
    """A metric's name in a table: ranks are marked, since the table's values are in %."""
    return f"{key} (rank)" if key in _RANK_KEYS else key


def _render_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Renders rows as a plain-text table: first column left-aligned, the others right."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [cells[0].ljust(widths[0])]
        parts += [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def format_metrics_table(metrics: Mapping[str, object]) -> str:
    """Formats one model's metrics as a two-column plain-text table.

    Fractions are shown as percentages with two decimals; counts as integers; ranks (the
    average ranking position) as numbers, marked "(rank)".

    Args:
        metrics: A dict as returned by :func:`retrieval_metrics`.

    Returns:
        The table, one metric per line, without a trailing newline.
    """
    rows = [
        [_display_name(key), _format_value(key, metrics[key])] for key in _metric_columns(metrics)
    ]
    return _render_table(["metric", "value (%)"], rows)


def compare_models_table(results: Mapping[str, Mapping[str, object]]) -> str:
    """Formats several models' metrics side by side: one row per model, one column per metric.

    Fractions are shown as percentages with two decimals; a metric a model lacks shows "-".

    Args:
        results: ``{model name: metrics dict}`` as returned by :func:`retrieval_metrics`.

    Returns:
        The table, without a trailing newline.

    Raises:
        ValueError: If results is empty.
    """
    if not results:
        raise ValueError("compare_models_table needs at least one model's results")
    columns = _metric_columns(key for metrics in results.values() for key in metrics)
    rows = [
        [name] + [_format_value(key, m[key]) if key in m else "-" for key in columns]
        for name, m in results.items()
    ]
    return _render_table(["model (values in %)", *map(_display_name, columns)], rows)
