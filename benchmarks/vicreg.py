"""VICReg on Fashion-MNIST (notebook 10's study): linear probe with and without the variance term and
with neighbour positives, the floors, Laplacian eigenmaps, anomaly AUCs (MNIST) and clustering.

Run from the repository root; the full profile is meant for a GPU with JAX (or a background CPU run)::

    python benchmarks/vicreg.py --profile default
    KERAS_BACKEND=jax python benchmarks/vicreg.py --profile full

Models are trained through ``helpers.training.train`` into the study's cache of the profile
(``models_cache/10_vicreg/<profile>/``, or ``--cache-dir``): a killed run resumes from its last epoch,
a rerun with the same settings loads them, and the notebook of the same profile then loads them too.
The JSON goes to ``benchmarks/results/vicreg.json`` (``vicreg_full.json`` for the full profile,
``vicreg_smoke.json`` for smoke), or ``--out``, with the command, date and machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS_DIR, print_table, stamp  # noqa: E402
from helpers import config  # noqa: E402
from helpers import vicreg as V  # noqa: E402

#: The issue's targets for the full profile (Fashion-MNIST, official split).
TARGETS = {"probe": 0.88, "anomaly_auc": 0.99}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=tuple(V.PROFILES), default="default")
    parser.add_argument("--out", help="the JSON file (default benchmarks/results/vicreg[_PROFILE].json)")
    parser.add_argument("--cache-dir", help="trained models (default models_cache/10_vicreg/PROFILE)")
    parser.add_argument("--epochs", type=int, help="override the profile's VICReg epochs")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--source", default="auto")
    parser.add_argument("--force", action="store_true", help="retrain even when cached")
    args = parser.parse_args(argv)

    params = V.profile_params(args.profile, epochs=args.epochs)
    out = (
        Path(args.out)
        if args.out
        else RESULTS_DIR / ("vicreg.json" if args.profile == "default" else f"vicreg_{args.profile}.json")
    )
    print(f"[vicreg] profile={args.profile} {params}", flush=True)
    start = time.perf_counter()
    study = V.run_study(
        params,
        seed=args.seed,
        source=args.source,
        cache_dir=args.cache_dir,
        force=args.force,
        profile=args.profile,
        with_projections=False,
    )
    summary = V.summary(study)
    print_table(
        summary["representations"],
        ["representation", "dim", "probe", "knn_accuracy", "effective_rank", "rank", "anomaly_auc"],
    )
    print_table(
        [{"model": k, **v} for k, v in summary["clustering"].items()],
        ["model", "silhouette_clusters", "silhouette_labels", "nmi", "ari"],
    )
    rows = {r["representation"]: r for r in summary["representations"]}
    checks = {
        "probe_at_least_target": rows["vicreg"]["probe"] >= TARGETS["probe"],
        "probe_above_raw_pixels": rows["vicreg"]["probe"] > rows["raw pixels"]["probe"],
        "auc_at_least_target": rows["vicreg"]["anomaly_auc"] >= TARGETS["anomaly_auc"],
        "auc_above_raw_pixels": rows["vicreg"]["anomaly_auc"] > rows["raw pixels"]["anomaly_auc"],
        "ablation_below_vicreg": rows["vicreg_no_variance"]["probe"] < rows["vicreg"]["probe"],
    }
    print(f"[vicreg] checks (targets {TARGETS} are the full profile's): {checks}")
    result = {
        **stamp(),
        "profile": args.profile,
        "params": params,
        "seed": args.seed,
        **summary,
        "targets_full_profile": TARGETS,
        "checks": checks,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "cache_dir": str(Path(args.cache_dir or V.cache_dir_for(args.profile)).relative_to(config.ROOT))
        if not args.cache_dir
        else args.cache_dir,
    }
    config.write_json(out, result)
    print(f"[vicreg] wrote {out} in {result['wall_seconds']}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
