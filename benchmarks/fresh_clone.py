"""``make test`` on a fresh clone, as CI runs it: the wall time, pytest's time and its ten slowest tests.

Run from the repository root (about 10-15 minutes on 2 cores)::

    python -m benchmarks.fresh_clone            # the committed HEAD
    python -m benchmarks.fresh_clone --rev main

Clones this repository at ``--rev`` into a temporary folder, runs ``CI=true bash .ci/run`` there (a new
``.venv`` from the pip cache, ruff, every test including the smoke run of every notebook) and appends one
row to the ``summary`` of ``benchmarks/results/fresh_clone_test.json``: the commit, the run's seconds
(``.ci/run``'s own "CI finished in"), pytest's seconds, its counts and worker processes, and the
``--durations=10`` table of ``make test``. Uncommitted changes are not part of a clone and not measured.
Exits 1 when the run fails (its row says so), 2 on a bad ``--rev``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import RESULTS_DIR, stamp
from helpers import config

OUT = RESULTS_DIR / "fresh_clone_test.json"
TARGET_SECONDS = 900  # a fresh-clone make test within 15 minutes
WHAT = (
    "make test on a fresh clone: a new .venv from requirements.txt with a warm pip cache, Debian packages "
    "present, ruff, then the whole test suite including the smoke run of every notebook"
)

_CI_SECONDS = re.compile(r"^CI finished in (\d+)s\s*$", re.M)
# pytest's last line: "484 passed, 4 skipped, 3 warnings in 634.12s (0:10:34)" (with or without ='s)
_PYTEST_SUMMARY = re.compile(r"^=*\s*((?:\d+ [a-z]+(?:, )?)+) in ([\d.]+)s\b.*$", re.M)
# pytest-xdist's workers: the -n of the pytest command make echoes (-q prints no count of its own),
# or xdist's own "created: 2/2 workers" / "2 workers [488 items]"
_WORKERS = re.compile(
    r"^(?:.*\bpytest\b.* -n (\d+)\b|created: (\d+)/\d+ workers|(\d+) workers \[\d+ items?\])", re.M
)
_DURATION = re.compile(r"^([\d.]+)s (call|setup|teardown)\s+(\S.*?)\s*$")


def parse_log(text: str) -> dict:
    """The figures of one ``.ci/run`` log: ``seconds`` (None when it did not finish), ``pytest_seconds``,
    ``counts`` (``{"passed": 484, "skipped": 4, ...}``), ``pytest_processes`` and ``slowest`` (the
    ``--durations`` rows: seconds, phase, test), in the log's order."""
    ci = _CI_SECONDS.search(text)
    summaries = _PYTEST_SUMMARY.findall(text)
    counts, pytest_seconds = {}, None
    if summaries:
        parts, seconds = summaries[-1]
        counts = {k: int(n) for n, k in (p.split(" ", 1) for p in parts.split(", ") if p)}
        pytest_seconds = round(float(seconds))
    workers = _WORKERS.search(text)
    return {
        "seconds": int(ci.group(1)) if ci else None,
        "pytest_seconds": pytest_seconds,
        "counts": counts,
        "pytest_processes": int(next(g for g in workers.groups() if g)) if workers else 1,
        "slowest": _durations(text),
    }


def _durations(text: str) -> list[dict]:
    """The rows under pytest's "slowest N durations" header (the last such table of the log)."""
    rows, inside = [], False
    for line in text.splitlines():
        if "slowest" in line and "durations" in line:
            inside, rows = True, []
        elif inside:
            match = _DURATION.match(line.strip())
            if match:
                seconds, phase, test = match.groups()
                rows.append({"seconds": round(float(seconds), 1), "phase": phase, "test": test})
            elif rows:  # the first line after the table ends it
                inside = False
    return rows


def summary_row(parsed: dict, commit: str, date: str, returncode: int) -> dict:
    """One ``summary`` row of the results file from :func:`parse_log`'s figures."""
    counts = parsed["counts"]
    failed = counts.get("failed", 0) + counts.get("error", 0) + counts.get("errors", 0)
    passed = returncode == 0 and not failed
    return {
        "commit": commit,
        "date": date,
        "passed": passed,
        "seconds": parsed["seconds"],
        "pytest_seconds": parsed["pytest_seconds"],
        "tests": counts.get("passed", 0),
        "skipped": counts.get("skipped", 0),
        "failed": failed,
        "pytest_processes": parsed["pytest_processes"],
        "within_target": parsed["seconds"] is not None and parsed["seconds"] <= TARGET_SECONDS,
        "slowest": parsed["slowest"],
    }


def _git(*args, cwd=config.ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def run_clone(rev: str, log: Path) -> tuple[str, int, str]:
    """Clone at ``rev``, run ``.ci/run`` with its output going to ``log``; ``(commit, returncode, text)``."""
    with tempfile.TemporaryDirectory(prefix="fresh-clone-") as tmp:
        repo = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "--quiet", str(config.ROOT), str(repo)], check=True)
        subprocess.run(["git", "checkout", "--quiet", rev], cwd=repo, check=True)
        commit = _git("rev-parse", "--short", "HEAD", cwd=repo)
        print(f"[fresh_clone] {commit}: CI=true bash .ci/run (log: {log})", flush=True)
        with log.open("w") as out:
            proc = subprocess.run(
                ["bash", ".ci/run"], cwd=repo, env=_ci_env(), stdout=out, stderr=subprocess.STDOUT
            )
    return commit, proc.returncode, log.read_text(errors="replace")


def _ci_env() -> dict:
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "LD_PRELOAD")}
    return {**env, "CI": "true"}


def append_row(row: dict, path: Path = OUT) -> dict:
    """Append ``row`` to the summary of ``path`` (created if missing) and restamp the file, atomically."""
    doc = json.loads(path.read_text()) if path.exists() else {"what": WHAT, "rows": [], "summary": []}
    doc["summary"] = [*doc.get("summary", []), row]
    doc.update(stamp())
    doc["source"] = (
        "each summary row from the log of its run: git clone of this repository at the row's commit, then "
        "CI=true bash .ci/run (python -m benchmarks.fresh_clone parses the log; older rows were "
        "transcribed from it by hand); pytest_processes is make test's pytest-xdist -n"
    )
    config.write_json(path, doc)
    return doc


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="HEAD", help="the commit to clone (default: HEAD)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--log", type=Path, help="keep the run's log here (default: a temporary file)")
    args = parser.parse_args(argv)
    try:
        _git("rev-parse", "--verify", "--quiet", f"{args.rev}^{{commit}}")
    except subprocess.CalledProcessError:
        parser.error(f"--rev {args.rev!r} is not a commit of this repository; pass one from `git log`")
    log = args.log or Path(tempfile.mkstemp(prefix="fresh-clone-", suffix=".log")[1])
    start = time.time()
    commit, code, text = run_clone(args.rev, log)
    row = summary_row(parse_log(text), commit, stamp()["date"], code)
    append_row(row, args.out)
    print(
        f"[fresh_clone] {commit}: {'passed' if row['passed'] else 'FAILED'}, {row['seconds']} s "
        f"(pytest {row['pytest_seconds']} s, {row['tests']} tests); wall {time.time() - start:.0f} s; "
        f"wrote {args.out}",
        flush=True,
    )
    return 0 if row["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
