"""Tests for net.neighbours: the exact blocked search against brute force, FAISS against it."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from net import neighbours
from net.neighbours import default_nlist, faiss_nearest_neighbours, import_faiss

needs_faiss = pytest.mark.skipif(
    importlib.util.find_spec("faiss") is None, reason="the optional faiss-cpu is not installed"
)

# Points on a line with ties and duplicate items (1 and 3 both appear twice) and one lone label.
#   index:  0  1  2  3  4  5
#   x:      0  1  1  3  3  6
#   label:  0  0  1  1  0  2
LINE_X = np.array([[0.0], [1.0], [1.0], [3.0], [3.0], [6.0]])
LINE_LABELS = np.array([0, 0, 1, 1, 0, 2])


def brute_force_neighbours(queries, gallery, k, exclude):
    """Full float64 distance matrix, excluded entries set to inf, stable argsort (ties by index)."""
    queries = np.asarray(queries, np.float64)
    gallery = np.asarray(gallery, np.float64)
    dist = np.sqrt(((queries[:, None, :] - gallery[None, :, :]) ** 2).sum(-1))
    for row, col in enumerate(exclude):
        if col >= 0:
            dist[row, col] = np.inf
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(dist, order, axis=1)


# ----------------------------------------------------------------------------------------------
# nearest_neighbours
# ----------------------------------------------------------------------------------------------


def test_line_neighbours_hand_computed_with_ties_and_duplicates():
    """Distances from each point, own index excluded, ties by lower index.

    q0 (x=0): 1->1, 2->1, 3->3, 4->3, 5->6  => [1, 2, 3]  d [1, 1, 3]
    q1 (x=1): 2->0, 0->1, 3->2, 4->2        => [2, 0, 3]  d [0, 1, 2]
    q2 (x=1): 1->0, 0->1, 3->2, 4->2        => [1, 0, 3]  d [0, 1, 2]
       (dropping the first neighbour instead would drop 1 and return q2 itself)
    q3 (x=3): 4->0, 1->2, 2->2, 5->3        => [4, 1, 2]  d [0, 2, 2]
    q4 (x=3): 3->0, 1->2, 2->2              => [3, 1, 2]  d [0, 2, 2]
    q5 (x=6): 3->3, 4->3, 1->5              => [3, 4, 1]  d [3, 3, 5]
    """
    indices, distances = neighbours.nearest_neighbours(LINE_X, k=3)
    np.testing.assert_array_equal(
        indices, [[1, 2, 3], [2, 0, 3], [1, 0, 3], [4, 1, 2], [3, 1, 2], [3, 4, 1]]
    )
    np.testing.assert_array_equal(
        distances, [[1, 1, 3], [0, 1, 2], [0, 1, 2], [0, 2, 2], [0, 2, 2], [3, 3, 5]]
    )
    assert indices.dtype == np.int64 and distances.dtype == np.float32
    for block_size, gallery_block_size in [(1, 1), (2, 4), (5, 2)]:
        blocked = neighbours.nearest_neighbours(
            LINE_X, k=3, block_size=block_size, gallery_block_size=gallery_block_size
        )
        np.testing.assert_array_equal(blocked[0], indices)
        np.testing.assert_array_equal(blocked[1], distances)


def test_without_self_exclusion_each_point_finds_itself_or_an_earlier_duplicate():
    """With exclude_self=False, q2 (x=1) ties at distance 0 with index 1, which comes first."""
    indices, distances = neighbours.nearest_neighbours(LINE_X, k=2, exclude_self=False)
    np.testing.assert_array_equal(indices[:, 0], [0, 1, 1, 3, 3, 5])
    np.testing.assert_array_equal(indices[2], [1, 2])
    np.testing.assert_array_equal(distances[:, 0], 0)


@pytest.mark.parametrize("block_size,gallery_block_size", [(7, 5), (64, 3), (1000, 10000)])
def test_integer_data_with_many_ties_matches_brute_force(block_size, gallery_block_size):
    """Values in {-1, 0, 1}^3: 27 distinct points for 120 items, so exact ties and duplicates
    everywhere; integer arithmetic is exact in float32, so indices must equal a stable argsort."""
    rng = np.random.default_rng(0)
    data = rng.integers(-1, 2, size=(120, 3)).astype(np.float32)
    expected_idx, expected_dist = brute_force_neighbours(data, data, 20, np.arange(120))
    indices, distances = neighbours.nearest_neighbours(
        data, k=20, block_size=block_size, gallery_block_size=gallery_block_size
    )
    np.testing.assert_array_equal(indices, expected_idx)
    np.testing.assert_allclose(distances, expected_dist, rtol=1e-6)


def test_random_unit_vectors_match_brute_force_and_blocking_does_not_matter():
    rng = np.random.default_rng(1)
    queries = rng.standard_normal((90, 16)).astype(np.float32)
    gallery = rng.standard_normal((250, 16)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    expected_idx, expected_dist = brute_force_neighbours(queries, gallery, 10, [-1] * 90)
    unblocked = neighbours.nearest_neighbours(queries, gallery, k=10, block_size=10**6)
    blocked = neighbours.nearest_neighbours(
        queries, gallery, k=10, block_size=8, gallery_block_size=33
    )
    for indices, distances in (unblocked, blocked):
        np.testing.assert_array_equal(indices, expected_idx)
        np.testing.assert_allclose(distances, expected_dist, atol=1e-3)
    np.testing.assert_array_equal(blocked[0], unblocked[0])


def test_exclude_indices_for_queries_taken_from_the_gallery():
    """Queries 3 and 0 of LINE_X searched in the full gallery: q3 (x=3) -> [4, 1, 2] without
    itself; q0 (x=0) -> [1, 2, 3]; -1 keeps the query: x=6 as a third query finds 5 first."""
    indices, _ = neighbours.nearest_neighbours(
        LINE_X[[3, 0, 5]], LINE_X, k=3, exclude_indices=np.array([3, 0, -1])
    )
    np.testing.assert_array_equal(indices, [[4, 1, 2], [1, 2, 3], [5, 3, 4]])


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"queries": np.zeros((3, 2)), "k": 3}, "k must be in"),
        ({"queries": np.zeros((3, 2)), "gallery": np.zeros((3, 2)), "k": 4}, "k must be in"),
        ({"queries": np.zeros((3, 2)), "k": 0}, "k must be in"),
        ({"queries": np.array([[0.0, np.nan], [1, 1]]), "k": 1}, "queries contains NaN"),
        ({"queries": np.zeros(3), "k": 1}, "queries must have shape"),
        ({"queries": np.zeros((3, 2)), "gallery": np.zeros((3, 4)), "k": 1}, "dimension"),
        ({"queries": np.zeros((3, 2)), "k": 1, "block_size": 0}, "block_size"),
        ({"queries": np.zeros((3, 2)), "k": 1, "exclude_indices": np.array([0, 3, 1])}, "lie in"),
    ],
)
def test_nearest_neighbours_rejects_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        neighbours.nearest_neighbours(**kwargs)


# ----------------------------------------------------------------------------------------------
# FAISS
# ----------------------------------------------------------------------------------------------


def random_data(n, dim, seed=0):
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def clustered_data(n, dim, clusters, seed=0):
    """Gaussian blobs: the structure IVF relies on (real embeddings cluster by class)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)) * 3.0
    labels = rng.integers(clusters, size=n)
    return (centres[labels] + rng.normal(size=(n, dim))).astype(np.float32), labels


@needs_faiss
def test_flat_matches_exact_search_with_self_exclusion():
    data = random_data(600, 24)
    ids, dist = faiss_nearest_neighbours(data, k=10)
    ref_ids, ref_dist = neighbours.nearest_neighbours(data, k=10)
    assert ids.shape == (600, 10) and ids.dtype == np.int64 and dist.dtype == np.float32
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-4, atol=1e-4)
    assert not (ids == np.arange(600)[:, None]).any()


def test_flat_matches_exact_search_with_separate_gallery_and_exclude_indices():
    gallery = random_data(500, 16, seed=1)
    queries = random_data(70, 16, seed=2)
    ids, dist = faiss_nearest_neighbours(queries, gallery, k=7)
    ref_ids, ref_dist = neighbours.nearest_neighbours(queries, gallery, k=7)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-4, atol=1e-4)

    # Queries taken from the gallery (rows 10..79), excluded by index; -1 excludes nothing.
    exclude = np.arange(10, 80)
    exclude[::7] = -1
    ids, _ = faiss_nearest_neighbours(gallery[10:80], gallery, k=5, exclude_indices=exclude)
    ref_ids, _ = neighbours.nearest_neighbours(
        gallery[10:80], gallery, k=5, exclude_indices=exclude
    )
    np.testing.assert_array_equal(ids, ref_ids)
    # A row whose own index is not excluded finds itself first, at distance 0.
    np.testing.assert_array_equal(ids[::7, 0], np.arange(10, 80)[::7])


@needs_faiss
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


@needs_faiss
def test_ivf_recall_against_exact_search():
    data, _ = clustered_data(4000, 32, clusters=40)
    k = 10
    ids, dist = faiss_nearest_neighbours(data, k=k, index_type="ivf", nprobe=8)
    ref_ids, _ = neighbours.nearest_neighbours(data, k=k)
    recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(ids, ref_ids, strict=True)])
    assert recall >= 0.9, recall
    assert not (ids == np.arange(4000)[:, None]).any()
    assert (np.diff(dist, axis=1) >= 0).all()
    # Scanning every cell is exact.
    nlist = default_nlist(4000)
    ids_all, _ = faiss_nearest_neighbours(data, k=k, index_type="ivf", nprobe=nlist)
    np.testing.assert_array_equal(ids_all, ref_ids)


@needs_faiss
def test_ivf_method_of_nearest_neighbours():
    data, _ = clustered_data(800, 16, clusters=20, seed=3)
    ids, distances = neighbours.nearest_neighbours(data, k=4, method="faiss_ivf", nprobe=4)
    assert ids.shape == distances.shape == (800, 4)
    assert (ids != np.arange(800)[:, None]).all()  # each query's own index is excluded


def test_default_nlist():
    # 4 sqrt(N) with at least 39 points a cell: N = 8131 -> min(361, 208) = 208.
    assert default_nlist(8131) == 208
    assert default_nlist(1_000_000) == 4000
    assert default_nlist(10) == 1


@needs_faiss
def test_ivf_too_few_candidates_is_an_error():
    data = random_data(400, 8)
    with pytest.raises(neighbours.TooFewNeighboursError, match=r"raise nprobe \(evaluation.nprobe"):
        faiss_nearest_neighbours(data, k=300, index_type="ivf", nlist=10, nprobe=1)


@needs_faiss
def test_evaluation_nprobe_reaches_the_ivf_search():
    """``evaluation.nprobe`` of the configuration decides how many cells a query scans: 400
    items in default_nlist(400) = 10 cells of about 40, K = 100 needs at least 3 of them."""
    import dataclasses

    from net.config import load_config
    from net.experiment import split_metrics
    from net.records import Records

    labels = np.repeat(np.arange(40), 10)
    records = Records(np.array([f"{i}.jpg" for i in range(400)]), labels, -np.ones((400, 4)),
                      tuple(map(str, range(40))))  # fmt: skip
    config = load_config(Path(__file__).resolve().parents[1] / "config.yaml")
    data = random_data(400, 8)
    for nprobe in (1, 10):
        evaluation = dataclasses.replace(
            config.evaluation, ks=[1, 100], method="faiss_ivf", nprobe=nprobe
        )
        options = dataclasses.replace(config, evaluation=evaluation)
        if nprobe == 1:
            with pytest.raises(ValueError, match=r"raise nprobe \(evaluation.nprobe, now 1\)"):
                split_metrics(records, data, labels, options)
        else:
            exact = dataclasses.replace(options, evaluation=dataclasses.replace(
                evaluation, method="exact"))  # fmt: skip
            assert split_metrics(records, data, labels, options) == pytest.approx(
                split_metrics(records, data, labels, exact)
            )


@needs_faiss
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
        neighbours.nearest_neighbours(random_data(5, 2), k=1, method="annoy")
    data = random_data(5, 2)
    data[3, 1] = np.nan
    with pytest.raises(ValueError, match="row 3"):
        faiss_nearest_neighbours(data, k=1)


def test_missing_faiss_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ImportError, match="pip install faiss-cpu"):
        import_faiss()
    with pytest.raises(ImportError, match="faiss-cpu"):
        neighbours.nearest_neighbours(random_data(5, 2), k=1, method="faiss")
