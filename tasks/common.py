"""Helpers shared by the task modules: configuration loading and paths (no heavy imports)."""

from __future__ import annotations

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


def config_task(iterable: tuple[str, ...] = (), **help: str):
    """``@task`` for a task that reads the configuration.

    ``--config-path``, ``--profile`` and a repeatable ``--set`` are documented, plus the task's
    own ``help`` (which may reword those three).

    Args:
        iterable: more repeatable options besides ``--set``.
        **help: help of the task's other options (and rewordings of the three).
    """
    from invoke import task

    documented = {"config_path": CONFIG_HELP, "profile": PROFILE_HELP, "set_": SET_HELP}
    return task(iterable=[*iterable, "set_"], help={**documented, **help})


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


def integer_option(name: str, value, default: int, minimum: int = 1) -> int:
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
