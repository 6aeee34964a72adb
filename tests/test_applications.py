"""Verification and identification on hand-computed examples; Dataset.subset; bad input."""

import numpy as np
import pytest

from helpers import applications as app
from helpers.applications import UNKNOWN, ApplicationError, Gallery
from helpers.data import Dataset, DatasetError
from helpers.studies import unseen_classes as unseen

# --- verification: synthetic scores with known answers ---------------------------------------------

GENUINE = [1.0, 2.0, 3.0]
IMPOSTOR = [2.5, 4.0]


def scores(genuine, impostor):
    d = np.array(genuine + impostor)
    same = np.array([True] * len(genuine) + [False] * len(impostor))
    return d, same


def test_far_frr_by_hand():
    d, same = scores(GENUINE, IMPOSTOR)
    # accept d <= 2.5: genuine 1, 2 accepted (3 rejected), impostor 2.5 accepted (4 rejected)
    assert app.far_frr(d, same, 2.5) == (0.5, pytest.approx(1 / 3))
    assert app.far_frr(d, same, 0.5) == (0.0, 1.0)
    assert app.far_frr(d, same, 10.0) == (1.0, 0.0)


def test_eer_interpolates_between_roc_points():
    # ROC points (FAR, FRR): (0, 1/3) at t=2 and (1/2, 1/3) at t=2.5; FRR - FAR goes 1/3 -> -1/6,
    # so the curves cross 2/3 of the way: FAR = FRR = 1/3 at t = 2 + 2/3 * 0.5
    d, same = scores(GENUINE, IMPOSTOR)
    rate, threshold = app.eer(d, same)
    assert rate == pytest.approx(1 / 3)
    assert threshold == pytest.approx(2 + 1 / 3)


def test_eer_on_a_roc_point_and_perfect_separation():
    d, same = scores([1.0, 2.0, 3.0, 4.0], [3.5, 5.0, 6.0, 7.0])
    rate, threshold = app.eer(d, same)  # at t=3.5 FAR = 1/4 and FRR = 1/4
    assert rate == pytest.approx(0.25) and threshold == pytest.approx(3.5)
    d, same = scores([1.0, 2.0], [3.0, 4.0])
    assert app.eer(d, same)[0] == 0.0
    assert app.auc(d, same) == 1.0


def test_calibrate_threshold_at_far():
    impostor = [float(v) for v in range(1, 11)]  # 1..10
    d, same = scores([0.5, 1.5, 2.5, 3.5], impostor)
    # FAR <= 0.2 allows 2 of 10 impostors: the threshold is the 2nd closest impostor
    t = app.calibrate_threshold(d, same, target_far=0.2)
    assert t == 2.0
    assert app.far_frr(d, same, t) == (0.2, 0.5)
    assert app.tar_at_far(d, same, 0.2) == 0.5
    # 1 % of 10 impostors is none: just below the closest one, nothing impostor accepted
    t = app.calibrate_threshold(d, same, target_far=0.01)
    assert t < 1.0 and t > 0.999
    assert app.far_frr(d, same, t)[0] == 0.0


def test_threshold_with_tied_impostors_never_exceeds_the_target():
    # ties at 2.0: accepting 2.0 accepts 3 of 5 impostors (60 %) > 40 %
    t = app.threshold_at_far([1.0, 2.0, 2.0, 2.0, 3.0], target_far=0.4)
    assert t == 1.0


def test_verification_report_uses_the_validation_threshold():
    val_d, val_same = scores([0.1, 0.2], [float(v) for v in range(1, 11)])
    test_d, test_same = scores([0.5, 1.5], [1.2, 3.0])
    rep = app.verification_report(val_d, val_same, test_d, test_same, target_far=0.1)
    assert rep["threshold"] == 1.0  # 1 of 10 validation impostors
    assert rep["test_far"] == 0.0 and rep["test_frr"] == 0.5  # 1.5 rejected, 1.2 rejected
    assert rep["auc"] == pytest.approx(0.75)  # 3 of 4 (genuine, impostor) orderings right
    for key in ("auc", "eer", "tar_at_far", "test_frr"):
        assert 0.0 <= rep[f"{key}_ci_low"] <= rep[key] <= rep[f"{key}_ci_high"] <= 1.0


def test_verification_intervals_shrink_with_more_pairs():
    rng = np.random.default_rng(0)

    def width(n):
        d, same = scores(list(rng.normal(1, 0.5, n)), list(rng.normal(2, 0.5, n)))
        rep = app.verification_report(d, same, d, same, target_far=0.1, n_boot=200)
        return rep["auc_ci_high"] - rep["auc_ci_low"]

    assert width(2000) < width(50) / 3  # ~ 1 / sqrt(n): 6x narrower


def test_roc_matches_far_frr():
    rng = np.random.default_rng(0)
    d, same = scores(list(rng.normal(1, 0.5, 50)), list(rng.normal(2, 0.5, 60)))
    far, tar, thr = app.roc(d, same)
    for i in range(1, len(thr)):
        f, r = app.far_frr(d, same, thr[i])
        assert f == pytest.approx(far[i]) and 1 - r == pytest.approx(tar[i])


def test_make_pairs_is_seeded_and_labelled_right():
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])  # class 3 has one image: never in a genuine pair
    a1, b1, s1 = app.make_pairs(y, 200, 300, seed=5)
    a2, b2, s2 = app.make_pairs(y, 200, 300, seed=5)
    assert np.array_equal(a1, a2) and np.array_equal(b1, b2) and np.array_equal(s1, s2)
    assert s1.sum() == 200 and (~s1).sum() == 300
    assert np.all(y[a1[s1]] == y[b1[s1]]) and np.all(a1[s1] != b1[s1])
    assert np.all(y[a1[~s1]] != y[b1[~s1]])
    assert 9 not in a1[s1]
    a3, _, _ = app.make_pairs(y, 200, 300, seed=6)
    assert not np.array_equal(a1, a3)
    # classes=(2,): genuine pairs inside class 2, impostors start from class 2
    a, b, s = app.make_pairs(y, 50, 50, seed=0, classes=[2])
    assert np.all(y[a] == 2) and np.all(y[b[s]] == 2) and np.all(y[b[~s]] != 2)


def test_pair_distances():
    a = np.array([[0.0, 0.0], [1.0, 0.0]])
    b = np.array([[3.0, 4.0], [0.0, 2.0]])
    assert np.allclose(app.pair_distances(a[1:], b[1:]), [np.sqrt(5)])
    assert np.allclose(app.pair_distances(a, b)[0], 5.0)
    assert np.allclose(app.pair_distances(a[1:], b[1:], metric="cosine"), [1.0])  # orthogonal


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: app.eer([1.0, 2.0], [True, True]), "genuine and impostor"),
        (lambda: app.eer([1.0, 2.0], [True]), "one flag per pair"),
        (lambda: app.eer([1.0, np.nan], [True, False]), "NaN"),
        (lambda: app.calibrate_threshold([1.0, 2.0], [True, False], target_far=1.5), "target_far"),
        (lambda: app.far_frr([1.0, 2.0], [2, 0], 1.0), "booleans"),
        (lambda: app.pair_distances(np.ones((2, 3)), np.ones((2, 4))), "same shape"),
        (lambda: app.pair_distances(np.ones((2, 3)), np.ones((2, 3)), metric="dot"), "metric"),
        (lambda: app.make_pairs(np.array([0, 0, 0]), 5, 5), "two classes"),
        (lambda: app.make_pairs(np.array([0, 1, 1]), 5, 5, classes=[7]), "no images"),
        (lambda: app.make_pairs(np.array([0, 1]), 0, 5), ">= 1"),
    ],
)
def test_bad_verification_input(call, message):
    with pytest.raises(ApplicationError, match=message):
        call()


# --- identification: a tiny worked gallery ------------------------------------------------------------

# 1-D embeddings: class 0 enrolled at 0 and 1, class 1 at 10
GALLERY = Gallery(np.array([[0.0], [1.0], [10.0]]), np.array([0, 0, 1]), ids=np.array(["a", "b", "c"]))


def test_gallery_identifies_and_rejects_beyond_the_threshold():
    queries = np.array([[1.4], [8.0], [5.0], [20.0]])
    labels, distances = GALLERY.identify(queries)  # closed set: everything gets a class
    assert labels.tolist() == [0, 1, 0, 1]
    assert np.allclose(distances, [0.4, 2.0, 4.0, 10.0])
    labels, _ = GALLERY.identify(queries, threshold=3.0)
    assert labels.tolist() == [0, 1, UNKNOWN, UNKNOWN]
    gallery = Gallery(GALLERY.embeddings, GALLERY.labels, threshold=0.5)
    assert gallery.identify(queries)[0].tolist() == [0, UNKNOWN, UNKNOWN, UNKNOWN]


def test_gallery_rank_is_the_best_match_order():
    ids, labels, distances = GALLERY.rank(np.array([0.8]))
    assert ids.tolist() == ["b", "a", "c"]
    assert labels.tolist() == [0, 0, 1]
    assert np.allclose(distances, [0.2, 0.8, 9.2])
    assert GALLERY.rank(np.array([0.8]), k=1)[0].tolist() == ["b"]


def test_open_set_rates_by_hand():
    known_q = np.array([[0.5], [9.0], [4.0], [6.0]])  # nearest: 0 (0.5), 1 (1.0), 0 (3.0), 1 (4.0)
    known_y = np.array([0, 1, 1, 1])  # the third is misidentified as class 0
    unknown_q = np.array([[5.0], [3.0], [30.0], [-2.5]])  # nearest distances 4, 2, 20, 2.5
    rates = app.open_set_rates(GALLERY, known_q, known_y, unknown_q, target_far=0.25)
    # one of four strangers may pass: threshold 2.0; accepted and right: 0.5 and 1.0 -> DIR 2/4
    assert rates["threshold"] == 2.0
    assert rates["far"] == 0.25
    assert rates["dir"] == 0.5
    assert rates["closed_set_accuracy"] == 0.75
    assert rates["identified"].tolist() == [True, True, False, False]


def test_enroll_draws_shots_per_class_seeded():
    y = np.repeat([0, 1, 2], 4)
    emb = np.arange(12, dtype=np.float32)[:, None]
    g1 = Gallery.enroll(emb, y, shots=2, classes=[0, 2], seed=3)
    g2 = Gallery.enroll(emb, y, shots=2, classes=[0, 2], seed=3)
    assert np.array_equal(g1.ids, g2.ids)
    assert sorted(g1.labels.tolist()) == [0, 0, 2, 2]
    assert np.array_equal(y[g1.ids], g1.labels) and np.array_equal(emb[g1.ids, 0], g1.embeddings[:, 0])
    assert g1.classes.tolist() == [0, 2]


def test_identification_and_unseen_reports_on_separable_clusters():
    rng = np.random.default_rng(0)
    centres = np.eye(4) * 10
    y_tr, y_te = np.repeat(np.arange(4), 10), np.repeat(np.arange(4), 5)
    e_tr = centres[y_tr] + rng.normal(0, 0.1, (40, 4))
    e_te = centres[y_te] + rng.normal(0, 0.1, (20, 4))
    rep = app.identification_report(e_tr, y_tr, e_te, y_te, shots=(1, 5), unknown_classes=1, episodes=3)
    assert rep["closed_1shot"] == 1.0 and rep["closed_5shot"] == 1.0 and rep["dir_5shot"] == 1.0
    assert rep["closed_1shot_se"] == 0.0 and rep["dir_5shot_ci_low"] == rep["dir_5shot_ci_high"] == 1.0
    report = unseen.unseen_class_report(
        {"train": e_tr, "test": e_te},
        {"train": y_tr, "test": y_te},
        unseen=(3,),
        shots=(1,),
        episodes=2,
        n_pairs=50,
    )
    assert report["auc"] == 1.0 and report["1shot"] == 1.0 and report["p_at_1"] == 1.0


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: GALLERY.identify(np.ones((2, 3))), "features"),
        (lambda: GALLERY.rank(np.array([1.0]), k=4), "k must be"),
        (lambda: Gallery(np.ones((2, 2)), np.array([0])), "one label per row"),
        (lambda: Gallery(np.ones((2, 2)), np.array([0.0, 1.0])), "integer"),
        (lambda: Gallery.enroll(np.ones((3, 2)), np.array([0, 0, 1]), shots=2), "fewer than shots"),
        (lambda: Gallery.enroll(np.ones((3, 2)), np.array([0, 0, 1]), shots=0), "shots must be"),
        (
            lambda: app.open_set_rates(GALLERY, np.ones((1, 1)), np.array([5]), np.ones((1, 1))),
            "not enrolled",
        ),
        (
            lambda: app.identification_report(
                np.ones((4, 2)), np.array([0, 0, 1, 1]), np.ones((2, 2)), np.array([0, 1]), unknown_classes=2
            ),
            "unknown_classes",
        ),
    ],
)
def test_bad_identification_input(call, message):
    with pytest.raises(ApplicationError, match=message):
        call()


# --- Dataset.subset -------------------------------------------------------------------------------


def tiny_dataset():
    def split(labels):
        y = np.array(labels, dtype=np.int64)
        return y.astype(np.float32)[:, None, None, None] * np.ones((1, 2, 2, 1), np.float32), y

    x_tr, y_tr = split([0, 1, 2, 3, 2, 1])
    x_va, y_va = split([3, 2, 1, 0])
    x_te, y_te = split([1, 3, 0, 2, 3])
    return Dataset("toy", "test", x_tr, y_tr, x_va, y_va, x_te, y_te, ["a", "b", "c", "d"])


def test_subset_keeps_only_those_classes_in_every_split():
    ds = tiny_dataset().subset([2, 0])
    assert ds.y_train.tolist() == [0, 2, 2] and ds.y_val.tolist() == [2, 0] and ds.y_test.tolist() == [0, 2]
    for which in ("train", "val", "test"):
        x, y = ds.split(which)
        assert np.array_equal(x[:, 0, 0, 0], y.astype(np.float32))  # images follow their labels
    assert ds.class_names == ["a", "b", "c", "d"] and ds.num_classes == 4  # ids are not remapped
    assert tiny_dataset().y_train.tolist() == [0, 1, 2, 3, 2, 1]  # the original is untouched


@pytest.mark.parametrize("classes", [[1], [0, 4], [-1, 2], []])
def test_subset_bad_classes(classes):
    with pytest.raises(DatasetError, match="subset needs"):
        tiny_dataset().subset(classes)


def test_the_applications_register_no_model_the_unseen_classes_study_does():
    import subprocess
    import sys

    code = (
        "import helpers.applications\n"
        "from helpers.registry import STUDY_MODELS\n"
        "assert not STUDY_MODELS, STUDY_MODELS\n"
        "from helpers.studies import unseen_classes\n"
        "print(sorted(STUDY_MODELS))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == [
        "['cnn_simple_v1_digits_0_7',",
        "'cnn_softmax_classifier',",
        "'cnn_softmax_classifier_digits_0_7']",
    ]


def test_registered_models_of_the_unseen_classes_study():
    from helpers.registry import build_training_model, get_spec

    assert get_spec(unseen.UNSEEN_MODEL).classes_per_batch == 8
    model, embedding = build_training_model(unseen.CLASSIFIER_MODEL, num_classes=10)
    assert embedding.output.shape[-1] == 64 and model.output.shape[-1] == 10
    assert embedding.layers[-1].name == "embedding"  # the penultimate layer of the classifier


def test_application_plots_draw_and_refuse_mismatched_input():
    from helpers import plots

    d, same = scores(GENUINE, IMPOSTOR)
    far, tar, _ = app.roc(d, same)
    fig = plots.plot_roc_curves({"a": (far, tar, 0.5), "b": (far, tar)})
    assert [line.get_label() for line in fig.axes[0].get_lines()][:2] == ["a (AUC 0.5000)", "b"]
    plots.plt.close(fig)
    images = np.zeros((2, 4, 4, 1))
    fig = plots.plot_query_neighbours(
        images,
        np.zeros((2, 3, 4, 4, 1)),
        np.ones((2, 3)),
        query_labels=[0, 1],
        neighbour_labels=[[0, 1, 0], [1, 1, 1]],
    )
    assert len(fig.axes) == 8 and fig.axes[2].title.get_color() == "red"  # query 0's 2nd match is a 1
    plots.plt.close(fig)
    with pytest.raises(ValueError, match="neighbour_images"):
        plots.plot_query_neighbours(images, np.zeros((2, 3, 4, 4, 1)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="same shape"):
        plots.plot_distance_histograms([1.0, 2.0], [True])


def test_identification_interval_and_standard_error_on_overlapping_clusters():
    rng = np.random.default_rng(0)
    y_tr, y_te = np.repeat(np.arange(4), 30), np.repeat(np.arange(4), 50)
    e_tr = np.eye(4)[y_tr] * 2 + rng.normal(0, 1, (120, 4))
    e_te = np.eye(4)[y_te] * 2 + rng.normal(0, 1, (200, 4))
    rep = app.identification_report(e_tr, y_tr, e_te, y_te, shots=(1,), unknown_classes=1, episodes=4)
    assert rep["closed_1shot_se"] == pytest.approx(rep["closed_1shot_std"] * np.sqrt(4 / 3) / 2)
    for key in ("closed_1shot", "dir_1shot"):
        assert rep[f"{key}_ci_low"] < rep[key] < rep[f"{key}_ci_high"]


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_gallery_on_the_flat_index_answers_to_the_bit_what_exact_knn_does(metric):
    from helpers import knn

    rng = np.random.default_rng(1)
    enrolled, queries = (
        rng.normal(size=(300, 8)).astype(np.float32),
        rng.normal(size=(9000, 8)).astype(np.float32),
    )
    labels = rng.integers(0, 10, 300)
    gallery = Gallery(enrolled, labels, metric=metric)
    predicted, distances, ids = gallery.nearest(queries)  # more queries than one FAISS block
    rows, d2 = knn.exact_knn(queries, enrolled, k=1, metric=metric)
    np.testing.assert_array_equal(ids, rows[:, 0])
    np.testing.assert_array_equal(predicted, labels[rows[:, 0]])
    expected = np.sqrt(np.maximum(d2[:, 0], 0.0)) if metric == "l2" else d2[:, 0]  # Euclidean, not squared
    np.testing.assert_array_equal(distances, expected.astype(np.float64))
