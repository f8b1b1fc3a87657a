"""Tests for net.inference: the compiled inference loop against direct model calls."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

from net import inference

# ----------------------------------------------------------------------------------------------
# compute_embeddings
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model():
    import keras

    images = keras.Input((6, 6, 3), name="images")
    pooled = keras.layers.GlobalAveragePooling2D()(images)
    embeddings = keras.layers.Dense(4, name="embeddings")(pooled)
    logits = keras.layers.Dense(3, name="logits")(pooled)
    plain = keras.Model(images, embeddings)
    with_dict = keras.Model(images, {"embeddings": embeddings, "logits": logits})
    return plain, with_dict


def test_compute_embeddings_matches_direct_call_with_partial_last_batch(tiny_model):
    import tensorflow as tf

    plain, with_dict = tiny_model
    rng = np.random.default_rng(4)
    images = rng.uniform(0, 255, size=(10, 6, 6, 3)).astype(np.float32)
    labels = np.arange(10, dtype=np.int32) % 3
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)  # 4, 4, 2
    expected = np.asarray(plain(images, training=False))
    for model in (plain, with_dict):
        embeddings, got_labels = inference.compute_embeddings(model, dataset, progress=False)
        assert embeddings.shape == (10, 4) and embeddings.dtype == np.float32
        np.testing.assert_allclose(embeddings, expected, rtol=1e-5, atol=1e-4)
        np.testing.assert_array_equal(got_labels, labels)


def test_compute_embeddings_rejects_bad_datasets(tiny_model):
    import keras
    import tensorflow as tf

    plain, _ = tiny_model
    images = np.zeros((2, 6, 6, 3), np.float32)
    with pytest.raises(ValueError, match="pairs"):
        inference.compute_embeddings(plain, tf.data.Dataset.from_tensor_slices(images).batch(2))
    empty = tf.data.Dataset.from_tensor_slices((images, np.zeros(2))).take(0)
    with pytest.raises(ValueError, match="empty"):
        inference.compute_embeddings(plain, empty, progress=False)
    inputs = keras.Input((6, 6, 3))
    only_logits = keras.Model(inputs, {"logits": keras.layers.GlobalAveragePooling2D()(inputs)})
    dataset = tf.data.Dataset.from_tensor_slices((images, np.zeros(2))).batch(2)
    with pytest.raises(ValueError, match="without 'embeddings'"):
        inference.compute_embeddings(only_logits, dataset, progress=False)


def test_the_inference_step_traces_once_per_model_and_image_shape(tiny_model):
    """Batches of 4, 4 and 2 (a partial last batch), then of 3: one trace for all of them; the
    traced step is reused on the next call (validation every epoch)."""
    import tensorflow as tf

    plain, _ = tiny_model
    images = np.zeros((10, 6, 6, 3), np.float32)
    labels = np.zeros(10, np.int32)
    for batch_size in (4, 3, 4):
        dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)
        inference.compute_embeddings(plain, dataset, progress=False)
    step = inference._inference_step(plain, dataset.element_spec[0])
    assert step.experimental_get_tracing_count() == 1


def test_no_progress_bar_when_the_output_is_not_a_terminal(tiny_model, capsys):
    import tensorflow as tf

    plain, _ = tiny_model
    images, labels = np.zeros((5, 6, 6, 3), np.float32), np.zeros(5, np.int32)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(2)
    inference.compute_embeddings(plain, dataset, progress=True)
    captured = capsys.readouterr()
    assert "embedding" not in captured.err and "\r" not in captured.err
