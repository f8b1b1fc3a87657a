"""Tests for net.analysis: retrieval metrics against hand-computed values and a plain loop."""

import importlib.util

import numpy as np
import pytest

from net import analysis, ranking

needs_faiss = pytest.mark.skipif(
    importlib.util.find_spec("faiss") is None, reason="the optional faiss-cpu is not installed"
)

# Points on a line with ties and duplicate items (1 and 3 both appear twice) and one lone label.
#   index:  0  1  2  3  4  5
#   x:      0  1  1  3  3  6
#   label:  0  0  1  1  0  2
LINE_X = np.array([[0.0], [1.0], [1.0], [3.0], [3.0], [6.0]])
LINE_LABELS = np.array([0, 0, 1, 1, 0, 2])


def loop_metrics(gallery, labels, ks, queries=None, query_labels=None):
    """Plain per-query loop over a full stable ranking; queries without a relevant item skipped."""
    self_search = queries is None
    if self_search:
        queries, query_labels = gallery, labels
    recall = {k: 0.0 for k in ks}
    p1 = rp = ap = 0.0
    count = 0
    for i in range(len(queries)):
        dist = np.sqrt(((np.asarray(gallery, np.float64) - queries[i]) ** 2).sum(-1))
        order = [j for j in np.argsort(dist, kind="stable") if not (self_search and j == i)]
        rel = [labels[j] == query_labels[i] for j in order]
        r = sum(rel)
        if r == 0:
            continue
        count += 1
        for k in ks:
            recall[k] += any(rel[:k])
        p1 += rel[0]
        rp += sum(rel[:r]) / r
        ap += sum(rel[i] * sum(rel[: i + 1]) / (i + 1) for i in range(r)) / r
    return {
        **{f"recall@{k}": recall[k] / count for k in ks},
        "precision@1": p1 / count,
        "r_precision": rp / count,
        "map@r": ap / count,
        "num_queries": count,
    }


# ----------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------


def test_metrics_from_a_match_table_hand_computed():
    """Query 0 (R = 2): hit, miss, hit; query 1 (R = 1): miss, miss, hit.

    Recall@1 = 1/2, @2 = 1/2, @3 = 2/2; Precision@1 = 1/2; R-Precision = (1/2 + 0/1) / 2 = 0.25;
    MAP@R = ((1/1) / 2 + 0 / 1) / 2 = 0.25 (query 0: only rank 1 counts within R = 2).
    """
    matches = np.array([[True, False, True], [False, False, True]])
    num_relevant = np.array([2, 1])
    assert analysis.recall_at_k_from_matches(matches, [3, 1, 2]) == {1: 0.5, 2: 0.5, 3: 1.0}
    assert analysis.precision_at_1_from_matches(matches) == 0.5
    assert analysis.r_precision_from_matches(matches, num_relevant) == 0.25
    assert analysis.map_at_r_from_matches(matches, num_relevant) == 0.25
    table = analysis.MatchTable(matches, num_relevant, 7)
    assert analysis.metrics_from_matches(table, ks=(1, 3)) == {
        "recall@1": 0.5,
        "recall@3": 1.0,
        "precision@1": 0.5,
        "r_precision": 0.25,
        "map@r": 0.25,
        "num_queries": 2,
        "embedding_dim": 7,
    }


def test_line_metrics_hand_computed():
    """Relevance (neighbour shares the label) along the rankings of the first test; q5 is the only
    item of label 2 (R = 0) and is left out, so there are 5 queries.

    q0 l0 R=2: [1 y, 2 n, 3 n, 4 y]   q1 l0 R=2: [2 n, 0 y, 3 n, 4 y]
    q2 l1 R=1: [1 n, 0 n, 3 y]        q3 l1 R=1: [4 n, 1 n, 2 y]
    q4 l0 R=2: [3 n, 1 y, 2 n, 0 y]
    Recall@1 = 1/5 (q0); Recall@2 = 3/5 (q0, q1, q4); Recall@4 = 5/5.
    R-Precision = (1/2 + 1/2 + 0 + 0 + 1/2) / 5 = 0.3.
    MAP@R: q0 (1/1)/2 = 1/2; q1 (1/2)/2 = 1/4; q2 0; q3 0; q4 (1/2)/2 = 1/4 => 1.0 / 5 = 0.2.
    """
    metrics = analysis.retrieval_metrics(LINE_X, LINE_LABELS, ks=(1, 2, 4))
    assert metrics == pytest.approx(
        {
            "recall@1": 0.2,
            "recall@2": 0.6,
            "recall@4": 1.0,
            "precision@1": 0.2,
            "r_precision": 0.3,
            "map@r": 0.2,
            "num_queries": 5,
            "embedding_dim": 1,
        }
    )
    assert analysis.recall_at_k(LINE_X, LINE_LABELS, ks=[4, 1, 2]) == pytest.approx(
        {1: 0.2, 2: 0.6, 4: 1.0}
    )
    assert analysis.precision_at_1(LINE_X, LINE_LABELS) == pytest.approx(0.2)
    assert analysis.r_precision(LINE_X, LINE_LABELS) == pytest.approx(0.3)
    assert analysis.map_at_r(LINE_X, LINE_LABELS) == pytest.approx(0.2)


def test_separate_query_set_hand_computed():
    """Gallery LINE_X with string labels; queries x=0.9 (a) and x=4 (b), none excluded.

    q(0.9, a): distances 0.9, 0.1, 0.1, 2.1, 2.1, 5.1 -> [1 a, 2 b, 0 a, 3 b, 4 a]; R = 3 (0, 1, 4)
      Recall@1 = 1; R-Precision = 2/3 (first 3: a, b, a); AP = (1/1 + 2/3) / 3 = 5/9.
    q(4, b): distances 4, 3, 3, 1, 1, 2 -> [3 b, 4 a, 5 c, 1 a, 2 b, 0 a]; R = 2 (2, 3): b, a
      Recall@1 = 1; R-Precision = 1/2; AP = (1/1 + 0) / 2 = 1/2.
    Means: Recall@1 = 1, R-Precision = 7/12, MAP@R = (5/9 + 1/2) / 2 = 19/36.
    """
    labels = np.array(["a", "a", "b", "b", "a", "c"])
    metrics = analysis.retrieval_metrics(
        LINE_X,
        labels,
        ks=(1,),
        query_embeddings=np.array([[0.9], [4.0]]),
        query_labels=np.array(["a", "b"]),
    )
    assert metrics["recall@1"] == pytest.approx(1.0)
    assert metrics["r_precision"] == pytest.approx(7 / 12)
    assert metrics["map@r"] == pytest.approx(19 / 36)
    assert metrics["num_queries"] == 2


def test_perfect_and_worst_embeddings():
    """Two tight clusters with labels matching clusters: every metric is 1. Labels alternating
    across clusters with 2 items per label, each item's mate sits in the other cluster: the
    nearest other item of the own cluster is always of the other label, R = 1, all metrics 0."""
    x = np.array([[0.0], [0.1], [10.0], [10.1]])
    perfect = analysis.retrieval_metrics(x, np.array([0, 0, 1, 1]), ks=(1, 2))
    assert [perfect[key] for key in ("recall@1", "precision@1", "r_precision", "map@r")] == [
        1.0
    ] * 4
    worst = analysis.retrieval_metrics(x, np.array([0, 1, 1, 0]), ks=(1,))
    assert [worst[key] for key in ("recall@1", "r_precision", "map@r")] == [0.0] * 3


@pytest.mark.parametrize("integer_data", [True, False])
def test_metrics_match_plain_loop_reference(integer_data):
    rng = np.random.default_rng(2)
    if integer_data:  # Many exact ties and duplicates.
        data = rng.integers(-1, 2, size=(150, 3)).astype(np.float32)
    else:
        data = rng.standard_normal((150, 8)).astype(np.float32)
    labels = rng.integers(0, 12, size=150)
    labels[0] = 99  # A lone label: that query is skipped.
    expected = loop_metrics(data, labels, (1, 2, 4, 8))
    for block_size in (13, 1024):
        metrics = analysis.retrieval_metrics(data, labels, block_size=block_size)
        assert metrics.pop("embedding_dim") == data.shape[1]
        assert metrics == pytest.approx(expected, abs=1e-12)
    assert expected["num_queries"] == 149


def test_separate_queries_match_plain_loop_reference():
    rng = np.random.default_rng(3)
    gallery = rng.integers(-2, 3, size=(80, 2)).astype(np.float32)
    gallery_labels = rng.integers(0, 5, size=80)
    queries = rng.integers(-2, 3, size=(30, 2)).astype(np.float32)
    query_labels = rng.integers(0, 6, size=30)  # Label 5 is absent from the gallery.
    expected = loop_metrics(gallery, gallery_labels, (1, 4), queries, query_labels)
    metrics = analysis.retrieval_metrics(
        gallery, gallery_labels, ks=(1, 4), query_embeddings=queries, query_labels=query_labels
    )
    metrics.pop("embedding_dim")
    assert metrics == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"ks": (1, 6)}, "k must be in"),  # 6 items: at most 5 neighbours.
        ({"ks": (0,)}, "positive integers"),
        ({"ks": ()}, "positive integers"),
        ({"labels": np.zeros(5)}, "labels must have shape"),
        ({"labels": np.arange(6)}, "no query has another item"),
        ({"query_embeddings": np.zeros((2, 1))}, "given together"),
    ],
)
def test_metrics_reject_bad_input(kwargs, message):
    arguments = {"embeddings": LINE_X, "labels": LINE_LABELS, **kwargs}
    with pytest.raises(ValueError, match=message):
        analysis.retrieval_metrics(**arguments)


@pytest.mark.parametrize("separate_queries", [False, True])
def test_metrics_in_query_chunks_with_k_far_beyond_r_match_the_loop(monkeypatch, separate_queries):
    """SOP-style: classes of 2-5 items, Recall@K up to K = 100 (far beyond every R), the exact
    search split into chunks of 7 queries; every metric as the plain loop computes it."""
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(50), rng.integers(2, 6, size=50))
    gallery = rng.standard_normal((len(labels), 8)).astype(np.float32)
    queries = query_labels = None
    if separate_queries:
        queries = rng.standard_normal((40, 8)).astype(np.float32)
        query_labels = rng.integers(0, 55, size=40)  # some without any relevant item
    monkeypatch.setattr(analysis, "_MATCH_CHUNK", 7)
    ks = (1, 10, 100)
    expected = loop_metrics(gallery, labels, ks, queries, query_labels)
    metrics = analysis.retrieval_metrics(
        gallery, labels, ks=ks, query_embeddings=queries, query_labels=query_labels
    )
    metrics.pop("embedding_dim")
    assert metrics == pytest.approx(expected, abs=1e-9)


# ----------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------


def test_format_metrics_table_shows_percentages_and_counts():
    table = analysis.format_metrics_table(
        {"map@r": 0.2, "recall@2": 0.6, "recall@1": 0.2125, "num_queries": 5, "embedding_dim": 1}
    )
    lines = table.splitlines()
    assert [line.split()[0] for line in lines[2:]] == [
        "recall@1",
        "recall@2",
        "map@r",
        "num_queries",
        "embedding_dim",
    ]
    assert lines[2].split() == ["recall@1", "21.25"]
    assert lines[5].split() == ["num_queries", "5"]


def test_compare_models_table_one_row_per_model():
    table = analysis.compare_models_table(
        {
            "cgd_sg": {"recall@1": 0.9, "recall@8": 0.99, "num_queries": 8131},
            "simple": {"recall@1": 0.7512},
        }
    )
    header, rule, *rows = table.splitlines()
    assert header.split()[-3:] == ["recall@1", "recall@8", "num_queries"]
    assert set(rule) <= {"-", " "}
    assert rows[0].split() == ["cgd_sg", "90.00", "99.00", "8131"]
    assert rows[1].split() == ["simple", "75.12", "-", "-"]
    with pytest.raises(ValueError, match="at least one"):
        analysis.compare_models_table({})


@needs_faiss
def test_retrieval_metrics_dispatch_to_faiss():
    rng = np.random.default_rng(3)
    labels = rng.integers(20, size=800)
    centres = rng.normal(size=(20, 16)) * 3.0
    data = (centres[labels] + rng.normal(size=(800, 16)) * 2.2).astype(np.float32)
    exact = analysis.retrieval_metrics(data, labels)
    assert analysis.retrieval_metrics(data, labels, method="faiss") == exact
    assert analysis.recall_at_k(data, labels, method="faiss") == analysis.recall_at_k(data, labels)


# ----------------------------------------------------------------------------------------------
# Average ranking position
# ----------------------------------------------------------------------------------------------


def loop_average_ranking_position(gallery, labels, queries=None, query_labels=None):
    """Plain loop: each query ranks the whole gallery (stable argsort, itself left out), ranks
    from 1; the mean rank of its relevant items, averaged over queries that have any."""
    self_search = queries is None
    if self_search:
        queries, query_labels = gallery, labels
    values = []
    for i in range(len(queries)):
        dist = np.sqrt(((np.asarray(gallery, np.float64) - queries[i]) ** 2).sum(-1))
        order = [j for j in np.argsort(dist, kind="stable") if not (self_search and j == i)]
        ranks = [rank for rank, j in enumerate(order, start=1) if labels[j] == query_labels[i]]
        if ranks:
            values.append(sum(ranks) / len(ranks))
    return sum(values) / len(values)


def test_average_ranking_position_hand_computed():
    """The rankings of test_line_metrics_hand_computed, relevant ranks counted from 1:
    q0 [1, 4] -> 2.5; q1 [2, 4] -> 3; q2 [3] -> 3; q3 [3] -> 3; q4 [2, 4] -> 3; q5 has none.
    Mean (2.5 + 3 + 3 + 3 + 3) / 5 = 2.9."""
    assert analysis.average_ranking_position(LINE_X, LINE_LABELS) == pytest.approx(2.9)
    metrics = analysis.retrieval_metrics(LINE_X, LINE_LABELS, ks=(1,), ranking=True)
    assert metrics["average_ranking_position"] == pytest.approx(2.9)
    assert "average_ranking_position" not in analysis.retrieval_metrics(
        LINE_X, LINE_LABELS, ks=(1,)
    )
    # From match rows: [T F T] -> (1 + 3) / 2 = 2; [F F F] has none; [F T F] -> 2.
    rows = np.array([[1, 0, 1], [0, 0, 0], [0, 1, 0]], dtype=bool)
    np.testing.assert_array_equal(analysis.average_ranking_positions(rows), [2.0, np.nan, 2.0])
    assert analysis.average_ranking_position_from_matches(rows) == 2.0
    with pytest.raises(ValueError, match="no query"):
        analysis.average_ranking_position_from_matches(np.zeros((2, 3), bool))
    # A perfect ranking scores (R + 1) / 2: two classes of 3 far apart, R = 2 -> 1.5.
    perfect = np.array([[0.0], [0.1], [0.2], [9.0], [9.1], [9.2]])
    assert analysis.average_ranking_position(perfect, [0, 0, 0, 1, 1, 1]) == pytest.approx(1.5)


@pytest.mark.parametrize("packed", [True, False])
@pytest.mark.parametrize("integer_data", [False, True])
def test_average_ranking_position_matches_a_plain_loop(integer_data, packed, monkeypatch):
    """Random and tied (integer) embeddings, the ranking held in chunks of a few queries, with
    packed sort keys and with the argsort used for galleries too large to pack."""
    if not packed:
        monkeypatch.setattr(ranking, "_PACKED_MAX_COLUMNS", 0)
    rng = np.random.default_rng(5)
    if integer_data:
        data = rng.integers(-1, 2, size=(120, 3)).astype(np.float32)
    else:
        data = rng.standard_normal((120, 6)).astype(np.float32)
    labels = rng.integers(0, 9, size=120)
    labels[0] = 99  # a lone label: that query is left out
    expected = loop_average_ranking_position(data, labels)
    monkeypatch.setattr(ranking, "_RANKING_ENTRIES", 7 * 120)  # chunks of 7 queries
    assert analysis.average_ranking_position(data, labels) == pytest.approx(expected, rel=1e-12)
    queries, query_labels = data[:30] + 0.25, labels[:30]
    expected = loop_average_ranking_position(data[30:], labels[30:], queries, query_labels)
    got = analysis.average_ranking_position(
        data[30:], labels[30:], query_embeddings=queries, query_labels=query_labels
    )
    assert got == pytest.approx(expected, rel=1e-12)


def test_tables_show_the_average_ranking_position_as_a_rank():
    metrics = {"recall@1": 0.5, "average_ranking_position": 12.345, "num_queries": 4}
    lines = analysis.format_metrics_table(metrics).splitlines()
    assert [line.split()[0] for line in lines[2:]] == [
        "recall@1",
        "average_ranking_position",
        "num_queries",
    ]
    assert lines[3].split() == ["average_ranking_position", "(rank)", "12.35"]
    table = analysis.compare_models_table({"a": metrics})
    assert "average_ranking_position (rank)" in table and "12.35" in table


@needs_faiss
@pytest.mark.parametrize("method", ["faiss", "faiss_ivf"])
def test_faiss_metrics_in_query_chunks_match_one_search(monkeypatch, method):
    """FAISS builds its index once and searches it chunk by chunk; the metrics must be those
    of one search of all queries (IVF included: its answers do not depend on the chunking)."""
    rng = np.random.default_rng(6)
    labels = np.repeat(np.arange(60), rng.integers(2, 6, size=60))
    data = rng.standard_normal((len(labels), 8)).astype(np.float32)
    whole = analysis.retrieval_metrics(data, labels, ks=(1, 10), method=method, nprobe=4)
    monkeypatch.setattr(analysis, "_MATCH_CHUNK", 9)
    chunked = analysis.retrieval_metrics(data, labels, ks=(1, 10), method=method, nprobe=4)
    assert chunked == whole
    if method == "faiss":
        assert chunked == analysis.retrieval_metrics(data, labels, ks=(1, 10))
