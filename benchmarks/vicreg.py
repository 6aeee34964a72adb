"""VICReg on Fashion-MNIST (notebook 10's study): linear probe with and without the variance term and
with neighbour positives, the floors, Laplacian eigenmaps, anomaly AUCs (MNIST) and clustering.

Run from the repository root; the full profile is meant for a GPU with JAX (or a background CPU run)::

    python -m benchmarks.vicreg --profile default
    KERAS_BACKEND=jax python -m benchmarks.vicreg --profile full
    # or: train on a GPU, evaluate on a CPU from the same cache
    KERAS_BACKEND=jax python -m benchmarks.vicreg --profile full --train-only --cache-dir $OUT/vicreg
    python -m benchmarks.vicreg --profile full --cache-dir <the returned vicreg folder>

On a machine without the Debian package, pass ``--fashion-dir`` (the IDX files) or bring the prepared
``.cache/data/`` files along (``source="auto"`` reads an existing cache file first).

Models are trained through ``helpers.training.train`` into the study's cache of the profile
(``models_cache/10_vicreg/<profile>/``, or ``--cache-dir``): a killed run resumes from its last epoch,
a rerun with the same settings loads them, and the notebook of the same profile then loads them too.
The JSON goes to ``benchmarks/results/vicreg.json`` (``vicreg_full.json`` for the full profile,
``vicreg_smoke.json`` for smoke), or ``--out``, with the command, date and machine.

``--notebook`` first times ``notebooks/10_vicreg.ipynb`` with papermill (the smoke profile and this
profile, each from an empty models cache, then again cached) and then measures the models the timed
notebook trained, so the JSON's figures are the notebook's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.common import RESULTS_DIR, git_commit, print_table, stamp, time_papermill
from helpers import config, profiles
from helpers.studies import cache
from helpers.studies import vicreg as V

#: The issue's targets for the full profile (Fashion-MNIST, official split).
TARGETS = {"probe": 0.88, "anomaly_auc": 0.99}
#: The default profile's target: VICReg's probe and 3-NN this far above both floors (random encoder, raw pixels).
MARGIN = 0.02
#: Cold notebook budgets on the 2-core CPU (seconds): what the suite has left for notebook 10, which
#: runs beside notebook 04's training (``benchmarks/results/suite_time_default.json``).
NOTEBOOK_BUDGET = {"smoke": 40, "default": 240}
NOTEBOOK = config.NOTEBOOKS / "10_vicreg.ipynb"


def time_notebook(profile: str, models_cache: Path) -> dict:
    """Wall and CPU seconds of one papermill run of notebook 10 with ``models_cache`` as the cache,
    and the load average (1, 5, 15 min) just before it started."""
    load = [round(v, 2) for v in os.getloadavg()]
    seconds, cpu = time_papermill(
        NOTEBOOK,
        models_cache / f"10_{profile}.ipynb",
        ["-p", "profile", profile],
        models_cache,
        f"notebook 10 ({profile})",
    )
    return {"wall_seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1), "load_average_before": load}


def time_notebooks(profile: str, root: Path) -> dict:
    """Cold then cached runs of the smoke profile and of ``profile`` (each its own cache under ``root``)."""
    timings = {}
    for p in dict.fromkeys(("smoke", profile)):
        cache = root / p
        cache.mkdir(parents=True, exist_ok=True)
        cold = time_notebook(p, cache)
        cached = time_notebook(p, cache)
        timings[p] = {"cold": cold, "cached": cached, "budget_seconds": NOTEBOOK_BUDGET.get(p)}
        print(
            f"[vicreg] notebook 10 {p}: cold {cold['wall_seconds']} s wall ({cold['cpu_seconds']} s CPU, "
            f"load average before {cold['load_average_before']}), cached {cached['wall_seconds']} s",
            flush=True,
        )
    return timings


def _parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=profiles.PROFILES, default="default")
    parser.add_argument("--out", help="the JSON file (default benchmarks/results/vicreg[_PROFILE].json)")
    parser.add_argument("--cache-dir", help="trained models (default models_cache/10_vicreg/PROFILE)")
    parser.add_argument("--epochs", type=int, help="override the profile's VICReg epochs")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--source", default="auto")
    parser.add_argument(
        "--fashion-dir", help="folder of the Fashion-MNIST IDX files (default: the Debian package's)"
    )
    parser.add_argument("--force", action="store_true", help="retrain even when cached")
    parser.add_argument(
        "--train-only",
        action="store_true",
        help="train the three models into --cache-dir and write only their records (a GPU run; "
        "evaluate later on a CPU with the same --cache-dir)",
    )
    parser.add_argument(
        "--notebook", action="store_true", help="time the notebook cold and cached, then measure its models"
    )
    return parser


def _out_path(args) -> Path:
    return (
        Path(args.out)
        if args.out
        else RESULTS_DIR / ("vicreg.json" if args.profile == "default" else f"vicreg_{args.profile}.json")
    )


def _write_training_only(args, params, study, cache_dir, start, out: Path) -> None:
    """``--train-only``: the records of the trained models, beside the results file."""
    result = {
        **stamp(),
        "profile": args.profile,
        "params": params,
        "seed": args.seed,
        "models": V.training_summary(study),
        "neighbour_same_class": study["neighbour_same_class"],
        "cache_dir": str(cache_dir or cache.folder(V.CACHE_FOLDER, args.profile)),
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    config.write_json(out.with_name(out.stem + "_training.json"), result)
    print(f"[vicreg] trained {list(result['models'])}; wrote {out.with_name(out.stem + '_training.json')}")


def _print_summary(summary) -> None:
    print_table(
        summary["representations"],
        ["representation", "dim", "probe", "probe_ci_low", "probe_ci_high", "knn_accuracy"]
        + ["effective_rank", "rank", "anomaly_auc"],
    )
    print_table(
        summary["comparisons"], ["representation", "against", "figure", "difference", "ci_low", "ci_high"]
    )
    print_table(
        [{"model": k, **v} for k, v in summary["clustering"].items()],
        ["model", "silhouette_clusters", "silhouette_labels", "nmi", "ari"],
    )


def _checks(summary) -> dict:
    """VICReg against the targets, raw pixels, its ablation and the paired floors."""
    rows = {r["representation"]: r for r in summary["representations"]}
    floors = [
        c
        for c in summary["comparisons"]
        if c["representation"] == "vicreg" and c["against"] in ("random encoder", "raw pixels")
    ]
    return {
        "probe_at_least_target": rows["vicreg"]["probe"] >= TARGETS["probe"],
        "probe_above_raw_pixels": rows["vicreg"]["probe"] > rows["raw pixels"]["probe"],
        "auc_at_least_target": rows["vicreg"]["anomaly_auc"] >= TARGETS["anomaly_auc"],
        "auc_above_raw_pixels": rows["vicreg"]["anomaly_auc"] > rows["raw pixels"]["anomaly_auc"],
        "ablation_below_vicreg": rows["vicreg_no_variance"]["probe"] < rows["vicreg"]["probe"],
        # the paired intervals (same test images) of VICReg's probe minus each floor's lie above 0
        "probe_above_both_floors_paired": all(c["ci_low"] > 0 for c in floors if c["figure"] == "probe"),
        # the default profile's target: probe and 3-NN each at least MARGIN above both floors
        "margin_above_both_floors": len(floors) == 4 and all(c["difference"] >= MARGIN for c in floors),
    }


def _result(args, params, summary, checks, start, cache_dir, notebook, out: Path) -> dict:
    """The results document; keeps the last notebook timing when this run took none."""
    result = {
        **stamp(),
        "commit": git_commit(),
        "profile": args.profile,
        "params": params,
        "seed": args.seed,
        **summary,
        "targets_full_profile": TARGETS,
        "checks": checks,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "models_from": "the timed notebook's cold run"
        if args.notebook
        else str(cache_dir or "the study cache"),
        "notebook_time": notebook,
    }
    if notebook is None and out.exists():  # keep the last notebook timing, saying when it was taken
        previous = json.loads(out.read_text())
        if previous.get("notebook_time"):
            result["notebook_time"] = previous["notebook_time"]
            result["notebook_time_from"] = previous.get("notebook_time_from") or (
                f"{previous['command']} ({previous['date']})"
            )
    return result


def main(argv=None) -> int:
    args = _parser().parse_args(argv)

    epochs = {} if args.epochs is None else {"epochs": args.epochs}
    params = profiles.settings(
        "10_vicreg", args.profile, seed=args.seed, source=args.source, force=args.force, **epochs
    )
    out = _out_path(args)
    print(f"[vicreg] profile={args.profile} {params}", flush=True)
    notebook, cache_dir = None, args.cache_dir
    if args.notebook:
        root = Path(tempfile.mkdtemp(prefix="vicreg-notebook-"))
        notebook = time_notebooks(args.profile, root)
        cache_dir = root / args.profile / "10_vicreg" / args.profile  # the models the notebook trained
    start = time.perf_counter()
    study = V.run_study(
        params,
        seed=args.seed,
        source=args.source,
        cache_dir=cache_dir,
        force=args.force,
        profile=args.profile,
        with_projections=False,
        fashion_dir=args.fashion_dir,
        train_only=args.train_only,
    )
    if args.train_only:
        _write_training_only(args, params, study, cache_dir, start, out)
        return 0
    summary = V.summary(study)
    _print_summary(summary)
    checks = _checks(summary)
    print(f"[vicreg] checks (targets {TARGETS} are the full profile's): {checks}")
    result = _result(args, params, summary, checks, start, cache_dir, notebook, out)
    config.write_json(out, result)
    print(f"[vicreg] wrote {out} in {result['wall_seconds']}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
