"""Typed, validated configuration.

``config.yaml`` is read once, at the edge (the invoke tasks), into the frozen dataclasses of
:mod:`net.config_schema` (re-exported here); library functions receive their explicit arguments,
never the raw dictionary.

A configuration file holds the full setup at its top level and, optionally, named ``profiles``:
partial overlays merged over the top level (``load_config(path, profile="demo")``). Command-line
overrides (``--set model.descriptors=SMG``: a dotted key and a YAML value) are applied after the
profile (``load_config(path, profile, overrides=["model.descriptors=SMG"])``). Every error (an
unknown key, a missing key, a wrong type, an impossible value) raises one :class:`ConfigError`
whose message names the file and the dotted key.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from net.augmentation import as_mapping
from net.config_schema import (  # noqa: F401 (re-exported: the schema lives there)
    Config,
    DataConfig,
    EvaluationConfig,
    LossConfig,
    ModelConfig,
    OutputConfig,
    ScheduleConfig,
    TrainingConfig,
    check_values,
)

#: Mappings that an overlay replaces whole instead of merging into: a loss's parameters, and
#: the augmentation operations (an operation left out of an overlay's mapping is off).
REPLACED = ("params", "augment")


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the file and the key."""


def load_config(
    path: str | os.PathLike,
    profile: str | None = None,
    overrides: typing.Sequence[str] = (),
) -> Config:
    """Reads, merges and validates a configuration file.

    Relative data and output paths (also those given as overrides) are resolved against the
    configuration file's folder, so a run behaves the same from any working directory.

    Args:
        path: the YAML file.
        profile: name of an overlay under the file's ``profiles`` key, or ``None``.
        overrides: ``KEY=VALUE`` strings (see :func:`parse_override`), applied in order after
            the profile.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: the file is missing or not YAML, the profile is unknown, or a value is
            invalid; the message names the file and the key.
    """
    path = Path(path)
    raw = read_raw(path, profile, overrides)
    source = f"{path}" + (f" (profile {profile})" if profile else "")
    if overrides:
        source += " with --set " + " ".join(overrides)
    config = config_from_dict(raw, source=source)
    base = path.resolve().parent
    data = dataclasses.replace(config.data, root=str(_resolve(base, config.data.root)))
    output = dataclasses.replace(config.output, root=str(_resolve(base, config.output.root)))
    weights = config.model.weights
    if weights not in (None, "imagenet"):
        weights = str(_resolve(base, weights))
    model = dataclasses.replace(config.model, weights=weights)
    return dataclasses.replace(config, data=data, output=output, model=model)


def read_raw(
    path: str | os.PathLike,
    profile: str | None = None,
    overrides: typing.Sequence[str] = (),
) -> dict[str, Any]:
    """Reads a configuration file as plain data, with a profile's overlay and overrides merged in.

    Nothing is validated beyond the file's structure; :func:`load_config` builds the typed
    configuration from this. For readers that need a few keys only (``docker.run``'s roots).

    Args:
        path: the YAML file.
        profile: name of an overlay under the file's ``profiles`` key, or ``None``.
        overrides: ``KEY=VALUE`` strings (see :func:`parse_override`), applied in order after
            the profile; their keys are checked, their values are not.

    Returns:
        The top-level mapping without ``profiles``, the overlay and overrides merged.

    Raises:
        ConfigError: the file is missing or not YAML, not a mapping, the profile is unknown, or
            an override is malformed or names a key the configuration lacks; the message names
            the file.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the configuration file ({error})") from error
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or type(error).__name__
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    profiles = raw.pop("profiles", None) or {}
    if not isinstance(profiles, dict):
        raise ConfigError(f"{path}: 'profiles' must map profile names to overlays")
    if profile is not None:
        if profile not in profiles:
            known = ", ".join(sorted(profiles)) or "none"
            raise ConfigError(f"{path}: unknown profile {profile!r} (profiles: {known})")
        raw = _merge(raw, profiles[profile], f"{path}: profiles.{profile}")
    for override in overrides:
        key, value = parse_override(override)
        raw = apply_override(raw, key, value, source=f"{path}: --set {override}")
    return raw


def config_from_dict(raw: dict[str, Any], source: str = "<dict>") -> Config:
    """Validates plain data (e.g. a saved ``config.yaml`` of a run) into a :class:`Config`.

    Args:
        raw: the configuration as nested dictionaries.
        source: how error messages name where the data came from.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: naming ``source`` and the dotted key of the first problem found.
    """
    config = _build(Config, raw, "", source, skip={"source"})
    config = dataclasses.replace(config, source=source)
    try:
        check_values(config)
    except ValueError as error:
        raise ConfigError(f"{source}: {error}") from error
    return config


#: A YAML 1.2 float that YAML 1.1 (PyYAML) reads as a string: ``1e-3`` (no dot).
_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
_DOTTED_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def parse_value(text: str, key: str = "value") -> Any:
    """A value of an override, read as YAML (``5``, ``1e-3``, ``null``, ``[1, 2]``, ``SMG``).

    Unlike PyYAML, ``1e-3`` (an exponent without a dot) is a number, as in YAML 1.2.

    Raises:
        ConfigError: the text is not valid YAML; the message names ``key``.
    """
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        problem = str(error).splitlines()[0]
        raise ConfigError(f"--set {key}={text}: not a valid YAML value ({problem})") from error
    if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
        return float(value)
    return value


def parse_override(text: str) -> tuple[str, Any]:
    """Splits ``KEY=VALUE`` into the dotted key and the YAML value.

    Args:
        text: e.g. ``"training.epochs=5"`` or ``"loss.params={margin: 0.2}"``.

    Returns:
        ``(key, value)``, e.g. ``("training.epochs", 5)``.

    Raises:
        ConfigError: no ``=``, an empty or malformed key, an empty or invalid value.
    """
    key, equals, value = text.partition("=")
    key = key.strip()
    if not equals:
        raise ConfigError(f"--set {text}: expected KEY=VALUE, e.g. training.epochs=5")
    if not _DOTTED_KEY.fullmatch(key):
        raise ConfigError(f"--set {text}: {key!r} is not a dotted key like training.epochs")
    if not value.strip():
        raise ConfigError(f"--set {text}: empty value for {key} (write null for none)")
    return key, parse_value(value, key)


def apply_override(raw: dict[str, Any], key: str, value: Any, source: str = "--set") -> dict:
    """Sets one dotted key of a raw configuration (a copy; the input is left unchanged).

    Keys are checked against the configuration's structure: a section or key that the
    configuration does not have is an error naming the key, as in a file. Below free-form
    mappings (``loss.params``) any key may be set. A mapping value for a section
    (``training={epochs: 5}``) merges into it as a profile's overlay does, so its other keys
    stay; for a free-form mapping or ``data.augment`` it replaces the whole value, as in an
    overlay.

    Args:
        raw: the configuration as nested dictionaries (file and profile merged).
        key: the dotted key, e.g. ``"training.schedule.kind"``.
        value: the new value (already parsed).
        source: how error messages name where the override came from.

    Returns:
        The updated configuration.

    Raises:
        ConfigError: the key does not exist in the configuration's structure.
    """
    parts = key.split(".")
    merged = copy.deepcopy(raw)
    node: dict[str, Any] = merged
    schema: Any = Config
    for depth, part in enumerate(parts):
        prefix = ".".join(parts[:depth])
        if dataclasses.is_dataclass(schema):
            names = [f.name for f in dataclasses.fields(schema) if f.name != "source"]
            if part not in names:
                where = prefix or "top level"
                raise ConfigError(
                    f"{source}: unknown key {key} (valid keys under {where}: {', '.join(names)})"
                )
            schema = typing.get_type_hints(schema)[part]
        elif typing.get_origin(schema) is not dict and not _may_be_mapping(schema):
            raise ConfigError(f"{source}: {prefix} is a value, not a section; cannot set {key}")
        if depth == len(parts) - 1:
            if dataclasses.is_dataclass(schema) and isinstance(value, dict):
                if isinstance(node.get(part), dict):  # a section: merged like an overlay
                    value = _merge(node[part], value, f"{source}: {key}")
            node[part] = copy.deepcopy(value)
        else:
            child = node.get(part)
            if not isinstance(child, dict):
                whole = ".".join(parts[: depth + 1])
                if whole == "data.augment" and child in (True, False, None):
                    child = as_mapping(child)  # one operation changed, the others kept
                elif _may_be_mapping(schema) and child is not None:
                    raise ConfigError(
                        f"{source}: {whole} is {child!r}, not a mapping; cannot set {key} "
                        f"(set {whole} whole, e.g. --set '{whole}={{...}}')"
                    )
                else:
                    child = {}
                node[part] = child
            node = child
    return merged


def _may_be_mapping(hint: Any) -> bool:
    """Whether a union type hint admits a mapping (``bool | dict[str, Any]``)."""
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and any(
        typing.get_origin(arg) is dict for arg in typing.get_args(hint)
    )


def _resolve(base: Path, value: str) -> Path:
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else base / path


def _merge(base: dict, overlay: Any, where: str) -> dict:
    if not isinstance(overlay, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(overlay).__name__}")
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key not in REPLACED:
            merged[key] = _merge(merged[key], value, f"{where}.{key}")
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _build(cls: type, raw: Any, prefix: str, source: str, skip: set[str] = frozenset()) -> Any:
    where = prefix.rstrip(".") or "top level"
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {where}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name not in skip]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key {prefix}{unknown[0]!s} (valid keys under {where}: "
            f"{', '.join(names)})"
        )
    missing = [name for name in names if name not in raw]
    if missing:
        raise ConfigError(f"{source}: missing key {prefix}{missing[0]}")
    values = {name: _convert(hints[name], raw[name], f"{prefix}{name}", source) for name in names}
    return cls(**values)


def _convert(hint: Any, value: Any, key: str, source: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, f"{key}.", source)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [arg for arg in args if arg is not type(None)]
        errors = []
        for option in options:
            try:
                return _convert(option, value, key, source)
            except ConfigError as error:
                errors.append(error)
        if len(options) == 1:
            raise errors[0]
        raise ConfigError(f"{source}: {key}: {value!r} is not a valid value ({_describe(hint)})")
    if origin is Literal:
        if value not in args or (isinstance(value, bool) and not any(a is value for a in args)):
            raise ConfigError(
                f"{source}: {key}: {value!r} is not one of {', '.join(map(repr, args))}"
            )
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {key}: expected a list, got {value!r}")
        return [_convert(args[0], item, f"{key}[{i}]", source) for i, item in enumerate(value)]
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key}: expected a mapping, got {value!r}")
        return dict(value)
    if hint not in _SCALARS:
        raise TypeError(f"unsupported configuration type {hint!r} for {key}")  # a bug, not input
    accepted, expected = _SCALARS[hint]
    if not isinstance(value, accepted) or (hint is not bool and isinstance(value, bool)):
        raise ConfigError(f"{source}: {key}: expected {expected}, got {value!r}")
    return float(value) if hint is float else value


#: Scalar types of the configuration: the Python types a value may have (booleans only for
#: ``bool``) and how an error describes them.
_SCALARS: dict[type, tuple[tuple[type, ...], str]] = {
    bool: ((bool,), "true or false"),
    int: ((int,), "an integer"),
    float: ((int, float), "a number"),
    str: ((str,), "a string"),
}


def _describe(hint: Any) -> str:
    return str(hint).replace("typing.", "")
