import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.spatial.distance import cdist

from net import losses

# ---------------------------------------------------------------------------------------------
# Plain-loop references (float64, one anchor at a time)
# ---------------------------------------------------------------------------------------------


def _distance(a, b):
    return float(np.sqrt(np.sum((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))


def _margin(x, margin):
    return float(np.log1p(np.exp(x))) if margin is None else max(0.0, x + margin)


def ref_batch_hard(labels, emb, margin):
    per_anchor = []
    for a in range(len(labels)):
        pos = [
            _distance(emb[a], emb[p])
            for p in range(len(labels))
            if p != a and labels[p] == labels[a]
        ]
        neg = [_distance(emb[a], emb[n]) for n in range(len(labels)) if labels[n] != labels[a]]
        if pos and neg:
            per_anchor.append(_margin(max(pos) - min(neg), margin))
    return float(np.mean(per_anchor)) if per_anchor else 0.0


def ref_hap2s(labels, emb, weighting, alpha, sigma, margin):
    per_anchor = []
    for a in range(len(labels)):
        pos = [
            _distance(emb[a], emb[p])
            for p in range(len(labels))
            if p != a and labels[p] == labels[a]
        ]
        neg = [_distance(emb[a], emb[n]) for n in range(len(labels)) if labels[n] != labels[a]]
        if not (pos and neg):
            continue
        if weighting == "exponential":
            wp = [np.exp(d / sigma) for d in pos]
            wn = [np.exp(-d / sigma) for d in neg]
        else:
            wp = [(d + 1.0) ** alpha for d in pos]
            wn = [(d + 1.0) ** (-2.0 * alpha) for d in neg]
        d_p = sum(w * d for w, d in zip(wp, pos, strict=True)) / sum(wp)
        d_n = sum(w * d for w, d in zip(wn, neg, strict=True)) / sum(wn)
        per_anchor.append(_margin(d_p - d_n, margin))
    return float(np.mean(per_anchor)) if per_anchor else 0.0


def ref_classification(labels, logits, smoothing, temperature):
    total = 0.0
    for label, row in zip(labels, logits, strict=True):
        z = np.asarray(row, np.float64) / temperature
        log_p = z - (np.max(z) + np.log(np.sum(np.exp(z - np.max(z)))))
        target = np.full(len(row), smoothing / len(row))
        target[label] += 1.0 - smoothing
        total += -float(np.sum(target * log_p))
    return total / len(labels)


LAYOUTS = {
    "4x3": np.repeat(np.arange(4), 3),
    "singletons": np.array([0, 0, 0, 1, 1, 2, 3, 4, 5, 5, 5, 5]),
    "shuffled": np.array([3, 1, 3, 0, 1, 2, 0, 2, 3, 1, 0, 2]),
}


def _embeddings(seed, n=12, dim=8, normalise=True):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, dim)).astype(np.float32)
    if normalise:
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return emb


# ---------------------------------------------------------------------------------------------
# Shared maths
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_pairwise_distances_match_scipy(seed):
    emb = _embeddings(seed, normalise=False) * 3.0
    got = losses.pairwise_distances(emb).numpy()
    want = cdist(emb.astype(np.float64), emb.astype(np.float64))
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)
    np.testing.assert_array_equal(np.diag(got), 0.0)
    got_sq = losses.pairwise_distances(emb, squared=True).numpy()
    np.testing.assert_allclose(got_sq, want**2, atol=1e-4, rtol=1e-5)


def test_positive_negative_masks():
    positive, negative = losses.positive_negative_masks(np.array([[0.0], [1.0], [0.0]]))
    np.testing.assert_array_equal(
        positive.numpy(), [[False, False, True], [False, False, False], [True, False, False]]
    )
    np.testing.assert_array_equal(
        negative.numpy(), [[False, True, False], [True, False, True], [False, True, False]]
    )


def test_masked_softmax_rows_with_and_without_selection():
    logits = tf.constant([[1e4, 1e4 - 1.0, 5.0], [1.0, 2.0, 3.0]], tf.float32)
    mask = tf.constant([[True, True, False], [False, False, False]])
    with tf.GradientTape() as tape:
        tape.watch(logits)
        weights = losses.masked_softmax(logits, mask)
        total = tf.reduce_sum(weights * tf.constant([[1.0, 2.0, 3.0]] * 2))
    # Row 0: weights exp(0) : exp(-1) -> 1 / (1 + e^-1) = 0.7310586, 0.2689414, 0 (no overflow
    # at 1e4, where a plain exp gives inf); row 1 selects nothing: all zero.
    want = [[0.7310586, 0.2689414, 0.0], [0.0, 0.0, 0.0]]
    np.testing.assert_allclose(weights.numpy(), want, atol=1e-6)
    assert np.all(np.isfinite(tape.gradient(total, logits).numpy()))


# ---------------------------------------------------------------------------------------------
# Losses against the loops
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("margin", [None, 0.1])
def test_batch_hard_triplet_matches_loop(seed, layout, margin):
    labels = LAYOUTS[layout]
    emb = _embeddings(seed)
    got = float(losses.batch_hard_triplet_loss(labels, emb, margin=margin))
    assert got == pytest.approx(ref_batch_hard(labels, emb, margin), abs=1e-5, rel=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize(
    "params",
    [
        {"weighting": "polynomial", "alpha": 10.0, "margin": None},
        {"weighting": "polynomial", "alpha": 3.0, "margin": 0.2},
        {"weighting": "exponential", "sigma": 0.5, "margin": None},
        {"weighting": "exponential", "sigma": 2.0, "margin": 0.3},
    ],
)
def test_hap2s_matches_loop(seed, layout, params):
    labels = LAYOUTS[layout]
    emb = _embeddings(seed)
    full = {"alpha": 10.0, "sigma": 0.5, **params}
    got = float(losses.hard_aware_point_to_set_loss(labels, emb, **full))
    assert got == pytest.approx(ref_hap2s(labels, emb, **full), abs=1e-5, rel=1e-5)


def test_batch_hard_triplet_hand_computed():
    """1-D points 0, 1, 3, 6 with labels 0, 0, 1, 1 and hinge margin 0.1.

    anchor 0: d_ap = 1, d_an = min(3, 6) = 3 -> max(0, 1 - 3 + 0.1) = 0
    anchor 1: d_ap = 1, d_an = min(2, 5) = 2 -> 0
    anchor 2: d_ap = 3, d_an = min(3, 2) = 2 -> 3 - 2 + 0.1 = 1.1
    anchor 3: d_ap = 3, d_an = min(6, 5) = 5 -> 0
    mean = 1.1 / 4 = 0.275; soft margin for anchor 2 alone would be log(1 + e) = 1.3133.
    """
    emb = np.array([[0.0], [1.0], [3.0], [6.0]], np.float32)
    labels = np.array([0, 0, 1, 1])
    assert float(losses.batch_hard_triplet_loss(labels, emb, margin=0.1)) == pytest.approx(
        0.275, abs=1e-6
    )


def test_hap2s_exponential_hand_computed():
    """Same points, exponential weights, sigma = 1, hinge margin 0.

    Each anchor has a single positive, so D_P = d_ap. Negatives weigh exp(-d):
    anchor 0: D_N = (3 e^-3 + 6 e^-6) / (e^-3 + e^-6) = (3 + 6 e^-3) / (1 + e^-3) = 3.14228
    anchor 1: D_N = (2 e^-2 + 5 e^-5) / (e^-2 + e^-5) = (2 + 5 e^-3) / (1 + e^-3) = 2.14228
    anchor 2: D_N = (3 e^-3 + 2 e^-2) / (e^-3 + e^-2) = (3 + 2 e) / (1 + e) = 2.26894
    anchor 3: D_N = (6 e^-6 + 5 e^-5) / (e^-6 + e^-5) = (6 + 5 e) / (1 + e) = 5.26894
    hinge: [1 - 3.142]+ = 0, [1 - 2.142]+ = 0, 3 - 2.26894 = 0.73106, [3 - 5.269]+ = 0
    mean = 0.73106 / 4 = 0.182765.
    """
    emb = np.array([[0.0], [1.0], [3.0], [6.0]], np.float32)
    labels = np.array([0, 0, 1, 1])
    got = float(
        losses.hard_aware_point_to_set_loss(
            labels, emb, weighting="exponential", sigma=1.0, margin=0.0
        )
    )
    e = np.e
    want = (3.0 - (3.0 + 2.0 * e) / (1.0 + e)) / 4.0
    assert want == pytest.approx(0.182765, abs=1e-6)
    assert got == pytest.approx(want, abs=1e-6)


def test_hap2s_without_hardness_is_between_mean_and_hardest():
    """With tiny alpha the weights are uniform (set means); a large alpha tends to batch-hard."""
    labels = LAYOUTS["4x3"]
    emb = _embeddings(5)
    flat = float(losses.hard_aware_point_to_set_loss(labels, emb, alpha=1e-6, margin=0.0))
    hard = float(losses.hard_aware_point_to_set_loss(labels, emb, alpha=200.0, margin=0.0))
    want_flat = ref_hap2s(labels, emb, "polynomial", 1e-6, 1.0, 0.0)
    assert flat == pytest.approx(want_flat, abs=1e-5)
    assert hard == pytest.approx(ref_batch_hard(labels, emb, 0.0), abs=2e-3)


# ---------------------------------------------------------------------------------------------
# Degenerate batches: finite values and gradients
# ---------------------------------------------------------------------------------------------

LOSS_FNS = {
    "triplet_soft": lambda y, e: losses.batch_hard_triplet_loss(y, e),
    "triplet_hinge": lambda y, e: losses.batch_hard_triplet_loss(y, e, margin=0.1),
    "hap2s_poly": lambda y, e: losses.hard_aware_point_to_set_loss(y, e),
    "hap2s_exp": lambda y, e: losses.hard_aware_point_to_set_loss(
        y, e, weighting="exponential", margin=0.2
    ),
}


def _value_and_grad(fn, labels, emb):
    emb = tf.Variable(emb)
    with tf.GradientTape() as tape:
        value = fn(tf.constant(labels), emb)
    return float(value), tape.gradient(value, emb).numpy()


@pytest.mark.parametrize("name", sorted(LOSS_FNS))
def test_duplicate_embeddings_give_finite_gradients(name):
    emb = np.tile(_embeddings(3, n=1), (6, 1))
    emb[3:] = _embeddings(4, n=1)  # two groups of identical points
    labels = np.array([0, 0, 1, 1, 2, 2])
    value, grad = _value_and_grad(LOSS_FNS[name], labels, emb)
    assert np.isfinite(value)
    assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("name", sorted(LOSS_FNS))
@pytest.mark.parametrize(
    "labels", [np.zeros(6, int), np.arange(6)], ids=["one_class", "no_positive"]
)
def test_batches_without_valid_anchor_give_zero(name, labels):
    value, grad = _value_and_grad(LOSS_FNS[name], labels, _embeddings(7, n=6))
    assert value == 0.0
    np.testing.assert_array_equal(grad, 0.0)


@pytest.mark.parametrize("name", sorted(LOSS_FNS))
def test_anchor_without_positive_is_excluded(name):
    """Class 9 has one sample: it is no anchor (the mean is over 4 anchors, as in the loop),
    but it still serves as a negative of the others; gradients stay finite."""
    labels = np.array([0, 0, 1, 1, 9])
    emb = _embeddings(8, n=5)
    value, grad = _value_and_grad(LOSS_FNS[name], labels, emb)
    assert np.all(np.isfinite(grad))
    assert value == pytest.approx(_reference_for(name, labels, emb), abs=1e-5)


def _reference_for(name, labels, emb):
    if name == "triplet_soft":
        return ref_batch_hard(labels, emb, None)
    if name == "triplet_hinge":
        return ref_batch_hard(labels, emb, 0.1)
    if name == "hap2s_poly":
        return ref_hap2s(labels, emb, "polynomial", 10.0, 0.5, None)
    return ref_hap2s(labels, emb, "exponential", 10.0, 0.5, 0.2)


@pytest.mark.parametrize("name", sorted(LOSS_FNS))
def test_large_distances_stay_finite(name):
    emb = _embeddings(9, n=8, normalise=False) * 1e4
    value, grad = _value_and_grad(LOSS_FNS[name], np.repeat(np.arange(4), 2), emb)
    assert np.isfinite(value)
    assert np.all(np.isfinite(grad))


# ---------------------------------------------------------------------------------------------
# Auxiliary classification loss
# ---------------------------------------------------------------------------------------------


def test_auxiliary_classification_hand_computed():
    """logits (2, 0), label 0, smoothing 0.1, temperature 0.5.

    logits / T = (4, 0); log p = (-log(1 + e^-4), -4 - log(1 + e^-4)) = (-0.018149, -4.018149);
    targets = (0.9 + 0.05, 0.05) = (0.95, 0.05);
    loss = 0.95 * 0.018149 + 0.05 * 4.018149 = 0.218149.
    """
    got = float(
        losses.auxiliary_classification_loss(np.array([0]), np.array([[2.0, 0.0]], np.float32))
    )
    assert got == pytest.approx(0.218149, abs=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("smoothing,temperature", [(0.1, 0.5), (0.0, 1.0), (0.3, 2.0)])
def test_auxiliary_classification_matches_loop(seed, smoothing, temperature):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(10, 7)).astype(np.float32) * 3
    labels = rng.integers(0, 7, size=10)
    got = float(losses.auxiliary_classification_loss(labels, logits, smoothing, temperature))
    want = ref_classification(labels, logits, smoothing, temperature)
    assert got == pytest.approx(want, abs=1e-5, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# Loss classes
# ---------------------------------------------------------------------------------------------

CLASSES = [
    (losses.BatchHardTripletLoss, {"margin": 0.1}),
    (losses.BatchHardTripletLoss, {"margin": None}),
    (losses.HardAwarePointToSetLoss, {"weighting": "exponential", "sigma": 0.7, "margin": 0.2}),
    (losses.HardAwarePointToSetLoss, {"weighting": "polynomial", "alpha": 5.0}),
]


@pytest.mark.parametrize("cls,params", CLASSES)
def test_metric_loss_class_matches_function_with_float_targets(cls, params):
    labels = LAYOUTS["singletons"]
    emb = _embeddings(11)
    loss = cls(**params)
    # Keras hands y_true as float32, here also with a trailing axis.
    got = float(loss(labels.astype(np.float32)[:, None], emb))
    fn = (
        losses.batch_hard_triplet_loss
        if cls is losses.BatchHardTripletLoss
        else losses.hard_aware_point_to_set_loss
    )
    assert got == pytest.approx(float(fn(labels, emb, **params)), abs=1e-6)


@pytest.mark.parametrize(
    "cls,params",
    [*CLASSES, (losses.AuxiliaryClassificationLoss, {"label_smoothing": 0.2, "temperature": 0.7})],
)
def test_loss_class_serialization_round_trip(cls, params):
    loss = cls(**params)
    config = loss.get_config()
    for key, value in params.items():
        assert config[key] == value
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(restored) is cls
    assert restored.get_config() == config


def test_auxiliary_loss_class_matches_function():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(6, 4)).astype(np.float32)
    labels = rng.integers(0, 4, size=6)
    loss = losses.AuxiliaryClassificationLoss(label_smoothing=0.2, temperature=0.7)
    got = float(loss(labels.astype(np.float32), logits))
    assert got == pytest.approx(ref_classification(labels, logits, 0.2, 0.7), abs=1e-5)


@pytest.mark.parametrize(
    "make",
    [
        lambda: losses.BatchHardTripletLoss(margin=-0.1),
        lambda: losses.HardAwarePointToSetLoss(sigma=0.0),
        lambda: losses.HardAwarePointToSetLoss(alpha=-1.0),
        lambda: losses.HardAwarePointToSetLoss(weighting="cubic"),
        lambda: losses.HardAwarePointToSetLoss(margin=-1.0),
        lambda: losses.AuxiliaryClassificationLoss(temperature=0.0),
        lambda: losses.AuxiliaryClassificationLoss(label_smoothing=1.0),
        lambda: losses.AuxiliaryClassificationLoss(label_smoothing=-0.1),
        lambda: losses.batch_hard_triplet_loss(
            np.zeros(2), np.zeros((2, 2), np.float32), margin=-1
        ),
    ],
)
def test_bad_hyperparameters_raise(make):
    with pytest.raises(ValueError):
        make()


def test_build_metric_loss():
    loss = losses.build_metric_loss("hap2s", weighting="exponential", sigma=0.5, margin=0.2)
    assert isinstance(loss, losses.HardAwarePointToSetLoss)
    assert (loss.weighting, loss.sigma, loss.margin) == ("exponential", 0.5, 0.2)
    assert losses.build_metric_loss("batch_hard_triplet", margin=0.1).margin == 0.1
    with pytest.raises(ValueError, match="batch_hard_triplet"):
        losses.build_metric_loss("contrastive")
    with pytest.raises(ValueError, match="sigmaa"):
        losses.build_metric_loss("hap2s", sigmaa=1.0)


def test_loss_params_name_every_hyperparameter_of_each_loss_class():
    """net.loss_params (read by the configuration without TensorFlow) matches the classes."""
    import inspect

    from net.loss_params import METRIC_LOSS_PARAMS

    assert set(METRIC_LOSS_PARAMS) == set(losses.METRIC_LOSSES)
    for name, cls in losses.METRIC_LOSSES.items():
        signature = inspect.signature(cls.__init__).parameters
        assert set(METRIC_LOSS_PARAMS[name]) == set(signature) - {"self", "name", "kwargs"}, name
