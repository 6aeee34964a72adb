"""Similar-image search: an embedding index on FAISS, saved to a folder, queried from Python or a CLI.

``EmbeddingIndex`` stores one vector per item, with its label and its id (ints or strings), in a
FAISS index of one of three kinds, each a FAISS ``index_factory`` string named by an ``IndexConfig``
(kind, metric, the kind's parameters; :mod:`helpers.search.kinds`), the items keyed by int64 FAISS ids
(``IndexIDMap2`` for flat and HNSW, IVF's own ids):

``"flat"`` (``"IDMap2,Flat"``)
    exact brute force: the answers equal a numpy brute force (``helpers.knn.exact_knn``). Right up
    to a few hundred thousand items.
``"hnsw"`` (``"IDMap2,HNSW{hnsw_m}"``)
    FAISS ``IndexHNSWFlat`` (a navigable small-world graph; ``hnsw_m`` links per node,
    ``ef_construction`` / ``ef_search`` candidate lists). Approximate, fast on millions of items.
``"ivf"`` (``"IVF{nlist},Flat"``)
    FAISS ``IndexIVFFlat``: k-means cells (``nlist``) trained on a sample of the first vectors added
    (``train_size``), ``nprobe`` cells searched per query. Approximate; cheap to build.

Metrics: ``"l2"`` (squared Euclidean distances) or ``"cosine"`` (inner product on L2-normalised
vectors, reported as the distance ``1 - cos``), as in ``helpers.knn``.

**Vectors are computed once.** An item's embedding is computed when it is added and stored (in the
FAISS index and in ``vectors.npy``); a query embeds only the query images. An agency with 100,000
actors embeds its catalogue once (``from_model`` or ``add``); looking up one photograph then costs
one forward pass plus one index search, whatever the size of the catalogue.

**Removal.** ``remove(ids)`` uses FAISS ``remove_ids`` by key on a flat or IVF index (the IVF cells
are kept); an HNSW graph cannot delete nodes in FAISS, so it is rebuilt from the stored vectors (the
cost of a build).

**On disk** (``save(folder)`` / ``EmbeddingIndex.load(folder)``, :mod:`helpers.search.store`): the
FAISS index, the vectors, labels and ids as ``.npy`` (read without pickle) and ``metadata.json``,
swapped in atomically. Loading checks that the model cache still holds the model that made the
vectors (``ModelMismatchError`` otherwise); querying a loaded index with images embeds them with it.
``write_projector(folder)`` writes TensorBoard Embedding Projector files (:mod:`helpers.search.projector`).

Modules: ``index`` (``EmbeddingIndex``), ``kinds`` (``IndexConfig``), ``model`` (``IndexModel``, the
cached model that made the vectors), ``store`` (the folder), ``images`` (``read_image`` /
``write_image``, Pillow), ``projector``, ``cli`` (``python -m helpers.search build|query``, see its help).
"""

from helpers.search.cli import main
from helpers.search.errors import ModelMismatchError, ModelNotCachedError, NotAnIndexError, SearchError
from helpers.search.images import read_image, write_image
from helpers.search.index import NO_LABEL, EmbeddingIndex, SearchResult
from helpers.search.kinds import KINDS, IndexConfig
from helpers.search.model import IndexModel
from helpers.search.projector import write_projector
from helpers.search.store import FILES, INDEX_FORMAT, is_index_folder

__all__ = [
    "FILES",
    "INDEX_FORMAT",
    "KINDS",
    "NO_LABEL",
    "EmbeddingIndex",
    "IndexConfig",
    "IndexModel",
    "ModelMismatchError",
    "ModelNotCachedError",
    "NotAnIndexError",
    "SearchError",
    "SearchResult",
    "is_index_folder",
    "main",
    "read_image",
    "write_image",
    "write_projector",
]
