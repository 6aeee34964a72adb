"""Losses against hand-worked values and brute-force numpy references; Keras wrappers in compile + fit.

Runs on the TensorFlow backend; ``tf.GradientTape`` is used here only, to check gradients.
"""

import math

import keras
import numpy as np
import pytest
from keras import ops

from helpers import losses as L


def np_(t):
    return np.asarray(ops.convert_to_numpy(t))


# --- hand-worked values --------------------------------------------------------------------------


def test_contrastive_hand_values():
    # x0 = (0, 0), x1 = (3, 4): d = 5
    #   similar (y=1):               0.5 * 25                   = 12.5
    #   dissimilar, margin 6 (y=0):  0.5 * max(0, 6 - 5)^2      = 0.5
    #   dissimilar, margin 1 (y=0):  0.5 * max(0, 1 - 5)^2 -> 0 = 0.0
    x0 = np.zeros((3, 2), np.float32)
    x1 = np.array([[3, 4]] * 3, np.float32)
    y = np.array([1, 0, 0], np.float32)
    out = np.concatenate(
        [
            np_(L.contrastive(x0[:2], x1[:2], y[:2], margin=6.0)),
            np_(L.contrastive(x0[2:], x1[2:], y[2:], margin=1.0)),
        ]
    )
    np.testing.assert_allclose(out, [12.5, 0.5, 0.0], rtol=1e-6)


def test_triplet_hand_values():
    # a = (0, 0), p = (1, 0), n = (0, 2)
    #   squared:   d(a,p) = 1, d(a,n) = 4 -> margin 4: max(0, 1 - 4 + 4) = 1; margin 1: 0
    #   Euclidean: d(a,p) = 1, d(a,n) = 2 -> margin 1.5: 1 - 2 + 1.5 = 0.5
    a, p, n = (np.array([v], np.float32) for v in ([0, 0], [1, 0], [0, 2]))
    assert np_(L.triplet(a, p, n, margin=4.0))[0] == pytest.approx(1.0)
    assert np_(L.triplet(a, p, n, margin=1.0))[0] == pytest.approx(0.0)
    assert np_(L.triplet(a, p, n, margin=1.5, squared=False))[0] == pytest.approx(0.5, rel=1e-6)


def test_triplet_l2_norm_hand_values():
    # a = (2, 0) -> (1, 0); p = (0, 3) -> (0, 1); n = (-1, 0) -> (-1, 0)
    # d(a,p) = sqrt(2), d(a,n) = 2 -> margin 1: sqrt(2) - 2 + 1 = 0.41421
    # squared: 2 - 4 + 3 = 1 (margin 3)
    a, p, n = (np.array([v], np.float32) for v in ([2, 0], [0, 3], [-1, 0]))
    for fn in (L.triplet_l2_norm, L.triplet_l2_norm_safe):
        assert np_(fn(a, p, n, margin=1.0))[0] == pytest.approx(math.sqrt(2) - 1, rel=1e-5)
        assert np_(fn(a, p, n, margin=3.0, squared=True))[0] == pytest.approx(1.0, rel=1e-5)


def test_triplet_center_reg_hand_values():
    # normalised a = (1, 0), p = (0, 1), n = (-1, 0); midpoint c = (0.5, 0.5)
    # triplet part, margin 1.5: sqrt(2) - 2 + 1.5 = 0.91421
    # center part: ||a - c||^2 = ||p - c||^2 = 0.5 -> mean 0.5 -> 0.05 * 0.5 = 0.025
    a, p, n = (np.array([v], np.float32) for v in ([3, 0], [0, 0.5], [-2, 0]))
    out = np_(L.triplet_center_reg(a, p, n, margin=1.5, center_reg_weight=0.05))[0]
    assert out == pytest.approx(math.sqrt(2) - 0.5 + 0.025, rel=1e-5)


# --- plain numpy references on random inputs -----------------------------------------------------


def test_pair_and_triplet_losses_match_numpy():
    rng = np.random.default_rng(0)
    a, p, n = rng.normal(size=(3, 16, 5)).astype(np.float32)
    y = rng.integers(0, 2, 16).astype(np.float32)
    d = np.linalg.norm(a - p, axis=1)
    ref = 0.5 * y * d**2 + 0.5 * (1 - y) * np.maximum(0, 2.0 - d) ** 2
    np.testing.assert_allclose(np_(L.contrastive(a, p, y, margin=2.0)), ref, rtol=1e-5, atol=1e-6)
    dap, dan = ((a - p) ** 2).sum(1), ((a - n) ** 2).sum(1)
    np.testing.assert_allclose(
        np_(L.triplet(a, p, n, 1.0)), np.maximum(0, dap - dan + 1.0), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        np_(L.triplet(a, p, n, 1.0, squared=False)),
        np.maximum(0, np.sqrt(dap) - np.sqrt(dan) + 1.0),
        rtol=1e-5,
        atol=1e-5,
    )
    na, np_p, nn = (v / np.linalg.norm(v, axis=1, keepdims=True) for v in (a, p, n))
    ref = np.maximum(0, np.linalg.norm(na - np_p, axis=1) - np.linalg.norm(na - nn, axis=1) + 1.0)
    np.testing.assert_allclose(np_(L.triplet_l2_norm_safe(a, p, n, 1.0)), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np_(L.triplet_l2_norm(a, p, n, 1.0)), ref, rtol=1e-5, atol=1e-5)


def ref_batch_hard(labels, emb, margin, squared):
    b = len(labels)
    out = np.zeros(b)
    for i in range(b):
        hp, hn, has_p, has_n = 0.0, np.inf, False, False
        for j in range(b):
            d = ((emb[i] - emb[j]) ** 2).sum()
            d = d if squared else np.sqrt(d)
            if labels[j] == labels[i] and j != i:
                hp, has_p = max(hp, d), True
            elif labels[j] != labels[i]:
                hn, has_n = min(hn, d), True
        out[i] = max(0.0, hp - hn + margin) if has_p and has_n else 0.0
    return out


def ref_semi_hard(labels, emb, margin, squared):
    b = len(labels)
    dist = np.array([[((emb[i] - emb[j]) ** 2).sum() for j in range(b)] for i in range(b)])
    dist = dist if squared else np.sqrt(dist)
    out = np.zeros(b)
    for a in range(b):
        negs = [dist[a, k] for k in range(b) if labels[k] != labels[a]]
        pair_losses = []
        for p in range(b):
            if p == a or labels[p] != labels[a]:
                continue
            semi = [dn for dn in negs if dn > dist[a, p]]
            chosen = min(semi) if semi else max(negs)
            pair_losses.append(max(0.0, dist[a, p] - chosen + margin))
        out[a] = np.mean(pair_losses) if pair_losses and negs else 0.0
    return out


@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batch_losses_match_brute_force(seed, squared):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, 14)
    labels[0] = 9  # an anchor with no positive -> 0
    emb = rng.normal(size=(14, 3)).astype(np.float32)
    margin = 0.5 if not squared else 2.0
    np.testing.assert_allclose(
        np_(L.batch_hard_triplet(labels, emb, margin, squared)),
        ref_batch_hard(labels, emb, margin, squared),
        atol=1e-4,
    )
    np.testing.assert_allclose(
        np_(L.batch_semi_hard_triplet(labels, emb, margin, squared)),
        ref_semi_hard(labels, emb, margin, squared),
        atol=1e-4,
    )
    assert np_(L.batch_hard_triplet(labels, emb, margin, squared))[0] == 0.0


def test_semi_hard_negatives_with_ties_and_a_pk_batch_match_brute_force():
    # the sort-based search must keep the strict "d(a, n) > d(a, p)": integer coordinates make many
    # distances equal; and a P x K batch as the registry trains on (4 x 6), shuffled
    rng = np.random.default_rng(7)
    labels = rng.permutation(np.repeat(np.arange(4), 6))
    for emb in (
        rng.integers(-2, 3, size=(24, 2)).astype(np.float32),
        rng.normal(size=(24, 5)).astype(np.float32),
    ):
        for squared in (False, True):
            np.testing.assert_allclose(
                np_(L.batch_semi_hard_triplet(labels, emb, 0.5, squared)),
                ref_semi_hard(labels, emb, 0.5, squared),
                atol=1e-5,
            )


def test_semi_hard_center_regularisation_adds_the_hand_computed_pull():
    # two classes on the unit circle, a quarter turn apart inside each class: |a - p|^2 = 2, so each
    # anchor's squared distance to its pair's midpoint is 2 / 4 = 0.5
    emb = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], np.float32)
    labels = np.array([0, 0, 1, 1])
    plain = np_(L.batch_semi_hard_triplet(labels, emb, 0.2))
    pulled = np_(L.batch_semi_hard_triplet(labels, emb, 0.2, center_reg_weight=0.3))
    np.testing.assert_allclose(pulled - plain, 0.3 * 0.5, atol=1e-6)


def test_batch_losses_single_class_give_zero():
    emb = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    labels = np.zeros(5, int)
    assert np.all(np_(L.batch_hard_triplet(labels, emb)) == 0)
    assert np.all(np_(L.batch_semi_hard_triplet(labels, emb)) == 0)


# --- gradients at zero distance ------------------------------------------------------------------


def _grad(fn, *args):
    import tensorflow as tf  # test-only: gradients on the TensorFlow backend

    tensors = [tf.Variable(a) for a in args]
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(fn(*tensors))
    return [g.numpy() for g in tape.gradient(loss, tensors) if g is not None]


def test_safe_variants_have_finite_gradients_at_zero_distance():
    a = np.array([[1.0, 2.0], [0.5, -1.0]], np.float32)
    n = np.array([[-1.0, 0.0], [2.0, 2.0]], np.float32)
    cases = [
        (lambda a, p, n: L.triplet_l2_norm_safe(a, p, n), (a, a.copy(), n)),
        (lambda a, p, n: L.triplet_center_reg(a, p, n), (a, a.copy(), n)),
        (lambda a, p, n: L.triplet(a, p, n, squared=False), (a, a.copy(), n)),
        (lambda a, p: L.contrastive(a, p, np.array([1.0, 0.0], np.float32)), (a, a.copy())),
    ]
    for fn, args in cases:
        grads = _grad(fn, *args)
        assert grads and all(np.isfinite(g).all() for g in grads)
    dup = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], np.float32)  # coincident pairs
    labels = np.array([0, 0, 1, 1])
    for fn in (L.batch_hard_triplet, L.batch_semi_hard_triplet):
        (g,) = _grad(lambda e, fn=fn: fn(labels, e), dup)
        assert np.isfinite(g).all()


def test_unsafe_l2_norm_is_nan_at_zero_distance_documented():
    # the reference variant (plain sqrt) - kept for fidelity; the safe one exists because of this
    a = np.array([[1.0, 2.0]], np.float32)
    grads = _grad(lambda a, p, n: L.triplet_l2_norm(a, p, n, margin=5.0), a, a.copy(), -a)
    assert any(np.isnan(g).any() for g in grads)


# --- Keras wrappers ------------------------------------------------------------------------------


def test_wrappers_match_functions_and_serialise():
    rng = np.random.default_rng(3)
    pair = rng.normal(size=(6, 2, 4)).astype(np.float32)
    trip = rng.normal(size=(6, 3, 4)).astype(np.float32)
    emb = rng.normal(size=(6, 4)).astype(np.float32)
    y = np.array([1, 0, 1, 0, 1, 1], np.float32)
    labels = np.array([0, 0, 1, 1, 2, 2])
    checks = [
        (L.ContrastiveLoss(2.0), y, pair, L.contrastive(pair[:, 0], pair[:, 1], y, 2.0)),
        (L.TripletLoss(1.0), y, trip, L.triplet(*trip.transpose(1, 0, 2), 1.0)),
        (L.TripletLoss(1.0, "l2"), y, trip, L.triplet_l2_norm(*trip.transpose(1, 0, 2), 1.0)),
        (
            L.TripletLoss(1.0, "l2_safe", squared=True),
            y,
            trip,
            L.triplet_l2_norm_safe(*trip.transpose(1, 0, 2), 1.0, True),
        ),
        (
            L.TripletLoss(1.5, "center", center_reg_weight=0.1),
            y,
            trip,
            L.triplet_center_reg(*trip.transpose(1, 0, 2), 1.5, 0.1),
        ),
        (L.BatchHardTripletLoss(0.3), labels, emb, L.batch_hard_triplet(labels, emb, 0.3)),
        (
            L.BatchSemiHardTripletLoss(0.3, squared=True),
            labels,
            emb,
            L.batch_semi_hard_triplet(labels, emb, 0.3, True),
        ),
        (
            L.BatchSemiHardTripletLoss(0.3, center_reg_weight=0.5),
            labels,
            emb,
            L.batch_semi_hard_triplet(labels, emb, 0.3, center_reg_weight=0.5),
        ),
    ]
    for loss, yt, yp, ref in checks:
        assert float(np_(loss(yt, yp))) == pytest.approx(float(np.mean(np_(ref))), rel=1e-5, abs=1e-6)
        clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
        assert type(clone) is type(loss) and clone.get_config() == loss.get_config()
        assert float(np_(clone(yt, yp))) == pytest.approx(float(np_(loss(yt, yp))), rel=1e-6)


def test_triplet_loss_rejects_bad_variant_and_shape():
    with pytest.raises(ValueError, match="variant"):
        L.TripletLoss(variant="nope")
    with pytest.raises(ValueError, match="batch, 3, d"):
        L.TripletLoss()(np.zeros(2), np.zeros((2, 2, 4), np.float32))


def _fit(model, loss, x, y, **compile_kwargs):
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=loss, **compile_kwargs)
    hist = model.fit(x, y, batch_size=4, epochs=1, steps_per_epoch=2, verbose=0)
    return hist.history["loss"]


@pytest.mark.parametrize(
    "loss,k",
    [
        (L.ContrastiveLoss(1.0), 2),
        (L.TripletLoss(1.0), 3),
        (L.TripletLoss(1.0, "l2_safe"), 3),
        (L.TripletLoss(1.5, "center"), 3),
        (L.BatchHardTripletLoss(), None),
        (L.BatchSemiHardTripletLoss(), None),
    ],
)
def test_wrappers_train_one_step(loss, k):
    rng = np.random.default_rng(0)
    shape = (8, 5) if k is None else (8, k, 5)
    x = rng.normal(size=shape).astype(np.float32)
    y = np.array([0, 0, 1, 1, 0, 1, 1, 0])
    inp = keras.Input(shape[1:])
    model = keras.Model(
        inp, keras.layers.Dense(3)(inp)
    )  # Dense acts on the last axis: stacked branches share it
    hist = _fit(model, loss, x, y)
    assert len(hist) == 1 and np.isfinite(hist[0])


def test_triplet_with_classification_compiles_and_fits():
    kwargs = L.triplet_with_classification(L.TripletLoss(1.0, "l2_safe"), 0.5, 1.0)
    assert kwargs["loss_weights"] == [0.5, 1.0]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3, 5)).astype(np.float32)
    y_cls = rng.integers(0, 3, 8).astype(np.int32)
    inp = keras.Input((3, 5))
    emb = keras.layers.Dense(4)(inp)
    probs = keras.layers.Dense(3, activation="softmax")(keras.layers.Lambda(lambda t: t[:, 0])(emb))
    model = keras.Model(inp, [emb, probs])
    model.compile(optimizer="sgd", **kwargs)
    hist = model.fit(
        x, (np.zeros(8, np.float32), y_cls), batch_size=4, epochs=1, steps_per_epoch=2, verbose=0
    )
    assert np.isfinite(hist.history["loss"][0])


def _numpy_batch_contrastive(labels, emb, margin):
    n = len(labels)
    out = np.zeros(n)
    for i in range(n):
        pos = [0.5 * np.sum((emb[i] - emb[j]) ** 2) for j in range(n) if j != i and labels[j] == labels[i]]
        neg = [
            0.5 * max(0.0, margin - np.linalg.norm(emb[i] - emb[k])) ** 2
            for k in range(n)
            if labels[k] != labels[i]
        ]
        out[i] = (np.mean(pos) if pos else 0.0) + (np.mean(neg) if neg else 0.0)
    return out


def test_batch_contrastive_by_hand():
    # 1-d points: a=0 (class 0), b=1 (class 0), c=3 (class 1); margin 2
    # anchor a: positive b -> 0.5*1 = 0.5; negative c (d=3) -> max(0, 2-3)=0 -> 0.5
    # anchor b: positive a -> 0.5; negative c (d=2) -> 0 -> 0.5
    # anchor c: no positive -> 0; negatives a (d=3) -> 0, b (d=2) -> 0 -> 0
    emb = np.array([[0.0], [1.0], [3.0]], np.float32)
    got = keras.ops.convert_to_numpy(L.batch_contrastive(np.array([0, 0, 1]), emb, margin=2.0))
    np.testing.assert_allclose(got, [0.5, 0.5, 0.0], atol=1e-6)
    # margin 4: a's negative term 0.5*(4-3)^2 = 0.5; b's 0.5*(4-2)^2 = 2; c: mean(0.5, 2) = 1.25
    got = keras.ops.convert_to_numpy(L.batch_contrastive(np.array([0, 0, 1]), emb, margin=4.0))
    np.testing.assert_allclose(got, [1.0, 2.5, 1.25], atol=1e-6)


def test_batch_contrastive_matches_brute_force_and_wrapper():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, size=24)
    emb = rng.normal(size=(24, 5)).astype(np.float32)
    expected = _numpy_batch_contrastive(labels, emb, margin=3.0)
    got = keras.ops.convert_to_numpy(L.batch_contrastive(labels, emb, margin=3.0))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    wrapped = float(keras.ops.convert_to_numpy(L.BatchContrastiveLoss(margin=3.0)(labels, emb)))
    assert wrapped == pytest.approx(expected.mean(), rel=1e-4)


def _numpy_batch_all(labels, emb, margin, squared):
    n = len(labels)
    dist = lambda i, j: np.sum((emb[i] - emb[j]) ** 2) if squared else np.linalg.norm(emb[i] - emb[j])  # noqa: E731
    out = np.zeros(n)
    for a in range(n):
        vals = [
            max(0.0, dist(a, p) - dist(a, q) + margin)
            for p in range(n)
            if p != a and labels[p] == labels[a]
            for q in range(n)
            if labels[q] != labels[a]
        ]
        out[a] = np.mean(vals) if vals else 0.0
    return out


def test_batch_all_triplet_by_hand():
    # 1-d points a=0, b=1 (class 0), c=3 (class 1); squared distances, margin 10
    # anchor a: (p=b, n=c): 1 - 9 + 10 = 2; anchor b: (p=a, n=c): 1 - 4 + 10 = 7; anchor c: no positive -> 0
    emb = np.array([[0.0], [1.0], [3.0]], np.float32)
    got = keras.ops.convert_to_numpy(L.batch_all_triplet(np.array([0, 0, 1]), emb, margin=10.0))
    np.testing.assert_allclose(got, [2.0, 7.0, 0.0], atol=1e-5)


@pytest.mark.parametrize("squared", [True, False])
def test_batch_all_triplet_matches_brute_force_and_wrapper(squared):
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, size=15)
    emb = rng.normal(size=(15, 4)).astype(np.float32)
    expected = _numpy_batch_all(labels, emb, 1.5, squared)
    got = keras.ops.convert_to_numpy(L.batch_all_triplet(labels, emb, margin=1.5, squared=squared))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    wrapped = float(
        keras.ops.convert_to_numpy(L.BatchAllTripletLoss(margin=1.5, squared=squared)(labels, emb))
    )
    assert wrapped == pytest.approx(expected.mean(), rel=1e-4)


@pytest.mark.parametrize("squared", [True, False])
def test_sorted_batch_all_has_the_gradients_of_every_triplet(squared):
    # against the loss as it was (one relu per triplet, kept in the benchmark that times both); float64,
    # so the sums' order does not matter: values and gradients agree to round-off, on a P x K batch and
    # on one with uneven classes and a class of one image (no positive)
    from benchmarks.archive.semi_hard_loss import cube_batch_all_triplet as _every_triplet_batch_all

    rng = np.random.default_rng(11)
    for labels in (np.repeat(np.arange(5), 6), np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])):
        emb = rng.normal(size=(len(labels), 3))
        (got,) = _grad(lambda e, labels=labels: L.batch_all_triplet(labels, e, 1.5, squared), emb)
        (want,) = _grad(lambda e, labels=labels: _every_triplet_batch_all(labels, e, 1.5, squared), emb)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(
            np_(L.batch_all_triplet(labels, emb, 1.5, squared)),
            np_(_every_triplet_batch_all(labels, emb, 1.5, squared)),
            rtol=1e-9,
            atol=1e-12,
        )


def test_batch_all_counts_a_negative_exactly_at_the_margin_as_zero():
    # anchor 0 at 0, positive at 1, negative at 2; squared distances 1 and 4: margin 3 puts the
    # negative exactly on the threshold (1 + 3 = 4), so that triplet adds 0; margin 3.5 adds 0.5
    emb = np.array([[0.0], [1.0], [2.0]])
    labels = np.array([0, 0, 1])
    assert np_(L.batch_all_triplet(labels, emb, 3.0))[0] == pytest.approx(0.0, abs=1e-12)
    assert np_(L.batch_all_triplet(labels, emb, 3.5))[0] == pytest.approx(0.5)
