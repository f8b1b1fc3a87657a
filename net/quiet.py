"""Quiet start-up: TensorFlow imported without its C++ start-up notices.

TensorFlow's C++ libraries log a few lines while they load (abseil's "All log messages before
absl::InitializeLog() is called are written to STDERR", the oneDNN notice, "Could not find cuda
drivers"), twice, even with ``TF_CPP_MIN_LOG_LEVEL`` set: they are written before TensorFlow
applies that variable. :func:`import_tensorflow` sets ``TF_CPP_MIN_LOG_LEVEL`` to 2 unless the
user chose a level, imports TensorFlow with the process's standard error (file descriptor 2)
sent to a temporary file, and then writes back every line the chosen level does not hide:
errors, Python warnings and anything unexpected still come through.

This module imports no TensorFlow at module level, so the invoke tasks can call it first.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator

#: ``TF_CPP_MIN_LOG_LEVEL`` of the tasks unless the user set one: 2 hides INFO and WARNING.
DEFAULT_LEVEL = "2"

#: An abseil/TensorFlow C++ log line: severity letter, date, time, thread, file:line].
_LOG_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ [\w./-]+:\d+\] ")
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}
_NO_CUDA_DRIVER = "Could not find cuda drivers"
_CUINIT_FAILED = "failed call to cuInit"
_ABSL_PREAMBLE = "All log messages before absl::InitializeLog() is called are written to STDERR"


def log_level() -> int:
    """The ``TF_CPP_MIN_LOG_LEVEL`` in effect (0 when unset or not a number)."""
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return 0


def shown(line: str, level: int, *, no_cuda_driver: bool = False) -> bool:
    """Whether a start-up line of standard error is shown at ``TF_CPP_MIN_LOG_LEVEL`` ``level``.

    C++ log lines below the level are hidden (0 INFO, 1 WARNING, 2 ERROR, 3 FATAL), as is
    abseil's preamble and the instruction-set notice's continuation line once INFO is hidden;
    so is the error "failed call to cuInit" when TensorFlow has just said that the machine has
    no CUDA driver (``no_cuda_driver``): a CPU machine, where it is expected. Every other line
    is shown.
    """
    if level <= 0:
        return True
    if _ABSL_PREAMBLE in line or line.startswith("To enable the following instructions"):
        return False
    if no_cuda_driver and _CUINIT_FAILED in line:
        return False
    match = _LOG_LINE.match(line)
    return match is None or _SEVERITY[match.group(1)] >= level


@contextlib.contextmanager
def filtered_stderr(keep: Callable[[str, str], bool]) -> Iterator[None]:
    """Captures file descriptor 2 (C++ and Python writes alike) and writes back kept lines.

    Args:
        keep: function of a line and the whole captured text: whether to write the line back.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # No usable standard error: nothing to filter.
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace")
            lines = text.splitlines(keepends=True)
            kept = "".join(line for line in lines if keep(line, text))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


def import_tensorflow() -> None:
    """Imports TensorFlow (once) without the start-up notices the log level hides.

    ``TF_CPP_MIN_LOG_LEVEL`` defaults to :data:`DEFAULT_LEVEL` unless the user set it. The
    physical devices are listed inside the filter too, since looking for GPUs logs its own
    notices; this does not start TensorFlow's runtime, so distribution strategies can still be
    set up afterwards.
    """
    if not os.environ.get("TF_CPP_MIN_LOG_LEVEL", "").strip():  # unset or empty: not a choice
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = DEFAULT_LEVEL
    if "tensorflow" in sys.modules:
        return
    level = log_level()

    def keep(line: str, text: str) -> bool:
        return shown(line, level, no_cuda_driver=_NO_CUDA_DRIVER in text)

    with filtered_stderr(keep):
        import tensorflow as tf

        tf.config.list_physical_devices()
