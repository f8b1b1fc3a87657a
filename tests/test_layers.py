import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest
import tensorflow as tf

from net.layers import (
    GeneralizedMeanPooling2D,
    ImagePreprocessing,
    L2Normalization,
    MACPooling2D,
    SPoCPooling2D,
    global_descriptor,
)


def _feature_map(seed=0, shape=(2, 4, 4, 5), high=5.0):
    return np.random.default_rng(seed).uniform(0.0, high, size=shape).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Global descriptors
# ---------------------------------------------------------------------------------------------


def test_spoc_and_mac_equal_numpy_mean_and_max():
    x = _feature_map() - 2.5  # signed values
    np.testing.assert_allclose(SPoCPooling2D()(x).numpy(), x.mean(axis=(1, 2)), rtol=1e-6)
    np.testing.assert_allclose(MACPooling2D()(x).numpy(), x.max(axis=(1, 2)), rtol=1e-6)


def test_gem_hand_computed():
    """Channel values 1, 2, 3, 4 on a 2 x 2 map, p = 3: (mean(1, 8, 27, 64)) ** (1/3) =
    25 ** (1/3) = 2.92402."""
    x = np.array([1.0, 2.0, 3.0, 4.0], np.float32).reshape(1, 2, 2, 1)
    assert float(GeneralizedMeanPooling2D(p=3.0)(x)[0, 0]) == pytest.approx(2.924018, rel=1e-5)


def test_gem_at_p1_equals_spoc():
    x = _feature_map(1)
    np.testing.assert_allclose(
        GeneralizedMeanPooling2D(p=1.0)(x).numpy(), SPoCPooling2D()(x).numpy(), rtol=1e-5
    )


def test_gem_approaches_mac_as_p_grows():
    x = _feature_map(2, shape=(3, 4, 4, 6))
    mac = x.max(axis=(1, 2))
    gaps = []
    for p in (1.0, 3.0, 10.0, 100.0, 1000.0):
        gem = GeneralizedMeanPooling2D(p=p)(x).numpy()
        assert np.all(gem <= mac * (1 + 1e-6))
        gaps.append(float(np.max(mac - gem)))
    assert all(a > b for a, b in zip(gaps, gaps[1:], strict=False))
    # At p = 1000 the gap is at most max * (1 - 16 ** (-1/1000)) = 5 * 0.0028.
    assert gaps[-1] < 5.0 * 0.003


def test_gem_is_finite_for_zeros_and_large_inputs():
    zeros = tf.zeros((2, 3, 3, 4))
    big = tf.constant(_feature_map(3, high=1e4))
    for x, p in ((zeros, 3.0), (big, 50.0)):  # naive big ** 50 overflows float32
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = GeneralizedMeanPooling2D(p=p)(x)
            total = tf.reduce_sum(y)
        grad = tape.gradient(total, x).numpy()
        assert np.all(np.isfinite(y.numpy())) and np.all(np.isfinite(grad))
    # Zeros are clamped at epsilon: the descriptor is epsilon itself.
    np.testing.assert_allclose(GeneralizedMeanPooling2D()(zeros).numpy(), 1e-6, rtol=1e-4)
    # The max-rescaling leaves the value unchanged.
    x = _feature_map(3, high=10.0).astype(np.float64)
    want = np.mean(x**4, axis=(1, 2)) ** 0.25
    got = GeneralizedMeanPooling2D(p=4.0)(x.astype(np.float32)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_gem_gradient_matches_analytic():
    """d GeM / d x_k = (1/N) x_k^(p-1) * mean(x^p)^(1/p - 1) (no extra term from the rescaling)."""
    x64 = _feature_map(4, shape=(1, 2, 2, 1)).astype(np.float64) + 0.5
    x = tf.constant(x64.astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = GeneralizedMeanPooling2D(p=3.0)(x)
    want = 0.25 * x64**2 * np.mean(x64**3) ** (1.0 / 3.0 - 1.0)
    np.testing.assert_allclose(tape.gradient(y, x).numpy(), want, rtol=1e-5)


def test_gem_trainable_p():
    fixed = GeneralizedMeanPooling2D(p=3.0)
    learned = GeneralizedMeanPooling2D(p=3.0, trainable_p=True)
    x = tf.constant(_feature_map(5))
    fixed(x)
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(learned(x))
    assert [w.name for w in fixed.trainable_weights] == []
    assert [w.name for w in learned.trainable_weights] == ["p"]
    grad = tape.gradient(y, learned.trainable_weights[0])
    assert np.isfinite(float(grad)) and float(grad) > 0  # GeM grows with p


@pytest.mark.parametrize("kwargs", [{"p": 0.0}, {"p": -1.0}, {"epsilon": 0.0}])
def test_gem_rejects_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        GeneralizedMeanPooling2D(**kwargs)


def test_global_descriptor_factory():
    assert isinstance(global_descriptor("S"), SPoCPooling2D)
    assert isinstance(global_descriptor("M"), MACPooling2D)
    gem = global_descriptor("G", p=4.0, trainable_p=True)
    assert (gem.name, gem.initial_p, gem.trainable_p) == ("gem", 4.0, True)
    with pytest.raises(ValueError, match="'X'"):
        global_descriptor("X")


# ---------------------------------------------------------------------------------------------
# L2 normalisation
# ---------------------------------------------------------------------------------------------


def test_l2_normalization_keeps_signs_and_has_finite_gradient_at_zero():
    x = np.array([[3.0, -4.0, 0.0], [0.0, 0.0, 0.0], [-1.0, -1.0, -1.0]], np.float32)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = L2Normalization()(xt)
        total = tf.reduce_sum(y * tf.constant([[1.0, 2.0, 3.0]] * 3))
    want = np.array([[0.6, -0.8, 0.0], [0.0, 0.0, 0.0], [-1.0, -1.0, -1.0] / np.sqrt(3)])
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-6, atol=1e-7)
    grad = tape.gradient(total, xt).numpy()
    assert np.all(np.isfinite(grad))


# ---------------------------------------------------------------------------------------------
# Preprocessing
# ---------------------------------------------------------------------------------------------


CAFFE = {
    "mean": [103.939, 116.779, 123.68],
    "std": [1.0, 1.0, 1.0],
    "channel_order": "BGR",
    "scale": 1.0,
}


def test_caffe_preprocessing_equals_keras_resnet50():
    images = np.random.default_rng(0).uniform(0, 255, size=(2, 5, 5, 3)).astype(np.float32)
    want = keras.applications.resnet50.preprocess_input(images.copy())
    np.testing.assert_allclose(ImagePreprocessing(**CAFFE)(images).numpy(), want, atol=1e-4)


def test_torch_and_tflite_style_preprocessing():
    images = np.random.default_rng(1).uniform(0, 255, size=(2, 4, 4, 3)).astype(np.float32)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    torch_style = ImagePreprocessing(mean=mean, std=std, channel_order="rgb", scale=1 / 255)
    np.testing.assert_allclose(torch_style(images).numpy(), (images / 255 - mean) / std, atol=1e-5)
    lite = ImagePreprocessing(mean=127.0, std=128.0)
    np.testing.assert_allclose(lite(images).numpy(), (images - 127.0) / 128.0, atol=1e-6)


def test_preprocessing_inside_dataset_map_equals_eager():
    images = np.random.default_rng(2).uniform(0, 255, size=(3, 4, 4, 3)).astype(np.float32)
    layer = ImagePreprocessing(**CAFFE)
    mapped = next(iter(tf.data.Dataset.from_tensor_slices(images).batch(3).map(layer)))
    np.testing.assert_allclose(mapped.numpy(), layer(images).numpy(), atol=1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"channel_order": "GBR"},
        {"std": [1.0, 0.0, 1.0]},
        {"mean": [1.0, 2.0]},
        {"scale": 0.0},
    ],
)
def test_preprocessing_rejects_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        ImagePreprocessing(**kwargs)


# ---------------------------------------------------------------------------------------------
# Serialization
# ---------------------------------------------------------------------------------------------

LAYERS = [
    lambda: SPoCPooling2D(name="spoc"),
    lambda: MACPooling2D(keepdims=True, name="mac"),
    lambda: GeneralizedMeanPooling2D(p=4.5, trainable_p=True, epsilon=1e-5, name="gem"),
    lambda: L2Normalization(axis=-1, epsilon=1e-10, name="l2"),
    lambda: ImagePreprocessing(**CAFFE, name="pre"),
]


@pytest.mark.parametrize("make", LAYERS)
def test_layer_config_round_trip_and_output_shape(make):
    layer = make()
    x = _feature_map(6, shape=(2, 3, 3, 3))
    y = layer(x)
    assert tuple(layer.compute_output_shape(x.shape)) == tuple(y.shape)
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(restored) is type(layer)
    np.testing.assert_allclose(restored(x).numpy(), y.numpy(), rtol=1e-6)


def test_model_of_all_layers_saves_and_loads_in_safe_mode(tmp_path):
    inputs = keras.Input((6, 6, 3))
    x = ImagePreprocessing(**CAFFE)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    gem = GeneralizedMeanPooling2D(p=3.0, trainable_p=True)
    pooled = [SPoCPooling2D()(x), MACPooling2D()(x), gem(x)]
    outputs = L2Normalization()(keras.layers.Concatenate()(pooled))
    model = keras.Model(inputs, outputs)
    gem.p.assign(2.5)  # a learned value must survive the round trip
    path = str(tmp_path / "layers.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    images = np.random.default_rng(7).uniform(0, 255, size=(2, 6, 6, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded(images).numpy(), model(images).numpy())
    loaded_gem = [layer for layer in loaded.layers if isinstance(layer, GeneralizedMeanPooling2D)]
    assert float(loaded_gem[0].p) == 2.5
