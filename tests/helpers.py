"""What several test modules share: a demo run shrunk to seconds, invoke in-process, and the
long form of the default augmentation."""

from __future__ import annotations

import pytest

#: The data options that shrink a demo run to seconds: 32 px, P x K = 2 x 2, two validation
#: classes, small evaluation batches.
TINY_DATA = {
    "image_size": 32,
    "num_val_classes": 2,
    "classes_per_batch": 2,
    "images_per_class": 2,
    "eval_batch_size": 16,
}

#: ``data.augment: true`` written out in the long form, operation by operation.
DEFAULT_AUGMENT_LONG_FORM = {
    "flip": 0.5,
    "scale": {"p": 0.25, "range": [0.8, 1.2]},
    "translate": {"p": 0.25, "range": 0.1},
    "rotate": {"p": 0.25, "range": 15},
    "shear": {"p": 0.25, "range": 10},
    "grayscale": {"p": 0.25, "range": [0.2, 1.0]},
}


def _program():
    """invoke's program over this repository's tasks (imported on first use)."""
    from invoke import Program

    from tasks.collection import ns

    return Program(namespace=ns)


def run_task(*argv: str) -> None:
    """Runs invoke in this process (TensorFlow is imported once for all tasks)."""
    _program().run(["invoke", *argv], exit=False)


def failing_task(*argv: str) -> int:
    """Runs invoke in this process, expecting the task to stop; returns its exit code."""
    with pytest.raises(SystemExit) as info:
        _program().run(["invoke", *argv])
    return info.value.code


def compiled_triplet_model(model_config, *, learning_rate: float):
    """The configured model at 32 px without a classification head, compiled with the
    batch-hard triplet loss (margin 0.1) alone."""
    from net import experiment, losses, training

    model = experiment.build_model(model_config, image_size=32, num_classes=0)
    training.compile_model(
        model,
        metric_loss=losses.build_metric_loss("batch_hard_triplet", margin=0.1),
        auxiliary_loss=None,
        auxiliary_weight=0.0,
        learning_rate=learning_rate,
    )
    return model
