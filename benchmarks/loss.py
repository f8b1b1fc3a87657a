"""Loss: Gram-matrix ``pairwise_distances`` + batch-hard triplet vs the repeat/tile approach.

Both compute the batch-hard triplet loss (hinge, margin 0.1) of a (B, D) batch of embeddings
and its gradient, each step a ``tf.function``. Ours (``net.losses.batch_hard_triplet_loss``)
gets distances from the Gram matrix: one (B, D) x (D, B) product and (B, B) tensors only. The
seed's approach builds every pairwise difference: ``tf.repeat`` and ``tf.tile`` make two
(B*B, D) copies, their difference and its square are more, and the backward pass makes as many
again. Memory is reported two ways: the analytic size of the largest tensors each way, and the
measured peak growth of the process's resident memory (VmHWM) during each way's first step
(TensorFlow's CPU allocator keeps freed memory, so later steps show no growth).

    python -m benchmarks.loss [--quick] [--batch 128] [--dim 1536]
"""

from __future__ import annotations

from benchmarks import common


def tile_triplet_loss(labels, embeddings, margin: float = 0.1):
    """Batch-hard triplet loss through a B x B x D difference tensor (the seed's way).

    Args:
        labels: (B,) int class ids.
        embeddings: (B, D) float32.
        margin: Hinge margin.

    Returns:
        Scalar float32 loss: mean over anchors of max(0, d_ap - d_an + margin), with d_ap the
        farthest same-class and d_an the nearest other-class Euclidean distance.
    """
    import tensorflow as tf

    b = tf.shape(embeddings)[0]
    anchors = tf.repeat(embeddings, b, axis=0)  # (B*B, D): row i*B + j is e_i
    others = tf.tile(embeddings, [b, 1])  # (B*B, D): row i*B + j is e_j
    squared = tf.reduce_sum(tf.square(anchors - others), axis=1)
    distances = tf.reshape(tf.sqrt(squared + 1e-12), [b, b])
    same = tf.equal(labels[:, None], labels[None, :])
    positive = tf.logical_and(same, tf.logical_not(tf.eye(b, dtype=tf.bool)))
    hardest_positive = tf.reduce_max(tf.where(positive, distances, 0.0), axis=1)
    row_max = tf.reduce_max(distances, axis=1, keepdims=True)
    hardest_negative = tf.reduce_min(tf.where(same, row_max, distances), axis=1)
    return tf.reduce_mean(tf.maximum(hardest_positive - hardest_negative + margin, 0.0))


def main(argv: list[str] | None = None) -> dict:
    """Runs the benchmark and prints its table and ratio; returns the numbers."""
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, help="B = P x K (K = 4)")
    p.add_argument("--dim", type=int, help="embedding dimension D")
    p.add_argument("--repeat", type=int, help="timed steps per way")
    args = common.sizes(
        p.parse_args(argv),
        quick=dict(batch=16, dim=32, repeat=3),
        full=dict(batch=128, dim=1536, repeat=20),
    )
    import numpy as np
    import tensorflow as tf

    from net.losses import batch_hard_triplet_loss

    b, d = args.batch, args.dim
    rng = np.random.default_rng(0)
    values = rng.normal(size=(b, d)).astype(np.float32)
    values /= np.linalg.norm(values, axis=1, keepdims=True)
    embeddings = tf.Variable(values)
    labels = tf.constant(np.repeat(np.arange(b // 4), 4)[:b], tf.int32)

    def step(loss_fn):
        @tf.function(jit_compile=False)
        def run():
            with tf.GradientTape() as tape:
                loss = loss_fn(labels, embeddings, margin=0.1)
            return loss, tape.gradient(loss, embeddings)

        return run

    ours, seed = step(batch_hard_triplet_loss), step(tile_triplet_loss)
    # Memory over each way's first step (tracing included, a few MB): TensorFlow's CPU allocator
    # keeps freed blocks, so later steps would show no growth. Ours runs first.
    with common.PeakRSS() as ours_peak:
        loss_ours, grad_ours = ours()
    with common.PeakRSS() as seed_peak:
        loss_seed, grad_seed = seed()
    ours_mb, seed_mb = ours_peak.growth_mb, seed_peak.growth_mb
    loss_gap = abs(float(loss_ours) - float(loss_seed))
    grad_gap = float(tf.reduce_max(tf.abs(grad_ours - grad_seed)))

    def timed(fn):
        return common.time_calls(lambda: fn()[1].numpy(), repeat=args.repeat, warmup=2)

    ours_s, seed_s = timed(ours), timed(seed)
    big = b * b * d * 4  # bytes of one (B*B, D) float32 tensor
    ours_big = max(b * b, b * d) * 4

    def rss(mb):
        return "n/a" if mb is None else f"{mb:.1f} MB"

    print(f"batch {b} (P={b // 4} x K=4), dim {d}; forward + backward, median of {args.repeat}")
    print(
        f"same results: |loss difference| {loss_gap:.2e}, max |gradient difference| {grad_gap:.2e}"
    )
    common.print_table(
        ["way", "ms/step", "largest tensor (analytic)", "peak RSS growth, 1st step"],
        [
            [
                "seed: repeat/tile B x B x D",
                f"{1e3 * seed_s:.2f}",
                f"{common.megabytes(big)} (B*B x D), >= 4 live",
                rss(seed_mb),
            ],
            [
                "ours: Gram-matrix distances",
                f"{1e3 * ours_s:.2f}",
                f"{common.megabytes(ours_big)} (max of B x B, B x D)",
                rss(ours_mb),
            ],
        ],
    )
    ratio = seed_s / ours_s
    print(common.ratio_line(ratio, 10.0))
    return {
        "ours_ms": 1e3 * ours_s,
        "seed_ms": 1e3 * seed_s,
        "ours_rss_mb": ours_mb,
        "seed_rss_mb": seed_mb,
        "largest_tensor_seed_bytes": big,
        "largest_tensor_ours_bytes": ours_big,
        "loss_gap": loss_gap,
        "grad_gap": grad_gap,
        "ratio": ratio,
    }


if __name__ == "__main__":
    main()
