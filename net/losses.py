"""Metric-learning and auxiliary classification losses (Keras 3, backend-agnostic `keras.ops`).

Pure functions with a thin `keras.losses.Loss` class each:

- `batch_hard_triplet_loss` / `BatchHardTripletLoss`: Hermans et al. 2017 (arXiv 1703.07737).
- `hard_aware_point_to_set_loss` / `HardAwarePointToSetLoss`: HAP2S, Yu et al. 2018
  (arXiv 1807.11206).
- `auxiliary_classification_loss` / `AuxiliaryClassificationLoss`: softmax cross-entropy with
  label smoothing and temperature, the CGD auxiliary loss (Jun et al. 2019).

The shared maths (`pairwise_distances`, `positive_negative_masks`, `masked_softmax`) is public
so that metrics can use the same definitions. All distances are Euclidean, computed through the
Gram matrix (no B x B x D tensor), in float32.

Anchors that have no positive or no negative in the batch are left out of the mean; a batch
without any valid anchor gives 0 with zero (finite) gradients.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from net.keras_config import AttributeConfig
from net.loss_params import (  # noqa: F401  (HAP2S_WEIGHTINGS re-exported)
    HAP2S_WEIGHTINGS,
    check_margin,
    check_metric_loss_params,
    check_positive,
    check_smoothing,
    check_weighting,
)

_PACKAGE = "cgd"

# --------------------------------------------------------------------------------------------
# Shared maths
# --------------------------------------------------------------------------------------------


def flatten_labels(labels) -> Any:
    """Cast labels to int32 and flatten them.

    Args:
        labels: Class ids, any shape with B elements ((B,) or (B, 1)), any numeric dtype
            (Keras hands float32 targets to losses).

    Returns:
        int32 tensor, shape (B,).
    """
    return ops.reshape(ops.cast(labels, "int32"), (-1,))


def positive_negative_masks(labels) -> tuple[Any, Any]:
    """Masks of same-class and different-class pairs.

    Args:
        labels: Class ids, shape (B,) (or anything `flatten_labels` accepts).

    Returns:
        (positive, negative), both bool, shape (B, B): ``positive[i, j]`` when i != j and
        labels match; ``negative[i, j]`` when the labels differ.
    """
    labels = flatten_labels(labels)
    same = ops.equal(ops.expand_dims(labels, 1), ops.expand_dims(labels, 0))
    index = ops.arange(ops.shape(labels)[0])
    diagonal = ops.equal(ops.expand_dims(index, 1), ops.expand_dims(index, 0))
    return ops.logical_and(same, ops.logical_not(diagonal)), ops.logical_not(same)


def pairwise_distances(embeddings, squared: bool = False) -> Any:
    """Euclidean distances between all rows, through the Gram matrix.

    ``d2[i, j] = |e_i|^2 - 2 e_i . e_j + |e_j|^2``, clamped at 0, with an exact 0 diagonal. The
    square root is taken only of positive entries, so zero distances (the diagonal, duplicate
    embeddings) have a zero, finite gradient instead of an infinite one.

    Args:
        embeddings: float tensor, shape (B, D); computed in float32.
        squared: Return squared distances.

    Returns:
        float32 tensor, shape (B, B), symmetric, zero diagonal.
    """
    embeddings = ops.cast(embeddings, "float32")
    square_norms = ops.sum(ops.square(embeddings), axis=1)
    gram = ops.matmul(embeddings, ops.transpose(embeddings))
    d2 = ops.expand_dims(square_norms, 1) - 2.0 * gram + ops.expand_dims(square_norms, 0)
    index = ops.arange(ops.shape(embeddings)[0])
    diagonal = ops.equal(ops.expand_dims(index, 1), ops.expand_dims(index, 0))
    d2 = ops.where(diagonal, 0.0, ops.maximum(d2, 0.0))
    if squared:
        return d2
    zero = ops.less_equal(d2, 0.0)
    return ops.where(zero, 0.0, ops.sqrt(ops.where(zero, 1.0, d2)))


def masked_softmax(logits, mask, axis: int = -1) -> Any:
    """Softmax over the entries selected by ``mask``; other entries get weight 0.

    Computed stably (the maximum selected logit is subtracted first). A row with no selected
    entry gives all-zero weights and zero gradients, never NaN.

    Args:
        logits: float tensor, e.g. shape (B, B): log-weights.
        mask: bool tensor of the same shape.
        axis: Axis to normalise over.

    Returns:
        Weights of the logits' shape, summing to 1 along ``axis`` where any entry is selected.
    """
    lowest = ops.cast(-3.0e38, logits.dtype)
    has_any = ops.any(mask, axis=axis, keepdims=True)
    row_max = ops.max(ops.where(mask, logits, lowest), axis=axis, keepdims=True)
    row_max = ops.stop_gradient(ops.where(has_any, row_max, 0.0))
    exps = ops.where(mask, ops.exp(ops.where(mask, logits - row_max, 0.0)), 0.0)
    total = ops.sum(exps, axis=axis, keepdims=True)
    return exps / ops.maximum(total, 1e-30)


def _mean_over_valid(per_anchor, valid) -> Any:
    """Mean of ``per_anchor`` (B,) over the True entries of ``valid`` (B,); 0 if none."""
    weights = ops.cast(valid, per_anchor.dtype)
    return ops.sum(per_anchor * weights) / ops.maximum(ops.sum(weights), 1.0)


def _margin_loss(difference, margin: float | None) -> Any:
    """Soft margin ``log(1 + exp(x))`` (margin None) or hinge ``max(0, x + margin)``."""
    if margin is None:
        return ops.softplus(difference)
    return ops.relu(difference + margin)


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------


def batch_hard_triplet_loss(labels, embeddings, margin: float | None = None) -> Any:
    """Batch-hard triplet loss (Hermans et al. 2017).

    For every anchor a: ``d_ap`` = distance to its farthest positive, ``d_an`` = distance to its
    nearest negative; loss ``log(1 + exp(d_ap - d_an))`` (soft margin, ``margin=None``) or
    ``max(0, d_ap - d_an + margin)``. Mean over anchors with at least one positive and one
    negative (0 if there is none).

    Args:
        labels: Class ids, shape (B,) or (B, 1).
        embeddings: float tensor, shape (B, D).
        margin: None for the soft margin, or a hinge margin >= 0 (CGD uses 0.1).

    Returns:
        Scalar float32 loss.

    Raises:
        ValueError: If ``margin`` is negative.
    """
    margin = check_margin(margin)
    distances = pairwise_distances(embeddings)
    positive, negative = positive_negative_masks(labels)
    hardest_positive = ops.max(distances * ops.cast(positive, distances.dtype), axis=1)
    # Non-negatives are replaced by the row maximum (finite) before taking the minimum.
    row_max = ops.max(distances, axis=1, keepdims=True)
    hardest_negative = ops.min(ops.where(negative, distances, row_max), axis=1)
    per_anchor = _margin_loss(hardest_positive - hardest_negative, margin)
    valid = ops.logical_and(ops.any(positive, axis=1), ops.any(negative, axis=1))
    return _mean_over_valid(per_anchor, valid)


def hard_aware_point_to_set_loss(
    labels,
    embeddings,
    weighting: str = "polynomial",
    alpha: float = 10.0,
    sigma: float = 0.5,
    margin: float | None = None,
) -> Any:
    """Hard-aware point-to-set (HAP2S) loss (Yu et al. 2018).

    For anchor a with positive set P and negative set N the set distances are weighted means
    ``D_P = sum_p w_p d_ap / sum_p w_p`` and ``D_N = sum_n w_n d_an / sum_n w_n`` whose weights
    grow with hardness:

    - exponential: ``w_p = exp(d_ap / sigma)``, ``w_n = exp(-d_an / sigma)``;
    - polynomial: ``w_p = (d_ap + 1) ** alpha``, ``w_n = (d_an + 1) ** (-2 alpha)``.

    The normalised weights are a softmax over the log-weights (stable for large distances).
    Loss per anchor: ``log(1 + exp(D_P - D_N))`` (``margin=None``) or
    ``max(0, D_P - D_N + margin)``; mean over anchors with a positive and a negative. The
    gradient also flows through the weights.

    Args:
        labels: Class ids, shape (B,) or (B, 1).
        embeddings: float tensor, shape (B, D).
        weighting: "polynomial" or "exponential".
        alpha: Polynomial exponent, > 0 (used with ``weighting="polynomial"``).
        sigma: Exponential scale, > 0 (used with ``weighting="exponential"``).
        margin: None for the soft margin, or a hinge margin >= 0.

    Returns:
        Scalar float32 loss.

    Raises:
        ValueError: On an unknown weighting, non-positive alpha/sigma or a negative margin.
    """
    weighting = check_weighting(weighting)
    alpha = check_positive("alpha", alpha)
    sigma = check_positive("sigma", sigma)
    margin = check_margin(margin)
    distances = pairwise_distances(embeddings)
    positive, negative = positive_negative_masks(labels)
    if weighting == "exponential":
        log_w_positive = distances / sigma
        log_w_negative = -distances / sigma
    else:
        log_distance = ops.log1p(distances)
        log_w_positive = alpha * log_distance
        log_w_negative = -2.0 * alpha * log_distance
    positive_set = ops.sum(masked_softmax(log_w_positive, positive) * distances, axis=1)
    negative_set = ops.sum(masked_softmax(log_w_negative, negative) * distances, axis=1)
    per_anchor = _margin_loss(positive_set - negative_set, margin)
    valid = ops.logical_and(ops.any(positive, axis=1), ops.any(negative, axis=1))
    return _mean_over_valid(per_anchor, valid)


def _per_sample_classification_loss(labels, logits, label_smoothing: float, temperature: float):
    """Per-sample smoothed cross-entropy of ``logits / temperature``; shape (B,)."""
    logits = ops.cast(logits, "float32")
    num_classes = ops.shape(logits)[-1]
    targets = ops.one_hot(flatten_labels(labels), num_classes, dtype="float32")
    targets = targets * (1.0 - label_smoothing) + label_smoothing / ops.cast(num_classes, "float32")
    log_probs = ops.log_softmax(logits / temperature, axis=-1)
    return -ops.sum(targets * log_probs, axis=-1)


def auxiliary_classification_loss(
    labels, logits, label_smoothing: float = 0.1, temperature: float = 0.5
) -> Any:
    """Softmax cross-entropy with label smoothing and temperature (CGD auxiliary loss).

    Targets are ``(1 - s) * one_hot + s / C``; the predicted distribution is
    ``softmax(logits / temperature)``; the loss is the mean over samples of
    ``-sum_c target_c log p_c``.

    Args:
        labels: Class ids in [0, C), shape (B,) or (B, 1).
        logits: float tensor, shape (B, C).
        label_smoothing: s in [0, 1).
        temperature: Divisor of the logits, > 0 (CGD: 0.5).

    Returns:
        Scalar float32 loss.

    Raises:
        ValueError: If ``label_smoothing`` is outside [0, 1) or ``temperature`` <= 0.
    """
    label_smoothing = check_smoothing(label_smoothing)
    temperature = check_positive("temperature", temperature)
    return ops.mean(_per_sample_classification_loss(labels, logits, label_smoothing, temperature))


# --------------------------------------------------------------------------------------------
# Loss classes
# --------------------------------------------------------------------------------------------


def _per_replica_vector(loss, y_pred) -> Any:
    """The scalar batch loss repeated once per sample, shape (B,).

    Keras divides a loss by the number of replicas under ``tf.distribute`` (gradients are then
    summed across replicas) only when the loss is not already a scalar; a scalar would be
    counted once per replica. Its mean over the batch is the scalar itself, so one device
    trains exactly as before, and each replica's batch-hard loss is averaged, not summed.
    """
    return ops.broadcast_to(loss, ops.shape(y_pred)[:1])


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BatchHardTripletLoss(AttributeConfig, keras.losses.Loss):
    """`batch_hard_triplet_loss` as a Keras loss: ``y_true`` labels (B,), ``y_pred`` (B, D).

    Args:
        margin: None (soft margin) or a hinge margin >= 0.
        name: Loss name.
        **kwargs: `keras.losses.Loss` arguments (``reduction``, ``dtype``).

    Raises:
        ValueError: If ``margin`` is negative.
    """

    config_attributes = ("margin",)

    def __init__(
        self, margin: float | None = None, name: str = "batch_hard_triplet_loss", **kwargs: Any
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.margin = check_margin(margin)

    def call(self, y_true, y_pred):
        loss = batch_hard_triplet_loss(flatten_labels(y_true), y_pred, margin=self.margin)
        return _per_replica_vector(loss, y_pred)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class HardAwarePointToSetLoss(AttributeConfig, keras.losses.Loss):
    """`hard_aware_point_to_set_loss` as a Keras loss: ``y_true`` labels, ``y_pred`` (B, D).

    Args:
        weighting: "polynomial" or "exponential".
        alpha: Polynomial exponent, > 0.
        sigma: Exponential scale, > 0.
        margin: None (soft margin) or a hinge margin >= 0.
        name: Loss name.
        **kwargs: `keras.losses.Loss` arguments (``reduction``, ``dtype``).

    Raises:
        ValueError: On an unknown weighting, non-positive alpha/sigma or a negative margin.
    """

    config_attributes = ("weighting", "alpha", "sigma", "margin")

    def __init__(
        self,
        weighting: str = "polynomial",
        alpha: float = 10.0,
        sigma: float = 0.5,
        margin: float | None = None,
        name: str = "hap2s_loss",
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.weighting = check_weighting(weighting)
        self.alpha = check_positive("alpha", alpha)
        self.sigma = check_positive("sigma", sigma)
        self.margin = check_margin(margin)

    def call(self, y_true, y_pred):
        loss = hard_aware_point_to_set_loss(
            flatten_labels(y_true),
            y_pred,
            weighting=self.weighting,
            alpha=self.alpha,
            sigma=self.sigma,
            margin=self.margin,
        )
        return _per_replica_vector(loss, y_pred)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class AuxiliaryClassificationLoss(AttributeConfig, keras.losses.Loss):
    """`auxiliary_classification_loss` as a Keras loss: ``y_true`` labels, ``y_pred`` logits.

    Returns per-sample losses, so Keras' reduction (default: mean) and sample weights apply.

    Args:
        label_smoothing: In [0, 1).
        temperature: > 0.
        name: Loss name.
        **kwargs: `keras.losses.Loss` arguments (``reduction``, ``dtype``).

    Raises:
        ValueError: If ``label_smoothing`` is outside [0, 1) or ``temperature`` <= 0.
    """

    config_attributes = ("label_smoothing", "temperature")

    def __init__(
        self,
        label_smoothing: float = 0.1,
        temperature: float = 0.5,
        name: str = "auxiliary_classification_loss",
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.label_smoothing = check_smoothing(label_smoothing)
        self.temperature = check_positive("temperature", temperature)

    def call(self, y_true, y_pred):
        return _per_sample_classification_loss(
            y_true, y_pred, self.label_smoothing, self.temperature
        )


#: Metric-loss names accepted by `build_metric_loss`.
METRIC_LOSSES: dict[str, type[keras.losses.Loss]] = {
    "batch_hard_triplet": BatchHardTripletLoss,
    "hap2s": HardAwarePointToSetLoss,
}


def build_metric_loss(name: str, **params: Any) -> keras.losses.Loss:
    """Make a metric-learning loss by name.

    Args:
        name: "batch_hard_triplet" or "hap2s".
        **params: Hyperparameters of the loss class (e.g. ``margin=0.1``; for "hap2s" also
            ``weighting``, ``alpha``, ``sigma``).

    Returns:
        The loss instance.

    Raises:
        ValueError: Unknown name (the message lists the valid ones), an unknown parameter, or
            a bad hyperparameter value.
    """
    check_metric_loss_params(name, params)
    return METRIC_LOSSES[name](**params)
