"""Tests of the FAISS neighbour search against the exact NumPy search of net.analysis."""

import sys

import numpy as np
import pytest

from net import analysis
from net.ann import default_nlist, faiss_nearest_neighbours, import_faiss

pytest.importorskip("faiss")


def random_data(n, dim, seed=0):
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def clustered_data(n, dim, clusters, seed=0):
    """Gaussian blobs: the structure IVF relies on (real embeddings cluster by class)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)) * 3.0
    labels = rng.integers(clusters, size=n)
    return (centres[labels] + rng.normal(size=(n, dim))).astype(np.float32), labels


def test_flat_matches_exact_search_with_self_exclusion():
    data = random_data(600, 24)
    ids, dist = faiss_nearest_neighbours(data, k=10)
    ref_ids, ref_dist = analysis.nearest_neighbours(data, k=10)
    assert ids.shape == (600, 10) and ids.dtype == np.int64 and dist.dtype == np.float32
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-4, atol=1e-4)
    assert not (ids == np.arange(600)[:, None]).any()


def test_flat_matches_exact_search_with_separate_gallery_and_exclude_indices():
    gallery = random_data(500, 16, seed=1)
    queries = random_data(70, 16, seed=2)
    ids, dist = faiss_nearest_neighbours(queries, gallery, k=7)
    ref_ids, ref_dist = analysis.nearest_neighbours(queries, gallery, k=7)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-4, atol=1e-4)

    # Queries taken from the gallery (rows 10..79), excluded by index; -1 excludes nothing.
    exclude = np.arange(10, 80)
    exclude[::7] = -1
    ids, _ = faiss_nearest_neighbours(gallery[10:80], gallery, k=5, exclude_indices=exclude)
    ref_ids, _ = analysis.nearest_neighbours(gallery[10:80], gallery, k=5, exclude_indices=exclude)
    np.testing.assert_array_equal(ids, ref_ids)
    # A row whose own index is not excluded finds itself first, at distance 0.
    np.testing.assert_array_equal(ids[::7, 0], np.arange(10, 80)[::7])


def test_duplicates_and_ties_hand_computed():
    """Points 0, 1, 1, 3 on a line (rows 1 and 2 are duplicates), all neighbours (k = 3).

    Row 0: distances to rows 1, 2, 3 are 1, 1, 3 -> ids [1, 2, 3] (tie 1 = 1 by index).
    Row 1: its duplicate row 2 at 0, row 0 at 1, row 3 at 2 -> [2, 0, 3].
    Row 2: row 1 at 0, row 0 at 1, row 3 at 2 -> [1, 0, 3].
    Row 3: rows 1 and 2 at 2 (tie by index), row 0 at 3 -> [1, 2, 0].
    """
    points = np.array([[0.0], [1.0], [1.0], [3.0]], np.float32)
    ids, dist = faiss_nearest_neighbours(points, k=3)
    np.testing.assert_array_equal(ids, [[1, 2, 3], [2, 0, 3], [1, 0, 3], [1, 2, 0]])
    np.testing.assert_allclose(dist, [[1, 1, 3], [0, 1, 2], [0, 1, 2], [2, 2, 3]], atol=1e-6)


def test_ivf_recall_against_exact_search():
    data, _ = clustered_data(4000, 32, clusters=40)
    k = 10
    ids, dist = faiss_nearest_neighbours(data, k=k, index_type="ivf", nprobe=8)
    ref_ids, _ = analysis.nearest_neighbours(data, k=k)
    recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(ids, ref_ids, strict=True)])
    assert recall >= 0.9, recall
    assert not (ids == np.arange(4000)[:, None]).any()
    assert (np.diff(dist, axis=1) >= 0).all()
    # Scanning every cell is exact.
    nlist = default_nlist(4000)
    ids_all, _ = faiss_nearest_neighbours(data, k=k, index_type="ivf", nprobe=nlist)
    np.testing.assert_array_equal(ids_all, ref_ids)


def test_default_nlist():
    # 4 sqrt(N) with at least 39 points a cell: N = 8131 -> min(361, 208) = 208.
    assert default_nlist(8131) == 208
    assert default_nlist(1_000_000) == 4000
    assert default_nlist(10) == 1


def test_ivf_too_few_candidates_is_an_error():
    data = random_data(400, 8)
    with pytest.raises(ValueError, match="raise nprobe"):
        faiss_nearest_neighbours(data, k=300, index_type="ivf", nlist=10, nprobe=1)


def test_retrieval_metrics_dispatch_to_faiss():
    data, labels = clustered_data(800, 16, clusters=20, seed=3)
    data += np.random.default_rng(4).normal(size=data.shape).astype(np.float32) * 2.0
    exact = analysis.retrieval_metrics(data, labels)
    assert analysis.retrieval_metrics(data, labels, method="faiss") == exact
    assert analysis.recall_at_k(data, labels, method="faiss") == analysis.recall_at_k(data, labels)
    ids, _ = analysis.nearest_neighbours(data, k=4, method="faiss_ivf", nprobe=4)
    assert ids.shape == (800, 4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"k": 0}, "k must be in"),
        ({"k": 50}, "k must be in"),
        ({"k": 2, "index_type": "hnsw"}, "index_type"),
        ({"k": 2, "index_type": "ivf", "nlist": 0}, "nlist"),
        ({"k": 2, "index_type": "ivf", "nprobe": 0}, "nprobe"),
        ({"k": 2, "exclude_indices": np.arange(3)}, "exclude_indices"),
    ],
)
def test_rejects_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        faiss_nearest_neighbours(random_data(50, 4), **kwargs)


def test_rejects_bad_method_and_non_finite_input():
    with pytest.raises(ValueError, match="method must be one of"):
        analysis.nearest_neighbours(random_data(5, 2), k=1, method="annoy")
    data = random_data(5, 2)
    data[3, 1] = np.nan
    with pytest.raises(ValueError, match="row 3"):
        faiss_nearest_neighbours(data, k=1)


def test_missing_faiss_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ImportError, match="pip install faiss-cpu"):
        import_faiss()
    with pytest.raises(ImportError, match="faiss-cpu"):
        analysis.nearest_neighbours(random_data(5, 2), k=1, method="faiss")
