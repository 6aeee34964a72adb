"""Exact k-nearest-neighbour search over embeddings: the suite's one k-NN path.

Everything that asks "which stored vectors are closest to these?" calls :func:`exact_knn`: k-NN
accuracy and the retrieval metrics (``helpers.evaluation``), the generators' mining
(``helpers.samplers``) and the exact index of ``helpers.search``. It runs on FAISS'
``IndexFlat`` (brute force, multi-threaded BLAS), so the answers are exact.

Metrics
-------
``"l2"``
    squared Euclidean distance (what FAISS ``IndexFlatL2`` returns); nearest first.
``"cosine"``
    ``1 - cos(q, r)`` on L2-normalised copies of the vectors; nearest first.

``farthest=True`` returns the k *farthest* references instead (hard positives). For ``"l2"`` it is
a maximum-inner-product search on augmented vectors: ``|q - r|^2 = |q|^2 + |r|^2 - 2 q.r``, so the
farthest ``r`` maximises ``[r, |r|^2] . [-2q, 1]``.
"""

from __future__ import annotations

import numpy as np

METRICS = ("l2", "cosine")
#: query rows per FAISS call (bounds the result buffers); helpers.search searches in the same blocks,
#: so an exact index answers to the bit what exact_knn does
QUERY_CHUNK = 4096


class KNNError(ValueError):
    """Bad input to a k-NN search (shapes, k, metric)."""


def import_faiss():
    """Import FAISS, or raise one line saying how to install it."""
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is in requirements.txt
        raise ImportError(
            "helpers.knn needs FAISS: pip install faiss-cpu (or faiss-gpu on a CUDA machine)"
        ) from exc
    return faiss


def as_vectors(x, name: str = "vectors") -> np.ndarray:
    """``x`` as a C-contiguous float32 (n, d) array; images are flattened; NaN/inf refused."""
    a = np.asarray(x, dtype=np.float32)
    if a.ndim == 1:
        raise KNNError(f"{name} must be 2-D (n, d), got shape {a.shape}; reshape a single vector to (1, d).")
    a = a.reshape(len(a), -1)
    if a.shape[1] == 0:
        raise KNNError(f"{name} has zero features (shape {a.shape}).")
    if not np.isfinite(a).all():
        raise KNNError(f"{name} contains NaN or infinite values; check the model or the input images.")
    return np.ascontiguousarray(a)


def l2_normalize(a: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    return np.ascontiguousarray(a / np.maximum(norms, 1e-12), dtype=np.float32)


def flat_index(dim: int, metric: str = "l2"):
    """An empty exact FAISS index for ``metric`` (L2 or inner product)."""
    faiss = import_faiss()
    if metric not in METRICS:
        raise KNNError(f"metric must be one of {METRICS}, got {metric!r}.")
    return faiss.IndexFlatL2(dim) if metric == "l2" else faiss.IndexFlatIP(dim)


def exact_knn(queries, references, k: int, metric: str = "l2", exclude=None, farthest: bool = False):
    """The ``k`` nearest (or farthest) references of each query, exactly.

    Parameters
    ----------
    queries : array-like of shape (q, ...)
    references : array-like of shape (n, ...)
        Rows are flattened to vectors; both must have the same number of features.
    k : int
        Neighbours per query, ``1 <= k <= n - (1 if exclude is given else 0)``.
    metric : {"l2", "cosine"}
        See the module docstring.
    exclude : array-like of int of shape (q,), optional
        One reference index per query to leave out (the query itself in self-retrieval). It is
        removed by index, so an exact duplicate of the query is still a valid neighbour.
    farthest : bool
        Return the farthest references, farthest first.

    Returns
    -------
    indices : ndarray of int64, shape (q, k)
    distances : ndarray of float32, shape (q, k)
        Squared L2 distances (``"l2"``) or cosine distances (``"cosine"``).
    """
    q = as_vectors(queries, "queries")
    r = as_vectors(references, "references")
    if q.shape[1] != r.shape[1]:
        raise KNNError(f"queries have {q.shape[1]} features but references have {r.shape[1]}.")
    if metric not in METRICS:
        raise KNNError(f"metric must be one of {METRICS}, got {metric!r}.")
    available = len(r) - (1 if exclude is not None else 0)
    if not 1 <= int(k) <= available:
        raise KNNError(f"k must be in [1, {available}] (references available), got {k}.")
    if exclude is not None:
        exclude = np.asarray(exclude, dtype=np.int64).reshape(-1)
        if len(exclude) != len(q):
            raise KNNError(f"exclude needs one index per query ({len(q)}), got {len(exclude)}.")
    k = int(k)

    if metric == "cosine":
        q, r = l2_normalize(q), l2_normalize(r)
    index, query_vectors, to_distance = _index_for(q, r, metric, farthest)

    k_search = k + (1 if exclude is not None else 0)
    out_idx = np.empty((len(q), k), dtype=np.int64)
    out_dist = np.empty((len(q), k), dtype=np.float32)
    for start in range(0, len(q), QUERY_CHUNK):
        rows = slice(start, start + QUERY_CHUNK)
        scores, idx = index.search(query_vectors[rows], k_search)
        if exclude is not None:
            idx, scores = drop_excluded(idx, scores, exclude[rows])
        out_idx[rows], out_dist[rows] = idx, to_distance(scores, q[rows])
    return out_idx, out_dist


def _index_for(q, r, metric, farthest):
    """(FAISS index over the references, query vectors to search with, scores -> distances)."""
    if not farthest:
        index = flat_index(r.shape[1], "l2" if metric == "l2" else "cosine")
        index.add(r)
        if metric == "l2":
            return index, q, lambda s, _q: np.maximum(s, 0.0)
        return index, q, lambda s, _q: (1.0 - s).astype(np.float32)
    if metric == "cosine":  # farthest in cosine = smallest inner product = largest with -q
        index = flat_index(r.shape[1], "cosine")
        index.add(r)
        return index, np.ascontiguousarray(-q), lambda s, _q: (1.0 + s).astype(np.float32)
    # farthest in L2: maximum inner product of [r, |r|^2] with [-2q, 1], plus |q|^2
    r_aug = np.ascontiguousarray(np.hstack([r, (r * r).sum(1, keepdims=True)]), dtype=np.float32)
    q_aug = np.ascontiguousarray(np.hstack([-2.0 * q, np.ones((len(q), 1), np.float32)]))
    index = flat_index(r_aug.shape[1], "cosine")  # IndexFlatIP
    index.add(r_aug)
    return index, q_aug, lambda s, qq: np.maximum(s + (qq * qq).sum(1, keepdims=True), 0.0)


def drop_excluded(idx: np.ndarray, scores: np.ndarray, exclude: np.ndarray):
    """Remove from each row (searched with one extra neighbour) the index ``exclude[row]``.

    When it is not among the results (ties with more than ``k`` duplicates at the same distance),
    the last column is dropped instead: every kept entry is then as close as the excluded one.
    """
    is_self = idx == exclude[:, None]
    missing = ~is_self.any(axis=1)
    is_self[missing, -1] = True
    keep = ~is_self  # exactly one False per row
    shape = (idx.shape[0], idx.shape[1] - 1)
    return idx[keep].reshape(shape), scores[keep].reshape(shape)
