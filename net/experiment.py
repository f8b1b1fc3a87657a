"""From a configuration to data, model, losses and runs: the assembly the invoke tasks call.

Everything here reads a :class:`net.config.Config` once and passes explicit arguments on to the
library (:mod:`net.data`, :mod:`net.pipeline`, :mod:`net.model`, :mod:`net.losses`,
:mod:`net.training`, :mod:`net.analysis`).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
import yaml

from net import analysis, data, inference, losses, model, pipeline, runs, training
from net.backbones import UnknownLayerError
from net.callbacks import SELECTION_METRIC
from net.config import Config, ConfigError, DataConfig, ModelConfig
from net.files import atomic_write_json, atomic_write_text
from net.runs import (  # noqa: F401  (re-exported: the names the tasks and tests use)
    ModelFileError,
    latest_run_dir,
    resolve_model_path,
)
from net.torch_checkpoint import CheckpointFormatError, UnsafeCheckpointError

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


def eval_dataset(records: data.Records, config: DataConfig) -> tf.data.Dataset:
    """The evaluation pipeline of a split: every image once, in order."""
    return pipeline.eval_dataset(
        records,
        batch_size=config.eval_batch_size,
        image_size=config.image_size,
        crop_mode=config.crop,
        cache=config.cache,
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
    if config.architecture == "cgd":
        kwargs.update(
            descriptors=config.descriptors,
            gem_p=config.gem_p,
            trainable_gem_p=config.trainable_gem_p,
        )
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


def distribution_strategy(kind: str) -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy named by the configuration.

    Args:
        kind: ``default`` (the current device), ``mirrored`` (all local GPUs, or all logical
            devices) or ``multi_worker`` (workers described by the ``TF_CONFIG`` variable).
    """
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    if kind == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def worker_run_dir(strategy: tf.distribute.Strategy, run_dir: Path) -> Path:
    """Where this worker writes: the run directory on the chief, a private folder elsewhere.

    Under ``MultiWorkerMirroredStrategy`` every worker runs the same training loop and must
    save too (saving takes part in collective operations), but only the chief (the ``chief``
    task, or worker 0 when the cluster has none) writes the run directory; the other workers
    write to ``run_dir/.workers/<task>-<id>``.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_type is None:
        return run_dir
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    if resolver.task_type == "chief" or (
        not has_chief and resolver.task_type == "worker" and resolver.task_id == 0
    ):
        return run_dir
    return run_dir / ".workers" / f"{resolver.task_type}-{resolver.task_id}"


def make_run_dir(output_root: str | os.PathLike, name: str | None = None) -> Path:
    """A new run directory under ``output_root`` (named by the time unless ``name`` is given)."""
    name = name or datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(output_root) / name


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
        image_size=config.image_size,
        crop_mode=config.crop,
        augment=config.augmentation,
        seed=seed,
        cache=config.cache,
        class_sampling=config.class_sampling,
        start_batch=start_batch,
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
        verbose: Keras ``fit`` verbosity.

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


@contextlib.contextmanager
def naming_undecodable_images(paths: Callable[[], Sequence[str]], config: DataConfig):
    """Turns the pipeline's decoding error, which names no file, into one that names it.

    TensorFlow stops the input pipeline on an image it cannot decode with an op error that does
    not say which file; when that happens, every image of ``paths()`` is decoded once to find
    it (:func:`net.data.undecodable_images`).

    Raises:
        net.data.DataError: naming the undecodable images, when some are found (else the
            original error goes on).
    """
    try:
        yield
    except tf.errors.OpError:
        try:
            problems = data.undecodable_images(paths())
        except data.DataError:
            problems = []
        if not problems:
            raise
        raise data.undecodable_error(problems, skip_bad=config.skip_bad_images) from None


def _train(config: Config, run_dir: str | os.PathLike, *, verbose: int | str) -> dict:
    """:func:`train`, without the naming of undecodable images."""
    # First: a multi-worker strategy must exist before TensorFlow's runtime starts.
    strategy = distribution_strategy(config.training.distribution)
    run_dir = worker_run_dir(strategy, Path(run_dir))
    # The data first: a data set that cannot form the configured batches leaves no run behind.
    splits = load_splits(config.data)
    check_batches_fit(splits, config.data)
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_same_config(config, run_dir)
    runs.mark_run(run_dir, runs.RUN_IN_PROGRESS)
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
    tc = config.training
    if tc.seed is not None:
        keras.utils.set_random_seed(tc.seed)
    if tc.deterministic:
        tf.config.experimental.enable_op_determinism()
    if tc.mixed_precision:
        keras.mixed_precision.set_global_policy(tc.mixed_precision)
    dc = config.data
    replicas = strategy.num_replicas_in_sync
    steps = tc.steps_per_epoch or pipeline.steps_per_epoch(
        splits.train, dc.classes_per_batch * replicas, dc.images_per_class
    )
    print(
        f"Data: {len(splits.train)} training images of {splits.train.num_classes} classes, "
        f"{len(splits.val)} validation images of {splits.val.num_classes} classes, "
        f"{len(splits.test)} test images of {splits.test.num_classes} classes; "
        f"{steps} steps of {replicas} x {dc.classes_per_batch} x {dc.images_per_class} images "
        "an epoch."
    )
    with strategy.scope():
        num_classes = auxiliary_classes(config, splits.train)
        try:
            net = build_model(config.model, image_size=dc.image_size, num_classes=num_classes)
        except ConfigError as error:
            raise ConfigError(f"{config.source}: {error}") from None
        compile_for_training(
            net,
            config,
            learning_rate=training.learning_rate_schedule(
                kind=tc.schedule.kind,
                learning_rate=tc.learning_rate,
                boundaries=tc.schedule.boundaries,
                factor=tc.schedule.factor,
                steps_per_epoch=steps,
            ),
        )

    def train_dataset(initial_epoch: int) -> tf.data.Dataset:
        # One stream of batches per seed: a resumed run takes it up where the interrupted one
        # stopped (every step consumes `replicas` P x K batches), so with a seed and
        # training.deterministic it trains on exactly what an uninterrupted run would.
        start = initial_epoch * steps * replicas if tc.seed is not None else 0
        dataset = training_batches(splits.train, dc, seed=tc.seed, start_batch=start)
        if replicas > 1:
            # Each replica takes one whole, contiguous P x K batch of the global batch.
            dataset = dataset.rebatch(replicas * dc.classes_per_batch * dc.images_per_class)
        return dataset

    validate = None
    if len(splits.val):
        val_data = eval_dataset(splits.val, dc)

        def validate(current: keras.Model) -> dict[str, float]:
            embeddings, labels = inference.compute_embeddings(current, val_data, progress=False)
            metrics = analysis.retrieval_metrics(embeddings, labels, ks=(1,))
            return {"recall@1": metrics["recall@1"], "map@r": metrics["map@r"]}

    result = training.fit(
        net,
        train_dataset,
        run_dir=run_dir,
        epochs=tc.epochs,
        steps_per_epoch=steps,
        validate=validate,
        monitor=VALIDATION_MONITOR,
        early_stopping_patience=tc.early_stopping_patience,
        plateau=(
            {"factor": tc.schedule.factor, "patience": tc.schedule.patience}
            if tc.schedule.kind == "plateau"
            else None
        ),
        verbose=verbose,
        images_per_step=replicas * dc.classes_per_batch * dc.images_per_class,
        embedded_images=len(splits.val),
        freeze_backbone_epochs=tc.freeze_backbone_epochs,
        backbone_learning_rate_multiplier=tc.backbone_learning_rate_multiplier,
    )
    best = keras.saving.load_model(run_dir / "best.keras")
    metrics = evaluate(best, splits.test, config)
    summary = {
        "test": metrics,
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


def evaluate(
    net: keras.Model,
    records: data.Records,
    config: Config,
    progress: bool = True,
    *,
    ranking: bool = False,
):
    """Retrieval metrics of a model on a split.

    The split is both query set and gallery (each query excluded from its own neighbours),
    unless its records mark queries and gallery items (In-shop's test split): then its
    queries search its gallery, as the data set's protocol prescribes.

    Returns:
        ``{"recall@1": ..., "precision@1": ..., "r_precision": ..., "map@r": ...,
        "num_queries": ..., "embedding_dim": ...}``, plus ``num_gallery`` for a query/gallery
        split and ``average_ranking_position`` with ``ranking``.
    """
    with naming_undecodable_images(lambda: records.paths.tolist(), config.data):
        embeddings, labels = embed(net, records, config.data, progress)
    return split_metrics(records, embeddings, labels, config, ranking=ranking)


def split_metrics(
    records: data.Records,
    embeddings: np.ndarray,
    labels: np.ndarray,
    config: Config,
    *,
    ranking: bool = False,
) -> dict:
    """Retrieval metrics of a split's embeddings (in record order), by the split's protocol.

    Args:
        records: the split (its ``roles`` say which images are queries and gallery items).
        embeddings: (N, D) embeddings of ``records``, in order.
        labels: (N,) their labels.
        config: the configuration (``evaluation`` section).
        ranking: also the average ranking position (ranks the whole gallery).
    """
    options = {
        "ks": tuple(config.evaluation.ks),
        "block_size": config.evaluation.block_size,
        "method": config.evaluation.method,
        "ranking": ranking,
    }
    if not records.has_query_gallery:
        return analysis.retrieval_metrics(embeddings, labels, **options)
    query = records.roles != data.ROLE_GALLERY
    gallery = records.roles != data.ROLE_QUERY
    metrics = analysis.retrieval_metrics(
        embeddings[gallery],
        labels[gallery],
        query_embeddings=embeddings[query],
        query_labels=labels[query],
        **options,
    )
    metrics["num_gallery"] = int(gallery.sum())
    return metrics


def embed(
    net: keras.Model, records: data.Records, config: DataConfig, progress: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and labels of every image of a split, in order."""
    return inference.embed_records(
        net,
        records,
        image_size=config.image_size,
        crop_mode=config.crop,
        batch_size=config.eval_batch_size,
        cache=config.cache,
        progress=progress,
    )


class RunDirectoryError(ValueError):
    """A run directory that cannot be resumed with the given configuration."""


def _check_same_config(config: Config, run_dir: Path) -> None:
    """Saves the resolved configuration; a resumed run must use the same one.

    Only ``training.epochs`` may differ: asking for more epochs extends a finished run.

    Raises:
        RunDirectoryError: the run directory was started with another configuration.
    """
    path = run_dir / "config.yaml"
    current = config.to_dict()
    if path.exists():
        previous = yaml.safe_load(path.read_text())
        changed = sorted(
            f"{section}.{key}"
            for section in current
            for key in current[section]
            if previous.get(section, {}).get(key) != current[section][key]
            and f"{section}.{key}" != "training.epochs"
        )
        if changed:
            raise RunDirectoryError(
                f"{run_dir} was started with another configuration (differences: "
                f"{', '.join(changed)}); use a new run directory or the same configuration"
            )
    atomic_write_text(path, yaml.safe_dump(current, sort_keys=False))


def load_model(path: str | os.PathLike, image_size: int | None = None) -> keras.Model:
    """Loads a saved model of this repository (safe mode, no custom objects needed).

    Args:
        path: a ``.keras`` file or a run directory (its ``best.keras``).
        image_size: the side of the images it will be given; a model with a fixed input of
            another size is refused.

    Raises:
        ModelFileError: the file is missing, not a loadable ``.keras`` model, has no
            ``embeddings`` output, or takes images of another size than ``image_size``.
    """
    path = resolve_model_path(path)
    if not zipfile.is_zipfile(path):  # Keras would say "File not found" of a corrupt file.
        raise ModelFileError(f"cannot load the model {path}: not a .keras file (not a zip archive)")
    try:
        net = keras.saving.load_model(path)
    except Exception as error:  # Keras raises many kinds (ValueError, OSError, zipfile...)
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ModelFileError(
            f"cannot load the model {path}: {type(error).__name__}{': ' + reason if reason else ''}"
        ) from error
    check_model(net, path, image_size)
    return net


def check_model(net: keras.Model, path: str | os.PathLike, image_size: int | None) -> None:
    """Refuses a model that is not an embedding model of ``image_size`` px images.

    Raises:
        ModelFileError: it has no ``embeddings`` output, not one (B, H, W, 3) input, or a fixed
            input size other than ``image_size``.
    """
    if "embeddings" not in getattr(net, "output_names", []):
        raise ModelFileError(
            f"the model {path} has no 'embeddings' output (outputs: "
            f"{', '.join(net.output_names) or 'none'}); not an embedding model of this repository"
        )
    shapes = [tuple(x.shape) for x in net.inputs]
    if len(shapes) != 1 or len(shapes[0]) != 4 or shapes[0][3] not in (None, 3):
        raise ModelFileError(f"the model {path} takes {shapes}, not one (B, H, W, 3) image input")
    height, width = shapes[0][1:3]
    if image_size is not None and (height, width) not in (
        (None, None),
        (image_size, image_size),
    ):
        raise ModelFileError(
            f"the model {path} takes {height}x{width} images but data.image_size is "
            f"{image_size}; evaluate it at its size (--set data.image_size={height})"
        )


def evaluate_query_gallery(
    net: keras.Model,
    queries: str | os.PathLike,
    gallery: str | os.PathLike,
    config: Config,
    progress: bool = True,
    *,
    ranking: bool = False,
) -> dict:
    """Retrieval metrics of a separate query set against a gallery (In-shop style).

    Args:
        net: the model.
        queries: CSV manifest of the query images.
        gallery: CSV manifest of the gallery images.
        config: the configuration (image size, crop, batch size, metrics).
        progress: show progress bars.
        ranking: also the average ranking position (ranks the whole gallery).
    """
    query_records = data.read_dataset("csv", queries, skip_bad=config.data.skip_bad_images)
    gallery_records = data.read_dataset("csv", gallery, skip_bad=config.data.skip_bad_images)
    query_embeddings, query_labels = embed(net, query_records, config.data, progress)
    gallery_embeddings, gallery_labels = embed(net, gallery_records, config.data, progress)
    # Labels are per-manifest indices; compare by class name so both manifests agree.
    names = sorted(set(query_records.class_names) | set(gallery_records.class_names))
    index = {name: i for i, name in enumerate(names)}
    query_labels = np.array([index[query_records.class_names[i]] for i in query_labels])
    gallery_labels = np.array([index[gallery_records.class_names[i]] for i in gallery_labels])
    return analysis.retrieval_metrics(
        gallery_embeddings,
        gallery_labels,
        ks=tuple(config.evaluation.ks),
        query_embeddings=query_embeddings,
        query_labels=query_labels,
        block_size=config.evaluation.block_size,
        method=config.evaluation.method,
        ranking=ranking,
    )
