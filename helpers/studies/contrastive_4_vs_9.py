"""Study: a 2-D contrastive embedding of 4 vs 9, shifted digits, and the nearest-neighbour regime.

The reference (a course lab and its reflection essay) trains a Siamese network with a contrastive loss
on the 4s and 9s of MNIST into a 2-D embedding, looks at test digits shifted horizontally by
-6, -3, +3 and +6 pixels, and then restricts positives to each image's 5 nearest same-digit neighbours
(cosine similarity on pixels) under two negative regimes. This module holds what is specific to it:

- :func:`load_4_vs_9`: the 4/9 subset of a suite dataset, normalised with the subset's own mean and
  standard deviation (labels 0 = "4", 1 = "9"), with :meth:`Study4v9.shifted` and
  :meth:`Study4v9.with_shifted_training` built from the raw pixels by :func:`helpers.data.shift_images`;
- the samplers: :class:`NeighbourPairGenerator` (positives among the ``k`` nearest same-digit
  neighbours; negatives ``"other_digit"`` = regime 1, ``"not_neighbor"`` = regime 2, ``"graded"`` =
  regime 2 with the same-digit non-neighbours marked as a third pair kind for
  :func:`graded_contrastive`) and :func:`neighbour_triplets` (remedy a);
- the reference embedding network :func:`reference_net_4_vs_9` and the study's registry entries
  (:data:`STUDY`), trained and cached by :func:`helpers.training.train` like every model;
- :func:`separation_metrics`: digit separation (3-NN accuracy, silhouette of 4 vs 9, on plain and
  shifted test digits) and shift separation (silhouette of the shift groups within each digit).
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
from keras import layers, ops

from helpers import registry
from helpers.data import Dataset, load_dataset, shift_images
from helpers.losses import safe_sqrt, unstack
from helpers.samplers import GeneratorError, SiamesePairGenerator, TripletGenerator, register_sampler
from helpers.studies import cache

DIGITS = (4, 9)
CLASS_NAMES = ["4", "9"]
SHIFTS = (-6, -3, 3, 6)
NEIGHBORS = 5
NEGATIVE_REGIMES = ("other_digit", "not_neighbor", "graded")
# the study's models are cached in their own folder of models_cache (same train() path)
#: The study's folder of the models cache (:func:`helpers.studies.cache.folder`).
CACHE_FOLDER = "09_contrastive_4_vs_9"


# --- data -----------------------------------------------------------------------------------------


@dataclasses.dataclass
class Study4v9:
    """The 4/9 subset: ``data`` (normalised, labels 0 = "4", 1 = "9"), the raw pixels of each split and
    the subset's training-split ``mean`` / ``std`` (one scalar each, as the reference)."""

    data: Dataset
    raw: dict
    mean: float
    std: float

    def normalize(self, x) -> np.ndarray:
        return ((np.asarray(x, np.float32) - self.mean) / self.std).astype(np.float32)

    def counts(self) -> list[dict]:
        """How many 4s and 9s each split has."""
        rows = []
        for split in ("train", "val", "test"):
            _, y = self.data.split(split)
            rows.append({"split": split, "4": int((y == 0).sum()), "9": int((y == 1).sum()), "total": len(y)})
        return rows

    def shifted(self, split: str = "test", shifts=(0, *SHIFTS)):
        """``(x, digit, shift)``: the split's images shifted by each of ``shifts`` (raw pixels shifted,
        then normalised), concatenated shift by shift."""
        _, y = self.data.split(split)
        raw = self.raw[split]
        xs = [self.normalize(shift_images(raw, s)) for s in shifts]
        return (np.concatenate(xs), np.tile(y, len(shifts)), np.repeat(np.asarray(shifts, np.int64), len(y)))

    def with_shifted_training(self, shifts=SHIFTS) -> Dataset:
        """The dataset whose train and validation splits also hold their images shifted by ``shifts``."""
        x_train, y_train, _ = self.shifted("train", (0, *shifts))
        x_val, y_val, _ = self.shifted("val", (0, *shifts))
        return dataclasses.replace(
            self.data,
            name=f"{self.data.name}_shifted",
            x_train=x_train,
            y_train=y_train,
            x_val=x_val,
            y_val=y_val,
        )


def load_4_vs_9(dataset: str = "mnist", source: str = "auto", seed: int = 42) -> Study4v9:
    """Only the 4s and 9s of ``load_dataset(dataset, source, seed)``, normalised with the mean and
    standard deviation of this subset's training split."""
    full = load_dataset(dataset, source=source, seed=seed)
    raw, labels = {}, {}
    for split in ("train", "val", "test"):
        x, y = full.split(split)
        keep = np.isin(y, DIGITS)
        raw[split] = x[keep].astype(np.float32)
        labels[split] = (y[keep] == DIGITS[1]).astype(np.int64)
        if not keep.any() or len(np.unique(labels[split])) < 2:
            raise ValueError(
                f"the {split} split of {dataset!r} holds no 4s or no 9s; "
                "the study needs both digits in every split"
            )
    mean, std = float(raw["train"].mean()), float(raw["train"].std())

    def norm(a):
        return ((a - mean) / std).astype(np.float32)

    data = Dataset(
        name=f"{full.name}_4_vs_9",
        source=full.source,
        x_train=norm(raw["train"]),
        y_train=labels["train"],
        x_val=norm(raw["val"]),
        y_val=labels["val"],
        x_test=norm(raw["test"]),
        y_test=labels["test"],
        class_names=list(CLASS_NAMES),
    )
    return Study4v9(data=data, raw=raw, mean=mean, std=std)


def pixel_cosine_features(x) -> np.ndarray:
    """Flattened pixels, shifted so the darkest pixel is 0, scaled to unit norm: Euclidean nearest
    neighbours of these rows are the cosine nearest neighbours of the raw pixels (the study's
    normalisation ``(x - mean) / std`` is undone up to a scale, which cosine ignores)."""
    f = np.asarray(x, np.float32).reshape(len(x), -1)
    f = f - f.min()
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


# --- samplers -------------------------------------------------------------------------------------


class NeighbourPairGenerator(SiamesePairGenerator):
    """Pairs ``((x0, x1), y)`` whose positives are among each anchor's ``neighbors`` nearest same-digit
    images (cosine similarity on pixels, the generators' ``positive_neighbors``).

    ``negatives``: ``"other_digit"`` (regime 1: a uniform image of the other digit, ``y = 0``);
    ``"not_neighbor"`` (regime 2: with probability ``same_digit_fraction`` a uniform same-digit image
    that is not one of the anchor's neighbours, else the other digit, both ``y = 0``); ``"graded"``
    (regime 2's pairs, the same-digit non-neighbours labelled ``y = 2``, ``PAIR_NEAR``, for
    :class:`GradedContrastiveLoss`). Half of each batch is positive. Deterministic per
    ``(seed, epoch, batch)`` like every generator.
    """

    def __init__(
        self,
        x,
        y,
        negatives: str = "other_digit",
        neighbors: int = NEIGHBORS,
        same_digit_fraction: float = 0.5,
        **kwargs,
    ):
        if negatives not in NEGATIVE_REGIMES:
            raise GeneratorError(f"negatives must be one of {NEGATIVE_REGIMES}, got {negatives!r}.")
        if not 0.0 <= same_digit_fraction <= 1.0:
            raise GeneratorError(f"same_digit_fraction must be in [0, 1], got {same_digit_fraction!r}.")
        for key in ("positive_neighbors", "embeddings", "embed_fn", "mining"):
            if key in kwargs:
                raise GeneratorError(f"{key} is fixed by NeighbourPairGenerator; do not pass it.")
        super().__init__(x, y, positive_neighbors=neighbors, embeddings=pixel_cosine_features(x), **kwargs)
        self.negatives = negatives
        self.same_digit_fraction = float(same_digit_fraction)
        if negatives != "other_digit":
            small = self.index.classes[self.index.counts <= self.positive_neighbors + 1]
            if len(small):
                raise GeneratorError(
                    f"class {small[0].item()!r} has no image outside an anchor's {self.positive_neighbors} "
                    f"neighbours; add images or lower neighbors."
                )

    def _not_neighbors(self, anchors, rng):
        """A uniform same-class image of each anchor that is neither the anchor nor its neighbour."""
        out = self.index.other_member(anchors, rng)
        bad = (self.pos_table[anchors] == out[:, None]).any(axis=1)
        while bad.any():  # rejection: at most k of the class's n - 1 candidates are refused
            out[bad] = self.index.other_member(anchors[bad], rng)
            bad[bad] = (self.pos_table[anchors[bad]] == out[bad, None]).any(axis=1)
        return out

    def _draw(self, i):
        self._check_index(i)
        rng = self.rng(i)
        b = self.batch_size
        n_pos = b // 2
        i0 = self._anchors(b, rng)
        pos = self._positives(i0[:n_pos], rng)
        anchors = i0[n_pos:]
        neg = self.index.members(self.index.other_class(self.index.cls[anchors], rng), rng)
        near = np.zeros(len(anchors), bool)
        if self.negatives != "other_digit":
            near = rng.random(len(anchors)) < self.same_digit_fraction
            neg[near] = self._not_neighbors(anchors[near], rng)
        neg_label = np.where(near & (self.negatives == "graded"), PAIR_NEAR, PAIR_DISSIMILAR)
        i1 = np.concatenate([pos, neg])
        label = np.concatenate([np.full(n_pos, PAIR_SIMILAR, np.int64), neg_label.astype(np.int64)])
        perm = rng.permutation(b)
        return (i0[perm], i1[perm], label[perm]), rng


def neighbour_triplets(x, y, neighbors: int = NEIGHBORS, **kwargs) -> TripletGenerator:
    """Triplets (remedy a): positive among the anchor's ``neighbors`` nearest same-digit images
    (cosine on pixels), negative a uniform image of the other digit."""
    return TripletGenerator(x, y, positive_neighbors=neighbors, embeddings=pixel_cosine_features(x), **kwargs)


# --- the graded contrastive loss (regime 2's third pair kind) -----------------------------------

# pair kinds of graded_contrastive
PAIR_DISSIMILAR, PAIR_SIMILAR, PAIR_NEAR = 0, 1, 2


def graded_contrastive(x0, x1, kind, margin: float = 1.0, near_margin: float = 0.5):
    """Contrastive loss with three kinds of pair, per pair ``(batch,)``.

    ``kind`` 1 (similar): ``0.5 * d^2``; 0 (dissimilar): ``0.5 * max(0, margin - d)^2``;
    2 (near, e.g. the same class but not a nearest neighbour): ``0.5 * max(0, near_margin - d)^2``,
    with ``d = ||x0 - x1||`` (safe sqrt). With no kind-2 pair it equals :func:`helpers.losses.contrastive`.
    """
    if not 0.0 <= near_margin <= margin:
        raise ValueError(
            f"near_margin must be in [0, margin={margin}], got {near_margin}; "
            "the near pairs are pushed apart less than the dissimilar ones."
        )
    x0 = ops.convert_to_tensor(x0)
    x1 = ops.convert_to_tensor(x1, dtype=x0.dtype)
    kind = ops.reshape(ops.cast(kind, "int32"), (-1,))
    d2 = ops.sum(ops.square(x0 - x1), axis=-1)
    d = safe_sqrt(d2)
    target = ops.where(ops.equal(kind, PAIR_NEAR), near_margin, margin)
    push = ops.square(ops.relu(ops.cast(target, x0.dtype) - d))
    return 0.5 * ops.where(ops.equal(kind, PAIR_SIMILAR), d2, push)


@keras.saving.register_keras_serializable(package="helpers")
class GradedContrastiveLoss(keras.losses.Loss):
    """Keras wrapper of :func:`graded_contrastive`.

    ``y_true``: ``(batch,)`` pair kinds (1 similar, 0 dissimilar, 2 near); ``y_pred``: ``(batch, 2, d)``.
    """

    def __init__(
        self, margin: float = 1.0, near_margin: float = 0.5, name: str = "graded_contrastive_loss", **kwargs
    ):
        super().__init__(name=name, **kwargs)
        if not 0.0 <= near_margin <= margin:
            raise ValueError(f"near_margin must be in [0, margin={margin}], got {near_margin}.")
        self.margin = float(margin)
        self.near_margin = float(near_margin)

    def call(self, y_true, y_pred):
        x0, x1 = unstack(y_pred, 2, "GradedContrastiveLoss")
        return graded_contrastive(x0, x1, y_true, margin=self.margin, near_margin=self.near_margin)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin, "near_margin": self.near_margin}


# --- models ----------------------------------------------------------------------------------------


def reference_net_4_vs_9(input_shape=(28, 28, 1), embedding_dim=2):
    """The reference's embedding network: Conv2D(16, 5) PReLU MaxPool, Conv2D(64, 3) PReLU MaxPool,
    Dense 256 PReLU, Dense 64 PReLU, Dense ``embedding_dim`` (2). One PReLU slope per layer starting at
    0.25, as PyTorch's ``nn.PReLU()``."""

    def prelu(axes):
        return layers.PReLU(alpha_initializer=keras.initializers.Constant(0.25), shared_axes=axes)

    inputs = keras.Input(input_shape, name="image")
    x = layers.Conv2D(16, 5, name="conv1")(inputs)
    x = prelu([1, 2, 3])(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(64, 3, name="conv2")(x)
    x = prelu([1, 2, 3])(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = prelu([1])(layers.Dense(256)(x))
    x = prelu([1])(layers.Dense(64)(x))
    outputs = layers.Dense(embedding_dim, name="embedding")(x)
    return keras.Model(inputs, outputs, name="reference_net_4_vs_9")


@dataclasses.dataclass(frozen=True)
class RegimeSpec(registry.ModelSpec):
    """A study entry: the registry's fields plus the sampler's (all in the cache fingerprint).

    ``negatives`` picks the :class:`NeighbourPairGenerator` regime, ``near_margin`` the graded loss's
    margin of same-digit non-neighbours, ``train_shifts`` the shifts added to the training data
    (``()``: plain digits)."""

    negatives: str = "other_digit"
    neighbors: int = NEIGHBORS
    same_digit_fraction: float = 0.5
    near_margin: float = 0.5
    train_shifts: tuple = ()


def _pair_factory(spec, x, y, batch_size, steps_per_epoch, seed, augment):
    return NeighbourPairGenerator(
        x,
        y,
        negatives=spec.negatives,
        neighbors=spec.neighbors,
        same_digit_fraction=spec.same_digit_fraction,
        batch_size=batch_size,
        steps_per_epoch=steps_per_epoch,
        seed=seed,
        augment=augment,
    )


def _triplet_factory(spec, x, y, batch_size, steps_per_epoch, seed, augment):
    return neighbour_triplets(
        x,
        y,
        neighbors=spec.neighbors,
        batch_size=batch_size,
        steps_per_epoch=steps_per_epoch,
        seed=seed,
        augment=augment,
    )


register_sampler("nn_pairs", 2, _pair_factory)
register_sampler("nn_triplets", 3, _triplet_factory)
registry.register_loss(
    "graded_contrastive",
    lambda spec: GradedContrastiveLoss(margin=spec.margin, near_margin=spec.near_margin),
)

# about 10 s of CPU per model on 2 cores (160 steps of 64 pairs); the 2-minute notebook budget
_BUDGET = {"epochs": 4, "steps_per_epoch": 40, "batch_size": 64, "embedding_dim": 2}
_COMMON = {"builder": reference_net_4_vs_9, "margin": 1.0, **_BUDGET}

# name -> what it is, in the order of the notebook's table
STUDY: dict[str, RegimeSpec] = {
    spec.name: registry.register(spec)
    for spec in [
        RegimeSpec(
            "c49_inlab",
            loss="contrastive",
            generator="pairs",
            description="in-lab: any same-digit positive, other-digit negative",
            **_COMMON,
        ),
        RegimeSpec(
            "c49_nn_regime1",
            loss="contrastive",
            generator="nn_pairs",
            negatives="other_digit",
            description="out-lab regime 1: 5-NN positives, other-digit negatives",
            **_COMMON,
        ),
        RegimeSpec(
            "c49_nn_regime2",
            loss="contrastive",
            generator="nn_pairs",
            negatives="not_neighbor",
            description="out-lab regime 2: 5-NN positives, other digit or same-digit non-neighbour negatives",
            **_COMMON,
        ),
        RegimeSpec(
            "c49_nn_triplet",
            loss="triplet",
            generator="nn_triplets",
            description="remedy (a): triplets, 5-NN positive, other-digit negative",
            **_COMMON,
        ),
        RegimeSpec(
            "c49_nn_graded",
            loss="graded_contrastive",
            generator="nn_pairs",
            negatives="graded",
            near_margin=0.5,
            description="remedy (b): graded pairs, same-digit non-neighbours to margin 0.5, "
            "other digit to 1.0",
            **_COMMON,
        ),
        RegimeSpec(
            "c49_inlab_shifted",
            loss="contrastive",
            generator="pairs",
            train_shifts=SHIFTS,
            description="in-lab answer: the in-lab model trained on shifted digits too",
            **_COMMON,
        ),
        RegimeSpec(
            "c49_nn_graded_shifted",
            loss="graded_contrastive",
            generator="nn_pairs",
            negatives="graded",
            near_margin=0.5,
            train_shifts=SHIFTS,
            description="remedy (b) trained on shifted digits too",
            **_COMMON,
        ),
    ]
}


def training_data(name: str, study: Study4v9) -> Dataset:
    """The dataset the study model ``name`` trains on (plain, or with its ``train_shifts``)."""
    spec = STUDY[name]
    return study.with_shifted_training(spec.train_shifts) if spec.train_shifts else study.data


def train_study_model(name: str, study: Study4v9, **kwargs):
    """``helpers.training.train`` on the model's own training data; returns ``(embedding, record)``."""
    from helpers.training import train

    if name not in STUDY:
        raise ValueError(f"unknown study model {name!r}; choose one of: {', '.join(STUDY)}")
    kwargs.setdefault("cache_dir", cache.folder(CACHE_FOLDER))
    return train(name, training_data(name, study), **kwargs)


# --- measurements ----------------------------------------------------------------------------------


def embedding_views(embed_fn, study: Study4v9, shifts=SHIFTS) -> dict:
    """``{"train": (emb, digit, shift), "test": ..., "test_shifted": ...}``; ``test_shifted`` holds the
    plain test digits (shift 0) and every shift of ``shifts``. ``embed_fn`` maps images to vectors."""
    x_sh, y_sh, s_sh = study.shifted("test", (0, *shifts))
    d = study.data
    # one call for every view: one prediction graph instead of one per array size
    emb = embed_fn(np.concatenate([d.x_train, d.x_test, x_sh]))
    e_tr, e_te, e_sh = np.split(emb, [len(d.x_train), len(d.x_train) + len(d.x_test)])
    return {
        "train": (e_tr, d.y_train, np.zeros(len(d.y_train), np.int64)),
        "test": (e_te, d.y_test, np.zeros(len(d.y_test), np.int64)),
        "test_shifted": (e_sh, y_sh, s_sh),
    }


def _silhouette(emb, labels) -> float:
    from sklearn.metrics import silhouette_score

    if len(np.unique(labels)) < 2:
        return float("nan")
    return float(silhouette_score(emb, labels, metric="euclidean"))


def _loo_knn_accuracy(emb, labels, k: int) -> float:
    """Majority vote of each point's ``k`` nearest other points (exact, FAISS), against its label."""
    from helpers.knn import exact_knn

    idx, _ = exact_knn(emb, emb, k, exclude=np.arange(len(emb)))
    votes = labels[idx]
    predicted = np.array([np.bincount(v).argmax() for v in votes])
    return float((predicted == labels).mean())


def separation_metrics(views: dict, k: int = 3) -> dict:
    """Digit and shift separation of one model's :func:`embedding_views`.

    - ``knn_plain`` / ``knn_shifted``: ``k``-NN accuracy of the plain / the shifted (every non-zero
      shift) test digits against the plain training digits;
    - ``knn_shifted_loo``: leave-one-out ``k``-NN accuracy among the shifted test digits themselves
      (is each shifted digit among digits of its own class, wherever the plain ones lie?);
    - ``sil_plain`` / ``sil_shifted``: silhouette of the labels 4 vs 9 on those same points;
    - ``shift_sil_6``: silhouette of the groups -6 and +6 within each digit, averaged over the digits;
      ``shift_sil_all``: the same over every shift group, 0 included;
    - ``four_cluster_sil``: silhouette of the four groups 4-6, 4+6, 9-6, 9+6 (the reference's aim).
    """
    from helpers.evaluation import knn_accuracy

    e_tr, y_tr, _ = views["train"]
    e_te, y_te, _ = views["test"]
    e_sh, y_sh, s_sh = views["test_shifted"]
    moved = s_sh != 0
    far = np.abs(s_sh) == max(abs(int(s)) for s in np.unique(s_sh))
    out = {
        "knn_plain": knn_accuracy(e_tr, y_tr, e_te, y_te, k=k),
        "sil_plain": _silhouette(e_te, y_te),
        "knn_shifted": knn_accuracy(e_tr, y_tr, e_sh[moved], y_sh[moved], k=k),
        "knn_shifted_loo": _loo_knn_accuracy(e_sh[moved], y_sh[moved], k),
        "sil_shifted": _silhouette(e_sh[moved], y_sh[moved]),
        "shift_sil_6": float(
            np.mean([_silhouette(e_sh[far & (y_sh == c)], s_sh[far & (y_sh == c)]) for c in np.unique(y_sh)])
        ),
        "shift_sil_all": float(
            np.mean([_silhouette(e_sh[y_sh == c], s_sh[y_sh == c]) for c in np.unique(y_sh)])
        ),
        "four_cluster_sil": _silhouette(e_sh[far], y_sh[far] * 100 + s_sh[far]),
    }
    return out


def pixel_views(study: Study4v9, shifts=SHIFTS) -> dict:
    """:func:`embedding_views` of the raw-pixel baseline (the normalised pixels as 784-d vectors)."""
    return embedding_views(lambda x: np.asarray(x, np.float32).reshape(len(x), -1), study, shifts)


def four_group_labels(digit, shift) -> tuple[np.ndarray, list[str]]:
    """Group ids and names of the four target clusters (4-6, 4+6, 9-6, 9+6); other points get -1."""
    digit, shift = np.asarray(digit), np.asarray(shift)
    lo, hi = -max(abs(int(s)) for s in SHIFTS), max(abs(int(s)) for s in SHIFTS)
    names = [f"{CLASS_NAMES[c]}{s:+d}" for c in (0, 1) for s in (lo, hi)]
    group = np.full(len(digit), -1, np.int64)
    for g, (c, s) in enumerate([(c, s) for c in (0, 1) for s in (lo, hi)]):
        group[(digit == c) & (shift == s)] = g
    return group, names


def measure(name: str, study: Study4v9, **train_kwargs) -> tuple[dict, dict]:
    """Train (or load) the study model ``name`` and measure it: ``(row, views)`` where ``row`` holds
    :func:`separation_metrics` plus ``train_seconds`` / ``from_cache``. ``name="pixels"`` measures
    the raw-pixel baseline."""
    from helpers.evaluation import embed

    if name == "pixels":
        views = pixel_views(study)
        return {"model": name, **separation_metrics(views)}, views
    emb, record = train_study_model(name, study, **train_kwargs)
    views = embedding_views(lambda x: embed(emb, x), study)
    row = {
        "model": name,
        **separation_metrics(views),
        "train_seconds": float(record["train_seconds"]),
        "from_cache": bool(record["from_cache"]),
    }
    return row, views
