"""The committed benchmark results, read one way: ``benchmarks/results/<name>.json``, or
``benchmarks/archive/results/<name>.json`` for an answered investigation.

Each benchmark script writes one JSON file (its figures, the command and date that made them, the
machine); notebooks and reports read them back here, by name, as a dict or as a table.
"""

from __future__ import annotations

import json
from pathlib import Path

from helpers import config


class ResultsMissing(FileNotFoundError):
    """A benchmark's results file is not there (the benchmark has not been run here)."""


def path(name: str) -> Path:
    """Where the results of benchmark ``name`` (``"quality"``, ``"applications"``...) are: the
    durable benchmarks' folder first, then the archive of answered investigations."""
    current = config.RESULTS / f"{name}.json"
    archived = config.RESULTS.parent / "archive" / "results" / f"{name}.json"
    return archived if not current.is_file() and archived.is_file() else current


def exists(name: str) -> bool:
    """Whether benchmark ``name`` has written its results."""
    return path(name).is_file()


def read(name: str) -> dict:
    """The results of benchmark ``name`` as a dict."""
    target = path(name)
    if not target.is_file():
        raise ResultsMissing(
            f"{target} is not there; run the benchmark that writes it (python -m benchmarks.{name})"
        )
    return json.loads(target.read_text(encoding="utf-8"))


def table(name: str, *keys: str, index: str | None = None, columns=None):
    """The list of rows at ``keys`` in benchmark ``name``'s results as a DataFrame, indexed by
    ``index`` and cut to ``columns`` (both optional): ``table("bn_recalibration", "summary",
    index="bn_statistics")``."""
    import pandas as pd

    rows = read(name)
    for key in keys:
        rows = rows[key]
    frame = pd.DataFrame(rows)
    if index is not None:
        frame = frame.set_index(index)
    return frame if columns is None else frame[list(columns)]
