"""Refit on train + validation: the registry recipe, frozen, trained on 4,000 images instead of 3,000.

Kept for the record (its question is answered: ``benchmarks/archive/results/refit_train_val.json``);
the test-time shifts come from :func:`benchmarks.archive.shift_averaging.embed_shifted` (the option
left ``helpers.evaluation.embed`` when both scripts were archived).

The training-set size study (``benchmarks/archive/data_size.py``) found CBAM's 3-NN still rising with the
number of training images. Once the settings are chosen on the validation split, the usual last step
(scikit-learn's ``refit``) is to train the frozen recipe on the training and validation images
together. This measures what that would give, on the test split of split seeds 42 1 2 3, without
changing any table: per split seed, three rows, each embedded plainly and with the ``square2``
test-time shifts (``benchmarks/archive/shift_averaging.py``):

- ``registry``: the registry model as ``benchmarks/quality.py`` trains it (its cache), references the
  train split: the baseline of the same run;
- ``registry_gallery``: the same weights, references train + validation: what the larger gallery alone
  gives;
- ``refit``: the recipe trained on train + validation (same steps, epochs and schedule), references
  train + validation. Keras still needs a validation set for its best-epoch pick: it gets the
  validation split, now inside the training images, so the pick follows a training-set loss (with the
  cosine schedule, in practice the last epochs)::

    .venv/bin/python -m benchmarks.archive.refit_train_val --split-seeds 42 1 2 3

Writes ``benchmarks/archive/results/refit_train_val.json``; the refit models are cached in ``--cache-dir``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from benchmarks.archive.shift_averaging import embed_shifted
from benchmarks.common import (
    ARCHIVE_RESULTS_DIR,
    add_benchmark_cache_argument,
    command_line,
    mean_and_std,
    model_folder,
    print_table,
    write_results,
)
from helpers import config
from helpers.registry import MODELS

METRICS = ("3nn_accuracy", "silhouette", "map_at_r", "precision_at_1")
SHIFT_SETS = ("none", "square2")
OUT = ARCHIVE_RESULTS_DIR / "refit_train_val.json"


def with_val_in_train(data):
    """A copy of ``data`` whose training split is train + validation (in that order); the validation
    and test splits are unchanged."""
    return dataclasses.replace(
        data,
        x_train=np.concatenate([data.x_train, data.x_val]),
        y_train=np.concatenate([data.y_train, data.y_val]),
    )


def measure(name, split_seed, cache_dir: Path, benchmark_cache: Path) -> list[dict]:
    """The three variants of one split seed, each embedded with every shift set, scored on the test split."""
    from helpers import evaluation
    from helpers.data import load_dataset
    from helpers.training import train

    data = load_dataset("mnist", source="bundled", seed=split_seed, verbose=False)
    both = with_val_in_train(data)
    registry, _ = train(name, data, seed=0, cache_dir=model_folder(benchmark_cache, split_seed), verbose=0)
    refit, record = train(name, both, seed=0, cache_dir=model_folder(cache_dir, split_seed), verbose=0)
    variants = (
        ("registry", registry, data),
        ("registry_gallery", registry, both),
        ("refit", refit, both),
    )
    rows = []
    for variant, model, references in variants:
        for shift_set in SHIFT_SETS:
            row = evaluation.evaluate_embeddings(
                name,
                embed_shifted(model, references.x_train, shift_set),
                references.y_train,
                embed_shifted(model, data.x_test, shift_set),
                data.y_test,
            )
            rows.append(
                {
                    "model": name,
                    "variant": variant,
                    "shift_set": shift_set,
                    "split_seed": split_seed,
                    "train_images": len(both.y_train) if variant == "refit" else len(data.y_train),
                    "references": len(references.y_train),
                    **{m: float(row[m]) for m in METRICS},
                    "refit_train_seconds": record["train_seconds"],
                    "command": command_line(),
                }
            )
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and population std over split seeds per (variant, shift set), in the order measured, with
    the mean change in 3-NN against ``registry`` / ``none`` on the same split seeds."""
    base = {r["split_seed"]: r for r in rows if (r["variant"], r["shift_set"]) == ("registry", "none")}
    out = []
    for variant, shift_set in dict.fromkeys((r["variant"], r["shift_set"]) for r in rows):
        group = [r for r in rows if (r["variant"], r["shift_set"]) == (variant, shift_set)]
        entry = {
            "variant": variant,
            "shift_set": shift_set,
            "train_images": group[0]["train_images"],
            "references": group[0]["references"],
            "split_seeds": sorted(r["split_seed"] for r in group),
            **mean_and_std(group, METRICS),
        }
        if all(r["split_seed"] in base for r in group):
            entry["3nn_gain"] = float(
                np.mean([r["3nn_accuracy"] - base[r["split_seed"]]["3nn_accuracy"] for r in group])
            )
        out.append(entry)
    return out


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn_with_attention_v1", choices=list(MODELS))
    parser.add_argument("--split-seeds", type=int, nargs="+", default=[42, 1, 2, 3])
    parser.add_argument("--cache-dir", type=Path, default=config.ROOT / ".cache" / "refit_train_val")
    add_benchmark_cache_argument(
        parser, "quality.py's cache, where the registry's own run is read (or trained)"
    )
    parser.add_argument("--out", type=Path, default=OUT)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    rows = []
    for split_seed in args.split_seeds:
        for r in measure(args.model, split_seed, args.cache_dir, args.benchmark_cache):
            print(
                f"[refit] split {split_seed} {r['variant']} {r['shift_set']}: 3nn={r['3nn_accuracy']:.4f} "
                f"silhouette={r['silhouette']:.3f} map@r={r['map_at_r']:.4f}",
                flush=True,
            )
            rows.append(r)
    summary = summarise(rows)
    print_table(
        summary, ["variant", "shift_set", "train_images", "references", "split_seeds", *METRICS, "3nn_gain"]
    )
    what = (
        f"{args.model} (weight seed 0): the registry run, its weights with train + validation as "
        "references, and the recipe refit on train + validation; queries: the test split"
    )
    return write_results(args.out, what, summary, rows)


if __name__ == "__main__":
    main()
