"""Average ranking position of queries in their rankings of the whole gallery (exact search).

The seed repository's training metric (see :mod:`net.analysis` for its definition): only the
ranks of each query's relevant items are computed, from one sort of each query's distances, in
chunks of queries of bounded memory. :mod:`net.analysis` re-exports
:func:`average_ranking_position` and uses it in :func:`net.analysis.retrieval_metrics`.
"""

from __future__ import annotations

import numpy as np

from net.neighbours import as_embeddings, as_labels, squared_distances

#: Distances held at once by the full rankings of :func:`average_ranking_position` (about 20
#: bytes each with their sort keys: about 80 MB).
_RANKING_ENTRIES = 2**22
#: Galleries up to this size rank with packed int64 keys (17 bits for the column).
_PACKED_MAX_COLUMNS = 2**17


def average_ranking_position(
    embeddings: np.ndarray,
    labels: np.ndarray,
    *,
    query_embeddings: np.ndarray | None = None,
    query_labels: np.ndarray | None = None,
) -> float:
    """Average ranking position of the queries in their rankings of the whole gallery.

    For each query, the mean rank of its relevant items when the whole gallery is ranked (ranks
    from 1, the query itself excluded), averaged over the queries. The ranking is the exact
    search's (:func:`net.neighbours.squared_distances`, ties broken by the lower gallery
    index); only the ranks of the relevant items are computed, from one sort of each query's
    distances, in chunks of queries holding about 80 MB (most of the time goes to the distance
    products).

    Args:
        embeddings: Gallery embeddings, shape (N, D).
        labels: Gallery labels, shape (N,).
        query_embeddings: Separate queries (M, D), or None for the standard protocol (every
            gallery item is a query, excluded from its own ranking by index).
        query_labels: Labels (M,) of the separate queries.

    Returns:
        The mean over the queries with at least one relevant item; a query whose R relevant
        items are ranked first scores (R + 1) / 2.

    Raises:
        ValueError: On malformed inputs, or when no query has a relevant item.
    """
    gallery = as_embeddings(embeddings, "embeddings")
    gallery_labels = as_labels(labels, gallery.shape[0], "labels")
    if (query_embeddings is None) != (query_labels is None):
        raise ValueError("query_embeddings and query_labels must be given together")
    same = query_embeddings is None
    if same:
        queries, labels_q = gallery, gallery_labels
    else:
        queries = as_embeddings(query_embeddings, "query_embeddings")
        labels_q = as_labels(query_labels, queries.shape[0], "query_labels")
    if queries.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"query_embeddings have dimension {queries.shape[1]}, embeddings {gallery.shape[1]}"
        )
    num_gallery = gallery.shape[0]
    query_sq = np.einsum("ij,ij->i", queries, queries)
    gallery_sq = np.einsum("ij,ij->i", gallery, gallery)
    chunk = int(min(2**14, max(1, _RANKING_ENTRIES // num_gallery)))
    total, count = 0.0, 0
    for start in range(0, queries.shape[0], chunk):
        rows = np.arange(start, min(start + chunk, queries.shape[0]))
        sq = squared_distances(queries[rows], gallery, query_sq[rows], gallery_sq)
        relevant = gallery_labels[None, :] == labels_q[rows, None]
        if same:
            sq[np.arange(rows.size), rows] = np.inf  # ranked last, and not relevant
            relevant[np.arange(rows.size), rows] = False
        positions = _relevant_rank_means(sq, relevant)
        answered = np.isfinite(positions)
        total += float(positions[answered].sum())
        count += int(answered.sum())
    if count == 0:
        raise ValueError("no query has another item of its label in the gallery")
    return total / count


def _relevant_rank_means(sq: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """Mean 1-based rank of the relevant items of each row of distances.

    Ranks order each row by (value, column), as the exact search does. The float32 values
    (non-negative, no -0.0, ``inf`` allowed) order as their bit patterns, so (row, value,
    column) packs into one int64 key; one sort of the keys and a binary search of the relevant
    items' keys give their ranks. Rows or galleries too large to pack fall back to a stable
    argsort of each row.

    Args:
        sq: (B, N) float32 squared distances.
        relevant: (B, N) bool.

    Returns:
        (B,) float64, NaN for a row without a relevant item.
    """
    num_rows, num_cols = sq.shape
    rows, cols = np.nonzero(relevant)
    if num_cols < _PACKED_MAX_COLUMNS and num_rows < 2**14:
        keys = sq.view(np.int32).astype(np.int64) << 17
        keys |= np.arange(num_cols, dtype=np.int64)[None, :]
        keys |= np.arange(num_rows, dtype=np.int64)[:, None] << 48
        wanted = keys[rows, cols]
        keys.sort(axis=1)
        ranks = np.searchsorted(keys.reshape(-1), wanted) - rows * num_cols + 1
    else:
        order = np.argsort(sq, axis=1, kind="stable")
        rank_table = np.empty_like(order)
        np.put_along_axis(rank_table, order, np.arange(1, num_cols + 1)[None, :], axis=1)
        ranks = rank_table[rows, cols]
    sums = np.bincount(rows, weights=ranks, minlength=num_rows)
    counts = np.bincount(rows, minlength=num_rows)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
