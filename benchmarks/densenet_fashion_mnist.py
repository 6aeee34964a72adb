"""DenseNet on Fashion-MNIST (notebook 08's study): test accuracy, the three-representation table
(raw pixels, DenseNet features, Siamese embeddings) and the training time.

Self-contained and backend-agnostic: run from the repository root, on a GPU with JAX::

    KERAS_BACKEND=jax python -m benchmarks.densenet_fashion_mnist --profile full \\
        --fashion-dir /usr/share/datasets/fashion-mnist --out OUT_DIR --time-budget 150 --no-data-cache

``--time-budget SECONDS`` stops the classifier's training cleanly at an epoch end (or after the
batch that crosses it) and still evaluates; ``--epochs N`` overrides the profile's epochs. One line
per epoch is printed. The JSON (``OUT_DIR/densenet_fashion_mnist.json``, default
``benchmarks/results/``) is written after the evaluation, with the command, date and machine.
Trained models are cached (kill-safe, resumable) in ``OUT_DIR/models_cache`` (or ``--cache-dir``);
a rerun with the same settings loads them. Profiles: ``smoke`` (seconds), ``default`` (the 2-core
CPU budget of notebook 08, on a subset), ``full`` (the real study: 54,000 / 6,000 / 10,000).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.common import RESULTS_DIR, git_commit, print_table, stamp
from helpers import config, profiles
from helpers.metrics import interval_text
from helpers.studies import densenet_fashion_mnist as densenet_study
from helpers.training.callbacks import TimeBudget

TARGET_ACCURACY = 0.94
REPRESENTATION_COLUMNS = [
    "representation",
    "dim",
    "silhouette",
    "davies_bouldin",
    "calinski_harabasz",
    "3nn_accuracy",
    "precision_at_1",
    "map_at_r",
    "reference_silhouette",
]


def _parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=profiles.PROFILES, default="default")
    parser.add_argument(
        "--fashion-dir",
        help="folder of the Fashion-MNIST IDX files (default: the Debian package's, else keras.datasets)",
    )
    parser.add_argument("--out", help="folder of the JSON (default benchmarks/results)")
    parser.add_argument(
        "--cache-dir", help="trained models (default OUT/models_cache or .cache/densenet_bench)"
    )
    parser.add_argument("--epochs", type=int, help="override the profile's classifier epochs")
    parser.add_argument("--time-budget", type=float, help="seconds of classifier training, then stop cleanly")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--force", action="store_true", help="retrain even when cached")
    parser.add_argument(
        "--no-data-cache",
        action="store_true",
        help="read the IDX files without writing the prepared .npz (a one-off machine)",
    )
    return parser


def _cache_dir(args, out_dir):
    return Path(
        args.cache_dir
        or (
            out_dir / "models_cache" if args.out else config.ROOT / ".cache" / "densenet_bench" / args.profile
        )
    )


def _print_study(study):
    report, rows = study["report"], study["rows"]
    print_table(study["rows"], REPRESENTATION_COLUMNS)
    print_table(report["per_class"], ["class", "precision", "recall", "f1", "support"])
    print(
        f"[densenet] test accuracy {interval_text(report, 'accuracy')} (target {TARGET_ACCURACY} in the full profile); "
        f"silhouette order raw < features < Siamese: {densenet_study.order_matches_reference(rows)}"
    )


def _result(args, params, study, callbacks, start):
    """The results document; its wall_seconds is measured from ``start`` now."""
    report, rows, record = study["report"], study["rows"], study["record"]
    history = record["history"]
    data = study["data"]
    return {
        **stamp(),
        "commit": git_commit(),
        "profile": args.profile,
        "params": params,
        "seed": args.seed,
        "sizes": {split: len(getattr(data, f"y_{split}")) for split in ("train", "val", "test")},
        "test_accuracy": report["accuracy"],
        "test_accuracy_ci_low": report["accuracy_ci_low"],
        "test_accuracy_ci_high": report["accuracy_ci_high"],
        "target_accuracy": TARGET_ACCURACY if args.profile == "full" else None,
        "per_class": report["per_class"],
        "confusion": report["confusion"].tolist(),
        "most_confused": densenet_study.confused_pairs(report["confusion"], data.class_names),
        "representations": rows,
        "order_matches_reference": densenet_study.order_matches_reference(rows),
        "classifier": {
            "epochs_run": len(history.get("epoch", [])),
            "best_val_accuracy": max(history.get("val_accuracy") or [float("nan")]),
            "train_seconds": record["train_seconds"],
            "from_cache": record["from_cache"],
            "stopped_by_time_budget": bool(callbacks and callbacks[0].stopped),
            "history": history,
        },
        "head": {
            "train_seconds": study["head_record"]["train_seconds"],
            "epochs_run": len(study["head_record"]["history"].get("epoch", [])),
        },
        "timings": study["timings"],
        "wall_seconds": time.perf_counter() - start,
    }


def main(argv=None) -> int:
    args = _parser().parse_args(argv)

    epochs = {} if args.epochs is None else {"epochs": args.epochs}
    params = profiles.settings(
        "08_densenet_fashion_mnist", args.profile, seed=args.seed, force=args.force, **epochs
    )
    out_dir = Path(args.out) if args.out else RESULTS_DIR
    cache_dir = _cache_dir(args, out_dir)
    callbacks = [TimeBudget(args.time_budget)] if args.time_budget else None
    print(f"[densenet] profile={args.profile} {params} cache={cache_dir}", flush=True)

    start = time.perf_counter()
    study = densenet_study.run_study(
        params,
        seed=args.seed,
        cache_dir=cache_dir,
        force=args.force,
        callbacks=callbacks,
        fashion_dir=args.fashion_dir,
        with_tsne=False,
        data_cache=not args.no_data_cache,
    )
    _print_study(study)
    result = _result(args, params, study, callbacks, start)
    path = out_dir / "densenet_fashion_mnist.json"
    config.write_json(path, result)
    print(f"[densenet] wrote {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
