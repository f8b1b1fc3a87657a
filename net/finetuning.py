"""Fine-tuning a pretrained backbone: a slower learning rate for it, or freezing it.

Two knobs, as is common when fine-tuning an ImageNet backbone on a small data set:

- a learning-rate multiplier for the backbone's variables (0.1: the backbone learns ten times
  slower than the heads; 0: it is frozen), applied by :class:`ScaledAdam` / :class:`ScaledAdamW`,
  which multiply the learning rate of each update (and of the decoupled weight decay) by the
  variable's multiplier. Scaling the gradients instead would do nothing under Adam, whose steps
  do not depend on the gradients' scale;
- freezing the backbone for the first epochs (:class:`FreezeBackbone`): the backbone is set
  non-trainable, so it gets no gradients and its BatchNormalization layers use and keep their
  moving statistics (Keras runs a non-trainable BatchNormalization in inference mode); then
  the whole model trains. Whether an epoch is frozen depends only on its number, so a resumed
  run freezes exactly as an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import keras


def backbone_layer(model: keras.Model) -> keras.Layer:
    """The backbone of a model of :mod:`net.model`: its one nested model.

    Raises:
        ValueError: the model does not hold exactly one nested model.
    """
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(nested) != 1:
        raise ValueError(
            f"model {model.name!r} should hold one backbone (a nested model), found "
            f"{[layer.name for layer in nested]}"
        )
    return nested[0]


def check_multiplier(multiplier: float) -> float:
    """A learning-rate multiplier, checked: a finite number >= 0.

    Raises:
        ValueError: it is negative, not finite or not a number.
    """
    if isinstance(multiplier, bool) or not isinstance(multiplier, (int, float)):
        raise ValueError(f"learning-rate multiplier must be a number, got {multiplier!r}")
    if not math.isfinite(multiplier) or multiplier < 0:
        raise ValueError(f"learning-rate multiplier must be finite and >= 0, got {multiplier!r}")
    return float(multiplier)


class _ScaledUpdates:
    """Mixin for a Keras optimizer: per-variable learning-rate multipliers.

    A variable with multiplier ``m`` is updated as by the plain optimizer with learning rate
    ``m * lr``: the update step, and the decoupled weight decay ``lr * wd * variable``, are both
    scaled. A multiplier of 0 leaves the variable and its optimizer slots untouched. Variables
    without a multiplier use 1.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._multipliers: dict[object, float] = {}

    def set_learning_rate_multiplier(self, variables: Iterable, multiplier: float) -> None:
        """Gives ``variables`` the learning-rate multiplier ``multiplier`` (>= 0)."""
        multiplier = check_multiplier(multiplier)
        for variable in variables:
            self._multipliers[self._var_key(variable)] = multiplier

    def learning_rate_multiplier(self, variable) -> float:
        """The multiplier of a variable (1 when none was set)."""
        return self._multipliers.get(self._var_key(variable), 1.0)

    def _use_weight_decay(self, variable) -> bool:
        # Scaled variables get their (scaled) decay in update_step instead.
        if self.learning_rate_multiplier(variable) != 1.0:
            return False
        return super()._use_weight_decay(variable)

    def update_step(self, gradient, variable, learning_rate):
        multiplier = self.learning_rate_multiplier(variable)
        if multiplier == 1.0:
            return super().update_step(gradient, variable, learning_rate)
        if multiplier == 0.0:
            return None
        learning_rate = keras.ops.cast(learning_rate, variable.dtype) * multiplier
        if self.weight_decay is not None and super()._use_weight_decay(variable):
            decay = keras.ops.cast(self.weight_decay, variable.dtype)
            self.assign_sub(variable, variable * decay * learning_rate)
        return super().update_step(gradient, variable, learning_rate)


class ScaledAdam(_ScaledUpdates, keras.optimizers.Adam):
    """Adam with per-variable learning-rate multipliers (see :class:`_ScaledUpdates`)."""


class ScaledAdamW(_ScaledUpdates, keras.optimizers.AdamW):
    """AdamW with per-variable learning-rate multipliers (see :class:`_ScaledUpdates`)."""


def backbone_frozen(epoch: int, *, freeze_epochs: int, multiplier: float) -> bool:
    """Whether the backbone is frozen during an epoch (counted from 0, as Keras does).

    Args:
        epoch: the epoch.
        freeze_epochs: epochs at the start that train only the heads.
        multiplier: the backbone's learning-rate multiplier; 0 freezes it for good.
    """
    return multiplier == 0 or epoch < freeze_epochs


def set_backbone_trainable(model: keras.Model, trainable: bool) -> bool:
    """Makes the backbone trainable or frozen; returns whether that changed anything.

    A frozen backbone gets no gradients and its BatchNormalization layers run in inference
    mode (their moving statistics are used and stay as they are).
    """
    backbone = backbone_layer(model)
    if backbone.trainable == trainable:
        return False
    backbone.trainable = trainable
    return True


class FreezeBackbone(keras.callbacks.Callback):
    """Freezes the backbone during the first ``freeze_epochs`` epochs, then trains everything.

    A backbone whose learning-rate multiplier is 0 stays frozen for good.
    The state is set at the start of every epoch from the epoch's number, so a run resumed at
    any epoch is frozen or not exactly as it would have been. When the set of trainable
    variables changes, Keras' train function is rebuilt (it is traced for one set).

    The optimizer must have been built with every variable, backbone included (as
    :func:`net.training.compile_model` does), so that its state covers the backbone in both
    phases.

    Args:
        freeze_epochs: epochs at the start that train only the heads.
        multiplier: the backbone's learning-rate multiplier.
    """

    def __init__(self, freeze_epochs: int = 0, multiplier: float = 1.0):
        super().__init__()
        self.freeze_epochs = int(freeze_epochs)
        self.multiplier = check_multiplier(multiplier)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        frozen = backbone_frozen(
            epoch, freeze_epochs=self.freeze_epochs, multiplier=self.multiplier
        )
        if set_backbone_trainable(self.model, not frozen):
            self.model.make_train_function(force=True)
