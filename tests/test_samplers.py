"""Sampler properties: labels by index, balance, determinism, mining, kNN positives, augmentation, errors."""

import numpy as np
import pytest

from helpers.augment import Augmenter, AugmentError
from helpers.samplers import (
    GeneratorError,
    PKBatchGenerator,
    SiamesePairGenerator,
    TripletClsGenerator,
    TripletGenerator,
)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(5), 40)
    rng.shuffle(y)
    # class-dependent mean so pixel-space neighbours are meaningful
    x = np.clip(rng.random((len(y), 8, 8, 1)) * 0.5 + y[:, None, None, None] / 10, 0, 1).astype(np.float32)
    return x, y


# --- outputs and labels --------------------------------------------------------------------------


def test_pair_shapes_dtypes_and_labels(data):
    x, y = data
    g = SiamesePairGenerator(x, y, batch_size=11, seed=3)
    assert len(g) == len(x) // 11
    for i in range(len(g)):
        (x0, x1), lab = g[i]
        assert x0.shape == x1.shape == (11, 8, 8, 1) and x0.dtype == np.float32
        assert lab.dtype == np.float32 and lab.shape == (11,)
        i0, i1, label = g.batch_indices(i)
        np.testing.assert_array_equal(lab, label)
        np.testing.assert_array_equal(x0, x[i0])
        np.testing.assert_array_equal(x1, x[i1])
        assert np.array_equal(y[i0] == y[i1], label == 1)
        assert (label == 1).sum() == 5 and (label == 0).sum() == 6  # odd batch: floor / ceil
        assert np.all(i0[label == 1] != i1[label == 1])
    (_, _), lab = SiamesePairGenerator(x, y, batch_size=16)[0]
    assert lab.sum() == 8


def test_triplet_shapes_and_labels(data):
    x, y = data
    g = TripletGenerator(x, y, batch_size=32, seed=1)
    for i in range(len(g)):
        (a, p, n), target = g[i]
        ia, ip, in_ = g.batch_indices(i)
        assert a.shape == p.shape == n.shape == (32, 8, 8, 1)
        assert target.dtype == np.float32 and np.all(target == 0) and target.shape == (32,)
        np.testing.assert_array_equal(a, x[ia])
        np.testing.assert_array_equal(n, x[in_])
        assert np.all(y[ia] == y[ip]) and np.all(ia != ip) and np.all(y[ia] != y[in_])


def test_triplet_cls_targets(data):
    x, y = data
    g = TripletClsGenerator(x, y, batch_size=16, seed=2)
    (a, p, n), (zeros, ya) = g[3]
    ia, _, _ = g.batch_indices(3)
    assert ya.dtype == np.int32 and zeros.dtype == np.float32
    np.testing.assert_array_equal(ya, y[ia])
    assert np.all(zeros == 0)


def test_pk_batches(data):
    x, y = data
    g = PKBatchGenerator(x, y, classes_per_batch=3, samples_per_class=4, seed=0)
    assert len(g) == len(x) // 12
    images, labels = g[0]
    assert images.shape == (12, 8, 8, 1) and labels.dtype == np.int32
    idx = g.batch_indices(0)
    np.testing.assert_array_equal(labels, y[idx])
    per_class = labels.reshape(3, 4)
    assert len(set(per_class[:, 0])) == 3 and np.all(per_class == per_class[:, :1])
    assert all(len(set(row)) == 4 for row in idx.reshape(3, 4))  # without replacement (>= K images)
    # a class smaller than K is sampled with replacement
    small_y = np.array([0, 0, 1, 1, 1, 1, 1, 1])
    g2 = PKBatchGenerator(
        np.zeros((8, 2, 2, 1), np.float32), small_y, classes_per_batch=2, samples_per_class=4
    )
    _, lab = g2[0]
    assert sorted(np.bincount(lab)) == [4, 4]


# --- determinism ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [SiamesePairGenerator, TripletGenerator, PKBatchGenerator])
def test_determinism_epochs_and_resume(data, cls):
    x, y = data
    kw = dict(classes_per_batch=3, samples_per_class=4) if cls is PKBatchGenerator else dict(batch_size=16)
    g1, g2, g3 = cls(x, y, seed=7, **kw), cls(x, y, seed=7, **kw), cls(x, y, seed=8, **kw)
    first = [
        np.concatenate(g1.batch_indices(i)) if cls is not PKBatchGenerator else g1.batch_indices(i)
        for i in range(3)
    ]

    def flat(g, i):
        return np.concatenate(g.batch_indices(i)) if cls is not PKBatchGenerator else g.batch_indices(i)

    for i in range(3):
        np.testing.assert_array_equal(first[i], flat(g2, i))  # same seed -> same batches
    assert not np.array_equal(first[0], flat(g3, 0))  # other seed -> other batches
    assert not np.array_equal(first[0], flat(g1, 1))  # batches differ within an epoch
    g1.on_epoch_end()
    g1.on_epoch_end()
    epoch2 = flat(g1, 0)
    assert not np.array_equal(first[0], epoch2)  # a new epoch draws new batches
    g2.set_epoch(2)  # resumed run
    np.testing.assert_array_equal(epoch2, flat(g2, 0))
    # images too, including augmentation
    if cls is not PKBatchGenerator:
        ga, gb = cls(x, y, seed=7, augment=True, **kw), cls(x, y, seed=7, augment=True, **kw)
        ga.set_epoch(2)
        gb.set_epoch(2)
        np.testing.assert_array_equal(ga[1][0][0], gb[1][0][0])


# --- feature-space sampling ----------------------------------------------------------------------


def _other_class_ranks(emb, y, a, n):
    """Rank of d(a, n) among a's other-class candidates (0 = nearest)."""
    d = ((emb[a][:, None] - emb[None]) ** 2).sum(-1)
    d[y[a][:, None] == y[None]] = np.inf
    dn = d[np.arange(len(a)), n]
    return (d < dn[:, None]).sum(1)


def test_hard_mining_picks_among_nearest_other_class(data):
    x, y = data
    emb = np.random.default_rng(1).normal(size=(len(x), 4)).astype(np.float32)
    g = TripletGenerator(x, y, batch_size=64, embeddings=emb, mining="hard", mining_pool=3, seed=0)
    for i in range(2):
        a, p, n = g.batch_indices(i)
        assert np.all(y[a] != y[n]) and np.all(y[a] == y[p]) and np.all(a != p)
        assert np.all(_other_class_ranks(emb, y, a, n) < 3)
    gp = SiamesePairGenerator(x, y, batch_size=64, embeddings=emb, mining="hard", mining_pool=3)
    i0, i1, lab = gp.batch_indices(0)
    assert np.all(_other_class_ranks(emb, y, i0[lab == 0], i1[lab == 0]) < 3)


def test_semi_hard_mining_rule(data):
    x, y = data
    emb = np.random.default_rng(2).normal(size=(len(x), 4)).astype(np.float32)
    pool = 4
    g = TripletGenerator(x, y, batch_size=64, embeddings=emb, mining="semi-hard", mining_pool=pool, seed=0)
    a, p, n = g.batch_indices(0)
    d = ((emb[a][:, None] - emb[None]) ** 2).sum(-1)
    d[y[a][:, None] == y[None]] = np.inf
    d_ap = ((emb[a] - emb[p]) ** 2).sum(-1)
    d_an = d[np.arange(len(a)), n]
    # the generator looks at its candidate table (the mining_pool * 8 nearest other-class samples)
    depth = g.neg_table.shape[1]
    assert depth == pool * 8
    rank = _other_class_ranks(emb, y, a, n)
    in_table = np.sort(d, axis=1)[:, depth - 1]
    has_semi = (d <= in_table[:, None]) & (d > d_ap[:, None])
    has_semi = has_semi.any(1)
    assert 0 < has_semi.sum() < len(a)  # both branches exercised
    # farther than the positive, and among the `pool` nearest such candidates
    assert np.all(d_an[has_semi] > d_ap[has_semi])
    rank_semi = ((d > d_ap[:, None]) & (d < d_an[:, None])).sum(1)
    assert np.all(rank_semi[has_semi] < pool)
    # no candidate farther than the positive: hard-mining fallback (pool nearest)
    assert np.all(rank[~has_semi] < pool)


def test_embed_fn_refresh(data):
    x, y = data
    calls = []

    def embed(images):
        calls.append(len(images))
        return images.reshape(len(images), -1)[:, :6] + len(calls)

    g = TripletGenerator(x, y, batch_size=8, embed_fn=embed, mining="hard", refresh_every=2)
    assert len(calls) == 1
    g.on_epoch_end()  # epoch 1: not due
    assert len(calls) == 1
    g.on_epoch_end()  # epoch 2: refresh
    assert len(calls) == 2
    a, _, n = g.batch_indices(0)
    assert np.all(y[a] != y[n])


def test_positive_neighbors_respects_knn(data):
    x, y = data
    g = TripletGenerator(x, y, batch_size=64, positive_neighbors=True, seed=0)
    assert g.positive_neighbors == 5
    flat = x.reshape(len(x), -1).astype(np.float64)
    for i in range(2):
        a, p, _ = g.batch_indices(i)
        assert np.all(a != p) and np.all(y[a] == y[p])
        for ai, pi in zip(a, p, strict=True):
            same = np.flatnonzero((y == y[ai]) & (np.arange(len(y)) != ai))
            d = ((flat[same] - flat[ai]) ** 2).sum(1)
            knn = same[np.argsort(d, kind="stable")[:5]]
            assert pi in knn
    emb = np.random.default_rng(4).normal(size=(len(x), 3)).astype(np.float32)
    ge = SiamesePairGenerator(x, y, batch_size=32, positive_neighbors=2, embeddings=emb)
    i0, i1, lab = ge.batch_indices(0)
    for ai, pi in zip(i0[lab == 1], i1[lab == 1], strict=True):
        same = np.flatnonzero((y == y[ai]) & (np.arange(len(y)) != ai))
        knn = same[np.argsort(((emb[same] - emb[ai]) ** 2).sum(1))[:2]]
        assert pi in knn


# --- augmentation --------------------------------------------------------------------------------


def test_augmentation_keeps_range_shape_and_changes_images(data):
    x, y = data
    aug = Augmenter(shift=2, rotation=10, noise=0.05)
    rng = np.random.default_rng(0)
    out = aug(x[:16], rng)
    assert out.shape == x[:16].shape and out.dtype == x.dtype
    assert out.min() >= 0.0 and out.max() <= 1.0 and not np.allclose(out, x[:16])
    (a, p, n), _ = TripletGenerator(x, y, batch_size=8, augment=True)[0]
    assert a.shape == (8, 8, 8, 1) and 0.0 <= a.min() and a.max() <= 1.0
    # zero shift, rotation and noise is the identity (the warp is exact at integer coordinates)
    img = np.zeros((1, 7, 7, 1), np.float32)
    img[0, 3, 3, 0] = 1.0
    moved = Augmenter(shift=0, rotation=0, noise=0)(img, rng)
    np.testing.assert_array_equal(moved, img)


def test_bilinear_warp_matches_scipy_inside_the_image_and_is_zero_far_outside():
    from scipy import ndimage

    from helpers.augment import NUMPY_OPS, bilinear_sample

    rng = np.random.default_rng(1)
    x = rng.random((6, 9, 9, 2)).astype(np.float32)
    sy, sx = rng.uniform(-3, 11, size=(2, 6, 9, 9)).astype(np.float32)
    coords = np.empty((4, 6, 9, 9, 2), np.float32)
    coords[0] = np.arange(6)[:, None, None, None]
    coords[1], coords[2] = sy[..., None], sx[..., None]
    coords[3] = np.arange(2)
    reference = ndimage.map_coordinates(x, coords, order=1, mode="constant", cval=0.0)
    got = bilinear_sample(x, sy, sx, xp=NUMPY_OPS)
    inside = (sy >= 0) & (sy <= 8) & (sx >= 0) & (sx <= 8)
    np.testing.assert_allclose(got[inside], reference[inside], atol=1e-6)
    far = (sy <= -1) | (sy >= 9) | (sx <= -1) | (sx >= 9)
    assert far.any() and np.all(got[far] == 0.0)


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda x, y: TripletGenerator(x, np.zeros(len(x), int)), "two classes"),
        (lambda x, y: TripletGenerator(x, np.r_[y[:-1], 99]), "class 99 has a single image"),
        (lambda x, y: SiamesePairGenerator(x, np.r_[y[:-1], 99]), "class 99"),
        (lambda x, y: TripletGenerator(x[:-1], y), "different lengths"),
        (
            lambda x, y: TripletGenerator(
                np.where(np.arange(len(x))[:, None, None, None] == 3, np.nan, x), y
            ),
            "NaN",
        ),
        (lambda x, y: TripletGenerator(x, y, batch_size=0), "batch_size"),
        (lambda x, y: SiamesePairGenerator(x, y, batch_size=-4), "batch_size"),
        (
            lambda x, y: PKBatchGenerator(x, y, classes_per_batch=6, samples_per_class=2),
            "classes_per_batch=6",
        ),
        (lambda x, y: TripletGenerator(x, y, mining="hard"), "embeddings"),
        (lambda x, y: TripletGenerator(x, y, mining="nope"), "mining"),
    ],
)
def test_bad_input_errors(data, make, match):
    x, y = data
    with pytest.raises(GeneratorError, match=match):
        make(x, y)
    assert issubclass(GeneratorError, ValueError)


def test_keras_fit_consumes_generator(data):
    import keras

    x, y = data
    g = TripletGenerator(x, y, batch_size=8, steps_per_epoch=2)
    inp = [keras.Input((8, 8, 1)) for _ in range(3)]
    dense = keras.layers.Dense(2)
    outs = [dense(keras.layers.Flatten()(t)) for t in inp]
    model = keras.Model(inp, keras.layers.Lambda(lambda ts: keras.ops.stack(ts, axis=1))(outs))
    from helpers.losses import TripletLoss

    model.compile(optimizer="sgd", loss=TripletLoss(1.0))
    hist = model.fit(g, epochs=2, verbose=0)
    assert len(hist.history["loss"]) == 2 and g.epoch >= 1


def test_generator_plots_return_figures(data):
    import matplotlib.pyplot as plt

    from helpers import plots

    x, y = data
    names = [f"c{i}" for i in range(5)]
    for fn, g in (
        (plots.plot_pairs, SiamesePairGenerator(x, y, batch_size=8)),
        (plots.plot_triplets, TripletGenerator(x, y, batch_size=8)),
        (plots.plot_triplets_cls, TripletClsGenerator(x, y, batch_size=8)),
    ):
        fig = fn(g, names, n=4)
        assert isinstance(fig, plt.Figure)
        titles = " ".join(ax.get_title() for ax in fig.axes)
        assert "c" in titles
        plt.close(fig)
    # a ready batch with explicit classes
    (x0, x1), sim = SiamesePairGenerator(x, y, batch_size=8)[0]
    fig = plots.plot_pairs(((x0, x1), sim), names, n=3, pair_classes=(y[:8], y[:8]))
    plt.close(fig)


def test_mine_positives_picks_far_same_class(data):
    x, y = data
    emb = np.random.default_rng(5).normal(size=(len(x), 3)).astype(np.float32)
    g = TripletGenerator(
        x, y, batch_size=32, embeddings=emb, mining="hard", mining_pool=3, mine_positives=True
    )
    a, p, n = g.batch_indices(0)
    assert np.all(y[a] == y[p]) and np.all(a != p)
    for ai, pi in zip(a, p, strict=True):
        same = np.flatnonzero((y == y[ai]) & (np.arange(len(y)) != ai))
        far = same[np.argsort(-((emb[same] - emb[ai]) ** 2).sum(1))[:3]]
        assert pi in far


def test_interpolation_matrix_is_the_hand_computed_linear_one():
    from helpers.augment import elastic_field, interpolation_matrix

    # 5 pixels, 2 control points at pixels 0 and 4: weights (1, 0), (3/4, 1/4), ..., (0, 1)
    expected = np.array([[1, 0], [0.75, 0.25], [0.5, 0.5], [0.25, 0.75], [0, 1]], np.float32)
    np.testing.assert_allclose(interpolation_matrix(5, 2), expected)
    # 7 pixels, 4 control points at pixels 0, 2, 4, 6: every other row is a control point
    weights = interpolation_matrix(7, 4)
    np.testing.assert_allclose(weights[[0, 2, 4, 6]], np.eye(4), atol=1e-6)
    np.testing.assert_allclose(weights.sum(1), 1.0, atol=1e-6)
    # a field of corner values 0, 1 (top) and 2, 3 (bottom) is the bilinear surface between them
    field = elastic_field(np.array([[0.0, 1.0], [2.0, 3.0]], np.float32), 3, 3)
    np.testing.assert_allclose(field, [[0, 0.5, 1], [1, 1.5, 2], [2, 2.5, 3]], atol=1e-6)


def test_elastic_distortion_moves_strokes_by_its_size_and_is_seeded():
    img = np.zeros((64, 28, 28, 1), np.float32)
    img[:, 8:20, 13:15] = 1.0  # a vertical bar
    plain = Augmenter(shift=0, rotation=0, noise=0)
    np.testing.assert_array_equal(plain(img, np.random.default_rng(0)), img)  # elastic 0: identity

    def moved(elastic, seed=0):
        out = Augmenter(shift=0, rotation=0, noise=0, elastic=elastic)(img, np.random.default_rng(seed))
        assert out.shape == img.shape and out.min() >= 0.0 and out.max() <= 1.0
        return out

    small, large = np.abs(moved(0.5) - img).mean(), np.abs(moved(2.0) - img).mean()
    assert 0.0 < small < large  # a larger field displaces the bar further
    np.testing.assert_array_equal(moved(1.0, seed=3), moved(1.0, seed=3))
    assert not np.array_equal(moved(1.0, seed=3), moved(1.0, seed=4))


@pytest.mark.parametrize(
    "kwargs, message",
    [({"elastic": -1.0}, "elastic must be >= 0"), ({"elastic_grid": 1}, "elastic_grid must be >= 2")],
)
def test_augmenter_rejects_bad_strengths(kwargs, message):
    with pytest.raises(AugmentError, match=message):
        Augmenter(**kwargs)
