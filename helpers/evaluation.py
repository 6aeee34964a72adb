"""Embedding evaluation: k-NN accuracy, retrieval metrics, cluster metrics, baselines, CSV.

Conventions
-----------
* Distances are Euclidean (squared L2 for ranking, which gives the same order).
* Nearest-neighbour search is exact: FAISS ``IndexFlatL2`` (brute force, no approximation).
* Retrieval metrics follow *A Metric Learning Reality Check* (Musgrave, Belongie & Lim, 2020):

  - ``R`` = number of references of the query's class (in the self-retrieval case, where the
    queries are their own references, the query itself is excluded, so ``R = class size - 1``).
  - ``precision_at_1``: fraction of queries whose nearest reference shares their class.
  - ``r_precision``: (same-class references among the ``R`` nearest) / ``R``.
  - ``map_at_r``: ``(1/R) * sum_{i=1..R} P(i) * rel(i)`` where ``rel(i)`` is 1 when the i-th
    nearest reference shares the class and ``P(i)`` is the precision among the first ``i``.
  - ``recall_at_k``: fraction of queries with **at least one** same-class reference among the
    ``k`` nearest (the metric-learning convention of e.g. Song et al. 2016, *not* the IR recall
    "retrieved relevant / all relevant").
  - ``precision_at_k``: mean fraction of the ``k`` nearest references that share the query's
    class ("top-k accuracy" in the sense of precision@k).

  Queries whose class has ``R = 0`` references are skipped from **every** average (they have no
  correct answer); ``n_queries`` reports how many were averaged. When ``k`` exceeds the number of
  references available to a query, ``recall_at_k`` / ``precision_at_k`` use all of them.
  Ties in distance are broken by FAISS's order; in the self-retrieval case the query's own entry
  is removed *by index*, so an exact duplicate of the query counts as an ordinary neighbour.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from helpers import config

__all__ = [
    "EvaluationError",
    "embed",
    "knn_accuracy",
    "retrieval_metrics",
    "cluster_metrics",
    "evaluate_embeddings",
    "baseline_embeddings",
    "write_evaluation_csv",
    "project_2d",
]

SILHOUETTE_SAMPLE_SIZE = 5000
# Upper bound on (queries x neighbours) held in memory at once during retrieval.
_MAX_CHUNK_ENTRIES = 1 << 22


class EvaluationError(ValueError):
    """Raised for invalid inputs to the evaluation functions (shapes, lengths, NaN, ...)."""


# --------------------------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------------------------


def _as_embeddings(emb, name: str) -> np.ndarray:
    emb = np.asarray(emb)
    if emb.ndim == 1:
        raise EvaluationError(
            f"{name} must be 2-D (n_samples, n_features), got shape {emb.shape}; "
            "reshape 1-d embeddings with emb.reshape(-1, 1)."
        )
    if emb.ndim != 2:
        raise EvaluationError(
            f"{name} must be 2-D (n_samples, n_features), got shape {emb.shape}; "
            "flatten extra dimensions first."
        )
    if emb.shape[0] == 0 or emb.shape[1] == 0:
        raise EvaluationError(f"{name} is empty (shape {emb.shape}); pass at least one sample.")
    if not np.issubdtype(emb.dtype, np.number) or np.issubdtype(emb.dtype, np.complexfloating):
        raise EvaluationError(f"{name} must hold real numbers, got dtype {emb.dtype}.")
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    if not np.all(np.isfinite(emb)):
        raise EvaluationError(
            f"{name} contains NaN or infinite values; check the model output (diverged training?)."
        )
    return emb


def _as_labels(labels, n: int, name: str, emb_name: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise EvaluationError(
            f"{name} must be 1-D integer class ids, got shape {labels.shape}; "
            "convert one-hot labels with argmax(axis=1)."
        )
    if len(labels) != n:
        raise EvaluationError(
            f"{name} has {len(labels)} entries but {emb_name} has {n} rows; they must match."
        )
    if labels.dtype.kind == "f" and not np.all(np.isfinite(labels)):
        raise EvaluationError(f"{name} contains NaN or infinite values.")
    return labels


def _check_same_dim(a: np.ndarray, b: np.ndarray, a_name: str, b_name: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise EvaluationError(
            f"{a_name} has {a.shape[1]} features but {b_name} has {b.shape[1]}; "
            "embed both with the same model."
        )


# --------------------------------------------------------------------------------------------
# embedding
# --------------------------------------------------------------------------------------------


def embed(model, x, batch_size: int = 512) -> np.ndarray:
    """Embed ``x`` with ``model`` in batches.

    Parameters
    ----------
    model : keras.Model
        Embedding network mapping images to vectors.
    x : array-like of shape (n_samples, ...)
        Model inputs.
    batch_size : int, default=512
        Prediction batch size.

    Returns
    -------
    embeddings : ndarray of shape (n_samples, embedding_size), float32
    """
    if batch_size < 1:
        raise EvaluationError(f"batch_size must be >= 1, got {batch_size}.")
    x = np.asarray(x)
    if len(x) == 0:
        raise EvaluationError("x is empty; pass at least one sample to embed.")
    out = model.predict(x, batch_size=batch_size, verbose=0)
    if isinstance(out, (list, tuple)):
        raise EvaluationError(
            f"model returns {len(out)} outputs; pass the single-output embedding network."
        )
    out = np.asarray(out, dtype=np.float32)
    return out.reshape(len(out), -1)


# --------------------------------------------------------------------------------------------
# k-NN accuracy
# --------------------------------------------------------------------------------------------


def knn_accuracy(train_emb, train_labels, test_emb, test_labels, k: int = 3) -> float:
    """Accuracy of a k-nearest-neighbour classifier fit on the train embeddings.

    Same as the reference: ``KNeighborsClassifier(n_neighbors=k)`` (Euclidean, uniform votes,
    scikit-learn's tie rule) fit on ``train_emb`` and scored on ``test_emb``.

    Returns
    -------
    accuracy : float in [0, 1]
    """
    from sklearn.neighbors import KNeighborsClassifier

    train_emb = _as_embeddings(train_emb, "train_emb")
    test_emb = _as_embeddings(test_emb, "test_emb")
    train_labels = _as_labels(train_labels, len(train_emb), "train_labels", "train_emb")
    test_labels = _as_labels(test_labels, len(test_emb), "test_labels", "test_emb")
    _check_same_dim(train_emb, test_emb, "train_emb", "test_emb")
    if not 1 <= k <= len(train_emb):
        raise EvaluationError(f"k must be in [1, {len(train_emb)}] (train size), got {k}.")
    clf = KNeighborsClassifier(n_neighbors=k)
    clf.fit(train_emb, train_labels)
    return float(clf.score(test_emb, test_labels))


# --------------------------------------------------------------------------------------------
# retrieval metrics
# --------------------------------------------------------------------------------------------


def _neighbour_search(ref_emb: np.ndarray):
    """Return ``search(queries, k) -> indices`` doing exact L2 search over ``ref_emb``."""
    import faiss

    index = faiss.IndexFlatL2(ref_emb.shape[1])
    index.add(ref_emb)

    def search(queries: np.ndarray, k: int) -> np.ndarray:
        _, idx = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return idx

    return search


def retrieval_metrics(
    query_emb,
    query_labels,
    ref_emb=None,
    ref_labels=None,
    ks: Iterable[int] = (1, 5, 10),
) -> dict:
    """Retrieval metrics of *A Metric Learning Reality Check* plus recall@k / precision@k.

    Parameters
    ----------
    query_emb : array-like of shape (n_queries, d)
    query_labels : array-like of shape (n_queries,)
    ref_emb, ref_labels : array-like of shape (n_refs, d) / (n_refs,), optional
        The searched collection. When both are None the queries are their own references and
        each query's own entry is excluded by index (an exact duplicate of the query is still a
        valid neighbour).
    ks : iterable of int, default=(1, 5, 10)
        Cut-offs for ``recall_at_{k}`` and ``precision_at_{k}``.

    Returns
    -------
    metrics : dict
        ``precision_at_1``, ``r_precision``, ``map_at_r``, ``recall_at_{k}``,
        ``precision_at_{k}`` (floats) and ``n_queries`` (int, queries averaged; queries whose
        class has no reference are skipped). See the module docstring for the definitions.
    """
    query_emb = _as_embeddings(query_emb, "query_emb")
    query_labels = _as_labels(query_labels, len(query_emb), "query_labels", "query_emb")
    if (ref_emb is None) != (ref_labels is None):
        raise EvaluationError("pass both ref_emb and ref_labels, or neither (self-retrieval).")
    self_retrieval = ref_emb is None
    if self_retrieval:
        ref_emb, ref_labels = query_emb, query_labels
    else:
        ref_emb = _as_embeddings(ref_emb, "ref_emb")
        ref_labels = _as_labels(ref_labels, len(ref_emb), "ref_labels", "ref_emb")
        _check_same_dim(query_emb, ref_emb, "query_emb", "ref_emb")
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise EvaluationError(f"ks must be positive integers, got {ks}.")

    # R per query: references sharing the query's class (minus the query itself when self).
    classes, ref_counts = np.unique(ref_labels, return_counts=True)
    pos = np.searchsorted(classes, query_labels)
    pos_clipped = np.minimum(pos, len(classes) - 1)
    found = classes[pos_clipped] == query_labels
    r = np.where(found, ref_counts[pos_clipped], 0).astype(np.int64)
    if self_retrieval:
        r -= 1
    valid = r > 0
    if not valid.any():
        raise EvaluationError(
            "no query has a same-class reference (R = 0 for all); retrieval metrics are undefined."
        )

    n_refs_available = len(ref_emb) - (1 if self_retrieval else 0)
    if n_refs_available < 1:
        raise EvaluationError("need at least 2 samples for self-retrieval.")
    # neighbours needed after removing self: enough for the largest R and the largest k
    k_needed = int(min(max(int(r.max()), ks[-1]), n_refs_available))
    k_search = k_needed + (1 if self_retrieval else 0)
    search = _neighbour_search(ref_emb)

    q_idx_all = np.flatnonzero(valid)
    chunk = max(1, _MAX_CHUNK_ENTRIES // k_search)
    sums = {"precision_at_1": 0.0, "r_precision": 0.0, "map_at_r": 0.0}
    sums.update({f"recall_at_{k}": 0.0 for k in ks})
    sums.update({f"precision_at_{k}": 0.0 for k in ks})
    ranks = np.arange(1, k_needed + 1)
    for start in range(0, len(q_idx_all), chunk):
        q_idx = q_idx_all[start : start + chunk]
        nn = search(query_emb[q_idx], k_search)
        if self_retrieval:
            nn = _drop_self(nn, q_idx)
        rel = ref_labels[nn] == query_labels[q_idx, None]  # (q, k_needed) bool
        r_q = r[q_idx]
        in_r = ranks[None, :] <= r_q[:, None]  # first R columns
        hits = np.cumsum(rel, axis=1)
        sums["precision_at_1"] += rel[:, 0].sum()
        sums["r_precision"] += ((rel & in_r).sum(axis=1) / r_q).sum()
        prec_i = hits / ranks[None, :]
        sums["map_at_r"] += ((prec_i * (rel & in_r)).sum(axis=1) / r_q).sum()
        for k in ks:
            kk = min(k, k_needed)
            sums[f"recall_at_{k}"] += rel[:, :kk].any(axis=1).sum()
            if k > 1:  # precision_at_1 is accumulated above
                sums[f"precision_at_{k}"] += (hits[:, kk - 1] / kk).sum()

    n = len(q_idx_all)
    out = {key: float(value / n) for key, value in sums.items()}
    out["n_queries"] = int(n)
    return out


def _drop_self(nn: np.ndarray, q_idx: np.ndarray) -> np.ndarray:
    """Remove each row's own index from ``nn`` (searched with one extra neighbour).

    When the query's own index is not among the results (ties at distance 0 with more than
    ``k`` duplicates), the last column is dropped instead: all kept entries are then at the
    same distance as the query itself would be.
    """
    is_self = nn == q_idx[:, None]
    missing = ~is_self.any(axis=1)
    is_self[missing, -1] = True
    # each row has exactly one True after this (indices within a row are unique)
    keep = ~is_self
    return nn[keep].reshape(nn.shape[0], nn.shape[1] - 1)


# --------------------------------------------------------------------------------------------
# cluster metrics
# --------------------------------------------------------------------------------------------


def cluster_metrics(emb, labels, seed: int = 0) -> dict:
    """Cluster-quality metrics of an embedding with respect to the true labels.

    Returns
    -------
    metrics : dict
        ``silhouette`` (Euclidean, on a random sample of 5000 points when larger, seeded),
        ``davies_bouldin`` (lower is better), ``calinski_harabasz`` (higher is better), and
        ``nmi`` / ``ami`` between the labels and ``KMeans(n_clusters=n_classes, n_init=10,
        random_state=seed)`` on the embedding.
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import (
        adjusted_mutual_info_score,
        calinski_harabasz_score,
        davies_bouldin_score,
        normalized_mutual_info_score,
        silhouette_score,
    )

    emb = _as_embeddings(emb, "emb")
    labels = _as_labels(labels, len(emb), "labels", "emb")
    n_classes = len(np.unique(labels))
    if not 2 <= n_classes <= len(emb) - 1:
        raise EvaluationError(
            f"cluster metrics need 2 <= number of classes <= n_samples - 1, got {n_classes} "
            f"classes for {len(emb)} samples."
        )
    sample_size = SILHOUETTE_SAMPLE_SIZE if len(emb) > SILHOUETTE_SAMPLE_SIZE else None
    silhouette = silhouette_score(
        emb, labels, metric="euclidean", sample_size=sample_size, random_state=seed
    )
    kmeans = KMeans(n_clusters=n_classes, n_init=10, random_state=seed)
    pred = kmeans.fit_predict(emb.astype(np.float64))
    return {
        "silhouette": float(silhouette),
        "davies_bouldin": float(davies_bouldin_score(emb, labels)),
        "calinski_harabasz": float(calinski_harabasz_score(emb, labels)),
        "nmi": float(normalized_mutual_info_score(labels, pred)),
        "ami": float(adjusted_mutual_info_score(labels, pred)),
    }


# --------------------------------------------------------------------------------------------
# one evaluation row
# --------------------------------------------------------------------------------------------


def evaluate_embeddings(
    name: str,
    train_emb,
    y_train,
    test_emb,
    y_test,
    k: int = 3,
    ks: Iterable[int] = (1, 5, 10),
    seed: int = 0,
    **meta,
) -> dict:
    """All metrics of one model as one CSV row.

    The test split is the query set and the train split the reference set for k-NN accuracy
    and retrieval; cluster metrics are computed on the test embeddings.

    Parameters
    ----------
    name : str
        Model name (``model`` column).
    train_emb, y_train, test_emb, y_test : array-like
    k : int, default=3
        k of the k-NN classifier; the column is ``f"{k}nn_accuracy"``.
    ks : iterable of int, default=(1, 5, 10)
        Cut-offs of ``recall_at_{k}`` / ``precision_at_{k}``.
    seed : int, default=0
        Seed of the silhouette sample and KMeans.
    **meta
        Extra columns placed right after ``model`` (loss, margin, embedding_size, ...).

    Returns
    -------
    row : dict
        ``model``, meta..., ``silhouette``, ``{k}nn_accuracy``, ``precision_at_1``,
        ``r_precision``, ``map_at_r``, ``recall_at_{k}``..., ``precision_at_{k}``...,
        ``davies_bouldin``, ``calinski_harabasz``, ``nmi``, ``ami``.
    """
    ks = sorted({int(v) for v in ks})
    clusters = cluster_metrics(test_emb, y_test, seed=seed)
    knn = knn_accuracy(train_emb, y_train, test_emb, y_test, k=k)
    retrieval = retrieval_metrics(test_emb, y_test, train_emb, y_train, ks=ks)
    row = {"model": name, **meta}
    row["silhouette"] = clusters["silhouette"]
    row[f"{k}nn_accuracy"] = knn
    for key in ("precision_at_1", "r_precision", "map_at_r"):
        row[key] = retrieval[key]
    for kk in ks:
        row[f"recall_at_{kk}"] = retrieval[f"recall_at_{kk}"]
    for kk in ks:
        if kk != 1:  # precision_at_1 already present
            row[f"precision_at_{kk}"] = retrieval[f"precision_at_{kk}"]
    for key in ("davies_bouldin", "calinski_harabasz", "nmi", "ami"):
        row[key] = clusters[key]
    return row


# --------------------------------------------------------------------------------------------
# baselines
# --------------------------------------------------------------------------------------------


def baseline_embeddings(x_train, x_test, kind: str = "raw", n_components: int = 64, seed: int = 0):
    """Untrained reference embeddings: flattened pixels or PCA fit on the train split.

    Returns
    -------
    train_emb, test_emb : ndarray float32 of shape (n, d)
    """
    x_train = np.asarray(x_train, dtype=np.float32).reshape(len(x_train), -1)
    x_test = np.asarray(x_test, dtype=np.float32).reshape(len(x_test), -1)
    if x_train.shape[1] != x_test.shape[1]:
        raise EvaluationError(
            f"x_train has {x_train.shape[1]} values per sample but x_test has {x_test.shape[1]}."
        )
    if kind == "raw":
        return x_train, x_test
    if kind == "pca":
        from sklearn.decomposition import PCA

        n = min(n_components, x_train.shape[0], x_train.shape[1])
        pca = PCA(n_components=n, random_state=seed).fit(x_train)
        return (
            pca.transform(x_train).astype(np.float32),
            pca.transform(x_test).astype(np.float32),
        )
    raise EvaluationError(f"unknown baseline kind {kind!r}; use 'raw' or 'pca'.")


# --------------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------------


def write_evaluation_csv(
    rows: Iterable[Mapping], path=None, sort_by: str = "3nn_accuracy"
):
    """Write evaluation rows as a CSV sorted best first (descending ``sort_by``), atomically.

    Parameters
    ----------
    rows : iterable of dict
        Rows from :func:`evaluate_embeddings`.
    path : path-like, default=config.EVALUATION_CSV
    sort_by : str, default="3nn_accuracy"

    Returns
    -------
    df : pandas.DataFrame
        The table as written.
    """
    import pandas as pd

    path = Path(config.EVALUATION_CSV if path is None else path)
    df = pd.DataFrame(list(rows))
    if df.empty:
        raise EvaluationError("no rows to write; evaluate at least one model.")
    if sort_by not in df.columns:
        raise EvaluationError(
            f"sort_by column {sort_by!r} not in the rows (columns: {list(df.columns)})."
        )
    df = df.sort_values(sort_by, ascending=False, kind="mergesort").reset_index(drop=True)
    with config.atomic_path(path, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False)
    return df


# --------------------------------------------------------------------------------------------
# 2-D projection for plots
# --------------------------------------------------------------------------------------------


def project_2d(emb, method: str = "umap", seed: int = 42, **kwargs) -> np.ndarray:
    """Project embeddings to 2-D for plotting.

    ``"umap"``: ``umap.UMAP(n_neighbors=15, random_state=seed)`` (a seeded UMAP runs on one
    thread; the first call in a process spends ~20 s compiling numba code);
    ``"tsne"``: scikit-learn ``TSNE(init="pca", random_state=seed)``, perplexity
    ``min(30, (n-1)/3)``, after PCA to 50 dimensions when the embedding is wider than 50.
    ``kwargs`` go to the ``UMAP`` / ``TSNE`` constructor (e.g. ``max_iter`` for TSNE).

    Returns
    -------
    points : ndarray float32 of shape (n_samples, 2)
    """
    emb = _as_embeddings(emb, "emb")
    if len(emb) < 3:
        raise EvaluationError(f"need at least 3 points to project, got {len(emb)}.")
    if method == "umap":
        import umap

        params = dict(n_components=2, n_neighbors=min(15, len(emb) - 1), random_state=seed)
        params["n_jobs"] = 1  # what a seeded UMAP uses anyway; passing it silences a warning
        params.update(kwargs)
        reducer = umap.UMAP(**params)
        points = reducer.fit_transform(emb)
    elif method == "tsne":
        from sklearn.manifold import TSNE

        x = emb
        if x.shape[1] > 50:
            from sklearn.decomposition import PCA

            x = PCA(n_components=min(50, len(x)), random_state=seed).fit_transform(x)
        perplexity = min(30.0, (len(x) - 1) / 3.0)
        params = dict(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
        params.update(kwargs)
        points = TSNE(**params).fit_transform(x)
    else:
        raise EvaluationError(f"unknown projection method {method!r}; use 'umap' or 'tsne'.")
    return np.asarray(points, dtype=np.float32)


# --------------------------------------------------------------------------------------------
# the registry as a whole
# --------------------------------------------------------------------------------------------


def evaluate_models(data, names=None, baselines=("raw", "pca"), k: int = 3, seed: int = 0,
                    cache_dir=None, verbose: bool = True):
    """Evaluate every cached registry model (and the baselines) on ``data``'s test split.

    The train split is the reference set. Models without a usable cache are skipped with a
    one-line message (train them with ``helpers.training.train`` or notebook 04).

    Returns
    -------
    rows : list of dict
        One :func:`evaluate_embeddings` row per model, with ``loss``, ``margin``,
        ``embedding_size`` and ``kind`` ("model" or "baseline") columns.
    test_embeddings : dict
        ``{name: test embeddings}``, for latent-space plots.
    """
    from helpers.models import EMBEDDING_DIM, MODELS, get_spec
    from helpers.training import CacheError, load_embedding

    names = list(MODELS) if names is None else list(names)
    rows, test_embeddings = [], {}
    for kind in baselines:
        # the PCA baseline has the models' embedding size
        label = "raw_pixels" if kind == "raw" else f"pca_{EMBEDDING_DIM}"
        train_emb, test_emb = baseline_embeddings(
            data.x_train, data.x_test, kind=kind, n_components=EMBEDDING_DIM, seed=seed
        )
        rows.append(evaluate_embeddings(
            label, train_emb, data.y_train, test_emb, data.y_test, k=k, seed=seed,
            kind="baseline", loss="none", margin=float("nan"), embedding_size=train_emb.shape[1],
        ))
        test_embeddings[label] = test_emb
    for name in names:
        spec = get_spec(name)
        try:
            model = load_embedding(name, data, cache_dir=cache_dir)
        except CacheError as exc:
            if verbose:
                print(f"[{name}] skipped: {exc}; train it first (notebook 04)")
            continue
        train_emb, test_emb = embed(model, data.x_train), embed(model, data.x_test)
        rows.append(evaluate_embeddings(
            name, train_emb, data.y_train, test_emb, data.y_test, k=k, seed=seed,
            kind="model", loss=spec.loss, margin=spec.margin, embedding_size=test_emb.shape[1],
        ))
        test_embeddings[name] = test_emb
    return rows, test_embeddings

