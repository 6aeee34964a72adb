"""Applications benchmark: verification, identification and unseen classes for every model.

Run from the repository root (the six registry models come from the training cache that notebook 04
fills, else they train at their default budgets; the three study models of notebook 07 and
``cnn_simple_v1`` at their budget of 300 steps train here, about 35 s each on 2 CPU cores)::

    .venv/bin/python -m benchmarks.applications

Data: the embedded MNIST split (3000/1000/1000, split seed 42), models trained with seed 0.

- Verification ("phone unlock"): 5,000 genuine + 5,000 impostor pairs of the validation split choose
  the threshold at a false-accept rate of 1 %; as many pairs of the test split give the AUC, the equal
  error rate, that threshold's FAR and FRR, and TAR at FAR 1 % (threshold set on the test pairs).
- Identification ("a gym"): galleries of 1 and 5 train images per class, every test image a query;
  closed-set accuracy (all ten classes enrolled) and the open-set detection and identification rate at
  FAR 1 % with three classes left out (their queries are the strangers); mean over 20 seeded draws.
- Unseen classes: ``cnn_simple_v1``'s recipe trained on digits 0-7 only (300 steps), against the same
  recipe on all ten digits (600 steps, the registry's, and 300), the transfer embedding and raw
  pixels: verification AUC of pairs whose first image
  is an 8 or a 9, 1- and 5-shot identification of the test 8s and 9s in a gallery of all ten digits,
  and their P@1 against the whole train split.
- Transfer embedding: the penultimate layer of a plain softmax classifier of ``cnn_simple_v1``'s size
  trained on the same batches (``cnn_softmax_classifier``), on all ten digits and on 0-7.

Writes ``benchmarks/results/applications.json`` (tables, settings, command, date, machine) and
``benchmarks/results/applications_roc.png`` (every model's test ROC on one plot).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.common import RESULTS_DIR, print_table, stamp, stamp_rows
from helpers import applications as app
from helpers import config, plots
from helpers.data import load_dataset
from helpers.registry import MODELS, get_spec
from helpers.studies import unseen_classes as unseen
from helpers.training import train

SEEN = tuple(range(8))
UNSEEN = (8, 9)
VERIFICATION_COLUMNS = [
    "model",
    "auc",
    "eer",
    "threshold",
    "test_far",
    "test_frr",
    "tar_at_far",
    "closed_1shot",
    "closed_5shot",
    "dir_1shot",
    "dir_5shot",
]
UNSEEN_COLUMNS = ["model", "trained_on", "auc", "1shot", "5shot", "p_at_1"]


def _parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default=str(config.MODELS_CACHE))
    parser.add_argument("--target-far", type=float, default=0.01)
    parser.add_argument(
        "--pairs", type=int, default=5000, help="genuine (and as many impostor) pairs per split"
    )
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--epochs", type=int, help="override every trained model's epochs (a quick check)")
    parser.add_argument("--steps-per-epoch", type=int)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "applications.json")
    return parser


def _settings(args, data):
    return {
        "target_far": args.target_far,
        "pairs": args.pairs,
        "episodes": args.episodes,
        "shots": [1, 5],
        "unknown_classes": 3,
        "unseen": list(UNSEEN),
        "data": data.source,
    }


def _embed_registry_models(data, budget, embeddings, seconds):
    """Train (or load) every registry model and the classifier; embed every split, raw pixels too."""
    for name in [*MODELS, unseen.CLASSIFIER_MODEL]:
        model, record = train(name, data, **budget)
        seconds[name] = record["train_seconds"]
        embeddings[name] = app.embed_splits(model, data)
    embeddings[app.RAW_PIXELS] = app.embed_splits(None, data)


def _verification(args, data, embeddings):
    """Verification and identification figures of every embedding; prints the table."""
    rows, curves = [], {}
    for name, emb in embeddings.items():
        start = time.perf_counter()
        row, (far, tar) = app.application_figures(
            emb, data, target_far=args.target_far, n_pairs=args.pairs, episodes=args.episodes
        )
        rows.append({"model": name, **row, "eval_seconds": time.perf_counter() - start})
        curves[name] = (far, tar, row["auc"])
    print(
        f"\nVerification and identification (test split; threshold chosen on val at FAR {args.target_far:g})"
    )
    print_table(rows, VERIFICATION_COLUMNS)
    return rows, curves


def _embed_unseen_models(args, data, seen, budget, embeddings, seconds):
    """Train the unseen-class models; returns the short-budget cnn_simple_v1's name."""
    # unseen classes: the same recipes on digits 0-7 only, at the study models' budget (300 steps);
    # cnn_simple_v1 on all ten digits at its registry budget (600 steps) and at that same budget
    short = get_spec(unseen.UNSEEN_MODEL)
    same_budget = {**budget, "cache_dir": str(Path(args.cache_dir) / "same_budget")}
    if args.epochs is None:
        same_budget["epochs"] = short.epochs
    model, record = train("cnn_simple_v1", data, **same_budget)
    short_name = (
        f"cnn_simple_v1 ({same_budget['epochs'] * (args.steps_per_epoch or short.steps_per_epoch)} steps)"
    )
    seconds[short_name] = record["train_seconds"]
    embeddings[short_name] = app.embed_splits(model, data, splits=("train", "test"))
    for name in (unseen.UNSEEN_MODEL, unseen.UNSEEN_CLASSIFIER_MODEL):
        model, record = train(name, seen, **budget)
        seconds[name] = record["train_seconds"]
        embeddings[name] = app.embed_splits(model, data, splits=("train", "test"))
    return short_name


def _unseen_rows(args, data, embeddings, short_name):
    """Unseen-class figures of every model and raw pixels; prints the table."""
    unseen_models = {
        "cnn_simple_v1": ("cnn_simple_v1", "all ten"),
        short_name: (short_name, "all ten"),
        unseen.UNSEEN_MODEL: (unseen.UNSEEN_MODEL, "0-7"),
        unseen.CLASSIFIER_MODEL: (unseen.CLASSIFIER_MODEL, "all ten"),
        unseen.UNSEEN_CLASSIFIER_MODEL: (unseen.UNSEEN_CLASSIFIER_MODEL, "0-7"),
    }
    unseen_rows = []
    labels = {"train": data.y_train, "test": data.y_test}
    for name, (key, trained_on) in {**unseen_models, app.RAW_PIXELS: (app.RAW_PIXELS, "-")}.items():
        rep = unseen.unseen_class_report(embeddings[key], labels, unseen=UNSEEN, episodes=args.episodes)
        unseen_rows.append({"model": name, "trained_on": trained_on, **rep})
    print(f"\nUnseen classes {UNSEEN} (models trained on 0-7 never saw them)")
    print_table(unseen_rows, UNSEEN_COLUMNS)
    return unseen_rows


def _write(args, settings, rows, curves, unseen_rows, seconds):
    """Save the ROC plot and the results document."""
    fig = plots.plot_roc_curves(curves, target_far=args.target_far)
    config.save_figure(fig, args.out.with_name(args.out.stem + "_roc.png"))
    config.write_json(
        args.out,
        {
            **stamp(),
            "settings": settings,
            "verification": stamp_rows(rows),
            "unseen": stamp_rows(unseen_rows),
            "train_seconds": seconds,
            "budgets": {"epochs": args.epochs, "steps_per_epoch": args.steps_per_epoch},
        },
    )
    print(f"\nwrote {args.out}")


def main(argv=None):
    args = _parser().parse_args(argv)

    data = load_dataset("mnist", source="auto", seed=42)
    seen = data.subset(SEEN)
    budget = {
        "epochs": args.epochs,
        "steps_per_epoch": args.steps_per_epoch,
        "cache_dir": args.cache_dir,
        "verbose": 0,
    }
    settings = _settings(args, data)

    embeddings, seconds = {}, {}
    _embed_registry_models(data, budget, embeddings, seconds)
    rows, curves = _verification(args, data, embeddings)
    short_name = _embed_unseen_models(args, data, seen, budget, embeddings, seconds)
    unseen_rows = _unseen_rows(args, data, embeddings, short_name)
    _write(args, settings, rows, curves, unseen_rows, seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
