"""What made a run: the code (git commit, uncommitted changes), the packages, the backend, the machine.

``provenance()`` returns one JSON-ready dict; the notebook runner stores it in ``run.json`` and shows it
in the gallery. Nothing here imports Keras or TensorFlow (versions are read from package metadata,
the backend from the environment and Keras' configuration file), so it costs milliseconds.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
from pathlib import Path

from helpers import config

# distributions whose versions decide the results (None where one is not installed)
PACKAGES = (
    "keras",
    "tensorflow",
    "jax",
    "jaxlib",
    "numpy",
    "faiss-cpu",
    "scikit-learn",
    "scipy",
    "umap-learn",
    "pandas",
    "papermill",
    "simsuite-helpers",
)


def _git(root: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def git_state(root=None) -> dict:
    """``{"commit": sha or None, "dirty": bool or None}``: ``dirty`` when tracked files differ from the
    commit or files git does not ignore were added (None outside a git checkout)."""
    root = Path(root or config.ROOT)
    commit = _git(root, "rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = _git(root, "status", "--porcelain")
    return {"commit": commit.strip(), "dirty": None if status is None else bool(status.strip())}


def package_versions(names=PACKAGES) -> dict[str, str | None]:
    """The installed version of each distribution, None when it is missing."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def keras_backend(environ=None) -> str:
    """The backend Keras will use: ``$KERAS_BACKEND``, else ``keras.json``'s, else TensorFlow."""
    environ = os.environ if environ is None else environ
    if environ.get("KERAS_BACKEND"):
        return environ["KERAS_BACKEND"]
    home = Path(environ.get("KERAS_HOME") or Path.home() / ".keras")
    try:
        return str(json.loads((home / "keras.json").read_text())["backend"])
    except (OSError, ValueError, KeyError, TypeError):
        return "tensorflow"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """CPU model, cores (all, and those this process may use), memory, OS and Python."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    try:
        memory_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (AttributeError, OSError, ValueError):
        memory_gib = None
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gib": memory_gib,
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def provenance(root=None) -> dict:
    """Everything above in one dict: ``git``, ``packages``, ``backend``, ``machine``."""
    return {
        "git": git_state(root),
        "packages": package_versions(),
        "backend": keras_backend(),
        "machine": machine(),
    }


def summary(record: dict) -> str:
    """One line: ``commit 1a2b3c4 (uncommitted changes), tensorflow backend, keras 3.15.1, ..., <cpu>``."""
    git, packages, host = record.get("git", {}), record.get("packages", {}), record.get("machine", {})
    commit = (git.get("commit") or "unknown")[:12]
    state = {True: " (uncommitted changes)", False: "", None: ""}[git.get("dirty")]
    versions = ", ".join(f"{name} {v}" for name, v in packages.items() if v and name != "simsuite-helpers")
    cores = f"{host.get('usable_cores')}/{host.get('cores')} cores"
    return f"commit {commit}{state}; {record.get('backend')} backend; {versions}; {host.get('cpu')}, {cores}"
