"""Wall time of a whole notebook run (all notebooks, all six models) from an empty cache.

Run from the repository root::

    .venv/bin/python -m benchmarks.suite_time --profiles smoke default

Each profile runs ``python -m helpers.run --profile P`` with every output under a fresh temporary
folder (nothing cached: the models train), then a second time on the same folder (everything loads
from the cache; ``--cold-only`` skips it). Prints per-notebook seconds and writes
``benchmarks/results/suite_time.json``. Targets on 2 CPU cores: default <= 20 minutes, smoke <= 5 minutes.

The time of a 2-core machine drifts between days by more than a change saves, so a before/after
comparison runs both in one process: ``--baseline REV`` first runs the profile from an empty cache with
the code of git revision ``REV`` (a temporary worktree, sharing this tree's prepared data), then
with this tree's, and reports the ratio::

    .venv/bin/python -m benchmarks.suite_time --profiles default --cold-only --baseline 887177e

``--also-jobs 1`` adds a run of this tree's code with the notebooks one after another, between the two.
Each run records the CPU seconds of the processes it started; with notebooks run at once
(``helpers.run --jobs``), the per-notebook seconds overlap and add up to more than the run's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import RESULTS_DIR, git_commit, print_table, stamp
from helpers import config

TARGET_SECONDS = {"smoke": 300, "default": 1200}


def run_profile(profile: str, root: Path, code_root: Path = config.ROOT, jobs: int | None = None) -> dict:
    """``{seconds, cpu_seconds, notebooks}`` of one run of ``profile`` with the code in ``code_root``,
    outputs in ``root``; ``jobs``: the runner's ``--jobs`` (None: the profile's own, or none for a
    revision that predates the flag). ``cpu_seconds`` is the CPU time of every process the run
    started (the kernels and training workers, which their parents wait for): over ``seconds``, the
    number of cores kept busy on average."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(code_root)}
    cmd = [sys.executable, "-m", "helpers.run", "--profile", profile, "--output-root", str(root)]
    cmd += ["--run-dir", str(root / "run")] + ([] if jobs is None else ["--jobs", str(jobs)])
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=code_root, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{profile} run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    record = json.loads((root / "run" / "run.json").read_text())
    cpu = (after.ru_utime - used.ru_utime) + (after.ru_stime - used.ru_stime)
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "jobs": record.get("jobs", 1),
        "notebooks": {n["name"]: n["seconds"] for n in record["notebooks"]},
    }


def _seconds(run: dict | None, notebook: str | None) -> float:
    """A run's seconds for one notebook (``None``: the whole run); NaN for a run not made."""
    if run is None:
        return float("nan")
    return run["seconds"] if notebook is None else run["notebooks"].get(notebook, float("nan"))


def _git(*args, cwd=config.ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@contextlib.contextmanager
def checkout(rev: str):
    """A temporary worktree of git revision ``rev``, with this tree's prepared data cache copied in."""
    try:
        commit = _git("rev-parse", "--short", f"{rev}^{{commit}}")
    except subprocess.CalledProcessError:
        raise SystemExit(
            f"--baseline {rev}: not a revision of this repository; pass a commit or tag"
        ) from None
    tmp = Path(tempfile.mkdtemp(prefix="suite-baseline-"))
    tree = tmp / "tree"
    _git("worktree", "add", "--detach", str(tree), commit)
    try:
        data = config.ROOT / ".cache" / "data"
        if data.exists():  # both runs start from the same prepared datasets
            shutil.copytree(data, tree / ".cache" / "data")
        yield commit, tree
    finally:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(tree)], cwd=config.ROOT, capture_output=True
        )
        shutil.rmtree(tmp, ignore_errors=True)


def keep_evaluation(root: Path, name: str) -> None:
    """Copy the ``model_evaluation.csv`` a run wrote under ``root`` to ``benchmarks/results/<name>``."""
    found = sorted(root.rglob("model_evaluation.csv"))
    if found:
        target = RESULTS_DIR / name
        with config.atomic_path(target) as tmp:
            Path(tmp).write_text(found[0].read_text())
        print(f"kept {found[0]} as {target}", flush=True)


def _parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", nargs="*", default=["smoke", "default"])
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "suite_time.json")
    parser.add_argument(
        "--keep-evaluation",
        action="store_true",
        help="copy the cold run's model_evaluation.csv to results/suite_<profile>_evaluation.csv (and the "
        "baseline's to suite_<profile>_evaluation_baseline.csv)",
    )
    parser.add_argument("--cold-only", action="store_true", help="skip the second, cached run")
    parser.add_argument(
        "--also-jobs",
        type=int,
        nargs="*",
        default=[],
        help="also run this tree's code from an empty cache with these --jobs values (e.g. 1: the "
        "notebooks one after another), to tell the effect of running notebooks at once from the rest",
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="first run each profile (from an empty cache) with the code of this git revision",
    )
    return parser


def _run_baseline(args, profile):
    """The profile from an empty cache with the code of ``--baseline`` (None without it)."""
    if not args.baseline:
        return None
    with checkout(args.baseline) as (commit, tree), tempfile.TemporaryDirectory() as tmp:
        baseline = {
            "rev": args.baseline,
            "commit": commit,
            "cold": run_profile(profile, Path(tmp), tree),
        }
        if args.keep_evaluation:
            keep_evaluation(Path(tmp), f"suite_{profile}_evaluation_baseline.csv")
    print(f"{profile} at {commit}: {baseline['cold']['seconds']:.0f}s from an empty cache", flush=True)
    return baseline


def _run_also_jobs(args, profile):
    """The profile from an empty cache once per ``--also-jobs`` value, keyed by that value."""
    also = {}
    for jobs in args.also_jobs:
        with tempfile.TemporaryDirectory(prefix=f"suite-{profile}-jobs{jobs}-") as tmp:
            also[str(jobs)] = run_profile(profile, Path(tmp), jobs=jobs)
        print(
            f"{profile} with --jobs {jobs}: {also[str(jobs)]['seconds']:.0f}s from an empty cache",
            flush=True,
        )
    return also


def _run_cold_and_cached(args, profile):
    """The profile from an empty cache, then again from that cache (None with ``--cold-only``)."""
    with tempfile.TemporaryDirectory(prefix=f"suite-{profile}-") as tmp:
        cold = run_profile(profile, Path(tmp))
        if args.keep_evaluation:  # the cold run's model_evaluation.csv, to compare figures
            keep_evaluation(Path(tmp), f"suite_{profile}_evaluation.csv")
        warm = None if args.cold_only else run_profile(profile, Path(tmp))
    return cold, warm


def _profile_rows(args, profile, cold, warm, also, before):
    """One table row per notebook of the cold run, then one for the whole run."""
    rows = []
    for name in [*cold["notebooks"], None]:  # None: the whole run
        rows.append(
            {
                "profile": profile,
                "notebook": name or "TOTAL (process wall time)",
                "cold_s": _seconds(cold, name),
                "cached_s": _seconds(warm, name),
                **{f"jobs_{j}_cold_s": _seconds(also[str(j)], name) for j in args.also_jobs},
                "baseline_cold_s": _seconds(before, name),
                "cold_vs_baseline": _seconds(cold, name) / _seconds(before, name),
            }
        )
    return rows


def _print_summary(args, profile, cold, warm, also, baseline, before):
    """CPU load of every run, then the cold run against the profile's target."""
    runs = {"cold": cold, **{f"jobs {j}": also[str(j)] for j in args.also_jobs}, "baseline": before}
    for label, made in runs.items():
        if made and made.get("cpu_seconds"):
            print(
                f"{profile} {label}: {made['cpu_seconds']:.0f} CPU s in {made['seconds']:.0f} s: "
                f"{made['cpu_seconds'] / made['seconds']:.2f} cores busy on average",
                flush=True,
            )
    target = TARGET_SECONDS.get(profile)
    if target:
        print(
            f"{profile}: {cold['seconds']:.0f}s from an empty cache "
            f"({'within' if cold['seconds'] <= target else 'OVER'} the {target}s target)"
            + (f", {warm['seconds']:.0f}s cached" if warm else "")
            + (f"; {baseline['cold']['seconds']:.0f}s at {baseline['commit']}" if baseline else ""),
            flush=True,
        )


def _measure_profile(args, profile, rows, results):
    """Every run of one profile; fills ``results[profile]`` and appends its table rows."""
    baseline = _run_baseline(args, profile)
    also = _run_also_jobs(args, profile)
    cold, warm = _run_cold_and_cached(args, profile)
    results[profile] = {
        "commit": git_commit(),
        "cold": cold,
        "cached": warm,
        "target_seconds": TARGET_SECONDS.get(profile),
    }
    if baseline:
        results[profile]["baseline"] = baseline
    if also:
        results[profile]["cold_with_jobs"] = also
    before = baseline["cold"] if baseline else None
    rows.extend(_profile_rows(args, profile, cold, warm, also, before))
    _print_summary(args, profile, cold, warm, also, baseline, before)


def main(argv=None):
    args = _parser().parse_args(argv)
    rows, results = [], {}
    for profile in args.profiles:
        _measure_profile(args, profile, rows, results)
    columns = ["profile", "notebook", "cold_s", "cached_s", *(f"jobs_{j}_cold_s" for j in args.also_jobs)]
    if args.baseline:
        columns += ["baseline_cold_s", "cold_vs_baseline"]
    print_table(rows, columns)
    config.write_json(args.out, {"profiles": results, **stamp()})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
