"""What an embedding is for: verification, identification and best match.

The cases of the reference material (``siamese_network_intro.md``), as small functions in the
style of pytorch-metric-learning's ``MatchFinder`` / ``InferenceModel`` split:

Verification ("phone unlock")
    Two images are "the same" when the distance of their embeddings is at most a threshold.
    :func:`make_pairs` draws genuine (same class) and impostor (different classes) pairs, seeded;
    :func:`roc`, :func:`eer`, :func:`calibrate_threshold`, :func:`far_frr` and :func:`tar_at_far`
    turn their distances into the figures a biometric system reports, and
    :func:`verification_report` chooses the threshold on the validation split at a target
    false-accept rate and measures it on the test split.
Identification ("a gym with 20 members")
    A :class:`Gallery` holds the enrolled images of known classes; a query goes to the class of
    its nearest enrolled image, or is rejected as unknown when that image is farther than the
    threshold. :func:`identification_report` gives the closed-set accuracy (every class enrolled)
    and the open-set detection and identification rate (DIR) at a false-accept rate, with some
    classes left out of the gallery, averaged over seeded enrolment draws.
Best match ("an actor for a historical role")
    :meth:`Gallery.rank` ranks the whole gallery against one query.

Unseen classes (and the transfer classifier) are a study built on these functions, in
``helpers/studies/``.

Conventions
-----------
- Distances are Euclidean (``metric="l2"``, not squared) or cosine distances (``1 - cos``), the
  same in every function, so a threshold calibrated on pairs transfers to a gallery.
- A pair or a query is *accepted* when its distance is ``<= threshold``. The false-accept rate
  (FAR) is the fraction of impostor pairs accepted, the false-reject rate (FRR) the fraction of
  genuine pairs rejected; the true-accept rate TAR = 1 - FRR.
- Nearest neighbours come from :func:`helpers.knn.exact_knn`, the suite's one k-NN path; a
  :class:`Gallery` searches a flat (exact) :class:`helpers.search.EmbeddingIndex`, the same FAISS
  brute force.
"""

from __future__ import annotations

import warnings

import numpy as np

from helpers import knn, metrics
from helpers.search.errors import SearchError
from helpers.search.index import EmbeddingIndex
from helpers.search.kinds import IndexConfig

METRICS = ("l2", "cosine")


class ApplicationError(ValueError):
    """Bad input to a verification or identification function; the message says how to fix it."""


# --------------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------------


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ApplicationError(f"metric must be one of {METRICS}, got {metric!r}.")


def _check_rate(value: float, name: str) -> float:
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ApplicationError(f"{name} must be in [0, 1), got {value}; a rate of 1 % is 0.01.")
    return value


def _scores(distances, same):
    """(distances float64 1-D, same bool 1-D), checked: matching lengths, finite, both kinds present."""
    d = np.asarray(distances, dtype=np.float64).reshape(-1)
    s = np.asarray(same).reshape(-1)
    if len(d) != len(s):
        raise ApplicationError(f"distances has {len(d)} entries but same has {len(s)}; one flag per pair.")
    if s.dtype != bool:
        if not np.isin(s, (0, 1)).all():
            raise ApplicationError("same must hold booleans (True for a genuine pair) or 0/1.")
        s = s.astype(bool)
    if not np.isfinite(d).all():
        raise ApplicationError("distances contains NaN or infinite values; check the embeddings.")
    if s.all() or not s.any():
        raise ApplicationError(
            f"need both genuine and impostor pairs, got {int(s.sum())} genuine and {int((~s).sum())} "
            "impostor; draw them with make_pairs."
        )
    return d, s


def check_vectors(x, name: str) -> np.ndarray:
    """``x`` as a 2-D float32 array of embeddings, or one :class:`ApplicationError` naming ``name``."""
    try:
        return knn.as_vectors(x, name)
    except knn.KNNError as exc:
        raise ApplicationError(str(exc)) from None


def check_labels(labels, n: int, name: str) -> np.ndarray:
    """``labels`` as ``n`` int64 class ids, or one :class:`ApplicationError` naming ``name``."""
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != n:
        raise ApplicationError(f"{name} must be 1-D with one label per row ({n}), got shape {y.shape}.")
    if not np.issubdtype(y.dtype, np.integer):
        raise ApplicationError(f"{name} must hold integer class ids, got dtype {y.dtype}.")
    return y.astype(np.int64)


# --------------------------------------------------------------------------------------------------
# pairs and distances
# --------------------------------------------------------------------------------------------------


def make_pairs(labels, n_genuine: int = 5000, n_impostor: int = 5000, seed: int = 0, classes=None):
    """Draw genuine and impostor pairs of indices into ``labels``; same seed, same pairs.

    A genuine pair is two different images of one class; an impostor pair two images of different
    classes. With ``classes``, the first image of every pair is one of those classes (the second
    is of the same class for a genuine pair, of any other class for an impostor), so genuine pairs
    lie entirely inside ``classes`` and every impostor involves one of them. Pairs are drawn with
    replacement (a pair may repeat).

    Returns
    -------
    first, second : ndarray of int64, shape (n_genuine + n_impostor,)
    same : ndarray of bool, True for the genuine pairs (the first ``n_genuine``)
    """
    y = np.asarray(labels)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ApplicationError(f"labels must be 1-D integer class ids, got shape {y.shape} dtype {y.dtype}.")
    if n_genuine < 1 or n_impostor < 1:
        raise ApplicationError(f"n_genuine and n_impostor must be >= 1, got {n_genuine} and {n_impostor}.")
    rng = np.random.default_rng(seed)
    values, counts = np.unique(y, return_counts=True)
    anchors_from = values if classes is None else np.asarray(list(classes))
    missing = np.setdiff1d(anchors_from, values)
    if len(missing):
        raise ApplicationError(f"classes {missing.tolist()} have no images among the labels.")
    pool = np.flatnonzero(np.isin(y, anchors_from))
    if len(values) < 2:
        raise ApplicationError("impostor pairs need at least two classes in labels.")
    # genuine: an anchor of a class with >= 2 images, then another image of its class
    order = np.argsort(y, kind="stable")
    offsets = np.searchsorted(y[order], values)
    size = dict(zip(values.tolist(), counts.tolist(), strict=False))
    start = dict(zip(values.tolist(), offsets.tolist(), strict=False))
    candidates = pool[np.array([size[c] >= 2 for c in y[pool].tolist()], dtype=bool)]
    if len(candidates) == 0:
        raise ApplicationError("genuine pairs need a class with at least two images.")
    g_first = rng.choice(candidates, size=n_genuine)
    position = np.empty(len(y), dtype=np.int64)
    position[order] = np.arange(len(y)) - offsets[np.searchsorted(values, y[order])]
    n_c = np.array([size[c] for c in y[g_first].tolist()])
    s_c = np.array([start[c] for c in y[g_first].tolist()])
    step = rng.integers(1, n_c)  # 1 .. n_c - 1: never the anchor itself
    g_second = order[s_c + (position[g_first] + step) % n_c]
    # impostor: an anchor, then any image of another class (rejection, vectorised)
    i_first = rng.choice(pool, size=n_impostor)
    i_second = rng.integers(0, len(y), size=n_impostor)
    clash = y[i_second] == y[i_first]
    while clash.any():
        i_second[clash] = rng.integers(0, len(y), size=int(clash.sum()))
        clash = y[i_second] == y[i_first]
    first = np.concatenate([g_first, i_first]).astype(np.int64)
    second = np.concatenate([g_second, i_second]).astype(np.int64)
    same = np.zeros(len(first), dtype=bool)
    same[:n_genuine] = True
    return first, second, same


def pair_distances(emb_a, emb_b, metric: str = "l2") -> np.ndarray:
    """Row-wise distance of two (n, d) arrays: Euclidean, or cosine distance ``1 - cos``."""
    _check_metric(metric)
    a, b = check_vectors(emb_a, "emb_a"), check_vectors(emb_b, "emb_b")
    if a.shape != b.shape:
        raise ApplicationError(f"emb_a {a.shape} and emb_b {b.shape} must have the same shape.")
    if metric == "cosine":
        a, b = knn.l2_normalize(a), knn.l2_normalize(b)
        return (1.0 - (a * b).sum(1)).astype(np.float64)
    return np.sqrt(((a.astype(np.float64) - b) ** 2).sum(1))


def _knn_distances(d2: np.ndarray, metric: str) -> np.ndarray:
    """exact_knn's distances (squared for "l2") on this module's scale (Euclidean)."""
    return np.sqrt(np.maximum(d2, 0.0)).astype(np.float64) if metric == "l2" else d2.astype(np.float64)


def verification_scores(emb, labels, n_genuine=5000, n_impostor=5000, seed=0, metric="l2", classes=None):
    """Distances and genuine flags of pairs drawn by :func:`make_pairs` from ``(emb, labels)``."""
    emb = check_vectors(emb, "emb")
    y = check_labels(labels, len(emb), "labels")
    first, second, same = make_pairs(y, n_genuine, n_impostor, seed=seed, classes=classes)
    return pair_distances(emb[first], emb[second], metric), same


# --------------------------------------------------------------------------------------------------
# verification figures
# --------------------------------------------------------------------------------------------------


def roc(distances, same):
    """ROC curve of "accept when distance <= threshold": ``(far, tar, thresholds)``.

    sklearn's ``roc_curve`` on the score ``-distance`` with every point kept; ``thresholds`` are
    distances (the first is ``-inf``: nothing accepted).
    """
    from sklearn.metrics import roc_curve

    d, s = _scores(distances, same)
    far, tar, thr = roc_curve(s, -d, drop_intermediate=False)
    return far, tar, -thr


def auc(distances, same) -> float:
    """Area under the ROC curve (sklearn's ``roc_auc_score`` on ``-distance``)."""
    from sklearn.metrics import roc_auc_score

    d, s = _scores(distances, same)
    return float(roc_auc_score(s, -d))


def eer(distances, same) -> tuple[float, float]:
    """Equal error rate and its threshold: where the FAR and FRR curves cross.

    The crossing is interpolated linearly between the two ROC points around it (the ROC curve's
    own segment), so the value is exact for the piecewise-linear curve sklearn draws.

    Returns
    -------
    (eer, threshold)
    """
    return _eer_of_roc(*roc(distances, same))


def _eer_of_roc(far, tar, thr) -> tuple[float, float]:
    frr = 1.0 - tar
    diff = frr - far  # decreasing from 1 (nothing accepted) to -1 (everything accepted)
    i = int(np.argmax(diff <= 0))
    if diff[i] == 0 or i == 0:
        return float(far[i]), float(thr[i])
    w = diff[i - 1] / (diff[i - 1] - diff[i])
    rate = far[i - 1] + w * (far[i] - far[i - 1])
    prev = thr[i - 1] if np.isfinite(thr[i - 1]) else thr[i]
    return float(rate), float(prev + w * (thr[i] - prev))


def threshold_at_far(impostor_distances, target_far: float = 0.01) -> float:
    """The largest impostor distance ``t`` with FAR(t) = #{impostors <= t} / n at most ``target_far``.

    When even the closest impostor would exceed the target (``target_far < 1 / n``), the threshold
    is just below it, so nothing impostor is accepted.
    """
    target_far = _check_rate(target_far, "target_far")
    d = np.sort(np.asarray(impostor_distances, dtype=np.float64).reshape(-1))
    if len(d) == 0 or not np.isfinite(d).all():
        raise ApplicationError("impostor_distances must be a non-empty array of finite distances.")
    accepted = np.searchsorted(d, d, side="right")  # FAR(t) * n at every candidate t = d[i]
    ok = accepted <= target_far * len(d) + 1e-9
    if not ok.any():
        return float(np.nextafter(d[0], -np.inf))
    return float(d[np.flatnonzero(ok)[-1]])


def calibrate_threshold(distances, same, target_far: float = 0.01) -> float:
    """Threshold at ``target_far`` from labelled pairs (only the impostors matter): see
    :func:`threshold_at_far`. Calibrate on the validation split, report on the test split."""
    d, s = _scores(distances, same)
    return threshold_at_far(d[~s], target_far)


def far_frr(distances, same, threshold: float) -> tuple[float, float]:
    """(FAR, FRR) of accepting the pairs whose distance is ``<= threshold``."""
    d, s = _scores(distances, same)
    accepted = d <= threshold
    return float(accepted[~s].mean()), float((~accepted[s]).mean())


def tar_at_far(distances, same, target_far: float = 0.01) -> float:
    """True-accept rate at the threshold of :func:`calibrate_threshold` on these same pairs.

    The figure verification benchmarks report as "VAL @ FAR" (threshold set on the evaluated pairs
    themselves); :func:`verification_report` also gives the honest version, threshold from val.
    """
    t = calibrate_threshold(distances, same, target_far)
    return 1.0 - far_frr(distances, same, t)[1]


#: Bootstrap resamples of the verification intervals (each recomputes a ROC curve).
VERIFICATION_N_BOOT = 500


def verification_report(
    val_distances,
    val_same,
    test_distances,
    test_same,
    target_far: float = 0.01,
    n_boot: int | None = VERIFICATION_N_BOOT,
    seed: int = 0,
) -> dict:
    """The verification figures of one model.

    The operating threshold is chosen on the validation pairs at ``target_far``; the test pairs
    give the AUC, the equal error rate (with its threshold), that threshold's FAR and FRR, and
    TAR at ``target_far`` with the threshold set on the test pairs themselves. ``auc``, ``eer``,
    ``tar_at_far`` and ``test_frr`` get ``_ci_low`` / ``_ci_high``: a 95 % percentile bootstrap
    over the test pairs, genuine and impostor pairs resampled separately (``n_boot`` resamples,
    seeded; ``None`` leaves them out).
    """
    threshold = calibrate_threshold(val_distances, val_same, target_far)
    test_far, test_frr = far_frr(test_distances, test_same, threshold)
    rate, eer_threshold = eer(test_distances, test_same)
    report = {
        "auc": auc(test_distances, test_same),
        "eer": rate,
        "eer_threshold": eer_threshold,
        "target_far": float(target_far),
        "threshold": threshold,
        "test_far": test_far,
        "test_frr": test_frr,
        "tar_at_far": tar_at_far(test_distances, test_same, target_far),
    }
    if n_boot is None:
        return report
    d, same = _scores(test_distances, test_same)
    low, high = metrics.bootstrap_interval(
        (d, same), _resample_figures(threshold, target_far), n_boot=n_boot, seed=seed, strata=same
    )
    for i, key in enumerate(("auc", "eer", "tar_at_far", "test_frr")):
        report[f"{key}_ci_low"], report[f"{key}_ci_high"] = float(low[i]), float(high[i])
    return report


def _resample_figures(threshold: float, target_far: float):
    """``(d, same) -> [auc, eer, tar_at_far, frr at threshold]`` from one ROC curve, for the bootstrap."""
    from sklearn.metrics import roc_curve

    def figures(d, same):
        far, tar, thr = roc_curve(same, -d, drop_intermediate=False)
        t = threshold_at_far(d[~same], target_far)
        return [
            np.trapezoid(tar, far),
            _eer_of_roc(far, tar, -thr)[0],
            (d[same] <= t).mean(),
            (d[same] > threshold).mean(),
        ]

    return figures


# --------------------------------------------------------------------------------------------------
# identification
# --------------------------------------------------------------------------------------------------

UNKNOWN = -1


class Gallery:
    """Enrolled images of known classes: identify queries, rejecting strangers.

    A query goes to the class of its nearest enrolled image (1-NN over the gallery) when that image
    is at most ``threshold`` away, else it is :data:`UNKNOWN` (-1). ``threshold=None`` accepts
    everything (closed set). The enrolled embeddings, labels and ids live in a flat (exact)
    :class:`helpers.search.EmbeddingIndex`.

    Parameters
    ----------
    embeddings : array-like (n, d)
    labels : array-like of int (n,)
    ids : array-like (n,), optional
        What each row is (integers >= 0 or strings, unique); default the row numbers.
    metric : "l2" or "cosine"
    threshold : float or None
    """

    def __init__(self, embeddings, labels, ids=None, metric: str = "l2", threshold: float | None = None):
        _check_metric(metric)
        emb = check_vectors(embeddings, "gallery embeddings")
        y = check_labels(labels, len(emb), "gallery labels")
        ids = np.arange(len(emb)) if ids is None else np.asarray(ids)
        if len(ids) != len(emb):
            raise ApplicationError(f"ids has {len(ids)} entries for {len(emb)} images.")
        self.metric, self.threshold = metric, threshold
        self.index = EmbeddingIndex(emb.shape[1], IndexConfig("flat", metric))
        try:
            self.index.add(emb, y, ids)
        except SearchError as exc:
            raise ApplicationError(f"gallery: {exc}") from None

    @classmethod
    def enroll(
        cls,
        embeddings,
        labels,
        shots: int,
        classes=None,
        seed: int = 0,
        metric: str = "l2",
        threshold: float | None = None,
    ) -> Gallery:
        """Enrol ``shots`` images drawn at random (seeded) for each of ``classes`` (default: all).

        ``ids`` of the gallery are the rows of ``embeddings`` that were enrolled.
        """
        emb = check_vectors(embeddings, "embeddings")
        y = check_labels(labels, len(emb), "labels")
        if int(shots) < 1:
            raise ApplicationError(f"shots must be >= 1, got {shots}.")
        classes = np.unique(y) if classes is None else np.asarray(list(classes), dtype=np.int64)
        rng = np.random.default_rng(seed)
        rows = []
        for c in classes:
            members = np.flatnonzero(y == c)
            if len(members) < shots:
                raise ApplicationError(
                    f"class {int(c)} has {len(members)} images, fewer than shots={shots}; lower shots."
                )
            rows.append(rng.choice(members, size=int(shots), replace=False))
        rows = np.concatenate(rows)
        return cls(emb[rows], y[rows], ids=rows, metric=metric, threshold=threshold)

    @property
    def embeddings(self) -> np.ndarray:
        """The enrolled embeddings (L2-normalised for the cosine metric), one row per image."""
        return self.index.vectors

    @property
    def labels(self) -> np.ndarray:
        return self.index.labels

    @property
    def ids(self) -> np.ndarray:
        return self.index.ids

    @property
    def classes(self) -> np.ndarray:
        """The enrolled class ids."""
        return np.unique(self.index.labels)

    def _search(self, queries, k: int, what: str):
        """(ids, labels, distances) of the ``k`` nearest enrolled images of each query, (q, k) each."""
        q = check_vectors(queries, what)
        if q.shape[1] != self.index.dim:
            raise ApplicationError(
                f"{what}: {q.shape[1]} features, but the gallery has {self.index.dim}; "
                "embed them with the gallery's model."
            )
        found = self.index.query(q, k)
        return found.ids, found.labels, _knn_distances(found.distances, self.metric)

    def nearest(self, queries):
        """(label, distance, id) of each query's nearest enrolled image."""
        ids, labels, distances = self._search(queries, 1, "queries")
        return labels[:, 0], distances[:, 0], ids[:, 0]

    def identify(self, queries, threshold: float | None = ...) -> tuple[np.ndarray, np.ndarray]:
        """Class of each query, or :data:`UNKNOWN` beyond the threshold; and the nearest distance.

        ``threshold`` defaults to the gallery's own; ``None`` accepts every query (closed set).
        """
        threshold = self.threshold if threshold is ... else threshold
        labels, distances, _ = self.nearest(queries)
        if threshold is not None:
            labels = np.where(distances <= threshold, labels, UNKNOWN)
        return labels, distances

    def rank(self, query, k: int | None = None):
        """Rank the gallery against one query, nearest first: ``(ids, labels, distances)``.

        The best-match case: every enrolled image scored against one query (``k`` of them).
        """
        k = len(self.index) if k is None else int(k)
        if not 1 <= k <= len(self.index):
            raise ApplicationError(f"k must be in [1, {len(self.index)}] (gallery size), got {k}.")
        ids, labels, distances = self._search(np.asarray(query).reshape(1, -1), k, "the query")
        return ids[0], labels[0], distances[0]


def open_set_rates(gallery: Gallery, known_queries, known_labels, unknown_queries, target_far: float = 0.01):
    """Detection and identification rate at a false-accept rate, as face-recognition benchmarks
    (e.g. BLUFR's open-set protocol) report it.

    The threshold is set on the unknown queries (classes not in the gallery): at most
    ``target_far`` of them may be accepted. DIR is the fraction of known queries that are both
    accepted and given their own class.

    Returns
    -------
    dict with ``dir``, ``far`` (reached), ``threshold``, ``closed_set_accuracy`` (of the known
    queries, no threshold) and ``identified`` (per known query: accepted with its own class)
    """
    known_labels = np.asarray(known_labels)
    unknown_in_gallery = np.isin(known_labels, gallery.classes, invert=True)
    if unknown_in_gallery.any():
        raise ApplicationError(
            "known_labels has classes that are not enrolled: "
            f"{np.unique(known_labels[unknown_in_gallery]).tolist()}."
        )
    pred, d_known, _ = gallery.nearest(known_queries)
    _, d_unknown, _ = gallery.nearest(unknown_queries)
    threshold = threshold_at_far(d_unknown, target_far)
    correct = pred == known_labels
    return {
        "dir": float((correct & (d_known <= threshold)).mean()),
        "identified": correct & (d_known <= threshold),
        "far": float((d_unknown <= threshold).mean()),
        "threshold": threshold,
        "closed_set_accuracy": float(correct.mean()),
    }


def identification_report(
    gallery_emb,
    gallery_labels,
    query_emb,
    query_labels,
    shots=(1, 5),
    unknown_classes=3,
    target_far: float = 0.01,
    episodes: int = 10,
    seed: int = 0,
    metric: str = "l2",
    n_boot: int | None = metrics.N_BOOT,
) -> dict:
    """Closed- and open-set identification, averaged over ``episodes`` seeded enrolments.

    Each episode enrols ``shots`` images per class from ``(gallery_emb, gallery_labels)`` (the
    train split) and identifies every query (the test split):

    - ``closed_{s}shot``: accuracy with every class enrolled;
    - ``dir_{s}shot``: DIR at ``target_far`` with ``unknown_classes`` classes (drawn per episode)
      left out of the gallery, their queries acting as strangers (:func:`open_set_rates`).

    Returns ``{key: mean, key + "_std": std over episodes, key + "_se": its standard error,
    key + "_ci_low" / "_ci_high": 95 % percentile bootstrap over the queries}`` (the bootstrap
    resamples the queries with their outcome in every episode, ``n_boot`` times, seeded).
    """
    g = check_vectors(gallery_emb, "gallery_emb")
    gy = check_labels(gallery_labels, len(g), "gallery_labels")
    q = check_vectors(query_emb, "query_emb")
    qy = check_labels(query_labels, len(q), "query_labels")
    classes = np.unique(gy)
    if not 1 <= int(unknown_classes) < len(classes):
        raise ApplicationError(
            f"unknown_classes must be in [1, {len(classes) - 1}] for {len(classes)} classes, got {unknown_classes}."
        )
    if int(episodes) < 1:
        raise ApplicationError(f"episodes must be >= 1, got {episodes}.")
    outcomes: dict[str, list] = {}  # key -> one (n_queries,) array per episode, NaN: not asked
    for s in shots:
        for e in range(int(episodes)):
            rng = np.random.default_rng([seed, int(s), e])
            gallery = Gallery.enroll(g, gy, s, seed=int(rng.integers(2**31)), metric=metric)
            pred, _ = gallery.identify(q, threshold=None)
            outcomes.setdefault(f"closed_{s}shot", []).append((pred == qy).astype(np.float64))
            unknown = rng.choice(classes, size=int(unknown_classes), replace=False)
            known = np.setdiff1d(classes, unknown)
            open_gallery = Gallery.enroll(
                g, gy, s, classes=known, seed=int(rng.integers(2**31)), metric=metric
            )
            is_known = np.isin(qy, known)
            rates = open_set_rates(open_gallery, q[is_known], qy[is_known], q[~is_known], target_far)
            identified = np.full(len(q), np.nan)
            identified[is_known] = rates["identified"]
            outcomes.setdefault(f"dir_{s}shot", []).append(identified)
    return _episode_summary(outcomes, n_boot, seed)


def _episode_summary(outcomes: dict, n_boot: int, seed: int) -> dict:
    """Mean, std, standard error over episodes and a query-bootstrap interval of each rate."""
    report = {}
    for key, per_episode in outcomes.items():
        matrix = np.stack(per_episode, axis=1)  # (queries, episodes)
        rates = np.nanmean(matrix, axis=0)
        report[key] = float(np.mean(rates))
        report[f"{key}_std"] = float(np.std(rates))
        report[f"{key}_se"] = metrics.standard_error(rates) if len(rates) > 1 else float("nan")
        if n_boot is not None:
            report[f"{key}_ci_low"], report[f"{key}_ci_high"] = metrics.bootstrap_interval(
                matrix, _mean_rate, n_boot=n_boot, seed=seed
            )
    return report


def _mean_rate(matrix: np.ndarray) -> float:
    """Mean over episodes of the rate over the queries asked in each (NaN: not asked)."""
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample without a known query
        return float(np.mean(np.nanmean(matrix, axis=0)))


# --------------------------------------------------------------------------------------------------
# one model, every figure (the notebook and benchmarks/applications.py share these)
# --------------------------------------------------------------------------------------------------

RAW_PIXELS = "raw_pixels"


def embed_splits(model, data, splits=("train", "val", "test"), batch_size: int = 512) -> dict:
    """``{split: embeddings}`` of ``data``'s splits; ``model=None`` gives the raw pixels (flattened)."""
    from helpers.evaluation import embed

    out = {}
    for which in splits:
        x, _ = data.split(which)
        out[which] = (
            np.asarray(x, np.float32).reshape(len(x), -1)
            if model is None
            else embed(model, x, batch_size=batch_size)
        )
    return out


def application_figures(
    embeddings: dict,
    data,
    target_far: float = 0.01,
    n_pairs: int = 5000,
    shots=(1, 5),
    episodes: int = 10,
    unknown_classes: int = 3,
    seed: int = 0,
    metric: str = "l2",
) -> tuple[dict, tuple]:
    """Verification and identification figures of one embedding of ``data``'s splits.

    Verification pairs (``n_pairs`` genuine + ``n_pairs`` impostor, seeded) come from the
    validation split (to choose the threshold at ``target_far``) and the test split (to measure
    it): :func:`verification_report`. Identification enrols train images and queries the test
    split: :func:`identification_report`.

    Returns
    -------
    (row, (far, tar)) : the flat dict of figures and the test ROC curve
    """
    val_d, val_same = verification_scores(
        embeddings["val"], data.y_val, n_pairs, n_pairs, seed=seed, metric=metric
    )
    test_d, test_same = verification_scores(
        embeddings["test"], data.y_test, n_pairs, n_pairs, seed=seed + 1, metric=metric
    )
    row = verification_report(val_d, val_same, test_d, test_same, target_far, seed=seed)
    row.update(
        identification_report(
            embeddings["train"],
            data.y_train,
            embeddings["test"],
            data.y_test,
            shots=shots,
            unknown_classes=unknown_classes,
            target_far=target_far,
            episodes=episodes,
            seed=seed,
            metric=metric,
        )
    )
    far, tar, _ = roc(test_d, test_same)
    return row, (far, tar)
