"""Embedding extraction: ``net.inference.compute_embeddings`` vs ``model.predict`` per batch.

Both embed the same in-memory batches with the same small CGD model. Ours runs one
``tf.function`` inference step per batch; the seed's way calls ``model.predict`` on each batch,
which builds a data adapter, an iterator and callbacks on every call. After one untimed pass of
each (tracing, the data set's cache), each way is timed over whole passes, the two alternating
for ``--rounds`` rounds; the medians are compared. CPU seconds are printed beside the wall
seconds (they move much less with the machine's load).

    python -m benchmarks.embedding [--quick] [--backbone small_cnn] [--image-size 96] [--rounds 3]
"""

from __future__ import annotations

from benchmarks import common


def predict_per_batch(model, dataset):
    """The seed's extraction: ``model.predict`` on every batch, outputs concatenated.

    Args:
        model: A model returning embeddings (B, D) or a dict with ``"embeddings"``.
        dataset: Batches of (images, labels).

    Returns:
        (N, D) float32 embeddings.
    """
    import numpy as np

    outputs = []
    for images, _ in dataset:
        out = model.predict(images, verbose=0)
        outputs.append(out["embeddings"] if isinstance(out, dict) else out)
    return np.concatenate(outputs)


def main(argv: list[str] | None = None) -> dict:
    """Runs the benchmark and prints its table and ratio; returns the numbers."""
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--backbone", default="small_cnn")
    p.add_argument("--image-size", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--batches", type=int)
    p.add_argument("--embedding-dim", type=int)
    p.add_argument("--rounds", type=int, help="timed passes of each way, alternating")
    args = common.sizes(
        p.parse_args(argv),
        quick=dict(image_size=32, batch_size=8, batches=4, embedding_dim=32, rounds=1),
        full=dict(image_size=96, batch_size=32, batches=64, embedding_dim=512, rounds=3),
    )
    import statistics

    import numpy as np
    import tensorflow as tf

    from net.inference import compute_embeddings
    from net.model import build_cgd_model

    model = build_cgd_model(
        backbone=args.backbone,
        image_size=args.image_size,
        descriptors="SG",
        embedding_dim=args.embedding_dim,
        num_classes=0,
    )
    num = args.batch_size * args.batches
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, size=(num, args.image_size, args.image_size, 3)).astype("float32")
    labels = np.arange(num, dtype=np.int32)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(args.batch_size).cache()

    def ours():
        return compute_embeddings(model, dataset, progress=False)[0]

    def seed():
        return predict_per_batch(model, dataset)

    ours_emb, seed_emb = ours(), seed()  # warm-up: traces, the data set's cache
    gap = float(np.abs(ours_emb - seed_emb).max())
    times = common.alternate({"ours": ours, "seed": seed}, rounds=args.rounds)
    ours_s, ours_cpu = (statistics.median(values) for values in times["ours"])
    seed_s, seed_cpu = (statistics.median(values) for values in times["seed"])

    print(
        f"{num} images of {args.image_size} px in batches of {args.batch_size}; CGD (SG, "
        f"{args.embedding_dim}-d) on {args.backbone}, {model.count_params():,} parameters; "
        f"median of {args.rounds} passes of each, alternating"
    )
    common.print_table(
        ["way", "seconds", "images/s", "CPU seconds"],
        [
            [
                "seed: model.predict per batch",
                f"{seed_s:.2f}",
                f"{num / seed_s:.0f}",
                f"{seed_cpu:.2f}",
            ],
            ["ours: compute_embeddings", f"{ours_s:.2f}", f"{num / ours_s:.0f}", f"{ours_cpu:.2f}"],
        ],
    )
    print(f"same embeddings: max |difference| {gap:.1e}")
    ratio = seed_s / ours_s
    print(common.ratio_line(ratio, 1.5))
    return {
        "ours_s": ours_s,
        "seed_s": seed_s,
        "ours_cpu_s": ours_cpu,
        "seed_cpu_s": seed_cpu,
        "gap": gap,
        "ratio": ratio,
    }


if __name__ == "__main__":
    main()
