"""The typed configuration: one frozen dataclass per section of ``config.yaml``.

With them, :func:`check_values`: the rules between their values that their types cannot say
(a P x K batch that fits the training classes, an embedding that splits evenly between the
descriptors, a consistent schedule). :mod:`net.config` reads, merges and overrides a file into
these classes (and re-exports them); library functions receive their fields as explicit
arguments.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn

from net.augmentation import Augmentation, parse_augmentation
from net.descriptors import parse_descriptors
from net.loss_params import check_metric_loss_params


@dataclass(frozen=True)
class DataConfig:
    """Where the data set lives and how batches are formed.

    Attributes:
        layout: ``cars196`` (either official layout, detected), ``cub200``, ``sop``,
            ``inshop`` (CUB-200-2011, Stanford Online Products, In-shop Clothes in their
            official layouts), ``image_folder`` (one folder per class), ``csv`` (a manifest
            ``path,label[,x1,y1,x2,y2]``) or ``auto`` (detected from the files under ``root``).
        root: data set folder (for ``csv``: the manifest file). Relative paths are taken from the
            configuration file's folder.
        num_train_classes: classes (in label order) used for training; the rest are the test
            classes. ``None``: the first half (98 of Cars196's 196).
        num_val_classes: training classes held out for validation (model selection, early
            stopping); 0 disables validation.
        image_size: side of the square network input, in pixels.
        crop: ``bbox`` (crop to the bounding box, the CGD paper), ``pad`` (pad to a square, the
            seed), or ``none`` (plain resize).
        classes_per_batch: P of a P x K training batch.
        images_per_class: K of a P x K training batch.
        class_sampling: how the P classes of a batch are drawn: ``proportional`` (each class
            with probability proportional to its size, so every image is seen about equally
            often) or ``uniform`` (every class equally likely, as the seed did).
        eval_batch_size: batch size for embedding extraction.
        augment: training augmentation: ``true`` (the defaults: flip, scale, translate,
            rotate, shear, grayscale), ``false``, or a mapping of operations to settings, e.g.
            ``{flip: 0, rotate: 10, grayscale: 0.1}`` (see :mod:`net.augmentation`); use
            :attr:`augmentation` for the parsed settings.
        cache: keep decoded, resized images in memory (small data sets only).
        skip_bad_images: drop unreadable images (and say how many) instead of stopping.
        decode_check: decode every image when the data set is opened (about 15 times slower
            than the default check), which also finds corrupt image data inside complete files;
            otherwise a fast check of each file's header and end marker.
    """

    layout: Literal["auto", "cars196", "cub200", "sop", "inshop", "image_folder", "csv"]
    root: str
    num_train_classes: int | None
    num_val_classes: int
    image_size: int
    crop: Literal["bbox", "pad", "none"]
    classes_per_batch: int
    images_per_class: int
    class_sampling: Literal["proportional", "uniform"]
    eval_batch_size: int
    augment: bool | dict[str, Any]
    cache: bool
    skip_bad_images: bool
    decode_check: bool

    @property
    def augmentation(self) -> Augmentation | None:
        """The parsed ``augment`` setting (``None``: no augmentation)."""
        return parse_augmentation(self.augment)


@dataclass(frozen=True)
class ModelConfig:
    """The embedding network.

    Attributes:
        architecture: ``cgd`` (combination of global descriptors), ``simple`` (this
            repository's baseline) or ``conv_flatten_fc`` (the seed's second model: 1 x 1
            convolutions, flatten, dense layers).
        backbone: registered backbone name (``resnet50``, ``small_cnn``, ``efficientnet_lite0``).
        weights: ``imagenet``, a local weights file, or ``None`` (random initialisation).
        last_stride: 1 removes the last stage's downsampling (the CGD paper), 2 keeps it.
        feature_layer: ``None`` (the backbone's last feature map) or the name of a backbone
            layer to cut the backbone at (the seed: ``conv4_block3_out`` of ResNet-50).
        descriptors: CGD descriptor letters (S = SPoC, M = MAC, G = GeM); the first feeds the
            auxiliary classification head, and is the one pooling of ``simple``.
        auxiliary_head: ``paper`` (BatchNorm -> Dense on the first raw descriptor) or ``seed``
            (Dense(classes, swish) -> BatchNorm -> Dense on the first L2-normalised branch).
        embedding_dim: total embedding dimension, divisible by the number of descriptors.
        gem_p: GeM's power.
        trainable_gem_p: learn GeM's power.
    """

    architecture: Literal["cgd", "simple", "conv_flatten_fc"]
    backbone: str
    weights: str | None
    last_stride: Literal[1, 2]
    feature_layer: str | None
    descriptors: str
    embedding_dim: int
    gem_p: float
    trainable_gem_p: bool
    auxiliary_head: Literal["paper", "seed"]


@dataclass(frozen=True)
class LossConfig:
    """Metric-learning loss and the auxiliary classification loss.

    Attributes:
        name: ``batch_hard_triplet`` or ``hap2s``.
        params: keyword arguments of that loss (e.g. ``margin``; ``None`` margin = soft margin).
        auxiliary_weight: weight of the auxiliary classification loss; 0 removes the head.
        label_smoothing: label smoothing of the auxiliary loss.
        temperature: temperature dividing the logits of the auxiliary loss.
    """

    name: Literal["batch_hard_triplet", "hap2s"]
    params: dict[str, Any]
    auxiliary_weight: float
    label_smoothing: float
    temperature: float


@dataclass(frozen=True)
class ScheduleConfig:
    """Learning-rate schedule.

    Attributes:
        kind: ``constant``, ``step`` (multiply by ``factor`` at each epoch in ``boundaries``,
            as in the CGD paper) or ``plateau`` (multiply by ``factor`` when validation
            MAP@R stalls for ``patience`` epochs).
        boundaries: epochs at which the step schedule decays.
        factor: decay factor.
        patience: epochs without improvement before a plateau decay.
    """

    kind: Literal["constant", "step", "plateau"]
    boundaries: list[int]
    factor: float
    patience: int


@dataclass(frozen=True)
class TrainingConfig:
    """Optimisation.

    Attributes:
        epochs: number of epochs.
        steps_per_epoch: batches per epoch; ``None`` derives it from the training set size.
        learning_rate: Adam's learning rate.
        weight_decay: decoupled weight decay (AdamW) when positive.
        schedule: the learning-rate schedule.
        early_stopping_patience: stop after this many epochs without a better validation
            MAP@R; 0 disables early stopping.
        seed: seed of every random number generator; ``None`` for a random run.
        deterministic: make TensorFlow's ops deterministic (same seed, same metrics on CPU).
        mixed_precision: ``None``, ``mixed_float16`` or ``mixed_bfloat16``.
        jit_compile: XLA-compile the train step.
        distribution: ``default`` (one device), ``mirrored`` (all local GPUs) or
            ``multi_worker`` (several machines, from ``TF_CONFIG``).
        backbone_learning_rate_multiplier: the backbone learns at this times the learning rate
            (0.1: ten times slower than the heads); 0 freezes it.
        freeze_backbone_epochs: epochs at the start that train only the heads (the backbone
            frozen, its BatchNorm statistics too); then everything trains.
    """

    epochs: int
    steps_per_epoch: int | None
    learning_rate: float
    weight_decay: float
    schedule: ScheduleConfig
    early_stopping_patience: int
    seed: int | None
    deterministic: bool
    mixed_precision: Literal["mixed_float16", "mixed_bfloat16"] | None
    jit_compile: bool
    distribution: Literal["default", "mirrored", "multi_worker"]
    backbone_learning_rate_multiplier: float
    freeze_backbone_epochs: int


@dataclass(frozen=True)
class EvaluationConfig:
    """Retrieval evaluation.

    Attributes:
        ks: the K of Recall@K.
        block_size: queries per block of the exact nearest-neighbour search.
        method: neighbour search: ``exact`` (blocked NumPy), ``faiss`` (exact FAISS index) or
            ``faiss_ivf`` (approximate, for very large galleries); FAISS needs ``faiss-cpu``.
        nprobe: IVF cells each query scans with ``faiss_ivf`` (more: slower, closer to exact;
            a K of 1,000 on SOP needs 64).
    """

    ks: list[int]
    block_size: int
    method: Literal["exact", "faiss", "faiss_ivf"]
    nprobe: int


@dataclass(frozen=True)
class OutputConfig:
    """Where runs and figures go.

    Attributes:
        root: folder holding one sub-folder per run.
    """

    root: str


@dataclass(frozen=True)
class Config:
    """The whole configuration, as read from one file (and profile)."""

    data: DataConfig
    model: ModelConfig
    loss: LossConfig
    training: TrainingConfig
    evaluation: EvaluationConfig
    output: OutputConfig
    source: str = field(default="<dict>", compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain data (what ``config.yaml`` would hold)."""
        data = dataclasses.asdict(self)
        data.pop("source")
        return data


def check_values(config: Config) -> None:
    """Checks the values of a configuration beyond their types: the rules between its fields.

    Sizes are positive, a P x K batch has positives and negatives and fits the training
    classes, the descriptor letters and the augmentation settings parse, the embedding splits
    evenly between the descriptors, the schedule is consistent, and the metric loss's
    parameters are ones its class accepts (checked without TensorFlow).

    Raises:
        ValueError: ``"<dotted key>: <what is wrong>"`` for the first problem found;
            :func:`net.config.config_from_dict` adds the file's name.
    """
    _check_positive_sizes(config)
    _check_data(config.data)
    _check_model(config.model)
    _check_loss_weights(config.loss)
    _check_training(config.training)
    _check_schedule(config.training.schedule, num_val_classes=config.data.num_val_classes)
    _check_evaluation(config.evaluation)
    loss = config.loss
    try:
        check_metric_loss_params(loss.name, loss.params)
    except ValueError as error:
        _fail(f"loss.params ({loss.name})", str(error))


def _fail(key: str, message: str) -> NoReturn:
    """Raises the ``"<dotted key>: <what is wrong>"`` error of :func:`check_values`."""
    raise ValueError(f"{key}: {message}")


def _check_positive_sizes(config: Config) -> None:
    """Checks that every size and count of every section is positive (first, in key order)."""
    data, evaluation = config.data, config.evaluation
    positive = {
        "data.image_size": data.image_size,
        "data.classes_per_batch": data.classes_per_batch,
        "data.images_per_class": data.images_per_class,
        "data.eval_batch_size": data.eval_batch_size,
        "model.embedding_dim": config.model.embedding_dim,
        "training.epochs": config.training.epochs,
        "evaluation.block_size": evaluation.block_size,
        "evaluation.nprobe": evaluation.nprobe,
    }
    for key, value in positive.items():
        if value <= 0:
            _fail(key, f"must be positive, got {value}")


def _check_data(data: DataConfig) -> None:
    """Checks the ``data`` section: sizes, the class split, the P x K batch, augmentation.

    The batch needs positives and negatives and must fit the training classes left after
    the validation classes are held out.
    """
    if data.image_size < 32:
        _fail("data.image_size", f"must be at least 32 pixels, got {data.image_size}")
    if data.images_per_class < 2:
        _fail("data.images_per_class", "must be at least 2 (a P x K batch needs positives)")
    if data.classes_per_batch < 2:
        _fail("data.classes_per_batch", "must be at least 2 (a P x K batch needs negatives)")
    if data.num_train_classes is not None and data.num_train_classes < 2:
        _fail("data.num_train_classes", f"must be at least 2, got {data.num_train_classes}")
    if data.num_val_classes < 0:
        _fail("data.num_val_classes", f"must be 0 or more, got {data.num_val_classes}")
    if data.num_val_classes and data.num_val_classes < 2:
        _fail("data.num_val_classes", "must be 0 or at least 2 (retrieval needs negatives)")
    if data.num_train_classes is not None:
        fit_classes = data.num_train_classes - data.num_val_classes
        if data.classes_per_batch > fit_classes:
            _fail(
                "data.classes_per_batch",
                f"P = {data.classes_per_batch} classes per batch, but only {fit_classes} "
                f"training classes remain (num_train_classes {data.num_train_classes} - "
                f"num_val_classes {data.num_val_classes})",
            )
    parse_augmentation(data.augment)  # its message names the key


def _check_model(model: ModelConfig) -> None:
    """Checks the ``model`` section: descriptor letters, embedding split, GeM's power.

    The letters must parse, the embedding must split evenly between them, and GeM's power
    must be positive.
    """
    letters = model.descriptors
    try:
        parse_descriptors(letters)
    except ValueError as error:
        _fail("model.descriptors", str(error))
    if model.embedding_dim % len(letters):
        _fail(
            "model.embedding_dim",
            f"{model.embedding_dim} is not divisible by the {len(letters)} descriptors "
            f"of {letters!r}",
        )
    if model.gem_p <= 0:
        _fail("model.gem_p", f"must be positive, got {model.gem_p}")


def _check_loss_weights(loss: LossConfig) -> None:
    """Checks the ``loss`` section's weights, smoothing and temperature.

    The metric loss's own parameters come last, in :func:`check_values`.
    """
    if loss.auxiliary_weight < 0:
        _fail("loss.auxiliary_weight", f"must be 0 or more, got {loss.auxiliary_weight}")
    if not 0 <= loss.label_smoothing < 1:
        _fail("loss.label_smoothing", f"must be in [0, 1), got {loss.label_smoothing}")
    if loss.temperature <= 0:
        _fail("loss.temperature", f"must be positive, got {loss.temperature}")


def _check_training(training: TrainingConfig) -> None:
    """Checks the ``training`` section's optimiser, early-stopping and backbone settings."""
    if training.learning_rate <= 0:
        _fail("training.learning_rate", f"must be positive, got {training.learning_rate}")
    if training.weight_decay < 0:
        _fail("training.weight_decay", f"must be 0 or more, got {training.weight_decay}")
    if training.steps_per_epoch is not None and training.steps_per_epoch <= 0:
        _fail("training.steps_per_epoch", f"must be positive, got {training.steps_per_epoch}")
    if training.early_stopping_patience < 0:
        _fail("training.early_stopping_patience", "must be 0 or more")
    multiplier = training.backbone_learning_rate_multiplier
    if not math.isfinite(multiplier) or multiplier < 0:
        _fail("training.backbone_learning_rate_multiplier", f"must be 0 or more, got {multiplier}")
    if training.freeze_backbone_epochs < 0:
        _fail(
            "training.freeze_backbone_epochs",
            f"must be 0 or more, got {training.freeze_backbone_epochs}",
        )


def _check_schedule(schedule: ScheduleConfig, *, num_val_classes: int) -> None:
    """Checks ``training.schedule``: decay factor, step epochs, plateau settings.

    A step schedule needs increasing epochs of at least 1; a plateau schedule needs a
    patience of at least 1 and validation classes to watch.
    """
    if not 0 < schedule.factor <= 1:
        _fail("training.schedule.factor", f"must be in (0, 1], got {schedule.factor}")
    if schedule.kind == "step":
        if not schedule.boundaries:
            _fail("training.schedule.boundaries", "a step schedule needs at least one epoch")
        if sorted(set(schedule.boundaries)) != schedule.boundaries or schedule.boundaries[0] < 1:
            _fail(
                "training.schedule.boundaries",
                f"must be increasing epochs of at least 1, got {schedule.boundaries}",
            )
    if schedule.kind == "plateau" and schedule.patience < 1:
        _fail("training.schedule.patience", "must be at least 1 for a plateau schedule")
    if schedule.kind == "plateau" and num_val_classes == 0:
        _fail("training.schedule.kind", "plateau needs validation classes (data.num_val_classes)")


def _check_evaluation(evaluation: EvaluationConfig) -> None:
    """Checks ``evaluation.ks``: at least one K, each at least 1."""
    ks = evaluation.ks
    if not ks or any(k < 1 for k in ks):
        _fail("evaluation.ks", f"must be positive integers, got {ks}")
