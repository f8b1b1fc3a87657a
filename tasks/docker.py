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
the host user (no ``sudo chmod`` afterwards).

Every task prints the exact ``docker`` command before running it; ``--dry-run`` only prints it.
"""

from __future__ import annotations

import os
import posixpath
import re
import shlex
import shutil
import sys
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


def read_mount_roots(config_path: str | os.PathLike) -> tuple[str, str]:
    """Reads ``data.root`` and ``output.root`` from the configuration file.

    Only these two keys are read (with ``yaml.safe_load``); the rest of the file is the training
    code's business.

    Args:
        config_path: The YAML configuration file.

    Returns:
        ``(data_root, output_root)`` exactly as written in the file (relative paths are relative
        to the repository root).

    Raises:
        FileNotFoundError: If the configuration file does not exist.
        ValueError: If the file is not a mapping or a key is missing or not a non-empty string.
    """
    import yaml

    path = Path(config_path)
    if not path.is_file():
        raise FileNotFoundError(f"configuration file not found: {path}")
    with path.open() as stream:
        config = yaml.safe_load(stream)
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a YAML mapping at the top level, got {config!r}")
    roots = []
    for section in ("data", "output"):
        value = config.get(section)
        root = value.get("root") if isinstance(value, dict) else None
        if not isinstance(root, str) or not root.strip():
            raise ValueError(
                f"{path}: key '{section}.root' must be a non-empty path string, got {root!r}"
            )
        roots.append(root)
    return roots[0], roots[1]


def container_path(configured: str) -> str:
    """Maps a path as written in the configuration to where it lies inside the container.

    The container runs in ``/app`` (the repository root), so a relative path keeps its meaning
    under ``/app`` and an absolute one is mounted at the same absolute path. The configuration
    therefore reads the same inside and outside the container.

    Args:
        configured: A path from the configuration file.

    Returns:
        The normalised absolute POSIX path inside the container.

    Raises:
        ValueError: If the path would be mounted over ``/app`` or one of its parents, which would
            hide the code.
    """
    target = posixpath.normpath(posixpath.join(CONTAINER_WORKDIR, configured))
    if target == "/" or CONTAINER_WORKDIR == target or CONTAINER_WORKDIR.startswith(target + "/"):
        raise ValueError(
            f"path {configured!r} maps to {target} in the container, which would hide the code "
            f"at {CONTAINER_WORKDIR}; use a subdirectory"
        )
    return target


def host_path(configured: str) -> Path:
    """Returns the host path of a configured path (relative ones against the repository root)."""
    return Path(os.path.abspath(REPO_ROOT / configured))


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


def _bind_mount(source: Path, target: str, read_only: bool) -> list[str]:
    """Returns ``--mount`` arguments for a bind mount.

    ``--mount`` (unlike ``--volume``) refuses a missing source instead of creating it as root.
    """
    for path in (str(source), target):
        if any(char in path for char in ',"\n'):
            raise ValueError(f"cannot bind-mount {path!r}: commas, quotes and newlines unsupported")
    spec = f"type=bind,source={source},target={target}"
    return ["--mount", spec + (",readonly" if read_only else "")]


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
    config_path: str | os.PathLike,
    gpus: str = "auto",
    command: str | None = None,
    tag: str = DEFAULT_APP_TAG,
    data_read_only: bool = True,
) -> list[str]:
    """Returns the ``docker run`` command for the app image.

    Mounts the data root (read-only unless ``data_read_only`` is false), the output root and the
    configuration file (read-only) where the configuration expects them in the container.

    Args:
        config_path: The YAML configuration (relative to the working directory).
        gpus: See :func:`gpu_flags`.
        command: Shell command to run in the container (``bash -c``); None runs the image's
            default (an interactive shell).
        tag: App image tag.
        data_read_only: Mount the data directory read-only.

    Returns:
        The command as an argument list.

    Raises:
        FileNotFoundError, ValueError: See :func:`read_mount_roots`, :func:`container_path`,
            :func:`gpu_flags`.
    """
    data_root, output_root = read_mount_roots(config_path)
    config_host = Path(config_path).resolve()
    try:
        config_target = posixpath.join(
            CONTAINER_WORKDIR, config_host.relative_to(REPO_ROOT).as_posix()
        )
    except ValueError:  # outside the repository: same absolute path
        config_target = config_host.as_posix()
    uid, gid = host_user_ids()
    args = ["docker", "run", "--rm"]
    if stdin_is_terminal():
        args += ["--interactive", "--tty"]
    args += gpu_flags(gpus)
    args += ["--user", f"{uid}:{gid}"]
    args += _bind_mount(host_path(data_root), container_path(data_root), data_read_only)
    args += _bind_mount(host_path(output_root), container_path(output_root), False)
    args += _bind_mount(config_host, config_target, True)
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
    help={
        "config-path": "YAML configuration whose data.root and output.root are mounted.",
        "gpus": "auto (all GPUs if the host has NVIDIA GPUs), all, none, or indices like 0,1.",
        "command": "Shell command to run in the container, e.g. 'invoke train'; default: a shell.",
        "tag": f"Tag of the app image (default {DEFAULT_APP_TAG}).",
        "data-read-only": "Mount the data directory read-only (default; --no-data-read-only to "
        "let the container write it).",
        "dry-run": "Only print the docker command.",
    }
)
def run(
    c: Context,
    config_path: str = "config.yaml",
    gpus: str = "auto",
    command: str | None = None,
    tag: str = DEFAULT_APP_TAG,
    data_read_only: bool = True,
    dry_run: bool = False,
):
    """Run a command (or a shell) in the app container with GPUs, data and outputs mounted."""
    args = run_command(
        config_path=config_path, gpus=gpus, command=command, tag=tag, data_read_only=data_read_only
    )
    if not dry_run:
        data_root, output_root = read_mount_roots(config_path)
        data_dir, output_dir = host_path(data_root), host_path(output_root)
        if not data_dir.is_dir():
            if data_read_only:
                raise FileNotFoundError(
                    f"{config_path}: data.root {data_root!r} -> {data_dir} does not exist; "
                    "download or generate the data first"
                )
            data_dir.mkdir(parents=True)
        # Created here, by the host user: a missing mount source would otherwise be refused.
        output_dir.mkdir(parents=True, exist_ok=True)
    _execute(c, args, dry_run, pty=stdin_is_terminal())
