"""Sorted triplet losses: the sort-based semi-hard and batch-all losses against the cubes they replaced.

Run from the repository root (each rewrites its results file, ``benchmarks/archive/results/semi_hard_loss.json``
or ``batch_all_loss.json``, with figures, command, date and machine)::

    .venv/bin/python -m benchmarks.archive.semi_hard_loss                    # cnn_with_attention_v1's loss
    .venv/bin/python -m benchmarks.archive.semi_hard_loss --loss batch-all   # cnn_simple_v2's loss

``batch_semi_hard_triplet`` used to compare every (anchor, positive, negative) of a batch, as
``tfa.losses.TripletSemiHardLoss`` does: tensors of ``batch^3`` elements. It now sorts each anchor's
distances (``_semi_hard_negative_distances``). The previous search is kept below as the
reference, plugged into the same loss (``_semi_hard_triplet_with``), so only the search differs.
Both train the registry's ``cnn_with_attention_v1`` (the model that uses this loss: P x K batches
of 320, with its margin and center pull) on the same batch, interleaved, in the same process; the
table gives the seconds per training step (best of ``--repeats`` rounds of ``--steps`` steps: on shared
CPU cores the best is the least disturbed), the loss's own forward seconds, and the largest difference
of the two losses' per-anchor values on that batch.

``batch_all_triplet`` (``--loss batch-all``, cnn_simple_v2's loss) averaged ``max(0, d(a, p) - d(a, n)
+ margin)`` over a ``batch^3`` tensor of triplets; it now sums, for each pair, the count and the total of
the negatives that violate the margin, from a sort of each anchor's row (``_negatives_at_or_below``).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from benchmarks.common import print_table, stamp
from helpers import config

# --- the previous implementation (a batch^3 comparison, tfa's), the reference -------------------------


def cube_semi_hard_negative_distances(d, negative):
    """Each pair's semi-hard negative distance by comparing every (anchor, positive, negative)."""
    from keras import ops

    zeros = ops.zeros_like(d)
    big = ops.max(d) + 1.0
    d_an = ops.expand_dims(d, 1)  # [a, 1, n]
    d_ap = ops.expand_dims(d, 2)  # [a, p, 1]
    semi = ops.logical_and(ops.expand_dims(negative, 1), ops.greater(d_an, d_ap))  # [a, p, n]
    outside = ops.min(ops.where(semi, d_an + ops.zeros_like(semi, dtype=d.dtype), big), axis=2)
    has_outside = ops.any(semi, axis=2)
    inside = ops.max(ops.where(negative, d, zeros), axis=1, keepdims=True)
    return ops.where(has_outside, outside, inside + zeros)


def cube_semi_hard_triplet(labels, embeddings, margin=0.2, squared=False, center_reg_weight=0.0):
    """The loss of ``helpers.losses.batch_semi_hard_triplet`` with the cube search of its negatives."""
    from helpers.losses import _semi_hard_triplet_with

    return _semi_hard_triplet_with(
        cube_semi_hard_negative_distances, labels, embeddings, margin, squared, center_reg_weight
    )


def cube_batch_all_triplet(labels, embeddings, margin=1.0, squared=True):
    """``helpers.losses.batch_all_triplet`` as it was: one ``max(0, .)`` per (anchor, positive, negative)."""
    from keras import ops

    from helpers.losses import _label_masks, pairwise_distances

    d = pairwise_distances(embeddings, squared=squared)
    positive, negative = _label_masks(labels)
    losses = ops.relu(ops.expand_dims(d, 2) - ops.expand_dims(d, 1) + margin)  # [a, p, n]
    valid = ops.cast(ops.logical_and(ops.expand_dims(positive, 2), ops.expand_dims(negative, 1)), d.dtype)
    return ops.sum(losses * valid, axis=(1, 2)) / ops.maximum(ops.sum(valid, axis=(1, 2)), 1.0)


def _cases() -> dict:
    """Per ``--loss``: the model that trains with it, the loss class, the sorted and cube functions,
    the spec fields the loss takes, and the results file."""
    from helpers import losses

    results = config.ROOT / "benchmarks" / "archive" / "results"
    return {
        "semi-hard": {
            "model": "cnn_with_attention_v1",
            "loss_class": losses.BatchSemiHardTripletLoss,
            "sorted": losses.batch_semi_hard_triplet,
            "cube": cube_semi_hard_triplet,
            "settings": lambda spec: {"margin": spec.margin, "center_reg_weight": spec.center_reg_weight},
            "cube_name": "cube (tfa's, before)",
            "out": results / "semi_hard_loss.json",
        },
        "batch-all": {
            "model": "cnn_simple_v2",
            "loss_class": losses.BatchAllTripletLoss,
            "sorted": losses.batch_all_triplet,
            "cube": cube_batch_all_triplet,
            "settings": lambda spec: {"margin": spec.margin, "squared": not spec.l2_normalized},
            "cube_name": "cube (before)",
            "out": results / "batch_all_loss.json",
        },
    }


# --- measurement -------------------------------------------------------------------------------------


def _training_model(model_name, loss):
    import keras

    from helpers import registry

    training_model, _ = registry.build_training_model(model_name)
    training_model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
    return training_model


def measure(case: dict, steps: int, repeats: int, seed: int = 0) -> dict:
    import keras

    from helpers import registry

    spec = registry.get_spec(case["model"])
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(spec.classes_per_batch), spec.batch_size // spec.classes_per_batch)
    images = rng.random((len(labels), 28, 28, 1), dtype=np.float32)
    settings = case["settings"](spec)

    class CubeLoss(case["loss_class"]):
        _fn = staticmethod(case["cube"])

    cube_name = case["cube_name"]
    functions = {cube_name: case["cube"], "sorted (helpers.losses)": case["sorted"]}
    variants = {cube_name: CubeLoss(**settings), "sorted (helpers.losses)": case["loss_class"](**settings)}
    trainers = {name: _training_model(case["model"], loss) for name, loss in variants.items()}
    embeddings = rng.normal(size=(len(labels), spec.embedding_dim)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    values = [keras.ops.convert_to_numpy(fn(labels, embeddings, **settings)) for fn in functions.values()]
    max_diff = float(np.abs(values[0] - values[1]).max())

    step_seconds = {name: [] for name in variants}
    loss_seconds = {name: [] for name in variants}
    for model in trainers.values():  # compile and warm up outside the clock
        model.fit(images, labels, batch_size=len(labels), epochs=1, verbose=0)
    for _ in range(repeats):
        for name, model in trainers.items():  # interleaved: both see the same machine state
            start = time.perf_counter()
            model.fit(images, labels, batch_size=len(labels), epochs=steps, verbose=0)
            step_seconds[name].append((time.perf_counter() - start) / steps)
            fn = functions[name]
            start = time.perf_counter()
            for _ in range(steps):
                keras.ops.convert_to_numpy(fn(labels, embeddings, **settings))
            loss_seconds[name].append((time.perf_counter() - start) / steps)

    baseline = min(step_seconds[cube_name])
    rows = []
    for name in variants:
        best = min(step_seconds[name])
        rows.append(
            {
                "loss": name,
                "batch": len(labels),
                "step_s": best,
                "step_speedup": baseline / best,
                "loss_forward_s": min(loss_seconds[name]),
            }
        )
    return {
        "model": case["model"],
        "batch": len(labels),
        "steps": steps,
        "repeats": repeats,
        "max_abs_loss_difference": max_diff,
        "rows": rows,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="training steps per timed round")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per variant (best kept)")
    parser.add_argument("--loss", choices=["semi-hard", "batch-all"], default="semi-hard")
    parser.add_argument("--out", type=Path, help="results file (default: the loss's own in results/)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.repeats < 1:
        parser.error("--steps and --repeats must be at least 1")
    case = _cases()[args.loss]
    args.out = args.out or case["out"]
    result = {**stamp(), **measure(case, args.steps, args.repeats)}
    print_table(result["rows"], ["loss", "batch", "step_s", "step_speedup", "loss_forward_s"])
    print(f"largest per-anchor loss difference: {result['max_abs_loss_difference']:.3g}")
    config.write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
