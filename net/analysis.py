"""Retrieval metrics and their tables.

The metrics follow the standard metric-learning protocol: every query searches the gallery, the
query itself excluded by index when the queries are the gallery, and an item is relevant when it
shares the query's label. Definitions (Musgrave et al. 2020, "A Metric Learning Reality Check"):

- Recall@K: fraction of queries with at least one relevant item among their K nearest.
- Precision@1: fraction of queries whose nearest neighbour is relevant (equals Recall@1).
- R-Precision: with R the number of relevant items in the gallery for the query, the fraction of
  the query's R nearest neighbours that are relevant.
- MAP@R: mean over queries of (1/R) * sum_{i=1..R} P(i) * rel(i), where rel(i) is 1 when the i-th
  neighbour is relevant and P(i) is the precision among the first i neighbours.

Queries without any relevant item in the gallery (R = 0) cannot be answered and are left out of
every metric, as in pytorch-metric-learning's AccuracyCalculator; ``num_queries`` counts the
queries that were evaluated.

Two levels, as in pytorch-metric-learning's accuracy calculator: :func:`match_table` runs one
neighbour search (:mod:`net.neighbours`) and marks which neighbours share the query's label; the
pure functions ``*_from_matches`` compute each metric from that table. The functions taking
embeddings (:func:`recall_at_k`, :func:`precision_at_1`, :func:`r_precision`, :func:`map_at_r`,
and :func:`retrieval_metrics`, all of them from one search) are thin wrappers over the two.

This module works on NumPy arrays and imports no TensorFlow. :func:`compute_embeddings` lives in
:mod:`net.inference` and is re-exported here (imported on first use).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from net.neighbours import SEARCH_METHODS, as_embeddings, nearest_neighbours

__all__ = [
    "DEFAULT_KS",
    "SEARCH_METHODS",
    "MatchTable",
    "compare_models_table",
    "format_metrics_table",
    "map_at_r",
    "map_at_r_from_matches",
    "match_table",
    "metrics_from_matches",
    "nearest_neighbours",
    "precision_at_1",
    "precision_at_1_from_matches",
    "r_precision",
    "r_precision_from_matches",
    "recall_at_k",
    "recall_at_k_from_matches",
    "retrieval_metrics",
]

DEFAULT_KS: tuple[int, ...] = (1, 2, 4, 8)

# Metric keys of retrieval_metrics() (besides one "recall@K" per requested K), in table order.
_SCALAR_METRICS: tuple[str, ...] = ("precision@1", "r_precision", "map@r")
_COUNT_KEYS: tuple[str, ...] = ("num_queries", "num_gallery", "embedding_dim")

#: Queries per chunk of the exact search in the metrics: a chunk's neighbour table (12 bytes a
#: neighbour) is turned into booleans before the next chunk is searched.
_MATCH_CHUNK = 8192


def __getattr__(name: str) -> Any:
    """Re-exports :func:`net.inference.compute_embeddings` without importing TensorFlow early."""
    if name == "compute_embeddings":
        from net.inference import compute_embeddings

        return compute_embeddings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------------------------
# One search: the match table
# --------------------------------------------------------------------------------------------


class MatchTable(NamedTuple):
    """Which neighbours of each query share its label.

    Attributes:
        matches: (Q, k) bool, ``matches[i, j]``: the j-th nearest neighbour of query i is
            relevant. Only the Q queries with R >= 1 are rows.
        num_relevant: (Q,) int64, R of each query: the gallery items sharing its label (not
            counting the query itself).
        embedding_dim: the embedding dimension D.
    """

    matches: np.ndarray
    num_relevant: np.ndarray
    embedding_dim: int


def _validate_ks(ks: Iterable[int]) -> tuple[int, ...]:
    """Returns the sorted unique Ks, checking that they are positive integers.

    Raises:
        ValueError: If ks is empty or holds a value that is not a positive integer.
    """
    values = tuple(ks)
    if not values or any(isinstance(k, bool) or int(k) != k or k < 1 for k in values):
        raise ValueError(f"ks must be a non-empty sequence of positive integers, got {values}")
    return tuple(sorted({int(k) for k in values}))


def _labels(labels: np.ndarray, count: int, name: str) -> np.ndarray:
    """Validates a (N,) label vector matching ``count`` embeddings.

    Raises:
        ValueError: If the labels are not one-dimensional of length ``count``.
    """
    values = np.asarray(labels)
    if values.shape != (count,):
        raise ValueError(
            f"{name} must have shape ({count},) to match the embeddings, got {values.shape}"
        )
    return values


def match_table(
    embeddings: np.ndarray,
    labels: np.ndarray,
    *,
    min_k: int = 1,
    up_to_r: bool = True,
    query_embeddings: np.ndarray | None = None,
    query_labels: np.ndarray | None = None,
    block_size: int = 1024,
    method: str = "exact",
    nprobe: int = 16,
) -> MatchTable:
    """Runs one neighbour search and marks which neighbours share the query's label.

    Args:
        embeddings: Gallery embeddings, shape (N, D).
        labels: Gallery labels, shape (N,) (any comparable dtype).
        min_k: Smallest number of neighbours needed (the largest K of Recall@K).
        up_to_r: Search max(min_k, max R) neighbours, as R-Precision and MAP@R need; False
            searches only min_k (enough for Recall@K and Precision@1).
        query_embeddings: Separate queries, shape (M, D); None makes every gallery item a query,
            excluded from its own neighbours by index.
        query_labels: Labels (M,) of the separate queries; required with query_embeddings.
        block_size: Queries per block of the exact search.
        method: Neighbour search, one of :data:`SEARCH_METHODS` (see
            :func:`net.neighbours.nearest_neighbours`).
        nprobe: IVF cells scanned per query (``"faiss_ivf"`` only).

    Returns:
        The :class:`MatchTable` over the queries with R >= 1.

    Raises:
        ValueError: On malformed inputs, when no query has a relevant item in the gallery, or
            when min_k exceeds the number of gallery items a query can return.
    """
    gallery = as_embeddings(embeddings, "embeddings")
    gallery_labels = _labels(labels, gallery.shape[0], "labels")
    if (query_embeddings is None) != (query_labels is None):
        raise ValueError("query_embeddings and query_labels must be given together")
    if query_embeddings is None:
        queries, labels_q = gallery, gallery_labels
    else:
        queries = as_embeddings(query_embeddings, "query_embeddings")
        labels_q = _labels(query_labels, queries.shape[0], "query_labels")

    classes, counts = np.unique(gallery_labels, return_counts=True)
    position = np.clip(np.searchsorted(classes, labels_q), 0, classes.size - 1)
    num_relevant = np.where(classes[position] == labels_q, counts[position], 0).astype(np.int64)
    if query_embeddings is None:
        num_relevant -= 1  # The query itself is in the gallery but never returned.
    keep = np.flatnonzero(num_relevant > 0)
    if keep.size == 0:
        raise ValueError("no query has another item of its label in the gallery")

    k = max(min_k, int(num_relevant[keep].max())) if up_to_r else min_k
    # The exact search runs in chunks of queries, each turned into its boolean matches at once:
    # SOP's 60,502 queries x 1,000 neighbours would otherwise hold 726 MB of neighbour indices
    # and distances. FAISS searches once (its index is built per call).
    chunk = _MATCH_CHUNK if method == "exact" else keep.size
    matches = np.empty((keep.size, k), dtype=bool)
    for start in range(0, keep.size, chunk):
        rows = keep[start : start + chunk]
        neighbours, _ = nearest_neighbours(
            queries[rows],
            gallery,
            k=k,
            block_size=block_size,
            # Queries taken from the gallery must not find themselves; separate ones exclude none.
            exclude_indices=rows if query_embeddings is None else None,
            method=method,
            nprobe=nprobe,
        )
        matches[start : start + chunk] = gallery_labels[neighbours] == labels_q[rows][:, None]
    return MatchTable(matches, num_relevant[keep], int(gallery.shape[1]))


# --------------------------------------------------------------------------------------------
# Metrics over a match table (pure functions)
# --------------------------------------------------------------------------------------------


def recall_at_k_from_matches(matches: np.ndarray, ks: Iterable[int]) -> dict[int, float]:
    """Recall@K for each K from a (Q, >= max K) boolean match table.

    Returns:
        ``{k: recall}`` for each K, ascending.
    """
    return {k: float(matches[:, :k].any(axis=1).mean()) for k in _validate_ks(ks)}


def precision_at_1_from_matches(matches: np.ndarray) -> float:
    """Precision@1 from a (Q, >= 1) boolean match table."""
    return float(matches[:, 0].mean())


def r_precision_from_matches(matches: np.ndarray, num_relevant: np.ndarray) -> float:
    """Mean R-Precision from a (Q, >= max R) match table and R per query (Q,), R >= 1."""
    matches = matches[:, : int(num_relevant.max())]  # the table may run to K = 1000
    within_r = np.arange(matches.shape[1])[None, :] < num_relevant[:, None]
    return float(((matches & within_r).sum(axis=1) / num_relevant).mean())


def map_at_r_from_matches(matches: np.ndarray, num_relevant: np.ndarray) -> float:
    """Mean MAP@R from a (Q, >= max R) match table and R per query (Q,), R >= 1."""
    matches = matches[:, : int(num_relevant.max())]  # the table may run to K = 1000
    ranks = np.arange(1, matches.shape[1] + 1)[None, :]
    precision_at_i = np.cumsum(matches, axis=1) / ranks
    within_r = ranks <= num_relevant[:, None]
    return float(((precision_at_i * (matches & within_r)).sum(axis=1) / num_relevant).mean())


def metrics_from_matches(table: MatchTable, ks: Iterable[int] = DEFAULT_KS) -> dict[str, Any]:
    """Every metric from one match table (searched up to R, see :func:`match_table`).

    Returns:
        A JSON-ready dict: ``recall@K`` for each K, ``precision@1``, ``r_precision``,
        ``map@r``, ``num_queries`` and ``embedding_dim``.
    """
    matches, num_relevant, dim = table
    metrics: dict[str, Any] = {
        f"recall@{k}": value for k, value in recall_at_k_from_matches(matches, ks).items()
    }
    metrics["precision@1"] = precision_at_1_from_matches(matches)
    metrics["r_precision"] = r_precision_from_matches(matches, num_relevant)
    metrics["map@r"] = map_at_r_from_matches(matches, num_relevant)
    metrics["num_queries"] = int(matches.shape[0])
    metrics["embedding_dim"] = int(dim)
    return metrics


# --------------------------------------------------------------------------------------------
# Metrics of embeddings (one search each)
# --------------------------------------------------------------------------------------------


def recall_at_k(
    embeddings: np.ndarray,
    labels: np.ndarray,
    ks: Iterable[int] = DEFAULT_KS,
    *,
    query_embeddings: np.ndarray | None = None,
    query_labels: np.ndarray | None = None,
    block_size: int = 1024,
    method: str = "exact",
    nprobe: int = 16,
) -> dict[int, float]:
    """Recall@K: fraction of queries with a same-label item among their K nearest neighbours.

    Searches only max K neighbours.

    Args:
        embeddings: Gallery embeddings, shape (N, D).
        labels: Gallery labels, shape (N,) (any comparable dtype).
        ks: The Ks to report.
        query_embeddings: Separate queries, shape (M, D); None makes every gallery item a query,
            excluded from its own neighbours by index.
        query_labels: Labels (M,) of the separate queries.
        block_size: Queries per block of the nearest-neighbour search.
        method: Neighbour search: ``"exact"``, ``"faiss"`` (exact, FAISS) or
            ``"faiss_ivf"`` (approximate); see :func:`net.neighbours.nearest_neighbours`.
        nprobe: IVF cells scanned per query (``"faiss_ivf"`` only).

    Returns:
        ``{k: recall}`` for each K, ascending, values in [0, 1].

    Raises:
        ValueError: On malformed inputs or a K larger than the gallery allows.
    """
    ks = _validate_ks(ks)
    table = match_table(
        embeddings,
        labels,
        min_k=ks[-1],
        up_to_r=False,
        query_embeddings=query_embeddings,
        query_labels=query_labels,
        block_size=block_size,
        method=method,
        nprobe=nprobe,
    )
    return recall_at_k_from_matches(table.matches, ks)


def precision_at_1(
    embeddings: np.ndarray,
    labels: np.ndarray,
    *,
    query_embeddings: np.ndarray | None = None,
    query_labels: np.ndarray | None = None,
    block_size: int = 1024,
    method: str = "exact",
    nprobe: int = 16,
) -> float:
    """Precision@1: fraction of queries whose nearest neighbour shares their label.

    Args and Raises as in :func:`recall_at_k`.

    Returns:
        Precision@1 in [0, 1].
    """
    table = match_table(
        embeddings,
        labels,
        up_to_r=False,
        query_embeddings=query_embeddings,
        query_labels=query_labels,
        block_size=block_size,
        method=method,
        nprobe=nprobe,
    )
    return precision_at_1_from_matches(table.matches)


def r_precision(
    embeddings: np.ndarray,
    labels: np.ndarray,
    *,
    query_embeddings: np.ndarray | None = None,
    query_labels: np.ndarray | None = None,
    block_size: int = 1024,
    method: str = "exact",
    nprobe: int = 16,
) -> float:
    """Mean R-Precision: the fraction of relevant items among each query's R nearest.

    R is the number of gallery items sharing the query's label (not counting the query itself).

    Args and Raises as in :func:`recall_at_k`.

    Returns:
        R-Precision in [0, 1].
    """
    table = match_table(
        embeddings,
        labels,
        query_embeddings=query_embeddings,
        query_labels=query_labels,
        block_size=block_size,
        method=method,
        nprobe=nprobe,
    )
    return r_precision_from_matches(table.matches, table.num_relevant)


def map_at_r(
    embeddings: np.ndarray,
    labels: np.ndarray,
    *,
    query_embeddings: np.ndarray | None = None,
    query_labels: np.ndarray | None = None,
    block_size: int = 1024,
    method: str = "exact",
    nprobe: int = 16,
) -> float:
    """Mean Average Precision at R (Musgrave et al. 2020).

    For one query: (1/R) * sum_{i=1..R} P(i) * rel(i), with P(i) the precision among the first i
    neighbours and rel(i) = 1 when the i-th neighbour shares the query's label.

    Args and Raises as in :func:`recall_at_k`.

    Returns:
        MAP@R in [0, 1].
    """
    table = match_table(
        embeddings,
        labels,
        query_embeddings=query_embeddings,
        query_labels=query_labels,
        block_size=block_size,
        method=method,
        nprobe=nprobe,
    )
    return map_at_r_from_matches(table.matches, table.num_relevant)


def retrieval_metrics(
    embeddings: np.ndarray,
    labels: np.ndarray,
    ks: Iterable[int] = DEFAULT_KS,
    *,
    query_embeddings: np.ndarray | None = None,
    query_labels: np.ndarray | None = None,
    block_size: int = 1024,
    method: str = "exact",
    nprobe: int = 16,
) -> dict[str, float | int]:
    """All retrieval metrics from a single nearest-neighbour search.

    The search returns max(max K, max R) neighbours once; every metric reads that table.

    Args:
        embeddings: Gallery embeddings, shape (N, D).
        labels: Gallery labels, shape (N,).
        ks: The Ks of Recall@K.
        query_embeddings: Separate queries (M, D), or None for the standard protocol (every
            gallery item is a query, excluded from its own neighbours by index).
        query_labels: Labels (M,) of the separate queries.
        block_size: Queries per block of the nearest-neighbour search.
        method: Neighbour search: ``"exact"``, ``"faiss"`` (exact, FAISS) or
            ``"faiss_ivf"`` (approximate); see :func:`net.neighbours.nearest_neighbours`.
        nprobe: IVF cells scanned per query (``"faiss_ivf"`` only).

    Returns:
        A JSON-ready dict: ``recall@K`` for each K (floats in [0, 1]), ``precision@1``,
        ``r_precision``, ``map@r``, ``num_queries`` (queries evaluated: those with R >= 1) and
        ``embedding_dim``.

    Raises:
        ValueError: On malformed inputs or a K larger than the gallery allows.
    """
    ks = _validate_ks(ks)
    table = match_table(
        embeddings,
        labels,
        min_k=ks[-1],
        query_embeddings=query_embeddings,
        query_labels=query_labels,
        block_size=block_size,
        method=method,
        nprobe=nprobe,
    )
    return metrics_from_matches(table, ks)


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


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
    """Formats one metric: counts as integers, fractions as percentages with two decimals."""
    if key in _COUNT_KEYS or isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{100.0 * float(value):.2f}"
    return str(value)


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

    Fractions are shown as percentages with two decimals; counts as integers.

    Args:
        metrics: A dict as returned by :func:`retrieval_metrics`.

    Returns:
        The table, one metric per line, without a trailing newline.
    """
    rows = [[key, _format_value(key, metrics[key])] for key in _metric_columns(metrics)]
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
    return _render_table(["model (values in %)", *columns], rows)
