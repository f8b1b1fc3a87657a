"""Nearest-neighbour search: exact blocked k-NN in NumPy, and FAISS for very large galleries.

One contract for every method: :func:`nearest_neighbours` returns, per query, the (Q, k) int64
gallery indices and (Q, k) float32 Euclidean (not squared) distances, each row ordered by
distance, ties broken by the lower gallery index; a query's own row (or a given gallery index)
is excluded by index, so an exact duplicate of the query is still returned.

- ``method="exact"``: squared distances from one matrix product per (query block, gallery
  block), each block's k best merged exactly; memory stays bounded (no Q x N matrix).
- ``method="faiss"``: FAISS ``IndexFlatL2``, exact (the same neighbours as the NumPy search up
  to float32 rounding of near-ties).
- ``method="faiss_ivf"``: FAISS ``IVF<nlist>,Flat``, an inverted file over k-means cells trained
  on the gallery; each query scans its ``nprobe`` nearest cells, trading recall for speed.

FAISS (``pip install faiss-cpu``) is imported only when a FAISS method is used. This module
works on NumPy arrays and imports no TensorFlow.
"""

from __future__ import annotations

import math
from types import ModuleType

import numpy as np

from net.topk import smallest_k

#: Neighbour-search methods of :func:`nearest_neighbours`.
SEARCH_METHODS: tuple[str, ...] = ("exact", "faiss", "faiss_ivf")
#: The FAISS index type of each FAISS method (see :func:`build_faiss_index`).
FAISS_INDEX_TYPES: dict[str, str] = {"faiss": "flat", "faiss_ivf": "ivf"}


class TooFewNeighboursError(ValueError):
    """An IVF search whose scanned cells hold fewer than k neighbours for some query."""


# --------------------------------------------------------------------------------------------
# Arguments and exact search
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


def as_labels(labels: np.ndarray, count: int, name: str) -> np.ndarray:
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


def squared_distances(
    queries: np.ndarray, gallery: np.ndarray, query_sq: np.ndarray, gallery_sq: np.ndarray
) -> np.ndarray:
    """Squared Euclidean distances of a block, ``|q|^2 + |g|^2 - 2 q.g``, in float32.

    The one formula of the exact search (and of every full ranking), so that rankings agree
    to the last bit.

    Args:
        queries: (B, D) float32 embeddings.
        gallery: (M, D) float32 embeddings.
        query_sq: (B,) squared norms of ``queries``.
        gallery_sq: (M,) squared norms of ``gallery``.

    Returns:
        (B, M) float32, clipped at +0.0 (never -0.0: the bit patterns of the values order them).
    """
    sq = queries @ gallery.T
    sq *= -2.0
    sq += query_sq[:, None]
    sq += gallery_sq[None, :]
    np.maximum(sq, 0.0, out=sq)
    sq += 0.0  # -0.0 + 0.0 = +0.0
    return sq


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
    index=None,
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
            sizes and are implemented by :func:`faiss_nearest_neighbours`.
        nprobe: IVF cells scanned per query, for ``"faiss_ivf"`` only.
        index: For a FAISS method, an index over the gallery built once with
            :func:`build_faiss_index` and reused (e.g. by chunks of queries); None builds one.

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
        return faiss_nearest_neighbours(
            queries,
            gallery,
            k=k,
            index_type=FAISS_INDEX_TYPES[method],
            nprobe=nprobe,
            exclude_self=exclude_self,
            exclude_indices=exclude_indices,
            index=index,
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
            sq = squared_distances(
                query_values[q_start:q_stop],
                gallery_values[g_start:g_stop],
                query_sq[q_start:q_stop],
                gallery_sq[g_start:g_stop],
            )
            if exclude is not None:
                excluded = exclude[q_start:q_stop]
                rows = np.flatnonzero((excluded >= g_start) & (excluded < g_stop))
                sq[rows, excluded[rows] - g_start] = np.inf
            ids, values = smallest_k(sq, min(k, g_stop - g_start))
            block_ids.append(ids + g_start)
            block_values.append(values)
        if len(block_ids) == 1:
            ids, values = block_ids[0], block_values[0]
        else:
            ids, values = smallest_k(
                np.concatenate(block_values, axis=1), k, np.concatenate(block_ids, axis=1)
            )
        indices[q_start:q_stop] = ids
        distances[q_start:q_stop] = np.sqrt(values)
    return indices, distances


# --------------------------------------------------------------------------------------------
# FAISS
# --------------------------------------------------------------------------------------------


#: Index types of :func:`faiss_nearest_neighbours`.
INDEX_TYPES = ("flat", "ivf")

#: FAISS warns when k-means has fewer than this many training points per cell.
_MIN_POINTS_PER_CELL = 39


def import_faiss() -> ModuleType:
    """Imports FAISS, with an actionable error when it is missing.

    Returns:
        The ``faiss`` module.

    Raises:
        ImportError: If FAISS is not installed.
    """
    try:
        import faiss
    except ImportError as error:
        raise ImportError(
            "FAISS nearest-neighbour search needs the optional package faiss-cpu: "
            "pip install faiss-cpu (or use method='exact')"
        ) from error
    return faiss


def default_nlist(num_gallery: int) -> int:
    """The default number of IVF cells for a gallery: about 4 sqrt(N), >= 39 points a cell.

    Args:
        num_gallery: Gallery size N >= 1.

    Returns:
        ``max(1, min(round(4 * sqrt(N)), N // 39))``.
    """
    return max(1, min(round(4.0 * math.sqrt(num_gallery)), num_gallery // _MIN_POINTS_PER_CELL))


def build_faiss_index(
    gallery: np.ndarray,
    *,
    index_type: str = "flat",
    nlist: int | None = None,
    nprobe: int = 16,
    seed: int = 1234,
):
    """Builds a FAISS L2 index holding the gallery.

    Args:
        gallery: Gallery embeddings, shape (N, D), float32.
        index_type: ``"flat"`` (exact) or ``"ivf"`` (IVF-Flat, approximate).
        nlist: IVF cells; None picks :func:`default_nlist`. Ignored for ``"flat"``.
        nprobe: IVF cells scanned per query (clipped to nlist). Ignored for ``"flat"``.
        seed: Seed of the IVF k-means.

    Returns:
        A ``faiss.Index`` with the N gallery vectors added (ids 0..N-1).

    Raises:
        ValueError: For an unknown index type or a bad nlist / nprobe.
        ImportError: If FAISS is not installed.
    """
    if index_type not in INDEX_TYPES:
        raise ValueError(f"index_type must be one of {INDEX_TYPES}, got {index_type!r}")
    gallery = as_embeddings(gallery, "gallery")
    faiss = import_faiss()
    num_gallery, dim = gallery.shape
    if index_type == "flat":
        index = faiss.IndexFlatL2(dim)
    else:
        nlist = default_nlist(num_gallery) if nlist is None else nlist
        if isinstance(nlist, bool) or not isinstance(nlist, int) or not 1 <= nlist <= num_gallery:
            raise ValueError(f"nlist must be an integer in [1, {num_gallery}], got {nlist!r}")
        if isinstance(nprobe, bool) or not isinstance(nprobe, int) or nprobe < 1:
            raise ValueError(f"nprobe must be an integer >= 1, got {nprobe!r}")
        index = faiss.index_factory(dim, f"IVF{nlist},Flat", faiss.METRIC_L2)
        ivf = faiss.extract_index_ivf(index)
        ivf.cp.seed = seed
        ivf.cp.min_points_per_centroid = 1  # small galleries: no warning, nlist is checked above
        index.train(gallery)
        ivf.nprobe = min(nprobe, nlist)
    index.add(gallery)
    return index


def faiss_nearest_neighbours(
    queries: np.ndarray,
    gallery: np.ndarray | None = None,
    *,
    k: int,
    index_type: str = "flat",
    nlist: int | None = None,
    nprobe: int = 16,
    exclude_self: bool = True,
    exclude_indices: np.ndarray | None = None,
    index=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean k nearest neighbours with a FAISS index.

    The index is asked for k + 1 neighbours when a gallery index is to be excluded; the excluded
    one is dropped by index (so an exact duplicate of the query is still returned) and each row
    keeps its first k. Rows are then re-sorted by (distance, index), the tie order of the exact
    search.

    Args:
        queries: Query embeddings, shape (Q, D).
        gallery: Gallery embeddings, shape (N, D). None searches the queries themselves.
        k: Neighbours per query, in [1, N] (or [1, N - 1] when an index is excluded).
        index_type: ``"flat"`` (exact) or ``"ivf"`` (approximate); see :func:`build_faiss_index`.
        nlist: IVF cells (None: :func:`default_nlist`).
        nprobe: IVF cells scanned per query; more is slower and closer to exact.
        exclude_self: When ``gallery`` is None, exclude each query's own index.
        exclude_indices: Optional int array (Q,): a gallery index per query that must not be
            returned (-1 for none). Overrides ``exclude_self``.
        index: A prebuilt index over the gallery (from :func:`build_faiss_index`) to reuse; the
            gallery is then still needed for its size and dimension checks.

    Returns:
        A tuple (indices (Q, k) int64, distances (Q, k) float32 Euclidean distances), each row
        sorted by distance ascending, ties by index.

    Raises:
        ValueError: On malformed embeddings, mismatching dimensions, bad exclude_indices, k
            outside its range; :class:`TooFewNeighboursError` when an IVF search finds fewer
            than k neighbours for some query (raise ``nprobe``).
        ImportError: If FAISS is not installed.
    """
    query_values, gallery_values, exclude = search_inputs(
        queries, gallery, k=k, exclude_self=exclude_self, exclude_indices=exclude_indices
    )
    num_gallery = gallery_values.shape[0]
    excluding = exclude is not None and bool((exclude >= 0).any())
    k = int(k)

    if index is None:
        index = build_faiss_index(gallery_values, index_type=index_type, nlist=nlist, nprobe=nprobe)
    elif index.ntotal != num_gallery or index.d != gallery_values.shape[1]:
        raise ValueError(
            f"index holds {index.ntotal} vectors of dimension {index.d}, but the gallery is "
            f"{gallery_values.shape}"
        )
    wanted = k + int(excluding)
    squared, ids = index.search(query_values, wanted)
    ids = ids.astype(np.int64, copy=False)

    # Found: a real result (IVF returns -1 when its cells hold too few); kept: not excluded.
    keep = ids >= 0
    if excluding:
        keep &= ids != exclude[:, None]
    if (keep.sum(axis=1) < k).any():
        short = int(np.flatnonzero(keep.sum(axis=1) < k)[0])
        raise TooFewNeighboursError(
            f"the {index_type} index found fewer than k={k} neighbours for query {short}; "
            f"raise nprobe (evaluation.nprobe, now {nprobe}) or search exactly "
            "(index_type='flat', evaluation.method: faiss or exact)"
        )
    # Move each row's kept entries to the front (stable: their order is kept), take k.
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    ids = np.take_along_axis(ids, order, axis=1)
    squared = np.maximum(np.take_along_axis(squared, order, axis=1), 0.0)
    # Exact tie order: by (distance, index) within each row.
    resort = np.lexsort((ids, squared), axis=1)
    ids = np.take_along_axis(ids, resort, axis=1)
    distances = np.sqrt(np.take_along_axis(squared, resort, axis=1)).astype(np.float32)
    return ids, distances
