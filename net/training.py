"""Compiling and fitting an embedding model: optimiser, schedule, callbacks, resume.

These functions take explicit arguments; :mod:`net.experiment` assembles them from a
configuration.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from net import callbacks as run_callbacks
from net import finetuning
from net.files import atomic_write_json as write_json  # noqa: F401 (public name)
from net.files import remove_temporary_files
from net.multi_worker import fit_multi_worker


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the run directory keeps the last good model."""


@dataclass
class FitResult:
    """What a training run produced.

    Attributes:
        run_dir: the run directory.
        epochs_done: epochs completed, counting those of an interrupted run resumed here.
        initial_epoch: the epoch this call started from (0 for a fresh run).
        best_epoch: the epoch of ``best.keras`` (1-based).
        best_score: its monitored validation score, or ``None`` without validation.
        stopped_early: whether early stopping ended the run.
        history: the per-epoch logs of this call.
    """

    run_dir: Path
    epochs_done: int
    initial_epoch: int
    best_epoch: int | None
    best_score: float | None
    stopped_early: bool
    history: dict[str, list[float]] = field(default_factory=dict)


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


def learning_rate_schedule(
    *,
    kind: str,
    learning_rate: float,
    boundaries: list[int],
    factor: float,
    steps_per_epoch: int,
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The learning rate to give the optimiser.

    The step schedule counts optimiser iterations, which are saved with the optimiser's state, so
    a resumed run continues on the same schedule.

    Args:
        kind: ``constant``, ``step`` or ``plateau`` (a constant the plateau callback lowers).
        learning_rate: the initial learning rate.
        boundaries: epochs at which the step schedule multiplies the rate by ``factor``.
        factor: the decay factor.
        steps_per_epoch: batches per epoch.

    Returns:
        A float or a Keras learning-rate schedule.
    """
    if kind != "step":
        return learning_rate
    values = [learning_rate * factor**i for i in range(len(boundaries) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(
        boundaries=[b * steps_per_epoch for b in boundaries], values=values
    )


def compile_model(
    model: keras.Model,
    *,
    metric_loss: keras.losses.Loss,
    auxiliary_loss: keras.losses.Loss | None,
    auxiliary_weight: float,
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule,
    weight_decay: float = 0.0,
    jit_compile: bool = False,
    backbone_learning_rate_multiplier: float = 1.0,
) -> None:
    """Compiles an embedding model with Adam (AdamW with weight decay) and its losses.

    Args:
        model: a model whose outputs are a dict with ``embeddings`` and, when it has an
            auxiliary head, ``logits``.
        metric_loss: the loss on the embeddings.
        auxiliary_loss: the loss on the logits, used when the model has them.
        auxiliary_weight: weight of the auxiliary loss.
        learning_rate: float or schedule.
        weight_decay: decoupled weight decay; 0 uses plain Adam.
        jit_compile: XLA-compile the train step.
        backbone_learning_rate_multiplier: the backbone learns at this times the learning rate
            (updates and weight decay alike; see :mod:`net.finetuning`); 0 leaves it unchanged
            (:func:`fit` also freezes it then).
    """
    multiplier = finetuning.check_multiplier(backbone_learning_rate_multiplier)
    scaled = multiplier != 1.0
    if weight_decay > 0:
        adamw = finetuning.ScaledAdamW if scaled else keras.optimizers.AdamW
        optimizer = adamw(learning_rate=learning_rate, weight_decay=weight_decay)
    else:
        adam = finetuning.ScaledAdam if scaled else keras.optimizers.Adam
        optimizer = adam(learning_rate=learning_rate)
    if scaled:
        backbone = finetuning.backbone_layer(model)
        optimizer.set_learning_rate_multiplier(backbone.trainable_variables, multiplier)
    losses = {"embeddings": metric_loss}
    weights = {"embeddings": 1.0}
    if "logits" in output_names(model):
        if auxiliary_loss is None:
            raise ValueError("the model has an auxiliary 'logits' output but no auxiliary loss")
        losses["logits"] = auxiliary_loss
        weights["logits"] = float(auxiliary_weight)
    model.compile(optimizer=optimizer, loss=losses, loss_weights=weights, jit_compile=jit_compile)
    # Creating the optimiser's variables before the first traced step halves tracing time.
    # Built with every variable, the backbone's included even when it is frozen for a while,
    # so that the optimiser's state has the same variables in every epoch.
    optimizer.build(model.trainable_variables)


def output_names(model: keras.Model) -> list[str]:
    """Names of a model's dict outputs."""
    outputs = model.output
    return list(outputs) if isinstance(outputs, dict) else list(model.output_names)


def with_targets(dataset: tf.data.Dataset, names: list[str]) -> tf.data.Dataset:
    """Maps ``(images, labels)`` batches to ``(images, {name: labels})`` for each output."""
    return dataset.map(
        lambda images, labels: (images, {name: labels for name in names}),
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def fit(
    model: keras.Model,
    train_dataset: Callable[[int], tf.data.Dataset],
    *,
    run_dir: str | os.PathLike,
    epochs: int,
    steps_per_epoch: int,
    validate: Callable[[keras.Model], dict[str, float]] | None = None,
    monitor: str = run_callbacks.SELECTION_METRIC,
    early_stopping_patience: int = 0,
    plateau: dict[str, Any] | None = None,
    verbose: int | str = "auto",
    images_per_step: int | None = None,
    embedded_images: int = 0,
    freeze_backbone_epochs: int = 0,
    backbone_learning_rate_multiplier: float = 1.0,
) -> FitResult:
    """Trains a compiled model, resuming an interrupted run in the same directory.

    Args:
        model: the compiled model.
        train_dataset: function of the starting epoch (the number of epochs already done)
            returning an endless dataset of ``(images, labels)`` P x K batches that starts where
            an uninterrupted run would be at that epoch, so a resumed run trains on the batches
            it would have seen.
        run_dir: the run directory (created if needed).
        epochs: total epochs, counting those already done by an interrupted run.
        steps_per_epoch: batches per epoch.
        validate: function returning validation metrics (e.g. ``{"recall@1": 0.8}``) of the
            current model, or ``None`` for no validation (the best model is then the last).
        monitor: the validation metric to maximise for model selection and early stopping
            (a key of what ``validate`` returns).
        early_stopping_patience: epochs without improvement before stopping; 0 never stops.
        plateau: ``{"factor": f, "patience": p}`` to lower the learning rate when the
            validation metric stalls, or ``None``.
        verbose: ``"auto"``: a progress bar on a terminal, otherwise one plain line per epoch
            (CI logs, output sent to a file); ``"line"``: one line per epoch; or a Keras
            ``fit`` verbosity (0 silent, 1 progress bar, 2 Keras' line per epoch).
        images_per_step: images of one step (the global batch), to log the training images/s;
            ``None`` logs no throughput.
        embedded_images: images ``validate`` embeds, to log the embedding images/s.
        freeze_backbone_epochs: epochs at the start that train only the heads.
        backbone_learning_rate_multiplier: the multiplier the model was compiled with (see
            :func:`compile_model`); 0 keeps the backbone frozen for the whole run.

    Returns:
        What the run produced.

    Raises:
        TrainingDivergedError: the loss became non-finite; the run directory keeps the last
            good epoch's models and state.
    """
    run_dir = Path(run_dir)
    state, initial_epoch = _resume(model, run_dir, epochs)
    if initial_epoch >= epochs:
        print(f"{run_dir} has already completed {initial_epoch} epochs; nothing to train.")
        return _result(run_dir, state, initial_epoch, initial_epoch, False, {})
    run_callbacks.truncate_csv_log(run_dir / run_callbacks.LOG_FILE, initial_epoch)
    nan_guard = run_callbacks.NaNGuard()
    callback_list = _step_callbacks(
        nan_guard,
        validate,
        images_per_step=images_per_step,
        embedded_images=embedded_images,
        freeze_backbone_epochs=freeze_backbone_epochs,
        backbone_learning_rate_multiplier=backbone_learning_rate_multiplier,
    )
    selection, checkpoint = _selection_callbacks(
        run_dir, state, nan_guard, validate, monitor, early_stopping_patience, plateau
    )
    callback_list += selection
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else "line"
    if verbose == "line":
        callback_list.append(run_callbacks.EpochLine())  # Last: it prints what the others logged.
        verbose = 0
    dataset = with_targets(train_dataset(initial_epoch), output_names(model))
    history = _fit_function(model)(
        dataset,
        epochs=epochs,
        initial_epoch=initial_epoch,
        steps_per_epoch=steps_per_epoch,
        callbacks=callback_list,
        verbose=verbose,
    )
    _raise_if_diverged(nan_guard, run_dir)
    final_state = run_callbacks.read_state(run_dir)
    epochs_done = final_state["epoch"] if final_state else initial_epoch
    return _result(
        run_dir,
        final_state,
        initial_epoch,
        epochs_done,
        checkpoint.stopped_early,
        {key: [float(v) for v in values] for key, values in history.history.items()},
    )


def _resume(model: keras.Model, run_dir: Path, epochs: int) -> tuple[dict[str, Any] | None, int]:
    """Prepares a run directory and restores the model of the run interrupted in it, if any.

    Creates the directory, removes what an interrupted process left (:func:`clean_run_dir`) and
    rewrites the model's weights and optimiser state from the committed state.

    Args:
        model: the compiled model.
        run_dir: the run directory.
        epochs: total epochs of the run (for the message).

    Returns:
        The committed state (``None`` for a fresh run) and the number of epochs already done.

    Raises:
        net.callbacks.RunSaveError: the models could not be rewritten from the state.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    state = run_callbacks.read_state(run_dir)
    clean_run_dir(run_dir, state)
    if state is None:
        return None, 0
    try:
        run_callbacks.restore_state(model, run_dir, state)
    except OSError as error:
        reason = error.strerror or str(error)
        raise run_callbacks.RunSaveError(
            f"could not rewrite the models of {run_dir} from its state ({reason})"
        ) from None
    initial_epoch = int(state["epoch"])
    print(f"Resuming {run_dir} after epoch {initial_epoch} of {epochs}.")
    return state, initial_epoch


def _step_callbacks(
    nan_guard: run_callbacks.NaNGuard,
    validate: Callable[[keras.Model], dict[str, float]] | None,
    *,
    images_per_step: int | None,
    embedded_images: int,
    freeze_backbone_epochs: int,
    backbone_learning_rate_multiplier: float,
) -> list[keras.callbacks.Callback]:
    """The callbacks that act in an epoch and log its numbers, in the order they must run.

    The NaN guard first, then backbone freezing, validation, throughput (right after the
    validation, whose embedding extraction it times) and the learning rate.

    Args:
        nan_guard: the guard that stops training on a non-finite loss.
        validate: as in :func:`fit`.
        images_per_step: as in :func:`fit`.
        embedded_images: as in :func:`fit`.
        freeze_backbone_epochs: as in :func:`fit`.
        backbone_learning_rate_multiplier: as in :func:`fit`.

    Returns:
        The callbacks.
    """
    callback_list: list[keras.callbacks.Callback] = [nan_guard]
    if freeze_backbone_epochs or backbone_learning_rate_multiplier == 0:
        callback_list.append(
            finetuning.FreezeBackbone(freeze_backbone_epochs, backbone_learning_rate_multiplier)
        )
    if validate is not None:
        callback_list.append(run_callbacks.ValidationMetrics(validate, guard=nan_guard))
    if images_per_step:
        # Right after the validation, whose embedding extraction it times.
        callback_list.append(
            run_callbacks.Throughput(
                images_per_step, embedded_images if validate is not None else 0
            )
        )
    callback_list.append(run_callbacks.LearningRateLogger())
    return callback_list


def _selection_callbacks(
    run_dir: Path,
    state: dict[str, Any] | None,
    nan_guard: run_callbacks.NaNGuard,
    validate: Callable[[keras.Model], dict[str, float]] | None,
    monitor: str,
    early_stopping_patience: int,
    plateau: dict[str, Any] | None,
) -> tuple[list[keras.callbacks.Callback], run_callbacks.RunCheckpoint]:
    """The callbacks that act on the validation score and commit each epoch, in their order.

    The learning-rate plateau (with validation), the checkpoint (best and last models, the
    resumable state, early stopping, ``log.csv``) and TensorBoard.

    Args:
        run_dir: the run directory.
        state: the committed state of an interrupted run, or ``None``.
        nan_guard: the guard that stops training on a non-finite loss.
        validate: as in :func:`fit`.
        monitor: as in :func:`fit`.
        early_stopping_patience: as in :func:`fit`.
        plateau: as in :func:`fit`.

    Returns:
        The callbacks and the checkpoint callback among them.
    """
    monitored = f"val_{monitor}" if validate else None
    components = {}
    callback_list: list[keras.callbacks.Callback] = []
    if plateau and validate is not None:
        components["plateau"] = run_callbacks.ResumablePlateau(
            monitor=monitored,
            mode="max",
            factor=plateau["factor"],
            patience=plateau["patience"],
            verbose=1,
        )
        callback_list.append(components["plateau"])
    checkpoint = run_callbacks.RunCheckpoint(
        run_dir,
        monitor=monitored,
        patience=early_stopping_patience if validate else 0,
        state=state,
        components=components,
        guard=nan_guard,
    )
    callback_list += [
        checkpoint,  # writes log.csv's row with the state it commits
        run_callbacks.EpochTensorBoard(log_dir=str(run_dir / "tensorboard"), write_graph=False),
    ]
    return callback_list, checkpoint


def _fit_function(model: keras.Model) -> Callable[..., keras.callbacks.History]:
    """``model.fit``, or the replacement loop under ``MultiWorkerMirroredStrategy``."""
    if isinstance(model.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return functools.partial(fit_multi_worker, model)
    return functools.partial(model.fit, shuffle=False)  # the sampler already shuffles


def _raise_if_diverged(nan_guard: run_callbacks.NaNGuard, run_dir: Path) -> None:
    """Raises :class:`TrainingDivergedError` if the guard stopped training on a bad loss."""
    if nan_guard.failure is None:
        return
    failure = nan_guard.failure
    kept = run_dir / "last.keras"
    where = f"{kept}" if kept.exists() else "nothing (no epoch had completed)"
    raise TrainingDivergedError(
        f"training diverged: the loss became {failure['loss']} at epoch {failure['epoch']}, "
        f"batch {failure['batch']}; kept the last good model: {where}. Lower the learning "
        "rate or check the data."
    )


def clean_run_dir(run_dir: Path, state: dict[str, Any] | None) -> list[Path]:
    """Removes what an interrupted process left in its run directory and its ``state/``.

    Temporary files of interrupted writes (:func:`net.files.remove_temporary_files`) and epoch
    weights that no committed state names. Other workers' folders are left alone.

    Returns:
        The files removed.
    """
    removed = remove_temporary_files(run_dir) + remove_temporary_files(run_dir / "state")
    kept = state["weights"] if state else None
    for path in sorted((run_dir / "state").glob("epoch-*.weights.h5")):
        if path.name != kept:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _result(run_dir, state, initial_epoch, epochs_done, stopped_early, history) -> FitResult:
    state = state or {}
    return FitResult(
        run_dir=run_dir,
        epochs_done=epochs_done,
        initial_epoch=initial_epoch,
        best_epoch=state.get("best_epoch"),
        best_score=state.get("best"),
        stopped_early=stopped_early,
        history=history,
    )
