"""Docker tasks: build the GPU images and run the repository's tasks inside a container.

Two images, built from the repository root as build context:

* ``docker/app_base.Dockerfile`` -> ``cgd-app-base``: the official TensorFlow GPU image of the
  version ``requirements.txt`` pins, the other requirements and the ResNet-50 ImageNet weights.
  Rebuilt only when the requirements change.
* ``docker/app.Dockerfile`` -> ``cgd-app``: the base plus the code at ``/app`` and a non-root
  user with the host user's uid/gid. Rebuilt after code changes (seconds).

``run`` starts a container of the app image with the data and output directories named in the
configuration file mounted where the configuration points inside the container, the GPUs when
the host has any, and the host user's uid/gid, so everything written to the outputs belongs to
the host user (no ``sudo chmod`` afterwards). ``run --mount-code`` also mounts the working tree
over the baked-in code at ``/app`` (read-write), so edits on the host need no image rebuild.

Every task prints the exact ``docker`` command before running it; ``--dry-run`` only prints it.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import re
import shlex
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from invoke import Context, task

REPO_ROOT = Path(__file__).resolve().parent.parent
APP_BASE_DOCKERFILE = REPO_ROOT / "docker" / "app_base.Dockerfile"
APP_DOCKERFILE = REPO_ROOT / "docker" / "app.Dockerfile"
REQUIREMENTS = REPO_ROOT / "requirements.txt"

DEFAULT_BASE_TAG = "cgd-app-base:latest"
DEFAULT_APP_TAG = "cgd-app:latest"
# The repository root inside the app image (WORKDIR of docker/app.Dockerfile): relative paths in
# the configuration resolve against it in the container, as against REPO_ROOT on the host.
CONTAINER_WORKDIR = "/app"
GPU_CHOICES = ("auto", "all", "none")

_TF_PIN = re.compile(r"^\s*tensorflow\s*==\s*([^\s;#]+)", re.IGNORECASE)
_GPU_LIST = re.compile(r"^\d+(,\d+)*$")


def pinned_tensorflow_version(requirements_path: str | os.PathLike = REQUIREMENTS) -> str:
    """Returns the TensorFlow version that a requirements file pins exactly.

    Args:
        requirements_path: A pip requirements file with a ``tensorflow==X.Y.Z`` line.

    Returns:
        The pinned version, e.g. ``"2.21.0"``.

    Raises:
        ValueError: If the file has no exact ``tensorflow==`` pin.
    """
    path = Path(requirements_path)
    for line in path.read_text().splitlines():
        match = _TF_PIN.match(line)
        if match:
            return match.group(1)
    raise ValueError(
        f"{path}: no exact 'tensorflow==X.Y.Z' pin; the base image is chosen by that version."
    )


def host_has_nvidia_gpu() -> bool:
    """Tells whether this host has an NVIDIA GPU that Docker could pass to a container.

    Returns:
        True when ``nvidia-smi`` is on the PATH or ``/dev/nvidia0`` exists.
    """
    return shutil.which("nvidia-smi") is not None or os.path.exists("/dev/nvidia0")


def host_user_ids() -> tuple[int, int]:
    """Returns the (uid, gid) of the user running the task."""
    return os.getuid(), os.getgid()


def stdin_is_terminal() -> bool:
    """Tells whether stdin is a terminal (then the container gets ``--interactive --tty``)."""
    return sys.stdin.isatty()


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


def gpu_flags(gpus: str) -> list[str]:
    """Returns the ``docker run`` arguments that pass GPUs through.

    Args:
        gpus: ``"auto"`` (all GPUs when :func:`host_has_nvidia_gpu` finds any, else none),
            ``"all"``, ``"none"``, or a comma-separated list of device indices such as ``"0,1"``.

    Returns:
        ``[]`` or ``["--gpus", value]``.

    Raises:
        ValueError: If ``gpus`` is none of the accepted values.
    """
    if gpus == "auto":
        gpus = "all" if host_has_nvidia_gpu() else "none"
    if gpus == "none":
        return []
    if gpus == "all":
        return ["--gpus", "all"]
    if _GPU_LIST.match(gpus):
        # Docker parses --gpus as CSV: a device list needs its own double quotes.
        return ["--gpus", f'"device={gpus}"']
    raise ValueError(
        f"gpus={gpus!r}: expected one of {', '.join(GPU_CHOICES)} or device indices like '0,1'"
    )


def build_base_command(tag: str = DEFAULT_BASE_TAG) -> list[str]:
    """Returns the ``docker build`` command of the base image.

    Args:
        tag: Image tag to build.

    Returns:
        The command as an argument list.
    """
    return [
        "docker", "build",
        "--file", str(APP_BASE_DOCKERFILE),
        "--build-arg", f"TF_VERSION={pinned_tensorflow_version()}",
        "--tag", tag,
        str(REPO_ROOT),
    ]  # fmt: skip


def build_app_command(tag: str = DEFAULT_APP_TAG, base_tag: str = DEFAULT_BASE_TAG) -> list[str]:
    """Returns the ``docker build`` command of the app image, for the host user's uid/gid.

    A host user that is root (uid 0) keeps the Dockerfile's default non-root user.

    Args:
        tag: Image tag to build.
        base_tag: Tag of the base image to build on.

    Returns:
        The command as an argument list.
    """
    uid, gid = host_user_ids()
    user_args = (
        [] if uid == 0 else ["--build-arg", f"USER_UID={uid}", "--build-arg", f"USER_GID={gid}"]
    )
    return [
        "docker", "build",
        "--file", str(APP_DOCKERFILE),
        "--build-arg", f"BASE_IMAGE={base_tag}",
        *user_args,
        "--tag", tag,
        str(REPO_ROOT),
    ]  # fmt: skip


def run_command(
    *,
    mounts: list[Mount],
    gpus: str = "auto",
    command: str | None = None,
    tag: str = DEFAULT_APP_TAG,
) -> list[str]:
    """Returns the ``docker run`` command for the app image, as the host user.

    Args:
        mounts: Bind mounts, e.g. from :func:`config_mounts`.
        gpus: See :func:`gpu_flags`.
        command: Shell command to run in the container (``bash -c``); None runs the image's
            default (a shell).
        tag: App image tag.

    Returns:
        The command as an argument list.

    Raises:
        ValueError: See :func:`gpu_flags` and :meth:`Mount.args`.
    """
    uid, gid = host_user_ids()
    args = ["docker", "run", "--rm"]
    if stdin_is_terminal():
        args += ["--interactive", "--tty"]
    args += gpu_flags(gpus)
    args += ["--user", f"{uid}:{gid}"]
    for mount in mounts:
        args += mount.args()
    args.append(tag)
    if command:
        args += ["bash", "-c", command]
    return args


def _execute(c: Context, args: list[str], dry_run: bool, **run_kwargs) -> None:
    """Prints the exact command and runs it unless ``dry_run``."""
    line = shlex.join(args)
    print(line, flush=True)
    if not dry_run:
        c.run(line, **run_kwargs)


@task(
    help={
        "tag": f"Tag of the base image (default {DEFAULT_BASE_TAG}).",
        "dry-run": "Only print the docker command.",
    }
)
def build_app_base_container(c: Context, tag: str = DEFAULT_BASE_TAG, dry_run: bool = False):
    """Build the GPU base image: pinned TensorFlow GPU image + requirements + ResNet-50 weights."""
    _execute(c, build_base_command(tag), dry_run)


@task(
    help={
        "tag": f"Tag of the app image (default {DEFAULT_APP_TAG}).",
        "base-tag": f"Tag of the base image to build on (default {DEFAULT_BASE_TAG}).",
        "dry-run": "Only print the docker command.",
    }
)
def build_app_container(
    c: Context, tag: str = DEFAULT_APP_TAG, base_tag: str = DEFAULT_BASE_TAG, dry_run: bool = False
):
    """Build the app image: the code at /app and a user with your uid/gid on the base image."""
    _execute(c, build_app_command(tag, base_tag), dry_run)


@task(
    iterable=["set_"],
    help={
        "config-path": "YAML configuration whose data.root and output.root are mounted "
        "(default: config.yaml).",
        "profile": "Profile of the configuration whose roots to mount, e.g. 'demo'.",
        "set": "Override a key of the configuration, KEY=VALUE (repeatable), e.g. "
        "data.root=/data/cars196: the roots mounted follow it; pass the same --set to the task "
        "you run.",
        "gpus": "auto (all GPUs if the host has NVIDIA GPUs), all, none, or indices like 0,1.",
        "command": "Shell command to run in the container, e.g. 'invoke ml.train'; default: a "
        "shell.",
        "tag": f"Tag of the app image (default {DEFAULT_APP_TAG}).",
        "data-read-only": "Mount the data directory read-only (default; --no-data-read-only to "
        "let the container write it).",
        "mount-code": "Mount the working tree at /app (read-write) instead of using the code "
        "baked into the image: code changes need no rebuild.",
        "dry-run": "Only print the docker command.",
    },
)
def run(
    c: Context,
    config_path: str = "config.yaml",
    profile: str | None = None,
    gpus: str = "auto",
    command: str | None = None,
    tag: str = DEFAULT_APP_TAG,
    data_read_only: bool = True,
    mount_code: bool = False,
    dry_run: bool = False,
    set_: list[str] | None = None,
):
    """Run a command (or a shell) in the app container with GPUs, data and outputs mounted."""
    from invoke.exceptions import Exit

    try:
        mounts = config_mounts(config_path, profile, data_read_only, overrides=set_ or ())
        data, output = mounts[0], mounts[1]
        if mount_code:
            mounts.insert(0, code_mount())  # first: the data, outputs and file go on top of it
        args = run_command(mounts=mounts, gpus=gpus, command=command, tag=tag)
        if not dry_run and not data.source.is_dir() and data.read_only:
            raise FileNotFoundError(
                f"{config_path}: {data.key} {data.configured!r} -> {data.source} does not "
                "exist; download or generate the data first"
            )
    except (FileNotFoundError, ValueError) as error:
        raise Exit(f"docker.run: {error}", code=2) from None
    if not dry_run:
        if not data.source.is_dir():
            data.source.mkdir(parents=True)
        # Created here, by the host user: docker refuses a missing --mount source.
        output.source.mkdir(parents=True, exist_ok=True)
    _execute(c, args, dry_run, pty=stdin_is_terminal())
