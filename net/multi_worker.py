"""The training loop under ``MultiWorkerMirroredStrategy``, which Keras 3's own ``fit`` cannot run.

:func:`net.training.fit` uses :func:`fit_multi_worker` in place of ``model.fit`` when the model
was built under that strategy (keras-team/keras#20585); everywhere else it uses ``model.fit``.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def fit_multi_worker(
    model: keras.Model,
    dataset: tf.data.Dataset,
    *,
    epochs: int,
    initial_epoch: int,
    steps_per_epoch: int,
    callbacks: list[keras.callbacks.Callback],
    verbose: int | str,
) -> keras.callbacks.History:
    """``model.fit`` for ``MultiWorkerMirroredStrategy``, which Keras 3's own ``fit`` cannot run.

    Keras 3.15's ``fit`` fails under that strategy (keras-team/keras#20585): it reduces a
    distributed input batch eagerly to build the model, then reduces scalar step outputs along
    an axis they do not have. This loop runs Keras' own ``train_step`` (the same losses, loss
    weights, per-replica loss scaling and optimizer) on every replica with ``strategy.run``,
    averages the logs over replicas, and drives the same callbacks.

    Args:
        model: the compiled model, built under the strategy's scope.
        dataset: the global-batch training dataset (endless).
        epochs: last epoch (exclusive), as in ``fit``.
        initial_epoch: first epoch, as in ``fit``.
        steps_per_epoch: batches per epoch.
        callbacks: the callbacks, as given to ``fit``.
        verbose: 0 for silence; otherwise a progress bar.

    Returns:
        The History callback, as ``fit`` returns it.
    """
    strategy = model.distribute_strategy
    distributed = strategy.experimental_distribute_dataset(dataset)
    iterator = iter(distributed)
    local_batch = next(iter(dataset))
    with strategy.scope():
        model._symbolic_build(data_batch=local_batch)  # what fit's broken reduce would do

    def make_train_step():
        @tf.function
        def train_step(batch):
            logs = strategy.run(model.train_step, args=(batch,))
            return {name: strategy.reduce("MEAN", value, axis=None) for name, value in logs.items()}

        return train_step

    def trainable() -> list[int]:
        return [id(variable) for variable in model.trainable_variables]

    callback_list = keras.callbacks.CallbackList(
        callbacks,
        add_history=True,
        add_progbar=verbose != 0,
        verbose=1 if verbose == "auto" else verbose,
        epochs=epochs,
        steps=steps_per_epoch,
        model=model,
    )
    model.stop_training = False
    callback_list.on_train_begin()
    logs: dict[str, float] = {}
    train_step, traced_for = None, None
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        if trainable() != traced_for:  # The first epoch, or the backbone was (un)frozen.
            train_step, traced_for = make_train_step(), trainable()
        for step in range(steps_per_epoch):
            callback_list.on_train_batch_begin(step)
            logs = {name: float(value) for name, value in train_step(next(iterator)).items()}
            callback_list.on_train_batch_end(step, logs)
            if model.stop_training:
                break
        epoch_logs = dict(logs)
        callback_list.on_epoch_end(epoch, epoch_logs)
        if model.stop_training:
            break
    callback_list.on_train_end(logs)
    return model.history
