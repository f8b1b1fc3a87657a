"""Fine-tuning knobs: the backbone's learning-rate multiplier and freezing it (small CNN)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from net import finetuning, losses, model, multi_worker, training

IMAGE_SIZE = 32


def small_model(seed=0):
    """A CGD model on the small CNN with an auxiliary head (BatchNorm in backbone and head)."""
    keras.utils.set_random_seed(seed)
    return model.build_cgd_model(
        backbone="small_cnn", image_size=IMAGE_SIZE, last_stride=2, embedding_dim=16, num_classes=4
    )


def compile_small(net, multiplier=1.0, weight_decay=0.0, learning_rate=1e-2):
    training.compile_model(
        net,
        metric_loss=losses.build_metric_loss("batch_hard_triplet", margin=0.1),
        auxiliary_loss=losses.AuxiliaryClassificationLoss(label_smoothing=0.1, temperature=0.5),
        auxiliary_weight=1.0,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        backbone_learning_rate_multiplier=multiplier,
    )


def batch(seed=0):
    """One P x K batch of random images: 4 classes x 2 images."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, size=(8, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
    labels = np.repeat(np.arange(4), 2).astype(np.int32)
    return images, {"embeddings": labels, "logits": labels}


def dataset(steps):
    batches = [batch(seed) for seed in range(steps)]
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1]["embeddings"] for b in batches])
    return tf.data.Dataset.from_tensor_slices(
        (images, {"embeddings": labels, "logits": labels})
    ).batch(8)


def values(variables):
    return [np.array(keras.ops.convert_to_numpy(v)) for v in variables]


def compiled_with_backbone_record():
    """A compiled small model, its backbone, the backbone's weights now in a list, and a
    callback that appends them to that list after every epoch."""
    net = small_model()
    compile_small(net)
    backbone = finetuning.backbone_layer(net)
    snapshots = [values(backbone.weights)]
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: snapshots.append(values(backbone.weights))
    )
    return net, backbone, snapshots, record


def test_backbone_layer_is_the_nested_model():
    net = small_model()
    assert finetuning.backbone_layer(net).name == "small_cnn"
    flat = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="one backbone"):
        finetuning.backbone_layer(flat)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "0.1", True])
def test_multiplier_must_be_a_finite_non_negative_number(bad):
    with pytest.raises(ValueError, match="multiplier"):
        finetuning.check_multiplier(bad)


def test_a_zero_multiplier_keeps_the_backbone_bit_identical():
    """Weights and BatchNorm moving statistics of the backbone do not move at all, while the
    heads (and the head's BatchNorm statistics) do."""
    net = small_model()
    compile_small(net, multiplier=0.0, weight_decay=1e-2)
    backbone = finetuning.backbone_layer(net)
    assert any("moving_mean" in w.path for w in backbone.weights)
    before = values(backbone.weights)
    heads = [w for w in net.trainable_weights if not any(w is b for b in backbone.weights)]
    heads += [w for w in net.get_layer("auxiliary_bn").non_trainable_weights]
    heads_before = values(heads)
    net.fit(
        dataset(3),
        epochs=2,
        verbose=0,
        shuffle=False,
        callbacks=[finetuning.FreezeBackbone(freeze_epochs=0, multiplier=0.0)],
    )
    for old, new in zip(before, values(backbone.weights), strict=True):
        assert np.array_equal(old, new)
    changed = [not np.array_equal(a, b) for a, b in zip(heads_before, values(heads), strict=True)]
    assert all(changed)


def test_the_multiplier_scales_the_backbones_updates_by_hand():
    """One AdamW step, worked out by hand for every trainable variable from the gradients of a
    tape. Adam's first step, with bias-corrected moments m = g and v = g^2, moves a variable by
    lr * sqrt(1 - beta_2) * g / (sqrt(1 - beta_2) |g| + eps) (Keras puts eps outside the bias
    correction), after the decoupled decay lr * wd * w. With multiplier 0.1 the backbone's
    variables take both with 0.1 * lr; the heads take the plain step with lr. Elements whose
    gradient is near eps are left out: there the step depends on the gradient's last digits,
    which the tape and the compiled step compute in different orders."""
    learning_rate, weight_decay, multiplier = 1e-2, 0.05, 0.1
    net = small_model()
    compile_small(
        net, multiplier=multiplier, weight_decay=weight_decay, learning_rate=learning_rate
    )
    assert isinstance(net.optimizer, finetuning.ScaledAdamW)
    backbone = {v.path for v in finetuning.backbone_layer(net).trainable_weights}
    variables = net.trainable_weights
    assert backbone and len(backbone) < len(variables)
    images, labels = batch()
    metric = losses.build_metric_loss("batch_hard_triplet", margin=0.1)
    auxiliary = losses.AuxiliaryClassificationLoss(label_smoothing=0.1, temperature=0.5)
    with tf.GradientTape() as tape:
        outputs = net(images, training=True)
        loss = metric(labels["embeddings"], outputs["embeddings"]) + auxiliary(
            labels["logits"], outputs["logits"]
        )
    gradients = [g.numpy() for g in tape.gradient(loss, [v.value for v in variables])]
    before = values(variables)
    net.train_on_batch(images, labels)
    root = np.sqrt(1.0 - net.optimizer.beta_2)
    epsilon = net.optimizer.epsilon
    checked = {True: 0, False: 0}  # Elements checked in the backbone and in the heads.
    for variable, gradient, start in zip(variables, gradients, before, strict=True):
        rate = learning_rate * (multiplier if variable.path in backbone else 1.0)
        step = rate * root * gradient / (root * np.abs(gradient) + epsilon)
        expected = start - rate * weight_decay * start - step
        clear = root * np.abs(gradient) > 100 * epsilon
        np.testing.assert_allclose(
            variable.numpy()[clear], expected[clear], rtol=1e-5, atol=2e-7, err_msg=variable.path
        )
        checked[variable.path in backbone] += clear.sum()
    assert checked[True] > 10_000 and checked[False] > 1_000


def test_freezing_the_first_epoch_then_training_everything():
    """Epoch 1 (Keras' epoch 0) trains only the heads: the backbone, BatchNorm statistics
    included, ends it bit-identical; epoch 2 trains the backbone too."""
    net, backbone, snapshots, record = compiled_with_backbone_record()
    net.fit(
        dataset(2),
        epochs=2,
        verbose=0,
        shuffle=False,
        callbacks=[finetuning.FreezeBackbone(freeze_epochs=1), record],
    )
    start, after_frozen, after_free = snapshots
    assert all(np.array_equal(a, b) for a, b in zip(start, after_frozen, strict=True))
    assert not any(np.array_equal(a, b) for a, b in zip(after_frozen, after_free, strict=True))
    assert backbone.trainable


def test_frozen_epochs_follow_the_epoch_number():
    frozen = [
        finetuning.backbone_frozen(epoch, freeze_epochs=2, multiplier=0.5) for epoch in range(4)
    ]
    assert frozen == [True, True, False, False]
    assert finetuning.backbone_frozen(10, freeze_epochs=0, multiplier=0.0)


def test_the_multi_worker_loop_retraces_when_the_backbone_is_unfrozen():
    """The loop used under MultiWorkerMirroredStrategy traces its own step: after the frozen
    epoch it must trace again, or the backbone would never train. (Run here under the default
    strategy: the same loop, one replica.)"""
    net, backbone, snapshots, record = compiled_with_backbone_record()
    multi_worker.fit_multi_worker(
        net,
        dataset(2).repeat(),
        epochs=2,
        initial_epoch=0,
        steps_per_epoch=2,
        callbacks=[finetuning.FreezeBackbone(freeze_epochs=1), record],
        verbose=0,
    )
    start, after_frozen, after_free = snapshots
    assert all(np.array_equal(a, b) for a, b in zip(start, after_frozen, strict=True))
    assert not any(np.array_equal(a, b) for a, b in zip(after_frozen, after_free, strict=True))
