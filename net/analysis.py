"""Retrieval metrics (their tables are in :mod:`net.metric_tables`, re-exported here).

The metrics follow the standard metric-learning protocol: every query searches the gallery, the
query itself excluded by index when the queries are the gallery, and an item is relevant when it
shares the query's label. Definitions (Musgrave et al. 2020, "A Metric Learning Reality Check"):

- Recall@K: fraction of queries with at least one relevant item among their K nearest.
- Precision@1: fraction of queries whose nearest neighbour is relevant (equals Recall@1).
- R-Precision: with R the number of relevant items in the gallery for the query, the fraction of
  the query's R nearest neighbours that are relevant.
- MAP@R: mean over queries of (1/R) * sum_{i=1..R} P(i) * rel(i), where rel(i) is 1 when the i-th
  neighbour is relevant and P(i) is the precision among the first i neighbours.
- Average ranking position (the seed repository's training metric): for each query, the mean
  rank of its relevant items when the whole gallery is ranked, ranks counted from 1 and the
  query itself excluded, averaged over queries; lower is better, and (R + 1) / 2 (the R
  relevant items ranked 1 to R) is perfect. The seed ranked the query too, at rank 0, so its
  values are lower (the query contributes a 0 to its class's mean).

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

from collections.abc import Iterable
from typing import Any, NamedTuple

import numpy as np

from net.metric_tables import compare_models_table, format_metrics_table
from net.neighbours import (
    FAISS_INDEX_TYPES,
    SEARCH_METHODS,
    as_embeddings,
    as_labels,
    build_faiss_index,
    nearest_neighbours,
)
from net.ranking import average_ranking_position

__all__ = [
    "DEFAULT_KS",
    "SEARCH_METHODS",
    "MatchTable",
    "average_ranking_position",
    "average_ranking_position_from_matches",
    "average_ranking_positions",
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


#: Queries per chunk of the search in the metrics: a chunk's neighbour table (12 bytes a
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
    gallery_labels = as_labels(labels, gallery.shape[0], "labels")
    if (query_embeddings is None) != (query_labels is None):
        raise ValueError("query_embeddings and query_labels must be given together")
    if query_embeddings is None:
        queries, labels_q = gallery, gallery_labels
    else:
        queries = as_embeddings(query_embeddings, "query_embeddings")
        labels_q = as_labels(query_labels, queries.shape[0], "query_labels")

    classes, counts = np.unique(gallery_labels, return_counts=True)
    position = np.clip(np.searchsorted(classes, labels_q), 0, classes.size - 1)
    num_relevant = np.where(classes[position] == labels_q, counts[position], 0).astype(np.int64)
    if query_embeddings is None:
        num_relevant -= 1  # The query itself is in the gallery but never returned.
    keep = np.flatnonzero(num_relevant > 0)
    if keep.size == 0:
        raise ValueError("no query has another item of its label in the gallery")

    k = max(min_k, int(num_relevant[keep].max())) if up_to_r else min_k
    # The search runs in chunks of queries, each turned into its boolean matches at once: SOP's
    # 60,502 queries x 1,000 neighbours would otherwise hold 726 MB of neighbour indices and
    # distances (and FAISS several copies). FAISS builds its index once for all chunks.
    index = None
    if method in FAISS_INDEX_TYPES:
        index = build_faiss_index(gallery, index_type=FAISS_INDEX_TYPES[method], nprobe=nprobe)
    matches = np.empty((keep.size, k), dtype=bool)
    for start in range(0, keep.size, _MATCH_CHUNK):
        rows = keep[start : start + _MATCH_CHUNK]
        # Queries taken from the gallery must not find themselves; separate ones exclude none.
        neighbours, _ = nearest_neighbours(
            queries[rows],
            gallery,
            k=k,
            block_size=block_size,
            exclude_indices=rows if query_embeddings is None else None,
            method=method,
            nprobe=nprobe,
            index=index,
        )
        matches[start : start + _MATCH_CHUNK] = (
            gallery_labels[neighbours] == labels_q[rows][:, None]
        )
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


def average_ranking_positions(matches: np.ndarray) -> np.ndarray:
    """Each query's average ranking position from its whole ranking.

    Args:
        matches: (Q, M) bool; row i marks which of query i's M ranked gallery items (nearest
            first, the whole gallery except the query itself) share its label.

    Returns:
        (Q,) float64: the mean 1-based rank of each row's relevant items (NaN for a row without
        any).
    """
    matches = np.asarray(matches, dtype=bool)
    counts = matches.sum(axis=1)
    rank_sums = matches.astype(np.float64) @ np.arange(1, matches.shape[1] + 1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, rank_sums / np.maximum(counts, 1), np.nan)


def average_ranking_position_from_matches(matches: np.ndarray) -> float:
    """Mean over queries of :func:`average_ranking_positions`.

    Rows without a relevant item are left out, like queries with R = 0 in every metric.

    Raises:
        ValueError: If no row has a relevant item.
    """
    positions = average_ranking_positions(matches)
    if not np.isfinite(positions).any():
        raise ValueError("no query has another item of its label in the gallery")
    return float(np.nanmean(positions))


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
    embeddings: np.ndarray, labels: np.ndarray, ks: Iterable[int] = DEFAULT_KS, **search: Any
) -> dict[int, float]:
    """Recall@K: fraction of queries with a same-label item among their K nearest neighbours.

    Searches only max K neighbours.

    Args:
        embeddings: Gallery embeddings, shape (N, D).
        labels: Gallery labels, shape (N,) (any comparable dtype).
        ks: The Ks to report.
        **search: The search options of :func:`retrieval_metrics` (``query_embeddings``,
            ``query_labels``, ``block_size``, ``method``, ``nprobe``).

    Returns:
        ``{k: recall}`` for each K, ascending, values in [0, 1].

    Raises:
        ValueError: On malformed inputs or a K larger than the gallery allows.
    """
    ks = _validate_ks(ks)
    table = match_table(embeddings, labels, min_k=ks[-1], up_to_r=False, **search)
    return recall_at_k_from_matches(table.matches, ks)


def precision_at_1(embeddings: np.ndarray, labels: np.ndarray, **search: Any) -> float:
    """Precision@1: fraction of queries whose nearest neighbour shares their label.

    Args and Raises as in :func:`recall_at_k`.

    Returns:
        Precision@1 in [0, 1].
    """
    return precision_at_1_from_matches(match_table(embeddings, labels, up_to_r=False, **search)[0])


def r_precision(embeddings: np.ndarray, labels: np.ndarray, **search: Any) -> float:
    """Mean R-Precision: the fraction of relevant items among each query's R nearest.

    R is the number of gallery items sharing the query's label (not counting the query itself).

    Args and Raises as in :func:`recall_at_k`.

    Returns:
        R-Precision in [0, 1].
    """
    return r_precision_from_matches(*match_table(embeddings, labels, **search)[:2])


def map_at_r(embeddings: np.ndarray, labels: np.ndarray, **search: Any) -> float:
    """Mean Average Precision at R (Musgrave et al. 2020).

    For one query: (1/R) * sum_{i=1..R} P(i) * rel(i), with P(i) the precision among the first i
    neighbours and rel(i) = 1 when the i-th neighbour shares the query's label.

    Args and Raises as in :func:`recall_at_k`.

    Returns:
        MAP@R in [0, 1].
    """
    return map_at_r_from_matches(*match_table(embeddings, labels, **search)[:2])


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
    ranking: bool = False,
) -> dict[str, float | int]:
    """All retrieval metrics from a single nearest-neighbour search.

    The search returns max(max K, max R) neighbours once; every metric reads that table.
    ``ranking=True`` adds the average ranking position, which ranks the whole gallery (a second,
    exact search; see :func:`average_ranking_position`).

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
        ranking: Also compute ``average_ranking_position``.

    Returns:
        A JSON-ready dict: ``recall@K`` for each K (floats in [0, 1]), ``precision@1``,
        ``r_precision``, ``map@r``, ``num_queries`` (queries evaluated: those with R >= 1),
        ``embedding_dim`` and, with ``ranking``, ``average_ranking_position`` (a rank, >= 1).

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
    metrics = metrics_from_matches(table, ks)
    if ranking:
        metrics["average_ranking_position"] = average_ranking_position(
            embeddings, labels, query_embeddings=query_embeddings, query_labels=query_labels
        )
    return metrics
