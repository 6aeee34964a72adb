"""Wall time of a whole notebook run (all notebooks, all six models) from an empty cache.

Run from the repository root::

    .venv/bin/python benchmarks/suite_time.py --profiles smoke default

Each profile runs ``python -m helpers.run --profile P`` with every output under a fresh temporary
folder (nothing cached: the models train), then a second time on the same folder (everything loads
from the cache). Prints per-notebook seconds and writes ``benchmarks/results/suite_time.json``.
Targets on 2 CPU cores: default <= 20 minutes, smoke <= 5 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS_DIR, print_table, stamp  # noqa: E402
from helpers import config  # noqa: E402

TARGET_SECONDS = {"smoke": 300, "default": 1200}


def run_profile(profile: str, root: Path) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(config.ROOT)}
    start = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "helpers.run",
            "--profile",
            profile,
            "--output-root",
            str(root),
            "--run-dir",
            str(root / "run"),
        ],
        cwd=config.ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{profile} run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    record = json.loads((root / "run" / "run.json").read_text())
    return {"seconds": seconds, "notebooks": {n["name"]: n["seconds"] for n in record["notebooks"]}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", nargs="*", default=["smoke", "default"])
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "suite_time.json")
    parser.add_argument(
        "--keep-evaluation",
        action="store_true",
        help="copy the cold run's model_evaluation.csv to results/suite_<profile>_evaluation.csv",
    )
    args = parser.parse_args(argv)
    rows, results = [], {}
    for profile in args.profiles:
        with tempfile.TemporaryDirectory(prefix=f"suite-{profile}-") as tmp:
            cold = run_profile(profile, Path(tmp))
            if args.keep_evaluation:  # the cold run's model_evaluation.csv, to compare figures
                found = sorted(Path(tmp).rglob("model_evaluation.csv"))
                if found:
                    target = RESULTS_DIR / f"suite_{profile}_evaluation.csv"
                    target.write_text(found[0].read_text())
                    print(f"kept {found[0]} as {target}")
            warm = run_profile(profile, Path(tmp))
        results[profile] = {"cold": cold, "cached": warm, "target_seconds": TARGET_SECONDS.get(profile)}
        for name in cold["notebooks"]:
            rows.append(
                {
                    "profile": profile,
                    "notebook": name,
                    "cold_s": cold["notebooks"][name],
                    "cached_s": warm["notebooks"].get(name, float("nan")),
                }
            )
        rows.append(
            {
                "profile": profile,
                "notebook": "TOTAL (process wall time)",
                "cold_s": cold["seconds"],
                "cached_s": warm["seconds"],
            }
        )
        target = TARGET_SECONDS.get(profile)
        if target:
            print(
                f"{profile}: {cold['seconds']:.0f}s from an empty cache "
                f"({'within' if cold['seconds'] <= target else 'OVER'} the {target}s target), "
                f"{warm['seconds']:.0f}s cached",
                flush=True,
            )
    print_table(rows, ["profile", "notebook", "cold_s", "cached_s"])
    config.write_json(args.out, {"profiles": results, **stamp()})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
