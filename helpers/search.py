"""Similar-image search: an embedding index on FAISS, saved to a folder, queried from Python or a CLI.

``EmbeddingIndex`` stores one vector per item, with its label and its id (ints or strings), in a
FAISS index of one of three kinds:

``"flat"``
    exact brute force (``helpers.knn.flat_index``, the suite's one exact path): the answers equal a
    numpy brute force. Right up to a few hundred thousand items.
``"hnsw"``
    FAISS ``IndexHNSWFlat`` (a navigable small-world graph; ``hnsw_m`` links per node,
    ``ef_construction`` / ``ef_search`` candidate lists). Approximate, fast on millions of items.
``"ivf"``
    FAISS ``IndexIVFFlat``: k-means cells (``nlist``) trained on a sample of the first vectors added
    (``train_size``), ``nprobe`` cells searched per query. Approximate; cheap to build.

Metrics: ``"l2"`` (squared Euclidean distances) or ``"cosine"`` (inner product on L2-normalised
vectors, reported as the distance ``1 - cos``), as in ``helpers.knn``.

**Vectors are computed once.** An item's embedding is computed when it is added and stored (in the
FAISS index and in ``vectors.npy``); a query embeds only the query images. An agency with 100,000
actors embeds its catalogue once (``from_model`` or ``add``); looking up one photograph then costs
one forward pass plus one index search, whatever the size of the catalogue.

**Removal.** ``remove(ids)`` uses FAISS ``remove_ids`` on a flat index (its storage is compacted,
so positions stay aligned with the stored ids and labels). An IVF index is emptied (``reset``, its
trained cells are kept) and the remaining stored vectors are added again; an HNSW graph cannot
delete nodes in FAISS, so it is rebuilt from the stored vectors (the cost of a build).

**On disk** (``save(folder)`` / ``EmbeddingIndex.load(folder)``): ``index.faiss`` (FAISS' own
format, ``faiss.write_index``), ``vectors.npy``, ``labels.npy``, ``ids.npy`` (int64 or a unicode
array; read with ``allow_pickle=False``) and ``metadata.json`` (kind, metric, parameters, class
names, the model name and the fingerprint of the cached model that made the vectors). The new
folder is written beside the old one and swapped in by two renames, so a crash while saving leaves
the previous index loadable. Loading checks that the model cache still holds the same model
(``ModelMismatchError`` otherwise); querying a loaded index with images embeds them with that model.

CLI::

    python -m helpers.search build --model cnn_with_attention_v1 --dataset mnist --split train --out idx/
    python -m helpers.search query --index idx/ --image digit.png [--image ...] -k 5 [--figure out.png]

``query`` prints, per query image, the rank, id, class name and distance of each neighbour. Bad
input (a missing or unreadable image, a folder that is not an index, ``k < 1``, a model whose cache
changed) prints one line on stderr and exits with status 2, writing nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from helpers import config
from helpers.knn import METRICS, KNNError, as_vectors, flat_index, import_faiss, l2_normalize

KINDS = ("flat", "hnsw", "ivf")
INDEX_FORMAT = 1
_FILES = ("index.faiss", "vectors.npy", "labels.npy", "ids.npy", "metadata.json")
NO_LABEL = -1


class SearchError(ValueError):
    """Bad input to an index (shapes, ids, k, kind) or an unusable image file."""


class NotAnIndexError(SearchError):
    """A folder that does not hold a saved ``EmbeddingIndex``."""


class ModelMismatchError(SearchError):
    """The cached model is not the one that made the index's vectors (or is missing)."""


class SearchResult(NamedTuple):
    """Neighbours of each query, nearest first: arrays of shape (q, k).

    Where an approximate index finds fewer than ``k`` items, the missing entries have id ``-1``
    (``""`` for string ids), label ``-1`` and distance ``inf``.
    """

    ids: np.ndarray
    labels: np.ndarray
    distances: np.ndarray


# --------------------------------------------------------------------------------------------------
# the index
# --------------------------------------------------------------------------------------------------


class EmbeddingIndex:
    """A FAISS index of embeddings with their labels and ids.

    Parameters
    ----------
    dim : int
        Embedding dimension.
    kind : {"flat", "hnsw", "ivf"}
    metric : {"l2", "cosine"}
    hnsw_m, ef_construction, ef_search : int
        HNSW links per node, build-time and query-time candidate list sizes.
    nlist, nprobe, train_size : int
        IVF cells (default ``4 * sqrt(n)`` of the first batch added, at most ``n / 39``), cells
        searched per query, and the size of the random sample the cells are trained on.
    seed : int
        Seed of the IVF training sample and of the k-means.
    embed_fn : callable, optional
        ``images -> (n, dim) embeddings``; needed to add or query images (``from_model`` and
        ``load`` set it from the cached model).
    model_name, fingerprint : str, optional
        The registry model that made the vectors and the fingerprint of its cache entry.
    class_names : list of str, optional
        Readable name of each label.
    """

    def __init__(
        self,
        dim: int,
        kind: str = "flat",
        metric: str = "l2",
        *,
        hnsw_m: int = 32,
        ef_construction: int = 40,
        ef_search: int = 64,
        nlist: int | None = None,
        nprobe: int = 8,
        train_size: int = 100_000,
        seed: int = 0,
        embed_fn: Callable | None = None,
        model_name: str | None = None,
        fingerprint: str | None = None,
        class_names=None,
        input_shape=None,
    ):
        if kind not in KINDS:
            raise SearchError(f"kind must be one of {KINDS}, got {kind!r}.")
        if metric not in METRICS:
            raise SearchError(f"metric must be one of {METRICS}, got {metric!r}.")
        if int(dim) < 1:
            raise SearchError(f"dim must be >= 1, got {dim}.")
        for key, value in (
            ("hnsw_m", hnsw_m),
            ("ef_construction", ef_construction),
            ("ef_search", ef_search),
            ("nprobe", nprobe),
            ("train_size", train_size),
        ):
            if int(value) < 1:
                raise SearchError(f"{key} must be >= 1, got {value}.")
        self.dim, self.kind, self.metric = int(dim), kind, metric
        self.params = {
            "hnsw_m": int(hnsw_m),
            "ef_construction": int(ef_construction),
            "ef_search": int(ef_search),
            "nlist": None if nlist is None else int(nlist),
            "nprobe": int(nprobe),
            "train_size": int(train_size),
            "seed": int(seed),
        }
        self.embed_fn = embed_fn
        self.model_name, self.fingerprint = model_name, fingerprint
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self.input_shape = None if input_shape is None else tuple(int(s) for s in input_shape)
        self.source: dict | None = None  # where the items came from (dataset, split), for figures
        self.model_cache_dir: str | None = None
        self.model_dataset: str = "mnist"  # the models_cache/<dataset>/ entry of the model
        self._vectors = np.empty((0, self.dim), np.float32)
        self._labels = np.empty(0, np.int64)
        self._ids = np.empty(0, np.int64)
        self._next_id = 0
        self._index = None  # created at the first add (IVF needs data to train)

    # --- construction ---------------------------------------------------------------------------

    @classmethod
    def from_model(
        cls,
        model_name: str,
        images,
        labels=None,
        ids=None,
        *,
        data=None,
        kind: str = "flat",
        metric: str = "l2",
        class_names=None,
        cache_dir=None,
        batch_size: int = 512,
        train_kwargs: dict | None = None,
        **index_kwargs,
    ) -> EmbeddingIndex:
        """Embed ``images`` with the cached registry model ``model_name`` and index them.

        The model comes from ``helpers.training.train(model_name, data, cache_dir=cache_dir,
        **train_kwargs)``, which loads it when the cache's fingerprint matches (and trains it
        otherwise). ``data`` is the dataset the model was trained on (default: ``load_dataset()``);
        ``train_kwargs`` the training parameters it was cached with (default: the registry's).
        """
        from helpers import training
        from helpers.data import load_dataset
        from helpers.evaluation import embed

        if data is None:
            data = load_dataset(verbose=False)
        model, record = training.train(model_name, data, cache_dir=cache_dir, **(train_kwargs or {}))
        index = cls(
            int(model.output.shape[-1]),
            kind=kind,
            metric=metric,
            embed_fn=lambda x: embed(model, x, batch_size=batch_size),
            model_name=model_name,
            fingerprint=record["fingerprint"],
            class_names=class_names if class_names is not None else data.class_names,
            input_shape=tuple(model.input.shape[1:]),
            **index_kwargs,
        )
        index.model_cache_dir = str(Path(cache_dir or config.MODELS_CACHE).resolve())
        index.model_dataset = data.name
        index.add(images, labels, ids)
        return index

    def _new_faiss_index(self, sample: np.ndarray):
        faiss = import_faiss()
        faiss_metric = faiss.METRIC_L2 if self.metric == "l2" else faiss.METRIC_INNER_PRODUCT
        if self.kind == "flat":
            return flat_index(self.dim, self.metric)
        if self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, self.params["hnsw_m"], faiss_metric)
            index.hnsw.efConstruction = self.params["ef_construction"]
            index.hnsw.efSearch = self.params["ef_search"]
            return index
        nlist = self.params["nlist"]
        if nlist is None:
            # FAISS wants >= 39 training points per cell
            nlist = max(1, min(len(sample) // 39, int(4 * np.sqrt(len(sample)))))
            self.params["nlist"] = nlist
        if len(sample) < nlist:
            raise SearchError(
                f"an IVF index with nlist={nlist} cells needs at least {nlist} vectors in "
                f"its first add, got {len(sample)}; add more at once or lower nlist."
            )
        quantizer = flat_index(self.dim, self.metric)
        index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss_metric)
        index.cp.seed = self.params["seed"]
        rng = np.random.default_rng(self.params["seed"])
        take = min(len(sample), self.params["train_size"])
        rows = np.sort(rng.choice(len(sample), take, replace=False)) if take < len(sample) else slice(None)
        index.train(np.ascontiguousarray(sample[rows]))
        index.nprobe = self.params["nprobe"]
        return index

    # --- items ----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> np.ndarray:
        return self._ids.copy()

    @property
    def labels(self) -> np.ndarray:
        return self._labels.copy()

    @property
    def vectors(self) -> np.ndarray:
        """The stored embeddings (L2-normalised for the cosine metric)."""
        return self._vectors.copy()

    def _to_vectors(self, x, what: str) -> np.ndarray:
        """Embeddings of ``x``: (n, dim) arrays are embeddings, anything with 3+ axes is images."""
        a = np.asarray(x)
        if a.ndim == 2 and a.shape[1] == self.dim:
            vectors = a
        elif a.ndim in (3, 4):
            if self.embed_fn is None:
                raise SearchError(
                    f"{what} look like images {a.shape} but this index has no model to "
                    f"embed them; pass embeddings of shape (n, {self.dim})."
                )
            if a.ndim == 3:
                a = a[..., None]
            if self.input_shape is not None and tuple(a.shape[1:]) != self.input_shape:
                raise SearchError(
                    f"{what} have shape {a.shape[1:]} but the model takes "
                    f"{self.input_shape}; see helpers.search.read_image."
                )
            if len(a) == 0:
                raise SearchError(f"{what} are empty; pass at least one image.")
            vectors = self.embed_fn(a.astype(np.float32))
        else:
            raise SearchError(
                f"{what} must be embeddings of shape (n, {self.dim}) or images of shape "
                f"(n, H, W[, C]), got shape {a.shape}."
            )
        try:
            vectors = as_vectors(vectors, what)
        except KNNError as exc:
            raise SearchError(str(exc)) from None
        if vectors.shape[1] != self.dim:
            raise SearchError(f"{what} embed to {vectors.shape[1]} dimensions, the index has {self.dim}.")
        return l2_normalize(vectors) if self.metric == "cosine" else vectors

    def _check_ids(self, ids, n: int) -> np.ndarray:
        if ids is None:
            if self._ids.dtype.kind == "U":
                raise SearchError("this index has string ids: pass ids for the new items.")
            ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        else:
            ids = np.asarray(ids)
            if ids.ndim != 1 or len(ids) != n:
                raise SearchError(
                    f"ids must be a 1-D sequence of {n} ids (one per item), got shape {ids.shape}."
                )
            if ids.dtype.kind in "iu":
                ids = ids.astype(np.int64)
                if (ids < 0).any():
                    raise SearchError("integer ids must be >= 0 (-1 marks a missing neighbour).")
            elif ids.dtype.kind == "U":
                if (ids == "").any():
                    raise SearchError("string ids must not be empty ('' marks a missing neighbour).")
            else:
                raise SearchError(f"ids must be all integers or all strings, got dtype {ids.dtype}.")
            if len(self._ids) and (ids.dtype.kind == "U") != (self._ids.dtype.kind == "U"):
                kind = "string" if self._ids.dtype.kind == "U" else "integer"
                raise SearchError(f"this index has {kind} ids; the new ids must be {kind}s too.")
        if len(np.unique(ids)) != len(ids):
            raise SearchError("ids must be unique; the new ids repeat some values.")
        clash = np.intersect1d(ids, self._ids) if len(self._ids) else []
        if len(clash):
            raise SearchError(f"ids already in the index: {list(clash[:5])}; remove them first.")
        return ids

    def add(self, images_or_embeddings, labels=None, ids=None) -> np.ndarray:
        """Embed (if images) and store new items; return their ids.

        ``labels`` default to ``-1`` (no label); ``ids`` to consecutive integers.
        """
        vectors = self._to_vectors(images_or_embeddings, "items")
        n = len(vectors)
        if n == 0:
            raise SearchError("nothing to add: pass at least one item.")
        if labels is None:
            labels = np.full(n, NO_LABEL, np.int64)
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != n or labels.dtype.kind not in "iu":
            raise SearchError(
                f"labels must be {n} integers (one per item), got shape {labels.shape} "
                f"of dtype {labels.dtype}."
            )
        ids = self._check_ids(ids, n)
        if self._index is None:
            self._index = self._new_faiss_index(vectors)
        self._index.add(vectors)
        self._vectors = np.concatenate([self._vectors, vectors])
        self._labels = np.concatenate([self._labels, labels.astype(np.int64)])
        self._ids = ids if not len(self._ids) else np.concatenate([self._ids, ids])
        if ids.dtype.kind in "iu":
            self._next_id = max(self._next_id, int(ids.max()) + 1)
        return ids

    def remove(self, ids) -> int:
        """Remove the items with these ids; return how many were removed. Unknown ids are an error.

        Flat: FAISS ``remove_ids``. IVF: ``reset`` (keeps the trained cells) and re-add the rest.
        HNSW: rebuilt from the stored vectors (FAISS' HNSW cannot delete nodes).
        """
        ids = np.asarray(ids).reshape(-1)
        if len(ids) == 0:
            return 0
        if len(self._ids) == 0 or (ids.dtype.kind == "U") != (self._ids.dtype.kind == "U"):
            raise SearchError(f"ids not in the index: {list(ids[:5])}.")
        missing = np.setdiff1d(ids, self._ids)
        if len(missing):
            raise SearchError(f"ids not in the index: {list(missing[:5])}.")
        drop = np.isin(self._ids, ids)
        positions = np.flatnonzero(drop)
        if self.kind == "flat":
            self._index.remove_ids(positions.astype(np.int64))
        elif self.kind == "ivf":
            self._index.reset()
        keep = ~drop
        self._vectors, self._labels, self._ids = self._vectors[keep], self._labels[keep], self._ids[keep]
        if self.kind == "ivf":
            if len(self._vectors):
                self._index.add(self._vectors)
        elif self.kind == "hnsw":
            self._index = self._new_faiss_index(self._vectors)
            if len(self._vectors):
                self._index.add(self._vectors)
        return int(drop.sum())

    # --- queries --------------------------------------------------------------------------------

    def query(
        self, images_or_embeddings, k: int = 5, *, ef_search: int | None = None, nprobe: int | None = None
    ) -> SearchResult:
        """The ``k`` nearest stored items of each query (images are embedded, embeddings used as is).

        An array of shape (n, dim) is taken as embeddings; one with 3 or 4 axes as images.
        ``ef_search`` / ``nprobe`` override the index's setting for this call (HNSW / IVF).
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise SearchError(f"k must be an integer >= 1, got {k!r}.")
        if len(self) == 0:
            raise SearchError("the index is empty; add items before querying.")
        k = int(k)
        if k > len(self):
            raise SearchError(f"k={k} is larger than the number of stored items ({len(self)}).")
        q = self._to_vectors(images_or_embeddings, "queries")
        if self.kind == "hnsw":
            self._index.hnsw.efSearch = int(ef_search or self.params["ef_search"])
        elif self.kind == "ivf":
            self._index.nprobe = int(nprobe or self.params["nprobe"])
        scores, pos = self._index.search(q, k)
        found = pos >= 0
        safe = np.where(found, pos, 0)
        if self.metric == "l2":
            distances = np.maximum(scores, 0.0)
        else:
            distances = 1.0 - scores
        distances = np.where(found, distances, np.inf).astype(np.float32)
        ids = self._ids[safe]
        ids[~found] = "" if ids.dtype.kind == "U" else -1
        labels = np.where(found, self._labels[safe], NO_LABEL)
        return SearchResult(ids, labels, distances)

    def class_name(self, label: int) -> str:
        """The readable name of ``label`` (its number when the index has no class names)."""
        if label == NO_LABEL:
            return "-"
        if self.class_names is not None and 0 <= label < len(self.class_names):
            return self.class_names[label]
        return str(label)

    # --- persistence ----------------------------------------------------------------------------

    def metadata(self) -> dict:
        faiss = import_faiss()
        return {
            "format": INDEX_FORMAT,
            "kind": self.kind,
            "metric": self.metric,
            "dim": self.dim,
            "count": len(self),
            "params": self.params,
            "id_type": "str" if self._ids.dtype.kind == "U" else "int",
            "next_id": self._next_id,
            "class_names": self.class_names,
            "model_name": self.model_name,
            "model_fingerprint": self.fingerprint,
            "model_cache_dir": self.model_cache_dir,
            "model_dataset": self.model_dataset,
            "input_shape": None if self.input_shape is None else list(self.input_shape),
            "source": self.source,
            "faiss_version": faiss.__version__,
        }

    def save(self, folder) -> Path:
        """Write the index to ``folder`` (created or replaced) so that a crash leaves the old one.

        The files go to a new sibling folder ``.<name>.tmp-<random>``; then the old folder is renamed
        to ``.<name>.old-<random>``, the new one renamed to ``folder`` and the old one deleted. A
        crash before the swap leaves the old folder untouched; one between the two renames leaves
        the old copy, which ``load`` finds. An existing ``folder`` that is not an index is refused.
        """
        if self._index is None:
            raise SearchError("the index is empty; add items before saving.")
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
                faiss.write_index(self._index, str(path))
            for name, array in (("vectors", self._vectors), ("labels", self._labels), ("ids", self._ids)):
                with config.atomic_path(tmp / f"{name}.npy", suffix=".npy") as path, open(path, "wb") as fh:
                    np.save(fh, array, allow_pickle=False)
            config.write_json(tmp / "metadata.json", self.metadata())  # last: marks a complete folder
            if folder.exists():
                os.rename(folder, old)
            os.rename(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
        return folder

    @classmethod
    def load(
        cls, folder, *, cache_dir=None, embed_fn: Callable | None = None, verify_model: bool = True
    ) -> EmbeddingIndex:
        """Load an index saved by :meth:`save`.

        When the index was made by a registry model, its cache (``cache_dir``, default the one it
        was built from, else ``config.MODELS_CACHE``) must still hold a model with the same
        fingerprint, or ``ModelMismatchError`` is raised; ``verify_model=False`` skips the check for
        an index that will only be queried with embeddings. ``embed_fn`` replaces the model.
        """
        folder = _existing_index_folder(Path(folder))
        faiss = import_faiss()
        try:
            meta = json.loads((folder / "metadata.json").read_text())
            if meta.get("format") != INDEX_FORMAT:
                raise NotAnIndexError(
                    f"{folder} holds index format {meta.get('format')!r}; this "
                    f"version reads format {INDEX_FORMAT}. Rebuild the index."
                )
            arrays = {
                name: np.load(folder / f"{name}.npy", allow_pickle=False)
                for name in ("vectors", "labels", "ids")
            }
            faiss_index = faiss.read_index(str(folder / "index.faiss"))
        except NotAnIndexError:
            raise
        except Exception as exc:  # noqa: BLE001 - FAISS raises RuntimeError, numpy ValueError/OSError...
            first_line = str(exc).splitlines()[0][:120] if str(exc) else ""
            raise NotAnIndexError(
                f"{folder} is not a readable index ({type(exc).__name__}: {first_line}); rebuild it."
            ) from None
        n = meta["count"]
        if {faiss_index.ntotal, len(arrays["vectors"]), len(arrays["labels"]), len(arrays["ids"])} != {n}:
            raise NotAnIndexError(
                f"{folder} is inconsistent (FAISS holds {faiss_index.ntotal} vectors, "
                f"the metadata says {n}); rebuild it."
            )
        params = dict(meta["params"])
        index = cls(
            meta["dim"],
            meta["kind"],
            meta["metric"],
            embed_fn=embed_fn,
            model_name=meta.get("model_name"),
            fingerprint=meta.get("model_fingerprint"),
            class_names=meta.get("class_names"),
            input_shape=meta.get("input_shape"),
            **params,
        )
        index.source = meta.get("source")
        index._index = faiss_index
        index._vectors = np.ascontiguousarray(arrays["vectors"], dtype=np.float32)
        index._labels = arrays["labels"].astype(np.int64)
        index._ids = arrays["ids"]
        index._next_id = int(meta.get("next_id", 0))
        index.model_cache_dir = meta.get("model_cache_dir")
        index.model_dataset = meta.get("model_dataset", "mnist")
        if index.kind == "ivf":
            faiss_index.nprobe = index.params["nprobe"]
        elif index.kind == "hnsw":
            faiss_index.hnsw.efSearch = index.params["ef_search"]
        if cache_dir is not None:
            index.model_cache_dir = str(Path(cache_dir).resolve())
        if index.model_name and embed_fn is None:
            if verify_model:
                index._check_model()
            index.embed_fn = index._lazy_model_embed
        return index

    def _model_cache_dir(self) -> Path:
        if self.model_cache_dir and Path(self.model_cache_dir).is_dir():
            return Path(self.model_cache_dir)
        return config.MODELS_CACHE

    def _check_model(self) -> Path:
        from helpers.training import read_cache_record

        cache_dir = self._model_cache_dir()
        record = read_cache_record(self.model_name, cache_dir, self.model_dataset)
        if record is None:
            raise ModelMismatchError(
                f"model {self.model_name!r} that made this index is not in the cache {cache_dir}; "
                f"train it again with the same settings or pass its cache_dir / --cache-dir."
            )
        if record.get("fingerprint") != self.fingerprint:
            raise ModelMismatchError(
                f"the cached model {self.model_name!r} in {cache_dir} changed since this index was built "
                f"(fingerprint {str(record.get('fingerprint'))[:12]} != {str(self.fingerprint)[:12]}); "
                f"rebuild the index with the current model."
            )
        return cache_dir

    def _lazy_model_embed(self, images):
        """Embed with the index's model, loaded (after checking its fingerprint) at the first call."""
        if getattr(self, "_model", None) is None:
            from helpers.training import CacheError, load_embedding

            cache_dir = self._check_model()
            try:
                self._model = load_embedding(
                    self.model_name,
                    input_shape=self.input_shape or (28, 28, 1),
                    cache_dir=cache_dir,
                    dataset=self.model_dataset,
                )
            except CacheError as exc:
                raise ModelMismatchError(f"model {self.model_name!r} cannot be loaded: {exc}") from None
        from helpers.evaluation import embed

        return embed(self._model, images)


def is_index_folder(folder) -> bool:
    """Whether ``folder`` holds the files of a saved index."""
    folder = Path(folder)
    return folder.is_dir() and all((folder / name).is_file() for name in _FILES)


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


def _existing_index_folder(folder: Path) -> Path:
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
    missing = [name for name in _FILES if not (folder / name).is_file()]
    raise NotAnIndexError(
        f"{folder} is not an index folder (missing {', '.join(missing)}); build one with "
        f"`python -m helpers.search build`."
    )


# --------------------------------------------------------------------------------------------------
# images from files
# --------------------------------------------------------------------------------------------------


def _import_cv2():
    """Import OpenCV, or raise one line saying how to install it."""
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - opencv-python-headless is in requirements.txt
        raise ImportError("reading image files needs OpenCV: pip install opencv-python-headless") from exc
    return cv2


def read_image(path, size=(28, 28)) -> np.ndarray:
    """Read a PNG/JPEG (any size, grey, colour or with alpha) as the model saw MNIST: (H, W, 1) in [0, 1].

    Steps: OpenCV reads the file unchanged; 16-bit images are scaled to [0, 1] like 8-bit ones;
    colour becomes grey (``cv2.cvtColor``); a transparent image is composited over black when its
    opaque pixels are light on average and over white otherwise, so the drawn strokes stay visible.
    The whole image is resized to ``size`` with ``cv2.INTER_AREA`` (no cropping, aspect not kept).
    **A light background is detected by the median of the border pixels** (the outermost row and
    column on each side): above 0.5 means a dark digit on paper, so the image is inverted to a light
    digit on a dark background, as in MNIST.
    """
    cv2 = _import_cv2()

    path = Path(path)
    if not path.is_file():
        raise SearchError(f"image file {path} does not exist.")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise SearchError(f"cannot read image file {path}: not an image OpenCV can decode (PNG, JPEG, ...).")
    if img.dtype == np.uint8:
        img = img.astype(np.float32) / 255.0
    elif img.dtype == np.uint16:
        img = img.astype(np.float32) / 65535.0
    else:
        img = np.clip(img.astype(np.float32), 0.0, 1.0)
    alpha = None
    if img.ndim == 3:
        channels = img.shape[2]
        if channels in (2, 4):
            alpha = img[..., -1]
            img = img[..., :-1]
        img = img[..., 0] if img.shape[2] == 1 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    if alpha is not None and (alpha < 1.0).any():
        opaque = alpha > 0.5
        light_strokes = opaque.any() and float(img[opaque].mean()) > 0.5
        background = 0.0 if light_strokes else 1.0
        img = img * alpha + background * (1.0 - alpha)
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    if float(np.median(border)) > 0.5:
        img = 1.0 - img
    img = cv2.resize(img, (int(size[1]), int(size[0])), interpolation=cv2.INTER_AREA)
    return np.clip(img, 0.0, 1.0).astype(np.float32)[..., None]


def write_image(path, image) -> Path:
    """Write a (H, W[, 1]) image in [0, 1] as an 8-bit grey PNG, atomically."""
    cv2 = _import_cv2()

    a = np.asarray(image, dtype=np.float32).squeeze()
    a = np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
    path = Path(path)
    with config.atomic_path(path, suffix=path.suffix or ".png") as tmp:
        if not cv2.imwrite(str(tmp), a):
            raise SearchError(f"cannot write image {path}.")
    config.log_image(path)
    return path


# --------------------------------------------------------------------------------------------------
# figure
# --------------------------------------------------------------------------------------------------


def _neighbour_images(index: EmbeddingIndex, result: SearchResult, shape) -> np.ndarray:
    """The neighbours' images (q, k, H, W, C) when the index was built from a dataset split with
    integer ids (``build``); blank tiles otherwise (the figure then shows classes and distances)."""
    src = index.source
    if not src or result.ids.dtype.kind == "U":
        return np.zeros((*result.ids.shape, *shape), np.float32)
    from helpers.data import load_dataset

    data = load_dataset(
        src["dataset"], source=src.get("source", "auto"), seed=src.get("seed", 42), verbose=False
    )
    x, _ = data.split(src["split"])
    return x[np.where(result.ids >= 0, result.ids, 0)]


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line on stderr, exit 2 (argparse prints the usage too)
        self.exit(2, f"error: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m helpers.search", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    build = sub.add_parser("build", help="embed a dataset split with a cached model and save an index")
    build.add_argument("--model", required=True, help="registry model name")
    build.add_argument("--dataset", default="mnist")
    build.add_argument("--source", default="auto", help="dataset source (see helpers.data)")
    build.add_argument("--split", default="train", choices=("train", "val", "test"))
    build.add_argument("--out", required=True, help="index folder to write (replaced atomically)")
    build.add_argument("--kind", default="flat", choices=KINDS)
    build.add_argument("--metric", default="l2", choices=METRICS)
    build.add_argument("--cache-dir", help="model cache (default models_cache/)")
    build.add_argument("--epochs", type=int, help="training parameters the model was cached with")
    build.add_argument("--steps-per-epoch", type=int)
    build.add_argument("--batch-size", type=int)
    query = sub.add_parser("query", help="print the nearest stored items of image files")
    query.add_argument("--index", required=True, help="index folder written by `build`")
    query.add_argument("--image", required=True, action="append", help="PNG/JPEG file (repeatable)")
    query.add_argument("-k", type=int, default=5, help="neighbours per image (>= 1)")
    query.add_argument("--figure", help="also save the query and its neighbours as a PNG")
    query.add_argument("--cache-dir", help="model cache, if not the one the index was built from")
    return parser


def _build(args) -> int:
    from helpers.data import load_dataset

    data = load_dataset(args.dataset, source=args.source, verbose=False)
    x, y = data.split(args.split)
    given = {"epochs": args.epochs, "batch_size": args.batch_size, "steps_per_epoch": args.steps_per_epoch}
    train_kwargs = {key: value for key, value in given.items() if value is not None}
    index = EmbeddingIndex.from_model(
        args.model,
        x,
        y,
        data=data,
        kind=args.kind,
        metric=args.metric,
        cache_dir=args.cache_dir,
        train_kwargs=train_kwargs,
    )
    index.source = {"dataset": data.name, "source": data.source, "split": args.split, "seed": 42}
    index.save(args.out)
    print(
        f"saved {len(index)} items of {data.name}/{args.split} ({args.kind}, {args.metric}, "
        f"model {args.model}) to {args.out}"
    )
    return 0


def _query(args) -> int:
    # every check on the user's input runs before Keras is imported (its import prints to stderr)
    if args.k < 1:
        raise SearchError(f"-k must be >= 1, got {args.k}.")
    if args.figure and Path(args.figure).suffix.lower() != ".png":
        raise SearchError(f"--figure must be a .png path, got {args.figure}.")
    folder = _existing_index_folder(Path(args.index))
    try:
        meta = json.loads((folder / "metadata.json").read_text())
        count, shape = int(meta["count"]), tuple(meta.get("input_shape") or (28, 28, 1))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise NotAnIndexError(f"{folder} has an unreadable metadata.json ({exc}); rebuild it.") from None
    if args.k > count:
        raise SearchError(f"-k {args.k} is larger than the index ({count} items).")
    images = np.stack([read_image(path, size=shape[:2]) for path in args.image])
    index = EmbeddingIndex.load(args.index, cache_dir=args.cache_dir)
    result = index.query(images, args.k)
    for row, path in enumerate(args.image):
        print(f"query {path}")
        print(f"  {'rank':>4}  {'id':>8}  {'class':<12} distance")
        for col in range(args.k):
            name = index.class_name(int(result.labels[row, col]))
            print(f"  {col + 1:>4}  {result.ids[row, col]!s:>8}  {name:<12} {result.distances[row, col]:.6g}")
    if args.figure:
        from helpers import plots

        names = index.class_names if (result.labels >= 0).all() else None  # -1: unlabelled items
        fig = plots.plot_query_neighbours(
            images,
            _neighbour_images(index, result, shape),
            result.distances,
            neighbour_labels=result.labels,
            class_names=names,
            title=f"{', '.join(Path(p).name for p in args.image)}: nearest items of {Path(args.index).name}",
        )
        config.save_figure(fig, args.figure)
        plots.plt.close(fig)
        print(f"figure: {args.figure}")
    return 0


def main(argv=None) -> int:
    """Entry point of ``python -m helpers.search``; returns the exit status (2 on bad input)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, one line printed by _Parser.error)
        return int(exc.code or 0)
    try:
        return _build(args) if args.command == "build" else _query(args)
    except (ValueError, RuntimeError) as exc:  # SearchError, DatasetError, an unknown model name
        training = sys.modules.get("helpers.training")  # imported only once a model is needed
        if isinstance(exc, RuntimeError) and not (training and isinstance(exc, training.CacheError)):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
