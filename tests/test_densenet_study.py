"""DenseNet study (notebook 08): the architecture, the classifier through the shared cached and
resumable training path, the official split of ``load_dataset``, and the study's small functions."""

from __future__ import annotations

import dataclasses
import gzip
from pathlib import Path

import keras
import numpy as np
import pytest

from helpers import registry, samplers, training
from helpers.data import (
    CACHE_FORMAT_VERSION,
    DEFAULT_FASHION_DIR,
    Dataset,
    DatasetError,
    load_dataset,
    stratified_subset,
)
from helpers.studies import densenet_fashion_mnist as ds
from helpers.training.callbacks import TimeBudget

# --- the architecture --------------------------------------------------------------------------------


def test_densenet_channels_follow_the_reference_arithmetic():
    model = ds.densenet_bc()
    shape = lambda name: tuple(model.get_layer(name).output.shape[1:])  # noqa: E731
    # reference: 24 -> block1 (6 x 12) 96 @28 -> 48 @14 -> block2 (12 x 12) 192 -> 96 @7 -> block3 (8 x 12) 192
    assert shape("stem_conv") == (28, 28, 24)
    assert shape("block1_layer6_concat") == (28, 28, 96)
    assert shape("transition1_pool") == (14, 14, 48)
    assert shape("block2_layer12_concat") == (14, 14, 192)
    assert shape("transition2_pool") == (7, 7, 96)
    assert shape("block3_layer8_concat") == (7, 7, 192)
    assert tuple(model.output.shape) == (None, 192)


def test_densenet_convolution_weights_match_a_hand_count():
    model = ds.densenet_bc()
    expected, k = 3 * 3 * 1 * 24, 12
    channels = 24
    for n_layers, transition in ((6, True), (12, True), (8, False)):
        for _ in range(n_layers):
            expected += channels * 4 * k + 3 * 3 * 4 * k * k  # 1x1 bottleneck, 3x3 growth
            channels += k
        if transition:
            expected += channels * (channels // 2)
            channels //= 2
    conv = sum(
        int(np.prod(w.shape))
        for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D)
        for w in layer.weights
    )
    assert conv == expected
    assert 300_000 < model.count_params() < 320_000  # ~0.3M, DenseNet-BC k=12 at this depth


def test_densenet_maps_inputs_to_minus_one_one_and_uses_he_init():
    model = ds.densenet_bc()
    rescale = keras.Model(model.input, model.get_layer("to_minus1_1").output)
    out = keras.ops.convert_to_numpy(rescale(np.stack([np.zeros((28, 28, 1)), np.ones((28, 28, 1))])))
    np.testing.assert_allclose(out[0], -1.0)
    np.testing.assert_allclose(out[1], 1.0)
    assert isinstance(model.get_layer("stem_conv").kernel_initializer, keras.initializers.HeNormal)


def test_small_densenet_is_half_the_depth_at_half_the_resolution():
    model = ds.densenet_bc_small()
    shape = lambda name: tuple(model.get_layer(name).output.shape[1:])  # noqa: E731
    # 24 @28 -> pool @14 -> block1 (3 x 12) 60 -> 30 @7 -> block2 (6 x 12) 102 -> 51 @3 -> block3 (4 x 12) 99
    assert shape("stem_conv") == (28, 28, 24) and shape("stem_pool") == (14, 14, 24)
    assert shape("block1_layer3_concat") == (14, 14, 60)
    assert shape("transition2_pool") == (3, 3, 51)
    assert tuple(model.output.shape) == (None, ds.SMALL_CLASSIFIER.embedding_dim) == (None, 99)
    assert model.count_params() == 116_838
    spec = ds.SMALL_CLASSIFIER
    assert (spec.augment, spec.lr_schedule, spec.monitor) == (False, "cosine", "val_accuracy")
    assert "stem_pool" not in [layer.name for layer in ds.densenet_bc().layers]  # the reference: none


def test_densenet_refuses_a_wrong_embedding_dim():
    with pytest.raises(ValueError, match="192-d features"):
        ds.densenet_bc(embedding_dim=64)


def test_study_specs_and_the_six_fingerprints():
    assert ds.CLASSIFIER.monitor == "val_accuracy" and ds.CLASSIFIER.monitor_mode == "max"
    assert (ds.CLASSIFIER.plateau_factor, ds.CLASSIFIER.plateau_patience) == (0.5, 3)
    assert ds.CLASSIFIER.augment_params == {"shift": 2.8, "rotation": 10.0, "noise": 0.0}
    assert "monitor" in ds.CLASSIFIER.config()
    for spec in registry.MODELS.values():  # study fields at their defaults leave the six caches valid
        assert not set(registry.STUDY_FIELDS) & set(spec.config())
    with pytest.raises(ValueError, match="needs loss='cross_entropy'"):
        dataclasses.replace(ds.HEAD, monitor="val_accuracy")
    training_model, _ = registry.build_training_model(ds.CLASSIFIER.name)
    augment = training_model.get_layer("device_augment")
    assert (augment.shift, augment.rotation, augment.noise) == (2.8, 10.0, 0.0)
    assert training_model.output.shape[-1] == 10


# --- the classifier through helpers.training.train --------------------------------------------------------


def tiny_densenet(input_shape=(28, 28, 1), embedding_dim=None):
    return ds.densenet_bc(input_shape, growth_rate=4, blocks=(1, 1), initial_channels=8)


TINY = registry.register(
    dataclasses.replace(ds.CLASSIFIER, name="test_tiny_densenet", builder=tiny_densenet, embedding_dim=None)
)
TINY_PARAMS = {"epochs": 1, "steps_per_epoch": 2, "batch_size": 20}


def _tiny_data(n_per_class=6, seed=0):
    rng = np.random.default_rng(seed)
    parts = {}
    for split, n in (("train", n_per_class), ("val", 2), ("test", 2)):
        y = np.repeat(np.arange(10), n)
        parts[f"x_{split}"] = rng.random((len(y), 28, 28, 1), dtype=np.float32)
        parts[f"y_{split}"] = y
    return Dataset(name="tiny", source="synthetic", class_names=[str(c) for c in range(10)], **parts)


class _Interrupt(Exception):
    pass


class _StopAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise _Interrupt()


def test_classifier_trains_caches_and_resumes_through_the_shared_path(tmp_path):
    data = _tiny_data()
    params = {**TINY_PARAMS, "epochs": 2}
    # killed after epoch 1 (the backup of that epoch is written, the run is not complete)
    with pytest.raises(_Interrupt):
        ds.train_classifier(
            data, params, cache_dir=tmp_path, name=TINY.name, callbacks=[_StopAfterFirstEpoch()]
        )
    assert not training.cache_paths(TINY.name, tmp_path, data.name)["history"].exists()
    features, _, record = ds.train_classifier(data, params, cache_dir=tmp_path, name=TINY.name)
    assert not record["from_cache"] and record["resumed_from_epoch"] == 1
    assert record["history"]["epoch"] == [0, 1] and "val_accuracy" in record["history"]
    # a second call loads the cache: same weights, no training
    features2, classifier2, again = ds.train_classifier(data, params, cache_dir=tmp_path, name=TINY.name)
    assert again["from_cache"] and again["fingerprint"] == record["fingerprint"]
    feats = ds.feature_dataset(features2, data)
    np.testing.assert_allclose(feats.x_test, keras.ops.convert_to_numpy(features(data.x_test)), atol=1e-5)
    # the class head applied to cached features predicts what the whole classifier predicts
    expected = np.argmax(keras.ops.convert_to_numpy(classifier2(data.x_test, training=False)), axis=1)
    np.testing.assert_array_equal(ds.predict_classes(classifier2, feats.x_test), expected)


def test_time_budget_stops_cleanly_after_the_first_batch():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    budget = TimeBudget(0.0)
    history = model.fit(
        np.zeros((40, 3)), np.zeros((40, 2)), batch_size=4, epochs=3, verbose=0, callbacks=[budget]
    )
    assert budget.stopped and len(history.history["loss"]) == 1


# --- the Siamese head on feature vectors ---------------------------------------------------------------------


def test_triplet_generator_accepts_feature_vectors():
    x = np.arange(40 * 5, dtype=np.float32).reshape(40, 5)
    y = np.repeat(np.arange(4), 10)
    (a, p, n), target = samplers.TripletGenerator(x, y, batch_size=8, seed=1)[0]
    assert a.shape == p.shape == n.shape == (8, 5) and target.shape == (8,)
    label = lambda v: y[(v[:, 0] // 5).astype(int)]  # noqa: E731  (row i starts at 5 i)
    assert (label(a) == label(p)).all() and (label(a) != label(n)).all()


def test_head_trains_on_vectors_and_is_l2_normalised(tmp_path):
    rng = np.random.default_rng(0)
    parts = {}
    for split in ("train", "val", "test"):
        y = np.repeat(np.arange(10), 4)
        parts[f"x_{split}"], parts[f"y_{split}"] = rng.normal(size=(40, 192)).astype(np.float32), y
    feats = Dataset(name="feats", source="synthetic", class_names=[str(c) for c in range(10)], **parts)
    head, _ = ds.train_head(feats, {"head_epochs": 1, "head_steps": 2, "head_batch": 16}, cache_dir=tmp_path)
    emb = ds.representations(np.zeros((40, 28, 28, 1)), feats.x_test, head)
    np.testing.assert_allclose(np.linalg.norm(emb["Siamese embeddings"], axis=1), 1.0, atol=1e-5)
    assert emb["raw pixels"].shape == (40, 784) and emb["Siamese embeddings"].shape == (40, 128)
    with pytest.raises(ValueError, match="feature vectors"):
        ds.representations(np.zeros((3, 28, 28, 1)), feats.x_test, head)


# --- the study's small functions ------------------------------------------------------------------------------


def test_classification_report_and_confused_pairs_by_hand():
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 0, 2, 1])
    report = ds.classification_report(y, pred, ["a", "b", "c"])
    assert report["accuracy"] == pytest.approx(3 / 6)
    assert 0.0 <= report["accuracy_ci_low"] < 0.5 < report["accuracy_ci_high"] <= 1.0
    perfect = ds.classification_report(y, y, ["a", "b", "c"])  # no error to resample: a point interval
    assert (perfect["accuracy"], perfect["accuracy_ci_low"], perfect["accuracy_ci_high"]) == (1.0, 1.0, 1.0)
    np.testing.assert_array_equal(report["confusion"], [[1, 1, 0], [1, 1, 0], [0, 1, 1]])
    b = report["per_class"][1]  # predicted b 3 times, 1 right; 2 true b, 1 found
    assert (b["precision"], b["recall"], b["f1"]) == pytest.approx((1 / 3, 1 / 2, 0.4))
    pairs = ds.confused_pairs(report["confusion"], ["a", "b", "c"], top=2)
    assert pairs == [{"pair": "a / b", "errors": 2}, {"pair": "b / c", "errors": 1}]
    with pytest.raises(ValueError, match="differ in shape"):
        ds.classification_report(y, pred[:3], ["a", "b", "c"])


def test_order_matches_reference():
    def rows(s):
        return [{"representation": n, "silhouette": v} for n, v in zip(ds.REPRESENTATIONS, s, strict=False)]

    assert ds.order_matches_reference(rows((0.1, 0.3, 0.5)))
    assert not ds.order_matches_reference(rows((0.1, 0.5, 0.3)))


def test_compare_on_separable_clusters():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    centres = np.eye(3, 8) * 10
    good = (centres[y] + rng.normal(scale=0.1, size=(60, 8))).astype(np.float32)
    noise = rng.normal(size=(60, 8)).astype(np.float32)
    rows = ds.compare({"good": good, "noise": noise}, y, {"good": good, "noise": noise}, y)
    by = {r["representation"]: r for r in rows}
    assert by["good"]["3nn_accuracy"] == 1.0 and by["good"]["map_at_r"] == pytest.approx(1.0)
    assert by["good"]["silhouette"] > 0.9 > by["noise"]["silhouette"]


def test_subset_is_stratified_and_seeded():
    data = _tiny_data(n_per_class=6)
    small = stratified_subset(data, train=30, seed=3)
    assert np.bincount(small.y_train).tolist() == [3] * 10
    np.testing.assert_array_equal(small.x_train, stratified_subset(data, train=30, seed=3).x_train)
    assert len(small.y_val) == len(data.y_val)


def test_profiles():
    from helpers import profiles

    def settings(profile, **overrides):
        return profiles.settings("08_densenet_fashion_mnist", profile, **overrides)

    assert settings("smoke")["epochs"] == 1
    assert settings("full")["classifier"] == ds.CLASSIFIER.name  # the reference network
    for profile in ("smoke", "default"):  # the CPU profiles train the smaller variant
        assert settings(profile)["classifier"] == ds.SMALL_CLASSIFIER.name
    assert settings("full", epochs=3)["epochs"] == 3
    with pytest.raises(ValueError, match="unknown profile"):
        settings("huge")


# --- load_dataset(split="official") ------------------------------------------------------------------------------


def _write_idx(path: Path, array: np.ndarray):
    dims = np.array(array.shape, dtype=">u4").tobytes()
    header = bytes([0, 0, 0x08, array.ndim]) + dims
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_official_split_on_a_fixture(tmp_path):
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (50, 28, 28), dtype=np.uint8)
    y_train = np.repeat(np.arange(10), 5)
    x_test = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    y_test = np.tile(np.arange(10), 2)
    for stem, array in (
        ("train-images-idx3-ubyte", x_train),
        ("train-labels-idx1-ubyte", y_train),
        ("t10k-images-idx3-ubyte", x_test),
        ("t10k-labels-idx1-ubyte", y_test),
    ):
        _write_idx(tmp_path / f"{stem}.gz", array)
    data = load_dataset(
        "fashion_mnist",
        source="idx",
        fashion_dir=tmp_path,
        split="official",
        val_fraction=0.2,
        cache_dir=tmp_path / "cache",
        verbose=False,
    )
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (40, 10, 20)
    assert np.bincount(data.y_val).tolist() == [1] * 10  # stratified 20 % of 5 per class
    np.testing.assert_array_equal(data.y_test, y_test)  # the official test set, in its order
    np.testing.assert_allclose(data.x_test[..., 0], x_test / 255.0, atol=1e-7)
    # train + val are exactly the official train images
    seen = np.concatenate([data.x_train, data.x_val]).reshape(50, -1)
    assert sorted(map(bytes, (seen * 255).round().astype(np.uint8))) == sorted(
        map(bytes, x_train.reshape(50, -1))
    )
    assert (tmp_path / "cache" / f"fashion_mnist-idx-seed42-official20-v{CACHE_FORMAT_VERSION}.npz").exists()
    again = load_dataset(
        "fashion_mnist",
        source="idx",
        fashion_dir=tmp_path,
        split="official",
        val_fraction=0.2,
        cache_dir=tmp_path / "cache",
        verbose=False,
    )
    np.testing.assert_array_equal(again.x_val, data.x_val)


def test_official_split_bad_input(tmp_path):
    with pytest.raises(DatasetError, match="unknown split 'shuffled'"):
        load_dataset("mnist", split="shuffled", use_cache=False, verbose=False)
    with pytest.raises(DatasetError, match="no official train/test split"):
        load_dataset("mnist", source="bundled", split="official", use_cache=False, verbose=False)


@pytest.mark.skipif(not Path(DEFAULT_FASHION_DIR).is_dir(), reason="dataset-fashion-mnist is not installed")
def test_official_split_on_the_debian_files():
    data = load_dataset("fashion_mnist", source="idx", split="official", use_cache=False, verbose=False)
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (54_000, 6_000, 10_000)
    assert np.bincount(data.y_val).tolist() == [600] * 10
    assert np.bincount(data.y_test).tolist() == [1000] * 10
