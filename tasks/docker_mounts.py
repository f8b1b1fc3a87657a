"""What the app container sees of the host: bind mounts of the configured roots and the code.

The data and output roots named in the configuration file are mounted where the configuration
points inside the container (relative paths stay relative to the file's folder), the file itself
where the repository's code finds it, and, for ``docker.run --mount-code``, the working tree over
the baked-in code at ``/app``.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# The repository root inside the app image (WORKDIR of docker/app.Dockerfile): relative paths in
# the configuration resolve against it in the container, as against REPO_ROOT on the host.
CONTAINER_WORKDIR = "/app"


def read_mount_roots(
    config_path: str | os.PathLike,
    profile: str | None = None,
    overrides: Sequence[str] = (),
) -> tuple[str, str]:
    """Reads ``data.root`` and ``output.root`` from the configuration file.

    The file is read by :func:`net.config.read_raw` (the same reader and profile overlay as the
    training code, without TensorFlow); only these two keys are looked at here, the rest of the
    file is the training code's business.

    Args:
        config_path: The YAML configuration file.
        profile: Name of an overlay under the file's ``profiles`` key, or None.
        overrides: ``KEY=VALUE`` overrides applied after the profile (``--set``).

    Returns:
        ``(data_root, output_root)`` as written in the file (or an override); relative paths
        are relative to the file's folder.

    Raises:
        ValueError: If the file is missing or not YAML (:class:`net.config.ConfigError`), the
            profile is unknown, or a key is missing or not a non-empty string.
    """
    from net.config import read_raw

    path = Path(config_path)
    config = read_raw(path, profile, overrides)
    where = f"{path}" + (f" (profile {profile})" if profile else "")
    if overrides:
        where += " with --set " + " ".join(overrides)
    roots = []
    for section in ("data", "output"):
        key = f"{section}.root"
        root = _get(config, section, "root")
        if not isinstance(root, str) or not root.strip():
            raise ValueError(f"{where}: key '{key}' must be a non-empty path string, got {root!r}")
        if root.startswith("~"):
            raise ValueError(
                f"{where}: key '{key}' = {root!r}: '~' means another home folder inside the "
                "container; write the path absolute or relative to the configuration file"
            )
        roots.append(root)
    return roots[0], roots[1]


def _get(mapping: object, section: str, key: str) -> object:
    value = mapping.get(section) if isinstance(mapping, dict) else None
    return value.get(key) if isinstance(value, dict) else None


def container_config_path(config_path: str | os.PathLike) -> str:
    """Where the configuration file is mounted in the container.

    Inside the repository it keeps its place relative to the repository root, which is ``/app``
    in the container; elsewhere it keeps its absolute path.

    Args:
        config_path: The configuration file on the host.

    Returns:
        An absolute POSIX path in the container.
    """
    config = Path(os.path.abspath(config_path))
    try:
        return posixpath.join(CONTAINER_WORKDIR, config.relative_to(REPO_ROOT).as_posix())
    except ValueError:
        return config.as_posix()


def container_path(configured: str, config_dir: str = CONTAINER_WORKDIR) -> str:
    """Maps a path as written in the configuration to where it lies in the container.

    A relative path is relative to the configuration file's folder, on the host as in the
    container (where that folder is ``config_dir``); an absolute path is mounted at the same
    absolute path. The configuration thus means the same thing inside and outside.

    Args:
        configured: A path from the configuration file.
        config_dir: The configuration file's folder in the container.

    Returns:
        The normalised absolute POSIX path in the container.

    Raises:
        ValueError: If the path would be mounted over ``/app`` or one of its parents, which would
            hide the code.
    """
    target = posixpath.normpath(posixpath.join(config_dir, configured))
    if target == "/" or CONTAINER_WORKDIR == target or CONTAINER_WORKDIR.startswith(target + "/"):
        raise ValueError(
            f"path {configured!r} maps to {target} in the container, which would hide the code "
            f"at {CONTAINER_WORKDIR}; use a subdirectory"
        )
    return target


@dataclasses.dataclass(frozen=True)
class Mount:
    """A bind mount of the container.

    Attributes:
        source: Absolute host path.
        target: Absolute path in the container.
        read_only: Whether the container may only read it.
        key: What it is, for messages (``"data.root"``, ``"output.root"``, ``"config"``).
        configured: The path as written in the configuration.
    """

    source: Path
    target: str
    read_only: bool
    key: str
    configured: str

    def args(self) -> list[str]:
        """Returns the ``--mount`` arguments.

        ``--mount`` (unlike ``--volume``) refuses a missing source instead of creating it owned
        by root.

        Raises:
            ValueError: If a path holds a character that the ``--mount`` syntax cannot carry.
        """
        for path in (str(self.source), self.target):
            if any(char in path for char in ',"\n'):
                raise ValueError(
                    f"{self.key} {path!r}: commas, quotes and newlines cannot be bind-mounted"
                )
        spec = f"type=bind,source={self.source},target={self.target}"
        return ["--mount", spec + (",readonly" if self.read_only else "")]


def config_mounts(
    config_path: str | os.PathLike,
    profile: str | None = None,
    data_read_only: bool = True,
    overrides: Sequence[str] = (),
) -> list[Mount]:
    """The data root, output root and configuration file, as the container must see them.

    Args:
        config_path: The YAML configuration file on the host.
        profile: Profile whose overlay of the roots applies, or None.
        data_read_only: Mount the data root read-only.
        overrides: ``KEY=VALUE`` overrides applied after the profile (``--set``).

    Returns:
        Mounts of the data root, the output root and the configuration file (read-only).

    Raises:
        ValueError: See :func:`read_mount_roots` and :func:`container_path`.
    """
    data_root, output_root = read_mount_roots(config_path, profile, overrides)
    config_dir = Path(os.path.abspath(config_path)).parent
    config_target = container_config_path(config_path)
    target_dir = posixpath.dirname(config_target)
    return [
        Mount(
            source=Path(os.path.abspath(config_dir / configured)),
            target=container_path(configured, target_dir),
            read_only=read_only,
            key=key,
            configured=configured,
        )
        for key, configured, read_only in (
            ("data.root", data_root, data_read_only),
            ("output.root", output_root, False),
        )
    ] + [Mount(config_dir / Path(config_path).name, config_target, True, "config", "")]


def code_mount() -> Mount:
    """The working tree mounted over the baked-in code at ``/app``, read-write.

    The container runs as the host user, who owns the working tree, so the container may write
    it; a code change then needs no image rebuild (the seed's edit-run loop).
    """
    return Mount(REPO_ROOT, CONTAINER_WORKDIR, False, "code", str(REPO_ROOT))
