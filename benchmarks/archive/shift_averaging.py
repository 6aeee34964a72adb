"""Test-time shifts: does averaging a trained model's embeddings over shifted copies of each image help?

Kept for the record (its question is answered: ``benchmarks/archive/results/shift_averaging.json``).
The test-time shift option left ``helpers.evaluation.embed`` when this script was archived: its
shift sets and :func:`embed_shifted` live here now, for this script and ``refit_train_val``.

No retraining: each split seed's registry model (weight seed 0) is read from ``benchmarks/quality.py``'s
cache (and trained there if missing), then every image, references and queries alike, is embedded as
the mean over a set of pixel shifts (:data:`SHIFT_SETS`; ``none`` is the plain
embedding, the baseline of the same run). The set is chosen on the validation split; the test split
then reports the chosen set once::

    .venv/bin/python -m benchmarks.archive.shift_averaging --split-seeds 1 2 3 --eval-split val
    .venv/bin/python -m benchmarks.archive.shift_averaging --shift-sets none square1 \\
        --split-seeds 42 1 2 3 --eval-split test

Rows are merged into ``benchmarks/archive/results/shift_averaging.json`` (a rerun replaces the rows of the
same model, split seed, split and shift set), each with its command.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.common import (
    ARCHIVE_RESULTS_DIR,
    add_benchmark_cache_argument,
    command_line,
    mean_and_std,
    model_folder,
    print_table,
    stamp_rows,
    write_results,
)
from helpers.registry import MODELS

METRICS = ("3nn_accuracy", "silhouette", "map_at_r", "precision_at_1")
OUT = ARCHIVE_RESULTS_DIR / "shift_averaging.json"
KEY = ("model", "split_seed", "eval_split", "shift_set")


#: Named test-time shift sets: ``(dx, dy)`` offsets in pixels, the unshifted image first.
SHIFT_SETS = {
    "none": ((0, 0),),
    "cross1": ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)),
    "square1": ((0, 0), *((dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1) if (dx, dy) != (0, 0))),
    "square2": ((0, 0), *((dx, dy) for dx in range(-2, 3) for dy in range(-2, 3) if (dx, dy) != (0, 0))),
}


def embed_shifted(model, x, shift_set: str, batch_size: int = 512) -> np.ndarray:
    """The mean of ``model``'s embeddings of the images ``x`` moved by every offset of ``shift_set``
    (:func:`helpers.data.shift_images`); unit embeddings stay unit length (the mean is rescaled)."""
    from helpers import evaluation
    from helpers.data import shift_images

    if x.ndim not in (3, 4):
        raise SystemExit(f"shifts need images (n, H, W[, C]), got inputs of shape {x.shape}.")
    copies = [
        evaluation.embed(model, shift_images(x, dx, dy), batch_size) for dx, dy in SHIFT_SETS[shift_set]
    ]
    mean = np.mean(copies, axis=0)
    if all(np.allclose(np.linalg.norm(c, axis=1), 1.0, atol=1e-3) for c in copies):
        mean /= np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
    return mean.astype(np.float32)


def measure(name, split_seed, shift_sets, eval_split, benchmark_cache: Path) -> list[dict]:
    """One row per shift set for one split seed: the same trained model, embedded each way."""
    from helpers import evaluation
    from helpers.data import load_dataset
    from helpers.training import train

    data = load_dataset("mnist", source="bundled", seed=split_seed, verbose=False)
    model, _ = train(name, data, seed=0, cache_dir=model_folder(benchmark_cache, split_seed), verbose=0)
    queries, labels = data.split(eval_split)
    rows = []
    for shift_set in shift_sets:
        references = embed_shifted(model, data.x_train, shift_set)
        row = evaluation.evaluate_embeddings(
            name, references, data.y_train, embed_shifted(model, queries, shift_set), labels
        )
        rows.append(
            {
                "model": name,
                "split_seed": split_seed,
                "eval_split": eval_split,
                "shift_set": shift_set,
                "shifts": len(SHIFT_SETS[shift_set]),
                **{m: float(row[m]) for m in METRICS},
                "command": command_line(),
            }
        )
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and population std over split seeds per (model, split, shift set), with the change in
    3-NN against ``none`` on the same split seeds."""
    out = []
    groups = sorted({(r["model"], r["eval_split"], r["shift_set"]) for r in rows})
    for model, split, shift_set in groups:
        group = [
            r for r in rows if (r["model"], r["eval_split"], r["shift_set"]) == (model, split, shift_set)
        ]
        seeds = sorted(r["split_seed"] for r in group)
        base = {
            r["split_seed"]: r
            for r in rows
            if (r["model"], r["eval_split"], r["shift_set"]) == (model, split, "none")
            and r["split_seed"] in seeds
        }
        entry = {
            "model": model,
            "eval_split": split,
            "shift_set": shift_set,
            "split_seeds": seeds,
            **mean_and_std(group, METRICS),
        }
        if len(base) == len(seeds):
            entry["3nn_gain_over_none"] = sum(
                r["3nn_accuracy"] - base[r["split_seed"]]["3nn_accuracy"] for r in group
            ) / len(group)
        out.append(entry)
    return out


def merge(old_rows: list[dict], new_rows: list[dict]) -> list[dict]:
    """``old_rows`` with those of the same model, split seed, split and shift set replaced."""
    fresh = {tuple(r[k] for k in KEY) for r in new_rows}
    return [r for r in old_rows if tuple(r[k] for k in KEY) not in fresh] + new_rows


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn_with_attention_v1", choices=list(MODELS))
    parser.add_argument(
        "--shift-sets", nargs="+", default=list(SHIFT_SETS), choices=list(SHIFT_SETS), metavar="SET"
    )
    parser.add_argument("--split-seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--eval-split", choices=("val", "test"), default="val")
    add_benchmark_cache_argument(
        parser, "quality.py's cache, where each split seed's model is read (or trained)"
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if "none" not in args.shift_sets:
        args.shift_sets.insert(0, "none")  # the baseline of the same run
    return args


def main(argv=None):
    args = parse_args(argv)
    # read the rows to merge into first, so a wrong --out fails before any embedding
    old = json.loads(args.out.read_text()) if args.out.exists() else {"rows": []}
    if not isinstance(old, dict) or "rows" not in old:
        sys.exit(f"{args.out} exists but holds no shift-averaging rows to merge into; pass another --out.")
    old = old["rows"]
    rows = []
    for split_seed in args.split_seeds:
        for r in measure(args.model, split_seed, args.shift_sets, args.eval_split, args.benchmark_cache):
            print(
                f"[shift_averaging] split {split_seed} {r['shift_set']} ({args.eval_split}): "
                f"3nn={r['3nn_accuracy']:.4f} silhouette={r['silhouette']:.3f} map@r={r['map_at_r']:.4f}",
                flush=True,
            )
            rows.append(r)
    rows = merge(old, stamp_rows(rows))  # the older rows keep their own stamps (or none)
    summary = summarise(rows)
    print_table(summary, ["model", "eval_split", "shift_set", "split_seeds", *METRICS, "3nn_gain_over_none"])
    what = (
        "the registry model (weight seed 0, quality.py's cache) embedded as the mean over test-time "
        "pixel shifts of each image; references: the train split, queries: eval_split"
    )
    shift_sets = {k: [list(s) for s in v] for k, v in SHIFT_SETS.items()}
    return write_results(args.out, what, summary, rows, stamp_new=False, shift_sets=shift_sets)


if __name__ == "__main__":
    main()
