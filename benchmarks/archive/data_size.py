"""Training-set size: how the model's 3-NN accuracy grows with the images it trains on.

Every setting of the CBAM model tried on the validation split scored 0.984-0.990 3-NN
(``benchmarks/quality_studies.py``). This asks whether the ceiling is the number of training images:
the registry model trains, weight seed 0, on a stratified fraction of each split seed's training split
(the same images for the same split seed and fraction) and is scored on the validation split against
the *whole* training split as references, so only the embedding changes with the fraction, not the
gallery. Fraction 1 is the registry's own run, read from the benchmark cache when
``benchmarks/quality.py`` trained it there::

    .venv/bin/python -m benchmarks.archive.data_size --fractions 0.5 1 --split-seeds 1 2 3

Writes ``benchmarks/archive/results/data_size.json``. The fractions' models are cached in ``--cache-dir``
(one folder per fraction and split seed), so a rerun only evaluates.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from benchmarks.common import (
    ARCHIVE_RESULTS_DIR,
    add_benchmark_cache_argument,
    mean_and_std,
    model_folder,
    print_table,
    write_results,
)
from helpers import config
from helpers.registry import MODELS

METRICS = ("3nn_accuracy", "silhouette", "map_at_r", "precision_at_1")
OUT = ARCHIVE_RESULTS_DIR / "data_size.json"


def train_fraction(data, fraction: float, seed: int):
    """A copy of ``data`` whose training split keeps a stratified ``fraction`` of its images (the
    validation and test splits unchanged); the same ``seed`` keeps the same images."""
    from sklearn.model_selection import train_test_split

    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    if fraction == 1.0:
        return data
    keep, _ = train_test_split(
        np.arange(len(data.y_train)), train_size=fraction, stratify=data.y_train, random_state=seed
    )
    keep = np.sort(keep)  # the training order of the kept images is the split's own
    return dataclasses.replace(data, x_train=data.x_train[keep], y_train=data.y_train[keep])


def measure(name, split_seed, fraction, eval_split, cache_dir: Path, benchmark_cache: Path) -> dict:
    """One (split seed, fraction) row: train on the fraction, score against the whole train split."""
    from helpers import evaluation
    from helpers.data import load_dataset
    from helpers.training import train

    data = load_dataset("mnist", source="bundled", seed=split_seed, verbose=False)
    subset = train_fraction(data, fraction, seed=split_seed)
    # fraction 1 is the benchmark's own entry (quality.py's cache layout); the others their own folders
    cache = benchmark_cache if fraction == 1.0 else cache_dir / f"fraction{fraction:g}"
    model, record = train(name, subset, seed=0, cache_dir=model_folder(cache, split_seed), verbose=0)
    queries, labels = data.split(eval_split)
    row = evaluation.evaluate_embeddings(
        name, evaluation.embed(model, data.x_train), data.y_train, evaluation.embed(model, queries), labels
    )
    return {
        "model": name,
        "split_seed": split_seed,
        "fraction": fraction,
        "train_images": len(subset.y_train),
        "eval_split": eval_split,
        **{m: float(row[m]) for m in METRICS},
        "train_seconds": record["train_seconds"],
        "from_cache": record["from_cache"],
    }


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and population std over split seeds, one row per fraction (smallest first)."""
    out = []
    for fraction in sorted({r["fraction"] for r in rows}):
        group = [r for r in rows if r["fraction"] == fraction]
        out.append(
            {
                "fraction": fraction,
                "train_images": int(np.mean([r["train_images"] for r in group])),
                "split_seeds": sorted(r["split_seed"] for r in group),
                **mean_and_std(group, METRICS),
            }
        )
    return out


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn_with_attention_v1", choices=list(MODELS))
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.5, 1.0])
    parser.add_argument("--split-seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--eval-split", choices=("val", "test"), default="val")
    parser.add_argument("--cache-dir", type=Path, default=config.ROOT / ".cache" / "data_size")
    add_benchmark_cache_argument(
        parser, "quality.py's cache, where fraction 1 (the registry's own run) is read or trained"
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    bad = [f for f in args.fractions if not 0.0 < f <= 1.0]
    if bad:
        parser.error(f"--fractions must be in (0, 1], got {bad}")
    return args


def main(argv=None):
    args = parse_args(argv)
    rows = []
    for fraction in args.fractions:
        for split_seed in args.split_seeds:
            rows.append(
                measure(
                    args.model, split_seed, fraction, args.eval_split, args.cache_dir, args.benchmark_cache
                )
            )
            r = rows[-1]
            print(
                f"[data_size] fraction {fraction:g} ({r['train_images']} images) split {split_seed}: "
                f"3nn={r['3nn_accuracy']:.4f} silhouette={r['silhouette']:.3f}",
                flush=True,
            )
    summary = summarise(rows)
    print_table(summary, ["fraction", "train_images", *METRICS])
    what = (
        f"{args.model} (weight seed 0) trained on a stratified fraction of the train split; "
        f"queries: the {args.eval_split} split, references: the whole train split"
    )
    return write_results(args.out, what, summary, rows)


if __name__ == "__main__":
    main()
