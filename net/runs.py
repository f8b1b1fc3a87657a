"""Run directories: which saved model a task uses, and the data settings it was trained with.

A run directory (``<output.root>/<name>``, written by ``ml.train``) holds ``config.yaml`` (the
resolved configuration of the run), ``best.keras`` and ``last.keras``, ``log.csv`` and
``metrics.json``. The tasks that use a trained model take ``--model-path`` (a ``.keras`` file or
a run directory) or, without it, the newest run under ``output.root`` that holds a
``best.keras`` (:func:`choose_model`). A model that lies in a run directory is evaluated with
that run's data settings (:func:`with_run_data`), so it sees images as it saw them in training.

A run directory's ``status.json`` says whether its run is complete, in progress (or killed:
resume it with the same command) or failed (:func:`run_status`); ``ml.train`` writes it
(:func:`mark_run`).

It also holds the lifecycle: :func:`make_run_dir`, the chief's directory on multi-worker runs
(:func:`worker_run_dir`), the saved configuration a resumed run must match
(:func:`check_same_config`), and loading the saved model (:func:`load_model`).

No TensorFlow is imported here until a model is loaded (:func:`load_model`).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from net.config import Config, ConfigError, config_from_dict
from net.files import atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    import keras

#: The model a run directory stands for.
BEST_MODEL = "best.keras"
#: The resolved configuration saved in every run directory.
RUN_CONFIG = "config.yaml"
#: The data settings that decide what a model sees: the images (root, layout), the split of the
#: classes (so the test classes are the run's), and the input (image size, crop).
RUN_DATA_KEYS = ("root", "layout", "num_train_classes", "num_val_classes", "image_size", "crop")
#: The file recording a run's status, and the statuses (:func:`run_status`).
STATUS_FILE = "status.json"
RUN_COMPLETE = "complete"
RUN_IN_PROGRESS = "in progress"
RUN_FAILED = "failed"
#: The settings a different value of which silently changes every number (reported if they
#: disagree with the configuration given).
INPUT_KEYS = ("image_size", "crop")
#: Settings that may differ when a run is resumed: more epochs extend a finished run.
RESUMABLE_CHANGES: frozenset[str] = frozenset({"training.epochs"})

#: Keys added to the configuration after runs may have started, each with the value that does
#: what such a run did: a run whose ``config.yaml`` lacks the key resumes if it has that value.
ADDED_KEYS: dict[str, Any] = {"evaluation.nprobe": 16}


class RunDirectoryError(ValueError):
    """A run directory that cannot be resumed with the given configuration."""


class ModelFileError(ValueError):
    """A model path that does not hold a loadable model of this repository."""


class NoRunError(ModelFileError):
    """No run directory under ``output.root`` holds a trained model."""


@dataclasses.dataclass(frozen=True)
class ModelChoice:
    """The model file a task uses.

    Attributes:
        path: the ``.keras`` file.
        run_dir: the run directory it lies in (a folder with ``config.yaml``), or None for a
            model file elsewhere.
        newest: True when it was chosen as the newest run (no ``--model-path``).
    """

    path: Path
    run_dir: Path | None
    newest: bool = False

    def describe(self) -> str:
        """One line saying which model is used, why, and whether its run is unfinished."""
        notes = [f"the newest run with a {BEST_MODEL}"] if self.newest else []
        status = run_status(self.run_dir) if self.run_dir is not None else None
        if status in (RUN_IN_PROGRESS, RUN_FAILED):
            state = "failed" if status == RUN_FAILED else "is in progress"
            notes.append(f"its run {state}: the best model so far")
        return f"Model: {self.path}" + (f" ({'; '.join(notes)})" if notes else "")


def make_run_dir(output_root: str | os.PathLike, name: str | None = None) -> Path:
    """A new run directory under ``output_root`` (named by the time unless ``name`` is given)."""
    name = name or datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(output_root) / name


def worker_run_dir(strategy: Any, run_dir: Path) -> Path:
    """Where this worker writes: the run directory on the chief, a private folder elsewhere.

    Under ``MultiWorkerMirroredStrategy`` every worker runs the same training loop and must
    save too (saving takes part in collective operations), but only the chief (the ``chief``
    task, or worker 0 when the cluster has none) writes the run directory; the other workers
    write to ``run_dir/.workers/<task>-<id>``.

    Args:
        strategy: a ``tf.distribute.Strategy``; one without a cluster resolver is the chief.
        run_dir: the run directory.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_type is None:
        return run_dir
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    if resolver.task_type == "chief" or (
        not has_chief and resolver.task_type == "worker" and resolver.task_id == 0
    ):
        return run_dir
    return run_dir / ".workers" / f"{resolver.task_type}-{resolver.task_id}"


def check_same_config(current: dict[str, dict[str, Any]], run_dir: Path) -> None:
    """Saves a run's resolved configuration; a resumed run must use the same one.

    Only the settings in :data:`RESUMABLE_CHANGES` may differ.

    Args:
        current: the configuration as ``{section: {key: value}}`` (``Config.to_dict()``).
        run_dir: the run directory (it exists).

    Raises:
        RunDirectoryError: the run directory was started with another configuration.
    """
    path = run_dir / RUN_CONFIG
    if path.exists():
        previous = yaml.safe_load(path.read_text())
        changed = sorted(
            f"{section}.{key}"
            for section in current
            for key in current[section]
            if previous.get(section, {}).get(key, ADDED_KEYS.get(f"{section}.{key}"))
            != current[section][key]
            and f"{section}.{key}" not in RESUMABLE_CHANGES
        )
        if changed:
            raise RunDirectoryError(
                f"{run_dir} was started with another configuration (differences: "
                f"{', '.join(changed)}); use a new run directory or the same configuration"
            )
    atomic_write_text(path, yaml.safe_dump(current, sort_keys=False))


def resolve_model_path(path: str | os.PathLike) -> Path:
    """A ``.keras`` file, or a run directory's ``best.keras``.

    Raises:
        ModelFileError: nothing is at ``path``, or a folder without ``best.keras``.
    """
    path = Path(path)
    if path.is_dir():
        if not (path / BEST_MODEL).is_file():
            raise ModelFileError(f"{path} is a folder without a {BEST_MODEL} (not a finished run)")
        path = path / BEST_MODEL
    if not path.is_file():
        raise ModelFileError(f"no saved model at {path}")
    return path


def load_model(path: str | os.PathLike, image_size: int | None = None) -> keras.Model:
    """Loads a saved model of this repository (safe mode, no custom objects needed).

    Keras and this package's layers are imported here, on first use, so that choosing a run
    and reading its settings stay free of TensorFlow.

    Args:
        path: a ``.keras`` file or a run directory (its ``best.keras``).
        image_size: the side of the images it will be given; a model with a fixed input of
            another size is refused.

    Raises:
        ModelFileError: the file is missing, not a loadable ``.keras`` model, has no
            ``embeddings`` output, or takes images of another size than ``image_size``.
    """
    import keras

    import net.model  # noqa: F401  (registers the custom layers that saved models name)

    path = resolve_model_path(path)
    if not zipfile.is_zipfile(path):  # Keras would say "File not found" of a corrupt file.
        raise ModelFileError(f"cannot load the model {path}: not a .keras file (not a zip archive)")
    try:
        net = keras.saving.load_model(path)
    except Exception as error:  # Keras raises many kinds (ValueError, OSError, zipfile...)
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ModelFileError(
            f"cannot load the model {path}: {type(error).__name__}{': ' + reason if reason else ''}"
        ) from error
    check_model(net, path, image_size)
    return net


def check_model(net: keras.Model, path: str | os.PathLike, image_size: int | None) -> None:
    """Refuses a model that is not an embedding model of ``image_size`` px images.

    Raises:
        ModelFileError: it has no ``embeddings`` output, not one (B, H, W, 3) input, or a fixed
            input size other than ``image_size``.
    """
    if "embeddings" not in getattr(net, "output_names", []):
        raise ModelFileError(
            f"the model {path} has no 'embeddings' output (outputs: "
            f"{', '.join(net.output_names) or 'none'}); not an embedding model of this repository"
        )
    shapes = [tuple(x.shape) for x in net.inputs]
    if len(shapes) != 1 or len(shapes[0]) != 4 or shapes[0][3] not in (None, 3):
        raise ModelFileError(f"the model {path} takes {shapes}, not one (B, H, W, 3) image input")
    height, width = shapes[0][1:3]
    if image_size is not None and (height, width) not in (
        (None, None),
        (image_size, image_size),
    ):
        raise ModelFileError(
            f"the model {path} takes {height}x{width} images but data.image_size is "
            f"{image_size}; evaluate it at its size (--set data.image_size={height})"
        )


def run_dir_of(model_file: str | os.PathLike) -> Path | None:
    """The run directory a model file lies in (its folder holds ``config.yaml``), or None."""
    folder = Path(model_file).parent
    return folder if (folder / RUN_CONFIG).is_file() else None


def _newest(paths: list[Path]) -> Path | None:
    return max(paths, key=lambda p: (p.stat().st_mtime, p.name), default=None)


def newest_model_run(output_root: str | os.PathLike) -> Path | None:
    """The newest run directory under ``output_root`` that holds a ``best.keras`` (or None).

    Newest is the most recently written ``best.keras`` (a resumed run counts from its last
    save); a run that failed before saving a model is never chosen.
    """
    models = [p for p in Path(output_root).glob(f"*/{BEST_MODEL}") if p.is_file()]
    newest = _newest(models)
    return None if newest is None else newest.parent


def latest_run_dir(output_root: str | os.PathLike) -> Path:
    """The newest run directory under a root with a training log and a model (for its curves).

    Raises:
        NoRunError: there is none (no run, or only runs that failed before their first epoch).
    """
    logs = [p for p in Path(output_root).glob("*/log.csv") if (p.parent / BEST_MODEL).is_file()]
    newest = _newest(logs)
    if newest is None:
        raise NoRunError(
            f"no run under {output_root} has a training log and a {BEST_MODEL}; train one "
            "with `invoke ml.train` (same --config-path/--profile) or give --run-dir"
        )
    return newest.parent


def choose_model(model_path: str | os.PathLike | None, output_root: str | os.PathLike):
    """The model a task uses: ``model_path`` (a file or run directory), else the newest run.

    Args:
        model_path: the ``--model-path`` given, or None.
        output_root: ``output.root`` of the configuration, searched when ``model_path`` is None.

    Returns:
        A :class:`ModelChoice`.

    Raises:
        ModelFileError: ``model_path`` holds no model; :class:`NoRunError` when it is None
            and no run under ``output_root`` has a ``best.keras``.
    """
    if model_path is None or str(model_path) == "":
        run_dir = newest_model_run(output_root)
        if run_dir is None:
            raise NoRunError(
                f"no trained model: no run under {output_root} holds a {BEST_MODEL}; train "
                "one with `invoke ml.train` (same --config-path/--profile) or give --model-path"
            )
        return ModelChoice(run_dir / BEST_MODEL, run_dir, newest=True)
    path = resolve_model_path(model_path)
    return ModelChoice(path, run_dir_of(path))


def saved_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The configuration saved in a run directory, as plain data.

    Raises:
        ModelFileError: the file is unreadable or not a YAML mapping.
    """
    path = Path(run_dir) / RUN_CONFIG
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        reason = getattr(error, "problem", None) or getattr(error, "strerror", None) or error
        raise ModelFileError(f"{path}: cannot read the run's configuration ({reason})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("data"), dict):
        raise ModelFileError(f"{path}: not a run configuration (no data section)")
    return raw


def with_run_data(
    config: Config, run_dir: str | os.PathLike, keep: tuple[str, ...] = ()
) -> tuple[Config, list[str]]:
    """The configuration with the data settings of a run (:data:`RUN_DATA_KEYS`).

    The run's settings replace those of ``config`` (its file and profile), so a model is
    evaluated on the images, classes, size and crop it was trained with; data keys given on the
    command line (``keep``, from ``--set data.KEY=...``) stay as given.

    Args:
        config: the configuration of the task.
        run_dir: the run directory of the model.
        keep: data keys (without ``data.``) that the user set explicitly.

    Returns:
        ``(config, notes)``: the configuration to use and lines to print: which settings come
        from the run, and a warning for each of :data:`INPUT_KEYS` on which the configuration
        disagreed with the run.

    Raises:
        ModelFileError: the run's ``config.yaml`` is unreadable or its data settings invalid.
    """
    path = Path(run_dir) / RUN_CONFIG
    saved = saved_config(run_dir)["data"]
    current = config.to_dict()
    taken, notes = {}, []
    for key in RUN_DATA_KEYS:
        if key not in saved:
            continue
        if key in keep:
            if key in INPUT_KEYS and saved[key] != current["data"][key]:
                notes.append(
                    f"Warning: data.{key} is {current['data'][key]!r} (--set) but the run was "
                    f"trained with {saved[key]!r}"
                )
            continue
        if key in INPUT_KEYS and saved[key] != current["data"][key]:
            notes.append(
                f"Warning: {config.source} has data.{key} {current['data'][key]!r}, the run "
                f"{saved[key]!r}; using the run's (--set data.{key}=... overrides it)"
            )
        taken[key] = saved[key]
    current["data"].update(taken)
    try:
        changed = config_from_dict(current, source=str(path))
    except ConfigError as error:
        raise ModelFileError(str(error)) from None
    changed = dataclasses.replace(changed, source=config.source)
    if taken:
        settings = ", ".join(f"{key} {value}" for key, value in taken.items())
        notes.insert(0, f"Data settings of the run ({path}): {settings}")
    return changed, notes


def set_keys(overrides: list[str] | tuple[str, ...] | None, section: str = "data") -> tuple:
    """Keys of a section named by ``--set`` overrides (``data.image_size=64`` -> image_size)."""
    keys = []
    for text in overrides or ():
        key = text.split("=", 1)[0].strip()
        if key.startswith(f"{section}."):
            keys.append(key[len(section) + 1 :].split(".")[0])
    return tuple(keys)


def mark_run(run_dir: str | os.PathLike, status: str, message: str | None = None) -> None:
    """Records a run's status in its ``status.json``.

    Args:
        run_dir: the run directory.
        status: :data:`RUN_IN_PROGRESS` (written when training starts or resumes),
            :data:`RUN_COMPLETE` (``metrics.json`` written) or :data:`RUN_FAILED`.
        message: why it failed (one line).
    """
    if status not in (RUN_COMPLETE, RUN_IN_PROGRESS, RUN_FAILED):
        raise ValueError(f"unknown run status {status!r}")
    record = {
        "status": status,
        "time": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    if message:
        record["message"] = message.splitlines()[0] if message.strip() else message
    atomic_write_json(Path(run_dir) / STATUS_FILE, record)


def run_status(run_dir: str | os.PathLike) -> str | None:
    """Whether a run directory's run is complete, in progress or failed.

    ``in progress`` also covers a run whose process was killed (resume it with the same command).
    Directories written before ``status.json`` existed are judged by their files: ``metrics.json``
    means complete, a resume state in progress, only ``config.yaml`` failed.

    Returns:
        :data:`RUN_COMPLETE`, :data:`RUN_IN_PROGRESS`, :data:`RUN_FAILED`, or ``None`` when
        ``run_dir`` is not a run directory (no ``config.yaml``).
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        return None
    try:
        status = json.loads((run_dir / STATUS_FILE).read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        status = None
    if status in (RUN_COMPLETE, RUN_IN_PROGRESS, RUN_FAILED):
        return status
    if (run_dir / "metrics.json").is_file():
        return RUN_COMPLETE
    if (run_dir / "state" / "state.json").is_file():
        return RUN_IN_PROGRESS
    return RUN_FAILED
