"""``EmbeddingIndex``: vectors with their labels and ids in a FAISS index (flat, HNSW or IVF).

See the package's documentation (``helpers.search``) for the kinds, metrics and removal; the
folder format is in :mod:`helpers.search.store`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from helpers import config
from helpers.knn import METRICS, KNNError, as_vectors, flat_index, import_faiss, l2_normalize
from helpers.search import store
from helpers.search.errors import ModelMismatchError, SearchError

KINDS = ("flat", "hnsw", "ivf")
NO_LABEL = -1


class SearchResult(NamedTuple):
    """Neighbours of each query, nearest first: arrays of shape (q, k).

    Where an approximate index finds fewer than ``k`` items, the missing entries have id ``-1``
    (``""`` for string ids), label ``-1`` and distance ``inf``.
    """

    ids: np.ndarray
    labels: np.ndarray
    distances: np.ndarray


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

    # --- persistence ----------------------------------------------------------------------------

    def metadata(self) -> dict:
        """What ``metadata.json`` records: kind, metric, sizes, parameters, class names, the model."""
        faiss = import_faiss()
        return {
            "format": store.INDEX_FORMAT,
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
        """Write the index to ``folder`` (created or replaced); a crash leaves the old one loadable.

        See :func:`helpers.search.store.write_index_folder`. An existing ``folder`` that is not an
        index is refused.
        """
        if self._index is None:
            raise SearchError("the index is empty; add items before saving.")
        arrays = {"vectors": self._vectors, "labels": self._labels, "ids": self._ids}
        return store.write_index_folder(folder, self._index, arrays, self.metadata())

    def write_projector(self, folder, images=None, *, sprite_size: int = 28) -> Path:
        """Write TensorBoard Embedding Projector files; see :func:`helpers.search.projector.write_projector`."""
        from helpers.search.projector import write_projector

        return write_projector(self, folder, images, sprite_size=sprite_size)

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
        meta, arrays, faiss_index = store.read_index_folder(folder)
        index = cls(
            meta["dim"],
            meta["kind"],
            meta["metric"],
            embed_fn=embed_fn,
            model_name=meta.get("model_name"),
            fingerprint=meta.get("model_fingerprint"),
            class_names=meta.get("class_names"),
            input_shape=meta.get("input_shape"),
            **dict(meta["params"]),
        )
        index._restore(meta, arrays, faiss_index)
        if cache_dir is not None:
            index.model_cache_dir = str(Path(cache_dir).resolve())
        if index.model_name and embed_fn is None:
            if verify_model:
                index._check_model()
            index.embed_fn = index._lazy_model_embed
        return index

    def _restore(self, meta: dict, arrays: dict, faiss_index) -> None:
        self.source = meta.get("source")
        self._index = faiss_index
        self._vectors = np.ascontiguousarray(arrays["vectors"], dtype=np.float32)
        self._labels = arrays["labels"].astype(np.int64)
        self._ids = arrays["ids"]
        self._next_id = int(meta.get("next_id", 0))
        self.model_cache_dir = meta.get("model_cache_dir")
        self.model_dataset = meta.get("model_dataset", "mnist")
        if self.kind == "ivf":
            faiss_index.nprobe = self.params["nprobe"]
        elif self.kind == "hnsw":
            faiss_index.hnsw.efSearch = self.params["ef_search"]

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
