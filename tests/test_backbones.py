import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest

from net.backbones import (
    BACKBONES,
    UnknownLayerError,
    build_backbone,
    cut_at_layer,
    feature_layer_names,
    get_backbone_spec,
)
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


def test_a_pytorch_checkpoint_for_a_keras_backbone_says_so(tmp_path):
    """Not Keras' "File format not supported ... only supports V3 .keras files": the .pth
    reader serves efficientnet_lite0 alone."""
    path = tmp_path / "weights.pth"
    path.write_bytes(b"PK")
    with pytest.raises(ValueError, match="is a PyTorch checkpoint, which is read for "
                       "efficientnet_lite0 only"):  # fmt: skip
        build_backbone("small_cnn", input_shape=(32, 32, 3), weights=str(path))


def test_bad_arguments():
    with pytest.raises(ValueError, match="imagenet"):
        build_backbone("small_cnn", input_shape=(32, 32, 3), weights="imagenet")
    with pytest.raises(ValueError, match="last_stride"):
        build_backbone("small_cnn", input_shape=(32, 32, 3), last_stride=3)


@pytest.mark.parametrize("last_stride", [1, 2])
@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_feature_layer_cuts_every_backbone_where_asked(name, last_stride):
    """The cut model computes exactly the full model's map at that layer, holds fewer
    weights, and keeps last_stride's effect on the layers before the cut."""
    shape = (32, 32, 3)
    full = build_backbone(name, input_shape=shape, last_stride=last_stride)
    names = feature_layer_names(full)
    layer = names[len(names) * 3 // 4]  # well inside the network
    cut = build_backbone(name, input_shape=shape, last_stride=last_stride, feature_layer=layer)
    assert cut.output.shape == full.get_layer(layer).output.shape
    assert cut.count_params() < full.count_params()
    # Same weights in the shared layers, same output as the full model's layer.
    for cut_layer in cut.layers:
        if cut_layer.weights:
            cut_layer.set_weights(full.get_layer(cut_layer.name).get_weights())
    images = np.random.default_rng(3).normal(size=(2, *shape)).astype(np.float32)
    probe = keras.Model(full.input, full.get_layer(layer).output)
    np.testing.assert_allclose(cut(images), probe(images), rtol=1e-5, atol=1e-5)
    # Cutting at the last layer keeps the whole backbone.
    assert cut_at_layer(full, names[-1], backbone=name).count_params() == full.count_params()


def test_feature_layer_after_the_last_stride_sees_it():
    """ResNet-50 cut at conv5_block1_out: 4 x 4 at 64 px with last_stride 1, 2 x 2 with 2."""
    sides = [
        build_backbone(
            "resnet50",
            input_shape=(SIZE, SIZE, 3),
            last_stride=stride,
            feature_layer="conv5_block1_out",
        ).output.shape[1]
        for stride in (1, 2)
    ]
    assert sides == [4, 2]


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_unknown_feature_layer_is_one_line_listing_valid_names(name):
    with pytest.raises(UnknownLayerError) as info:
        build_backbone(name, input_shape=(SIZE, SIZE, 3), feature_layer="no_such_layer")
    message = str(info.value)
    assert "\n" not in message and "'no_such_layer'" in message and repr(name) in message
    model = build_backbone(name, input_shape=(SIZE, SIZE, 3))
    listed = message.split(": ", 1)[1].split(" (")[0].split(", ")
    assert 1 <= len(listed) <= 5 and set(listed) <= set(feature_layer_names(model))


def test_feature_layer_typo_suggests_close_names():
    with pytest.raises(UnknownLayerError, match="close names: conv4_block3_out"):
        build_backbone("resnet50", input_shape=(SIZE, SIZE, 3), feature_layer="conv4_block3_ot")
