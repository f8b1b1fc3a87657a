"""Helpers shared by the task modules: configuration loading and paths (no heavy imports)."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os

# TensorFlow's C++ INFO and WARNING lines stay hidden unless the user chose a level; set before
# any task imports TensorFlow (subprocesses, e.g. the benchmarks, inherit it).
if not os.environ.get("TF_CPP_MIN_LOG_LEVEL", "").strip():  # unset, or `export VAR=` (empty)
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"

CONFIG_HELP = "configuration file (default: config.yaml)"
PROFILE_HELP = "profile of the configuration file to overlay, e.g. 'demo'"
SET_HELP = (
    "override a configuration key after the profile, KEY=VALUE with a dotted key and a YAML "
    "value, e.g. --set model.descriptors=SMG; repeatable"
)


@dataclasses.dataclass(frozen=True)
class ConfigOptions:
    """A task's ``--config-path``, ``--profile`` and ``--set`` options, as given.

    A task that reads the configuration takes them as one parameter whose default is an instance
    (the three options' defaults, e.g. :data:`CONFIG`); :func:`config_task` puts the three options
    in that parameter's place on the command line.
    """

    path: str = "config.yaml"
    profile: str | None = None
    overrides: tuple[str, ...] = ()

    def load(self, *, tensorflow: bool = True):
        """The configuration, or a clean task failure (:func:`load`)."""
        return load(self.path, self.profile, self.overrides, tensorflow=tensorflow)


CONFIG = ConfigOptions()
"""The usual defaults: config.yaml, no profile, no overrides."""
DEMO_CONFIG = ConfigOptions(profile="demo")
"""The defaults of the demo's tasks: the demo profile of config.yaml."""


def _expanded(signature: inspect.Signature) -> tuple[str, inspect.Signature]:
    """The :class:`ConfigOptions` parameter's name, and the signature with the three options."""
    parameters = list(signature.parameters.values())
    index = next(i for i, p in enumerate(parameters) if isinstance(p.default, ConfigOptions))
    defaults = parameters[index].default
    options = [
        inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default)
        for name, default in (
            ("config_path", defaults.path),
            ("profile", defaults.profile),
            ("set_", None),
        )
    ]
    name = parameters[index].name
    parameters[index : index + 1] = options
    return name, signature.replace(parameters=parameters)


def config_task(iterable: tuple[str, ...] = (), **help: str):
    """``@task`` for a task that reads the configuration.

    The task takes a :class:`ConfigOptions` parameter; on the command line it is
    ``--config-path``, ``--profile`` and a repeatable ``--set``, in that parameter's place (the
    place decides invoke's short flags), documented, plus the task's own ``help`` (which may
    reword those three).

    Args:
        iterable: more repeatable options besides ``--set``.
        **help: help of the task's other options (and rewordings of the three).
    """
    from invoke import task

    documented = {"config_path": CONFIG_HELP, "profile": PROFILE_HELP, "set_": SET_HELP}

    def decorate(body):
        name, signature = _expanded(inspect.signature(body))

        @functools.wraps(body)
        def run(*args, **kwargs):
            given = signature.bind(*args, **kwargs)
            given.apply_defaults()
            arguments = given.arguments
            arguments[name] = ConfigOptions(
                arguments.pop("config_path"),
                arguments.pop("profile"),
                tuple(arguments.pop("set_") or ()),
            )
            return body(**arguments)

        run.__signature__ = signature
        return task(iterable=[*iterable, "set_"], help={**documented, **help})(run)

    return decorate


def load(
    config_path: str,
    profile: str | None,
    overrides: list[str] | None = None,
    *,
    tensorflow: bool = True,
):
    """Loads the configuration, turning a ConfigError into a clean task failure.

    Args:
        config_path: the YAML file.
        profile: the profile to overlay, or None.
        overrides: the task's ``--set KEY=VALUE`` options, applied after the profile.
        tensorflow: also import TensorFlow, without its start-up notices
            (:func:`net.quiet.import_tensorflow`), for the tasks that use it.
    """
    from invoke.exceptions import Exit

    from net.config import ConfigError, load_config

    if tensorflow:
        from net.quiet import import_tensorflow

        import_tensorflow()

    try:
        return load_config(config_path, profile=profile or None, overrides=overrides or ())
    except ConfigError as error:
        raise Exit(f"Configuration error: {error}", code=2) from error


def fail(message: str, code: int = 1):
    """Stops the task with a message and an exit code, without a traceback."""
    from invoke.exceptions import Exit

    raise Exit(message, code=code)


def integer_option(name: str, value, default: int | None, minimum: int = 1) -> int | None:
    """A task's integer option, ``default`` when not given; a bad value is one line naming it.

    Invoke converts an option whose default is an int itself and answers ``--batches abc`` with
    a traceback, so integer options default to None and are read here.
    """
    option = f"--{name.replace('_', '-')}"
    if value is None:
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        fail(f"{option} must be an integer, got {value!r}", code=2)
    if number < minimum:
        fail(f"{option} must be at least {minimum}, got {number}", code=2)
    return number


def model_for_task(config, model_path, overrides=None):
    """The model a task uses and the configuration to use it with; prints both.

    ``model_path`` (a ``.keras`` file or a run directory) or, when it is None, the newest run
    under ``output.root`` with a ``best.keras``. A model in a run directory is used with the
    run's data settings (``--set data.KEY=...`` still wins, with a warning).

    Returns:
        ``(choice, config)``: a :class:`net.runs.ModelChoice` and the configuration.

    Raises:
        net.runs.ModelFileError: no model there, or no run to default to.
    """
    from net.runs import choose_model, set_keys, with_run_data

    choice = choose_model(model_path, config.output.root)
    print(choice.describe())
    if choice.run_dir is not None:
        config, notes = with_run_data(config, choice.run_dir, keep=set_keys(overrides))
        for note in notes:
            print(note)
    return choice, config
