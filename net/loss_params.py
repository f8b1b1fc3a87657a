"""Hyperparameters of the losses: their names and checks, without TensorFlow.

:mod:`net.losses` validates every hyperparameter with these functions, and the configuration
(:mod:`net.config`) checks ``loss.params`` with :func:`check_metric_loss_params` when it is
loaded, so a bad value stops in one line before any TensorFlow is imported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

#: Weightings of the HAP2S loss.
HAP2S_WEIGHTINGS = ("exponential", "polynomial")


def check_margin(margin: float | None) -> float | None:
    """A hinge margin >= 0, or None for the soft margin.

    Raises:
        ValueError: not None and not a number >= 0.
    """
    if margin is None:
        return None
    if isinstance(margin, bool) or not isinstance(margin, int | float):
        raise ValueError(f"margin must be None (soft margin) or a float >= 0, got {margin!r}")
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0 (or None for the soft margin), got {margin!r}")
    return float(margin)


def check_positive(key: str, value: float) -> float:
    """A number > 0, named ``key`` in the error.

    Raises:
        ValueError: not a number > 0.
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{key} must be a number > 0, got {value!r}")
    return float(value)


def check_smoothing(value: float) -> float:
    """A label smoothing in [0, 1).

    Raises:
        ValueError: outside [0, 1) or not a number.
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ValueError(f"label_smoothing must be in [0, 1), got {value!r}")
    return float(value)


def check_weighting(value: str) -> str:
    """A HAP2S weighting, one of :data:`HAP2S_WEIGHTINGS`.

    Raises:
        ValueError: any other value.
    """
    if value not in HAP2S_WEIGHTINGS:
        raise ValueError(f"weighting must be one of {HAP2S_WEIGHTINGS}, got {value!r}")
    return value


#: The hyperparameters of each metric loss (the keyword arguments of its Keras loss class in
#: :data:`net.losses.METRIC_LOSSES`) and their checks.
METRIC_LOSS_PARAMS: dict[str, dict[str, Callable[[Any], Any]]] = {
    "batch_hard_triplet": {"margin": check_margin},
    "hap2s": {
        "weighting": check_weighting,
        "alpha": lambda value: check_positive("alpha", value),
        "sigma": lambda value: check_positive("sigma", value),
        "margin": check_margin,
    },
}


def check_metric_loss_params(name: str, params: Mapping[str, Any]) -> None:
    """Checks a metric loss's name and hyperparameters as its Keras loss class would.

    Args:
        name: ``"batch_hard_triplet"`` or ``"hap2s"``.
        params: its hyperparameters, e.g. ``{"margin": 0.1}``.

    Raises:
        ValueError: an unknown loss (the valid ones listed), an unknown parameter (the valid
            ones listed) or a bad value.
    """
    if name not in METRIC_LOSS_PARAMS:
        raise ValueError(
            f"unknown metric loss {name!r}: valid losses are {sorted(METRIC_LOSS_PARAMS)}"
        )
    checks = METRIC_LOSS_PARAMS[name]
    unknown = sorted(set(params) - set(checks))
    if unknown:
        raise ValueError(
            f"metric loss {name!r}: unknown parameters {unknown}; valid: {sorted(checks)}"
        )
    for key, value in params.items():
        checks[key](value)
