"""Study: VICReg self-supervised representations of Fashion-MNIST, judged by a linear probe, with an
ablation without the variance term, neighbour positives, Laplacian eigenmaps, kNN anomaly detection
of MNIST digits and k-means clustering.

Notebook 10 tells the story and ``benchmarks/vicreg.py`` measures it; both call the functions here.

The models are study entries of the registry (:data:`STUDY`, registered on import) trained and cached
by the suite's one path, :func:`helpers.training.train`, with the VICReg loss below
(:class:`VICRegLoss`, λ = μ = 25, ν = 1, the paper's values; its three terms are compiled in as
metrics and logged per batch by :class:`helpers.training.callbacks.BatchValues`):

- ``vicreg``: two random views of each image (:class:`ViewAugment` inside the model, active only
  when training: random resized crop, horizontal flip, brightness / contrast jitter, blur) through a
  shared encoder (:func:`vicreg_encoder`, a small CNN: its 128-d features, pooled on a 2x2 grid,
  are the *representation*) and an expander MLP (the *embedding* the loss sees);
- ``vicreg_no_variance``: the same with μ = 0, the ablation that collapses;
- ``vicreg_neighbours``: no augmentation; the two inputs are an image and one of its 3 nearest
  neighbours in the first model's representation.

Self-supervised means no labels: the "labels" of a VICReg model's training data are, for each
image, the indices of the images it may be paired with (:func:`positives_dataset`): itself for the
view models, its nearest neighbours for ``vicreg_neighbours``. They are what the pair sampler
(:class:`PositivePairGenerator`, generator kind ``"positive_pairs"``) draws from, and being the
data they are in the cache fingerprint: new neighbours retrain the neighbour model.

The representations are judged without training the encoder further: a linear probe
(:func:`linear_probe`, one linear layer — multinomial logistic regression — on the frozen features),
a kNN classifier, the eigenvalue spectrum and effective rank (:func:`spectrum`), anomaly scores
(:func:`anomaly_scores`: mean distance to the 2 nearest training representations) and k-means
(:func:`clustering`). Floors measured in the same run: a randomly initialised encoder and the raw
pixels; Laplacian eigenmaps (:func:`laplacian_eigenmaps`) are the non-learned representation the
reference compares with.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings

import keras
import numpy as np
from keras import layers, ops

from helpers import config, evaluation, metrics, registry
from helpers.architectures import BN_MOMENTUM
from helpers.data import Dataset, load_dataset, stratified_subset
from helpers.knn import exact_knn
from helpers.losses import unstack
from helpers.samplers import EpochSeededDataset, GeneratorError, register_sampler
from helpers.studies import cache

REPRESENTATION_DIM = 128
EXPANDER_DIM = 512
NEIGHBORS = 3  # neighbour positives: one of the 3 nearest neighbours (the reference's choice)
ANOMALY_K = 2  # anomaly score: mean distance to the 2 nearest training representations
#: The study's folder of the models cache (:func:`helpers.studies.cache.folder`, one per profile).
CACHE_FOLDER = "10_vicreg"
#: The reference's figures (CIFAR-10, its own encoder): linear probe accuracies and silhouettes.
REFERENCE = {
    "probe_vicreg": 0.72,
    "probe_no_variance": 0.17,
    "probe_neighbours": 0.32,
    "probe_laplacian": 0.10,  # "the same accuracy as random"
    "silhouette_clusters": 0.111,
    "silhouette_labels": 0.030,
}


# --- the two views ------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="helpers")
class ViewAugment(layers.Layer):
    """A random view of each image, drawn anew at every call, active only when ``training=True``.

    Per image: a random resized crop (area ``scale`` of the image, aspect ratio in ``ratio``, resized
    back to the full size, bilinear), a horizontal flip with probability 1/2 (``flip``: Fashion-MNIST's
    items are left/right symmetric), a contrast factor in ``1 ± contrast`` about the image's mean and a
    brightness shift in ``± brightness``, and with probability ``blur`` a 3x3 Gaussian blur of standard
    deviation in ``sigma`` pixels; clipped to [0, 1]. ``keras.ops`` and ``keras.random`` only, so the
    same layer runs on TensorFlow and JAX; two calls in one training step draw two different views.
    It computes in float32 unless given another ``dtype``, also under a mixed-precision policy.
    """

    def __init__(
        self,
        scale=(0.3, 1.0),
        ratio=(3 / 4, 4 / 3),
        flip: bool = True,
        brightness: float = 0.3,
        contrast: float = 0.4,
        blur: float = 0.5,
        sigma=(0.1, 1.5),
        seed=None,
        **kwargs,
    ):
        super().__init__(**{"dtype": "float32", **kwargs})
        self.scale, self.ratio, self.sigma = tuple(map(float, scale)), tuple(map(float, ratio)), tuple(sigma)
        if not 0.0 < self.scale[0] <= self.scale[1] <= 1.0:
            raise ValueError(f"scale must be 0 < low <= high <= 1 (a share of the image), got {scale}")
        if not 0.0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"ratio must be 0 < low <= high, got {ratio}")
        self.flip, self.brightness, self.contrast = bool(flip), float(brightness), float(contrast)
        self.blur, self.seed = float(blur), seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _uniform(self, n, low, high):
        return keras.random.uniform((n,), low, high, seed=self.seed_generator)

    def crop_transforms(self, n: int, height: int, width: int):
        """(n, 8) transforms for ``ops.image.affine_transform``: output pixel -> source pixel of a
        random crop (and flip), the crop lying inside the image."""
        area = self._uniform(n, *self.scale)
        log_ratio = self._uniform(n, math.log(self.ratio[0]), math.log(self.ratio[1]))
        ratio = ops.exp(log_ratio)
        cw = ops.minimum(ops.sqrt(area * ratio), 1.0)  # crop width and height, shares of the image
        ch = ops.minimum(ops.sqrt(area / ratio), 1.0)
        cx = cw / 2 + self._uniform(n, 0.0, 1.0) * (1.0 - cw)  # crop centre, shares of the image
        cy = ch / 2 + self._uniform(n, 0.0, 1.0) * (1.0 - ch)
        sign = ops.where(self._uniform(n, 0.0, 1.0) < 0.5, -1.0, 1.0) if self.flip else ops.ones_like(cw)
        a0, b1 = cw * sign, ch
        a2 = cx * width - 0.5 - a0 * (width - 1) / 2.0
        b2 = cy * height - 0.5 - b1 * (height - 1) / 2.0
        zeros = ops.zeros_like(a0)
        return ops.stack([a0, zeros, a2, zeros, b1, b2, zeros, zeros], axis=1)

    def call(self, images, training=None):
        if not training:
            return images
        n = ops.shape(images)[0]
        out = ops.image.affine_transform(
            images,
            self.crop_transforms(n, images.shape[1], images.shape[2]),
            interpolation="bilinear",
            fill_mode="constant",
            fill_value=0,
            data_format="channels_last",
        )
        per_image = (n, 1, 1, 1)
        mean = ops.mean(out, axis=(1, 2, 3), keepdims=True)
        factor = ops.reshape(self._uniform(n, 1.0 - self.contrast, 1.0 + self.contrast), per_image)
        shift = ops.reshape(self._uniform(n, -self.brightness, self.brightness), per_image)
        out = (out - mean) * factor + mean + shift
        if self.blur > 0:
            sigma = self._uniform(n, *self.sigma)
            on = ops.cast(self._uniform(n, 0.0, 1.0) < self.blur, out.dtype)
            w = ops.reshape(on * ops.exp(-1.0 / (2.0 * ops.square(sigma))), per_image)  # side tap weight
            out = _blur3(out, w)
        return ops.clip(out, 0.0, 1.0)

    def get_config(self):
        return {
            **super().get_config(),
            "scale": self.scale,
            "ratio": self.ratio,
            "flip": self.flip,
            "brightness": self.brightness,
            "contrast": self.contrast,
            "blur": self.blur,
            "sigma": self.sigma,
            "seed": self.seed,
        }


def _blur3(x, w):
    """Separable 3-tap blur ``[w, 1, w] / (1 + 2w)`` along both axes, zero padding (the background)."""
    p = ops.pad(x, [[0, 0], [0, 0], [1, 1], [0, 0]])
    x = (w * p[:, :, :-2] + p[:, :, 1:-1] + w * p[:, :, 2:]) / (1.0 + 2.0 * w)
    p = ops.pad(x, [[0, 0], [1, 1], [0, 0], [0, 0]])
    return (w * p[:, :-2] + p[:, 1:-1] + w * p[:, 2:]) / (1.0 + 2.0 * w)


# --- encoder, expander ---------------------------------------------------------------------------------


def vicreg_encoder(input_shape=(28, 28, 1), representation_dim: int = REPRESENTATION_DIM) -> keras.Model:
    """The encoder: three Conv-BN-ReLU stages (32, 64 and ``representation_dim / 4`` filters; 2x2 max
    pooling after the first two), then 3x3 average pooling with stride 3, which turns the 7x7 map of a
    28x28 image into a 2x2 grid, flattened: images -> representation (``representation_dim``).

    The grid keeps where on the item a feature is (a sleeve, a sole, a strap); global average
    pooling, which discards it, gave a representation whose 3-NN stayed below the raw pixels' in
    the default profile's budget (``benchmarks/archive/vicreg_recipe_search.py``, validation split).
    """
    if representation_dim % 4:
        raise ValueError(f"representation_dim must be a multiple of 4 (a 2x2 grid), got {representation_dim}")
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for i, filters in enumerate((32, 64, representation_dim // 4), start=1):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"enc_conv{i}")(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"enc_bn{i}")(x)
        x = layers.Activation("relu", name=f"enc_relu{i}")(x)
        if i < 3:
            x = layers.MaxPooling2D(2, name=f"enc_pool{i}")(x)
    x = layers.AveragePooling2D(3, strides=3, name="enc_grid")(x)
    outputs = layers.Flatten(name="representation")(x)
    return keras.Model(inputs, outputs, name="encoder")


def _vicreg_net(name, input_shape, embedding_dim, views: bool):
    inputs = keras.Input(input_shape, name="image")
    x = ViewAugment(name="views")(inputs) if views else inputs
    x = vicreg_encoder(input_shape)(x)
    for i in (1, 2):  # the expander: Dense-BN-ReLU twice, then a linear layer (the paper's shape)
        x = layers.Dense(embedding_dim, use_bias=False, name=f"exp_dense{i}")(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"exp_bn{i}")(x)
        x = layers.Activation("relu", name=f"exp_relu{i}")(x)
    outputs = layers.Dense(embedding_dim, name="expander")(x)
    return keras.Model(inputs, outputs, name=name)


def vicreg_net(input_shape=(28, 28, 1), embedding_dim=EXPANDER_DIM) -> keras.Model:
    """Image -> random view (training only) -> encoder -> expander (``embedding_dim``)."""
    return _vicreg_net("vicreg_net", input_shape, embedding_dim, views=True)


def vicreg_net_plain(input_shape=(28, 28, 1), embedding_dim=EXPANDER_DIM) -> keras.Model:
    """:func:`vicreg_net` without the views: the neighbour model's two inputs are two images."""
    return _vicreg_net("vicreg_net_plain", input_shape, embedding_dim, views=False)


def encoder_of(model: keras.Model) -> keras.Model:
    """The encoder (images -> representation) inside a :func:`vicreg_net` model: what is probed."""
    return model.get_layer("encoder")


# --- the loss: three named terms (two views of each image, no labels) ------------------------------

#: The three terms of VICReg (Bardes, Ponce & LeCun 2022), in the order of the loss.
VICREG_TERMS = ("invariance", "variance", "covariance")


def vicreg_terms(z_a, z_b, eps: float = 1e-4) -> dict:
    """The three VICReg terms of two batches of expander outputs ``(n, d)``, unweighted.

    - ``invariance``: the mean squared difference of the two views' vectors, over the batch and the
      coordinates (the official implementation's ``F.mse_loss``; the paper's equation sums over the
      coordinates instead, d times larger, for which λ = 25 was not tuned);
    - ``variance``: ``v(Z) + v(Z')`` with ``v(Z) = mean_j max(0, 1 - sqrt(Var(z_j) + eps))``, the
      unbiased variance of each coordinate over the batch: a hinge that keeps every coordinate's
      standard deviation at 1 or more, so the vectors cannot all collapse to one point;
    - ``covariance``: ``c(Z) + c(Z')`` with ``c(Z) = sum_{i != j} C(Z)_ij^2 / d``, ``C`` the
      covariance matrix over the batch (``1 / (n - 1)``): decorrelates the coordinates.

    Needs ``n >= 2`` (a variance over one vector is undefined).
    """
    out = {"invariance": ops.mean(ops.square(z_a - z_b)), "variance": 0.0, "covariance": 0.0}
    for z in (z_a, z_b):
        n = ops.cast(ops.shape(z)[0], z.dtype)
        d = ops.cast(ops.shape(z)[1], z.dtype)
        centred = z - ops.mean(z, axis=0, keepdims=True)
        var = ops.sum(ops.square(centred), axis=0) / (n - 1.0)
        out["variance"] = out["variance"] + ops.mean(ops.relu(1.0 - ops.sqrt(var + eps)))
        cov = ops.matmul(ops.transpose(centred), centred) / (n - 1.0)
        off_diagonal = ops.sum(ops.square(cov)) - ops.sum(ops.square(var))
        out["covariance"] = out["covariance"] + off_diagonal / d
    return out


def vicreg(z_a, z_b, inv_weight: float = 25.0, var_weight: float = 25.0, cov_weight: float = 1.0, eps=1e-4):
    """``λ·invariance + μ·variance + ν·covariance`` (:func:`vicreg_terms`), a scalar; the paper's
    λ = μ = 25, ν = 1 by default. ``var_weight=0`` is the ablation without the variance term."""
    t = vicreg_terms(z_a, z_b, eps)
    return inv_weight * t["invariance"] + var_weight * t["variance"] + cov_weight * t["covariance"]


@keras.saving.register_keras_serializable(package="helpers")
class VICRegLoss(keras.losses.Loss):
    """Keras wrapper of :func:`vicreg`: ``y_pred`` ``(batch, 2, d)`` the stacked expander outputs of
    the two views, ``y_true`` ignored (no labels). The batch loss is returned for every example, so
    Keras' mean over the batch is the loss itself.

    ``margin`` exists only so the registry builds every loss alike (VICReg has none): it must be 0.
    """

    def __init__(
        self,
        inv_weight: float = 25.0,
        var_weight: float = 25.0,
        cov_weight: float = 1.0,
        eps: float = 1e-4,
        margin: float = 0.0,
        name: str = "vicreg_loss",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if margin:
            raise ValueError(f"VICReg has no margin; register the model with margin=0.0, got {margin!r}")
        weights = {"inv_weight": inv_weight, "var_weight": var_weight, "cov_weight": cov_weight}
        bad = {k: v for k, v in weights.items() if not float(v) >= 0.0}
        if bad:
            raise ValueError(f"VICReg weights must be >= 0, got {bad}")
        self.inv_weight, self.var_weight, self.cov_weight = (float(v) for v in weights.values())
        self.eps = float(eps)

    def call(self, y_true, y_pred):
        z_a, z_b = unstack(y_pred, 2, "VICRegLoss")
        loss = vicreg(z_a, z_b, self.inv_weight, self.var_weight, self.cov_weight, self.eps)
        return loss * ops.ones_like(z_a[:, 0])

    def get_config(self):
        return {
            **super().get_config(),
            "inv_weight": self.inv_weight,
            "var_weight": self.var_weight,
            "cov_weight": self.cov_weight,
            "eps": self.eps,
        }


@keras.saving.register_keras_serializable(package="helpers")
class VICRegTerm(keras.metrics.Mean):
    """One unweighted term of :func:`vicreg_terms` as a Keras metric, named after the term.

    Like every Keras metric it reports the mean over the batches of the epoch so far, so the
    per-batch value is recovered exactly from two consecutive logs (:class:`helpers.training.callbacks.BatchValues`).
    """

    def __init__(self, term: str = "invariance", eps: float = 1e-4, name: str | None = None, **kwargs):
        if term not in VICREG_TERMS:
            raise ValueError(f"term must be one of {VICREG_TERMS}, got {term!r}")
        super().__init__(name=name or term, **kwargs)
        self.term, self.eps = term, float(eps)

    def update_state(self, y_true, y_pred, sample_weight=None):
        z_a, z_b = unstack(y_pred, 2, "VICRegTerm")
        return super().update_state(vicreg_terms(z_a, z_b, self.eps)[self.term])

    def get_config(self):
        return {**super().get_config(), "term": self.term, "eps": self.eps}


def vicreg_metrics(eps: float = 1e-4) -> list:
    """The three :class:`VICRegTerm` metrics, to ``compile`` a VICReg model with."""
    return [VICRegTerm(term, eps) for term in VICREG_TERMS]


def _loss(spec) -> VICRegLoss:
    """The registry's ``build(spec)`` of the ``"vicreg"`` loss: a :class:`VicregSpec`'s weights."""
    fields = ("inv_weight", "var_weight", "cov_weight")
    if not all(hasattr(spec, f) for f in fields):
        raise ValueError(f"model {spec.name!r}: loss 'vicreg' needs a spec with {', '.join(fields)}")
    return VICRegLoss(margin=spec.margin, **{f: getattr(spec, f) for f in fields})


# --- the pair sampler ------------------------------------------------------------------------------------


class PositivePairGenerator(EpochSeededDataset):
    """Pairs ``((x[i], x[j]), zeros)`` with ``j`` a uniform entry of ``positives[i]``.

    ``positives`` is an ``(n, k)`` table of indices into ``x``: ``i`` itself (``(n, 1)`` of
    ``arange(n)``) for two views of one image, its nearest neighbours for neighbour positives. The
    anchors of a batch are ``batch_size`` distinct images drawn uniformly; deterministic per
    ``(seed, epoch, batch)`` like every generator of the suite.
    """

    def __init__(self, x, positives, batch_size: int = 256, steps_per_epoch=None, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.x = np.asarray(x, np.float32)
        table = np.asarray(positives)
        if table.ndim == 1:
            table = table[:, None]
        if table.ndim != 2 or len(table) != len(self.x) or not np.issubdtype(table.dtype, np.integer):
            raise GeneratorError(
                f"positives must be an integer table (n, k) with one row per image ({len(self.x)}), "
                f"got {table.dtype} {table.shape}; build it with helpers.studies.vicreg.positives_dataset"
            )
        if table.size and (table.min() < 0 or table.max() >= len(self.x)):
            raise GeneratorError(f"positives hold indices outside [0, {len(self.x) - 1}]")
        if not 2 <= int(batch_size) <= len(self.x):
            raise GeneratorError(
                f"batch_size must be in [2, {len(self.x)}] (VICReg's variance needs 2 images), got {batch_size}"
            )
        self.positives, self.batch_size = table.astype(np.int64), int(batch_size)
        self.init_epochs(steps_per_epoch, seed, False)

    def batch_indices(self, i):
        """``(anchors, partners)`` index arrays of batch ``i`` of the current epoch."""
        if not 0 <= int(i) < len(self):
            raise IndexError(f"batch {i} out of range [0, {len(self)})")
        rng = self.rng(i)
        anchors = rng.choice(len(self.x), size=self.batch_size, replace=False)
        column = rng.integers(0, self.positives.shape[1], size=self.batch_size)
        return anchors, self.positives[anchors, column]

    def __getitem__(self, i):
        a, p = self.batch_indices(i)
        return (self.x[a], self.x[p]), np.zeros(len(a), np.float32)


def _pair_factory(spec, x, y, batch_size, steps_per_epoch, seed, augment):
    return PositivePairGenerator(x, y, batch_size=batch_size, steps_per_epoch=steps_per_epoch, seed=seed)


register_sampler("positive_pairs", 2, _pair_factory)
registry.register_loss("vicreg", _loss, metrics=lambda spec: vicreg_metrics())


def positives_dataset(data: Dataset, train_table=None, val_table=None, tag: str = "views") -> Dataset:
    """``data`` with its labels replaced by positive tables (the self-supervised training data).

    ``None`` pairs each image with itself (two views); otherwise an ``(n, k)`` table of partner
    indices per split. The test split keeps its labels (never trained on). ``tag`` names the
    dataset (``fashion_mnist-views``, ``fashion_mnist-neighbours``), hence the cache folder.
    """

    def table(x, t):
        return np.arange(len(x), dtype=np.int64)[:, None] if t is None else np.asarray(t, np.int64)

    return dataclasses.replace(
        data,
        name=f"{data.name}-{tag}",
        y_train=table(data.x_train, train_table),
        y_val=table(data.x_val, val_table),
    )


def same_class_share(table, labels) -> float:
    """The share of the partners in ``table`` ``(n, k)`` with the label of their row's image (the
    labels only report how class-pure the neighbour positives are; training never sees them)."""
    labels = np.asarray(labels)
    return float((labels[np.asarray(table)] == labels[:, None]).mean())


def neighbour_table(representations, k: int = NEIGHBORS) -> np.ndarray:
    """``(n, k)``: each row's ``k`` nearest other rows (exact, ``helpers.knn.exact_knn``)."""
    rep = np.asarray(representations, np.float32)
    idx, _ = exact_knn(rep, rep, k, exclude=np.arange(len(rep)))
    return idx


# --- the study's registry entries ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class VicregSpec(registry.ModelSpec):
    """A VICReg entry: the registry's fields plus the loss weights λ (``inv_weight``), μ
    (``var_weight``) and ν (``cov_weight``), all in the cache fingerprint."""

    inv_weight: float = 25.0
    var_weight: float = 25.0
    cov_weight: float = 1.0


# The full profile's budget (benchmarks/vicreg.py --profile full); the notebook's profiles pass theirs
_COMMON = dict(
    loss="vicreg",
    margin=0.0,
    generator="positive_pairs",
    epochs=100,
    steps_per_epoch=210,
    batch_size=256,
    learning_rate=1e-3,
    optimizer="adamw",
    weight_decay=1e-5,
    lr_schedule="cosine",
    embedding_dim=EXPANDER_DIM,
)
STUDY: dict[str, VicregSpec] = {
    spec.name: registry.register(spec)
    for spec in [
        VicregSpec(
            "vicreg", vicreg_net, description="VICReg: two random views, λ = μ = 25, ν = 1", **_COMMON
        ),
        VicregSpec(
            "vicreg_no_variance",
            vicreg_net,
            var_weight=0.0,
            description="ablation: VICReg without the variance term (μ = 0)",
            **_COMMON,
        ),
        VicregSpec(
            "vicreg_neighbours",
            vicreg_net_plain,
            description="neighbour positives: an image and one of its 3 nearest neighbours in vicreg's "
            "representation, no augmentation",
            **_COMMON,
        ),
    ]
}


# --- data ----------------------------------------------------------------------------------------------

# The profiles' sizes and budgets (helpers.profiles, "10_vicreg"): train / val / test: Fashion-MNIST
# images of the official split kept (None = all); anomalies: MNIST images; epochs x steps x batch of
# the VICReg and the ablation (nn_epochs: the neighbour model); sample: test images in the t-SNE and
# clustering figures; spectral: training images in the Laplacian eigenmaps graph.


def study_data(
    params: dict, seed: int = 42, source: str = "auto", verbose: bool = True, fashion_dir=None
) -> tuple:
    """``(fashion, mnist_images)``: Fashion-MNIST on its official split (10 % of train for validation)
    cut to the profile's sizes (stratified), and the profile's number of MNIST images (the anomalies).
    ``fashion_dir``: a folder of the Fashion-MNIST IDX files (default: the Debian package's)."""
    kwargs = {"fashion_dir": fashion_dir} if fashion_dir else {}
    full = load_dataset(
        "fashion_mnist", source=source, seed=seed, split="official", verbose=verbose, **kwargs
    )
    fashion = stratified_subset(full, params.get("train"), params.get("val"), params.get("test"), seed=seed)
    digits = load_dataset("mnist", source=source, seed=seed, verbose=verbose)
    x = np.concatenate([digits.x_test, digits.x_val, digits.x_train])  # the test split first
    n = params.get("anomalies")
    return fashion, x[: len(x) if n is None else int(n)]


# --- training -------------------------------------------------------------------------------------------------


def _terms_path(name: str, dataset: str, cache_dir):
    from helpers.training import cache_paths

    return cache_paths(name, cache_dir, dataset)["history"].with_suffix("").with_suffix(".batch_terms.json")


def train_model(name: str, data: Dataset, params: dict, epochs: int, cache_dir=None, force=False, seed=0):
    """Train (or load) the study model ``name`` on ``data`` (a :func:`positives_dataset`) through
    :func:`helpers.training.train`; returns ``(encoder, model, record)``.

    ``record["batch_terms"]`` holds the per-batch loss and terms
    (:class:`helpers.training.callbacks.BatchValues`) of the run
    that trained the entry: saved beside the cache entry, keyed by its fingerprint, and read back
    when the model comes from the cache (``None`` if that run's log is not there).
    """
    from helpers.training import train
    from helpers.training.callbacks import BatchValues

    cache_dir = cache_dir or cache.folder(CACHE_FOLDER, "default")
    if name not in STUDY:
        raise ValueError(f"unknown study model {name!r}; choose one of: {', '.join(STUDY)}")
    logger = BatchValues(("loss", *VICREG_TERMS))
    model, record = train(
        name,
        data,
        epochs=epochs,
        steps_per_epoch=params["steps_per_epoch"],
        batch_size=params["batch_size"],
        seed=seed,
        cache_dir=cache_dir,
        force=force,
        patience=epochs + 1,  # no early stopping: the self-supervised loss is no accuracy to watch
        callbacks=[logger],
    )
    path = _terms_path(name, data.name, cache_dir)
    terms = None
    if not record["from_cache"]:
        terms = {"values": logger.values, "epochs": logger.epochs}
        config.write_json(path, {"fingerprint": record["fingerprint"], **terms})
    elif path.exists():
        saved = json.loads(path.read_text())
        if saved.get("fingerprint") == record["fingerprint"]:
            terms = {"values": saved["values"], "epochs": saved["epochs"]}
    return encoder_of(model), model, {**record, "batch_terms": terms}


def random_encoder(seed: int = 0) -> keras.Model:
    """An untrained encoder of the same architecture, initialised with ``seed``: a floor."""
    keras.utils.set_random_seed(seed)
    return encoder_of(registry.build_embedding("vicreg"))


# --- measurements -----------------------------------------------------------------------------------------------


def flat(x) -> np.ndarray:
    """Images as pixel vectors ``(n, H*W*C)``: the raw-pixel representation."""
    return np.asarray(x, np.float32).reshape(len(x), -1)


def linear_probe(train_rep, y_train, test_rep, y_test, seed: int = 0, max_iter: int = 300) -> float:
    """Test accuracy of one linear layer (softmax regression, scikit-learn's multinomial
    ``LogisticRegression``, L-BFGS, at most ``max_iter`` iterations, the same budget for every
    representation) trained on frozen, standardised representations: the mean of
    :func:`linear_probe_correct`."""
    return float(np.mean(linear_probe_correct(train_rep, y_train, test_rep, y_test, seed, max_iter)))


def linear_probe_correct(train_rep, y_train, test_rep, y_test, seed: int = 0, max_iter: int = 300):
    """Per test image, whether :func:`linear_probe`'s probe labels it right (bool array)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_rep, test_rep = np.asarray(train_rep, np.float32), np.asarray(test_rep, np.float32)
    if train_rep.ndim != 2 or test_rep.ndim != 2 or train_rep.shape[1] != test_rep.shape[1]:
        raise ValueError(
            f"representations must be (n, d) with the same d, got {train_rep.shape} and {test_rep.shape}"
        )
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, random_state=seed))
    with warnings.catch_warnings():  # at max_iter L-BFGS may not have met its tolerance: a fixed budget
        warnings.simplefilter("ignore", ConvergenceWarning)
        probe.fit(train_rep, np.asarray(y_train))
    return probe.predict(test_rep) == np.asarray(y_test)


def spectrum(rep) -> dict:
    """Eigenvalues of the representations' covariance (descending), the effective rank
    ``exp(entropy of the normalised eigenvalues)`` (Roy & Vetterli 2007: d for a round cloud, 1 for
    a line) and the rank at 1e-3 of the largest eigenvalue. A collapsed representation has few."""
    rep = np.asarray(rep, np.float64)
    if rep.ndim != 2 or len(rep) < 2:
        raise ValueError(f"need (n >= 2, d) representations, got shape {rep.shape}")
    eig = np.clip(np.linalg.eigvalsh(np.cov(rep, rowvar=False).reshape(rep.shape[1], -1))[::-1], 0.0, None)
    total = eig.sum()
    if total <= 0:
        return {"eigenvalues": eig, "effective_rank": 0.0, "rank": 0}
    p = eig / total
    entropy = -np.sum(p[p > 0] * np.log(p[p > 0]))
    return {
        "eigenvalues": eig,
        "effective_rank": float(np.exp(entropy)),
        "rank": int((eig > 1e-3 * eig[0]).sum()),
    }


def laplacian_eigenmaps(x_train, x_test, n_components: int = 32, n_neighbors: int = 10, seed: int = 0):
    """Laplacian eigenmaps of the pixels (scikit-learn's ``SpectralEmbedding`` on the symmetric
    ``n_neighbors`` graph, found with ``helpers.knn.exact_knn``) of the training and test images
    together (the method has no out-of-sample map); returns ``(train_points, test_points)``."""
    from scipy import sparse
    from sklearn.manifold import SpectralEmbedding

    pixels = np.concatenate([flat(x_train), flat(x_test)])
    n = len(pixels)
    idx, _ = exact_knn(pixels, pixels, n_neighbors, exclude=np.arange(n))
    graph = sparse.csr_matrix(
        (np.ones(idx.size), (np.repeat(np.arange(n), n_neighbors), idx.ravel())), (n, n)
    )
    graph = ((graph + graph.T) > 0).astype(np.float64)
    points = SpectralEmbedding(n_components, affinity="precomputed", random_state=seed).fit_transform(graph)
    return points[: len(x_train)].astype(np.float32), points[len(x_train) :].astype(np.float32)


def anomaly_scores(train_rep, query_rep, k: int = ANOMALY_K) -> np.ndarray:
    """Mean Euclidean distance of each query to its ``k`` nearest training representations."""
    _, sq = exact_knn(np.asarray(query_rep, np.float32), np.asarray(train_rep, np.float32), k)
    return np.sqrt(np.maximum(sq, 0.0)).mean(axis=1)


def anomaly_roc(scores_in, scores_out) -> dict:
    """ROC of telling anomalies (positive class) from in-distribution images by score:
    ``{"fpr", "tpr", "auc"}`` (scikit-learn)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    scores = np.concatenate([scores_in, scores_out])
    truth = np.concatenate([np.zeros(len(scores_in)), np.ones(len(scores_out))])
    fpr, tpr, _ = roc_curve(truth, scores)
    return {"fpr": fpr, "tpr": tpr, "auc": float(roc_auc_score(truth, scores))}


def clustering(rep, labels, n_clusters: int = 10, seed: int = 0) -> dict:
    """k-means (``n_init=10``) of ``rep``: the cluster ids, and the silhouette of the clusters and of
    the true labels on the same points, NMI and ARI of the clusters against the labels."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score

    rep, labels = np.asarray(rep, np.float32), np.asarray(labels)
    clusters = KMeans(n_clusters, n_init=10, random_state=seed).fit_predict(rep.astype(np.float64))
    return {
        "clusters": clusters,
        "silhouette_clusters": float(silhouette_score(rep, clusters)),
        "silhouette_labels": float(silhouette_score(rep, labels)),
        "nmi": float(normalized_mutual_info_score(labels, clusters)),
        "ari": float(adjusted_rand_score(labels, clusters)),
    }


def stratified_sample(y, n, seed: int = 0) -> np.ndarray:
    """Sorted indices of a stratified sample of ``n`` labels ``y`` (all of them when ``n`` is None)."""
    if n is None or n >= len(y):
        return np.arange(len(y))
    from sklearn.model_selection import train_test_split

    idx, _ = train_test_split(np.arange(len(y)), train_size=int(n), random_state=seed, stratify=y)
    return np.sort(idx)


# --- the whole study ------------------------------------------------------------------------------------------


def embed_all(encoder, data: Dataset, digits) -> dict:
    """``{"train", "val", "test", "digits"}``: the encoder's representations of every split and of
    the anomalies, in one prediction."""
    parts = [data.x_train, data.x_val, data.x_test, digits]
    rep = evaluation.embed(encoder, np.concatenate(parts))
    cuts = np.cumsum([len(p) for p in parts])[:-1]
    return dict(zip(("train", "val", "test", "digits"), np.split(rep, cuts), strict=True))


def floors(data: Dataset, digits, params: dict, seed: int = 0) -> dict:
    """The representations that learn nothing from the data: a randomly initialised encoder, the raw
    pixels, and Laplacian eigenmaps of the pixels (on the first ``params["spectral"]`` training
    images and the test images; no anomalies: the method cannot place new images)."""
    n = min(len(data.x_train), int(params["spectral"]))
    spec_train, spec_test = laplacian_eigenmaps(data.x_train[:n], data.x_test, seed=seed)
    return {
        "random encoder": embed_all(random_encoder(seed), data, digits),
        "raw pixels": {
            s: flat(x)
            for s, x in zip(
                ("train", "val", "test", "digits"),
                (data.x_train, data.x_val, data.x_test, digits),
                strict=True,
            )
        },
        "Laplacian eigenmaps": {"train": spec_train, "test": spec_test},
    }


def evaluate(reps: dict, data: Dataset, seed: int = 0, anomaly_for=None) -> dict:
    """One row per representation: ``probe`` (linear probe test accuracy), ``knn_accuracy`` (3-NN),
    ``effective_rank`` / ``rank`` of the test representations and, for those with anomalies
    (``anomaly_for``: names, default every one with ``"digits"``), ``anomaly_auc``.

    ``probe`` and ``knn_accuracy`` carry ``_ci_low`` / ``_ci_high``, a 95 % bootstrap over the
    test images (:func:`helpers.metrics.bootstrap_interval`, seeded).

    Returns ``{"rows", "spectra", "rocs", "scores", "correct", "comparisons"}``
    (``scores[name] = (in_distribution, mnist)``; ``correct[name]`` the per-test-image 1/0 of the
    probe and the 3-NN; ``comparisons``: :func:`paired_comparisons`). A representation with fewer
    training rows than ``data`` (Laplacian eigenmaps) is probed with the labels of its first rows.
    """
    from threadpoolctl import threadpool_limits

    out = {"rows": [], "spectra": {}, "rocs": {}, "scores": {}, "correct": {}}
    with threadpool_limits(1):  # k-NN: one thread is faster on a shared 2-core machine
        for name, r in reps.items():
            y_train = data.y_train[: len(r["train"])]
            spec = spectrum(r["test"])
            correct = {
                "probe": linear_probe_correct(r["train"], y_train, r["test"], data.y_test, seed=seed),
                "knn_accuracy": evaluation.knn_correct(r["train"], y_train, r["test"], data.y_test, k=3),
            }
            row = {"representation": name, "dim": int(r["test"].shape[1])}
            for key, values in correct.items():
                metrics.with_interval(row, key, values.astype(np.float64), seed=seed)
            row.update(effective_rank=spec["effective_rank"], rank=spec["rank"])
            out["correct"][name] = correct
            out["spectra"][name] = spec["eigenvalues"]
            if "digits" in r and (anomaly_for is None or name in anomaly_for):
                s_in, s_out = anomaly_scores(r["train"], r["test"]), anomaly_scores(r["train"], r["digits"])
                out["rocs"][name] = anomaly_roc(s_in, s_out)
                out["scores"][name] = (s_in, s_out)
                row["anomaly_auc"] = out["rocs"][name]["auc"]
            out["rows"].append(row)
    out["comparisons"] = paired_comparisons(out["correct"], seed=seed)
    return out


#: (representation, against): the paired comparisons the notebook's prose rests on
COMPARISONS = (
    ("vicreg", "random encoder"),
    ("vicreg", "raw pixels"),
    ("vicreg_no_variance", "random encoder"),
    ("vicreg_no_variance", "vicreg"),
    ("vicreg_neighbours", "vicreg"),
)


def paired_comparisons(correct: dict, seed: int = 0) -> list[dict]:
    """The probe and 3-NN difference of each pair of :data:`COMPARISONS` present in ``correct``, on the
    same test images, with its 95 % bootstrap interval (:func:`helpers.metrics.paired_difference`):
    one of two is "better" only when ``excludes_zero``."""
    rows = []
    for a, b in COMPARISONS:
        if a not in correct or b not in correct:
            continue
        for figure in ("probe", "knn_accuracy"):
            diff = metrics.paired_difference(
                correct[a][figure].astype(np.float64), correct[b][figure].astype(np.float64), seed=seed
            )
            rows.append({"representation": a, "against": b, "figure": figure, **diff})
    return rows


LEARNED = ("vicreg", "vicreg_no_variance", "vicreg_neighbours")


def run_study(
    params: dict,
    seed: int = 42,
    source: str = "auto",
    cache_dir=None,
    force: bool = False,
    profile: str = "default",
    verbose: bool = True,
    with_projections: bool = True,
    fashion_dir=None,
    train_only: bool = False,
) -> dict:
    """Every step of notebook 10 in one call (the benchmark's): data, the three models, the floors,
    :func:`evaluate`, k-means of the test sample and (``with_projections``) PCA / t-SNE.
    ``cache_dir`` defaults to the study's folder of ``profile`` (:func:`helpers.studies.cache.folder`);
    ``timings`` in seconds.
    ``train_only`` stops after the three models (an accelerator trains; the CPU evaluates later from
    the same cache, where scikit-learn's probes and spectral embedding run as fast)."""
    timings, start = {}, time.perf_counter()
    cache_dir = cache_dir or cache.folder(CACHE_FOLDER, profile)
    data, digits = study_data(params, seed=seed, source=source, verbose=verbose, fashion_dir=fashion_dir)
    timings["data"] = time.perf_counter() - start
    out = {"data": data, "digits": digits, "models": {}, "records": {}, "reps": {}, "timings": timings}
    _train_models(out, params, cache_dir, force)
    if not train_only:
        _evaluate_study(out, params, seed, with_projections)
    timings["total"] = time.perf_counter() - start
    return out


def _train_models(out: dict, params: dict, cache_dir, force: bool) -> None:
    """Train (or load) the three models of :data:`LEARNED` into the study ``out``: VICReg and its
    ablation on two views of each image, then VICReg with neighbours in VICReg's space as positives."""
    data = out["data"]
    views = positives_dataset(data)
    _fit(out, "vicreg", views, params["epochs"], params, cache_dir, force)
    _fit(out, "vicreg_no_variance", views, params["ablation_epochs"], params, cache_dir, force)
    tables = {s: neighbour_table(out["reps"]["vicreg"][s]) for s in ("train", "val")}
    out["neighbour_same_class"] = same_class_share(tables["train"], data.y_train)
    _fit(
        out,
        "vicreg_neighbours",
        positives_dataset(data, tables["train"], tables["val"], "neighbours"),
        params["nn_epochs"],
        params,
        cache_dir,
        force,
    )


def _fit(out: dict, name: str, dataset, epochs: int, params: dict, cache_dir, force: bool) -> None:
    """Train model ``name`` (:func:`train_model`) and put its encoder, record, representations and
    training time into the study ``out``."""
    t = time.perf_counter()
    encoder, _, record = train_model(name, dataset, params, epochs, cache_dir, force)
    out["timings"][f"train_{name}"] = time.perf_counter() - t
    out["models"][name], out["records"][name] = encoder, record
    out["reps"][name] = embed_all(encoder, out["data"], out["digits"])


def _evaluate_study(out: dict, params: dict, seed: int, with_projections: bool) -> None:
    """Add to the study ``out`` the floors, :func:`evaluate`'s figures, k-means of a stratified test
    sample and (``with_projections``) its PCA / t-SNE projections, each step timed."""
    data, timings = out["data"], out["timings"]
    t = time.perf_counter()
    out["reps"].update(floors(data, out["digits"], params, seed=0))
    timings["floors"] = time.perf_counter() - t
    t = time.perf_counter()
    out.update(evaluate(out["reps"], data, seed=seed, anomaly_for=(*LEARNED, "raw pixels")))
    timings["evaluation"] = time.perf_counter() - t
    t = time.perf_counter()
    out["sample"] = sample = stratified_sample(data.y_test, params["sample"], seed)
    out["clusters"] = {
        name: clustering(out["reps"][name]["test"][sample], data.y_test[sample], seed=seed)
        for name in LEARNED
    }
    timings["clustering"] = time.perf_counter() - t
    if with_projections:
        t = time.perf_counter()
        out["projections"] = projections(
            {name: out["reps"][name]["test"][sample] for name in (*LEARNED, "Laplacian eigenmaps")},
            seed=seed,
            max_iter=params["tsne_iter"],
        )
        timings["projections"] = time.perf_counter() - t


def projections(reps: dict, seed: int = 42, max_iter: int = 500) -> dict:
    """``{name: {"pca": (n, 2), "tsne": (n, 2)}}`` of each representation (t-SNE after PCA to 50)."""
    from sklearn.decomposition import PCA
    from threadpoolctl import threadpool_limits

    out = {}
    with threadpool_limits(1):  # t-SNE: 6x faster on one thread than on a shared 2-core machine
        for name, rep in reps.items():
            out[name] = {
                "pca": PCA(2, random_state=seed).fit_transform(rep).astype(np.float32),
                "tsne": evaluation.project_2d(rep, method="tsne", seed=seed, max_iter=max_iter),
            }
    return out


def training_summary(study: dict) -> dict:
    """The training records of a :func:`run_study` (epochs, seconds, final loss terms)."""
    return {
        name: {
            "epochs_run": len(r["history"].get("epoch", [])),
            "train_seconds": float(r["train_seconds"]),
            "from_cache": bool(r["from_cache"]),
            "final": {k: r["history"][k][-1] for k in ("loss", *VICREG_TERMS) if r["history"].get(k)},
        }
        for name, r in study["records"].items()
    }


def summary(study: dict) -> dict:
    """The JSON-able figures of a :func:`run_study`: rows, clustering, training records."""
    records = training_summary(study)
    clusters = {
        name: {k: v for k, v in c.items() if k != "clusters"} for name, c in study["clusters"].items()
    }
    return {
        "sizes": {
            **{s: len(getattr(study["data"], f"y_{s}")) for s in ("train", "val", "test")},
            "anomalies": len(study["digits"]),
            "laplacian_train": len(study["reps"]["Laplacian eigenmaps"]["train"]),
        },
        "representations": study["rows"],
        "comparisons": study["comparisons"],
        "neighbour_same_class": study["neighbour_same_class"],
        "clustering": clusters,
        "models": records,
        "timings": {k: round(float(v), 2) for k, v in study["timings"].items()},
        "reference_cifar10": REFERENCE,
    }


RESULTS = {
    "default": config.ROOT / "benchmarks" / "results" / "vicreg.json",
    "full": config.ROOT / "benchmarks" / "results" / "vicreg_full.json",
}
#: (row label, representation, figure) of :func:`results_table`, with the reference's key
_TABLE = [
    ("linear probe: VICReg", "vicreg", "probe", "probe_vicreg"),
    ("linear probe: no variance term", "vicreg_no_variance", "probe", "probe_no_variance"),
    ("linear probe: neighbour positives", "vicreg_neighbours", "probe", "probe_neighbours"),
    ("linear probe: Laplacian eigenmaps", "Laplacian eigenmaps", "probe", "probe_laplacian"),
    ("linear probe: random encoder", "random encoder", "probe", None),
    ("linear probe: raw pixels", "raw pixels", "probe", None),
    ("effective rank: VICReg", "vicreg", "effective_rank", None),
    ("effective rank: no variance term", "vicreg_no_variance", "effective_rank", None),
    ("anomaly AUC: VICReg", "vicreg", "anomaly_auc", None),
    ("anomaly AUC: neighbour positives", "vicreg_neighbours", "anomaly_auc", None),
    ("anomaly AUC: raw pixels", "raw pixels", "anomaly_auc", None),
]


def results_table(paths: dict | None = None):
    """The committed figures of each profile (``RESULTS``: the benchmark's JSON files) beside the
    reference's CIFAR-10 ones, as a DataFrame; None when no results file exists yet."""
    import pandas as pd

    paths = RESULTS if paths is None else paths
    found = {p: json.loads(path.read_text()) for p, path in paths.items() if path.exists()}
    if not found:
        return None
    rows = []
    for label, rep, key, ref in _TABLE:
        row = {"figure": label, "reference (CIFAR-10)": REFERENCE.get(ref)}
        for profile, res in found.items():
            by_name = {r["representation"]: r for r in res["representations"]}
            row[profile] = by_name.get(rep, {}).get(key)
        rows.append(row)
    for key, ref in (
        ("silhouette_clusters", "silhouette_clusters"),
        ("silhouette_labels", "silhouette_labels"),
    ):
        row = {"figure": f"VICReg {key.replace('_', ' of the ')}", "reference (CIFAR-10)": REFERENCE[ref]}
        for profile, res in found.items():
            row[profile] = res["clustering"]["vicreg"][key]
        rows.append(row)
    for key in ("nmi", "ari"):
        row = {"figure": f"VICReg k-means {key.upper()}", "reference (CIFAR-10)": None}
        for profile, res in found.items():
            row[profile] = res["clustering"]["vicreg"][key]
        rows.append(row)
    table = pd.DataFrame(rows).set_index("figure")
    table.attrs["commands"] = {p: f"{r['command']} ({r['date']})" for p, r in found.items()}
    return table
