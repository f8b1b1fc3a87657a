"""Optional FAISS nearest-neighbour search behind the contract of ``analysis.nearest_neighbours``.

For galleries too large for the exact NumPy search, :func:`faiss_nearest_neighbours` searches
with a FAISS index (``pip install faiss-cpu``):

- ``index_type="flat"``: ``IndexFlatL2``, exact (the same neighbours as the NumPy search up to
  float32 rounding of near-ties);
- ``index_type="ivf"``: ``IVF<nlist>,Flat``, an inverted file over k-means cells trained on the
  gallery; each query scans its ``nprobe`` nearest cells, trading recall for speed.

Both return what :func:`net.analysis.nearest_neighbours` returns: (Q, k) int64 gallery indices
and (Q, k) float32 Euclidean (not squared) distances, each row ordered by distance, ties by the
lower index; a query's own row (or a given gallery index) is excluded by index. FAISS is
imported lazily, so this module loads without it.
"""

from __future__ import annotations

import math
from types import ModuleType

import numpy as np

from net.analysis import as_embeddings, search_inputs

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


def build_index(
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
        index_type: ``"flat"`` (exact) or ``"ivf"`` (approximate); see :func:`build_index`.
        nlist: IVF cells (None: :func:`default_nlist`).
        nprobe: IVF cells scanned per query; more is slower and closer to exact.
        exclude_self: When ``gallery`` is None, exclude each query's own index.
        exclude_indices: Optional int array (Q,): a gallery index per query that must not be
            returned (-1 for none). Overrides ``exclude_self``.
        index: A prebuilt index over the gallery (from :func:`build_index`) to reuse; the
            gallery is then still needed for its size and dimension checks.

    Returns:
        A tuple (indices (Q, k) int64, distances (Q, k) float32 Euclidean distances), each row
        sorted by distance ascending, ties by index.

    Raises:
        ValueError: On malformed embeddings, mismatching dimensions, bad exclude_indices, k
            outside its range, or when an IVF search finds fewer than k neighbours for some
            query (raise ``nprobe``).
        ImportError: If FAISS is not installed.
    """
    query_values, gallery_values, exclude = search_inputs(
        queries, gallery, k=k, exclude_self=exclude_self, exclude_indices=exclude_indices
    )
    num_gallery = gallery_values.shape[0]
    excluding = exclude is not None and bool((exclude >= 0).any())
    k = int(k)

    if index is None:
        index = build_index(gallery_values, index_type=index_type, nlist=nlist, nprobe=nprobe)
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
        raise ValueError(
            f"the {index_type} index found fewer than k={k} neighbours for query {short}; "
            f"raise nprobe (now {nprobe}) or use index_type='flat'"
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
