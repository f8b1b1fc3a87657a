"""From a configuration to data, model, losses and runs: the assembly the invoke tasks call.

Everything here reads a :class:`net.config.Config` once and passes explicit arguments on to the
library (:mod:`net.data`, :mod:`net.pipeline`, :mod:`net.model`, :mod:`net.losses`,
:mod:`net.training`, :mod:`net.analysis`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from net import analysis, data, inference, losses, model, pipeline, runs, training
from net.backbones import UnknownLayerError
from net.callbacks import SELECTION_METRIC
from net.config import Config, ConfigError, DataConfig, ModelConfig, TrainingConfig
from net.evaluation import (  # noqa: F401  (re-exported: evaluation lives there)
    embed,
    evaluate,
    evaluate_query_gallery,
    naming_undecodable_images,
    split_metrics,
)
from net.files import atomic_write_json
from net.runs import (  # noqa: F401  (re-exported: the names the tasks and tests use)
    ModelFileError,
    RunDirectoryError,
    check_model,
    latest_run_dir,
    load_model,
    make_run_dir,
    resolve_model_path,
    worker_run_dir,
)
from net.torch_checkpoint import CheckpointFormatError, UnsafeCheckpointError
from net.training import distribution_strategy  # noqa: F401  (re-exported: moved to training)

#: The validation metric that selects the best model (one constant: net.callbacks).
VALIDATION_MONITOR = SELECTION_METRIC


def load_splits(config: DataConfig) -> data.Split:
    """Reads, checks and splits the configured data set.

    Args:
        config: the data configuration.

    Returns:
        The train, validation and test records.

    Raises:
        net.data.DataError: the data set is missing or has bad files (unless skipped).
    """
    records = data.read_dataset(
        config.layout,
        config.root,
        skip_bad=config.skip_bad_images,
        full_decode=config.decode_check,
    )
    try:
        return data.metric_learning_split(
            records,
            num_train_classes=config.num_train_classes,
            num_val_classes=config.num_val_classes,
        )
    except ValueError as error:  # the class counts do not fit this data set
        raise data.DataError(f"{config.root}: data.{error}") from None


def check_batches_fit(splits: data.Split, config: DataConfig) -> None:
    """Checks that the training classes can fill a P x K batch.

    (With ``data.num_train_classes`` set, :mod:`net.config` checks this up front; with it null,
    the number of classes is known only once the data set is read.)

    Raises:
        net.data.DataError: naming ``data.classes_per_batch`` and the class counts.
    """
    classes = splits.train.num_classes
    if config.classes_per_batch > classes:
        total = classes + splits.val.num_classes + splits.test.num_classes
        train = config.num_train_classes
        raise data.DataError(
            f"data.classes_per_batch: P = {config.classes_per_batch} classes per batch, but "
            f"only {classes} training classes remain ({config.root} has {total} classes; "
            f"num_train_classes {train if train is not None else f'null = {total // 2}'} - "
            f"num_val_classes {config.num_val_classes})"
        )


def split_records(config: DataConfig, split: str) -> data.Records:
    """The records of one split (``train``, ``val`` or ``test``) of the configured data set.

    Raises:
        net.data.DataError: the data set cannot be read, or the split is empty (``val`` with
            ``data.num_val_classes: 0``).
    """
    records = getattr(load_splits(config), split)
    if len(records) == 0:
        raise data.DataError(
            f"the {split} split is empty: data.num_val_classes is {config.num_val_classes} "
            "(hold out validation classes with --set data.num_val_classes=N, or use --split test)"
            if split == "val"
            else f"the {split} split of {config.root} is empty"
        )
    return records


def _image_options(config: DataConfig) -> dict[str, Any]:
    """What both pipelines take from ``data`` for each image: its size, crop and caching."""
    return {"image_size": config.image_size, "crop_mode": config.crop, "cache": config.cache}


def eval_dataset(records: data.Records, config: DataConfig) -> tf.data.Dataset:
    """The evaluation pipeline of a split: every image once, in order."""
    return pipeline.eval_dataset(
        records, batch_size=config.eval_batch_size, **_image_options(config)
    )


def build_model(config: ModelConfig, *, image_size: int, num_classes: int) -> keras.Model:
    """The configured (uncompiled) embedding model.

    Args:
        config: the model configuration.
        image_size: input side in pixels.
        num_classes: classes of the auxiliary head; 0 for none.

    Raises:
        net.config.ConfigError: ``model.feature_layer`` names no layer of the backbone (the
            message lists a few that exist), or ``model.weights`` is missing, unsafe (a
            checkpoint that would run code), malformed or does not fit the backbone.
    """
    kwargs: dict[str, Any] = {
        "backbone": config.backbone,
        "weights": config.weights,
        "image_size": image_size,
        "last_stride": config.last_stride,
        "feature_layer": config.feature_layer,
        "embedding_dim": config.embedding_dim,
        "num_classes": num_classes,
        "auxiliary_head": config.auxiliary_head,
    }
    if config.architecture in ("cgd", "simple"):
        kwargs.update(gem_p=config.gem_p, trainable_gem_p=config.trainable_gem_p)
    if config.architecture == "cgd":
        kwargs["descriptors"] = config.descriptors
    elif config.architecture == "simple":
        # The baseline pools with one descriptor: the first letter, the one CGD's head uses.
        kwargs["pooling"] = config.descriptors[0]
    try:
        return model.build_model(config.architecture, **kwargs)
    except UnknownLayerError as error:
        raise ConfigError(f"model.feature_layer: {error}") from error
    except (UnsafeCheckpointError, CheckpointFormatError, FileNotFoundError) as error:
        raise ConfigError(f"model.weights: {error}") from error
    except ValueError as error:
        if config.weights in (None, "imagenet") or "weights file" not in str(error):
            raise
        raise ConfigError(f"model.weights: {error}") from error


def auxiliary_classes(config: Config, train: data.Records) -> int:
    """Outputs of the auxiliary classification head: one per training label, or 0 without it.

    Sized from the labels used (the largest plus one), so every training label has its logit;
    the split's training labels are dense, so this is the number of training classes.
    """
    if config.loss.auxiliary_weight <= 0 or not len(train):
        return 0
    return int(train.labels.max()) + 1


def compile_for_training(
    net: keras.Model,
    config: Config,
    *,
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule,
) -> None:
    """Compiles a model with the configured losses and optimiser (what ``ml.train`` uses)."""
    training.compile_model(
        net,
        metric_loss=losses.build_metric_loss(config.loss.name, **config.loss.params),
        auxiliary_loss=losses.AuxiliaryClassificationLoss(
            label_smoothing=config.loss.label_smoothing,
            temperature=config.loss.temperature,
        ),
        auxiliary_weight=config.loss.auxiliary_weight,
        learning_rate=learning_rate,
        weight_decay=config.training.weight_decay,
        jit_compile=config.training.jit_compile,
        backbone_learning_rate_multiplier=config.training.backbone_learning_rate_multiplier,
    )


def training_batches(
    records: data.Records, config: DataConfig, *, seed: int | None, start_batch: int = 0
):
    """The configured training pipeline: endless augmented P x K batches of ``records``.

    ``start_batch`` starts the stream there (a resumed run's position; see
    :func:`net.pipeline.train_dataset`).
    """
    return pipeline.train_dataset(
        records,
        classes_per_batch=config.classes_per_batch,
        images_per_class=config.images_per_class,
        augment=config.augmentation,
        seed=seed,
        class_sampling=config.class_sampling,
        start_batch=start_batch,
        **_image_options(config),
    )


def train(config: Config, run_dir: str | os.PathLike, *, verbose: int | str = "auto") -> dict:
    """Trains the configured model in ``run_dir`` (resuming it if interrupted) and tests it.

    Writes ``config.yaml`` (the resolved configuration), ``status.json`` (in progress, then
    complete or failed: :func:`net.runs.run_status`), ``last.keras``, ``best.keras``,
    ``log.csv``, TensorBoard logs and ``metrics.json`` (test-set retrieval metrics of the best
    model, with the run's summary).

    Args:
        config: the configuration.
        run_dir: the run directory; an existing one with a saved state is resumed.
        verbose: ``"auto"`` (a progress bar on a terminal, one line per epoch otherwise),
            ``"line"``, or a Keras ``fit`` verbosity (see :func:`net.training.fit`).

    Returns:
        The content of ``metrics.json``.

    Raises:
        net.data.DataError: the data set cannot be read or split, cannot fill a P x K batch, or
            holds an image TensorFlow cannot decode (named; with ``data.decode_check: false``
            the up-front check reads only headers and end markers).
    """
    with naming_undecodable_images(lambda: _all_paths(config.data), config.data):
        return _train(config, run_dir, verbose=verbose)


def _all_paths(config: DataConfig) -> list[str]:
    splits = load_splits(config)
    return [str(path) for part in (splits.train, splits.val, splits.test) for path in part.paths]


def _train(config: Config, run_dir: str | os.PathLike, *, verbose: int | str) -> dict:
    """:func:`train`, without the naming of undecodable images."""
    # First: a multi-worker strategy must exist before TensorFlow's runtime starts.
    strategy = training.distribution_strategy(config.training.distribution)
    run_dir = runs.worker_run_dir(strategy, Path(run_dir))
    # The data first: a data set that cannot form the configured batches leaves no run behind.
    splits = load_splits(config.data)
    check_batches_fit(splits, config.data)
    run_dir.mkdir(parents=True, exist_ok=True)
    runs.check_same_config(config.to_dict(), run_dir)
    runs.mark_run(run_dir, runs.RUN_IN_PROGRESS)
    print(f"Run directory: {run_dir}")
    try:
        summary = _train_in(config, run_dir, strategy, splits, verbose)
    except Exception as error:  # marked, then raised on (an interrupt stays "in progress")
        with contextlib.suppress(OSError):  # a full disk may refuse even this
            runs.mark_run(run_dir, runs.RUN_FAILED, str(error))
        raise
    runs.mark_run(run_dir, runs.RUN_COMPLETE)
    return summary


def _train_in(
    config: Config,
    run_dir: Path,
    strategy: tf.distribute.Strategy,
    splits: data.Split,
    verbose: int | str,
) -> dict:
    """:func:`train` in a run directory whose configuration was checked."""
    apply_global_settings(config.training)
    replicas = strategy.num_replicas_in_sync
    steps = _steps_per_epoch(config, splits.train, replicas)
    print(_data_summary(config.data, splits, steps, replicas))
    with strategy.scope():
        net = _build_and_compile(config, splits.train, steps)
    result = _fit(
        net, config, splits, run_dir=run_dir, steps=steps, replicas=replicas, verbose=verbose
    )
    best = keras.saving.load_model(run_dir / runs.BEST_MODEL)
    summary = {
        "test": evaluate(best, splits.test, config),
        "epochs_done": result.epochs_done,
        "resumed_from_epoch": result.initial_epoch,
        "best_epoch": result.best_epoch,
        f"best_val_{VALIDATION_MONITOR}": result.best_score,
        "stopped_early": result.stopped_early,
        "train_images": len(splits.train),
        "val_images": len(splits.val),
        "test_images": len(splits.test),
        "steps_per_epoch": steps,
    }
    atomic_write_json(run_dir / "metrics.json", summary)
    return summary


def _fit(
    net: keras.Model,
    config: Config,
    splits: data.Split,
    *,
    run_dir: Path,
    steps: int,
    replicas: int,
    verbose: int | str,
) -> training.FitResult:
    """Runs :func:`net.training.fit` with the configured schedule, validation and callbacks."""
    settings = config.training
    schedule = settings.schedule
    return training.fit(
        net,
        _train_dataset_factory(config, splits.train, replicas, steps),
        run_dir=run_dir,
        epochs=settings.epochs,
        steps_per_epoch=steps,
        validate=_validation(splits.val, config.data),
        monitor=VALIDATION_MONITOR,
        early_stopping_patience=settings.early_stopping_patience,
        plateau=(
            {"factor": schedule.factor, "patience": schedule.patience}
            if schedule.kind == "plateau"
            else None
        ),
        verbose=verbose,
        images_per_step=replicas * config.data.classes_per_batch * config.data.images_per_class,
        embedded_images=len(splits.val),
        freeze_backbone_epochs=settings.freeze_backbone_epochs,
        backbone_learning_rate_multiplier=settings.backbone_learning_rate_multiplier,
    )


def apply_global_settings(settings: TrainingConfig) -> None:
    """Sets the seeds, op determinism and the mixed-precision policy of the configuration."""
    if settings.seed is not None:
        keras.utils.set_random_seed(settings.seed)
    if settings.deterministic:
        tf.config.experimental.enable_op_determinism()
    if settings.mixed_precision:
        keras.mixed_precision.set_global_policy(settings.mixed_precision)


def _steps_per_epoch(config: Config, train_records: data.Records, replicas: int) -> int:
    """Batches per epoch: configured, or one pass over the training images."""
    return config.training.steps_per_epoch or pipeline.steps_per_epoch(
        train_records,
        config.data.classes_per_batch * replicas,
        config.data.images_per_class,
    )


def _data_summary(config: DataConfig, splits: data.Split, steps: int, replicas: int) -> str:
    """One line: the split sizes and the batches of an epoch."""
    return (
        f"Data: {len(splits.train)} training images of {splits.train.num_classes} classes, "
        f"{len(splits.val)} validation images of {splits.val.num_classes} classes, "
        f"{len(splits.test)} test images of {splits.test.num_classes} classes; "
        f"{steps} steps of {replicas} x {config.classes_per_batch} x "
        f"{config.images_per_class} images an epoch."
    )


def _build_and_compile(config: Config, train_records: data.Records, steps: int) -> keras.Model:
    """The configured model, compiled for training (call inside the strategy's scope).

    Raises:
        net.config.ConfigError: the model configuration does not fit the backbone.
    """
    net = build_training_model(config, train_records)
    schedule = config.training.schedule
    compile_for_training(
        net,
        config,
        learning_rate=training.learning_rate_schedule(
            kind=schedule.kind,
            learning_rate=config.training.learning_rate,
            boundaries=schedule.boundaries,
            factor=schedule.factor,
            steps_per_epoch=steps,
        ),
    )
    return net


def build_training_model(config: Config, train_records: data.Records) -> keras.Model:
    """The configured model with its auxiliary head sized for the training records.

    Raises:
        net.config.ConfigError: the model configuration does not fit the backbone (the message
            names the configuration file).
    """
    num_classes = auxiliary_classes(config, train_records)
    try:
        return build_model(config.model, image_size=config.data.image_size, num_classes=num_classes)
    except ConfigError as error:  # e.g. model.feature_layer names no layer of the backbone
        raise ConfigError(f"{config.source}: {error}") from None


def _train_dataset_factory(
    config: Config, train_records: data.Records, replicas: int, steps: int
) -> Callable[[int], tf.data.Dataset]:
    """The function of the starting epoch that :func:`net.training.fit` draws batches from."""
    seed = config.training.seed
    global_batch = replicas * config.data.classes_per_batch * config.data.images_per_class

    def train_dataset(initial_epoch: int) -> tf.data.Dataset:
        # One stream of batches per seed: a resumed run takes it up where the interrupted one
        # stopped (every step consumes `replicas` P x K batches), so with a seed and
        # training.deterministic it trains on exactly what an uninterrupted run would.
        start = initial_epoch * steps * replicas if seed is not None else 0
        dataset = training_batches(train_records, config.data, seed=seed, start_batch=start)
        if replicas > 1:
            # Each replica takes one whole, contiguous P x K batch of the global batch.
            dataset = dataset.rebatch(global_batch)
        return dataset

    return train_dataset


def _validation(
    val_records: data.Records, config: DataConfig
) -> Callable[[keras.Model], dict[str, float]] | None:
    """The validation metrics function of :func:`net.training.fit`, or None without classes."""
    if not len(val_records):
        return None
    val_data = eval_dataset(val_records, config)

    def validate(current: keras.Model) -> dict[str, float]:
        embeddings, labels = inference.compute_embeddings(current, val_data, progress=False)
        metrics = analysis.retrieval_metrics(embeddings, labels, ks=(1,))
        return {"recall@1": metrics["recall@1"], "map@r": metrics["map@r"]}

    return validate
