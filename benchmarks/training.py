"""Training: images/s of the real training step on the real pipeline vs a bare step.

Real: the model compiled by ``net.training.compile_model`` (Adam, batch-hard triplet with margin
0.1 on the embeddings, the auxiliary classification loss on the logits), trained by
``model.fit`` on ``net.pipeline.train_dataset`` (JPEGs decoded, cropped to the box, resized and
augmented on the fly, as configured by default) through ``net.training.with_targets``. Bare:
the same model, losses and optimizer in a ``tf.function`` forward/backward/update step on one
batch of tensors already in memory. The ratio real / bare shows whether the pipeline and Keras'
loop starve the model (target >= 0.9). On a CPU, the pipeline and the model share the cores, so
a cheap model (small images, the small CNN) makes the ratio look worse than on a GPU.

Each way runs ``--steps`` timed steps after ``--warmup`` untimed ones (tracing; the pipeline
filling its buffers, for ``fit``, whose every call starts the data set afresh), the two ways
alternating for ``--rounds`` rounds; the medians are compared. CPU images/s (per CPU second of
all the process's threads, the pipeline's included) are printed beside the wall images/s.

    python -m benchmarks.training [--quick] [--backbone resnet50] [--image-size 128] [--rounds 3]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from benchmarks import common


def main(argv: list[str] | None = None) -> dict:
    """Runs the benchmark and prints its table and ratio; returns the numbers."""
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--backbone")
    p.add_argument("--image-size", type=int)
    p.add_argument("--classes-per-batch", type=int)
    p.add_argument("--images-per-class", type=int)
    p.add_argument("--steps", type=int, help="timed steps")
    p.add_argument("--warmup", type=int, help="untimed steps first")
    p.add_argument("--rounds", type=int, help="timed runs of each way, alternating")
    p.add_argument("--data-dir", help="where to write (or reuse) the JPEGs; default a temp dir")
    args = common.sizes(
        p.parse_args(argv),
        quick=dict(
            backbone="small_cnn",
            image_size=32,
            classes_per_batch=2,
            images_per_class=2,
            steps=3,
            warmup=2,
            rounds=1,
        ),
        full=dict(
            backbone="resnet50",
            image_size=128,
            classes_per_batch=4,
            images_per_class=4,
            steps=10,
            warmup=3,
            rounds=3,
        ),
    )
    import statistics

    import keras
    import tensorflow as tf

    from net.data import read_cars196
    from net.demo_data import generate_demo_dataset
    from net.losses import AuxiliaryClassificationLoss, BatchHardTripletLoss
    from net.model import build_cgd_model
    from net.pipeline import train_dataset
    from net.training import compile_model, output_names, with_targets

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data_dir or tmp)
        generate_demo_dataset(
            root, num_classes=12, images_per_class=8, min_size=100, max_size=300, seed=0
        )
        records = read_cars196(root)
        keras.utils.set_random_seed(0)
        model = build_cgd_model(
            backbone=args.backbone,
            image_size=args.image_size,
            descriptors="SG",
            embedding_dim=1536 if not args.quick else 32,
            num_classes=records.num_classes,
        )
        metric_loss = BatchHardTripletLoss(margin=0.1)
        auxiliary_loss = AuxiliaryClassificationLoss()
        compile_model(
            model,
            metric_loss=metric_loss,
            auxiliary_loss=auxiliary_loss,
            auxiliary_weight=1.0,
            learning_rate=1e-4,
        )
        batch = args.classes_per_batch * args.images_per_class
        dataset = train_dataset(
            records,
            classes_per_batch=args.classes_per_batch,
            images_per_class=args.images_per_class,
            image_size=args.image_size,
            crop_mode="bbox",
            augment=True,
            seed=0,
        )

        # Real: model.fit, timed from the end of the warm-up steps to the end of the last.
        stamps: list[tuple[float, float]] = []
        timer = keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda batch, logs=None: stamps.append(
                (time.perf_counter(), time.process_time())
            )
        )
        real_data = with_targets(dataset, output_names(model))

        def real() -> tuple[float, float]:
            stamps.clear()
            model.fit(
                real_data,
                epochs=1,
                steps_per_epoch=args.warmup + args.steps,
                callbacks=[timer],
                verbose=0,
                shuffle=False,
            )
            (wall_start, cpu_start), (wall_end, cpu_end) = stamps[args.warmup - 1], stamps[-1]
            return wall_end - wall_start, cpu_end - cpu_start

        # Bare: the same step on one batch already in memory.
        images, labels = next(iter(dataset))
        optimizer = model.optimizer

        @tf.function(jit_compile=False)
        def bare_step():
            with tf.GradientTape() as tape:
                outputs = model(images, training=True)
                loss = metric_loss(labels, outputs["embeddings"]) + auxiliary_loss(
                    labels, outputs["logits"]
                )
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply(grads, model.trainable_variables)
            return loss

        for _ in range(args.warmup):  # tracing; later rounds reuse the trace
            bare_step().numpy()

        def bare() -> tuple[float, float]:
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                bare_step().numpy()
            return time.perf_counter() - wall, time.process_time() - cpu

        times = common.alternate({"real": real, "bare": bare}, rounds=args.rounds)
        images_timed = args.steps * batch
        real_rate, real_cpu_rate = (images_timed / statistics.median(v) for v in times["real"])
        bare_rate, bare_cpu_rate = (images_timed / statistics.median(v) for v in times["bare"])

    print(
        f"CGD (SG) on {args.backbone} at {args.image_size} px, batch {args.classes_per_batch} x "
        f"{args.images_per_class}; {args.steps} steps timed after {args.warmup}, median of "
        f"{args.rounds} runs of each, alternating"
    )
    common.print_table(
        ["step", "images/s", "images/CPU s"],
        [
            [
                "bare: forward/backward on tensors in memory",
                f"{bare_rate:.1f}",
                f"{bare_cpu_rate:.1f}",
            ],
            [
                "real: compile_model + fit on train_dataset",
                f"{real_rate:.1f}",
                f"{real_cpu_rate:.1f}",
            ],
        ],
    )
    ratio = real_rate / bare_rate
    print(common.ratio_line(ratio, 0.9, unit=""))
    return {
        "real": real_rate,
        "bare": bare_rate,
        "real_cpu": real_cpu_rate,
        "bare_cpu": bare_cpu_rate,
        "ratio": ratio,
    }


if __name__ == "__main__":
    main()
