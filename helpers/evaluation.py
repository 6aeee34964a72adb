"""Embedding evaluation: k-NN accuracy, retrieval metrics, cluster metrics, baselines, CSV.

Conventions
-----------
* Distances are Euclidean (squared L2 for ranking, which gives the same order).
* Nearest-neighbour search is exact: :func:`helpers.knn.exact_knn` (FAISS ``IndexFlatL2``, brute
  force, no approximation), for k-NN accuracy and retrieval alike.
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

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from helpers import checks, config, knn, metrics

__all__ = [
    "EvaluationError",
    "embed",
    "knn_accuracy",
    "knn_correct",
    "retrieval_metrics",
    "retrieval_per_query",
    "per_query_scores",
    "cluster_metrics",
    "silhouette_subset",
    "majority_vote",
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
    checks.finite(
        emb,
        EvaluationError,
        f"{name} contains NaN or infinite values; check the model output (diverged training?).",
    )
    return emb


def _as_labels(labels, n: int, name: str, emb_name: str) -> np.ndarray:
    labels = checks.labels_1d(
        labels,
        EvaluationError,
        f"{name} must be 1-D integer class ids, got shape {{shape}}; "
        "convert one-hot labels with argmax(axis=1).",
    )
    checks.same_length(
        len(labels),
        n,
        EvaluationError,
        f"{name} has {{first}} entries but {emb_name} has {{second}} rows; they must match.",
    )
    if labels.dtype.kind == "f":
        checks.finite(labels, EvaluationError, f"{name} contains NaN or infinite values.")
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
        raise EvaluationError(f"model returns {len(out)} outputs; pass the single-output embedding network.")
    out = np.asarray(out, dtype=np.float32)
    return out.reshape(len(out), -1)


# --------------------------------------------------------------------------------------------
# k-NN accuracy
# --------------------------------------------------------------------------------------------


def knn_accuracy(train_emb, train_labels, test_emb, test_labels, k: int = 3) -> float:
    """Accuracy of a k-nearest-neighbour classifier fit on the train embeddings: the mean of
    :func:`knn_correct`.

    The reference's ``KNeighborsClassifier(n_neighbors=k).fit(train).score(test)`` (Euclidean,
    uniform votes), computed on the suite's one exact search (:func:`helpers.knn.exact_knn`):
    each test point takes the majority label of its ``k`` nearest train points, a tied vote going
    to the smallest label, which is scikit-learn's rule. Only neighbours tied in *distance* at the
    k-th place may be chosen differently (FAISS' order instead of scikit-learn's).

    Returns
    -------
    accuracy : float in [0, 1]
    """
    return float(np.mean(knn_correct(train_emb, train_labels, test_emb, test_labels, k)))


def knn_correct(train_emb, train_labels, test_emb, test_labels, k: int = 3) -> np.ndarray:
    """Per test point, whether :func:`knn_accuracy`'s classifier labels it right (bool array)."""
    train_emb = _as_embeddings(train_emb, "train_emb")
    test_emb = _as_embeddings(test_emb, "test_emb")
    train_labels = _as_labels(train_labels, len(train_emb), "train_labels", "train_emb")
    test_labels = _as_labels(test_labels, len(test_emb), "test_labels", "test_emb")
    _check_same_dim(train_emb, test_emb, "train_emb", "test_emb")
    if not 1 <= k <= len(train_emb):
        raise EvaluationError(f"k must be in [1, {len(train_emb)}] (train size), got {k}.")
    neighbours, _ = knn.exact_knn(test_emb, train_emb, k)
    return majority_vote(train_labels, neighbours) == test_labels


def majority_vote(labels, neighbours: np.ndarray) -> np.ndarray:
    """The most frequent of ``labels[neighbours[i]]`` for each row ``i``; ties: the smallest label.

    ``neighbours`` is an ``(n_queries, k)`` array of indices into ``labels``. Same rule as
    scikit-learn's uniform-weight ``KNeighborsClassifier.predict`` (``scipy.stats.mode`` / the
    first maximum over sorted classes).
    """
    classes, codes = np.unique(np.asarray(labels), return_inverse=True)
    codes = codes.reshape(-1)[neighbours]  # (q, k) class positions
    n_queries, n_classes = codes.shape[0], len(classes)
    flat = (np.arange(n_queries)[:, None] * n_classes + codes).ravel()
    votes = np.bincount(flat, minlength=n_queries * n_classes).reshape(n_queries, n_classes)
    return classes[votes.argmax(axis=1)]  # argmax takes the first, i.e. smallest, tied class


# --------------------------------------------------------------------------------------------
# retrieval metrics
# --------------------------------------------------------------------------------------------


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
    per_query = retrieval_per_query(query_emb, query_labels, ref_emb, ref_labels, ks)
    out = {key: float(np.mean(values)) for key, values in per_query.items()}
    out["n_queries"] = int(len(per_query["precision_at_1"]))
    return out


def retrieval_per_query(query_emb, query_labels, ref_emb=None, ref_labels=None, ks=(1, 5, 10)) -> dict:
    """The metrics of :func:`retrieval_metrics` per query, before averaging: ``{key: (n,) array}``
    over the queries that have a same-class reference (in query order)."""
    query_emb, query_labels, ref_emb, ref_labels = _retrieval_inputs(
        query_emb, query_labels, ref_emb, ref_labels
    )
    self_retrieval = ref_emb is None
    if self_retrieval:
        ref_emb, ref_labels = query_emb, query_labels
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise EvaluationError(f"ks must be positive integers, got {ks}.")
    r = _relevant_counts(query_labels, ref_labels, self_retrieval)
    n_refs_available = len(ref_emb) - (1 if self_retrieval else 0)
    if n_refs_available < 1:
        raise EvaluationError("need at least 2 samples for self-retrieval.")
    # neighbours needed after removing self: enough for the largest R and the largest k
    k_needed = int(min(max(int(r.max()), ks[-1]), n_refs_available))

    queries = np.flatnonzero(r > 0)
    parts = {key: [] for key in _retrieval_keys(ks)}
    chunk = max(1, _MAX_CHUNK_ENTRIES // (k_needed + 1))
    for start in range(0, len(queries), chunk):
        q_idx = queries[start : start + chunk]
        nn, _ = knn.exact_knn(query_emb[q_idx], ref_emb, k_needed, exclude=q_idx if self_retrieval else None)
        relevant = ref_labels[nn] == query_labels[q_idx, None]  # (q, k_needed) bool
        for key, values in _chunk_retrieval(relevant, r[q_idx], ks).items():
            parts[key].append(values)
    return {key: np.concatenate(values).astype(np.float64) for key, values in parts.items()}


def _retrieval_inputs(query_emb, query_labels, ref_emb, ref_labels):
    """Validated arrays; ``ref_emb`` and ``ref_labels`` stay None for self-retrieval."""
    query_emb = _as_embeddings(query_emb, "query_emb")
    query_labels = _as_labels(query_labels, len(query_emb), "query_labels", "query_emb")
    if (ref_emb is None) != (ref_labels is None):
        raise EvaluationError("pass both ref_emb and ref_labels, or neither (self-retrieval).")
    if ref_emb is not None:
        ref_emb = _as_embeddings(ref_emb, "ref_emb")
        ref_labels = _as_labels(ref_labels, len(ref_emb), "ref_labels", "ref_emb")
        _check_same_dim(query_emb, ref_emb, "query_emb", "ref_emb")
    return query_emb, query_labels, ref_emb, ref_labels


def _relevant_counts(query_labels, ref_labels, self_retrieval: bool) -> np.ndarray:
    """R per query: the references sharing its class (minus the query itself when self)."""
    classes, ref_counts = np.unique(ref_labels, return_counts=True)
    pos = np.minimum(np.searchsorted(classes, query_labels), len(classes) - 1)
    found = classes[pos] == query_labels
    r = np.where(found, ref_counts[pos], 0).astype(np.int64)
    if self_retrieval:
        r -= 1
    if not (r > 0).any():
        raise EvaluationError(
            "no query has a same-class reference (R = 0 for all); retrieval metrics are undefined."
        )
    return r


def _retrieval_keys(ks) -> list[str]:
    keys = ["precision_at_1", "r_precision", "map_at_r"]
    return keys + [f"recall_at_{k}" for k in ks] + [f"precision_at_{k}" for k in ks]


def _chunk_retrieval(relevant: np.ndarray, r: np.ndarray, ks) -> dict:
    """One chunk's per-query metrics; ``relevant`` is (queries, neighbours)."""
    ranks = np.arange(1, relevant.shape[1] + 1)
    in_r = ranks[None, :] <= r[:, None]  # the first R columns
    hits = np.cumsum(relevant, axis=1)
    out = {
        "precision_at_1": relevant[:, 0],
        "r_precision": (relevant & in_r).sum(axis=1) / r,
        "map_at_r": (hits / ranks[None, :] * (relevant & in_r)).sum(axis=1) / r,
    }
    for k in ks:
        kk = min(k, relevant.shape[1])
        out[f"recall_at_{k}"] = relevant[:, :kk].any(axis=1)
        if k > 1:  # precision_at_1 is above
            out[f"precision_at_{k}"] = hits[:, kk - 1] / kk
    return out


# --------------------------------------------------------------------------------------------
# cluster metrics
# --------------------------------------------------------------------------------------------


def silhouette_subset(emb, labels, seed: int = 0, sample_size: int = SILHOUETTE_SAMPLE_SIZE):
    """The points the silhouette of :func:`cluster_metrics` is computed on, as ``(emb, labels)``.

    All of them up to ``sample_size``; beyond, the seeded sample that scikit-learn's
    ``silhouette_score(..., sample_size=sample_size, random_state=seed)`` draws
    (``RandomState(seed).permutation(n)[:sample_size]``). A check against scikit-learn computes
    ``silhouette_score(*silhouette_subset(emb, labels, seed))`` on the same points.
    """
    emb, labels = np.asarray(emb), np.asarray(labels)
    if len(emb) <= sample_size:
        return emb, labels
    keep = np.random.RandomState(seed).permutation(len(emb))[:sample_size]
    return emb[keep], labels[keep]


def cluster_metrics(emb, labels, seed: int = 0) -> dict:
    """Cluster-quality metrics of an embedding with respect to the true labels.

    Returns
    -------
    metrics : dict
        ``silhouette`` (Euclidean, on :func:`silhouette_subset`: a seeded sample of 5000 points
        when there are more),
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
    silhouette = silhouette_score(*silhouette_subset(emb, labels, seed=seed), metric="euclidean")
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


def per_query_scores(
    train_emb, y_train, test_emb, y_test, k: int = 3, ks: Iterable[int] = (1, 5, 10)
) -> dict:
    """Per test query, the values whose means are ``{k}nn_accuracy``, ``precision_at_1``, ``map_at_r``
    and ``recall_at_{k}`` (any same-class reference in the top k): ``{column: (n,) array}``.

    The train split is the reference set. Two representations scored here on the same test
    split give arrays over the same queries, for :func:`helpers.metrics.paired_difference`.
    """
    out = {f"{k}nn_accuracy": knn_correct(train_emb, y_train, test_emb, y_test, k=k).astype(np.float64)}
    retrieval = retrieval_per_query(test_emb, y_test, train_emb, y_train, ks=ks)
    out["precision_at_1"], out["map_at_r"] = retrieval["precision_at_1"], retrieval["map_at_r"]
    out.update({f"recall_at_{kk}": retrieval[f"recall_at_{kk}"] for kk in sorted({int(v) for v in ks})})
    return out


def evaluate_embeddings(
    name: str,
    train_emb,
    y_train,
    test_emb,
    y_test,
    k: int = 3,
    ks: Iterable[int] = (1, 5, 10),
    seed: int = 0,
    n_boot: int | None = metrics.N_BOOT,
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
        Seed of the silhouette sample, KMeans and the bootstrap.
    n_boot : int or None, default=1000
        Resamples of the 95 % percentile bootstrap over the test queries
        (:func:`helpers.metrics.bootstrap_interval`) behind the ``<metric>_ci_low`` /
        ``<metric>_ci_high`` columns of the metrics of :func:`per_query_scores`, at the end of the row;
        ``None`` leaves them out.
    **meta
        Extra columns placed right after ``model`` (loss, margin, embedding_size, ...).

    Returns
    -------
    row : dict
        ``model``, meta..., ``silhouette``, ``{k}nn_accuracy``, ``precision_at_1``,
        ``r_precision``, ``map_at_r``, ``recall_at_{k}``..., ``precision_at_{k}``...,
        ``davies_bouldin``, ``calinski_harabasz``, ``nmi``, ``ami``, then the interval columns.
    """
    ks = sorted({int(v) for v in ks})
    clusters = cluster_metrics(test_emb, y_test, seed=seed)
    correct = knn_correct(train_emb, y_train, test_emb, y_test, k=k).astype(np.float64)
    retrieval = retrieval_per_query(test_emb, y_test, train_emb, y_train, ks=ks)
    row = {
        "model": name,
        **meta,
        "silhouette": clusters["silhouette"],
        f"{k}nn_accuracy": float(correct.mean()),
    }
    order = ["precision_at_1", "r_precision", "map_at_r", *(f"recall_at_{kk}" for kk in ks)]
    order += [f"precision_at_{kk}" for kk in ks if kk != 1]  # precision_at_1 already present
    row.update({key: float(retrieval[key].mean()) for key in order})
    row.update({key: clusters[key] for key in ("davies_bouldin", "calinski_harabasz", "nmi", "ami")})
    if n_boot is not None:
        interval_keys = ["precision_at_1", "map_at_r", *(f"recall_at_{kk}" for kk in ks)]
        per_query = {f"{k}nn_accuracy": correct, **{key: retrieval[key] for key in interval_keys}}
        for key, values in per_query.items():
            row[f"{key}_ci_low"], row[f"{key}_ci_high"] = metrics.bootstrap_interval(
                values, n_boot=n_boot, seed=seed
            )
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


def write_evaluation_csv(rows: Iterable[Mapping], path=None, sort_by: str = "3nn_accuracy"):
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
        raise EvaluationError(f"sort_by column {sort_by!r} not in the rows (columns: {list(df.columns)}).")
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


def evaluate_models(
    data,
    names=None,
    baselines=("raw", "pca"),
    k: int = 3,
    seed: int = 0,
    cache_dir=None,
    verbose: bool = True,
):
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
    from helpers.registry import MODELS

    names = list(MODELS) if names is None else list(names)
    rows, test_embeddings = [], {}
    for kind in baselines:
        label, row, test_emb = _evaluate_baseline(data, kind, k=k, seed=seed)
        rows.append(row)
        test_embeddings[label] = test_emb
    for name in names:
        evaluated = _evaluate_cached_model(data, name, k=k, seed=seed, cache_dir=cache_dir, verbose=verbose)
        if evaluated is not None:
            rows.append(evaluated[0])
            test_embeddings[name] = evaluated[1]
    return rows, test_embeddings


def _evaluate_baseline(data, kind: str, k: int, seed: int):
    """``(label, row, test embeddings)`` of one :func:`baseline_embeddings` ``kind``; the PCA
    baseline has the models' embedding size."""
    from helpers.architectures import EMBEDDING_DIM

    label = "raw_pixels" if kind == "raw" else f"pca_{EMBEDDING_DIM}"
    train_emb, test_emb = baseline_embeddings(
        data.x_train, data.x_test, kind=kind, n_components=EMBEDDING_DIM, seed=seed
    )
    row = evaluate_embeddings(
        label,
        train_emb,
        data.y_train,
        test_emb,
        data.y_test,
        k=k,
        seed=seed,
        kind="baseline",
        loss="none",
        margin=float("nan"),
        embedding_size=train_emb.shape[1],
    )
    return label, row, test_emb


def _evaluate_cached_model(data, name: str, k: int, seed: int, cache_dir, verbose: bool):
    """``(row, test embeddings)`` of the registry model ``name`` from its cache, or None (with a
    one-line message when ``verbose``) when it has no usable cache."""
    from helpers.registry import get_spec
    from helpers.training import CacheError, load_embedding

    spec = get_spec(name)
    try:
        model = load_embedding(name, data, cache_dir=cache_dir)
    except CacheError as exc:
        if verbose:
            print(f"[{name}] skipped: {exc}; train it first (notebook 04)")
        return None
    train_emb, test_emb = embed(model, data.x_train), embed(model, data.x_test)
    row = evaluate_embeddings(
        name,
        train_emb,
        data.y_train,
        test_emb,
        data.y_test,
        k=k,
        seed=seed,
        kind="model",
        loss=spec.loss,
        margin=spec.margin,
        embedding_size=test_emb.shape[1],
    )
    return row, test_emb
