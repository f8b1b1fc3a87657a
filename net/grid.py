"""The grid of a sweep: dotted keys and their values, each combination named after its settings.

``--grid KEY=V1,V2`` options and grid files become ``{dotted key: [values]}``; each key is
checked against the configuration's structure (as ``--set`` is), and each combination is a
:class:`SweepRun` whose name (``descriptors=SG+auxiliary_weight=0``) names its run directory.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from net.config import ConfigError, apply_override, parse_value

_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]+")


class SweepError(ValueError):
    """A sweep that cannot start: a bad grid, a grid file, or another sweep's folder."""


@dataclasses.dataclass(frozen=True)
class SweepRun:
    """One combination of a grid.

    Attributes:
        name: the run directory's name, made of its settings.
        settings: ``{dotted key: value}`` in the grid's order.
    """

    name: str
    settings: dict[str, Any]

    @property
    def overrides(self) -> list[str]:
        """The settings as ``KEY=VALUE`` overrides (``--set`` options)."""
        return [f"{key}={format_value(value)}" for key, value in self.settings.items()]


def format_value(value: Any) -> str:
    """A value as one line of YAML (what ``--set KEY=VALUE`` reads back to the same value)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=math.inf).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def split_values(text: str) -> list[str]:
    """Splits ``v1,v2,...`` at the commas outside brackets and braces (``[1, 2],[4]``)."""
    parts, depth, current = [], 0, []
    for char in text:
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts]


def parse_grid_option(text: str) -> tuple[str, list[Any]]:
    """One ``--grid`` option: ``KEY=V1,V2,...`` with YAML values.

    Raises:
        SweepError: no ``=``, an empty value, or a value that is not YAML; naming the key.
    """
    key, equals, values = text.partition("=")
    key = key.strip()
    if not equals or not key:
        raise SweepError(f"--grid {text}: expected KEY=V1,V2,..., e.g. model.descriptors=S,G")
    items = split_values(values)
    if any(not item for item in items):
        raise SweepError(f"--grid {text}: an empty value for {key}")
    try:
        return key, [parse_value(item, key) for item in items]
    except ConfigError as error:
        raise SweepError(str(error).replace("--set", "--grid", 1)) from error


def read_grid_file(path: str | os.PathLike) -> dict[str, list[Any]]:
    """A grid from a YAML file: ``{dotted key: [values]}`` (a single value is one choice).

    Raises:
        SweepError: the file is missing, not YAML, or not such a mapping.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as error:
        raise SweepError(f"{path}: cannot read the grid file ({error.strerror})") from error
    except yaml.YAMLError as error:
        raise SweepError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from error
    if not isinstance(raw, dict) or not raw:
        raise SweepError(f"{path}: expected a mapping of dotted keys to lists of values")
    grid = {}
    for key, values in raw.items():
        values = values if isinstance(values, list) else [values]
        if not values:
            raise SweepError(f"{path}: {key}: an empty list of values")
        # As on the command line: 1e-3 is a number.
        grid[str(key)] = [parse_value(v, key) if isinstance(v, str) else v for v in values]
    return grid


def build_grid(
    options: Sequence[str] = (), grid_file: str | os.PathLike | None = None
) -> dict[str, list[Any]]:
    """The grid of ``--grid`` options and a grid file, in order; each key checked to exist.

    Raises:
        SweepError: no grid, a key or one key's value given twice, a malformed option, or a
            key that the configuration does not have (naming it).
    """
    pairs = list(read_grid_file(grid_file).items()) if grid_file else []
    pairs += [parse_grid_option(option) for option in options]
    if not pairs:
        raise SweepError("no grid: give --grid KEY=V1,V2 (repeatable) or --grid-file FILE")
    grid: dict[str, list[Any]] = {}
    for key, values in pairs:
        if key in grid:
            raise SweepError(f"--grid: {key} is given twice")
        texts = [format_value(value) for value in values]
        twice = next((text for i, text in enumerate(texts) if text in texts[:i]), None)
        if twice is not None:  # the same run trained twice under two names
            raise SweepError(f"--grid {key}: the value {twice} is given twice")
        try:
            apply_override({}, key, values[0], source=f"--grid {key}")
        except ConfigError as error:
            raise SweepError(str(error)) from error
        grid[key] = values
    return grid


def _short_keys(keys: Sequence[str]) -> dict[str, str]:
    """Each key's last part, unless two keys share it (then the whole dotted key)."""
    last = [key.rsplit(".", 1)[-1] for key in keys]
    return {
        key: short if last.count(short) == 1 else key for key, short in zip(keys, last, strict=True)
    }


def safe_name(text: str) -> str:
    """A text fit for a folder name (characters other than letters, digits, ``._=+-`` as ``-``)."""
    return _NAME_UNSAFE.sub("-", text).strip("-") or "-"


def grid_runs(grid: Mapping[str, Sequence[Any]]) -> list[SweepRun]:
    """Every combination of the grid (the last key varying fastest), each with its name.

    A name joins ``key=value`` with ``+`` (``descriptors=SG+auxiliary_weight=0``): the key's last
    part, characters other than letters, digits, ``._=-`` replaced by ``-``; numbered when two
    combinations would share a name.
    """
    short = _short_keys(list(grid))
    runs, seen = [], set()
    for values in itertools.product(*grid.values()):
        settings = dict(zip(grid, values, strict=True))
        name = "+".join(
            f"{safe_name(short[key])}={_value_name(value)}" for key, value in settings.items()
        )
        unique, number = name, 2
        while unique in seen:
            unique, number = f"{name}+{number}", number + 1
        seen.add(unique)
        runs.append(SweepRun(unique, settings))
    return runs


def _value_name(value: Any) -> str:
    """A value in a run's name; a number keeps its sign (``-1`` is not ``1``)."""
    text = format_value(value)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return text if number and not _NAME_UNSAFE.search(text) else safe_name(text)


def default_name(grid: Mapping[str, Sequence[Any]]) -> str:
    """The sweep's default name: its keys (``descriptors+auxiliary_weight``)."""
    return "+".join(safe_name(key) for key in _short_keys(list(grid)).values())
