"""Helpers shared by the task modules: configuration loading and paths (no heavy imports)."""

from __future__ import annotations

CONFIG_HELP = "configuration file (default: config.yaml)"
PROFILE_HELP = "profile of the configuration file to overlay, e.g. 'demo'"
SET_HELP = (
    "override a configuration key after the profile, KEY=VALUE with a dotted key and a YAML "
    "value, e.g. --set model.descriptors=SMG; repeatable"
)


def load(config_path: str, profile: str | None, overrides: list[str] | None = None):
    """Loads the configuration, turning a ConfigError into a clean task failure.

    Args:
        config_path: the YAML file.
        profile: the profile to overlay, or None.
        overrides: the task's ``--set KEY=VALUE`` options, applied after the profile.
    """
    from invoke.exceptions import Exit

    from net.config import ConfigError, load_config

    try:
        return load_config(config_path, profile=profile or None, overrides=overrides or ())
    except ConfigError as error:
        raise Exit(f"Configuration error: {error}", code=2) from error


def fail(message: str, code: int = 1):
    """Stops the task with a message and an exit code, without a traceback."""
    from invoke.exceptions import Exit

    raise Exit(message, code=code)
