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
The mounts themselves are :mod:`tasks.docker_mounts`.

Every task prints the exact ``docker`` command before running it; ``--dry-run`` only prints it.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
from pathlib import Path

from invoke import Context, task

from tasks.docker_mounts import (
    REPO_ROOT,
    Mount,
    code_mount,
    config_mounts,
)

APP_BASE_DOCKERFILE = REPO_ROOT / "docker" / "app_base.Dockerfile"
APP_DOCKERFILE = REPO_ROOT / "docker" / "app.Dockerfile"
REQUIREMENTS = REPO_ROOT / "requirements.txt"

DEFAULT_BASE_TAG = "cgd-app-base:latest"
DEFAULT_APP_TAG = "cgd-app:latest"
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
