"""Distribution, mixed precision and XLA: the same training maths on every configuration."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from net import losses, model, training

REPO = Path(__file__).resolve().parents[1]


def _run_script(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    completed = subprocess.run(
        [sys.executable, str(REPO / "tests" / "scripts" / "distributed_step.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_mirrored_step_equals_the_mean_of_per_replica_steps():
    """Two logical CPUs: one MirroredStrategy SGD step on two P x K batches moves every weight
    exactly as one device averaging the two batches' gradients (each replica's batch-hard loss
    computed on its own P x K batch). Before the per-replica loss fix, the metric loss's
    gradient counted twice (Keras does not divide a scalar loss by the replica count)."""
    result = _run_script("step")
    assert result["replicas"] == 2
    assert result["max_weight_change"] > 0.1  # the step really moved the weights
    assert result["max_weight_difference"] < 1e-4


def test_mirrored_training_run_through_the_experiment(demo_dataset_root, tmp_path):
    result = _run_script(
        "experiment", str(REPO / "config.yaml"), str(demo_dataset_root), str(tmp_path / "run")
    )
    assert result["replicas"] == 2
    assert result["epochs_done"] == 2
    assert 0.0 <= result["recall@1"] <= 1.0


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def test_multi_worker_training_on_two_local_workers(demo_dataset_root, tmp_path):
    """Two worker processes on this machine (TF_CONFIG over loopback): both finish, the chief
    writes the run directory and the other worker a private folder, and the trainable weights
    both hold at the end are identical (synchronous all-reduce)."""
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    run_dir = tmp_path / "run"
    script = str(REPO / "tests" / "scripts" / "distributed_step.py")
    args = [str(REPO / "config.yaml"), str(demo_dataset_root), str(run_dir)]
    workers = []
    for index in range(2):
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "TF_CONFIG": json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}
            ),
        }
        workers.append(
            subprocess.Popen(
                [sys.executable, script, "worker", *args],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [worker.communicate(timeout=600) for worker in workers]
    for worker, (out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err[-3000:]
        result = json.loads(out.strip().splitlines()[-1])
        assert result["replicas"] == 2 and result["epochs_done"] == 2
    assert (run_dir / "best.keras").is_file() and (run_dir / "metrics.json").is_file()
    other = run_dir / ".workers" / "worker-1"
    assert (other / "last.keras").is_file()
    chief_model = keras.saving.load_model(run_dir / "last.keras")
    other_model = keras.saving.load_model(other / "last.keras")
    for a, b in zip(chief_model.trainable_weights, other_model.trainable_weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("name", ["batch_hard_triplet", "hap2s"])
def test_metric_loss_classes_return_one_value_per_sample_with_the_batch_mean(name):
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(8, 5)).astype("float32")
    labels = np.repeat(np.arange(4), 2).astype("float32")  # Keras hands float labels
    loss = losses.build_metric_loss(name)
    values = loss.call(labels, embeddings)
    assert tuple(values.shape) == (8,)
    function = {
        "batch_hard_triplet": losses.batch_hard_triplet_loss,
        "hap2s": losses.hard_aware_point_to_set_loss,
    }[name]
    expected = float(function(labels.astype("int32"), embeddings))
    np.testing.assert_allclose(np.asarray(values), expected, rtol=1e-6)
    assert float(loss(labels, embeddings)) == pytest.approx(expected, rel=1e-6)


def _step(jit_compile=False):
    keras.utils.set_random_seed(0)
    net = model.build_cgd_model(
        backbone="small_cnn", image_size=32, last_stride=2, embedding_dim=16, num_classes=4
    )
    training.compile_model(
        net,
        metric_loss=losses.BatchHardTripletLoss(margin=0.1),
        auxiliary_loss=losses.AuxiliaryClassificationLoss(),
        auxiliary_weight=1.0,
        learning_rate=1e-3,
        jit_compile=jit_compile,
    )
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 255, size=(8, 32, 32, 3)).astype("float32")
    labels = np.repeat(np.arange(4), 2)
    loss = net.train_on_batch(images, {"embeddings": labels, "logits": labels}, return_dict=True)
    return net, images, loss


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_trains_with_float32_embeddings_and_losses(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        net, images, loss = _step()
        assert np.isfinite(loss["loss"])
        low = {"mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}[policy]
        assert net.get_layer("small_cnn").get_layer("stem_conv").compute_dtype == low
        assert net.get_layer("gem").compute_dtype == "float32"
        outputs = net(images, training=False)
        assert outputs["embeddings"].dtype == "float32"
        assert outputs["logits"].dtype == "float32"
        norms = np.linalg.norm(np.asarray(outputs["embeddings"]), axis=1)
        np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_xla_compiled_step_matches_the_plain_step():
    _, _, plain = _step(jit_compile=False)
    _, _, compiled = _step(jit_compile=True)
    assert np.isfinite(compiled["loss"])
    assert compiled["loss"] == pytest.approx(plain["loss"], rel=1e-4)
