"""Throughput benchmarks: batch generation (and, later, training steps).

Run from the repository root::

    .venv/bin/python benchmarks/throughput.py --only generator

Generator section: triplets per second of :class:`helpers.generators.TripletGenerator` (batch 256, no
augmentation) against a per-sample reference sampler written the way the reference notebooks wrote it
(a Python loop: per sample, a random anchor class, ``np.random.choice`` among that class's indices for
anchor and positive, another class for the negative, images stacked), both measured in the same run on
the same data: the bundled MNIST train split (``helpers.data.load_dataset("mnist", source="bundled")``),
or random data shaped like MNIST when it is unavailable. Target: vectorised >= 10x the reference.

Prints a table and writes ``benchmarks/results/throughput.json`` (figures, command, date, machine).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from helpers import config  # noqa: E402

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
        return (np.stack(anchors), np.stack(positives), np.stack(negatives)), np.zeros(self.batch_size, np.float32)


def _load_mnist_train(seed=42):
    try:
        from helpers.data import load_dataset

        ds = load_dataset("mnist", source="bundled", seed=seed, verbose=False)
        return ds.x_train, ds.y_train, "mnist bundled train split"
    except Exception as exc:  # data module unavailable: same shapes, random content
        rng = np.random.default_rng(seed)
        print(f"[bench] bundled MNIST unavailable ({type(exc).__name__}: {exc}); using random data", file=sys.stderr)
        return rng.random((60000, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, 60000), "random (60000, 28, 28, 1)"


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
    from helpers.generators import TripletGenerator

    x, y, data_desc = _load_mnist_train()
    np.random.seed(seed)
    samplers = {
        "reference per-sample loop": ReferenceTripletSampler(x, y, batch_size),
        "TripletGenerator (vectorised)": TripletGenerator(x, y, batch_size=batch_size, seed=seed, steps_per_epoch=10_000),
    }
    rows = []
    for name, sampler in samplers.items():
        s, done = _time_batches(sampler, n_batches, budget_s)
        rows.append(
            dict(section="generator", sampler=name, data=data_desc, batch_size=batch_size, batches=done,
                 s_per_batch=s, triplets_per_s=batch_size / s)
        )
    ref = rows[0]["triplets_per_s"]
    for row in rows:
        row["speedup"] = row["triplets_per_s"] / ref
    return rows


# --- training section (added by the lead) ------------------------------------------------------


def bench_training(**_):
    """Placeholder: the training benchmark is added by the lead engineer."""
    return []


# --- driver ------------------------------------------------------------------------------------


def _machine():
    import keras

    try:
        import tensorflow as tf  # device listing only

        gpus = tf.config.list_physical_devices("GPU")
        device = f"GPU x{len(gpus)}" if gpus else "CPU"
    except Exception:
        device = "unknown"
    return dict(
        cores=os.cpu_count(),
        affinity_cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        keras_backend=keras.backend.backend(),
        device=device,
        platform=platform.platform(),
        python=platform.python_version(),
        numpy=np.__version__,
    )


def _print_table(rows):
    if not rows:
        return
    cols = [c for c in ("section", "sampler", "batch_size", "batches", "s_per_batch", "triplets_per_s", "speedup")
            if any(c in r for r in rows)]
    fmt = lambda v: f"{v:,.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    widths = {c: max(len(c), *(len(fmt(r.get(c, ""))) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    print("  ".join("-" * widths[c] for c in cols))
    for r in rows:
        print("  ".join(fmt(r.get(c, "")).ljust(widths[c]) for c in cols))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("generator", "training", "all"), default="all")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=50, help="batches per generator sampler (max)")
    parser.add_argument("--budget", type=float, default=5.0, help="seconds per generator sampler (max)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    rows = []
    if args.only in ("generator", "all"):
        rows += bench_generator(batch_size=args.batch_size, n_batches=args.batches, budget_s=args.budget)
    if args.only in ("training", "all"):
        rows += bench_training()
    _print_table(rows)

    previous = {}
    if args.out.exists():  # keep the other section's figures when running one section
        import json

        try:
            previous = json.loads(args.out.read_text())
        except ValueError:
            previous = {}
    sections = dict(previous.get("sections", {}))
    for section in {r["section"] for r in rows}:
        sections[section] = [r for r in rows if r["section"] == section]
    config.write_json(
        args.out,
        dict(
            sections=sections,
            command=" ".join([Path(sys.executable).name, *sys.argv]) if argv is None else f"main({argv!r})",
            date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            machine=_machine(),
        ),
    )
    print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    main()
