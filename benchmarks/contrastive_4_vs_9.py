"""Study 09 (4 vs 9): digit and shift separation of every study model over seeds, and the
notebook's run time.

Run from the repository root::

    .venv/bin/python -m benchmarks.contrastive_4_vs_9 --seeds 0 1 2 --notebook

Trains (or loads from ``.cache/bench_contrastive_4_vs_9/seed<S>``) every entry of
``helpers.studies.contrastive_4_vs_9.STUDY`` at its registry budget with training seed ``S`` on the 4/9
subset of the embedded MNIST (split seed 42), measures ``separation_metrics`` (the raw-pixel baseline
once), prints the mean ± std table and writes ``benchmarks/results/contrastive_4_vs_9.json``.
``--notebook`` also times ``notebooks/09_contrastive_4_vs_9.ipynb`` (papermill, default and smoke
profiles) from an empty models cache and again with everything cached; ``--notebook-only`` times
it and keeps the measured table of the results file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from benchmarks.common import RESULTS_DIR, print_table, stamp, time_papermill
from helpers import config

METRICS = [
    "knn_plain",
    "sil_plain",
    "knn_shifted",
    "knn_shifted_loo",
    "sil_shifted",
    "shift_sil_6",
    "shift_sil_all",
    "four_cluster_sil",
]
NOTEBOOK = config.NOTEBOOKS / "09_contrastive_4_vs_9.ipynb"
TARGET_SECONDS = {"default": 120}


def measure_seeds(seeds, cache_root: Path) -> list[dict]:
    from helpers.studies import contrastive_4_vs_9 as c49

    study = c49.load_4_vs_9("mnist", source="auto", seed=42)
    print(study.counts())
    rows = [{**c49.measure("pixels", study)[0], "seed": None}]
    for seed in seeds:
        for name in c49.STUDY:
            row, _ = c49.measure(name, study, seed=seed, cache_dir=cache_root / f"seed{seed}", verbose=0)
            rows.append({**row, "seed": seed})
            print(f"{name} seed {seed}: " + " ".join(f"{m}={row[m]:.3f}" for m in METRICS), flush=True)
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    import numpy as np

    out = []
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name]
        entry = {"model": name, "seeds": len(mine)}
        for m in METRICS:
            values = np.array([r[m] for r in mine], float)
            entry[m] = float(values.mean())
            entry[f"{m}_std"] = float(values.std())
        out.append(entry)
    return out


def time_notebook(profile: str, models_cache: Path) -> dict:
    """Wall and CPU seconds of one papermill run of notebook 09 with ``models_cache`` as the cache."""
    seconds, cpu = time_papermill(
        NOTEBOOK,
        models_cache / f"09_{profile}.ipynb",
        ["-p", "profile", profile],  # the notebook reads the profile's settings (helpers.profiles)
        models_cache,
        f"notebook 09 ({profile})",
    )
    return {"wall_seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1), "load_average": os.getloadavg()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--notebook", action="store_true", help="also time the notebook")
    parser.add_argument("--notebook-only", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "contrastive_4_vs_9.json")
    args = parser.parse_args(argv)

    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    result = dict(previous)
    if not args.notebook_only:
        rows = measure_seeds(args.seeds, config.ROOT / ".cache" / "bench_contrastive_4_vs_9")
        summary = summarise(rows)
        print_table(summary, ["model", "seeds", *METRICS])
        result.update(
            runs=rows,
            summary=summary,
            measured=stamp(),
            data="mnist bundled, split seed 42; digits 4 and 9 only (600/200/200)",
        )
    if args.notebook or args.notebook_only:
        timings = {}
        for profile in ("default", "smoke"):
            with tempfile.TemporaryDirectory(prefix=f"nb09-{profile}-") as tmp:
                cold = time_notebook(profile, Path(tmp))
                cached = time_notebook(profile, Path(tmp))
            timings[profile] = {"cold": cold, "cached": cached, "target_seconds": TARGET_SECONDS.get(profile)}
            print(
                f"notebook 09 {profile}: cold {cold['wall_seconds']} s wall ({cold['cpu_seconds']} s CPU), "
                f"cached {cached['wall_seconds']} s wall ({cached['cpu_seconds']} s CPU); "
                f"load average {cold['load_average']}",
                flush=True,
            )
        result.update(notebook_time=timings, notebook_timed=stamp())
    config.write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
