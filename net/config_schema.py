"""The typed configuration: one frozen dataclass per section of ``config.yaml``.

:mod:`net.config` reads, merges, overrides and validates a file into these classes (and
re-exports them); library functions receive their fields as explicit arguments.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from net.augmentation import Augmentation, parse_augmentation


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
            auxiliary classification head.
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
