"""The samplers: pair, triplet and P x K batch generators (``keras.utils.PyDataset`` subclasses).

- :class:`SiamesePairGenerator` → ``((x0, x1), y)``, ``y`` float32, 1 = same class, 0 = different,
  exactly half/half (odd batch: ``batch // 2`` similar pairs, the rest dissimilar);
- :class:`TripletGenerator` → ``((a, p, n), zeros float32)``;
- :class:`TripletClsGenerator` → ``((a, p, n), (zeros float32, y_anchor int32))``;
- :class:`PKBatchGenerator` → ``(images, labels int32)``: P classes x K images, for online mining
  losses (:class:`helpers.losses.BatchHardTripletLoss`).

Determinism
-----------
Batch ``i`` of epoch ``e`` is drawn from ``np.random.default_rng([seed, e, i])`` and nothing else, so
the same seed gives the same batches, every epoch gives new ones, batches can be produced in any order
by any number of workers, and a run resumed with ``set_epoch(k)`` draws exactly what an uninterrupted
run would (with ``embed_fn`` mining the tables also depend on the model, which is the point).
``on_epoch_end()`` advances the epoch. ``batch_indices(i)`` returns the index arrays of batch ``i``.

Speed
-----
Samples are grouped by class once (``order`` sorted by class, ``offsets``/``counts`` per class), so
choosing the anchors, positives and negatives of a whole batch is a handful of array operations —
never one Python call per sample. Anchors are drawn class-balanced (a uniform class, then a uniform
member), like the reference sampler.

Feature-space sampling
----------------------
With ``embeddings`` (``(n, d)``, precomputed) or ``embed_fn`` (``images -> embeddings``, called on
construction and every ``refresh_every`` epochs), ``mining="hard"`` draws each negative uniformly from
the ``mining_pool`` nearest other-class samples of the anchor; ``mining="semi-hard"`` from the
``mining_pool`` nearest other-class samples farther from the anchor than the positive
(``d(a, n) > d(a, p)``), falling back to the hard rule when the candidate table holds none.
``mine_positives=True`` also draws positives from the ``mining_pool`` farthest same-class samples.
Neighbour tables are precomputed on refresh, class by class, with the suite's one exact k-NN search
(:func:`helpers.knn.exact_knn`, FAISS). ``benchmarks/archive/results/mining.json`` has the seconds per table
on 3,000 and 42,000 images.

``positive_neighbors=k`` (``True`` → 5) restricts positives to the ``k`` nearest same-class neighbours
of the anchor (pixel space, or ``embeddings`` when given), never the anchor itself.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable

import keras
import numpy as np

from helpers import checks, knn
from helpers.augment import Augmenter

__all__ = [
    "GeneratorError",
    "ClassIndex",
    "EpochSeededDataset",
    "SiamesePairGenerator",
    "TripletGenerator",
    "TripletClsGenerator",
    "PKBatchGenerator",
    "GENERATORS",
    "get_generator",
    "GENERATOR_KINDS",
    "GeneratorKind",
    "register_sampler",
]

MINING = ("random", "hard", "semi-hard")
_SEMI_HARD_DEPTH = 8  # semi-hard candidate table holds mining_pool * this many neighbours


class GeneratorError(ValueError):
    """Invalid input to a generator (message says what is wrong and how to fix it)."""


# --- augmentation --------------------------------------------------------------------------------


def _make_augmenter(augment):
    if augment is False or augment is None:
        return None
    if augment is True:
        return Augmenter()
    if callable(augment):
        return augment
    raise GeneratorError(f"augment must be True, False or an Augmenter instance, got {augment!r}.")


# --- validation and class index ----------------------------------------------------------------


def _check_xy(x, y):
    x = np.asarray(x)
    y = checks.labels_1d(y, GeneratorError, "labels must be a 1-d array of class ids, got shape {shape}.")
    checks.same_length(
        len(x),
        len(y),
        GeneratorError,
        "images and labels have different lengths ({first} images, {second} labels); pass matching arrays.",
    )
    checks.no_nan_pixels(
        x, GeneratorError, "images contain NaN pixels ({images} images); clean or drop them before sampling."
    )
    return x, y


def _check_batch_size(batch_size, what="batch_size"):
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise GeneratorError(f"{what} must be a positive integer, got {batch_size!r}.")
    return int(batch_size)


def _positive_neighbors(positive_neighbors):
    """``positive_neighbors`` as None or a positive int (``True`` -> 5, ``False`` -> None)."""
    if positive_neighbors is True:
        return 5
    if positive_neighbors is False or positive_neighbors is None:
        return None
    return _check_batch_size(positive_neighbors, "positive_neighbors")


class ClassIndex:
    """Samples grouped by class: ``order[offsets[c]:offsets[c] + counts[c]]`` are the indices of class ``c``."""

    def __init__(self, y):
        self.classes, self.cls = np.unique(y, return_inverse=True)
        self.cls = self.cls.astype(np.int64)
        self.num_classes = len(self.classes)
        self.order = np.argsort(self.cls, kind="stable")
        self.counts = np.bincount(self.cls, minlength=self.num_classes)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)[:-1]])
        self.rank = np.empty(len(y), dtype=np.int64)  # position of each sample inside its class block
        self.rank[self.order] = np.arange(len(y)) - np.repeat(self.offsets, self.counts)

    def require_two_classes(self):
        if self.num_classes < 2:
            raise GeneratorError(
                f"need at least two classes to build negatives, got {self.num_classes} "
                f"({self.classes.tolist()}); pass images of several classes."
            )

    def require_pairs(self):
        single = self.classes[self.counts < 2]
        if len(single):
            raise GeneratorError(
                f"class {single[0].item()!r} has a single image, so it has no positive partner "
                f"({len(single)} such classes: {single[:10].tolist()}); drop these classes or add images."
            )

    def members(self, c, rng):
        """One uniform member of each class in the array ``c``."""
        return self.order[self.offsets[c] + rng.integers(0, self.counts[c])]

    def other_member(self, anchors, rng):
        """One uniform member of each anchor's class, never the anchor itself."""
        c = self.cls[anchors]
        r = rng.integers(0, self.counts[c] - 1)
        r = r + (r >= self.rank[anchors])
        return self.order[self.offsets[c] + r]

    def other_class(self, c, rng):
        """A uniform class different from each class in ``c``."""
        return (c + 1 + rng.integers(0, self.num_classes - 1, size=len(c))) % self.num_classes


# --- neighbour tables --------------------------------------------------------------------------


def same_class_neighbors(features, index: ClassIndex, k: int, largest: bool = False):
    """``(table (n, k) int64, valid (n,) int64)``: the ``k`` nearest (``largest``: farthest) same-class
    samples of each sample, the sample itself excluded; rows of small classes hold ``counts - 1`` valid
    entries (the rest repeat the last valid one)."""
    f = knn.as_vectors(features, "features")
    table = np.zeros((len(f), k), dtype=np.int64)
    valid = np.minimum(index.counts[index.cls] - 1, k)
    for c in range(index.num_classes):
        members = index.order[index.offsets[c] : index.offsets[c] + index.counts[c]]
        if len(members) < 2:
            table[members] = members[:, None]
            continue
        kk = min(k, len(members) - 1)
        own = np.arange(len(members))  # each member leaves itself out, by index
        idx, _ = knn.exact_knn(f[members], f[members], kk, exclude=own, farthest=largest)
        t = members[idx]
        if kk < k:
            t = np.concatenate([t, np.repeat(t[:, -1:], k - kk, axis=1)], axis=1)
        table[members] = t
    return table, valid


def other_class_neighbors(features, index: ClassIndex, k: int):
    """``(table (n, k) int64, sq_dist (n, k) float32)``: the ``k`` nearest other-class samples of each sample.

    Class by class: the rows of class ``c`` are searched among the samples of every other class only,
    so no mask is needed.
    """
    f = knn.as_vectors(features, "features")
    n = len(f)
    k = min(k, n - int(index.counts.max()))  # every row has at least this many other-class samples
    table = np.empty((n, k), dtype=np.int64)
    dist = np.empty((n, k), dtype=np.float32)
    for c in range(index.num_classes):
        lo, hi = index.offsets[c], index.offsets[c] + index.counts[c]
        members = index.order[lo:hi]
        others = np.concatenate([index.order[:lo], index.order[hi:]])
        idx, dist[members] = knn.exact_knn(f[members], f[others], k)
        table[members] = others[idx]
    return table, dist


# --- generators --------------------------------------------------------------------------------


class EpochSeededDataset(keras.utils.PyDataset):
    """Epoch bookkeeping shared by every generator (a study's sampler subclasses it too, calling
    :meth:`init_epochs` once ``x`` and ``batch_size`` are set): batch ``i`` of epoch ``e`` is drawn with
    ``np.random.default_rng([seed, e, i])``, so the same seed gives the same batches and a resumed
    run (``set_epoch(k)``) draws what an uninterrupted one would."""

    def init_epochs(self, steps_per_epoch, seed, augment):
        """Steps per epoch (``len(x) // batch_size`` when None), the seed, epoch 0 and the augmenter."""
        if steps_per_epoch is None:
            steps_per_epoch = max(1, len(self.x) // self.batch_size)
        self.steps_per_epoch = _check_batch_size(steps_per_epoch, "steps_per_epoch")
        self.seed = int(seed)
        self.epoch = 0
        self.augmenter = _make_augmenter(augment)

    def __len__(self):
        return self.steps_per_epoch

    def set_epoch(self, epoch: int):
        """Position the generator at ``epoch`` (used on resume)."""
        self.epoch = int(epoch)

    def on_epoch_end(self):
        self.set_epoch(self.epoch + 1)

    def rng(self, i: int) -> np.random.Generator:
        """The generator that draws batch ``i`` of the current epoch."""
        return np.random.default_rng([self.seed, self.epoch, int(i)])


class _SamplingGenerator(EpochSeededDataset):
    """Shared machinery: validation, class index, epochs, RNG, augmentation, mining tables."""

    needs_positives = True

    def __init__(
        self,
        x,
        y,
        batch_size: int = 64,
        steps_per_epoch: int | None = None,
        seed: int = 0,
        augment=False,
        embeddings=None,
        embed_fn=None,
        mining: str = "random",
        mining_pool: int = 10,
        refresh_every: int = 1,
        positive_neighbors=None,
        mine_positives: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._init_data(x, y, batch_size)
        self.init_epochs(steps_per_epoch, seed, augment)
        self._init_mining(mining, mining_pool, refresh_every, mine_positives)
        embeddings = self._check_features(embeddings, embed_fn)
        self.positive_neighbors = _positive_neighbors(positive_neighbors)
        self._init_tables(embeddings)

    # construction, step by step -------------------------------------------------------------

    def _init_data(self, x, y, batch_size):
        """Validated images and labels, the batch size and the class index."""
        self.x, self.y = _check_xy(x, y)
        self.batch_size = _check_batch_size(batch_size)
        self.index = ClassIndex(self.y)
        self.index.require_two_classes()
        if self.needs_positives:
            self.index.require_pairs()

    def _init_mining(self, mining, mining_pool, refresh_every, mine_positives):
        """The mining rule and its pool; see the module docstring."""
        if mining not in MINING:
            raise GeneratorError(f"mining must be one of {MINING}, got {mining!r}.")
        self.mining = mining
        self.mining_pool = _check_batch_size(mining_pool, "mining_pool")
        self.refresh_every = _check_batch_size(refresh_every, "refresh_every")
        self.mine_positives = bool(mine_positives)

    def _check_features(self, embeddings, embed_fn):
        """Keep ``embed_fn``; return ``embeddings`` as a checked float32 (n, d) array (or None)."""
        if embeddings is not None and embed_fn is not None:
            raise GeneratorError("pass either embeddings or embed_fn, not both.")
        self.embed_fn = embed_fn
        self.embeddings = None
        if embeddings is not None:
            embeddings = np.asarray(embeddings, dtype=np.float32)
            if embeddings.ndim != 2 or len(embeddings) != len(self.x):
                raise GeneratorError(
                    f"embeddings must have shape (n_images={len(self.x)}, d), got {embeddings.shape}."
                )
            if np.isnan(embeddings).any():
                raise GeneratorError("embeddings contain NaN; recompute them before mining.")
        needs_features = self.mining != "random" or self.mine_positives
        if needs_features and embeddings is None and embed_fn is None:
            raise GeneratorError(
                f"mining={self.mining!r} / mine_positives need embeddings=(n, d) array or embed_fn=callable."
            )
        return embeddings

    def _init_tables(self, embeddings):
        """Build the neighbour tables the options ask for (from ``embeddings``, ``embed_fn`` or pixels)."""
        self._lock = threading.Lock()
        self._refreshed_epoch = None
        self.neg_table = self.neg_dist = None
        self.pos_table = self.pos_valid = None
        self.hardpos_table = self.hardpos_valid = None
        if embeddings is not None:
            self._build_tables(embeddings)
        elif self.embed_fn is not None:
            self.refresh()
        elif self.positive_neighbors is not None:
            self.pos_table, self.pos_valid = same_class_neighbors(self.x, self.index, self.positive_neighbors)

    # epochs ---------------------------------------------------------------------------------

    def set_epoch(self, epoch: int):
        """Position the generator at ``epoch`` (resume); refreshes ``embed_fn`` tables when due."""
        super().set_epoch(epoch)
        if self.embed_fn is not None and self.epoch % self.refresh_every == 0:
            self.refresh()

    def refresh(self):
        """Recompute embeddings with ``embed_fn`` and rebuild the neighbour tables."""
        if self.embed_fn is None:
            return
        with self._lock:
            if self._refreshed_epoch == self.epoch:
                return
            emb = np.asarray(self.embed_fn(self.x), dtype=np.float32)
            if emb.ndim != 2 or len(emb) != len(self.x):
                raise GeneratorError(f"embed_fn must return an (n_images, d) array, got shape {emb.shape}.")
            self.embeddings = None
            self._build_tables(emb)
            self._refreshed_epoch = self.epoch

    def _build_tables(self, emb):
        self.embeddings = emb
        if self.mining == "hard":
            self.neg_table, self.neg_dist = other_class_neighbors(emb, self.index, self.mining_pool)
        elif self.mining == "semi-hard":
            self.neg_table, self.neg_dist = other_class_neighbors(
                emb, self.index, self.mining_pool * _SEMI_HARD_DEPTH
            )
        if self.positive_neighbors is not None:
            self.pos_table, self.pos_valid = same_class_neighbors(emb, self.index, self.positive_neighbors)
        if self.mine_positives:
            self.hardpos_table, self.hardpos_valid = same_class_neighbors(
                emb, self.index, self.mining_pool, largest=True
            )

    # vectorised sampling --------------------------------------------------------------------

    def _check_index(self, i):
        if not 0 <= int(i) < len(self):
            raise IndexError(f"batch index {i} out of range for {len(self)} batches per epoch.")

    def _anchors(self, size, rng):
        c = rng.integers(0, self.index.num_classes, size=size)
        return self.index.members(c, rng)

    def _positives(self, anchors, rng):
        if self.hardpos_table is not None:
            table, valid = self.hardpos_table, self.hardpos_valid
        elif self.pos_table is not None:
            table, valid = self.pos_table, self.pos_valid
        else:
            return self.index.other_member(anchors, rng)
        r = rng.integers(0, valid[anchors])
        return table[anchors, r]

    def _negatives(self, anchors, positives, rng):
        if self.mining == "random":
            c = self.index.other_class(self.index.cls[anchors], rng)
            return self.index.members(c, rng)
        pool = min(self.mining_pool, self.neg_table.shape[1])
        hard_pick = rng.integers(0, pool, size=len(anchors))
        if self.mining == "hard":
            return self.neg_table[anchors, hard_pick]
        # semi-hard: among the candidates farther than the positive, a uniform one of the `pool` nearest
        e = self.embeddings
        d_ap = np.einsum("ij,ij->i", e[anchors] - e[positives], e[anchors] - e[positives])
        mask = self.neg_dist[anchors] > d_ap[:, None]
        count = np.minimum(mask.sum(axis=1), pool)
        r = (rng.random(len(anchors)) * np.maximum(count, 1)).astype(np.int64)
        j = np.argmax(mask & (np.cumsum(mask, axis=1) == (r + 1)[:, None]), axis=1)
        j = np.where(count > 0, j, hard_pick)
        return self.neg_table[anchors, j]

    def _augment(self, images, rng):
        return images if self.augmenter is None else self.augmenter(images, rng)


class SiamesePairGenerator(_SamplingGenerator):
    """Pairs of images for contrastive training: ``((x0, x1), y)``.

    ``y`` float32 ``(batch,)``: 1 = same class (``batch // 2`` pairs), 0 = different class (the rest),
    in a shuffled order. Negative partners follow ``mining``; positive partners follow
    ``positive_neighbors`` / ``mine_positives``. See the module docstring for the common parameters.
    """

    def batch_indices(self, i):
        """``(i0, i1, label)`` integer arrays of batch ``i`` (label 1 = same class)."""
        return self._draw(i)[0]

    def _draw(self, i):
        self._check_index(i)
        rng = self.rng(i)
        b = self.batch_size
        n_pos = b // 2
        i0 = self._anchors(b, rng)
        pos = self._positives(i0[:n_pos], rng)
        # semi-hard negatives are defined relative to a positive of the same anchor
        ref = self._positives(i0[n_pos:], rng) if self.mining == "semi-hard" else None
        neg = self._negatives(i0[n_pos:], ref, rng)
        i1 = np.concatenate([pos, neg])
        label = np.concatenate([np.ones(n_pos, np.int64), np.zeros(b - n_pos, np.int64)])
        perm = rng.permutation(b)
        return (i0[perm], i1[perm], label[perm]), rng

    def __getitem__(self, i):
        (i0, i1, label), rng = self._draw(i)
        x0 = self._augment(self.x[i0], rng)
        x1 = self._augment(self.x[i1], rng)
        return (x0, x1), label.astype(np.float32)


class TripletGenerator(_SamplingGenerator):
    """Triplets ``((a, p, n), zeros float32 (batch,))``: positive of the anchor's class (never the anchor
    itself), negative of another class. See the module docstring for the common parameters."""

    def batch_indices(self, i):
        """``(a, p, n)`` integer index arrays of batch ``i``."""
        return self._draw(i)[0]

    def _draw(self, i):
        self._check_index(i)
        rng = self.rng(i)
        a = self._anchors(self.batch_size, rng)
        p = self._positives(a, rng)
        n = self._negatives(a, p, rng)
        return (a, p, n), rng

    def _images(self, i):
        (a, p, n), rng = self._draw(i)
        return (
            self._augment(self.x[a], rng),
            self._augment(self.x[p], rng),
            self._augment(self.x[n], rng),
        ), a

    def __getitem__(self, i):
        images, _ = self._images(i)
        return images, np.zeros(self.batch_size, np.float32)


class TripletClsGenerator(TripletGenerator):
    """Triplets with the anchor's class: ``((a, p, n), (zeros float32, y_anchor int32))`` for a model with
    outputs ``(stacked embeddings, class probabilities)``."""

    def __getitem__(self, i):
        images, a = self._images(i)
        return images, (np.zeros(self.batch_size, np.float32), self.y[a].astype(np.int32))


class PKBatchGenerator(EpochSeededDataset):
    """P x K batches for online mining: ``(images, labels int32)``, ``P * K`` images per batch.

    Each batch draws ``classes_per_batch`` (P) distinct classes and ``samples_per_class`` (K) images of
    each, without replacement inside a class when it has at least K images, else with replacement.
    Labels are the original class ids. Batch ``i`` of epoch ``e`` uses ``default_rng([seed, e, i])``.
    """

    def __init__(
        self,
        x,
        y,
        classes_per_batch: int = 10,
        samples_per_class: int = 32,
        steps_per_epoch: int | None = None,
        seed: int = 0,
        augment=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.x, self.y = _check_xy(x, y)
        self.P = _check_batch_size(classes_per_batch, "classes_per_batch")
        self.K = _check_batch_size(samples_per_class, "samples_per_class")
        self.batch_size = self.P * self.K
        self.index = ClassIndex(self.y)
        self.index.require_two_classes()
        if self.K >= 2:
            self.index.require_pairs()
        if self.P > self.index.num_classes:
            raise GeneratorError(
                f"classes_per_batch={self.P} is more than the {self.index.num_classes} classes in the data; "
                f"lower classes_per_batch."
            )
        self.init_epochs(steps_per_epoch, seed, augment)

    def batch_indices(self, i):
        """The ``P * K`` sample indices of batch ``i`` (class by class)."""
        return self._draw(i)[0]

    def _draw(self, i):
        if not 0 <= int(i) < len(self):
            raise IndexError(f"batch index {i} out of range for {len(self)} batches per epoch.")
        rng = self.rng(i)
        ix = self.index
        classes = rng.permutation(ix.num_classes)[: self.P]
        # one loop step per class (P <= a few dozen), never per sample
        rows = [rng.choice(ix.counts[c], size=self.K, replace=bool(ix.counts[c] < self.K)) for c in classes]
        idx = ix.order[ix.offsets[classes][:, None] + np.stack(rows)].reshape(-1)
        return idx, rng

    def __getitem__(self, i):
        idx, rng = self._draw(i)
        images = self.x[idx]
        if self.augmenter is not None:
            images = self.augmenter(images, rng)
        return images, self.y[idx].astype(np.int32)


# --- registry ----------------------------------------------------------------------------------

#: The generators a registry entry (``ModelSpec.generator``) can name.
GENERATORS: dict[str, type[EpochSeededDataset]] = {
    "pairs": SiamesePairGenerator,
    "triplets": TripletGenerator,
    "triplets_cls": TripletClsGenerator,
    "pk": PKBatchGenerator,
}


def get_generator(name: str, *args, **kwargs) -> EpochSeededDataset:
    """Build the generator registered as ``name``: ``GENERATORS[name](*args, **kwargs)``.

    >>> import numpy as np
    >>> x, y = np.zeros((8, 4, 4, 1), np.float32), np.repeat([0, 1], 4)
    >>> type(get_generator("pk", x, y, classes_per_batch=2, samples_per_class=2)).__name__
    'PKBatchGenerator'
    """
    try:
        cls = GENERATORS[name]
    except (KeyError, TypeError):
        raise GeneratorError(f"unknown generator {name!r}; choose one of: {', '.join(GENERATORS)}") from None
    return cls(*args, **kwargs)


# --- the samplers a study registers -----------------------------------------------------------------

#: generator kinds added by study modules (name -> :class:`GeneratorKind`, see :func:`register_sampler`);
#: the core kinds are :data:`GENERATORS`
GENERATOR_KINDS: dict[str, GeneratorKind] = {}


@dataclasses.dataclass(frozen=True)
class GeneratorKind:
    """A sampler that only a study uses: ``inputs`` images per example (2: pairs, 3: triplets) and
    ``factory(spec, x, y, batch_size, steps_per_epoch, seed, augment)`` returning the ``PyDataset``
    (training builds one for the training and one for the validation split)."""

    inputs: int
    factory: Callable


def register_sampler(kind: str, inputs: int, factory: Callable) -> GeneratorKind:
    """Register a study's sampler as ``kind``, so ``ModelSpec(generator=kind)`` trains through ``train``."""
    if kind in GENERATORS:
        raise GeneratorError(f"{kind!r} is a core generator kind; give the study's sampler another name")
    if inputs not in (2, 3):
        raise GeneratorError(f"inputs must be 2 (pairs) or 3 (triplets), got {inputs!r}")
    entry = GeneratorKind(int(inputs), factory)
    GENERATOR_KINDS[kind] = entry
    return entry
