"""Mixed precision on the CPU: what bfloat16 changes in what the six models learn, on the validation split.

``benchmarks/cpu_training.py`` measures the speed of Keras' ``mixed_bfloat16`` policy (its ``bf16``
levers: bfloat16 computations, float32 weights; this CPU has AVX512_BF16). Such a lever changes the
numbers, so it is a recipe change: this script shows its effect before anything adopts it. Each
registry model trains at its default budget twice, in float32 and in bfloat16, on the same data, split
and weight seed (float32 first, then bfloat16, model by model, seed by seed), and each is scored on the
**validation** split (its images the queries, the train split the references; the test split is not read):

- per model and weight seed (``summary``): each training's wall time, 3-NN accuracy and MAP@R, and the
  paired difference (bfloat16 - float32) over the same queries with its 95 % bootstrap interval;
- per model (``per_model``): the means over the weight seeds, the mean difference and its standard error
  over them (each difference holds the two trainings' own seed noise too);
- over every model and seed (``overall``): the mean difference with its standard error.

Trained models are cached per precision and seed (``.cache/precision/<policy>/split<S>/seed<W>``), so a
killed run resumes at the model it was training; the results file is rewritten after each model. Run from
the repository root, with the allocator the suite's training processes use::

    LD_PRELOAD="$(python -m helpers.allocator)" python -m benchmarks.precision
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.common import RESULTS_DIR, git_commit, model_folder, stamp_rows, write_results
from helpers import config
from helpers.metrics import paired_difference, standard_error
from helpers.registry import MODELS

OUT = RESULTS_DIR / "precision.json"
CACHE = config.ROOT / ".cache" / "precision"
POLICIES = ("float32", "mixed_bfloat16")
FIGURES = ("3nn_accuracy", "map_at_r")


def train_and_score(name: str, data, policy: str, seed: int, cache_dir: Path) -> tuple[dict, dict]:
    """Train ``name`` under the dtype ``policy`` (or load it from ``cache_dir``) and score it on the
    validation split: (its row, its per-query values)."""
    import keras

    from helpers import evaluation
    from helpers.training import train

    keras.mixed_precision.set_global_policy(policy)
    try:
        model, record = train(name, data, seed=seed, cache_dir=cache_dir, verbose=0)
        queries, labels = data.split("val")
        train_emb, query_emb = evaluation.embed(model, data.x_train), evaluation.embed(model, queries)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    per_query = evaluation.per_query_scores(train_emb, data.y_train, query_emb, labels)
    row = {
        "model": name,
        "policy": policy,
        "seed": seed,
        "train_seconds": record["train_seconds"],
        "from_cache": record["from_cache"],
        "epochs": len(record["history"]["loss"]),
        **{f: float(per_query[f].mean()) for f in FIGURES},
    }
    return row, per_query


def compare(name: str, rows: dict, per_query: dict, seed: int = 0) -> dict:
    """The paired bfloat16 - float32 figures of one model and weight seed."""
    base, mixed = rows["float32"], rows["mixed_bfloat16"]
    out = {"model": name, "seed": seed, "time_ratio": mixed["train_seconds"] / base["train_seconds"]}
    for f in FIGURES:
        diff = paired_difference(per_query["mixed_bfloat16"][f], per_query["float32"][f])
        out[f] = {"float32": base[f], "bfloat16": mixed[f], **diff}
    return out


def mean_difference(comparisons: list[dict]) -> dict:
    """Per figure: both precisions' means and the mean paired difference over ``comparisons``, with
    its standard error where there are two or more; the geometric mean of the time ratios."""
    out = {"pairs": len(comparisons)}
    for f in FIGURES:
        diffs = [c[f]["difference"] for c in comparisons]
        out[f] = {
            "float32": statistics.fmean(c[f]["float32"] for c in comparisons),
            "bfloat16": statistics.fmean(c[f]["bfloat16"] for c in comparisons),
            "mean_difference": statistics.fmean(diffs),
        }
        if len(diffs) > 1:
            out[f]["se"] = standard_error(diffs)
    out["time_ratio"] = statistics.geometric_mean(c["time_ratio"] for c in comparisons)
    return out


def per_model(comparisons: list[dict]) -> list[dict]:
    """:func:`mean_difference` of each model over its weight seeds."""
    names = dict.fromkeys(c["model"] for c in comparisons)
    return [{"model": n, **mean_difference([c for c in comparisons if c["model"] == n])} for n in names]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="registry names")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="weight seeds")
    parser.add_argument("--split-seed", type=int, default=42, help="split seed of the embedded MNIST")
    parser.add_argument("--cache-dir", type=Path, default=CACHE)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from: {', '.join(MODELS)}")
    from helpers.data import load_dataset

    data = load_dataset("mnist", source="bundled", seed=args.split_seed, verbose=False)
    commit, rows, comparisons = git_commit(), [], []
    for seed in args.seeds:
        for name in args.models:
            mine, per_query = {}, {}
            for policy in POLICIES:
                folder = model_folder(args.cache_dir / policy, args.split_seed, seed)
                mine[policy], per_query[policy] = train_and_score(name, data, policy, seed, folder)
                print(
                    f"[precision] {name} {policy}: " + ", ".join(f"{k}={v}" for k, v in mine[policy].items())
                )
            rows += stamp_rows(list(mine.values()), commit)  # the commit the run started at
            comparisons += stamp_rows([compare(name, mine, per_query, seed)], commit)
            write_results(
                args.out, __doc__.splitlines()[0], comparisons, rows, stamp_new=False,
                per_model=per_model(comparisons), overall=mean_difference(comparisons),
                split_seed=args.split_seed, eval_split="val", ld_preload=os.environ.get("LD_PRELOAD", ""),
            )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
