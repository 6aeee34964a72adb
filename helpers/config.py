"""One place for the suite's paths and small I/O utilities.

Every output folder is resolved from ``ROOT`` (the repository root, or ``$SIMSUITE_ROOT`` when set;
the working directory when the package is installed rather than run from its checkout),
so notebooks executed by papermill from any working directory write to the same places.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path


def _root() -> Path:
    """``$SIMSUITE_ROOT``; else the checkout this package lives in; else (the package installed in a
    virtual environment) the working directory."""
    if os.environ.get("SIMSUITE_ROOT"):
        return Path(os.environ["SIMSUITE_ROOT"]).resolve()
    checkout = Path(__file__).resolve().parents[1]
    return checkout if (checkout / "pyproject.toml").is_file() else Path.cwd().resolve()


ROOT = _root()


def _dir(env_name: str, default: Path) -> Path:
    return Path(os.environ.get(env_name, default)).resolve()


MODELS_CACHE = _dir("SIMSUITE_MODELS_CACHE", ROOT / "models_cache")
LATENT_SPACE = _dir("SIMSUITE_LATENT_SPACE", ROOT / "latent_space")
MODELS_EXPLAIN = _dir("SIMSUITE_MODELS_EXPLAIN", ROOT / "models_explain")
FIGURES = _dir("SIMSUITE_FIGURES", ROOT / "figures")
DATA_CACHE = _dir("SIMSUITE_DATA_CACHE", ROOT / ".cache" / "data")
RUNS = _dir("SIMSUITE_RUNS", ROOT / "runs")
EVALUATION_CSV = Path(os.environ.get("SIMSUITE_EVALUATION_CSV", ROOT / "model_evaluation.csv")).resolve()
NOTEBOOKS = ROOT / "notebooks"
PROFILES_FILE = NOTEBOOKS / "profiles.yaml"  # every notebook's settings by profile (helpers.profiles)
RESULTS = ROOT / "benchmarks" / "results"  # committed benchmark figures (helpers.results)
# TensorBoard logs of training (TensorFlow backend): <TENSORBOARD>/<dataset>/<model>/<fingerprint>/;
# a run of the notebooks sends them to runs/<profile>/tensorboard/. SIMSUITE_TENSORBOARD_LOGS=0 turns
# them off (they change nothing that is learned or cached).
TENSORBOARD = _dir("SIMSUITE_TENSORBOARD", ROOT / "runs" / "tensorboard")
TENSORBOARD_LOGS = os.environ.get("SIMSUITE_TENSORBOARD_LOGS", "1").strip().lower() not in (
    "0",
    "false",
    "no",
    "",
)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None):
    """Yield a temporary path next to ``path``; on success move it over ``path`` with ``os.replace``.

    Readers never see a half-written file: either the old file or the complete new one.
    ``suffix`` defaults to the target's own suffixes (Keras checks ``.weights.h5`` / ``.keras``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    os.unlink(tmp)  # some writers (h5py, savefig) refuse or misbehave on an existing file
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path, suffix=".json") as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default))


def _json_default(value):
    # numpy scalars and arrays appear in histories and metrics
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")


def save_figure(fig, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Save a matplotlib figure atomically as PNG and return its path."""
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    log_image(path)
    return path


def log_image(path: str | os.PathLike) -> None:
    """Append ``path`` to the file ``$SIMSUITE_IMAGE_LOG`` names, if any.

    The suite runner (``helpers.run``) gives each notebook's kernel its own log, so that the gallery
    credits an image to the notebook that wrote it even while two notebooks run at once.
    """
    log = os.environ.get("SIMSUITE_IMAGE_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"{Path(path).resolve()}\n")
