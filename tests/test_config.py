"""Configuration loading: the shipped file, profiles, and one message per kind of mistake."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from net.augmentation import CHOOSABLE
from net.config import ConfigError, apply_override, load_config, parse_override

REPO = Path(__file__).resolve().parents[1]


def test_shipped_config_is_the_cars196_setup():
    config = load_config(REPO / "config.yaml")
    assert config.data.layout == "cars196"
    assert config.data.num_train_classes == 98
    assert config.data.image_size == 224
    assert config.model.backbone == "resnet50"
    assert config.model.last_stride == 1
    assert config.model.embedding_dim == 1536
    assert config.loss.params == {"margin": 0.1}
    assert (config.loss.label_smoothing, config.loss.temperature) == (0.1, 0.5)
    assert config.training.learning_rate == 1e-4
    # Relative paths are taken from the configuration file's folder.
    assert Path(config.data.root) == REPO / "data" / "cars196"


def test_demo_profile_overlays_only_what_it_names():
    full = load_config(REPO / "config.yaml")
    demo = load_config(REPO / "config.yaml", profile="demo")
    assert demo.model.backbone == "small_cnn"
    assert demo.data.image_size == 64
    assert demo.training.schedule.boundaries == [30]
    assert demo.training.schedule.kind == "step"
    # Untouched keys keep the full setup's values.
    assert demo.model.descriptors == full.model.descriptors
    assert demo.loss == full.loss


def write(tmp_path, mutate):
    raw = yaml.safe_load((REPO / "config.yaml").read_text())
    mutate(raw)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _set(section, key, value):
    def mutate(raw):
        raw[section][key] = value

    return mutate


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (_set("model", "descriptor", "SG"), "unknown key model.descriptor"),
        (lambda raw: raw["data"].pop("image_size"), "missing key data.image_size"),
        (_set("data", "image_size", "224"), "data.image_size: expected an integer, got '224'"),
        (_set("data", "augment", "yes"), "data.augment: 'yes' is not a valid value"),
        (_set("data", "augment", {"blur": 0.5}), "data.augment.blur: unknown operation"),
        (_set("data", "augment", {"scale": [1.2, 0.8]}), "data.augment.scale: the range"),
        (_set("data", "augment", {"flip": 2}), "data.augment.flip: a probability must be in"),
        (_set("model", "descriptors", "SX"), "model.descriptors: 'SX' has 'X'"),
        (_set("model", "embedding_dim", 1000), "1000 is not divisible by the 3 descriptors"),
        (_set("data", "classes_per_batch", 90), "P = 90 classes per batch, but only 88"),
        (_set("data", "crop", "square"), "data.crop: 'square' is not one of"),
        (_set("model", "last_stride", 3), "model.last_stride: 3 is not one of"),
        (_set("loss", "name", "contrastive"), "loss.name: 'contrastive' is not one of"),
        (_set("loss", "params", {"margin": -1.0}), "loss.params (batch_hard_triplet)"),
        (_set("loss", "params", {"margn": 0.1}), "loss.params (batch_hard_triplet)"),
        (_set("training", "learning_rate", 0), "training.learning_rate: must be positive"),
        (_set("evaluation", "method", "annoy"), "evaluation.method: 'annoy' is not one of"),
        (_set("evaluation", "nprobe", 0), "evaluation.nprobe: must be positive, got 0"),
        (_set("evaluation", "nprobe", 8.5), "evaluation.nprobe: expected an integer, got 8.5"),
        (_set("data", "class_sampling", "even"), "data.class_sampling: 'even' is not one of"),
        (_set("model", "auxiliary_head", "cgd"), "model.auxiliary_head: 'cgd' is not one of"),
        (_set("model", "feature_layer", 4), "model.feature_layer: expected a string, got 4"),
        (_set("model", "architecture", "seed"), "model.architecture: 'seed' is not one of"),
    ],
)
def test_each_mistake_names_the_file_and_key(tmp_path, mutate, expected):
    if expected.startswith("1000"):
        original = mutate

        def mutate(raw):  # three descriptors, 1000 not divisible by 3
            raw["model"]["descriptors"] = "SMG"
            original(raw)

    path = write(tmp_path, mutate)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert expected in message
    assert "\n" not in message


def test_seed_profile_is_the_seeds_best_setup():
    """The seed's code at its last commit (README, "Reproducing the seed")."""
    full = load_config(REPO / "config.yaml")
    seed = load_config(REPO / "config.yaml", profile="seed")
    assert (seed.data.crop, seed.data.class_sampling, seed.data.image_size) == (
        "pad",
        "uniform",
        224,
    )
    assert (seed.data.classes_per_batch, seed.data.images_per_class) == (16, 8)
    # imgaug: SomeOf((0, 2), [Grayscale(alpha=(0.2, 1)), Affine(scale={x, y: (0.8, 1.2)}),
    # Affine(translate_percent={x, y: (-0.1, 0.1)}), Affine(rotate=(-15, 15))]), Fliplr(0.5).
    augmentation = seed.data.augmentation
    assert (augmentation.flip_p, augmentation.max_ops) == (0.5, 2)
    assert augmentation.operations == ("flip", "scale", "translate", "rotate", "grayscale")
    assert [getattr(augmentation, f"{op}_p") for op in CHOOSABLE if op != "shear"] == [1.0] * 4
    assert (augmentation.scale_range, augmentation.translate_range) == ((0.8, 1.2), (-0.1, 0.1))
    assert (augmentation.rotate_range, augmentation.grayscale_range) == ((-15, 15), (0.2, 1))
    model = seed.model
    assert (model.architecture, model.backbone, model.weights) == ("cgd", "resnet50", "imagenet")
    assert (model.feature_layer, model.descriptors, model.embedding_dim) == (
        "conv4_block3_out",
        "SMG",
        1536,
    )
    assert (model.gem_p, model.auxiliary_head) == (3.0, "seed")
    assert seed.loss.name == "hap2s"
    assert seed.loss.params == {"weighting": "polynomial", "alpha": 10.0, "margin": None}
    assert (seed.loss.label_smoothing, seed.loss.temperature) == (0.0, 0.5)
    training = seed.training
    assert (training.learning_rate, training.epochs, training.early_stopping_patience) == (
        1e-4,
        200,
        12,
    )
    assert (training.schedule.kind, training.schedule.factor, training.schedule.patience) == (
        "plateau",
        0.1,
        4,
    )
    # This repository's fixes stay on: the 98/98 split with validation classes held out.
    assert (seed.data.num_train_classes, seed.data.num_val_classes) == (98, 10)
    assert seed.data.num_val_classes == full.data.num_val_classes
    # The full setup keeps the defaults of the new options.
    assert (full.data.class_sampling, full.model.feature_layer) == ("proportional", None)
    assert full.model.auxiliary_head == "paper"


def test_unknown_profile_and_unreadable_file(tmp_path):
    with pytest.raises(
        ConfigError, match="unknown profile .fast..*profiles: cub200, demo, inshop, seed, sop"
    ):
        load_config(REPO / "config.yaml", profile="fast")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert str(info.value) == (
        f"{bad}: not valid YAML at line 2, column 1: expected ',' or ']', but got '<stream end>'"
    )


def test_profile_errors_name_the_profile(tmp_path):
    def mutate(raw):
        raw["profiles"]["demo"]["model"]["embedding_dim"] = 101

    path = write(tmp_path, mutate)
    load_config(path)  # the full setup is still valid
    with pytest.raises(ConfigError, match=r"\(profile demo\): model.embedding_dim: 101"):
        load_config(path, profile="demo")


# --- Command-line overrides (--set KEY=VALUE) ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("training.epochs=5", ("training.epochs", 5)),
        ("model.descriptors=SMG", ("model.descriptors", "SMG")),
        ("model.weights=null", ("model.weights", None)),
        ("data.augment=false", ("data.augment", False)),
        # PyYAML reads 1e-3 (no dot) as a string; overrides read it as YAML 1.2 does.
        ("training.learning_rate=1e-3", ("training.learning_rate", 0.001)),
        ("training.learning_rate=2.5E+2", ("training.learning_rate", 250.0)),
        ("evaluation.ks=[1, 5]", ("evaluation.ks", [1, 5])),
        ("loss.params={margin: null}", ("loss.params", {"margin": None})),
        ("data.root=a=b", ("data.root", "a=b")),  # only the first '=' splits
    ],
)
def test_override_is_a_dotted_key_and_a_yaml_value(text, expected):
    assert parse_override(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("training.epochs", "--set training.epochs: expected KEY=VALUE"),
        ("=5", "'' is not a dotted key"),
        ("training..epochs=5", "'training..epochs' is not a dotted key"),
        ("training.epochs=", "empty value for training.epochs (write null for none)"),
        ("evaluation.ks=[1, 2", "--set evaluation.ks=[1, 2: not a valid YAML value"),
    ],
)
def test_malformed_overrides_name_the_option(text, message):
    with pytest.raises(ConfigError) as info:
        parse_override(text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_apply_override_sets_one_key_and_keeps_its_neighbours():
    raw = {"training": {"epochs": 3, "schedule": {"kind": "step", "factor": 0.1}}}
    out = apply_override(raw, "training.schedule.kind", "constant")
    assert out == {"training": {"epochs": 3, "schedule": {"kind": "constant", "factor": 0.1}}}
    assert raw["training"]["schedule"]["kind"] == "step"  # the input is not changed
    # Below a free-form mapping any key may be set, next to the others.
    params = apply_override({"loss": {"params": {"margin": 0.1, "x": 1}}}, "loss.params.margin", 0)
    assert params == {"loss": {"params": {"margin": 0, "x": 1}}}


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("model.descriptor", "unknown key model.descriptor (valid keys under model: "),
        ("modle.descriptors", "unknown key modle.descriptors (valid keys under top level: "),
        ("training.schedule.kinds", "unknown key training.schedule.kinds"),
        ("training.epochs.x", "training.epochs is a value, not a section"),
        ("source", "unknown key source"),
    ],
)
def test_override_of_a_key_the_configuration_lacks_names_it(key, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        apply_override({}, key, 1)


def test_overrides_apply_after_the_profile_and_are_validated_like_the_file(tmp_path):
    config = load_config(
        REPO / "config.yaml",
        profile="demo",
        overrides=["model.descriptors=SMG", "model.embedding_dim=96", "training.epochs=5",
                   "data.image_size=96", "training.schedule.boundaries=[2, 4]",
                   "training.learning_rate=1e-2"],
    )  # fmt: skip
    assert (config.model.descriptors, config.model.embedding_dim) == ("SMG", 96)
    assert (config.training.epochs, config.data.image_size) == (5, 96)
    assert config.training.schedule.boundaries == [2, 4]
    assert config.training.learning_rate == 0.01
    # The profile still applies where no override is given.
    assert config.model.backbone == "small_cnn"
    # The last of two overrides of one key wins.
    twice = load_config(REPO / "config.yaml", overrides=["training.epochs=2", "training.epochs=7"])
    assert twice.training.epochs == 7
    # Relative paths resolve against the configuration file's folder, as in the file.
    moved = load_config(REPO / "config.yaml", overrides=["data.root=elsewhere"])
    assert Path(moved.data.root) == REPO / "elsewhere"


def test_a_mapping_merges_into_a_section_and_replaces_a_free_form_mapping():
    """As a profile's overlay: ``training={...}`` keeps the other training keys."""
    base = load_config(REPO / "config.yaml", profile="demo")
    merged = load_config(
        REPO / "config.yaml",
        profile="demo",
        overrides=["training={epochs: 3, schedule: {factor: 0.5}}", "loss.params={margin: 0.3}"],
    )
    assert merged.training.epochs == 3 and merged.training.schedule.factor == 0.5
    assert merged.training.schedule.boundaries == base.training.schedule.boundaries
    assert merged.training.steps_per_epoch == base.training.steps_per_epoch
    assert merged.training.learning_rate == base.training.learning_rate
    assert merged.loss.params == {"margin": 0.3}
    raw = {"loss": {"params": {"margin": 0.1, "soft": True}}, "data": {"augment": {"flip": 0.5}}}
    assert apply_override(raw, "loss.params", {"margin": 0.2})["loss"]["params"] == {"margin": 0.2}
    replaced = apply_override(raw, "data", {"augment": {"rotate": 5}})
    assert replaced["data"]["augment"] == {"rotate": 5}
    with pytest.raises(ConfigError, match=r"with --set training=\{epochs: x\}: training.epochs: "):
        load_config(REPO / "config.yaml", profile="demo", overrides=["training={epochs: x}"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.image_size=abc", "data.image_size: expected an integer, got 'abc'"),
        ("model.embedding_dim=100", "model.embedding_dim: 100 is not divisible by the 3"),
        ("data.crop=square", "data.crop: 'square' is not one of"),
        ("training.epochs=0", "training.epochs: must be positive, got 0"),
        ("loss.params.margin=-1", "loss.params (batch_hard_triplet)"),
        (
            "training.backbone_learning_rate_multiplier=-0.1",
            "training.backbone_learning_rate_multiplier: must be 0 or more, got -0.1",
        ),
        ("training.freeze_backbone_epochs=-1", "training.freeze_backbone_epochs: must be 0 or"),
    ],
)
def test_bad_override_values_fail_like_the_file_naming_the_override(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(
            REPO / "config.yaml",
            profile="demo",
            overrides=["model.descriptors=SMG", "model.embedding_dim=96", override],
        )
    text = str(info.value)
    assert text.startswith(f"{REPO / 'config.yaml'} (profile demo) with --set ")
    assert override in text and message in text and "\n" not in text


def test_loading_the_configuration_imports_no_tensorflow():
    """The configuration (and so docker.run and every task's argument check) needs no TF."""
    code = (
        "import sys, net.config; "
        f"net.config.load_config({str(REPO / 'config.yaml')!r}, profile='demo'); "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TF imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_nprobe_is_16_and_64_in_the_sop_profile():
    """SOP's Recall@1000 needs 64 IVF cells of its ~61 images (16 hold about 980)."""
    assert load_config(REPO / "config.yaml").evaluation.nprobe == 16
    assert load_config(REPO / "config.yaml", "sop").evaluation.nprobe == 64
