"""Tests of helpers.data: readers on small fixture files, the auto chain, the cache and the errors.

The network is never used: an autouse fixture makes kagglehub and keras.datasets fail like they do
offline; tests that need a working remote source patch it to return fixture data.
"""

from __future__ import annotations

import gzip
import struct
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import data
from helpers.data import DatasetError

N_PER_CLASS = 20  # fixture images per class in the train files (plus 10 per class in the test files)
FASHION_DIR = Path(data.DEFAULT_FASHION_DIR)
HAS_FASHION = all(
    (FASHION_DIR / (stem + ".gz")).is_file() or (FASHION_DIR / stem).is_file()
    for stem in data._IDX_FILES.values()
)


# ------------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------------


class FakeConnectionError(Exception):
    pass


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Every remote source fails the way it does without network."""
    import kagglehub
    import keras
    import requests

    def kaggle_down(*args, **kwargs):
        raise requests.exceptions.ConnectionError("Max retries exceeded (NameResolutionError)")

    def keras_down(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/x.npz: None -- [Errno -2]")

    monkeypatch.setattr(kagglehub, "dataset_download", kaggle_down)
    for module in (keras.datasets.mnist, keras.datasets.fashion_mnist, keras.datasets.cifar10):
        monkeypatch.setattr(module, "load_data", keras_down)


def _fake_images(n_per_class, n_classes=10, size=28, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), n_per_class)
    images = rng.integers(0, 256, size=(len(labels), size, size), dtype=np.uint8)
    images[:, 0, 0] = labels * 20  # class-dependent pixel, lets tests check image/label pairing
    return images, labels


def _write_csv(path, images, labels):
    frame = pd.DataFrame(images.reshape(len(images), -1), columns=data._mnist_csv_columns()[1:])
    frame.insert(0, "label", labels)
    frame.to_csv(path, index=False)


@pytest.fixture
def kaggle_dir(tmp_path):
    folder = tmp_path / "kaggle"
    folder.mkdir()
    x_tr, y_tr = _fake_images(N_PER_CLASS, seed=1)
    x_te, y_te = _fake_images(N_PER_CLASS // 2, seed=2)
    _write_csv(folder / "mnist_train.csv", x_tr, y_tr)
    _write_csv(folder / "mnist_test.csv", x_te, y_te)
    return folder


def _idx_bytes(array, dtype_code=0x08):
    header = struct.pack(">BBBB", 0, 0, dtype_code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_idx_dir(folder, gz=True, size=28, n_per_class=N_PER_CLASS):
    folder.mkdir(parents=True, exist_ok=True)
    x_tr, y_tr = _fake_images(n_per_class, size=size, seed=3)
    x_te, y_te = _fake_images(n_per_class // 2, size=size, seed=4)
    arrays = {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te}
    for key, stem in data._IDX_FILES.items():
        payload = _idx_bytes(arrays[key])
        if gz:
            (folder / (stem + ".gz")).write_bytes(gzip.compress(payload))
        else:
            (folder / stem).write_bytes(payload)
    return np.concatenate([x_tr, x_te]), np.concatenate([y_tr, y_te])


@pytest.fixture(scope="module")
def bundled42(tmp_path_factory):
    return data.load_dataset(
        "mnist", "bundled", seed=42, cache_dir=tmp_path_factory.mktemp("c"), verbose=False
    )


def _assert_split(ds, n_total, n_classes=10):
    n_train, n_val = int(n_total * 0.6), int(n_total * 0.2)
    assert ds.shapes() == {
        "x_train": (n_train, 28, 28, 1),
        "y_train": (n_train,),
        "x_val": (n_val, 28, 28, 1),
        "y_val": (n_val,),
        "x_test": (n_total - n_train - n_val, 28, 28, 1),
        "y_test": (n_total - n_train - n_val,),
    }
    for split in data.SPLITS:
        x, y = ds.split(split)
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert 0.0 <= x.min() and x.max() <= 1.0
        counts = np.bincount(y, minlength=n_classes)
        assert counts.min() == counts.max() == len(y) // n_classes  # stratified, balanced
    # the class-dependent pixel survived scaling and travels with its label
    for split in data.SPLITS:
        x, y = ds.split(split)
        if ds.source in {"kaggle", "idx"}:
            np.testing.assert_allclose(x[:, 0, 0, 0] * 255, y * 20, atol=1e-3)


# ------------------------------------------------------------------------------------------------
# Kaggle CSV path
# ------------------------------------------------------------------------------------------------


def test_read_mnist_csv_dir(kaggle_dir):
    images, labels = data._read_mnist_csv_dir(kaggle_dir)
    assert images.shape == (30 * 10, 784) and labels.shape == (300,)
    assert np.bincount(labels).tolist() == [30] * 10


def test_kaggle_source_with_mocked_download(kaggle_dir, tmp_path, monkeypatch):
    import kagglehub

    calls = []
    monkeypatch.setattr(kagglehub, "dataset_download", lambda handle: calls.append(handle) or str(kaggle_dir))
    ds = data.load_dataset("mnist", "kaggle", cache_dir=tmp_path / "cache", verbose=False)
    assert calls == ["oddrationale/mnist-in-csv"]
    assert ds.source == "kaggle" and ds.name == "mnist" and ds.num_classes == 10
    assert ds.class_names[0] == "Zero" and ds.class_names[-1] == "Nine"
    _assert_split(ds, 300)


def test_auto_prefers_kaggle_when_reachable(kaggle_dir, tmp_path, monkeypatch):
    import kagglehub

    monkeypatch.setattr(kagglehub, "dataset_download", lambda handle: str(kaggle_dir))
    ds = data.load_dataset("mnist", "auto", cache_dir=tmp_path / "cache", verbose=False)
    assert ds.source == "kaggle"


def test_csv_with_wrong_columns(tmp_path, monkeypatch):
    import kagglehub

    folder = tmp_path / "bad"
    folder.mkdir()
    frame = pd.DataFrame(
        np.zeros((20, 785), dtype=int), columns=["label"] + [f"pixel{i}" for i in range(784)]
    )
    frame.to_csv(folder / "mnist_train.csv", index=False)
    frame.to_csv(folder / "mnist_test.csv", index=False)
    with pytest.raises(DatasetError, match="columns"):
        data._read_mnist_csv_dir(folder)
    monkeypatch.setattr(kagglehub, "dataset_download", lambda handle: str(folder))
    with pytest.raises(DatasetError, match="columns"):
        data.load_dataset("mnist", "kaggle", cache_dir=tmp_path / "cache", verbose=False)


def test_csv_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="mnist_train.csv"):
        data._read_mnist_csv_dir(tmp_path)


def test_csv_with_nan_pixels(kaggle_dir, tmp_path, monkeypatch):
    import kagglehub

    frame = pd.read_csv(kaggle_dir / "mnist_test.csv")
    frame.loc[3, "14x14"] = np.nan
    frame.to_csv(kaggle_dir / "mnist_test.csv", index=False)
    monkeypatch.setattr(kagglehub, "dataset_download", lambda handle: str(kaggle_dir))
    with pytest.raises(DatasetError, match="NaN"):
        data.load_dataset("mnist", "kaggle", cache_dir=tmp_path / "cache", verbose=False)


# ------------------------------------------------------------------------------------------------
# IDX path (Fashion-MNIST)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
def test_read_idx_dir(tmp_path, gz):
    expected_x, expected_y = _write_idx_dir(tmp_path / "idx", gz=gz)
    images, labels = data._read_idx_dir(tmp_path / "idx")
    np.testing.assert_array_equal(images, expected_x)
    np.testing.assert_array_equal(labels, expected_y)
    assert images.dtype == np.uint8 and images.shape == (300, 28, 28)


def test_fashion_idx_source(tmp_path):
    _write_idx_dir(tmp_path / "idx")
    ds = data.load_dataset(
        "fashion_mnist", "idx", cache_dir=tmp_path / "cache", fashion_dir=tmp_path / "idx", verbose=False
    )
    assert ds.source == "idx" and ds.class_names[0] == "T-shirt/top" and ds.class_names[-1] == "Ankle boot"
    _assert_split(ds, 300)


def test_fashion_auto_falls_back_to_keras(tmp_path, monkeypatch, capsys):
    import keras

    x, y = _fake_images(N_PER_CLASS, seed=5)
    monkeypatch.setattr(
        keras.datasets.fashion_mnist, "load_data", lambda: ((x[:150], y[:150]), (x[150:], y[150:]))
    )
    ds = data.load_dataset("fashion_mnist", "auto", cache_dir=tmp_path, fashion_dir=tmp_path / "missing")
    assert ds.source == "keras" and len(ds.y_train) == 120
    out = capsys.readouterr().out
    assert "source='idx' unavailable" in out and "does not exist" in out


def test_idx_bad_magic(tmp_path):
    _write_idx_dir(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x12\x34\x56\x78" + bytes(100)))
    with pytest.raises(DatasetError, match="magic number"):
        data._read_idx_dir(tmp_path)


def test_idx_truncated(tmp_path):
    _write_idx_dir(tmp_path, gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DatasetError, match="bytes follow"):
        data._read_idx_dir(tmp_path)


def test_idx_images_not_28x28(tmp_path):
    _write_idx_dir(tmp_path / "idx", size=27)
    with pytest.raises(DatasetError, match="28x28"):
        data.load_dataset(
            "fashion_mnist", "idx", cache_dir=tmp_path, fashion_dir=tmp_path / "idx", verbose=False
        )


@pytest.mark.skipif(
    not HAS_FASHION, reason=f"{FASHION_DIR} not installed (apt-get install dataset-fashion-mnist)"
)
def test_real_fashion_mnist_split(tmp_path):
    ds = data.load_dataset("fashion_mnist", "idx", use_cache=False, verbose=False)
    assert ds.source == "idx"
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (42000, 14000, 14000)
    assert np.bincount(ds.y_test).tolist() == [1400] * 10
    assert ds.x_train.shape[1:] == (28, 28, 1) and ds.x_train.dtype == np.float32


# ------------------------------------------------------------------------------------------------
# auto chain and explicit sources offline
# ------------------------------------------------------------------------------------------------


def test_auto_falls_back_to_bundled(tmp_path, capsys):
    ds = data.load_dataset("mnist", "auto", cache_dir=tmp_path)
    assert ds.source == "bundled"
    lines = capsys.readouterr().out.splitlines()
    kaggle = [line for line in lines if "source='kaggle' unavailable" in line]
    keras_ = [line for line in lines if "source='keras' unavailable" in line]
    assert len(kaggle) == 1 and "ConnectionError" in kaggle[0]
    assert len(keras_) == 1 and "URL fetch failure" in keras_[0]
    assert any("using source='bundled'" in line for line in lines)


def test_auto_quiet_when_not_verbose(tmp_path, capsys):
    data.load_dataset("mnist", "auto", cache_dir=tmp_path, verbose=False)
    assert capsys.readouterr().out == ""


def test_explicit_keras_offline_names_fallback(tmp_path):
    with pytest.raises(DatasetError, match="source='keras' failed") as info:
        data.load_dataset("mnist", "keras", cache_dir=tmp_path, verbose=False)
    assert "URL fetch failure" in str(info.value)
    assert "source='bundled'" in str(info.value) and "source='auto'" in str(info.value)


def test_explicit_kaggle_offline_names_fallback(tmp_path):
    with pytest.raises(DatasetError, match="source='kaggle' failed.*ConnectionError.*source='bundled'"):
        data.load_dataset("mnist", "kaggle", cache_dir=tmp_path, verbose=False)


def test_explicit_fashion_keras_offline_names_idx(tmp_path):
    with pytest.raises(DatasetError, match="source='idx'"):
        data.load_dataset("fashion_mnist", "keras", cache_dir=tmp_path, verbose=False)


def test_keras_offline_leaves_no_empty_datasets_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))

    def fetch():
        (tmp_path / "datasets").mkdir()
        raise Exception("URL fetch failure")

    with pytest.raises(Exception, match="URL fetch failure"):
        data._keras_load(fetch)
    assert not (tmp_path / "datasets").exists()


def test_cifar10_via_mocked_keras(tmp_path, monkeypatch):
    import keras

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(100, 32, 32, 3), dtype=np.uint8)
    y = np.repeat(np.arange(10), 10)[:, None]  # keras' cifar10 labels are (n, 1)
    monkeypatch.setattr(keras.datasets.cifar10, "load_data", lambda: ((x[:80], y[:80]), (x[80:], y[80:])))
    ds = data.load_dataset("cifar10", cache_dir=tmp_path, verbose=False)
    assert ds.source == "keras" and ds.x_train.shape == (60, 32, 32, 3) and ds.y_train.shape == (60,)
    assert ds.class_names[0] == "Airplane"


# ------------------------------------------------------------------------------------------------
# bundled MNIST (real data, offline)
# ------------------------------------------------------------------------------------------------


def test_bundled_split(bundled42):
    ds = bundled42
    assert ds.source == "bundled" and ds.name == "mnist" and ds.num_classes == 10
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (3000, 1000, 1000)
    assert np.bincount(ds.y_train).tolist() == [300] * 10
    assert np.bincount(ds.y_val).tolist() == [100] * 10
    assert np.bincount(ds.y_test).tolist() == [100] * 10
    _assert_split(ds, 5000)
    assert ds.x_train.max() == 1.0 and ds.x_train.min() == 0.0


def test_bundled_deterministic_and_seeded(bundled42, tmp_path):
    again = data.load_dataset("mnist", "bundled", seed=42, use_cache=False, verbose=False)
    for key in data._ARRAY_KEYS:
        np.testing.assert_array_equal(getattr(again, key), getattr(bundled42, key))
    other = data.load_dataset("mnist", "bundled", seed=7, use_cache=False, verbose=False)
    assert not np.array_equal(other.y_train, bundled42.y_train)
    assert not np.array_equal(other.x_val, bundled42.x_val)
    np.testing.assert_array_equal(other.x_test, bundled42.x_test)  # the held-out test set
    assert np.bincount(other.y_val).tolist() == [100] * 10  # still stratified


def test_held_out_test_set_is_fixed_stratified_and_never_trains_or_validates():
    from sklearn.model_selection import train_test_split

    y = np.repeat(np.arange(10), 500)[np.random.default_rng(0).permutation(5000)]
    train42, val42, test42 = data.split_indices(y, 42)
    # seed 42 is the split it always was: two stratified train_test_split calls, random_state 42
    old_train, rest = train_test_split(np.arange(5000), test_size=0.4, random_state=42, stratify=y)
    old_val, old_test = train_test_split(rest, test_size=0.5, random_state=42, stratify=y[rest])
    for new, old in ((train42, old_train), (val42, old_val), (test42, old_test)):
        np.testing.assert_array_equal(new, old)
    assert np.bincount(y[test42]).tolist() == [100] * 10
    for seed in range(30):
        train, val, test = data.split_indices(y, seed)
        np.testing.assert_array_equal(test, test42)
        assert not set(test) & (set(train) | set(val)) and not set(train) & set(val)
        assert (len(train), len(val)) == (3000, 1000) and len(set(train) | set(val) | set(test)) == 5000
        assert np.bincount(y[val]).tolist() == [100] * 10
    assert not np.array_equal(data.split_indices(y, 0)[1], data.split_indices(y, 1)[1])


def test_splits_are_disjoint(bundled42):
    flat = {
        split: bundled42.split(split)[0].reshape(len(bundled42.split(split)[0]), -1) for split in data.SPLITS
    }
    hashes = {split: {row.tobytes() for row in flat[split]} for split in data.SPLITS}
    assert not hashes["train"] & hashes["test"] and not hashes["train"] & hashes["val"]


# ------------------------------------------------------------------------------------------------
# cache
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def counted_bundled(monkeypatch):
    calls = []
    original = data._LOADERS[("mnist", "bundled")]

    def counting(**kwargs):
        calls.append(1)
        return original(**kwargs)

    monkeypatch.setitem(data._LOADERS, ("mnist", "bundled"), counting)
    return calls


def test_cache_hit_identical_and_fast(tmp_path, counted_bundled, capsys):
    start = time.perf_counter()
    first = data.load_dataset("mnist", "bundled", cache_dir=tmp_path)
    first_s = time.perf_counter() - start
    path = data.cache_path("mnist", "bundled", 42, tmp_path)
    assert path.is_file() and path.name.endswith(f"-v{data.CACHE_FORMAT_VERSION}.npz")
    start = time.perf_counter()
    second = data.load_dataset("mnist", "bundled", cache_dir=tmp_path)
    second_s = time.perf_counter() - start
    assert counted_bundled == [1]  # the source was not read again
    assert second_s < first_s
    assert "from cache" in capsys.readouterr().out
    for key in data._ARRAY_KEYS:
        a, b = getattr(first, key), getattr(second, key)
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    assert second.class_names == first.class_names and second.source == "bundled"
    with np.load(path, allow_pickle=False) as npz:  # no pickled objects inside
        assert npz["class_names"].dtype.kind == "U"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp files left


def test_cache_keyed_by_seed(tmp_path, counted_bundled):
    data.load_dataset("mnist", "bundled", seed=1, cache_dir=tmp_path, verbose=False)
    data.load_dataset("mnist", "bundled", seed=2, cache_dir=tmp_path, verbose=False)
    assert len(counted_bundled) == 2
    assert {p.name for p in tmp_path.iterdir()} == {
        data.cache_path("mnist", "bundled", s, tmp_path).name for s in (1, 2)
    }


def test_auto_uses_cache_without_touching_network(tmp_path, counted_bundled, monkeypatch):
    import kagglehub

    data.load_dataset("mnist", "auto", cache_dir=tmp_path, verbose=False)
    kaggle_calls = []
    monkeypatch.setattr(kagglehub, "dataset_download", lambda handle: kaggle_calls.append(handle))
    ds = data.load_dataset("mnist", "auto", cache_dir=tmp_path, verbose=False)
    assert ds.source == "bundled" and counted_bundled == [1] and kaggle_calls == []


def test_use_cache_false_writes_nothing(tmp_path, counted_bundled):
    data.load_dataset("mnist", "bundled", cache_dir=tmp_path, use_cache=False, verbose=False)
    data.load_dataset("mnist", "bundled", cache_dir=tmp_path, use_cache=False, verbose=False)
    assert counted_bundled == [1, 1] and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong_keys"])
def test_corrupt_cache_is_rebuilt(tmp_path, counted_bundled, capsys, damage):
    first = data.load_dataset("mnist", "bundled", cache_dir=tmp_path, verbose=False)
    path = data.cache_path("mnist", "bundled", 42, tmp_path)
    if damage == "garbage":
        path.write_bytes(b"not a zip file at all")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        np.savez_compressed(path, x_train=np.zeros(3))
    again = data.load_dataset("mnist", "bundled", cache_dir=tmp_path)
    out = capsys.readouterr().out
    assert sum("is corrupt" in line for line in out.splitlines()) == 1
    assert counted_bundled == [1, 1]
    np.testing.assert_array_equal(again.x_val, first.x_val)
    data.load_dataset("mnist", "bundled", cache_dir=tmp_path, verbose=False)  # the rebuilt file is valid
    assert counted_bundled == [1, 1]


# ------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------


def test_unknown_dataset_lists_valid_ones(tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset 'svhn'.*mnist, fashion_mnist, cifar10"):
        data.load_dataset("svhn", cache_dir=tmp_path)


def test_unknown_source_lists_valid_ones(tmp_path):
    with pytest.raises(DatasetError, match="unknown source 'idx'.*auto, kaggle, keras, bundled"):
        data.load_dataset("mnist", "idx", cache_dir=tmp_path)


def test_dataset_error_is_value_error():
    assert issubclass(DatasetError, ValueError)


def test_prepare_rejects_wrong_shape():
    images, labels = _fake_images(10, size=32)
    with pytest.raises(DatasetError, match="28x28"):
        data.prepare(images, labels, data.CLASS_NAMES["mnist"], seed=0)
    with pytest.raises(DatasetError, match="28x28"):
        data.prepare(images.reshape(100, -1)[:, :700], labels, data.CLASS_NAMES["mnist"], seed=0)


def test_prepare_rejects_nan():
    images, labels = _fake_images(10)
    images = images.astype(np.float64)
    images[5, 3, 3] = np.nan
    with pytest.raises(DatasetError, match="1 NaN pixels"):
        data.prepare(images, labels, data.CLASS_NAMES["mnist"], seed=0)


def test_prepare_rejects_bad_labels_and_range():
    images, labels = _fake_images(10)
    with pytest.raises(DatasetError, match="one label per image"):
        data.prepare(images, labels[:-1], data.CLASS_NAMES["mnist"], seed=0)
    with pytest.raises(DatasetError, match="class names"):
        data.prepare(images, labels, data.CLASS_NAMES["mnist"][:9], seed=0)
    with pytest.raises(DatasetError, match=r"\[0, 255\]"):
        data.prepare(images.astype(np.float32) * 2, labels, data.CLASS_NAMES["mnist"], seed=0)


def test_prepare_accepts_flat_and_encodes_labels():
    images, labels = _fake_images(10)
    out = data.prepare(
        images.reshape(100, 784).astype(np.float64), labels + 3, [str(i) for i in range(10)], seed=0
    )
    assert out["x_train"].shape == (60, 28, 28, 1) and out["x_train"].dtype == np.float32
    assert out["y_train"].dtype == np.int64 and set(out["y_train"].tolist()) == set(range(10))


def test_dataset_helpers(bundled42):
    assert bundled42.shapes()["x_val"] == (1000, 28, 28, 1)
    assert "x_train" not in repr(bundled42)  # arrays kept out of the repr
    with pytest.raises(DatasetError, match="unknown split"):
        bundled42.split("holdout")


# ------------------------------------------------------------------------------------------------
# plots (data section of helpers.plots)
# ------------------------------------------------------------------------------------------------


def test_plot_sample_grid(bundled42):
    import matplotlib.pyplot as plt

    from helpers import plots

    fig = plots.plot_sample_grid(bundled42.x_train, bundled42.y_train, bundled42.class_names, rows=5, cols=10)
    titles = [ax.get_title() for ax in fig.axes]
    assert len(fig.axes) == 50 and set(titles) <= set(bundled42.class_names)
    again = plots.plot_sample_grid(
        bundled42.x_train, bundled42.y_train, bundled42.class_names, rows=5, cols=10
    )
    assert [ax.get_title() for ax in again.axes] == titles  # same seed, same samples
    plt.close("all")


def test_plot_class_counts(bundled42):
    import matplotlib.pyplot as plt

    from helpers import plots

    fig = plots.plot_class_counts(bundled42)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == bundled42.class_names
    heights = sorted({round(p.get_height()) for p in ax.patches if p.get_height() > 0})
    assert heights == [100, 300]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train", "val", "test"]
    plt.close("all")


def test_save_dataset_round_trips_and_a_foreign_file_is_one_clear_error(tmp_path):
    ds = data.load_dataset("mnist", source="bundled", verbose=False)
    path = data.save_dataset(ds, tmp_path / "d.npz")
    back = data.read_dataset(path)
    assert (back.name, back.source, back.class_names) == (ds.name, ds.source, ds.class_names)
    for key in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(back, key), getattr(ds, key))
        assert getattr(back, key).dtype == getattr(ds, key).dtype
    np.savez(tmp_path / "other.npz", name=np.array("mnist"), source=np.array("bundled"))
    with pytest.raises(DatasetError, match="not a dataset written by save_dataset"):
        data.read_dataset(tmp_path / "other.npz")


def test_shift_images_moves_rows_and_columns_together_and_fills_the_background():
    x = np.arange(1, 10, dtype=np.float32).reshape(1, 3, 3)  # [[1 2 3] [4 5 6] [7 8 9]]
    # one to the right and one down: the top row and the left column are new (fill)
    np.testing.assert_array_equal(data.shift_images(x, dx=1, dy=1)[0], [[0, 0, 0], [0, 1, 2], [0, 4, 5]])
    # one up (dy=-1), two to the left: only the bottom-right 2x1 corner survives, at the top left
    np.testing.assert_array_equal(
        data.shift_images(x, dx=-2, dy=-1, fill=-1)[0], [[6, -1, -1], [9, -1, -1], [-1, -1, -1]]
    )
    np.testing.assert_array_equal(data.shift_images(x[..., None], 0, 0), x[..., None])
    with pytest.raises(ValueError, match="height 3"):
        data.shift_images(x, dy=3)
