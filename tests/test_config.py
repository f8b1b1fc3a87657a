"""Configuration loading: the shipped file, profiles, and one message per kind of mistake."""

from pathlib import Path

import pytest
import yaml

from net.config import ConfigError, load_config

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
        (_set("data", "augment", "yes"), "data.augment: expected true or false"),
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


def test_unknown_profile_and_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match="unknown profile 'fast'.*profiles: demo"):
        load_config(REPO / "config.yaml", profile="fast")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_profile_errors_name_the_profile(tmp_path):
    def mutate(raw):
        raw["profiles"]["demo"]["model"]["embedding_dim"] = 101

    path = write(tmp_path, mutate)
    load_config(path)  # the full setup is still valid
    with pytest.raises(ConfigError, match=r"\(profile demo\): model.embedding_dim: 101"):
        load_config(path, profile="demo")
