"""Evaluation: ``net.analysis.recall_at_k`` vs ``pdist`` + ``squareform`` + full ``argsort``.

Recall@1/2/4/8 of N random unit embeddings (Cars196 test split size by default: 8,131 x 1536,
98 classes), every item a query, itself excluded. Ours: the blocked exact search of
``net.neighbours`` (float32 matrix products per block of 1,024 queries, ``np.partition`` for the
k best). The seed's way: ``scipy.spatial.distance.pdist`` (float64), ``squareform`` to the full
N x N matrix, and a full ``argsort`` of every row. Peak memory of each is measured with
tracemalloc (NumPy reports its allocations to it). Then a large run of ours alone (100,000 x
1536 by default, 1,000 classes), with its time and peak memory; ``--faiss`` adds the FAISS
exact and IVF searches of ``net.neighbours`` on the first data set.

    python -m benchmarks.evaluation [--quick] [--num N] [--large-num N (0 skips)] [--faiss]
"""

from __future__ import annotations

import time
import tracemalloc

from benchmarks import common

KS = (1, 2, 4, 8)


def unit_embeddings(num: int, dim: int, classes: int, seed: int = 0):
    """(num, dim) float32 random unit vectors and (num,) int labels in [0, classes)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    values = rng.standard_normal((num, dim), dtype=np.float32)
    values /= np.linalg.norm(values, axis=1, keepdims=True)
    return values, rng.integers(classes, size=num)


def seed_recall_at_k(embeddings, labels, ks=KS) -> dict[int, float]:
    """The seed's Recall@K: full distance matrix from pdist, full argsort of each row.

    Args:
        embeddings: (N, D).
        labels: (N,).
        ks: The Ks.

    Returns:
        ``{k: recall}``.
    """
    import numpy as np
    from scipy.spatial.distance import pdist, squareform

    distances = squareform(pdist(embeddings, "euclidean"))
    np.fill_diagonal(distances, np.inf)  # the query itself goes last
    order = np.argsort(distances, axis=1)
    hits = labels[order[:, : max(ks)]] == labels[:, None]
    return {k: float(hits[:, :k].any(axis=1).mean()) for k in ks}


def measured(fn):
    """Runs ``fn()`` once; returns (result, seconds, peak traced bytes)."""
    tracemalloc.start()
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, seconds, peak


def main(argv: list[str] | None = None) -> dict:
    """Runs the benchmark and prints its tables and ratio; returns the numbers."""
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--num", type=int, help="embeddings in the comparison")
    p.add_argument("--dim", type=int)
    p.add_argument("--classes", type=int)
    p.add_argument("--large-num", type=int, help="embeddings in the large run of ours (0: skip)")
    p.add_argument("--large-classes", type=int)
    p.add_argument("--faiss", action="store_true", help="also time net.neighbours' FAISS searches")
    args = common.sizes(
        p.parse_args(argv),
        quick=dict(num=600, dim=32, classes=20, large_num=2000, large_classes=40),
        full=dict(num=8131, dim=1536, classes=98, large_num=100_000, large_classes=1000),
    )
    from net.analysis import recall_at_k

    embeddings, labels = unit_embeddings(args.num, args.dim, args.classes)
    print(f"{args.num} x {args.dim} unit embeddings, {args.classes} classes, Recall@{KS}")
    ours, ours_s, ours_bytes = measured(lambda: recall_at_k(embeddings, labels, KS))
    seed, seed_s, seed_bytes = measured(lambda: seed_recall_at_k(embeddings, labels))
    gap = max(abs(ours[k] - seed[k]) for k in KS)
    rows = [
        ["seed: pdist + squareform + argsort", f"{seed_s:.2f}", common.megabytes(seed_bytes)],
        ["ours: analysis.recall_at_k", f"{ours_s:.2f}", common.megabytes(ours_bytes)],
    ]
    results = {"ours_s": ours_s, "seed_s": seed_s, "ours_peak": ours_bytes, "seed_peak": seed_bytes}
    if args.faiss:
        for method in ("faiss", "faiss_ivf"):
            recalls, seconds, peak = measured(
                lambda m=method: recall_at_k(embeddings, labels, KS, method=m)
            )
            rows.append(
                [
                    f"ours: recall_at_k(method={method!r})",
                    f"{seconds:.2f}",
                    common.megabytes(peak) + "*",
                ]
            )
            results[f"{method}_s"] = seconds
            print(f"{method}: Recall@1 {recalls[1]:.4f} (exact {ours[1]:.4f})")
    common.print_table(["way", "seconds", "peak memory (tracemalloc)"], rows)
    if args.faiss:
        print("* FAISS allocates in C++, outside tracemalloc's view")
    print(f"same recalls: max |difference| {gap:.1e} ({ours})")

    if args.large_num:
        large, large_labels = unit_embeddings(args.large_num, args.dim, args.large_classes, seed=1)
        _, large_s, large_bytes = measured(lambda: recall_at_k(large, large_labels, KS))
        print(
            f"large run, ours alone: {args.large_num} x {args.dim}, {args.large_classes} classes: "
            f"{large_s:.1f} s, peak memory {common.megabytes(large_bytes)} "
            f"(embeddings themselves {common.megabytes(large.nbytes)}; the seed's N x N float64 "
            f"matrix alone would be {common.megabytes(8 * args.large_num**2)})"
        )
        results.update(large_s=large_s, large_peak=large_bytes)

    memory = ours_bytes / seed_bytes
    print(
        f"memory: ours {memory:.3f} of the seed's peak (target <= 0.25): "
        f"{'met' if memory <= 0.25 else 'MISSED'}"
    )
    ratio = seed_s / ours_s
    print(common.ratio_line(ratio, 10.0))
    results.update(memory_fraction=memory, recall_gap=gap, ratio=ratio)
    return results


if __name__ == "__main__":
    main()
