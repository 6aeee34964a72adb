"""Shared bits of the benchmark scripts: machine description, tables, results files."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from pathlib import Path

from helpers import config

RESULTS_DIR = config.ROOT / "benchmarks" / "results"
#: Where the answered one-off investigations of ``benchmarks/archive/`` keep their results.
ARCHIVE_RESULTS_DIR = config.ROOT / "benchmarks" / "archive" / "results"
#: Where ``benchmarks/quality.py`` caches its models; the studies that score the registry's own runs
#: read them from there (:func:`model_folder` gives the layout).
BENCHMARK_CACHE = config.ROOT / ".cache" / "benchmark_models"


def model_folder(cache_dir, split_seed: int, seed: int = 0) -> Path:
    """The cache folder of one (split seed, weight seed) run: ``<cache_dir>/split<S>/seed<W>``."""
    return Path(cache_dir) / f"split{split_seed}" / f"seed{seed}"


def add_benchmark_cache_argument(parser, help: str) -> None:
    """``--benchmark-cache``: quality.py's cache, where a study reads (or trains) the registry's runs."""
    parser.add_argument("--benchmark-cache", type=Path, default=BENCHMARK_CACHE, help=help)


def machine() -> dict:
    """Cores, Keras backend and the device it computes on (no TensorFlow import on JAX)."""
    import keras
    import numpy as np

    backend = keras.backend.backend()
    device = "CPU"
    try:
        if backend == "jax":
            import jax  # backend shim: device listing only

            device = ", ".join(sorted({d.device_kind for d in jax.devices()}))
        elif backend == "tensorflow":
            import tensorflow as tf  # backend shim: device listing only

            gpus = tf.config.list_physical_devices("GPU")
            device = f"GPU x{len(gpus)}" if gpus else "CPU"
    except Exception as exc:  # pragma: no cover - informative only
        device = f"unknown ({type(exc).__name__})"
    return {
        "cores": os.cpu_count(),
        "keras_backend": backend,
        "keras": keras.__version__,
        "device": device,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def print_table(rows: list[dict], cols: list[str]) -> None:
    cols = [c for c in cols if any(c in r for r in rows)]
    if not rows or not cols:
        return
    fmt = lambda v: f"{v:,.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    widths = {c: max(len(c), *(len(fmt(r.get(c, ""))) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    print("  ".join("-" * widths[c] for c in cols))
    for r in rows:
        print("  ".join(fmt(r.get(c, "")).ljust(widths[c]) for c in cols))


def mean_and_std(rows: list[dict], metrics) -> dict:
    """``{metric: mean, metric_std: population std}`` of each metric over ``rows``."""
    import numpy as np

    out = {m: float(np.mean([r[m] for r in rows])) for m in metrics}
    return {**out, **{f"{m}_std": float(np.std([r[m] for r in rows])) for m in metrics}}


def command_line() -> str:
    """The command as typed from the repository root: ``python -m benchmarks.x ...`` for a module run,
    ``python -m benchmarks.x ...`` for a script (never the absolute path of this checkout)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:
        program = ["-m", spec.name]
    else:
        path = Path(sys.argv[0]).resolve()
        program = [(path.relative_to(config.ROOT) if path.is_relative_to(config.ROOT) else path).as_posix()]
    return " ".join(["python", *program, *sys.argv[1:]])


def stamp() -> dict:
    return {
        "command": command_line(),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
    }


def git_commit() -> str:
    """The short commit of the checkout, with " (modified)" when ``helpers/`` or ``benchmarks/`` (its
    results files aside) has uncommitted changes; ``"unknown"`` outside a git checkout."""
    import subprocess

    def git(*args):
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, cwd=config.ROOT, check=True
        ).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        # the results files are what a run writes, not the code it ran
        dirty = git(
            "status",
            "--porcelain",
            "--",
            "helpers",
            "benchmarks",
            ":(exclude)benchmarks/results",
            ":(exclude)benchmarks/archive/results",
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head} (modified)" if dirty else head


def registry_fingerprint(name: str) -> str | None:
    """A hash of the registry entry ``name`` as it is now (its ``ModelSpec.config()``, the fields a
    cache fingerprint uses); ``None`` when ``name`` is not a registry model (a baseline)."""
    import hashlib
    import json

    from helpers.registry import MODELS

    if name not in MODELS:
        return None
    text = json.dumps(MODELS[name].config(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stamp_rows(rows: list[dict], commit: str | None = None) -> list[dict]:
    """Record in each row the ``commit`` it was measured at (default: :func:`git_commit`) and the
    :func:`registry_fingerprint` of its ``model``, so ``benchmarks/report.py`` can mark rows whose
    registry entry changed since. Rows that already carry a stamp keep it. Returns ``rows``."""
    commit = git_commit() if commit is None else commit
    for row in rows:
        row.setdefault("commit", commit)
        fingerprint = registry_fingerprint(row["model"]) if "model" in row else None
        if fingerprint is not None:
            row.setdefault("registry_fingerprint", fingerprint)
    return rows


def write_results(
    path: Path, what: str, summary: list[dict], rows: list[dict], stamp_new: bool = True, **extra
) -> dict:
    """Write a study's results file: ``what`` it measured, its ``summary`` and ``rows``, any ``extra``
    keys, and the :func:`stamp` (command, date, machine); atomically. Returns the document.

    ``stamp_new``: :func:`stamp_rows` the rows and the summary (those without a stamp); a script that
    merges older rows stamps its new rows itself before merging and passes False."""
    if stamp_new:
        commit = git_commit()
        stamp_rows(rows, commit)
        stamp_rows(summary, commit)
    doc = {"what": what, "summary": summary, "rows": rows, **extra, **stamp()}
    config.write_json(path, doc)
    print(f"wrote {path}")
    return doc


def time_papermill(notebook: Path, out: Path, args: list[str], models_cache: Path, label: str):
    """``(wall, cpu)`` seconds of one papermill run of ``notebook`` (written to ``out``, with the extra
    papermill ``args``) with ``models_cache`` as the suite's models cache; a failed run exits with
    its stderr. CPU seconds are the children's, so they count the kernel's work."""
    import resource
    import subprocess
    import time

    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONPATH": str(config.ROOT),
        "MPLBACKEND": "Agg",
        "SIMSUITE_MODELS_CACHE": str(models_cache),
    }
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "papermill",
            str(notebook),
            str(out),
            "--cwd",
            str(config.NOTEBOOKS),
            *args,
            "--no-progress-bar",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{label} failed:\n{proc.stderr[-3000:]}")
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
