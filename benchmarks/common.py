"""Shared helpers of the benchmarks: arguments, timing, peak memory and the ratio line."""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the ``--quick`` flag every benchmark has.

    Args:
        description: The benchmark's one-line description.

    Returns:
        The parser; benchmarks add their own size options with ``None`` defaults, filled in
        from the quick or full sizes by :func:`sizes`.
    """
    result = argparse.ArgumentParser(description=description)
    result.add_argument(
        "--quick", action="store_true", help="tiny sizes, a few seconds (smoke tests)"
    )
    return result


def sizes(args: argparse.Namespace, quick: dict, full: dict) -> argparse.Namespace:
    """Fills each size option left at None with its quick or full default.

    Args:
        args: Parsed arguments.
        quick: Defaults with ``--quick``.
        full: Defaults without it.

    Returns:
        ``args``, completed in place.
    """
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args


def time_calls(fn: Callable[[], object], *, repeat: int, warmup: int = 1) -> float:
    """Median wall time of ``repeat`` calls of ``fn`` after ``warmup`` untimed calls.

    Args:
        fn: The work to time; it must finish its work before returning (e.g. call ``.numpy()``).
        repeat: Timed calls (>= 1).
        warmup: Untimed calls first (tracing, caches).

    Returns:
        Median seconds per call.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def alternate(
    ways: dict[str, Callable[[], object]], *, rounds: int
) -> dict[str, tuple[list[float], list[float]]]:
    """Times each way once per round, the order reversed every other round (A B, B A, ...).

    On a shared machine the load drifts over a run; timing the two ways alternately, several
    times, keeps a change of load from landing on one way only. CPU seconds (all threads of the
    process) are recorded beside the wall seconds: they move much less with the load.

    Args:
        ways: Name -> work to time; each must finish its work before returning. A way that
            times only part of its work (the steps after a warm-up) returns that part's
            (wall seconds, CPU seconds); any other return value times the whole call.
        rounds: Times each way runs (>= 1).

    Returns:
        Name -> (wall seconds, CPU seconds), one of each per round.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in ways}
    names = list(ways)
    for round_index in range(rounds):
        for name in names if round_index % 2 == 0 else names[::-1]:
            wall, cpu = time.perf_counter(), time.process_time()
            timed = ways[name]()
            if not (isinstance(timed, tuple) and [type(t) for t in timed] == [float, float]):
                timed = (time.perf_counter() - wall, time.process_time() - cpu)
            times[name][0].append(timed[0])
            times[name][1].append(timed[1])
    return times


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakRSS:
    """Peak growth of the process's resident memory during a ``with`` block (Linux).

    On entry the kernel's high-water mark (VmHWM) is reset to the current RSS by writing 5 to
    ``/proc/self/clear_refs``; on exit the growth is VmHWM minus the RSS at entry. This counts
    everything the process touched (NumPy, TensorFlow's CPU allocator, libraries), unlike
    tracemalloc, which sees only Python-managed allocations. ``growth_mb`` is None where the
    files are unavailable.
    """

    def __enter__(self) -> PeakRSS:
        self.growth_mb: float | None = None
        self._start = None
        try:
            _CLEAR_REFS.write_text("5")
            self._start = _status_kib("VmRSS")
        except OSError:
            self._start = None
        return self

    def __exit__(self, *exc_info: object) -> None:
        peak = _status_kib("VmHWM")
        if self._start is not None and peak is not None:
            self.growth_mb = max(0.0, (peak - self._start) / 1024.0)


def megabytes(num_bytes: float) -> str:
    """Formats a byte count in MB (10^6 bytes) with one decimal."""
    return f"{num_bytes / 1e6:.1f} MB"


def ratio_line(ratio: float, target: float, *, unit: str = "x") -> str:
    """The last line every benchmark prints.

    Args:
        ratio: Measured ratio, ours over the seed's (higher is better).
        target: The issue's target for it.
        unit: ``"x"`` for speed-ups, ``""`` for plain ratios.

    Returns:
        E.g. ``"ratio: 4.2x (target >= 3x): met"``.
    """
    verdict = "met" if ratio >= target else "MISSED"
    return f"ratio: {ratio:.2f}{unit} (target >= {target:g}{unit}): {verdict}"


def print_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Prints rows as an aligned plain-text table (first column left, others right)."""
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for n, row in enumerate(cells):
        first = row[0].ljust(widths[0])
        rest = [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        print("  ".join([first, *rest]).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
