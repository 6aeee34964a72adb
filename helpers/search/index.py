"""``EmbeddingIndex``: vectors with their labels and ids in a FAISS index (flat, HNSW or IVF).

See the package's documentation (``helpers.search``) for the kinds, metrics and removal; the kinds
and their settings are in :mod:`helpers.search.kinds`, the folder format in :mod:`helpers.search.store`.

Each item gets an int64 key, the id FAISS stores (``add_with_ids``); keys grow with every add and are
never reused, so the stored rows (vectors, labels, the caller's ids) stay in key order and a FAISS
answer maps back to its row by a sorted search.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from helpers.knn import QUERY_CHUNK, KNNError, as_vectors, import_faiss, l2_normalize
from helpers.search import store
from helpers.search.errors import SearchError
from helpers.search.kinds import IndexConfig
from helpers.search.model import IndexModel

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
    config : IndexConfig, optional
        The kind of index, its metric and parameters (default: exact flat, squared L2).
    class_names : list of str, optional
        Readable name of each label.
    embed_fn : callable, optional
        ``images -> (n, dim) embeddings``; needed to add or query images (``from_model`` and
        ``load`` set it from the cached model).
    input_shape : tuple, optional
        The image shape ``embed_fn`` takes (checked before embedding).
    model : IndexModel, optional
        The registry model that made the vectors (``from_model`` sets it).
    """

    def __init__(
        self,
        dim: int,
        config: IndexConfig | None = None,
        *,
        class_names=None,
        embed_fn: Callable | None = None,
        input_shape=None,
        model: IndexModel | None = None,
    ):
        if int(dim) < 1:
            raise SearchError(f"dim must be >= 1, got {dim}.")
        self.dim, self.config = int(dim), config or IndexConfig()
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self.embed_fn, self.model = embed_fn, model
        self.input_shape = None if input_shape is None else tuple(int(s) for s in input_shape)
        self.source: dict | None = None  # where the items came from (dataset, split), for figures
        self._vectors = np.empty((0, self.dim), np.float32)
        self._labels = np.empty(0, np.int64)
        self._ids = np.empty(0, np.int64)
        self._keys = np.empty(0, np.int64)  # the FAISS id of each row, ascending
        self._next_id = self._next_key = 0
        self._faiss = None  # created at the first add (IVF needs data to train)

    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def metric(self) -> str:
        return self.config.metric

    @property
    def params(self) -> dict:
        """The kind's parameters (``nlist`` is set at the first add of an IVF index)."""
        return self.config.params()

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
        config: IndexConfig | None = None,
        cache_dir=None,
        batch_size: int = 512,
        train_kwargs: dict | None = None,
    ) -> EmbeddingIndex:
        """Embed ``images`` with the cached registry model ``model_name`` and index them.

        The model comes from ``helpers.training.train(model_name, data, cache_dir=cache_dir,
        **train_kwargs)``, which loads it when the cache's fingerprint matches (and trains it
        otherwise). ``data`` is the dataset the model was trained on (default: ``load_dataset()``),
        whose class names the index takes; ``train_kwargs`` the training parameters it was cached
        with (default: the registry's).
        """
        from helpers import config as paths  # the module: ``config`` here is the index's settings
        from helpers import training
        from helpers.data import load_dataset
        from helpers.evaluation import embed

        if data is None:
            data = load_dataset(verbose=False)
        model, record = training.train(model_name, data, cache_dir=cache_dir, **(train_kwargs or {}))
        cache = str(Path(cache_dir or paths.MODELS_CACHE).resolve())
        index = cls(
            int(model.output.shape[-1]),
            config,
            class_names=data.class_names,
            embed_fn=lambda x: embed(model, x, batch_size=batch_size),
            input_shape=tuple(model.input.shape[1:]),
            model=IndexModel(model_name, record["fingerprint"], cache, data.name),
        )
        index.add(images, labels, ids)
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
            vectors = self._embed_images(a, what)
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

    def _embed_images(self, images: np.ndarray, what: str):
        if self.embed_fn is None:
            raise SearchError(
                f"{what} look like images {images.shape} but this index has no model to "
                f"embed them; pass embeddings of shape (n, {self.dim})."
            )
        if images.ndim == 3:
            images = images[..., None]
        if self.input_shape is not None and tuple(images.shape[1:]) != self.input_shape:
            raise SearchError(
                f"{what} have shape {images.shape[1:]} but the model takes "
                f"{self.input_shape}; see helpers.search.read_image."
            )
        if len(images) == 0:
            raise SearchError(f"{what} are empty; pass at least one image.")
        return self.embed_fn(images.astype(np.float32))

    def _check_ids(self, ids, n: int) -> np.ndarray:
        """The new items' ids: consecutive integers by default, else ``ids`` checked (one per item,
        unique, not stored yet, all integers >= 0 or all non-empty strings like the stored ones)."""
        if ids is None:
            if self._ids.dtype.kind == "U":
                raise SearchError("this index has string ids: pass ids for the new items.")
            ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        else:
            ids = _given_ids(ids, n)
            if len(self._ids) and (ids.dtype.kind == "U") != (self._ids.dtype.kind == "U"):
                kind = "string" if self._ids.dtype.kind == "U" else "integer"
                raise SearchError(f"this index has {kind} ids; the new ids must be {kind}s too.")
        if len(np.unique(ids)) != len(ids):
            raise SearchError("ids must be unique; the new ids repeat some values.")
        clash = np.intersect1d(ids, self._ids) if len(self._ids) else []
        if len(clash):
            raise SearchError(f"ids already in the index: {list(clash[:5])}; remove them first.")
        return ids

    def _check_labels(self, labels, n: int) -> np.ndarray:
        if labels is None:
            return np.full(n, NO_LABEL, np.int64)
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != n or labels.dtype.kind not in "iu":
            raise SearchError(
                f"labels must be {n} integers (one per item), got shape {labels.shape} "
                f"of dtype {labels.dtype}."
            )
        return labels.astype(np.int64)

    def add(self, images_or_embeddings, labels=None, ids=None) -> np.ndarray:
        """Embed (if images) and store new items; return their ids.

        ``labels`` default to ``-1`` (no label); ``ids`` to consecutive integers.
        """
        vectors = self._to_vectors(images_or_embeddings, "items")
        n = len(vectors)
        if n == 0:
            raise SearchError("nothing to add: pass at least one item.")
        labels = self._check_labels(labels, n)
        ids = self._check_ids(ids, n)
        if self._faiss is None:
            self._faiss = self.config.build(self.dim, vectors)
        keys = np.arange(self._next_key, self._next_key + n, dtype=np.int64)
        self._faiss.add_with_ids(vectors, keys)
        self._vectors = np.concatenate([self._vectors, vectors])
        self._labels = np.concatenate([self._labels, labels])
        self._ids = ids if not len(self._ids) else np.concatenate([self._ids, ids])
        self._keys = np.concatenate([self._keys, keys])
        self._next_key += n
        if ids.dtype.kind in "iu":
            self._next_id = max(self._next_id, int(ids.max()) + 1)
        return ids

    def remove(self, ids) -> int:
        """Remove the items with these ids; return how many were removed. Unknown ids are an error.

        Flat (``IndexIDMap2``) and IVF: FAISS ``remove_ids`` by key. HNSW: rebuilt from the stored
        vectors (FAISS' HNSW cannot delete nodes).
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
        if self.kind != "hnsw":
            self._faiss.remove_ids(np.ascontiguousarray(self._keys[drop]))
        keep = ~drop
        self._vectors, self._labels = self._vectors[keep], self._labels[keep]
        self._ids, self._keys = self._ids[keep], self._keys[keep]
        if self.kind == "hnsw":
            self._faiss = self.config.build(self.dim, self._vectors)
            if len(self._vectors):
                self._faiss.add_with_ids(self._vectors, self._keys)
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
        self.config.set_search_params(self._faiss, ef_search, nprobe)
        scores, keys = self._search(q, k)
        found = keys >= 0
        rows = np.searchsorted(self._keys, np.where(found, keys, self._keys[0]))
        distances = np.maximum(scores, 0.0) if self.metric == "l2" else 1.0 - scores
        distances = np.where(found, distances, np.inf).astype(np.float32)
        ids = self._ids[rows]
        ids[~found] = "" if ids.dtype.kind == "U" else -1
        labels = np.where(found, self._labels[rows], NO_LABEL)
        return SearchResult(ids, labels, distances)

    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """FAISS' ``(scores, keys)``, searched in blocks of ``helpers.knn.QUERY_CHUNK`` queries (as
        ``exact_knn`` does: a flat index gives its answers to the bit)."""
        blocks = [
            self._faiss.search(q[start : start + QUERY_CHUNK], k) for start in range(0, len(q), QUERY_CHUNK)
        ]
        return np.concatenate([b[0] for b in blocks]), np.concatenate([b[1] for b in blocks])

    def class_name(self, label: int) -> str:
        """The readable name of ``label`` (its number when the index has no class names)."""
        if label == NO_LABEL:
            return "-"
        if self.class_names is not None and 0 <= label < len(self.class_names):
            return self.class_names[label]
        return str(label)

    # --- persistence ----------------------------------------------------------------------------

    def metadata(self) -> dict:
        """What ``metadata.json`` records: kind, metric, sizes, parameters, class names, the model."""
        model = self.model.metadata() if self.model else dict.fromkeys(IndexModel("").metadata())
        return {
            "format": store.INDEX_FORMAT,
            "kind": self.kind,
            "metric": self.metric,
            "dim": self.dim,
            "count": len(self),
            "params": self.params,
            "id_type": "str" if self._ids.dtype.kind == "U" else "int",
            "next_id": self._next_id,
            "next_key": self._next_key,
            "class_names": self.class_names,
            **model,
            "input_shape": None if self.input_shape is None else list(self.input_shape),
            "source": self.source,
            "faiss_version": import_faiss().__version__,
        }

    def save(self, folder) -> Path:
        """Write the index to ``folder`` (created or replaced); a crash leaves the old one loadable.

        See :func:`helpers.search.store.write_index_folder`. An existing ``folder`` that is not an
        index is refused.
        """
        if self._faiss is None:
            raise SearchError("the index is empty; add items before saving.")
        arrays = {"vectors": self._vectors, "labels": self._labels, "ids": self._ids, "keys": self._keys}
        return store.write_index_folder(folder, self._faiss, arrays, self.metadata())

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
        model = IndexModel.from_metadata(meta)
        if model is not None and cache_dir is not None:
            model.cache_dir = str(Path(cache_dir).resolve())
        index = cls(
            meta["dim"],
            IndexConfig.from_metadata(meta["kind"], meta["metric"], meta["params"]),
            class_names=meta.get("class_names"),
            embed_fn=embed_fn,
            input_shape=meta.get("input_shape"),
            model=model,
        )
        index._restore(meta, arrays, faiss_index)
        if model is not None and embed_fn is None:
            if verify_model:
                model.check()
            index.embed_fn = model.lazy_embed_fn(index.input_shape)
        return index

    def _restore(self, meta: dict, arrays: dict, faiss_index) -> None:
        self.source = meta.get("source")
        self._faiss = faiss_index
        self._vectors = np.ascontiguousarray(arrays["vectors"], dtype=np.float32)
        self._labels = arrays["labels"].astype(np.int64)
        self._ids = arrays["ids"]
        self._keys = arrays["keys"].astype(np.int64)
        self._next_id, self._next_key = int(meta["next_id"]), int(meta["next_key"])
        self.config.set_search_params(faiss_index)


def _given_ids(ids, n: int) -> np.ndarray:
    """The caller's ``ids`` for ``n`` new items: one per item, integers >= 0 or non-empty strings."""
    ids = np.asarray(ids)
    if ids.ndim != 1 or len(ids) != n:
        raise SearchError(f"ids must be a 1-D sequence of {n} ids (one per item), got shape {ids.shape}.")
    if ids.dtype.kind in "iu":
        ids = ids.astype(np.int64)
        if (ids < 0).any():
            raise SearchError("integer ids must be >= 0 (-1 marks a missing neighbour).")
    elif ids.dtype.kind == "U":
        if (ids == "").any():
            raise SearchError("string ids must not be empty ('' marks a missing neighbour).")
    else:
        raise SearchError(f"ids must be all integers or all strings, got dtype {ids.dtype}.")
    return ids
