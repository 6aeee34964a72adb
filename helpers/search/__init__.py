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

**On disk** (``save(folder)`` / ``EmbeddingIndex.load(folder)``, :mod:`helpers.search.store`): the
FAISS index, the vectors, labels and ids as ``.npy`` (read without pickle) and ``metadata.json``,
swapped in atomically. Loading checks that the model cache still holds the model that made the
vectors (``ModelMismatchError`` otherwise); querying a loaded index with images embeds them with it.
``write_projector(folder)`` writes TensorBoard Embedding Projector files (:mod:`helpers.search.projector`).

Modules: ``index`` (``EmbeddingIndex``), ``store`` (the folder), ``images`` (``read_image`` /
``write_image``, Pillow), ``projector``, ``cli`` (``python -m helpers.search build|query``, see its help).
"""

from helpers.search.cli import main
from helpers.search.errors import ModelMismatchError, ModelNotCachedError, NotAnIndexError, SearchError
from helpers.search.images import read_image, write_image
from helpers.search.index import KINDS, NO_LABEL, EmbeddingIndex, SearchResult
from helpers.search.projector import write_projector
from helpers.search.store import FILES, INDEX_FORMAT, is_index_folder

__all__ = [
    "FILES",
    "INDEX_FORMAT",
    "KINDS",
    "NO_LABEL",
    "EmbeddingIndex",
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
