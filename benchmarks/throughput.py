"""Throughput benchmarks: batch generation and training steps.

Run from the repository root (each command rewrites its section of
``benchmarks/results/throughput.json`` with figures, command, date and machine)::

    .venv/bin/python -m benchmarks.throughput --only generator
    .venv/bin/python -m benchmarks.throughput --only training
    # on a GPU with JAX (see ../shared/GPU.md): 60,000 images, batch 256 and 1024
    KERAS_BACKEND=jax python -m benchmarks.throughput --only training --dataset-size 60000 \
        --train-batch-sizes 256 1024 --train-steps 50

Generator section: triplets per second of :class:`helpers.samplers.TripletGenerator` (batch 256, no
augmentation) against a per-sample reference sampler written the way the reference notebooks wrote it
(a Python loop: per sample, a random anchor class, ``np.random.choice`` among that class's indices for
anchor and positive, another class for the negative, images stacked), both measured in the same run on
the same data (the bundled MNIST train split). Target: vectorised >= 10x the reference.

Training section: images per second of each registry model for one epoch after a warm-up epoch, and
the share of step time spent waiting for the generator.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from benchmarks.common import print_table, stamp
from helpers import config

RESULTS = config.ROOT / "benchmarks" / "results" / "throughput.json"


# --- generator section -------------------------------------------------------------------------


class ReferenceTripletSampler:
    """Per-sample triplet sampler in the style of the reference notebooks (one Python call per sample)."""

    def __init__(self, x, y, batch_size=256):
        self.x, self.y, self.batch_size = x, y, batch_size
        self.classes = np.unique(y)
        self.class_indices = {c: np.where(y == c)[0] for c in self.classes}

    def __getitem__(self, i):
        anchors, positives, negatives = [], [], []
        for _ in range(self.batch_size):
            anchor_class = np.random.choice(self.classes)
            negative_class = np.random.choice([c for c in self.classes if c != anchor_class])
            a_idx, p_idx = np.random.choice(self.class_indices[anchor_class], 2, replace=False)
            n_idx = np.random.choice(self.class_indices[negative_class])
            anchors.append(self.x[a_idx])
            positives.append(self.x[p_idx])
            negatives.append(self.x[n_idx])
        return (np.stack(anchors), np.stack(positives), np.stack(negatives)), np.zeros(
            self.batch_size, np.float32
        )


def _load_mnist_train(seed=42):
    try:
        from helpers.data import load_dataset

        ds = load_dataset("mnist", source="bundled", seed=seed, verbose=False)
        return ds.x_train, ds.y_train, "mnist bundled train split"
    except Exception as exc:  # data module unavailable: same shapes, random content
        rng = np.random.default_rng(seed)
        print(
            f"[bench] bundled MNIST unavailable ({type(exc).__name__}: {exc}); using random data",
            file=sys.stderr,
        )
        return (
            rng.random((60000, 28, 28, 1), dtype=np.float32),
            rng.integers(0, 10, 60000),
            "random (60000, 28, 28, 1)",
        )


def _time_batches(sampler, n_batches, budget_s):
    """Seconds per batch over up to ``n_batches`` batches (stops early after ``budget_s``)."""
    sampler[0]  # warm-up
    start, done = time.perf_counter(), 0
    for i in range(n_batches):
        sampler[i % len(sampler) if hasattr(sampler, "__len__") else i]
        done += 1
        if time.perf_counter() - start > budget_s:
            break
    return (time.perf_counter() - start) / done, done


def bench_generator(batch_size=256, n_batches=50, budget_s=5.0, seed=0):
    """Rows ``{sampler, batch_size, batches, s_per_batch, triplets_per_s, speedup}`` for both samplers."""
    from helpers.samplers import TripletGenerator

    x, y, data_desc = _load_mnist_train()
    np.random.seed(seed)
    samplers = {
        "reference per-sample loop": ReferenceTripletSampler(x, y, batch_size),
        "TripletGenerator (vectorised)": TripletGenerator(
            x, y, batch_size=batch_size, seed=seed, steps_per_epoch=10_000
        ),
    }
    rows = []
    for name, sampler in samplers.items():
        s, done = _time_batches(sampler, n_batches, budget_s)
        rows.append(
            dict(
                section="generator",
                sampler=name,
                data=data_desc,
                batch_size=batch_size,
                batches=done,
                s_per_batch=s,
                triplets_per_s=batch_size / s,
            )
        )
    ref = rows[0]["triplets_per_s"]
    for row in rows:
        row["speedup"] = row["triplets_per_s"] / ref
    return rows


# --- training section ---------------------------------------------------------------------------


def _tile(data, size):
    """The embedded training split tiled (with its labels) to ``size`` images."""
    reps = int(np.ceil(size / len(data.x_train)))
    return np.tile(data.x_train, (reps, 1, 1, 1))[:size], np.tile(data.y_train, reps)[:size]


def bench_training(models=None, batch_sizes=(None,), steps=10, dataset_size=None, seed=0):
    """Rows ``{model, batch_size, images_per_s, step_s, data_wait_share}`` per model and batch size.

    One warm-up epoch of ``steps`` steps (compilation), then one timed epoch. ``data_wait_share`` is
    the generator's own time for the same batches divided by the timed epoch: with one worker the
    trainer waits for every batch, so it is the share of step time spent waiting for data.
    """
    import keras

    from helpers.data import load_dataset
    from helpers.registry import MODELS, build_training_model, compile_training_model
    from helpers.training import make_generators

    data = load_dataset("mnist", source="bundled", verbose=False)
    desc = f"mnist bundled train split ({len(data.x_train)} images)"
    if dataset_size:
        import dataclasses

        x, y = _tile(data, dataset_size)
        data = dataclasses.replace(data, x_train=x, y_train=y)
        desc = f"embedded train split tiled to {dataset_size} images"
    rows = []
    for name in models or list(MODELS):
        for batch_size in batch_sizes:
            bs = batch_size or MODELS[name].batch_size
            keras.utils.set_random_seed(seed)
            model, embedding = build_training_model(name, len(data.class_names))
            compile_training_model(model, name)
            gen, _ = make_generators(MODELS[name], data, bs, steps, seed=seed, embedding=embedding)
            model.fit(gen, epochs=1, verbose=0)  # warm-up: graph tracing / XLA compilation
            gen.set_epoch(1)
            start = time.perf_counter()
            model.fit(gen, epochs=1, verbose=0)
            epoch_s = time.perf_counter() - start
            t0 = time.perf_counter()
            for i in range(len(gen)):
                gen[i]
            data_s = time.perf_counter() - t0
            images = steps * bs * len(model.inputs)
            rows.append(
                dict(
                    section="training",
                    model=name,
                    data=desc,
                    batch_size=bs,
                    steps=steps,
                    images_per_s=images / epoch_s,
                    step_s=epoch_s / steps,
                    data_wait_share=data_s / epoch_s,
                )
            )
            print(f"[bench] {name} batch {bs}: {images / epoch_s:,.0f} images/s", flush=True)
    return rows


# --- driver ------------------------------------------------------------------------------------


COLUMNS = [
    "section",
    "sampler",
    "model",
    "batch_size",
    "batches",
    "s_per_batch",
    "triplets_per_s",
    "speedup",
    "images_per_s",
    "step_s",
    "data_wait_share",
]


def _parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("generator", "training", "all"), default="all")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=50, help="batches per generator sampler (max)")
    parser.add_argument("--budget", type=float, default=5.0, help="seconds per generator sampler (max)")
    parser.add_argument("--models", nargs="*", help="registry names (default: all six)")
    parser.add_argument(
        "--train-batch-sizes",
        type=int,
        nargs="*",
        default=[0],
        help="training batch sizes (0: each model's registry default)",
    )
    parser.add_argument("--train-steps", type=int, default=10, help="steps per timed epoch")
    parser.add_argument(
        "--dataset-size",
        type=int,
        default=0,
        help="tile the embedded training split to this many images (e.g. 60000)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser


def _measure(args):
    """The rows of the sections ``--only`` asks for."""
    rows = []
    if args.only in ("generator", "all"):
        rows += bench_generator(batch_size=args.batch_size, n_batches=args.batches, budget_s=args.budget)
    if args.only in ("training", "all"):
        rows += bench_training(
            models=args.models,
            batch_sizes=[b or None for b in args.train_batch_sizes],
            steps=args.train_steps,
            dataset_size=args.dataset_size or None,
        )
    return rows


def _write(out: Path, rows):
    """Merge the measured sections into the results file, keeping the other section's figures."""
    previous = {}
    if out.exists():  # keep the other section's figures when running one section
        import json

        try:
            previous = json.loads(out.read_text())
        except ValueError:
            previous = {}
    sections = dict(previous.get("sections", {}))
    # each section keeps the command and date that measured it
    section_stamps = dict(previous.get("section_stamps", {}))
    for section in {r["section"] for r in rows}:
        sections[section] = [r for r in rows if r["section"] == section]
        section_stamps[section] = {k: v for k, v in stamp().items() if k in ("command", "date")}
    config.write_json(out, dict(sections=sections, section_stamps=section_stamps, **stamp()))
    print(f"wrote {out}")


def main(argv=None):
    args = _parser().parse_args(argv)
    rows = _measure(args)
    print_table(rows, COLUMNS)
    _write(args.out, rows)
    return rows


if __name__ == "__main__":
    main()
