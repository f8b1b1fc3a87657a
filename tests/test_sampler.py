"""Tests for net.sampler: P x K batches of record indices against plain counts and hand values."""

import numpy as np
import pytest

from net.records import Records
from net.sampler import batch_indices, inclusion_probabilities


def _grouped_labels_records(sizes: list[int]) -> Records:
    labels = np.repeat(np.arange(len(sizes)), sizes)
    order = np.random.default_rng(0).permutation(len(labels))  # records need not be grouped
    return Records(
        np.array([f"/{i}.jpg" for i in range(len(labels))]),
        labels[order],
        np.full((len(labels), 4), -1),
        tuple(str(i) for i in range(len(sizes))),
    )


def test_inclusion_probabilities_hand_computed():
    """Sizes 1, 1, 2, 6 (N = 10), P = 2: 2 * 6 / 10 = 1.2 > 1 caps the last class at 1; the
    other three share the remaining 1 in proportion 1 : 1 : 2, i.e. 0.25, 0.25, 0.5."""
    np.testing.assert_allclose(inclusion_probabilities([1, 1, 2, 6], 2), [0.25, 0.25, 0.5, 1])
    np.testing.assert_allclose(inclusion_probabilities([1, 3], 1), [0.25, 0.75])
    np.testing.assert_allclose(inclusion_probabilities([5, 1, 1], 3), [1, 1, 1])
    np.testing.assert_allclose(inclusion_probabilities([5, 1, 1], 2), [1, 0.5, 0.5])


def test_sampler_includes_classes_in_proportion_to_their_size():
    """Plain counts over 1,000 batches against the binomial law of each class's inclusions."""
    sizes = [2, 5, 10, 20, 40, 7, 13, 3]  # N = 100
    records = _grouped_labels_records(sizes)
    p, k, steps = 2, 3, 1000
    batches = [b.numpy() for b, _ in batch_indices(records, p, k, seed=1).take(steps)]
    included = np.zeros(len(sizes))
    for batch in batches:
        groups = records.labels[batch].reshape(p, k)
        assert len(set(groups[:, 0])) == p and (groups == groups[:, :1]).all()
        included[groups[:, 0]] += 1
    # pi_c = P * n_c / N = n_c / 50 (largest 0.8); inclusions ~ Binomial(1000, pi_c).
    pi = np.array(sizes) / 50
    sigma = np.sqrt(steps * pi * (1 - pi))
    assert (np.abs(included - steps * pi) < 4 * sigma).all(), (included, steps * pi)
    # So each image is drawn about P * K / N = 0.06 times per batch: 60 times in 1,000.
    counts = np.bincount(np.concatenate(batches), minlength=len(records))
    assert counts.min() > 30 and counts.max() < 100, counts
    # Within a class, a walk through its images uses each once before any repeats: 40 images
    # make 13 batches of K = 3 per pass (39 distinct images), then a new pass starts.
    big = np.concatenate([b[records.labels[b] == 4] for b in batches])
    assert len(set(big[:39].tolist())) == 39


@pytest.mark.parametrize("k", [2, 4])
def test_sampler_gives_real_pairs_for_classes_smaller_than_k(k):
    """Stanford Online Products' classes hold 2-12 images; with K = 2 or 4 every class group
    must still hold min(n_c, K) distinct images (a class smaller than K: all of its images,
    then repeats), so every group has at least one pair of different images."""
    sizes = np.random.default_rng(3).integers(2, 13, size=60).tolist()
    records = _grouped_labels_records(sizes)
    p = 8
    for batch in batch_indices(records, p, k, seed=2).take(200):
        groups = batch[0].numpy().reshape(p, k)
        for group in groups:
            label = records.labels[group[0]]
            assert (records.labels[group] == label).all()
            assert len(set(group.tolist())) == min(sizes[label], k), (group, sizes[label])


def test_uniform_class_sampling_ignores_class_sizes():
    """Plain counts over 1,000 batches: with uniform sampling every class of sizes 2 .. 40 is
    in a batch with probability P / C = 2 / 8 = 0.25; proportional sampling would put the class
    of 40 images in 80% of the batches and the class of 2 in 4%."""
    np.testing.assert_allclose(inclusion_probabilities([1, 1, 2, 6], 2, "uniform"), [0.5] * 4)
    with pytest.raises(ValueError, match="class_sampling 'random'"):
        inclusion_probabilities([1, 2], 1, "random")
    sizes = [2, 5, 10, 20, 40, 7, 13, 3]
    records = _grouped_labels_records(sizes)
    p, k, steps = 2, 3, 1000
    dataset = batch_indices(records, p, k, seed=1, class_sampling="uniform").take(steps)
    included = np.zeros(len(sizes))
    for batch, _ in dataset:
        groups = records.labels[batch.numpy()].reshape(p, k)
        assert len(set(groups[:, 0])) == p and (groups == groups[:, :1]).all()
        included[groups[:, 0]] += 1
    sigma = np.sqrt(steps * 0.25 * 0.75)  # Binomial(1000, 0.25): mean 250, sigma 13.7
    assert (np.abs(included - 250) < 4 * sigma).all(), included


def test_sampler_puts_classes_larger_than_n_over_p_in_every_batch():
    records = _grouped_labels_records([30, 5, 5, 5, 5])  # N / P = 50 / 2 = 25 < 30
    batches = [b.numpy() for b, _ in batch_indices(records, 2, 2, seed=0).take(50)]
    assert all(0 in records.labels[b] for b in batches)
