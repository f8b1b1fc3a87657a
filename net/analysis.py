"""Retrieval evaluation: exact blocked nearest-neighbour search and retrieval metrics.

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

Everything except :func:`compute_embeddings` works on NumPy arrays and does not import
TensorFlow. Neighbours are ranked by Euclidean distance, ties broken by the lower gallery index,
so results do not depend on the block sizes.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

DEFAULT_KS: tuple[int, ...] = (1, 2, 4, 8)

#: Neighbour-search methods: this module's exact blocked search, FAISS exact (IndexFlatL2) and
#: FAISS IVF-Flat (approximate); the FAISS ones need the optional faiss-cpu (see net.ann).
SEARCH_METHODS: tuple[str, ...] = ("exact", "faiss", "faiss_ivf")

# Metric keys of retrieval_metrics() (besides one "recall@K" per requested K), in table order.
_SCALAR_METRICS: tuple[str, ...] = ("precision@1", "r_precision", "map@r")
_COUNT_KEYS: tuple[str, ...] = ("num_queries", "num_gallery", "embedding_dim")

#: Queries per chunk of the exact search in the metrics: a chunk's neighbour table (12 bytes a
#: neighbour) is turned into booleans before the next chunk is searched.
_MATCH_CHUNK = 8192


# --------------------------------------------------------------------------------------------
# Nearest-neighbour search
# --------------------------------------------------------------------------------------------


def as_embeddings(array: np.ndarray, name: str) -> np.ndarray:
    """Validates a (N, D) embedding matrix and returns it as C-contiguous float32.

    Args:
        array: Array-like of shape (N, D), N >= 1 and D >= 1, all values finite.
        name: Name of the argument, used in error messages.

    Returns:
        The embeddings, float32, shape (N, D).

    Raises:
        ValueError: If the array is not two-dimensional, is empty or holds NaN or infinity.
    """
    values = np.asarray(array)
    if values.ndim != 2 or values.shape[0] == 0 or values.shape[1] == 0:
        raise ValueError(f"{name} must have shape (N, D) with N, D >= 1, got {values.shape}")
    values = np.ascontiguousarray(values, dtype=np.float32)
    if not np.isfinite(values).all():
        bad = int(np.flatnonzero(~np.isfinite(values).all(axis=1))[0])
        raise ValueError(f"{name} contains NaN or infinite values (first in row {bad})")
    return values


def _smallest_k(
    values: np.ndarray, k: int, ids: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Selects, per row, the k smallest values ordered by (value, id).

    Exact and deterministic with ties: among equal values the smaller id comes first. The k-th
    smallest value of each row comes from ``np.partition``; every entry not above it is a
    candidate (at least k per row, more only with ties at the boundary), and the candidates are
    sorted by (row, value, id) with one ``np.lexsort``.

    Args:
        values: float array of shape (B, M), no NaN (``inf`` allowed).
        k: Number of entries to keep, 1 <= k <= M.
        ids: Optional int64 array of shape (B, M) with the id of each entry; the column index is
            used when None.

    Returns:
        A tuple (ids (B, k) int64, values (B, k) of values.dtype), each row sorted by
        (value, id) ascending.
    """
    rows, cols = values.shape
    if k < cols:
        kth = np.partition(values, k - 1, axis=1)[:, k - 1 : k]
        row_idx, col_idx = np.nonzero(values <= kth)
    else:
        row_idx, col_idx = np.nonzero(np.ones(values.shape, dtype=bool))
    cand_values = values[row_idx, col_idx]
    cand_ids = col_idx.astype(np.int64) if ids is None else ids[row_idx, col_idx]
    order = np.lexsort((cand_ids, cand_values, row_idx))
    # np.nonzero lists candidates row by row, so each row's candidates are contiguous in `order`.
    starts = np.concatenate(([0], np.cumsum(np.bincount(row_idx, minlength=rows))[:-1]))
    take = order[(starts[:, None] + np.arange(k)[None, :]).ravel()]
    return cand_ids[take].reshape(rows, k), cand_values[take].reshape(rows, k)


def search_inputs(
    queries: np.ndarray,
    gallery: np.ndarray | None,
    *,
    k: int,
    exclude_self: bool = True,
    exclude_indices: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Checks the arguments of a neighbour search (shared by the exact and the FAISS search).

    Args:
        queries: Query embeddings (Q, D).
        gallery: Gallery embeddings (N, D), or None to search the queries themselves.
        k: Neighbours per query.
        exclude_self: With ``gallery=None``, exclude each query's own index.
        exclude_indices: (Q,) one gallery index to exclude per query (-1 for none), or None.

    Returns:
        ``(queries, gallery, exclude)``: C-contiguous float32 arrays and the (Q,) int64 index
        each query must not return (-1 for none), or None when nothing is excluded.

    Raises:
        ValueError: On malformed embeddings, mismatching dimensions, bad exclude_indices, or k
            outside [1, available].
    """
    query_values = as_embeddings(queries, "queries")
    gallery_values = query_values if gallery is None else as_embeddings(gallery, "gallery")
    num_queries, num_gallery = query_values.shape[0], gallery_values.shape[0]
    if gallery_values.shape[1] != query_values.shape[1]:
        raise ValueError(
            f"queries have dimension {query_values.shape[1]} but gallery has dimension "
            f"{gallery_values.shape[1]}"
        )
    if exclude_indices is not None:
        exclude = np.asarray(exclude_indices)
        if exclude.shape != (num_queries,) or not np.issubdtype(exclude.dtype, np.integer):
            raise ValueError(
                f"exclude_indices must be an integer array of shape ({num_queries},), got "
                f"{exclude.dtype} {exclude.shape}"
            )
        if exclude.size and (exclude.min() < -1 or exclude.max() >= num_gallery):
            raise ValueError(f"exclude_indices must lie in [-1, {num_gallery}), got {exclude}")
        exclude = exclude.astype(np.int64)
    elif gallery is None and exclude_self:
        exclude = np.arange(num_queries, dtype=np.int64)
    else:
        exclude = None
    available = num_gallery - (1 if exclude is not None and (exclude >= 0).any() else 0)
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= available:
        raise ValueError(f"k must be in [1, {available}] for a gallery of {num_gallery}, got {k}")
    return query_values, gallery_values, exclude


def nearest_neighbours(
    queries: np.ndarray,
    gallery: np.ndarray | None = None,
    *,
    k: int,
    block_size: int = 1024,
    gallery_block_size: int = 16384,
    exclude_self: bool = True,
    exclude_indices: np.ndarray | None = None,
    method: str = "exact",
    nprobe: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact Euclidean k nearest neighbours, computed in blocks.

    Squared distances ``|q|^2 + |g|^2 - 2 q.g`` are computed in float32 with one matrix product
    per (query block, gallery block); each block keeps its k best, and the per-block winners are
    merged exactly. Peak memory is about 10 bytes x block_size x min(N, gallery_block_size), so no
    Q x N matrix is ever held. Ties are broken by the lower gallery index.

    Args:
        queries: Query embeddings, shape (Q, D).
        gallery: Gallery embeddings, shape (N, D). None searches the queries themselves.
        k: Number of neighbours per query, at least 1 and at most the number of gallery items a
            query may return (N, or N - 1 when its own index is excluded).
        block_size: Number of queries per block.
        gallery_block_size: Number of gallery items per block.
        exclude_self: When ``gallery`` is None, exclude each query from its own neighbours by
            index (its own column), so duplicates of the query are still returned.
        exclude_indices: Optional int array of shape (Q,): for each query, a gallery index that
            must not be returned (-1 for none), e.g. when the queries are a subset of the
            gallery. Overrides ``exclude_self``.
        method: ``"exact"`` (this function), ``"faiss"`` (FAISS ``IndexFlatL2``, exact) or
            ``"faiss_ivf"`` (FAISS IVF-Flat, approximate); the FAISS methods ignore the block
            sizes and are implemented by :func:`net.ann.faiss_nearest_neighbours`.
        nprobe: IVF cells scanned per query, for ``"faiss_ivf"`` only.

    Returns:
        A tuple (indices (Q, k) int64 gallery indices, distances (Q, k) float32 Euclidean
        distances), each row sorted by distance ascending, ties by index.

    Raises:
        ValueError: On malformed embeddings (not 2-D, empty, not finite), mismatching dimensions,
            non-positive block sizes, bad exclude_indices, k outside [1, available], or an
            unknown method.
        ImportError: For a FAISS method when faiss-cpu is not installed.
    """
    if method != "exact":
        if method not in SEARCH_METHODS:
            raise ValueError(f"method must be one of {SEARCH_METHODS}, got {method!r}")
        from net.ann import faiss_nearest_neighbours

        return faiss_nearest_neighbours(
            queries,
            gallery,
            k=k,
            index_type="ivf" if method == "faiss_ivf" else "flat",
            nprobe=nprobe,
            exclude_self=exclude_self,
            exclude_indices=exclude_indices,
        )
    if block_size < 1 or gallery_block_size < 1:
        raise ValueError(
            f"block_size and gallery_block_size must be >= 1, got {block_size} and "
            f"{gallery_block_size}"
        )
    query_values, gallery_values, exclude = search_inputs(
        queries, gallery, k=k, exclude_self=exclude_self, exclude_indices=exclude_indices
    )
    num_queries, num_gallery = query_values.shape[0], gallery_values.shape[0]

    query_sq = np.einsum("ij,ij->i", query_values, query_values)
    gallery_sq = np.einsum("ij,ij->i", gallery_values, gallery_values)
    indices = np.empty((num_queries, k), dtype=np.int64)
    distances = np.empty((num_queries, k), dtype=np.float32)

    for q_start in range(0, num_queries, block_size):
        q_stop = min(q_start + block_size, num_queries)
        block_ids, block_values = [], []
        for g_start in range(0, num_gallery, gallery_block_size):
            g_stop = min(g_start + gallery_block_size, num_gallery)
            sq = query_values[q_start:q_stop] @ gallery_values[g_start:g_stop].T
            sq *= -2.0
            sq += query_sq[q_start:q_stop, None]
            sq += gallery_sq[None, g_start:g_stop]
            np.maximum(sq, 0.0, out=sq)
            if exclude is not None:
                excluded = exclude[q_start:q_stop]
                rows = np.flatnonzero((excluded >= g_start) & (excluded < g_stop))
                sq[rows, excluded[rows] - g_start] = np.inf
            ids, values = _smallest_k(sq, min(k, g_stop - g_start))
            block_ids.append(ids + g_start)
            block_values.append(values)
        if len(block_ids) == 1:
            ids, values = block_ids[0], block_values[0]
        else:
            ids, values = _smallest_k(
                np.concatenate(block_values, axis=1), k, np.concatenate(block_ids, axis=1)
            )
        indices[q_start:q_stop] = ids
        distances[q_start:q_stop] = np.sqrt(values)
    return indices, distances


# --------------------------------------------------------------------------------------------
# Retrieval metrics
# --------------------------------------------------------------------------------------------


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


def _retrieval_matches(
    embeddings: np.ndarray,
    labels: np.ndarray,
    min_k: int,
    query_embeddings: np.ndarray | None,
    query_labels: np.ndarray | None,
    block_size: int,
    method: str = "exact",
    nprobe: int = 16,
    up_to_r: bool = True,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Runs one neighbour search and marks which neighbours share the query's label.

    Args:
        embeddings: Gallery embeddings, shape (N, D).
        labels: Gallery labels, shape (N,).
        min_k: Smallest number of neighbours needed (the largest K of Recall@K).
        query_embeddings: Separate query embeddings (M, D), or None to use the gallery itself
            (each query excluded by index).
        query_labels: Labels (M,) of the separate queries; required with query_embeddings.
        block_size: Queries per block of the search.
        method: Neighbour search, one of :data:`SEARCH_METHODS`.
        nprobe: IVF cells scanned per query (``"faiss_ivf"`` only).
        up_to_r: search max(min_k, max R) neighbours, as R-Precision and MAP@R need; False
            searches only min_k (Recall@K and Precision@1 alone).

    Returns:
        A tuple (matches (Q, k) bool: neighbour j of query i is relevant, num_relevant (Q,) int64:
        R of each query, embedding_dim), over the Q queries with R >= 1.

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
            exclude_self=False,
            exclude_indices=rows if query_embeddings is None else None,
            method=method,
            nprobe=nprobe,
        )
        matches[start : start + chunk] = gallery_labels[neighbours] == labels_q[rows][:, None]
    return matches, num_relevant[keep], gallery.shape[1]


def _recall_from_matches(matches: np.ndarray, ks: Sequence[int]) -> dict[int, float]:
    """Recall@K for each K from a (Q, >= max K) boolean match table."""
    return {k: float(matches[:, :k].any(axis=1).mean()) for k in ks}


def _r_precision_from_matches(matches: np.ndarray, num_relevant: np.ndarray) -> float:
    """Mean R-Precision from a (Q, >= max R) match table and R per query (Q,)."""
    matches = matches[:, : int(num_relevant.max())]  # the table may run to K = 1000
    within_r = np.arange(matches.shape[1])[None, :] < num_relevant[:, None]
    return float(((matches & within_r).sum(axis=1) / num_relevant).mean())


def _map_at_r_from_matches(matches: np.ndarray, num_relevant: np.ndarray) -> float:
    """Mean MAP@R from a (Q, >= max R) match table and R per query (Q,)."""
    matches = matches[:, : int(num_relevant.max())]  # the table may run to K = 1000
    ranks = np.arange(1, matches.shape[1] + 1)[None, :]
    precision_at_i = np.cumsum(matches, axis=1) / ranks
    within_r = ranks <= num_relevant[:, None]
    return float(((precision_at_i * (matches & within_r)).sum(axis=1) / num_relevant).mean())


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

    Args:
        embeddings: Gallery embeddings, shape (N, D).
        labels: Gallery labels, shape (N,) (any comparable dtype).
        ks: The Ks to report.
        query_embeddings: Separate queries, shape (M, D); None makes every gallery item a query,
            excluded from its own neighbours by index.
        query_labels: Labels (M,) of the separate queries.
        block_size: Queries per block of the nearest-neighbour search.
        method: Neighbour search: ``"exact"``, ``"faiss"`` (exact, FAISS) or
            ``"faiss_ivf"`` (approximate); see :func:`nearest_neighbours`.
        nprobe: IVF cells scanned per query (``"faiss_ivf"`` only).

    Returns:
        ``{k: recall}`` for each K, ascending, values in [0, 1].

    Raises:
        ValueError: On malformed inputs or a K larger than the gallery allows.
    """
    ks = _validate_ks(ks)
    matches, _, _ = _retrieval_matches(
        embeddings,
        labels,
        ks[-1],
        query_embeddings,
        query_labels,
        block_size,
        method,
        nprobe,
        up_to_r=False,
    )
    return _recall_from_matches(matches, ks)


def precision_at_1(
    embeddings: np.ndarray,
    labels: np.ndarray,
    *,
    query_embeddings: np.ndarray | None = None,
    query_labels: np.ndarray | None = None,
    block_size: int = 1024,
) -> float:
    """Precision@1: fraction of queries whose nearest neighbour shares their label.

    Args and Raises as in :func:`recall_at_k`.

    Returns:
        Precision@1 in [0, 1].
    """
    matches, _, _ = _retrieval_matches(
        embeddings, labels, 1, query_embeddings, query_labels, block_size, up_to_r=False
    )
    return float(matches[:, 0].mean())


def r_precision(
    embeddings: np.ndarray,
    labels: np.ndarray,
    *,
    query_embeddings: np.ndarray | None = None,
    query_labels: np.ndarray | None = None,
    block_size: int = 1024,
) -> float:
    """Mean R-Precision: the fraction of relevant items among each query's R nearest.

    R is the number of gallery items sharing the query's label (not counting the query itself).

    Args and Raises as in :func:`recall_at_k`.

    Returns:
        R-Precision in [0, 1].
    """
    matches, num_relevant, _ = _retrieval_matches(
        embeddings, labels, 1, query_embeddings, query_labels, block_size
    )
    return _r_precision_from_matches(matches, num_relevant)


def map_at_r(
    embeddings: np.ndarray,
    labels: np.ndarray,
    *,
    query_embeddings: np.ndarray | None = None,
    query_labels: np.ndarray | None = None,
    block_size: int = 1024,
) -> float:
    """Mean Average Precision at R (Musgrave et al. 2020).

    For one query: (1/R) * sum_{i=1..R} P(i) * rel(i), with P(i) the precision among the first i
    neighbours and rel(i) = 1 when the i-th neighbour shares the query's label.

    Args and Raises as in :func:`recall_at_k`.

    Returns:
        MAP@R in [0, 1].
    """
    matches, num_relevant, _ = _retrieval_matches(
        embeddings, labels, 1, query_embeddings, query_labels, block_size
    )
    return _map_at_r_from_matches(matches, num_relevant)


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
            ``"faiss_ivf"`` (approximate); see :func:`nearest_neighbours`.
        nprobe: IVF cells scanned per query (``"faiss_ivf"`` only).

    Returns:
        A JSON-ready dict: ``recall@K`` for each K (floats in [0, 1]), ``precision@1``,
        ``r_precision``, ``map@r``, ``num_queries`` (queries evaluated: those with R >= 1) and
        ``embedding_dim``.

    Raises:
        ValueError: On malformed inputs or a K larger than the gallery allows.
    """
    ks = _validate_ks(ks)
    matches, num_relevant, dim = _retrieval_matches(
        embeddings, labels, ks[-1], query_embeddings, query_labels, block_size, method, nprobe
    )
    metrics: dict[str, float | int] = {
        f"recall@{k}": value for k, value in _recall_from_matches(matches, ks).items()
    }
    metrics["precision@1"] = float(matches[:, 0].mean())
    metrics["r_precision"] = _r_precision_from_matches(matches, num_relevant)
    metrics["map@r"] = _map_at_r_from_matches(matches, num_relevant)
    metrics["num_queries"] = int(matches.shape[0])
    metrics["embedding_dim"] = int(dim)
    return metrics


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


# --------------------------------------------------------------------------------------------
# Embedding a data set
# --------------------------------------------------------------------------------------------


#: One compiled inference step per live model, so repeated calls (validation every epoch) reuse
#: the traced graph instead of tracing a new function each time.
_INFERENCE_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _inference_step(model: keras.Model):
    """The compiled ``images -> embeddings`` step of a model (cached per model)."""
    import tensorflow as tf

    step = _INFERENCE_STEPS.get(model)
    if step is None:

        @tf.function(jit_compile=False, reduce_retracing=True)
        def step(images: tf.Tensor) -> tf.Tensor:
            outputs = model(images, training=False)
            if isinstance(outputs, Mapping):
                if "embeddings" not in outputs:
                    raise ValueError(
                        f"model returns a dict without 'embeddings' (keys: {sorted(outputs)})"
                    )
                outputs = outputs["embeddings"]
            return outputs

        _INFERENCE_STEPS[model] = step
    return step


def compute_embeddings(
    model: keras.Model, dataset: tf.data.Dataset, *, progress: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Embeds every element of a data set with a compiled inference step.

    The step is a ``tf.function`` (no XLA, ``reduce_retracing=True`` so a partial last batch does
    not cost another trace) calling ``model(images, training=False)``; a dict output contributes
    its ``"embeddings"`` entry.

    Args:
        model: A Keras model mapping images (B, H, W, 3) to embeddings (B, D) or to a dict with
            an ``"embeddings"`` entry.
        dataset: A ``tf.data.Dataset`` of (images (B, H, W, 3), labels (B,)) batches.
        progress: Whether to show a tqdm progress bar.

    Returns:
        A tuple (embeddings (N, D) float32, labels (N,)) in data set order.

    Raises:
        ValueError: If the data set does not yield (images, labels) pairs, is empty, or the model
            returns a dict without ``"embeddings"``.
    """
    from tqdm.auto import tqdm

    spec = dataset.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2):
        raise ValueError(f"dataset must yield (images, labels) pairs, got element_spec {spec}")

    embed = _inference_step(model)

    cardinality = int(dataset.cardinality())
    batches: list[np.ndarray] = []
    batch_labels: list[np.ndarray] = []
    for images, labels in tqdm(
        dataset,
        total=cardinality if cardinality >= 0 else None,
        desc="embedding",
        unit="batch",
        disable=not progress,
    ):
        batches.append(np.asarray(embed(images), dtype=np.float32))
        batch_labels.append(np.asarray(labels))
    if not batches:
        raise ValueError("dataset is empty: nothing to embed")
    return np.concatenate(batches, axis=0), np.concatenate(batch_labels, axis=0)
