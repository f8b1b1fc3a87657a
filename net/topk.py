"""The k smallest entries of each row of a matrix, exactly and with a deterministic tie order.

The selection step of the exact neighbour search (:func:`net.neighbours.nearest_neighbours`):
per block of distances, and again to merge the blocks' winners. Pure NumPy: rows are ordered by
(value, id), so equal distances always come out in the order of their gallery index, whatever
the block sizes.
"""

from __future__ import annotations

import numpy as np


def smallest_k(
    values: np.ndarray, k: int, ids: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Selects, per row, the k smallest values ordered by (value, id).

    Exact and deterministic with ties: among equal values the smaller id comes first. The k-th
    smallest value of each row comes from ``np.partition``; every entry not above it is a
    candidate (at least k per row, more only with ties at the boundary). Rows with exactly k
    candidates are sorted by (value, id) row by row (``np.lexsort`` along the rows: about 3x
    faster than one global sort at k = 1,000, as Recall@1000 on SOP needs); rows with ties at
    the boundary have their candidates sorted by (row, value, id) with one ``np.lexsort``.

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
    if k >= cols:
        return _sorted_candidates(values, np.ones(values.shape, dtype=bool), k, ids)
    kth = np.partition(values, k - 1, axis=1)[:, k - 1 : k]
    candidates = values <= kth
    # Rows with exactly k candidates (no tie at the k-th value, the usual case) are sorted row
    # by row; rows with more (ties at the boundary) take the general path.
    exact = np.count_nonzero(candidates, axis=1) == k
    if not exact.all():
        out_ids = np.empty((rows, k), dtype=np.int64)
        out_values = np.empty((rows, k), dtype=values.dtype)
        tied, plain = np.flatnonzero(~exact), np.flatnonzero(exact)
        out_ids[tied], out_values[tied] = _sorted_candidates(
            values[tied], candidates[tied], k, None if ids is None else ids[tied]
        )
        out_ids[plain], out_values[plain] = smallest_k(
            values[plain], k, None if ids is None else ids[plain]
        )
        return out_ids, out_values
    row_idx, col_idx = np.nonzero(candidates)
    cols_k = col_idx.reshape(rows, k)
    values_k = values[row_idx, col_idx].reshape(rows, k)
    ids_k = cols_k.astype(np.int64) if ids is None else np.take_along_axis(ids, cols_k, axis=1)
    order = np.lexsort((ids_k, values_k), axis=1)
    return np.take_along_axis(ids_k, order, axis=1), np.take_along_axis(values_k, order, axis=1)


def _sorted_candidates(
    values: np.ndarray, candidates: np.ndarray, k: int, ids: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """The k first of each row's candidates (at least k a row) by (value, id), in one lexsort."""
    rows = values.shape[0]
    row_idx, col_idx = np.nonzero(candidates)
    cand_values = values[row_idx, col_idx]
    cand_ids = col_idx.astype(np.int64) if ids is None else ids[row_idx, col_idx]
    order = np.lexsort((cand_ids, cand_values, row_idx))
    # np.nonzero lists candidates row by row, so each row's candidates are contiguous in `order`.
    starts = np.concatenate(([0], np.cumsum(np.bincount(row_idx, minlength=rows))[:-1]))
    take = order[(starts[:, None] + np.arange(k)[None, :]).ravel()]
    return cand_ids[take].reshape(rows, k), cand_values[take].reshape(rows, k)
