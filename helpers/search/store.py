"""An index folder on disk, written so that a crash never leaves it half-replaced.

``index.faiss`` (FAISS' own format, ``faiss.write_index``: the index with its int64 keys),
``vectors.npy``, ``labels.npy``, ``ids.npy`` (int64 or a unicode array), ``keys.npy`` (the FAISS key of
each row; all read with ``allow_pickle=False``) and ``metadata.json`` (kind, metric,
parameters, class names, the model name and the fingerprint of the cached model that made the
vectors), written last so that it marks a complete folder. The new folder is written beside the old
one and swapped in by two renames, so a crash while saving leaves the previous index loadable.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from helpers import config
from helpers.knn import import_faiss
from helpers.search.errors import NotAnIndexError, SearchError

#: 2: FAISS holds each row's key (``IndexIDMap2`` / IVF ids) and ``keys.npy`` lists them; format 1 (FAISS
#: positions, no keys) is refused with "rebuild the index".
INDEX_FORMAT = 2
FILES = ("index.faiss", "vectors.npy", "labels.npy", "ids.npy", "keys.npy", "metadata.json")
ARRAYS = ("vectors", "labels", "ids", "keys")


def write_index_folder(folder, faiss_index, arrays: dict, metadata: dict) -> Path:
    """Write ``folder`` (created or replaced) so that a crash leaves the old one.

    The files go to a new sibling folder ``.<name>.tmp-<random>``; then the old folder is renamed
    to ``.<name>.old-<random>``, the new one renamed to ``folder`` and the old one deleted. A
    crash before the swap leaves the old folder untouched; one between the two renames leaves
    the old copy, which :func:`read_index_folder` finds.
    """
    faiss = import_faiss()
    folder = Path(folder)
    if folder.exists() and not is_index_folder(folder) and (not folder.is_dir() or any(folder.iterdir())):
        raise SearchError(f"{folder} exists and is not an index folder; choose another --out path.")
    folder.parent.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(folder)
    tag = uuid.uuid4().hex[:8]
    tmp = folder.parent / f".{folder.name}.tmp-{tag}"
    old = folder.parent / f".{folder.name}.old-{tag}"
    try:
        tmp.mkdir()
        with config.atomic_path(tmp / "index.faiss", suffix=".faiss") as path:
            faiss.write_index(faiss_index, str(path))
        for name in ARRAYS:
            with config.atomic_path(tmp / f"{name}.npy", suffix=".npy") as path, open(path, "wb") as fh:
                np.save(fh, arrays[name], allow_pickle=False)
        config.write_json(tmp / "metadata.json", metadata)  # last: marks a complete folder
        if folder.exists():
            os.rename(folder, old)
        os.rename(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def read_metadata(folder) -> dict:
    """The ``metadata.json`` of an index folder (or of the copy an interrupted save left)."""
    folder = existing_index_folder(Path(folder))
    try:
        meta = json.loads((folder / "metadata.json").read_text())
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise NotAnIndexError(f"{folder} has an unreadable metadata.json ({exc}); rebuild it.") from None
    if meta.get("format") != INDEX_FORMAT:
        raise NotAnIndexError(
            f"{folder} holds index format {meta.get('format')!r}; this "
            f"version reads format {INDEX_FORMAT}. Rebuild the index."
        )
    return meta


def read_index_folder(folder) -> tuple[dict, dict, object]:
    """``(metadata, arrays, faiss_index)`` of a folder written by :func:`write_index_folder`."""
    folder = existing_index_folder(Path(folder))
    meta = read_metadata(folder)
    faiss = import_faiss()
    try:
        arrays = {name: np.load(folder / f"{name}.npy", allow_pickle=False) for name in ARRAYS}
        faiss_index = faiss.read_index(str(folder / "index.faiss"))
    except Exception as exc:  # noqa: BLE001 - FAISS raises RuntimeError, numpy ValueError/OSError...
        first_line = str(exc).splitlines()[0][:120] if str(exc) else ""
        raise NotAnIndexError(
            f"{folder} is not a readable index ({type(exc).__name__}: {first_line}); rebuild it."
        ) from None
    n = meta.get("count")
    if {faiss_index.ntotal, *(len(a) for a in arrays.values())} != {n}:
        raise NotAnIndexError(
            f"{folder} is inconsistent (FAISS holds {faiss_index.ntotal} vectors, "
            f"the metadata says {n}); rebuild it."
        )
    return meta, arrays, faiss_index


def is_index_folder(folder) -> bool:
    """Whether ``folder`` holds the files of a saved index."""
    folder = Path(folder)
    return folder.is_dir() and all((folder / name).is_file() for name in FILES)


def _leftovers(folder: Path, kind: str) -> list[Path]:
    return sorted(folder.parent.glob(f".{folder.name}.{kind}-*")) if folder.parent.is_dir() else []


def _clean_leftovers(folder: Path) -> None:
    """Delete the temporary folders of interrupted saves (keeping an old copy if it is the only one)."""
    for tmp in _leftovers(folder, "tmp"):
        shutil.rmtree(tmp, ignore_errors=True)
    if is_index_folder(folder):
        for old in _leftovers(folder, "old"):
            shutil.rmtree(old, ignore_errors=True)
    elif not folder.exists():
        olds = [p for p in _leftovers(folder, "old") if is_index_folder(p)]
        if olds:  # a save crashed between its two renames: put the old copy back first
            os.rename(olds[-1], folder)


def existing_index_folder(folder: Path) -> Path:
    """``folder`` when it is an index, or the old copy an interrupted save left; else one clear error."""
    if is_index_folder(folder):
        return folder
    if not folder.exists():
        olds = [p for p in _leftovers(folder, "old") if is_index_folder(p)]
        if olds:  # a save crashed between its two renames: the previous index is intact here
            return olds[-1]
        raise NotAnIndexError(
            f"index folder {folder} does not exist; build one with "
            f"`python -m helpers.search build ... --out {folder}`."
        )
    missing = [name for name in FILES if not (folder / name).is_file()]
    raise NotAnIndexError(
        f"{folder} is not an index folder (missing {', '.join(missing)}); build one with "
        f"`python -m helpers.search build`."
    )
