"""Smoke tests: each benchmark runs end to end on tiny sizes and prints its ratio line last.

No timing assertions (the machines are noisy); the benchmarks' own cross-checks (same loss,
same recalls, same embeddings) are asserted, since the comparisons are only fair if both ways
compute the same thing.
"""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import common, embedding, evaluation, loss, pipeline, training

RATIO_LINE = re.compile(r"^ratio: \d+\.\d\dx? \(target >= [\d.]+x?\): (met|MISSED)$")


def last_line(capsys):
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines, "the benchmark printed nothing"
    return lines[-1]


def test_ratio_line_format():
    assert common.ratio_line(4.2, 3.0) == "ratio: 4.20x (target >= 3x): met"
    assert common.ratio_line(0.85, 0.9, unit="") == "ratio: 0.85 (target >= 0.9): MISSED"


def test_sizes_fill_only_missing_options():
    args = common.parser("x").parse_args(["--quick"])
    args.num = 5
    common.sizes(args, quick={"num": 1, "dim": 2}, full={"num": 3, "dim": 4})
    assert (args.num, args.dim) == (5, 2)


def test_alternate_reverses_the_order_each_round_and_takes_a_ways_own_timing():
    calls = []

    def way(name, result=None):
        def run():
            calls.append(name)
            return result

        return run

    times = common.alternate(
        {"a": way("a"), "b": way("b", (2.5, 1.5)), "c": way("c", (1, 2))}, rounds=3
    )
    assert calls == ["a", "b", "c", "c", "b", "a", "a", "b", "c"]
    assert times["b"] == ([2.5] * 3, [1.5] * 3)  # the part the way timed itself
    # Any other return value (here a pair of ints, like an array or a tuple of results) is not a
    # timing: the whole call is timed.
    for name in ("a", "c"):
        walls, cpus = times[name]
        assert len(walls) == len(cpus) == 3
        assert all(0 <= value < 1 for value in walls + cpus)
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        common.alternate({"a": way("a")}, rounds=0)


PEAK_RSS_CHECK = """
import numpy as np
from benchmarks import common
with common.PeakRSS() as peak:
    block = np.ones(50_000_000, np.uint8)  # 50 MB, touched
print(peak.growth_mb)
"""


def test_peak_rss_sees_a_large_allocation():
    """In a fresh process: inside the test session, memory other tests free while the block is
    allocated (TensorFlow's threads) can hide the growth."""
    completed = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_CHECK],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    growth = completed.stdout.strip().splitlines()[-1]
    if growth == "None":
        pytest.skip("no /proc/self/clear_refs here")
    assert float(growth) >= 45


def test_pipeline_benchmark(capsys):
    result = pipeline.main(["--quick"])
    assert RATIO_LINE.match(last_line(capsys))
    assert min(result[key] for key in ("seed", "ours", "ours_augmented", "ours_cached")) > 0


def test_seed_loader_pads_to_a_square_and_resizes(demo_dataset_root):
    from net.data import read_cars196

    records = read_cars196(demo_dataset_root)
    dataset = pipeline.seed_dataset(
        records, classes_per_batch=2, images_per_class=3, image_size=40, seed=0
    )
    images, labels = next(iter(dataset))
    assert images.shape == (6, 40, 40, 3) and images.dtype.name == "float32"
    assert float(images.numpy().max()) <= 255.0
    labels = labels.numpy()
    assert (labels[:3] == labels[0]).all() and (labels[3:] == labels[3]).all()
    assert labels[0] != labels[3]


def test_loss_benchmark_both_ways_agree(capsys):
    result = loss.main(["--quick"])
    assert RATIO_LINE.match(last_line(capsys))
    assert result["loss_gap"] < 1e-5 and result["grad_gap"] < 1e-5
    assert result["largest_tensor_seed_bytes"] == 16 * 16 * 32 * 4


def test_tile_triplet_loss_hand_computed():
    """Points 0, 1 (class 0) and 3, 5 (class 1) on a line, margin 0.1.

    Anchor 0: d_ap = 1, d_an = 3 -> 0; anchor 1: d_ap = 1, d_an = 2 -> 0;
    anchor 3: d_ap = 2, d_an = 2 -> 0.1; anchor 5: d_ap = 2, d_an = 4 -> 0. Mean 0.025.
    """
    import tensorflow as tf

    embeddings = tf.constant([[0.0], [1.0], [3.0], [5.0]])
    value = loss.tile_triplet_loss(tf.constant([0, 0, 1, 1]), embeddings, margin=0.1)
    assert float(value) == pytest.approx(0.025, abs=1e-5)


def test_evaluation_benchmark_recalls_agree(capsys):
    result = evaluation.main(["--quick", "--faiss"])
    assert RATIO_LINE.match(last_line(capsys))
    assert result["recall_gap"] == 0.0
    assert result["large_peak"] > 0


def test_seed_recall_hand_computed():
    """Points 0, 1, 10, 12 with labels a, b, a, b.

    Nearest (self excluded): 0 -> 1 (b, miss), 1 -> 0 (a, miss), 10 -> 12 (b, miss),
    12 -> 10 (a, miss): Recall@1 = 0. Two nearest: 0 -> {1, 10} hit, 1 -> {0, 10} miss,
    10 -> {12, 1} miss, 12 -> {10, 1} hit: Recall@2 = 2/4.
    """
    points = np.array([[0.0], [1.0], [10.0], [12.0]])
    recalls = evaluation.seed_recall_at_k(points, np.array([0, 1, 0, 1]), ks=(1, 2))
    assert recalls == {1: 0.0, 2: 0.5}


def test_embedding_benchmark_same_embeddings(capsys):
    result = embedding.main(["--quick"])
    assert RATIO_LINE.match(last_line(capsys))
    assert result["gap"] < 1e-5


def test_training_benchmark(capsys):
    result = training.main(["--quick"])
    assert RATIO_LINE.match(last_line(capsys))
    assert result["real"] > 0 and result["bare"] > 0


def test_bench_tasks_run_each_benchmark_in_its_own_process():
    from invoke import Collection, Context

    from tasks import bench

    class FakeContext(Context):
        def __init__(self):
            super().__init__()
            self.commands = []

        def run(self, command, pty=False):
            self.commands.append(command)
            return type("Result", (), {"stdout": "table\nratio: 2.00x (target >= 1x): met\n"})()

    # Every benchmark has its task; bench.all runs BENCHMARKS (not the long SOP-scale one).
    assert set(Collection.from_module(bench).task_names) == {*bench.BENCHMARKS, "sop", "all"}
    context = FakeContext()
    bench.all_(context, quick=True)
    assert [c.split(" -m ")[1] for c in context.commands] == [
        f"benchmarks.{name} --quick" for name in bench.BENCHMARKS
    ]
    context = FakeContext()
    bench.evaluation(context, args="--num 100 --faiss")
    assert context.commands[0].endswith("-m benchmarks.evaluation --num 100 --faiss")
