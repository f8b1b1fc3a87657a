import dataclasses
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest

from net.layers import (
    GeneralizedMeanPooling2D,
    ImagePreprocessing,
    MACPooling2D,
    SPoCPooling2D,
)
from net.losses import (
    AuxiliaryClassificationLoss,
    BatchHardTripletLoss,
    HardAwarePointToSetLoss,
)
from net.model import (
    build_cgd_model,
    build_conv_flatten_fc_model,
    build_model,
    build_simple_model,
    embedding_model,
    parse_descriptors,
)

SIZE = 64
NUM_CLASSES = 4


def _images(n, seed=0, size=SIZE):
    return np.random.default_rng(seed).uniform(0, 255, size=(n, size, size, 3)).astype(np.float32)


def _producer(tensor):
    """Name of the layer that produced a symbolic tensor."""
    return tensor._keras_history.operation.name


def _training_view(model):
    """An uncompiled functional view sharing ``model``'s layers (compiling it leaves ``model``
    without optimizer state, so saving ``model`` stays small)."""
    names = [n for n in ("embeddings", "logits") if n in model.output_names]
    return keras.Model(model.inputs[0], {n: model.get_layer(n).output for n in names})


@pytest.fixture(scope="module")
def resnet_cgd():
    """The paper's configuration at a small input size: ResNet-50, last stride 1, SG, 1536-d."""
    return build_cgd_model(
        backbone="resnet50", weights=None, image_size=SIZE, num_classes=NUM_CLASSES
    )


# ---------------------------------------------------------------------------------------------
# Descriptor strings
# ---------------------------------------------------------------------------------------------


def test_parse_descriptors():
    assert parse_descriptors("SG") == ("S", "G")
    assert parse_descriptors("gs") == ("G", "S")
    for bad, pattern in (("", "non-empty"), ("SX", "X"), ("SS", "repeated"), (None, "None")):
        with pytest.raises(ValueError, match=pattern):
            parse_descriptors(bad)


@pytest.mark.parametrize("descriptors", ["S", "SM", "SG", "MG", "SMG", "GS"])
def test_cgd_head_structure(descriptors):
    dim = 24 * len(descriptors)
    model = build_cgd_model(
        backbone="small_cnn",
        image_size=SIZE,
        descriptors=descriptors,
        embedding_dim=dim,
        num_classes=NUM_CLASSES,
    )
    kinds = [{"S": "spoc", "M": "mac", "G": "gem"}[c] for c in descriptors]
    for kind in kinds:
        assert model.get_layer(f"{kind}_fc").units == dim // len(descriptors)
        assert model.get_layer(f"{kind}_fc").use_bias is False
    # The first descriptor (raw) feeds the auxiliary head.
    assert _producer(model.get_layer("auxiliary_bn").input) == kinds[0]
    out = model(_images(3))
    embeddings = out["embeddings"].numpy()
    assert embeddings.shape == (3, dim)
    assert out["logits"].shape == (3, NUM_CLASSES)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert (embeddings < 0).any()
    # Each branch is itself unit norm before the concatenation: every block has norm 1/sqrt(n).
    blocks = embeddings.reshape(3, len(descriptors), -1)
    np.testing.assert_allclose(
        np.linalg.norm(blocks, axis=2), 1 / np.sqrt(len(descriptors)), atol=1e-5
    )


def test_cgd_without_classes_has_only_embeddings():
    model = build_cgd_model(backbone="small_cnn", image_size=SIZE, embedding_dim=32)
    assert model.output_names == ["embeddings"]
    assert set(model(_images(2))) == {"embeddings"}


@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        ({"descriptors": "SMG", "embedding_dim": 100}, "100"),
        ({"descriptors": "SQ"}, "Q"),
        ({"embedding_dim": 0}, "embedding_dim"),
        ({"num_classes": -1}, "num_classes"),
        ({"backbone": "vgg"}, "vgg"),
    ],
)
def test_cgd_rejects_bad_configuration(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        build_cgd_model(**{"backbone": "small_cnn", "image_size": SIZE, **kwargs})


def test_trainable_gem_p():
    model = build_cgd_model(
        backbone="small_cnn",
        image_size=SIZE,
        descriptors="G",
        embedding_dim=8,
        trainable_gem_p=True,
    )
    gem = model.get_layer("gem")
    assert isinstance(gem, GeneralizedMeanPooling2D)
    assert any(w is gem.p for w in model.trainable_weights)


# ---------------------------------------------------------------------------------------------
# Baseline and dispatch
# ---------------------------------------------------------------------------------------------


def test_simple_model():
    model = build_simple_model(
        backbone="small_cnn", image_size=SIZE, embedding_dim=16, num_classes=3, pooling="M"
    )
    assert model.get_layer("hidden_fc").units == 256  # the backbone's width
    out = model(_images(2))
    assert out["embeddings"].shape == (2, 16) and out["logits"].shape == (2, 3)
    np.testing.assert_allclose(np.linalg.norm(out["embeddings"], axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="pooling"):
        build_simple_model(backbone="small_cnn", image_size=SIZE, pooling="SG")


def test_build_model_dispatch():
    cgd = build_model("cgd", backbone="small_cnn", image_size=SIZE, embedding_dim=8)
    assert cgd.get_layer("spoc") is not None
    simple = build_model("simple", backbone="small_cnn", image_size=SIZE, embedding_dim=8)
    assert simple.get_layer("hidden_fc") is not None
    seed2 = build_model("conv_flatten_fc", backbone="small_cnn", image_size=SIZE, embedding_dim=8)
    assert seed2.get_layer("flatten") is not None
    with pytest.raises(ValueError, match=r"'mlp'.*cgd.*conv_flatten_fc.*simple"):
        build_model("mlp")


def test_seed_auxiliary_head_reads_the_normalised_first_branch():
    """auxiliary_head="seed": l2(spoc branch) -> Dense(C, swish) -> BN -> Dense(C) -> logits;
    "paper": raw spoc -> BN -> Dense(C)."""
    seed = build_cgd_model(
        backbone="small_cnn",
        image_size=SIZE,
        descriptors="SM",
        embedding_dim=16,
        num_classes=5,
        auxiliary_head="seed",
    )
    fc, bn, logits = (seed.get_layer(n) for n in ("auxiliary_fc", "auxiliary_bn", "logits"))
    assert _producer(fc.input) == "spoc_l2"
    assert fc.units == 5 and fc.activation is keras.activations.swish
    assert _producer(bn.input) == "auxiliary_fc" and _producer(logits.input) == "auxiliary_bn"
    assert logits.units == 5 and logits.activation.__name__ == "linear"
    paper = build_cgd_model(
        backbone="small_cnn", image_size=SIZE, descriptors="SM", embedding_dim=16, num_classes=5
    )
    assert _producer(paper.get_layer("auxiliary_bn").input) == "spoc"
    assert "auxiliary_fc" not in [layer.name for layer in paper.layers]
    with pytest.raises(ValueError, match="auxiliary_head"):
        build_cgd_model(backbone="small_cnn", image_size=SIZE, auxiliary_head="softmax")


def test_conv_flatten_fc_is_the_seeds_second_model():
    """The seed's ImagesSimilarityComputer on the small CNN at 64 px (2 x 2 x 256 map):
    conv 1x1 256 -> 512 (131,584 = 256 * 512 + 512), 512 -> 128 (65,664), flatten 2 * 2 * 128
    = 512, Dense 1024 (525,312), BN (4,096), Dense 512 (524,800)."""
    model = build_conv_flatten_fc_model(
        backbone="small_cnn", image_size=SIZE, last_stride=2, embedding_dim=512, num_classes=3
    )
    counts = {
        name: model.get_layer(name).count_params()
        for name in ("reduce1_conv", "reduce2_conv", "hidden_fc", "hidden_bn", "embedding_fc")
    }
    assert counts == {
        "reduce1_conv": 131_584,
        "reduce2_conv": 65_664,
        "hidden_fc": 525_312,
        "hidden_bn": 4_096,
        "embedding_fc": 524_800,
    }
    for name in ("reduce1_conv", "reduce2_conv", "hidden_fc"):
        assert model.get_layer(name).activation is keras.activations.swish
    assert model.get_layer("reduce1_conv").kernel_size == (1, 1)
    assert tuple(model.get_layer("flatten").output.shape) == (None, 512)
    # The seed's auxiliary head, on the Dense(512) output.
    assert _producer(model.get_layer("auxiliary_fc").input) == "embedding_fc"
    out = model(_images(2))
    assert out["embeddings"].shape == (2, 512) and out["logits"].shape == (2, 3)
    np.testing.assert_allclose(np.linalg.norm(out["embeddings"], axis=1), 1.0, atol=1e-5)


def test_hap2s_training_step_on_small_cnn():
    model = build_cgd_model(
        backbone="small_cnn", image_size=32, descriptors="MG", embedding_dim=16, num_classes=3
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss={"embeddings": HardAwarePointToSetLoss(), "logits": AuxiliaryClassificationLoss()},
        loss_weights={"embeddings": 1.0, "logits": 0.5},
    )
    labels = np.repeat(np.arange(3), 2).astype(np.int32)
    logs = model.train_on_batch(
        _images(6, size=32), {"embeddings": labels, "logits": labels}, return_dict=True
    )
    assert np.isfinite(logs["loss"]) and logs["loss"] > 0


# ---------------------------------------------------------------------------------------------
# ResNet-50 CGD: preprocessing, stride, one training step, save/load
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_resnet_cgd_layout(resnet_cgd):
    first = resnet_cgd.layers[1]
    assert isinstance(first, ImagePreprocessing) and first.channel_order == "BGR"
    assert resnet_cgd.input.name == "images" or resnet_cgd.inputs[0].name == "images"
    # last_stride=1: 64 px -> 4 x 4 (it would be 2 x 2 with the downsampling).
    assert tuple(resnet_cgd.get_layer("resnet50").output.shape) == (None, 4, 4, 2048)
    assert resnet_cgd.get_layer("spoc_fc").units == 768


@pytest.mark.slow
def test_resnet_cgd_training_step(resnet_cgd):
    model = _training_view(resnet_cgd)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-4),
        loss={
            "embeddings": BatchHardTripletLoss(margin=0.1),
            "logits": AuxiliaryClassificationLoss(label_smoothing=0.1, temperature=0.5),
        },
    )
    labels = np.repeat(np.arange(NUM_CLASSES), 2).astype(np.int32)  # P = 4, K = 2
    before = resnet_cgd.get_layer("spoc_fc").get_weights()[0].copy()
    logs = model.train_on_batch(
        _images(8, seed=1), {"embeddings": labels, "logits": labels}, return_dict=True
    )
    assert np.isfinite(logs["loss"]) and logs["loss"] > 0
    after = resnet_cgd.get_layer("spoc_fc").get_weights()[0]
    assert not np.array_equal(before, after)  # the shared model was trained


@pytest.mark.slow
def test_resnet_cgd_save_load_round_trip(resnet_cgd, tmp_path):
    path = str(tmp_path / "cgd.keras")
    resnet_cgd.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)  # no custom_objects
    images = _images(3, seed=2)
    want = embedding_model(resnet_cgd).predict(images, verbose=0)
    got = embedding_model(loaded).predict(images, verbose=0)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(
        loaded.predict(images, verbose=0)["logits"], resnet_cgd.predict(images, verbose=0)["logits"]
    )
    assert tuple(loaded.get_layer("resnet50").output.shape) == (None, 4, 4, 2048)


@pytest.mark.slow
def test_seed_profile_model_structure():
    """The seed profile's model (weights null) at 64 px: ResNet-50 tapped at conv4_block3_out
    (1024 channels), S, M, G each Dense(1024 -> 512, no bias) and L2, concatenated to 1536, and
    the seed's auxiliary head on the normalised SPoC branch for the 88 training classes.

    Parameters, by hand: the three branches 3 * 1024 * 512 = 1,572,864; the head Dense(512 ->
    88) 45,144, BatchNorm(88) 352, Dense(88 -> 88) 7,832; GeM's p (a fixed weight) 1; plus the
    backbone, counted on Keras' own ResNet-50 cut at the same layer (5,223,808). Total
    6,850,001, independent of the image size.
    """
    from pathlib import Path

    from net.config import load_config
    from net.experiment import build_model as build_configured

    config = load_config(Path(__file__).resolve().parents[1] / "config.yaml", profile="seed")
    model_config = dataclasses.replace(config.model, weights=None)
    num_classes = config.data.num_train_classes - config.data.num_val_classes
    assert num_classes == 88
    model = build_configured(model_config, image_size=SIZE, num_classes=num_classes)

    backbone = model.get_layer("resnet50")
    assert backbone.layers[-1].name == "conv4_block3_out"
    assert tuple(backbone.output.shape) == (None, 4, 4, 1024)  # stride 16 at 64 px
    for kind in ("spoc", "mac", "gem"):
        fc = model.get_layer(f"{kind}_fc")
        assert (fc.kernel.shape, fc.use_bias) == ((1024, 512), False)
        assert _producer(model.get_layer(f"{kind}_l2").input) == f"{kind}_fc"
    assert model.get_layer("gem").initial_p == 3.0
    assert tuple(model.get_layer("embeddings").output.shape) == (None, 1536)
    assert _producer(model.get_layer("auxiliary_fc").input) == "spoc_l2"
    assert model.get_layer("auxiliary_fc").activation is keras.activations.swish
    assert model.get_layer("logits").units == 88

    keras_resnet = keras.applications.ResNet50(
        include_top=False, weights=None, input_shape=(SIZE, SIZE, 3)
    )
    keras_cut = keras.Model(keras_resnet.input, keras_resnet.get_layer("conv4_block3_out").output)
    assert keras_cut.count_params() == backbone.count_params() == 5_223_808
    head = 3 * 1024 * 512 + (512 * 88 + 88) + 4 * 88 + (88 * 88 + 88) + 1
    assert model.count_params() == backbone.count_params() + head == 6_850_001


def test_embedding_model_requires_embeddings_layer():
    inputs = keras.Input((4,))
    with pytest.raises(ValueError, match="embeddings"):
        embedding_model(keras.Model(inputs, keras.layers.Dense(2)(inputs)))


@pytest.mark.parametrize(
    ("descriptors", "pooling"), [("SG", SPoCPooling2D), ("G", GeneralizedMeanPooling2D)]
)
def test_configured_simple_model_pools_with_the_first_descriptor(descriptors, pooling):
    """``model.architecture: simple`` pools with the first letter of ``model.descriptors``.

    GeM takes ``model.gem_p`` and ``model.trainable_gem_p`` (before, the configured simple
    model always pooled with SPoC and ignored both).
    """
    from pathlib import Path

    from net.config import load_config
    from net.experiment import build_model as build_configured

    config = load_config(Path(__file__).resolve().parents[1] / "config.yaml", profile="demo")
    model_config = dataclasses.replace(
        config.model,
        architecture="simple",
        backbone="small_cnn",
        weights=None,
        descriptors=descriptors,
        gem_p=5.0,
        trainable_gem_p=True,
    )
    model = build_configured(model_config, image_size=SIZE, num_classes=0)
    poolings = (SPoCPooling2D, MACPooling2D, GeneralizedMeanPooling2D)
    pools = [layer for layer in model.layers if isinstance(layer, poolings)]
    assert [type(layer) for layer in pools] == [pooling]
    if pooling is GeneralizedMeanPooling2D:
        assert pools[0].initial_p == 5.0 and pools[0].trainable_p


def test_cgd_model_draws_the_head_weights_after_the_first_branch():
    """Under one seed, layers draw their initial weights in the order they are made.

    CGD makes the auxiliary head right after the first branch and before the others, as this
    repository always has: the published demo numbers are reproduced from a seed, so moving
    the head (e.g. to after the concatenation) would silently change them. With a head, the
    first branch draws the same weights as without one and the second branch other weights.
    """

    def kernels(num_classes):
        keras.utils.set_random_seed(0)
        model = build_cgd_model(
            backbone="small_cnn", image_size=32, descriptors="SG", embedding_dim=16,
            num_classes=num_classes,
        )  # fmt: skip
        return [model.get_layer(name).kernel.numpy() for name in ("spoc_fc", "gem_fc")]

    (spoc_with, gem_with), (spoc_without, gem_without) = kernels(5), kernels(0)
    np.testing.assert_array_equal(spoc_with, spoc_without)
    assert not np.allclose(gem_with, gem_without)
