"""BatchNorm recalibration, paired: one trained model scored before and after ``recalibrate_batchnorm``.

A registry model trains on augmented batches, so its BatchNormalization moving statistics describe
shifted, rotated, noisy digits; retrieval embeds clean ones. This trains ``--model`` with
``recalibrate_bn`` switched off (the registry entry otherwise), weight seed 0, on each split seed,
scores it, recomputes its BatchNorm statistics on the clean training images
(:func:`helpers.training.recalibrate_batchnorm`), and scores the same weights again. The difference
is paired: both rows share every trained weight, so the spread over split seeds does not hide it.
By default the validation split is the query set (this chooses a setting)::

    .venv/bin/python -m benchmarks.archive.bn_recalibration --split-seeds 1 2 3

Writes ``benchmarks/archive/results/bn_recalibration.json``. Trained models are cached in ``--cache-dir``
(one folder per split seed), so a rerun only evaluates.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from benchmarks.common import ARCHIVE_RESULTS_DIR, mean_and_std, print_table, write_results
from helpers import config
from helpers.registry import MODELS

METRICS = ("3nn_accuracy", "silhouette", "map_at_r", "precision_at_1")
OUT = ARCHIVE_RESULTS_DIR / "bn_recalibration.json"


def measure_split(name: str, split_seed: int, eval_split: str, cache_dir: Path) -> list[dict]:
    """The ``moving`` and ``recalibrated`` rows of one split seed (weight seed 0)."""
    from helpers import evaluation
    from helpers.data import load_dataset
    from helpers.registry import spec_override
    from helpers.training import recalibrate_batchnorm, train

    data = load_dataset("mnist", source="bundled", seed=split_seed, verbose=False)
    queries, labels = data.split(eval_split)
    with spec_override(name, recalibrate_bn=False):
        model, record = train(name, data, seed=0, cache_dir=cache_dir / f"split{split_seed}", verbose=0)
    rows = []
    for statistics in ("moving", "recalibrated"):
        if statistics == "recalibrated":
            recalibrate_batchnorm(model, data.x_train)
        train_emb = evaluation.embed(model, data.x_train)
        row = evaluation.evaluate_embeddings(
            name, train_emb, data.y_train, evaluation.embed(model, queries), labels
        )
        rows.append(
            {
                "model": name,
                "split_seed": split_seed,
                "eval_split": eval_split,
                "bn_statistics": statistics,
                **{m: float(row[m]) for m in METRICS},
                "train_seconds": record["train_seconds"],
                "from_cache": record["from_cache"],
            }
        )
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and std over split seeds per statistics, and the paired gain (recalibrated - moving)."""
    out = []
    by = {s: [r for r in rows if r["bn_statistics"] == s] for s in ("moving", "recalibrated")}
    for statistics, group in by.items():
        out.append(
            {
                "bn_statistics": statistics,
                **mean_and_std(group, METRICS),
            }
        )
    after = {r["split_seed"]: r for r in by["recalibrated"]}
    pairs = [(r, after[r["split_seed"]]) for r in sorted(by["moving"], key=lambda r: r["split_seed"])]
    gains = {m: [after[m] - before[m] for before, after in pairs] for m in METRICS}
    out.append(
        {
            "bn_statistics": "gain",
            **{m: float(np.mean(g)) for m, g in gains.items()},
            **{f"{m}_per_split": [round(v, 6) for v in g] for m, g in gains.items()},
        }
    )
    return out


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn_with_attention_v1", choices=list(MODELS))
    parser.add_argument("--split-seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--eval-split", choices=("val", "test"), default="val")
    parser.add_argument("--cache-dir", type=Path, default=config.ROOT / ".cache" / "bn_recalibration")
    parser.add_argument("--out", type=Path, default=OUT)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    rows = []
    for split_seed in args.split_seeds:
        rows += measure_split(args.model, split_seed, args.eval_split, args.cache_dir)
        print(
            f"[bn_recalibration] split {split_seed}: "
            + ", ".join(f"{r['bn_statistics']} 3nn={r['3nn_accuracy']:.4f}" for r in rows[-2:]),
            flush=True,
        )
    summary = summarise(rows)
    print_table(rows, ["split_seed", "bn_statistics", *METRICS])
    print()
    print_table(summary, ["bn_statistics", *METRICS])
    what = (
        f"{args.model} (weight seed 0), scored with the BatchNorm moving statistics of training and "
        "again with statistics recomputed on the clean training images; queries: the "
        f"{args.eval_split} split, references: the train split"
    )
    return write_results(args.out, what, summary, rows)


if __name__ == "__main__":
    main()
