"""Tests of helpers.evaluation on hand-worked examples (answers derived in the comments)."""

import numpy as np
import pandas as pd
import pytest

from helpers import evaluation as ev
from helpers.evaluation import EvaluationError

approx = pytest.approx


def col(values):
    """1-d points as (n, 1) embeddings."""
    return np.asarray(values, dtype=np.float32).reshape(-1, 1)


# --------------------------------------------------------------------------------------------
# retrieval: self-retrieval on 6 points
# --------------------------------------------------------------------------------------------
# idx:    0    1    2    3    4    5
# x:      0    1    2.5  4.2  7    9
# class:  A    A    B    B    A    B        class sizes 3 -> R = 2 for every query
#
# neighbours in order (self excluded), distance, relevance to the query's class:
# q0 (A, 0):   p1 1 (A) | p2 2.5 (B) | p3 4.2 | p4 7 (A) | p5 9  -> rel 1 0 0 1 0
# q1 (A, 1):   p0 1 (A) | p2 1.5 (B) | p3 3.2 | p4 6 (A) | p5 8  -> rel 1 0 0 1 0
# q2 (B, 2.5): p1 1.5 (A) | p3 1.7 (B) | p0 2.5 (A) | p4 4.5 | p5 6.5 (B) -> rel 0 1 0 0 1
# q3 (B, 4.2): p2 1.7 (B) | p4 2.8 (A) | p1 3.2 | p0 4.2 | p5 4.8 (B)   -> rel 1 0 0 0 1
# q4 (A, 7):   p5 2 (B) | p3 2.8 (B) | p2 4.5 (B) | p1 6 (A) | p0 7 (A) -> rel 0 0 0 1 1
# q5 (B, 9):   p4 2 (A) | p3 4.8 (B) | p2 6.5 (B) | p1 8 | p0 9        -> rel 0 1 1 0 0
#
# P@1:  1 1 0 1 0 0                           -> mean 3/6 = 1/2
# R-precision (hits in top 2 / 2): 1/2 1/2 1/2 1/2 0 1/2 -> mean 2.5/6 = 5/12
# MAP@R = (1/2) * sum_{i<=2} P(i) rel(i):
#   q0: (1/2)(1*1)       = 1/2     q1: 1/2
#   q2: (1/2)(1/2 * 1)   = 1/4     q3: (1/2)(1*1) = 1/2
#   q4: 0                          q5: (1/2)(1/2 * 1) = 1/4      -> mean 2/6 = 1/3
# recall@2 (any hit in top 2): 1 1 1 1 0 1 -> 5/6;  recall@4: q4 hits at rank 4 -> 6/6
# precision@2: 1/2 1/2 1/2 1/2 0 1/2 -> 5/12
SIX_X = [0.0, 1.0, 2.5, 4.2, 7.0, 9.0]
SIX_Y = [0, 0, 1, 1, 0, 1]


def test_self_retrieval_hand_example():
    m = ev.retrieval_metrics(col(SIX_X), SIX_Y, ks=(1, 2, 4))
    assert m["precision_at_1"] == approx(1 / 2)
    assert m["r_precision"] == approx(5 / 12)
    assert m["map_at_r"] == approx(1 / 3)
    assert m["recall_at_1"] == approx(1 / 2)
    assert m["recall_at_2"] == approx(5 / 6)
    assert m["recall_at_4"] == approx(1.0)
    assert m["precision_at_2"] == approx(5 / 12)
    assert m["n_queries"] == 6


def test_self_retrieval_is_invariant_to_sample_order():
    perm = np.random.default_rng(0).permutation(6)
    a = ev.retrieval_metrics(col(SIX_X), SIX_Y, ks=(1, 2, 4))
    b = ev.retrieval_metrics(col(SIX_X)[perm], np.asarray(SIX_Y)[perm], ks=(1, 2, 4))
    assert a == approx(b)


# --------------------------------------------------------------------------------------------
# retrieval: queries against a separate reference set
# --------------------------------------------------------------------------------------------
# refs: 0 (A), 1 (A), 5 (B), 6 (B), 7 (B)  -> R_A = 2, R_B = 3
# q1 = 0.4 (A): 0 (0.4 A), 1 (0.6 A)                   -> rel 1 1: P@1 1, RP 1, MAP 1
# q2 = 3.9 (A): 5 (1.1 B), 6 (2.1 B), 1 (2.9 A), 7, 0  -> rel 0 0 1 0 1, R=2: P@1 0, RP 0, MAP 0
# q3 = 3.0 (C): no reference of class C (R = 0)       -> skipped from every average
# q4 = 2.0 (B): 1 (1 A), 0 (2 A), 5 (3 B), 6 (4 B), 7 (5 B) -> rel 0 0 1 1 1, R=3:
#               P@1 0, RP 1/3, MAP (1/3)(P(3)*1) = (1/3)(1/3) = 1/9
# means over the 3 valid queries: P@1 1/3, RP (1 + 0 + 1/3)/3 = 4/9, MAP (1 + 0 + 1/9)/3 = 10/27
def test_query_reference_hand_example_and_r0_skip():
    m = ev.retrieval_metrics(
        col([0.4, 3.9, 3.0, 2.0]), [0, 0, 2, 1], col([0, 1, 5, 6, 7]), [0, 0, 1, 1, 1], ks=(1,)
    )
    assert m["n_queries"] == 3
    assert m["precision_at_1"] == approx(1 / 3)
    assert m["r_precision"] == approx(4 / 9)
    assert m["map_at_r"] == approx(10 / 27)


# --------------------------------------------------------------------------------------------
# retrieval: duplicates / ties at distance 0
# --------------------------------------------------------------------------------------------
def test_same_class_duplicate_counts_as_hit():
    # 0 and 1 are identical (A); 2, 3, 4 identical (B). Excluding each query's own index, its
    # duplicates are its only same-class neighbours, at distance 0 -> every metric is 1.
    # (An implementation dropping all zero-distance neighbours would score 0.)
    m = ev.retrieval_metrics(col([0, 0, 10, 10, 10]), [0, 0, 1, 1, 1], ks=(1, 2))
    for key in ("precision_at_1", "r_precision", "map_at_r", "recall_at_1", "recall_at_2"):
        assert m[key] == approx(1.0), key
    # precision@2: class A queries have one duplicate then a B point (1/2), B queries two
    # duplicates (1): (1/2 + 1/2 + 1 + 1 + 1) / 5 = 0.8
    assert m["precision_at_2"] == approx(0.8)


# idx:   0    1    2    3    4      5
# x:     0    0    100  101  102.5  104.2
# class: A    B    A    A    B      B        R = 2 for everyone
# q0 (A): 1 (B, 0) | 2 (A, 100) ...     rel 0 1 -> P@1 0, RP 1/2, MAP (1/2)(1/2) = 1/4
# q1 (B): 0 (A, 0) | 2 (A, 100) ...     rel 0 0 -> 0, 0, 0
# q2 (A): 3 (A, 1) | 4 (B, 2.5) ...     rel 1 0 -> 1, 1/2, 1/2
# q3 (A): 2 (A, 1) | 4 (B, 1.5) ...     rel 1 0 -> 1, 1/2, 1/2
# q4 (B): 3 (A, 1.5) | 5 (B, 1.7) ...   rel 0 1 -> 0, 1/2, 1/4
# q5 (B): 4 (B, 1.7) | 3 (A, 3.2) ...   rel 1 0 -> 1, 1/2, 1/2
# means: P@1 3/6 = 1/2, RP 2.5/6 = 5/12, MAP 2/6 = 1/3.
# Queries 0 and 1 tie at distance 0: if the query itself were kept (e.g. "drop the first
# column" when FAISS lists the duplicate first) q0 / q1 would wrongly score a hit at rank 1.
def test_cross_class_duplicate_self_excluded_by_index():
    m = ev.retrieval_metrics(col([0, 0, 100, 101, 102.5, 104.2]), [0, 1, 0, 0, 1, 1], ks=(1,))
    assert m["precision_at_1"] == approx(1 / 2)
    assert m["r_precision"] == approx(5 / 12)
    assert m["map_at_r"] == approx(1 / 3)


def test_drop_self_removes_own_index_wherever_it_is():
    nn = np.array(
        [
            [0, 5, 6, 7],  # query 0 first
            [3, 4, 1, 2],  # query 1 in the middle
            [0, 1, 3, 2],  # query 2 last
            [9, 8, 7, 6],  # query 3 missing (ties beyond k): the last column goes
        ]
    )
    from helpers.knn import drop_excluded  # the self-exclusion retrieval_metrics relies on

    out, _ = drop_excluded(nn, nn.astype(np.float32), np.arange(4))
    np.testing.assert_array_equal(out, [[5, 6, 7], [3, 4, 2], [0, 1, 3], [9, 8, 7]])


# --------------------------------------------------------------------------------------------
# retrieval: random cross-check against brute force numpy
# --------------------------------------------------------------------------------------------
def brute_force(query, qy, ref, ry, self_retrieval):
    d = ((query[:, None, :].astype(np.float64) - ref[None, :, :]) ** 2).sum(-1)
    p1, rp, mapr = [], [], []
    for i in range(len(query)):
        order = np.argsort(d[i], kind="stable")
        if self_retrieval:
            order = order[order != i]
        rel = (ry[order] == qy[i]).astype(float)
        r = int(rel.sum())
        if r == 0:
            continue
        p1.append(rel[0])
        rp.append(rel[:r].sum() / r)
        prec = np.cumsum(rel[:r]) / np.arange(1, r + 1)
        mapr.append((prec * rel[:r]).sum() / r)
    return np.mean(p1), np.mean(rp), np.mean(mapr)


@pytest.mark.parametrize("self_retrieval", [True, False])
def test_random_data_matches_brute_force(self_retrieval):
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(160, 8)).astype(np.float32)
    ry = rng.integers(0, 5, size=160)  # ~32 per class: R well above max(ks)
    ref[:, 0] += ry  # some class structure so the metrics are not all near chance
    if self_retrieval:
        query, qy = ref, ry
        m = ev.retrieval_metrics(query, qy)
    else:
        qy = rng.integers(0, 5, size=70)
        query = rng.normal(size=(70, 8)).astype(np.float32)
        query[:, 0] += qy
        m = ev.retrieval_metrics(query, qy, ref, ry)
    p1, rp, mapr = brute_force(query, qy, ref, ry, self_retrieval)
    assert m["precision_at_1"] == approx(p1)
    assert m["r_precision"] == approx(rp)
    assert m["map_at_r"] == approx(mapr)


def test_chunking_gives_same_answer(monkeypatch):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(90, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=90)
    full = ev.retrieval_metrics(x, y)
    monkeypatch.setattr(ev, "_MAX_CHUNK_ENTRIES", 50)  # one query per chunk
    assert ev.retrieval_metrics(x, y) == approx(full)


# --------------------------------------------------------------------------------------------
# k-NN accuracy
# --------------------------------------------------------------------------------------------
def test_knn_accuracy_toy():
    # train: 0, 1, 2 (class 0); 10, 11, 12 (class 1)
    # 0.5 -> 3-NN {0, 1, 2} all class 0: correct
    # 11.5 -> {11, 12, 10} class 1: correct
    # 6.2 (true 0) -> distances 10:3.8 (1), 2:4.2 (0), 11:4.8 (1) -> majority 1: wrong
    # accuracy 2/3
    train, y_train = col([0, 1, 2, 10, 11, 12]), [0, 0, 0, 1, 1, 1]
    test, y_test = col([0.5, 11.5, 6.2]), [0, 1, 0]
    assert ev.knn_accuracy(train, y_train, test, y_test) == approx(2 / 3)
    # with k=1, 6.2 -> nearest 10 (class 1): still wrong; 0.5 -> 0 or 1 (class 0) right
    assert ev.knn_accuracy(train, y_train, test, y_test, k=1) == approx(2 / 3)


def test_majority_vote_ties_go_to_the_smallest_label():
    labels = np.array([7, 2, 2, 7, 5])
    neighbours = np.array([[0, 1, 1], [1, 2, 2], [4, 0, 0], [0, 3, 1]])
    # two neighbours: 7, 2 (tie -> 2); 2, 2 -> 2; 5, 7 (tie -> 5); 7, 7 -> 7
    np.testing.assert_array_equal(ev.majority_vote(labels, neighbours[:, :2]), [2, 2, 5, 7])
    # three: 7, 2, 2 -> 2; 2, 2, 2 -> 2; 5, 7, 7 -> 7; 7, 7, 2 -> 7
    np.testing.assert_array_equal(ev.majority_vote(labels, neighbours), [2, 2, 7, 7])


@pytest.mark.parametrize("k", [1, 2, 3, 4, 6])
def test_knn_accuracy_matches_scikit_learn_including_vote_ties(k):
    """Continuous data (no distance ties) with 5 classes: even k gives many tied votes."""
    from sklearn.neighbors import KNeighborsClassifier

    from helpers.knn import exact_knn

    rng = np.random.default_rng(k)
    y_train, y_test = rng.integers(0, 5, 300) * 3 + 1, rng.integers(0, 5, 200) * 3 + 1  # labels 1..13
    train = rng.normal(size=(300, 6)).astype(np.float32) + (y_train[:, None] == 4)
    test = rng.normal(size=(200, 6)).astype(np.float32) + (y_test[:, None] == 4)
    for algorithm in ("brute", "kd_tree"):
        clf = KNeighborsClassifier(n_neighbors=k, algorithm=algorithm).fit(train, y_train)
        nn, _ = exact_knn(test, train, k)
        np.testing.assert_array_equal(ev.majority_vote(y_train, nn), clf.predict(test))
        assert ev.knn_accuracy(train, y_train, test, y_test, k=k) == approx(
            clf.score(test, y_test), abs=1e-12
        )
    if k % 2 == 0:  # the case this test is about: some vote is tied
        votes = (y_train[nn][:, :, None] == np.unique(y_train)[None, None]).sum(1)
        assert ((votes == votes.max(1, keepdims=True)).sum(1) > 1).any()


# --------------------------------------------------------------------------------------------
# cluster metrics
# --------------------------------------------------------------------------------------------
def test_cluster_metrics_four_points_by_hand():
    # x = 0, 1 (class 0), 4, 5 (class 1)
    # silhouette s = (b - a) / max(a, b):
    #   x=0: a = 1, b = (4 + 5)/2 = 4.5 -> 3.5/4.5 = 7/9;  x=1: a = 1, b = (3+4)/2 = 3.5 -> 5/7
    #   x=4: a = 1, b = 3.5 -> 5/7;                       x=5: a = 1, b = 4.5 -> 7/9
    #   mean = (7/9 + 5/7) / 2 = 47/63
    # Davies-Bouldin: centroids 0.5, 4.5; scatter 0.5 each; separation 4 -> (0.5+0.5)/4 = 1/4
    # Calinski-Harabasz: overall mean 2.5; B = 2*2^2 + 2*2^2 = 16; W = 4 * 0.5^2 = 1
    #   CH = (B / (k-1)) / (W / (n-k)) = 16 / (1/2) = 32
    # KMeans(2) recovers {0,1} / {4,5} -> NMI = AMI = 1
    m = ev.cluster_metrics(col([0, 1, 4, 5]), [0, 0, 1, 1])
    assert m["silhouette"] == approx(47 / 63)
    assert m["davies_bouldin"] == approx(1 / 4)
    assert m["calinski_harabasz"] == approx(32)
    assert m["nmi"] == approx(1.0)
    assert m["ami"] == approx(1.0)


def test_cluster_metrics_separated_blobs():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 0.1, size=(40, 3))
    b = rng.normal(10, 0.1, size=(40, 3))
    m = ev.cluster_metrics(np.vstack([a, b]), [0] * 40 + [1] * 40)
    assert m["nmi"] == approx(1.0) and m["ami"] == approx(1.0)
    assert m["silhouette"] > 0.95


def test_silhouette_samples_5000_points_the_way_scikit_learn_does():
    """Above 5,000 points the silhouette is computed on silhouette_subset, the sample that
    scikit-learn's silhouette_score(sample_size=5000, random_state=seed) draws; a check against
    scikit-learn (notebook 05) calls silhouette_score on the same subset."""
    from sklearn.metrics import silhouette_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 6000)
    emb = (rng.normal(size=(6000, 2)) + y[:, None] * 1.5).astype(np.float32)
    sub_emb, sub_y = ev.silhouette_subset(emb, y, seed=3)
    assert sub_emb.shape == (5000, 2) and len(sub_y) == 5000
    assert len(np.unique(sub_emb, axis=0)) == 5000  # a sample without replacement
    expected = silhouette_score(emb, y, sample_size=5000, random_state=3)
    assert silhouette_score(sub_emb, sub_y) == approx(expected, abs=1e-12)
    assert ev.cluster_metrics(emb, y, seed=3)["silhouette"] == approx(expected, abs=1e-6)
    # on all 6,000 points the value differs: checking against it would fail
    assert abs(silhouette_score(emb, y) - expected) > 1e-4
    small_emb, small_y = ev.silhouette_subset(emb[:5000], y[:5000])
    assert small_emb is not None and len(small_emb) == 5000
    np.testing.assert_array_equal(small_y, y[:5000])  # all points, in order


# --------------------------------------------------------------------------------------------
# one row, baselines, CSV
# --------------------------------------------------------------------------------------------
def test_evaluate_embeddings_row_columns():
    rng = np.random.default_rng(0)
    ytr, yte = rng.integers(0, 3, 60), rng.integers(0, 3, 30)
    tr = rng.normal(size=(60, 4)) + ytr[:, None] * 3
    te = rng.normal(size=(30, 4)) + yte[:, None] * 3
    row = ev.evaluate_embeddings("m1", tr, ytr, te, yte, loss="triplet", margin=1.0)
    assert list(row) == [
        "model", "loss", "margin", "silhouette", "3nn_accuracy", "precision_at_1",
        "r_precision", "map_at_r", "recall_at_1", "recall_at_5", "recall_at_10",
        "precision_at_5", "precision_at_10", "davies_bouldin", "calinski_harabasz", "nmi", "ami",
        "3nn_accuracy_ci_low", "3nn_accuracy_ci_high", "precision_at_1_ci_low", "precision_at_1_ci_high",
        "map_at_r_ci_low", "map_at_r_ci_high", "recall_at_1_ci_low", "recall_at_1_ci_high",
        "recall_at_5_ci_low", "recall_at_5_ci_high", "recall_at_10_ci_low", "recall_at_10_ci_high",
    ]  # fmt: skip
    assert row["3nn_accuracy"] == approx(ev.knn_accuracy(tr, ytr, te, yte))
    assert row["map_at_r"] == approx(ev.retrieval_metrics(te, yte, tr, ytr)["map_at_r"])
    assert 0.9 < row["3nn_accuracy"] <= 1.0
    for key in ("3nn_accuracy", "precision_at_1", "map_at_r", "recall_at_5"):
        assert row[f"{key}_ci_low"] <= row[key] <= row[f"{key}_ci_high"]
    assert "map_at_r_ci_low" not in ev.evaluate_embeddings("m1", tr, ytr, te, yte, n_boot=None)


def test_per_query_scores_average_to_the_row_and_give_its_interval():
    from helpers import metrics

    rng = np.random.default_rng(1)
    ytr, yte = rng.integers(0, 3, 80), rng.integers(0, 3, 40)
    tr = rng.normal(size=(80, 4)) + ytr[:, None] * 1.5
    te = rng.normal(size=(40, 4)) + yte[:, None] * 1.5
    per_query = ev.per_query_scores(tr, ytr, te, yte, ks=(1, 5))
    row = ev.evaluate_embeddings("m", tr, ytr, te, yte, ks=(1, 5), n_boot=300, seed=3)
    assert set(per_query) == {"3nn_accuracy", "precision_at_1", "map_at_r", "recall_at_1", "recall_at_5"}
    for key, values in per_query.items():
        assert len(values) == 40
        assert row[key] == approx(values.mean())
        interval = metrics.bootstrap_interval(values, n_boot=300, seed=3)
        assert (row[f"{key}_ci_low"], row[f"{key}_ci_high"]) == interval
    # recall@k is "any same-class reference in the top k": 1/0 per query, never below P@1
    assert set(np.unique(per_query["recall_at_5"])) <= {0.0, 1.0}
    assert (per_query["recall_at_5"] >= per_query["precision_at_1"]).all()


def test_baselines():
    rng = np.random.default_rng(0)
    xtr, xte = rng.random((50, 6, 6, 1)), rng.random((20, 6, 6, 1))
    tr, te = ev.baseline_embeddings(xtr, xte, "raw")
    assert tr.shape == (50, 36) and te.shape == (20, 36) and tr.dtype == np.float32
    np.testing.assert_allclose(tr[3], xtr[3].ravel(), rtol=1e-6)
    tr, te = ev.baseline_embeddings(xtr, xte, "pca", n_components=5)
    assert tr.shape == (50, 5) and te.shape == (20, 5)
    tr, _ = ev.baseline_embeddings(xtr, xte, "pca", n_components=64)  # capped at 36 features
    assert tr.shape == (50, 36)
    with pytest.raises(EvaluationError, match="raw"):
        ev.baseline_embeddings(xtr, xte, "umap")


def test_write_evaluation_csv_sorted_best_first(tmp_path):
    rows = [
        {"model": "a", "3nn_accuracy": 0.5},
        {"model": "b", "3nn_accuracy": 0.9},
        {"model": "c", "3nn_accuracy": 0.7},
    ]
    path = tmp_path / "sub" / "eval.csv"
    df = ev.write_evaluation_csv(rows, path)
    assert list(df["model"]) == ["b", "c", "a"]
    back = pd.read_csv(path)
    assert list(back["model"]) == ["b", "c", "a"]
    assert [p.name for p in path.parent.iterdir()] == ["eval.csv"]  # no temp file left
    with pytest.raises(EvaluationError, match="sort_by"):
        ev.write_evaluation_csv(rows, path, sort_by="nope")


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors():
    x = np.zeros((4, 2), dtype=np.float32)
    with pytest.raises(EvaluationError, match="4 rows"):
        ev.retrieval_metrics(x, [0, 1, 0])
    with pytest.raises(EvaluationError, match="features"):
        ev.retrieval_metrics(x, [0, 1, 0, 1], np.zeros((3, 5)), [0, 1, 0])
    nan = x.copy()
    nan[1, 1] = np.nan
    with pytest.raises(EvaluationError, match="NaN"):
        ev.retrieval_metrics(nan, [0, 1, 0, 1])
    with pytest.raises(EvaluationError, match="2-D"):
        ev.retrieval_metrics(np.zeros(4), [0, 1, 0, 1])
    with pytest.raises(EvaluationError, match="both"):
        ev.retrieval_metrics(x, [0, 1, 0, 1], ref_emb=x)
    with pytest.raises(EvaluationError, match="R = 0"):
        ev.retrieval_metrics(x, [0, 1, 2, 3])
    with pytest.raises(EvaluationError, match="NaN"):
        ev.knn_accuracy(nan, [0, 1, 0, 1], x, [0, 1, 0, 1])
    with pytest.raises(EvaluationError, match="classes"):
        ev.cluster_metrics(x, [0, 0, 0, 0])
    assert issubclass(EvaluationError, ValueError)


# --------------------------------------------------------------------------------------------
# projection and plots (smoke)
# --------------------------------------------------------------------------------------------
def test_project_2d_tsne_and_plots():
    from helpers import plots

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 12)
    emb = rng.normal(size=(36, 60)) + y[:, None] * 4
    pts = ev.project_2d(emb, method="tsne", seed=0, max_iter=250)
    assert pts.shape == (36, 2) and np.isfinite(pts).all()
    with pytest.raises(EvaluationError, match="umap"):
        ev.project_2d(emb, method="pca")

    names = ["zero", "one", "two"]
    fig = plots.plot_latent_space(pts, y, names, "t")
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == names
    fig = plots.plot_latent_grid({"a": (pts, y), "b": (pts, y)}, names)
    assert len([a for a in fig.axes if a.get_visible()]) == 2
    df = pd.DataFrame(
        [
            {"model": "a", "3nn_accuracy": 0.9, "silhouette": 0.2, "map_at_r": 0.5, "precision_at_1": 0.8},
            {"model": "b", "3nn_accuracy": 0.7, "silhouette": -0.1, "map_at_r": 0.3, "precision_at_1": 0.6},
        ]
    )
    fig = plots.plot_metric_bars(df)
    assert len(fig.axes[0].patches) == 8
    fig = plots.plot_history({"loss": [3, 2, 1], "val_loss": [3.5, 2.5, 2]}, "m")
    assert len(fig.axes[0].lines) == 2
    fig = plots.plot_histories({"a": {"loss": [1, 0.5]}, "b": {"loss": [2, 1], "val_loss": [2, 2]}})
    assert len([a for a in fig.axes if a.get_visible()]) == 2
    plots.plt.close("all")


@pytest.mark.slow  # UMAP's first call in a process compiles numba code (~10-20 s)
def test_project_2d_umap():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 20)
    pts = ev.project_2d(rng.normal(size=(40, 8)) + y[:, None] * 5, method="umap", seed=0)
    assert pts.shape == (40, 2) and np.isfinite(pts).all()


def test_embed_matches_model_call():
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((3, 3, 1))
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.Flatten()(inp)))
    x = np.random.default_rng(0).random((7, 3, 3, 1)).astype(np.float32)
    out = ev.embed(model, x, batch_size=3)
    assert out.dtype == np.float32 and out.shape == (7, 2)
    np.testing.assert_allclose(out, keras.ops.convert_to_numpy(model(x)), rtol=1e-5, atol=1e-6)
    with pytest.raises(EvaluationError, match="empty"):
        ev.embed(model, x[:0])


def test_raw_pixel_baseline_matches_plain_scikit_learn():
    """The evaluation table's raw-pixel row is what scikit-learn computes on flattened pixels."""
    from sklearn.metrics import silhouette_score
    from sklearn.neighbors import KNeighborsClassifier

    from helpers.data import load_dataset

    data = load_dataset("mnist", source="bundled", verbose=False)
    rows, test_embeddings = ev.evaluate_models(data, names=[], baselines=("raw",))
    (raw,) = rows
    flat_train = data.x_train.reshape(len(data.x_train), -1)
    flat_test = data.x_test.reshape(len(data.x_test), -1)
    expected_knn = (
        KNeighborsClassifier(n_neighbors=3).fit(flat_train, data.y_train).score(flat_test, data.y_test)
    )
    assert raw["model"] == "raw_pixels"
    assert raw["3nn_accuracy"] == pytest.approx(expected_knn, abs=1e-12)
    assert raw["silhouette"] == pytest.approx(silhouette_score(flat_test, data.y_test), abs=1e-5)
    assert test_embeddings["raw_pixels"].shape == (1000, 784)
