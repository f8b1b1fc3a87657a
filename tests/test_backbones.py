import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest

from net.backbones import BACKBONES, build_backbone, get_backbone_spec
from net.layers import ImagePreprocessing

SIZE = 64  # small input: ResNet-50 maps 64 px to 2 x 2 (stride 32) or 4 x 4 (stride 16)


@pytest.fixture(scope="module")
def resnet_stride2():
    return build_backbone("resnet50", input_shape=(SIZE, SIZE, 3), weights=None, last_stride=2)


@pytest.fixture(scope="module")
def resnet_weights_file(resnet_stride2, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("weights") / "resnet50.weights.h5")
    resnet_stride2.save_weights(path)
    return path


def test_registry_lists_backbones_and_rejects_unknown_names():
    assert {"resnet50", "small_cnn"} <= set(BACKBONES)
    with pytest.raises(ValueError, match=r"'vgg16'.*resnet50.*small_cnn"):
        get_backbone_spec("vgg16")
    with pytest.raises(ValueError, match="'vgg16'"):
        build_backbone("vgg16", input_shape=(32, 32, 3))


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_registered_preprocessing_builds_a_layer(name):
    layer = ImagePreprocessing(**get_backbone_spec(name).preprocessing)
    assert layer(np.zeros((1, 2, 2, 3), np.float32)).shape == (1, 2, 2, 3)


def test_resnet50_preprocessing_is_caffe_bgr():
    spec = get_backbone_spec("resnet50")
    images = np.random.default_rng(0).uniform(0, 255, size=(1, 3, 3, 3)).astype(np.float32)
    want = keras.applications.resnet50.preprocess_input(images.copy())
    got = ImagePreprocessing(**spec.preprocessing)(images).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.parametrize("last_stride,side", [(2, 2), (1, 4)])
def test_small_cnn_feature_map(last_stride, side):
    model = build_backbone("small_cnn", input_shape=(SIZE, SIZE, 3), last_stride=last_stride)
    assert tuple(model.output.shape) == (None, side, side, 256)
    out = model(np.random.default_rng(1).normal(size=(2, SIZE, SIZE, 3)).astype(np.float32))
    assert out.shape == (2, side, side, 256)
    assert np.all(np.isfinite(out.numpy()))


def test_resnet50_last_stride_1_doubles_the_map_and_keeps_the_weights(
    resnet_stride2, resnet_weights_file
):
    assert tuple(resnet_stride2.output.shape) == (None, 2, 2, 2048)
    model = build_backbone(
        "resnet50", input_shape=(SIZE, SIZE, 3), weights=resnet_weights_file, last_stride=1
    )
    assert tuple(model.output.shape) == (None, 4, 4, 2048)
    # Only the first conv5 block lost its stride; conv4 still downsamples.
    assert model.get_layer("conv5_block1_1_conv").strides == (1, 1)
    assert model.get_layer("conv5_block1_0_conv").strides == (1, 1)
    assert model.get_layer("conv4_block1_1_conv").strides == (2, 2)
    # Same variables, same values as the stride-2 model the file was saved from.
    source = resnet_stride2.get_weights()
    loaded = model.get_weights()
    assert len(loaded) == len(source)
    for a, b in zip(loaded, source, strict=True):
        np.testing.assert_array_equal(a, b)
    # And the features agree where the strides agree: up to conv4 the maps are identical.
    images = np.random.default_rng(2).normal(size=(1, SIZE, SIZE, 3)).astype(np.float32)
    probe = [
        keras.Model(m.input, m.get_layer("conv4_block6_out").output)
        for m in (model, resnet_stride2)
    ]
    np.testing.assert_allclose(probe[0](images).numpy(), probe[1](images).numpy(), atol=1e-5)


def test_small_cnn_weights_from_a_legacy_h5_file(tmp_path):
    source = build_backbone("small_cnn", input_shape=(32, 32, 3))
    # Legacy HDF5 (the format of Keras' ResNet-50 "notop" weights file).
    path = str(tmp_path / "small_cnn.h5")
    source.save(path)
    model = build_backbone("small_cnn", input_shape=(32, 32, 3), weights=path, last_stride=1)
    for a, b in zip(model.get_weights(), source.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_missing_weights_file_is_named(tmp_path):
    missing = str(tmp_path / "nope.h5")
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        build_backbone("resnet50", input_shape=(SIZE, SIZE, 3), weights=missing)


def test_weights_file_of_another_architecture_is_named(tmp_path):
    path = str(tmp_path / "small.weights.h5")
    build_backbone("small_cnn", input_shape=(32, 32, 3)).save_weights(path)
    with pytest.raises(ValueError, match="small.weights.h5"):
        build_backbone("resnet50", input_shape=(SIZE, SIZE, 3), weights=path)


def test_bad_arguments():
    with pytest.raises(ValueError, match="imagenet"):
        build_backbone("small_cnn", input_shape=(32, 32, 3), weights="imagenet")
    with pytest.raises(ValueError, match="last_stride"):
        build_backbone("small_cnn", input_shape=(32, 32, 3), last_stride=3)
