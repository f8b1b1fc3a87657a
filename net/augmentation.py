"""Training augmentation settings: which operations, how likely, how strong (no TensorFlow).

``data.augment`` in ``config.yaml`` is ``true`` (:data:`DEFAULT`, the repository's long-standing
augmentations), ``false`` (none) or a mapping of operations to their settings; omitted
operations are off::

    augment:
      flip: 0.5             # probability of a horizontal flip (0 for text, logos, characters)
      scale: [0.8, 1.2]     # x and y factors, each drawn in the range
      translate: 0.1        # shift up to 10% of the side in x and y: or a range [low, high]
      rotate: 15            # angle in [-15, 15] degrees (positive: clockwise): or [low, high]
      shear: 10             # shear angle in [-10, 10] degrees: or [low, high]
      grayscale: 0.25       # probability of a blend towards gray of strength in [0.2, 1]
      max_ops: 2            # optional: at most 2 of the non-flip operations per image

A range that changes nothing (``rotate: 0``, ``scale: [1, 1]``) turns the operation off.
A number or range alone applies the operation to every image (``grayscale``'s number is its
probability, its strength range the seed's [0.2, 1]). The long form ``{p: 0.25, range: ...}``
applies it with probability ``p``; :data:`DEFAULT` is, in that form, ``flip: 0.5`` and each of
``scale: [0.8, 1.2]``, ``translate: 0.1``, ``rotate: 15``, ``shear: 10`` and
``grayscale: [0.2, 1.0]`` with ``p: 0.25``.

``max_ops: N`` is the seed repository's mode (imgaug's ``SomeOf((0, N), ...)`` followed by a
flip): each image draws a count uniformly from 0..N (N at most the number of configured non-flip
operations: a larger N is a configuration error), then that many distinct operations uniformly
at random; a chosen operation is then applied with its own ``p`` (1 in the short form). The
flip is always drawn on its own.

The operations are drawn and applied by :func:`net.augment_ops.augment_image`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

#: The operations of the mapping, flip first, in the order of :attr:`Augmentation.operations`.
OPERATIONS = ("flip", "scale", "translate", "rotate", "shear", "grayscale")
#: The operations ``max_ops`` chooses among.
CHOOSABLE = OPERATIONS[1:]


@dataclass(frozen=True)
class Augmentation:
    """Parsed augmentation settings; every probability 0 means no augmentation.

    Attributes:
        flip_p: probability of a horizontal flip.
        scale_p: probability of scaling; ``scale_range`` bounds the x and y factors (drawn
            independently).
        translate_p: probability of a shift; ``translate_range`` bounds the x and y shifts
            (independent), as fractions of the width and height.
        rotate_p: probability of a rotation; ``rotate_range`` bounds its angle in degrees.
        shear_p: probability of a shear; ``shear_range`` bounds its angle in degrees.
        grayscale_p: probability of a blend towards gray; ``grayscale_range`` bounds its
            strength (1 = fully gray).
        max_ops: ``None``, or at most this many of the non-flip operations per image (a count
            drawn uniformly from 0..max_ops, then distinct operations at random).
    """

    flip_p: float = 0.0
    scale_p: float = 0.0
    scale_range: tuple[float, float] = (1.0, 1.0)
    translate_p: float = 0.0
    translate_range: tuple[float, float] = (0.0, 0.0)
    rotate_p: float = 0.0
    rotate_range: tuple[float, float] = (0.0, 0.0)
    shear_p: float = 0.0
    shear_range: tuple[float, float] = (0.0, 0.0)
    grayscale_p: float = 0.0
    grayscale_range: tuple[float, float] = (0.2, 1.0)
    max_ops: int | None = None

    @property
    def operations(self) -> tuple[str, ...]:
        """The configured operations (probability above 0), in :data:`OPERATIONS` order."""
        return tuple(op for op in OPERATIONS if getattr(self, f"{op}_p") > 0)

    @property
    def geometric(self) -> bool:
        """Whether any operation warps the image (flip, scale, translate, rotate, shear)."""
        return any(op != "grayscale" for op in self.operations)

    def only(self, operation: str) -> Augmentation:
        """These settings with every other operation off and ``max_ops`` dropped."""
        if operation not in OPERATIONS:
            raise ValueError(f"unknown operation {operation!r}; use one of {OPERATIONS}")
        off = {f"{op}_p": 0.0 for op in OPERATIONS if op != operation}
        return dataclasses.replace(self, **off, max_ops=None)

    def describe(self) -> str:
        """One line per configured operation, e.g. ``rotate: [-15, 15] degrees, p = 0.25``."""
        if not self.operations:
            return "no augmentation"
        units = {
            "scale": "x and y factors",
            "translate": "of the side, x and y",
            "rotate": "degrees",
            "shear": "degrees",
            "grayscale": "blend strength",
        }
        lines = []
        for op in self.operations:
            p = getattr(self, f"{op}_p")
            if op == "flip":
                lines.append(f"flip: horizontal, p = {p:g}")
                continue
            low, high = getattr(self, f"{op}_range")
            lines.append(f"{op}: [{low:g}, {high:g}] {units[op]}, p = {p:g}")
        if self.max_ops is not None:
            lines.append(
                f"max_ops: at most {self.max_ops} of the non-flip operations per image "
                f"(0..{self.max_ops} drawn uniformly)"
            )
        return "\n".join(lines)


#: ``augment: true``: the repository's augmentations since the start (a flip half of the time,
#: each of scale, translate, rotate, shear and grayscale a quarter of the time).
DEFAULT = Augmentation(
    flip_p=0.5,
    scale_p=0.25,
    scale_range=(0.8, 1.2),
    translate_p=0.25,
    translate_range=(-0.1, 0.1),
    rotate_p=0.25,
    rotate_range=(-15.0, 15.0),
    shear_p=0.25,
    shear_range=(-10.0, 10.0),
    grayscale_p=0.25,
    grayscale_range=(0.2, 1.0),
)

#: Largest magnitude of each range (translate: fraction of the side; angles: degrees).
_LIMITS = {"translate": 1.0, "rotate": 180.0, "shear": 80.0}


def parse_augmentation(value: Any, where: str = "data.augment") -> Augmentation | None:
    """Validates the ``data.augment`` setting.

    Args:
        value: ``True``, ``False``/``None`` or a mapping (see the module docstring).
        where: the dotted key that error messages name.

    Returns:
        :data:`DEFAULT` for ``True``, ``None`` for ``False``/``None``, otherwise the parsed
        settings.

    Raises:
        ValueError: one line naming the dotted key: an unknown operation, a probability
            outside [0, 1], an empty or inverted range, a range past its limit.
    """
    if value is True:
        return DEFAULT
    if value is False or value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected true, false or a mapping of operations, got {value!r}")
    unknown = sorted(str(key) for key in value if key not in (*OPERATIONS, "max_ops"))
    if unknown:
        raise ValueError(
            f"{where}.{unknown[0]}: unknown operation (operations: {', '.join(OPERATIONS)}; "
            "and max_ops)"
        )
    settings: dict[str, Any] = {}
    for op in OPERATIONS:
        if op in value:
            settings.update(_parse_operation(op, value[op], f"{where}.{op}"))
    if "max_ops" in value:
        max_ops = value["max_ops"]
        if isinstance(max_ops, bool) or not isinstance(max_ops, int) or max_ops < 1:
            raise ValueError(f"{where}.max_ops: expected a positive integer, got {max_ops!r}")
        settings["max_ops"] = max_ops
    parsed = Augmentation(**settings)
    choosable = [op for op in parsed.operations if op != "flip"]
    if parsed.max_ops is not None and parsed.max_ops > len(choosable):
        raise ValueError(
            f"{where}.max_ops: {parsed.max_ops} is more than the {len(choosable)} non-flip "
            f"operations configured ({', '.join(choosable) or 'none'})"
        )
    return parsed


def as_mapping(value: Any) -> dict[str, Any]:
    """The mapping form of a ``data.augment`` value (``true`` is :data:`DEFAULT` in long form).

    So that one operation can be changed on top of ``true`` (``--set data.augment.flip=0``
    keeps the other defaults) or of ``false`` (``--set data.augment.rotate=10``: rotate only).
    A mapping is returned unchanged; :func:`parse_augmentation` of the result equals that of
    ``value``.
    """
    if isinstance(value, dict):
        return value
    augmentation = parse_augmentation(value)
    if augmentation is None:
        return {}
    mapping: dict[str, Any] = {"flip": augmentation.flip_p}
    for op in CHOOSABLE:
        p = getattr(augmentation, f"{op}_p")
        if p > 0:
            mapping[op] = {"p": p, "range": list(getattr(augmentation, f"{op}_range"))}
    if augmentation.max_ops is not None:
        mapping["max_ops"] = augmentation.max_ops
    return mapping


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{key}: expected a number, got {value!r}")
    return float(value)


def _probability(value: Any, key: str) -> float:
    p = _number(value, key)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{key}: a probability must be in [0, 1], got {value!r}")
    return p


def _pair(value: Any, key: str) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"{key}: expected a range [low, high], got {value!r}")
    low, high = (_number(v, key) for v in value)
    if low > high:
        raise ValueError(f"{key}: the range [low, high] is inverted: {value!r}")
    return low, high


def _range(op: str, value: Any, key: str) -> tuple[float, float]:
    """The range of a non-flip operation from its short form (a number or a pair)."""
    if op == "scale":
        low, high = _pair(value, key)
        if low <= 0:
            raise ValueError(f"{key}: scale factors must be positive, got {value!r}")
        return low, high
    if op == "grayscale":
        low, high = _pair(value, key)
        if low < 0 or high > 1:
            raise ValueError(f"{key}: blend strengths must be in [0, 1], got {value!r}")
        return low, high
    limit = _LIMITS[op]
    if isinstance(value, (list, tuple)):
        low, high = _pair(value, key)
    else:
        magnitude = _number(value, key)
        if magnitude < 0:
            raise ValueError(f"{key}: expected a magnitude of 0 or more, got {value!r}")
        low, high = -magnitude, magnitude
    if max(abs(low), abs(high)) > limit:
        raise ValueError(f"{key}: must stay within {limit:g} in magnitude, got {value!r}")
    return low, high


def _parse_operation(op: str, value: Any, key: str) -> dict[str, Any]:
    if op == "flip":
        return {"flip_p": _probability(value, key)}
    if isinstance(value, dict):
        unknown = sorted(str(k) for k in value if k not in ("p", "range"))
        if unknown:
            raise ValueError(f"{key}.{unknown[0]}: unknown setting (settings: p, range)")
        if "range" not in value:
            raise ValueError(f"{key}: the long form needs a range, e.g. {{p: 0.25, range: ...}}")
        p = _probability(value.get("p", 1.0), f"{key}.p")
        bounds = _range(op, value["range"], f"{key}.range")
    elif op == "grayscale":
        return {"grayscale_p": _probability(value, key)}
    else:
        p, bounds = 1.0, _range(op, value, key)
    if bounds == _IDENTITY.get(op):  # rotate: 0, scale: [1, 1]: off, as when left out
        p = 0.0
    return {f"{op}_p": p, f"{op}_range": bounds}


#: The range of each warp that leaves the image unchanged (that operation is then off).
_IDENTITY = {
    "scale": (1.0, 1.0),
    "translate": (0.0, 0.0),
    "rotate": (0.0, 0.0),
    "shear": (0.0, 0.0),
}
