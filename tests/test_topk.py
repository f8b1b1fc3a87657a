"""Tests for net.topk: the k smallest of each row against sorting the row's (value, id) pairs."""

import numpy as np
import pytest

from net.topk import smallest_k


@pytest.mark.parametrize("with_ids", [False, True])
def test_smallest_k_rows_with_and_without_boundary_ties_match_a_plain_sort(with_ids):
    """Rows of distinct values take the row-by-row path, rows tied at the k-th value the general
    one; both must give each row's k first (value, id) pairs, as sorting the row's pairs does."""
    rng = np.random.default_rng(4)
    distinct = rng.permutation(40 * 30).reshape(40, 30).astype(np.float32)
    tied = rng.integers(0, 6, size=(40, 30)).astype(np.float32)
    values = np.concatenate([distinct, tied])[rng.permutation(80)]
    ids = rng.permutation(80 * 30).reshape(80, 30) if with_ids else None
    for k in (1, 5, 29, 30):
        got_ids, got_values = smallest_k(values, k, ids)
        for row in range(80):
            row_ids = ids[row] if with_ids else np.arange(30)
            expected = sorted(zip(values[row].tolist(), row_ids.tolist(), strict=True))[:k]
            assert list(zip(got_values[row].tolist(), got_ids[row].tolist(), strict=True)) == (
                expected
            )
