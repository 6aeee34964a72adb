"""Study 09 (4 vs 9): shift transform, the subset, the nearest-neighbour samplers, the graded pair
loss, the training hooks and the separation measurements."""

import numpy as np
import pytest

from helpers import losses, registry, samplers
from helpers.knn import exact_knn
from helpers.samplers import GeneratorError
from helpers.studies import contrastive_4_vs_9 as c49

# --- shift transform ---------------------------------------------------------------------------


def test_shift_images_moves_columns_and_fills_the_background():
    x = np.arange(1, 13, dtype=np.float32).reshape(1, 3, 4)  # rows [1 2 3 4] [5 6 7 8] [9 10 11 12]
    right = c49.shift_images(x, 1)
    np.testing.assert_array_equal(right[0], [[0, 1, 2, 3], [0, 5, 6, 7], [0, 9, 10, 11]])
    left = c49.shift_images(x, -2, fill=-1.0)
    np.testing.assert_array_equal(left[0], [[3, 4, -1, -1], [7, 8, -1, -1], [11, 12, -1, -1]])
    np.testing.assert_array_equal(c49.shift_images(x, 0), x)
    # channels last: only the width axis moves
    x4 = x[..., None]
    np.testing.assert_array_equal(c49.shift_images(x4, 1)[..., 0], right)


def test_shift_images_rejects_a_shift_as_wide_as_the_image():
    with pytest.raises(ValueError, match="not smaller than the image width"):
        c49.shift_images(np.zeros((2, 3, 4)), 4)
    with pytest.raises(ValueError, match=r"\(n, H, W\)"):
        c49.shift_images(np.zeros((3, 4)), 1)


# --- the subset -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def study():
    return c49.load_4_vs_9("mnist", source="bundled")


def test_subset_holds_only_4s_and_9s_normalised_with_its_own_statistics(study):
    d = study.data
    assert d.class_names == ["4", "9"]
    for split in ("train", "val", "test"):
        _, y = d.split(split)
        assert set(np.unique(y)) == {0, 1}
    # the training split is normalised with its own mean / std: mean 0, std 1 after normalisation
    assert abs(float(d.x_train.mean())) < 1e-4 and abs(float(d.x_train.std()) - 1) < 1e-4
    np.testing.assert_allclose(study.normalize(study.raw["test"]), d.x_test, atol=1e-6)
    counts = study.counts()
    assert [r["split"] for r in counts] == ["train", "val", "test"]
    assert all(r["4"] + r["9"] == r["total"] for r in counts)


def test_shifted_test_digits_are_the_raw_digits_shifted_then_normalised(study):
    x, y, s = study.shifted("test", (0, -6, 3))
    n = len(study.data.y_test)
    assert len(x) == 3 * n and list(np.unique(s)) == [-6, 0, 3]
    np.testing.assert_array_equal(y[:n], study.data.y_test)
    np.testing.assert_allclose(x[n : 2 * n], study.normalize(c49.shift_images(study.raw["test"], -6)))
    # the background that enters is the normalised zero, not 0
    assert np.allclose(x[n : 2 * n, :, -6:], -study.mean / study.std)
    shifted = study.with_shifted_training((-3, 3))
    assert len(shifted.x_train) == 3 * len(study.data.x_train)
    assert len(shifted.x_val) == 3 * len(study.data.x_val)
    np.testing.assert_array_equal(shifted.x_test, study.data.x_test)


# --- samplers ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy():
    """Two classes of 30 random 6x6 images with zero background, normalised as the study does."""
    rng = np.random.default_rng(3)
    raw = rng.random((60, 6, 6, 1)).astype(np.float32) * (rng.random((60, 6, 6, 1)) > 0.4)
    y = np.repeat([0, 1], 30)
    x = (raw - raw.mean()) / raw.std()
    # the 5 cosine nearest same-class neighbours on the raw pixels, computed independently
    nn = {}
    for c in (0, 1):
        members = np.flatnonzero(y == c)
        idx, _ = exact_knn(raw[members], raw[members], 5, metric="cosine", exclude=np.arange(len(members)))
        for row, i in enumerate(members):
            nn[int(i)] = set(members[idx[row]].tolist())
    return x, y, nn


def _pairs(gen, batches=4):
    return [
        np.concatenate(parts) for parts in zip(*(gen.batch_indices(i) for i in range(batches)), strict=False)
    ]


@pytest.mark.parametrize("negatives", c49.NEGATIVE_REGIMES)
def test_positives_are_among_the_anchors_5_nearest_same_class_neighbours(toy, negatives):
    x, y, nn = toy
    gen = c49.NeighbourPairGenerator(x, y, negatives=negatives, batch_size=64, steps_per_epoch=4, seed=1)
    i0, i1, label = _pairs(gen)
    pos = label == 1
    assert pos.sum() == 4 * 32
    assert all(int(b) in nn[int(a)] for a, b in zip(i0[pos], i1[pos], strict=False))
    assert not np.any(i0[pos] == i1[pos])


def test_regime_1_negatives_are_always_the_other_digit(toy):
    x, y, _ = toy
    i0, i1, label = _pairs(
        c49.NeighbourPairGenerator(x, y, negatives="other_digit", batch_size=64, steps_per_epoch=4, seed=2)
    )
    neg = label == 0
    assert set(np.unique(label)) == {0, 1}
    assert np.all(y[i0[neg]] != y[i1[neg]])


def test_regime_2_negatives_are_never_a_nearest_neighbour(toy):
    x, y, nn = toy
    i0, i1, label = _pairs(
        c49.NeighbourPairGenerator(x, y, negatives="not_neighbor", batch_size=64, steps_per_epoch=8, seed=3),
        batches=8,
    )
    neg = label == 0
    assert set(np.unique(label)) == {0, 1}
    assert not any(int(b) in nn[int(a)] for a, b in zip(i0[neg], i1[neg], strict=False))
    assert not np.any(i0[neg] == i1[neg])
    same = y[i0[neg]] == y[i1[neg]]
    # about half the negatives are same-digit non-neighbours (8 batches x 32 negatives)
    assert 0.35 < same.mean() < 0.65


def test_graded_pairs_mark_same_digit_non_neighbours_as_near(toy):
    x, y, nn = toy
    i0, i1, label = _pairs(
        c49.NeighbourPairGenerator(x, y, negatives="graded", batch_size=64, steps_per_epoch=4, seed=4)
    )
    assert set(np.unique(label)) == {c49.PAIR_DISSIMILAR, c49.PAIR_SIMILAR, c49.PAIR_NEAR}
    near, far = label == c49.PAIR_NEAR, label == c49.PAIR_DISSIMILAR
    assert np.all(y[i0[near]] == y[i1[near]])
    assert not any(int(b) in nn[int(a)] or a == b for a, b in zip(i0[near], i1[near], strict=False))
    assert np.all(y[i0[far]] != y[i1[far]])


def test_the_same_seed_gives_the_same_pairs_and_images(toy):
    x, y, _ = toy
    a = c49.NeighbourPairGenerator(x, y, negatives="graded", batch_size=16, seed=7)
    b = c49.NeighbourPairGenerator(x, y, negatives="graded", batch_size=16, seed=7)
    for u, v in zip(a.batch_indices(1), b.batch_indices(1), strict=False):
        np.testing.assert_array_equal(u, v)
    (x0, _), lab = a[0]
    np.testing.assert_array_equal(lab, b[0][1])
    assert x0.shape == (16, 6, 6, 1) and lab.dtype == np.float32


def test_neighbour_triplets_have_nn_positives_and_other_digit_negatives(toy):
    x, y, nn = toy
    gen = c49.neighbour_triplets(x, y, batch_size=64, seed=5)
    a, p, n = gen.batch_indices(0)
    assert all(int(b) in nn[int(i)] for i, b in zip(a, p, strict=False))
    assert np.all(y[a] != y[n])


def test_sampler_input_errors_name_the_fix(toy):
    x, y, _ = toy
    with pytest.raises(GeneratorError, match="negatives must be one of"):
        c49.NeighbourPairGenerator(x, y, negatives="hard")
    with pytest.raises(GeneratorError, match="positive_neighbors is fixed"):
        c49.NeighbourPairGenerator(x, y, positive_neighbors=3)
    small_y = np.array([0] * 6 + [1] * 54)
    with pytest.raises(GeneratorError, match="no image outside an anchor's 5 neighbours"):
        c49.NeighbourPairGenerator(x, small_y, negatives="not_neighbor")


# --- graded pair loss ---------------------------------------------------------------------------------


def test_graded_contrastive_matches_hand_computed_values():
    x0 = np.zeros((6, 2), np.float32)
    # distances 0.25, 0.25, 0.25, 0.5, 0.5, 1.0
    x1 = np.array([[0.15, 0.2]] * 3 + [[0.3, 0.4]] * 2 + [[0.6, 0.8]], np.float32)
    kind = np.array([1, 0, 2, 0, 2, 0])
    got = np.asarray(c49.graded_contrastive(x0, x1, kind, margin=1.0, near_margin=0.5))
    # 0.5 d^2 | 0.5 (1 - d)^2 | 0.5 (0.5 - d)^2 | 0.5 (0.5)^2 | 0 (d = near margin) | 0 (d = margin)
    np.testing.assert_allclose(got, [0.03125, 0.28125, 0.03125, 0.125, 0.0, 0.0], atol=1e-6)
    # without near pairs it is the contrastive loss
    two = np.array([1, 0, 1, 0, 1, 0])
    np.testing.assert_allclose(
        np.asarray(c49.graded_contrastive(x0, x1, two)),
        np.asarray(losses.contrastive(x0, x1, two)),
        atol=1e-7,
    )
    wrapped = c49.GradedContrastiveLoss(margin=1.0, near_margin=0.5)(kind, np.stack([x0, x1], axis=1))
    assert float(wrapped) == pytest.approx(np.mean([0.03125, 0.28125, 0.03125, 0.125, 0, 0]), abs=1e-6)
    assert (
        c49.GradedContrastiveLoss.from_config(
            wrapped_cfg := {"margin": 2.0, "near_margin": 0.5}
        ).get_config()["near_margin"]
        == wrapped_cfg["near_margin"]
    )


def test_graded_contrastive_rejects_a_near_margin_above_the_margin():
    with pytest.raises(ValueError, match="near_margin must be in"):
        c49.graded_contrastive(np.zeros((1, 2)), np.ones((1, 2)), [2], margin=0.5, near_margin=1.0)
    with pytest.raises(ValueError, match="near_margin must be in"):
        c49.GradedContrastiveLoss(margin=0.5, near_margin=1.0)


# --- registry hooks and models ------------------------------------------------------------------------


def test_reference_net_has_the_reference_layers_and_a_2d_output():
    net = c49.reference_net_4_vs_9()
    assert net.output_shape == (None, 2)
    # conv 16x(25+1) + conv 64x(16x9+1) + dense 1600x256+256 + 256x64+64 + 64x2+2 + 4 PReLU slopes
    assert net.count_params() == 416 + 9280 + 409856 + 16448 + 130 + 4


def test_study_models_build_with_their_generator_kind_and_loss():
    triplet, _ = registry.build_training_model("c49_nn_triplet", num_classes=2)
    graded, _ = registry.build_training_model("c49_nn_graded", num_classes=2)
    assert len(triplet.inputs) == 3 and len(graded.inputs) == 2
    loss, _ = registry.make_loss(registry.get_spec("c49_nn_graded"))
    assert isinstance(loss, c49.GradedContrastiveLoss) and loss.near_margin == 0.5 and loss.margin == 1.0
    assert registry.get_spec("c49_inlab_shifted").config()["train_shifts"] == c49.SHIFTS  # in the fingerprint
    with pytest.raises(ValueError, match="core generator kind"):
        samplers.register_sampler("pairs", 2, lambda *a: None)


def test_train_builds_the_regime_sampler_and_caches_the_model(study, tmp_path):
    from helpers.training import make_generators

    data = c49.training_data("c49_nn_regime2", study)
    train_gen, val_gen = make_generators(
        registry.get_spec("c49_nn_regime2"), data, batch_size=16, steps_per_epoch=2
    )
    assert isinstance(train_gen, c49.NeighbourPairGenerator) and train_gen.negatives == "not_neighbor"
    assert len(val_gen.x) == len(data.x_val)
    kw = {"epochs": 1, "steps_per_epoch": 2, "batch_size": 16, "cache_dir": tmp_path, "verbose": 0}
    emb, record = c49.train_study_model("c49_nn_graded", study, **kw)
    assert not record["from_cache"] and emb.output_shape == (None, 2)
    _, again = c49.train_study_model("c49_nn_graded", study, **kw)
    assert again["from_cache"]
    with pytest.raises(ValueError, match="unknown study model"):
        c49.train_study_model("c49_nope", study)


# --- measurements -------------------------------------------------------------------------------------


def test_separation_metrics_see_four_clusters_and_a_collapsed_shift():
    rng = np.random.default_rng(0)
    shifts = np.array([0, -6, -3, 3, 6])
    digit = np.tile(np.repeat([0, 1], 20), len(shifts))
    shift = np.repeat(shifts, 40)
    centre = np.stack([digit * 10.0, shift * 1.0], axis=1)  # digits far apart, each shift its own place
    views = {
        "train": (
            rng.normal(0, 0.1, (40, 2)) + np.stack([np.repeat([0, 10.0], 20), np.zeros(40)], 1),
            np.repeat([0, 1], 20),
            np.zeros(40, int),
        ),
        "test": (centre[shift == 0] + rng.normal(0, 0.1, (40, 2)), digit[shift == 0], shift[shift == 0]),
        "test_shifted": (centre + rng.normal(0, 0.1, centre.shape), digit, shift),
    }
    m = c49.separation_metrics(views)
    assert m["knn_plain"] == 1.0 and m["knn_shifted"] == 1.0 and m["knn_shifted_loo"] == 1.0
    assert m["four_cluster_sil"] > 0.8 and m["shift_sil_6"] > 0.9
    # the same digits with the shift erased: shift groups overlap
    flat = centre.copy()
    flat[:, 1] = 0
    views["test_shifted"] = (flat + rng.normal(0, 0.1, centre.shape), digit, shift)
    m = c49.separation_metrics(views)
    assert m["sil_shifted"] > 0.9 and abs(m["shift_sil_6"]) < 0.1
    # shifted digits of one class moved onto the other class's plain place: the train references
    # call them wrong, their own neighbours (all of their class) call them right
    swapped = centre.copy()
    swapped[:, 0] = np.where(shift == 0, digit * 10.0, (1 - digit) * 10.0)
    swapped[:, 1] = np.where(shift == 0, 0.0, 50.0)
    views["test_shifted"] = (swapped + rng.normal(0, 0.1, centre.shape), digit, shift)
    m = c49.separation_metrics(views)
    assert m["knn_shifted"] == 0.0 and m["knn_shifted_loo"] == 1.0


def test_shift_views_figure_has_five_panels_and_rejects_non_2d_embeddings():
    from helpers import plots
    from helpers.studies.plots import contrastive_4_vs_9 as study_plots

    rng = np.random.default_rng(1)
    digit, shift = np.tile([0, 1], 10), np.repeat([-6, 0, 6, -6, 6], 4)
    views = {
        "train": (rng.normal(size=(20, 2)), digit, np.zeros(20, int)),
        "test": (rng.normal(size=(20, 2)), digit, np.zeros(20, int)),
        "test_shifted": (rng.normal(size=(20, 2)), digit, shift),
    }
    fig = study_plots.plot_shift_views(views)
    assert len(fig.axes) == 5
    assert [t.get_text() for t in fig.axes[4].get_legend().get_texts()] == ["4-6", "4+6", "9-6", "9+6"]
    plots.plt.close(fig)
    views["test"] = (rng.normal(size=(20, 3)), digit, np.zeros(20, int))
    with pytest.raises(ValueError, match="the study's embeddings are 2-D"):
        study_plots.plot_shift_views(views)
