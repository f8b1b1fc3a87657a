"""Benchmarks against the seed repository's way (issue 7); each runs in its own process."""

from invoke import task

#: Benchmark modules under ``benchmarks/``, in the order ``bench.all`` runs them.
BENCHMARKS = ("pipeline", "loss", "evaluation", "embedding", "training")

_HELP = {
    "quick": "tiny sizes, a few seconds (a smoke test, not a measurement)",
    "args": "extra arguments for the benchmark script, e.g. '--num 4000' (see --help)",
}


def _run(c, name: str, quick: bool, args: str) -> str:
    """Runs ``python -m benchmarks.<name>`` and returns its last line (the ratio line)."""
    import sys

    flags = " ".join(part for part in ("--quick" if quick else "", args or "") if part)
    result = c.run(f"{sys.executable} -m benchmarks.{name} {flags}".rstrip(), pty=False)
    lines = result.stdout.strip().splitlines()
    return lines[-1] if lines else "(no output)"


def _benchmark_task(name: str, summary: str):
    """The ``bench.<name>`` task: runs ``benchmarks/<name>.py`` in its own process."""

    def run(c, quick=False, args=""):
        _run(c, name, quick, args)

    run.__name__ = run.__qualname__ = name
    run.__doc__ = summary
    return task(help=_HELP, name=name)(run)


pipeline = _benchmark_task(
    "pipeline", "Input pipeline: net.pipeline.train_dataset vs cv2 + np.pad in from_generator."
)
loss = _benchmark_task(
    "loss", "Loss: Gram-matrix batch-hard triplet vs the repeat/tile B x B x D approach."
)
evaluation = _benchmark_task(
    "evaluation",
    "Evaluation: blocked Recall@K vs pdist + squareform + argsort; a 100k run (--faiss too).",
)
embedding = _benchmark_task(
    "embedding", "Embedding extraction: compute_embeddings vs model.predict per batch."
)
training = _benchmark_task(
    "training", "Training: fit on the real pipeline vs a bare step on in-memory tensors (images/s)."
)
sop = _benchmark_task(
    "sop", "SOP scale: data.check on 120,053 records; 60,502 x 1536 evaluation (exact and FAISS)."
)


@task(name="all", help={"quick": _HELP["quick"]})
def all_(c, quick=False):
    """Runs every benchmark, one process each, then prints their ratio lines together."""
    summary = [(name, _run(c, name, quick, "")) for name in BENCHMARKS]
    print("\nSummary:")
    for name, line in summary:
        print(f"  {name:<11} {line}")
