"""Run by tests/test_distribution.py in its own process (logical devices must be set first).

Splits the CPU into two logical devices, then checks that one MirroredStrategy training step on a
global batch of two P x K batches equals the single-device reference: the mean of the two
per-batch gradients (each replica's batch-hard loss sees only its own P x K batch). Prints a JSON
line with what it measured.
"""

import json
import os
import sys

import tensorflow as tf

if sys.argv[1] != "worker":  # one process, two logical devices
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from net import losses, model  # noqa: E402

P, K, SIZE = 2, 3, 32


def build() -> keras.Model:
    keras.utils.set_random_seed(0)
    net = model.build_cgd_model(
        backbone="small_cnn",
        image_size=SIZE,
        last_stride=2,
        descriptors="SG",
        embedding_dim=16,
        num_classes=4,
    )
    net.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.5),
        loss={
            "embeddings": losses.BatchHardTripletLoss(margin=0.1),
            "logits": losses.AuxiliaryClassificationLoss(),
        },
        loss_weights={"embeddings": 1.0, "logits": 0.5},
    )
    return net


def step_check() -> dict:
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, size=(2 * P * K, SIZE, SIZE, 3)).astype("float32")
    labels = np.repeat(np.arange(2 * P), K).astype("int32")  # replica 0: classes 0-1, 1: 2-3

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        distributed = build()
    single = build()
    initial = [w.copy() for w in single.get_weights()]
    assert all(
        np.array_equal(a, b) for a, b in zip(initial, distributed.get_weights(), strict=True)
    )

    targets = {"embeddings": labels, "logits": labels}
    dataset = tf.data.Dataset.from_tensors((images, targets))
    distributed.fit(dataset, epochs=1, verbose=0)

    # Reference on one device: each half is one replica's P x K batch (BatchNorm statistics per
    # half, as on the replicas); the update uses the mean of the two halves' gradients.
    metric, auxiliary = (
        losses.BatchHardTripletLoss(margin=0.1),
        losses.AuxiliaryClassificationLoss(),
    )
    gradients, half_losses = [], []
    for half in (slice(0, P * K), slice(P * K, 2 * P * K)):
        with tf.GradientTape() as tape:
            outputs = single(images[half], training=True)
            loss = metric(labels[half], outputs["embeddings"]) + 0.5 * auxiliary(
                labels[half], outputs["logits"]
            )
        half_losses.append(float(loss))
        gradients.append(tape.gradient(loss, single.trainable_variables))
    for variable, g0, g1 in zip(single.trainable_variables, *gradients, strict=True):
        variable.assign_sub(0.5 * (g0 + g1) / 2)

    trainable = {v.path for v in single.trainable_variables}
    difference = max(
        float(np.max(np.abs(a.numpy() - b.numpy())))
        for a, b in zip(single.weights, distributed.weights, strict=True)
        if a.path in trainable
    )
    moved = max(
        float(np.max(np.abs(a.numpy() - w)))
        for a, w in zip(single.weights, initial, strict=True)
        if a.path in trainable
    )
    result = {
        "replicas": strategy.num_replicas_in_sync,
        "max_weight_difference": difference,
        "max_weight_change": moved,
        "half_losses": half_losses,
    }
    return result


def experiment_run(
    config_path: str, data_root: str, run_dir: str, distribution: str = "mirrored"
) -> dict:
    """A whole tiny distributed training run through the experiment code, which hands each
    replica whole P x K batches (``multi_worker``: this process is one worker of TF_CONFIG)."""
    import dataclasses

    from net import experiment, training
    from net.config import load_config

    config = load_config(config_path, profile="demo")
    config = dataclasses.replace(
        config,
        data=dataclasses.replace(
            config.data,
            root=data_root,
            image_size=32,
            classes_per_batch=2,
            images_per_class=2,
            num_val_classes=2,
        ),
        model=dataclasses.replace(config.model, embedding_dim=16),
        training=dataclasses.replace(
            config.training, epochs=2, steps_per_epoch=2, distribution=distribution
        ),
        evaluation=dataclasses.replace(config.evaluation, ks=[1]),
    )
    summary = experiment.train(config, run_dir, verbose=int(os.environ.get("VERBOSE", "0")))
    if distribution == "multi_worker":
        replicas = len(json.loads(os.environ["TF_CONFIG"])["cluster"]["worker"])
    else:
        replicas = training.distribution_strategy("mirrored").num_replicas_in_sync
    return {
        "replicas": replicas,
        "recall@1": summary["test"]["recall@1"],
        "epochs_done": summary["epochs_done"],
    }


# One strategy per process: two MirroredStrategy instances in one process can share
# collective-op keys.
if sys.argv[1] == "step":
    print(json.dumps(step_check()))
elif sys.argv[1] == "worker":
    print(json.dumps(experiment_run(*sys.argv[2:5], distribution="multi_worker")))
else:
    print(json.dumps(experiment_run(*sys.argv[2:5])))
