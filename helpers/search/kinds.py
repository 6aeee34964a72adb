"""The kinds of index, as FAISS ``index_factory`` strings, and the settings of each.

``IndexConfig`` names a kind (``"flat"``, ``"hnsw"``, ``"ivf"``), a metric and the kind's parameters;
:meth:`IndexConfig.build` makes the empty FAISS index (an IVF one trained on a sample). Every kind
takes the caller's int64 keys (``add_with_ids``): flat and HNSW through ``IndexIDMap2`` (``"IDMap2,Flat"``,
``"IDMap2,HNSW32"``), IVF natively (``"IVF{nlist},Flat"``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from helpers.knn import METRICS, import_faiss
from helpers.search.errors import SearchError

KINDS = ("flat", "hnsw", "ivf")
#: the parameters that must be >= 1 (``nlist`` too, once it is set)
_POSITIVE = ("hnsw_m", "ef_construction", "ef_search", "nprobe", "train_size")


@dataclasses.dataclass
class IndexConfig:
    """A kind of index, its metric and its parameters.

    Parameters
    ----------
    kind : {"flat", "hnsw", "ivf"}
        ``"flat"``: exact brute force. ``"hnsw"``: a navigable small-world graph (approximate).
        ``"ivf"``: k-means cells, a few searched per query (approximate, cheap to build).
    metric : {"l2", "cosine"}
    hnsw_m, ef_construction, ef_search : int
        HNSW links per node, build-time and query-time candidate list sizes.
    nlist, nprobe, train_size : int
        IVF cells (default ``4 * sqrt(n)`` of the first batch added, at most ``n / 39``; set at the
        first add), cells searched per query, and the size of the random sample the cells are
        trained on.
    seed : int
        Seed of the IVF training sample and of the k-means.
    """

    kind: str = "flat"
    metric: str = "l2"
    hnsw_m: int = 32
    ef_construction: int = 40
    ef_search: int = 64
    nlist: int | None = None
    nprobe: int = 8
    train_size: int = 100_000
    seed: int = 0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise SearchError(f"kind must be one of {KINDS}, got {self.kind!r}.")
        if self.metric not in METRICS:
            raise SearchError(f"metric must be one of {METRICS}, got {self.metric!r}.")
        for key in (*_POSITIVE, *(("nlist",) if self.nlist is not None else ())):
            if int(getattr(self, key)) < 1:
                raise SearchError(f"{key} must be >= 1, got {getattr(self, key)}.")
            setattr(self, key, int(getattr(self, key)))
        self.seed = int(self.seed)

    @classmethod
    def from_metadata(cls, kind: str, metric: str, params: dict) -> IndexConfig:
        """The config a saved index recorded (``metadata.json``'s kind, metric and params)."""
        return cls(kind, metric, **params)

    def params(self) -> dict:
        """The kind's parameters, as ``metadata.json`` records them."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("kind", "metric")
        }

    def factory_string(self) -> str:
        """The FAISS ``index_factory`` description of this kind (``nlist`` must be set for IVF)."""
        if self.kind == "flat":
            return "IDMap2,Flat"
        if self.kind == "hnsw":
            return f"IDMap2,HNSW{self.hnsw_m}"
        return f"IVF{self.nlist},Flat"

    def build(self, dim: int, sample: np.ndarray):
        """An empty FAISS index of this kind for ``dim``-dimensional vectors; IVF cells are trained
        on (a seeded sample of) ``sample``, the first vectors added, which also set the default nlist."""
        faiss = import_faiss()
        if self.kind == "ivf":
            self._resolve_nlist(len(sample))
        metric = faiss.METRIC_L2 if self.metric == "l2" else faiss.METRIC_INNER_PRODUCT
        index = faiss.index_factory(int(dim), self.factory_string(), metric)
        if self.kind == "hnsw":
            faiss.downcast_index(index.index).hnsw.efConstruction = self.ef_construction
        elif self.kind == "ivf":
            index.cp.seed = self.seed
            index.train(self._training_sample(sample))
        self.set_search_params(index)
        return index

    def set_search_params(self, index, ef_search: int | None = None, nprobe: int | None = None) -> None:
        """Set the query-time parameter of ``index`` (HNSW ``efSearch``, IVF ``nprobe``): the given
        value, else this config's."""
        if self.kind == "hnsw":
            hnsw = import_faiss().downcast_index(index.index).hnsw
            hnsw.efSearch = int(ef_search or self.ef_search)
        elif self.kind == "ivf":
            index.nprobe = int(nprobe or self.nprobe)

    def _resolve_nlist(self, n: int) -> None:
        if self.nlist is None:  # FAISS wants >= 39 training points per cell
            self.nlist = max(1, min(n // 39, int(4 * np.sqrt(n))))
        if n < self.nlist:
            raise SearchError(
                f"an IVF index with nlist={self.nlist} cells needs at least {self.nlist} vectors in "
                f"its first add, got {n}; add more at once or lower nlist."
            )

    def _training_sample(self, sample: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        take = min(len(sample), self.train_size)
        rows = np.sort(rng.choice(len(sample), take, replace=False)) if take < len(sample) else slice(None)
        return np.ascontiguousarray(sample[rows])
