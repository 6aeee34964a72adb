"""Metric-learning losses written with ``keras.ops`` only (TensorFlow, JAX and PyTorch backends).

Two layers:

- plain functions of embeddings returning the **per-example** loss, shape ``(batch,)``:
  :func:`contrastive`, :func:`triplet`, :func:`triplet_l2_norm`, :func:`triplet_l2_norm_safe`,
  :func:`triplet_center_reg`, :func:`batch_hard_triplet`, :func:`batch_semi_hard_triplet`,
  :func:`batch_all_triplet`, :func:`batch_contrastive`;
- ``keras.losses.Loss`` subclasses for ``model.compile`` (registered under the ``"helpers"`` package
  so saved models reload): :class:`ContrastiveLoss`, :class:`TripletLoss`,
  :class:`BatchHardTripletLoss`, :class:`BatchSemiHardTripletLoss`, :class:`BatchAllTripletLoss`,
  :class:`BatchContrastiveLoss`, also by name in the registry :data:`LOSSES` (:func:`get`);

plus :func:`triplet_with_classification`, the compile arguments of the combined
triplet + sparse categorical cross-entropy objective.

Distances and square roots
--------------------------
``sqrt`` has an infinite derivative at 0, so ``d = sqrt(||a - b||^2)`` gives NaN gradients when two
embeddings coincide (a collapsed network, or a pair of identical images). Every function here except
:func:`triplet_l2_norm` with ``squared=False`` (kept as the reference wrote it) uses
:func:`safe_sqrt`, which masks the zero entries: the value is exactly 0 there and the gradient is 0.
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = [
    "safe_sqrt",
    "pairwise_distances",
    "contrastive",
    "triplet",
    "triplet_l2_norm",
    "triplet_l2_norm_safe",
    "triplet_center_reg",
    "batch_hard_triplet",
    "batch_semi_hard_triplet",
    "batch_all_triplet",
    "batch_contrastive",
    "triplet_with_classification",
    "ContrastiveLoss",
    "TripletLoss",
    "BatchHardTripletLoss",
    "BatchSemiHardTripletLoss",
    "BatchContrastiveLoss",
    "BatchAllTripletLoss",
    "LOSSES",
    "get",
]

_EPS = 1e-12


# --- building blocks ---------------------------------------------------------------------------


def safe_sqrt(x, eps: float = _EPS):
    """Square root with a finite gradient everywhere.

    Entries ``<= eps`` map to exactly 0 with gradient 0; other entries are ``sqrt(x)``. The inner
    ``where`` keeps the unselected branch away from ``sqrt(0)`` so no NaN leaks into the gradient.
    """
    positive = ops.greater(x, eps)
    return ops.where(positive, ops.sqrt(ops.where(positive, x, ops.ones_like(x))), ops.zeros_like(x))


def _sq_dist(a, b):
    return ops.sum(ops.square(a - b), axis=-1)


def _dist(a, b, squared: bool, safe: bool = True):
    d2 = _sq_dist(a, b)
    if squared:
        return d2
    return safe_sqrt(d2) if safe else ops.sqrt(d2)


def _l2_normalize(x, eps: float = _EPS):
    # explicit (not ops.normalize) so the epsilon is the same on every backend
    norm2 = ops.sum(ops.square(x), axis=-1, keepdims=True)
    return x * ops.rsqrt(ops.maximum(norm2, eps))


def pairwise_distances(embeddings, squared: bool = False):
    """All pairwise (squared) Euclidean distances ``(batch, batch)``; diagonal exactly 0, safe gradients.

    Uses ``|x|^2 - 2 x.y + |y|^2`` clipped at 0 (round-off can make it slightly negative).
    """
    embeddings = ops.convert_to_tensor(embeddings)
    sq = ops.sum(ops.square(embeddings), axis=1)
    dot = ops.matmul(embeddings, ops.transpose(embeddings))
    d2 = ops.maximum(ops.expand_dims(sq, 1) - 2.0 * dot + ops.expand_dims(sq, 0), 0.0)
    n = ops.shape(embeddings)[0]
    off_diag = 1.0 - ops.eye(n, dtype=d2.dtype)
    d2 = d2 * off_diag
    return d2 if squared else safe_sqrt(d2)


def _label_masks(labels):
    labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
    same = ops.equal(ops.expand_dims(labels, 0), ops.expand_dims(labels, 1))
    n = ops.shape(labels)[0]
    not_eye = ops.logical_not(ops.cast(ops.eye(n), "bool"))
    positive = ops.logical_and(same, not_eye)
    negative = ops.logical_not(same)
    return positive, negative


# --- pair / triplet losses ---------------------------------------------------------------------


def contrastive(x0, x1, y, margin: float = 1.0):
    """Contrastive loss of embedding pairs, per pair ``(batch,)``.

    ``0.5 * y * d^2 + 0.5 * (1 - y) * max(0, margin - d)^2`` with ``d = ||x0 - x1||`` (safe sqrt).

    Convention: ``y = 1`` for a **similar** pair (same class), ``y = 0`` for a dissimilar one — the
    convention of the reference notebooks and of :class:`helpers.samplers.SiamesePairGenerator`.
    (Hadsell et al. 2006 write it the other way round.)
    """
    x0 = ops.convert_to_tensor(x0)
    x1 = ops.convert_to_tensor(x1, dtype=x0.dtype)
    y = ops.reshape(ops.cast(y, x0.dtype), (-1,))
    d2 = _sq_dist(x0, x1)
    d = safe_sqrt(d2)
    return 0.5 * y * d2 + 0.5 * (1.0 - y) * ops.square(ops.relu(margin - d))


def triplet(a, p, n, margin: float = 1.0, squared: bool = True):
    """Triplet loss ``max(0, d(a, p) - d(a, n) + margin)`` per triplet ``(batch,)``.

    ``squared=True`` (default, as the reference): squared Euclidean distances; ``False``: Euclidean
    distances through :func:`safe_sqrt`.
    """
    a = ops.convert_to_tensor(a)
    return ops.relu(_dist(a, p, squared) - _dist(a, n, squared) + margin)


def triplet_l2_norm(a, p, n, margin: float = 1.0, squared: bool = False):
    """Triplet loss on L2-normalised embeddings, Euclidean distances by default.

    As the reference's ``triplet_loss_l2_norm``: the square root is the plain ``ops.sqrt``, so the
    **gradient is NaN when two embeddings coincide** — use :func:`triplet_l2_norm_safe` to train.
    With ``squared=True`` both functions are identical.
    """
    a, p, n = (_l2_normalize(ops.convert_to_tensor(t)) for t in (a, p, n))
    return ops.relu(_dist(a, p, squared, safe=False) - _dist(a, n, squared, safe=False) + margin)


def triplet_l2_norm_safe(a, p, n, margin: float = 1.0, squared: bool = False):
    """:func:`triplet_l2_norm` with the numerically safe square root (finite gradients everywhere)."""
    a, p, n = (_l2_normalize(ops.convert_to_tensor(t)) for t in (a, p, n))
    return ops.relu(_dist(a, p, squared) - _dist(a, n, squared) + margin)


def triplet_center_reg(a, p, n, margin: float = 1.5, center_reg_weight: float = 0.05):
    """L2-normalised triplet loss (Euclidean, safe sqrt) plus a center regulariser, per triplet.

    ``loss = max(0, d(a, p) - d(a, n) + margin) + w * (||a - c||^2 + ||p - c||^2) / 2``
    with ``c = (a + p) / 2`` the anchor-positive midpoint and ``w = center_reg_weight``, all on the
    normalised embeddings. The regulariser (which equals ``w * ||a - p||^2 / 4``) is our reading of
    the reference's "center regularisation": it pulls each same-class pair towards its common
    center even when the triplet constraint is already satisfied.
    """
    a, p, n = (_l2_normalize(ops.convert_to_tensor(t)) for t in (a, p, n))
    base = ops.relu(_dist(a, p, False) - _dist(a, n, False) + margin)
    c = 0.5 * (a + p)
    reg = 0.5 * (_sq_dist(a, c) + _sq_dist(p, c))
    return base + center_reg_weight * reg


# --- online mining losses ----------------------------------------------------------------------


def batch_hard_triplet(labels, embeddings, margin: float = 0.2, squared: bool = False):
    """Batch-hard triplet loss (Hermans et al. 2017), per anchor ``(batch,)``.

    For each anchor ``i``: ``hp = max_j d(i, j)`` over ``labels[j] == labels[i], j != i`` (hardest
    positive), ``hn = min_k d(i, k)`` over ``labels[k] != labels[i]`` (hardest negative), loss
    ``max(0, hp - hn + margin)``. Anchors without any positive or any negative in the batch get 0.
    Distances from :func:`pairwise_distances` (finite gradients at 0).
    """
    d = pairwise_distances(embeddings, squared=squared)
    positive, negative = _label_masks(labels)
    zeros = ops.zeros_like(d)
    hardest_pos = ops.max(ops.where(positive, d, zeros), axis=1)
    big = ops.max(d) + 1.0
    hardest_neg = ops.min(ops.where(negative, d, zeros + big), axis=1)
    valid = ops.logical_and(ops.any(positive, axis=1), ops.any(negative, axis=1))
    loss = ops.relu(hardest_pos - hardest_neg + margin)
    return ops.where(valid, loss, ops.zeros_like(loss))


def _negatives_at_or_below(negatives_first, thresholds, with_sum: bool = False):
    """For every row ``a`` and every threshold ``thresholds[a, j]``: how many of the row's negatives
    are ``<=`` it (``(batch, batch)`` int32), and with ``with_sum`` also their sum.

    ``negatives_first`` holds each anchor's distances to its negatives, and a value above every
    threshold elsewhere (never counted). The row is merged with its thresholds, negatives first, and
    a stable argsort puts each threshold after exactly the negatives ``<=`` it; running sums along
    the sorted row, read where each threshold landed, give the count and the sum. The sum is a gather
    from ``negatives_first``, so its gradient reaches every counted distance. Keras' argsort is stable
    on the TensorFlow, JAX and NumPy backends; ties only arise on hand-made embeddings.
    """
    n = ops.shape(negatives_first)[1]
    merged = ops.concatenate([negatives_first, thresholds], axis=1)
    merged_order = ops.argsort(merged, axis=1)
    is_negative = ops.less(merged_order, n)
    position = ops.argsort(merged_order, axis=1)[:, n:]  # where each threshold landed
    count = ops.take_along_axis(ops.cumsum(ops.cast(is_negative, "int32"), axis=1), position, axis=1)
    if not with_sum:
        return count
    sorted_values = ops.take_along_axis(merged, merged_order, axis=1)
    negative_values = ops.where(is_negative, sorted_values, ops.zeros_like(sorted_values))
    return count, ops.take_along_axis(ops.cumsum(negative_values, axis=1), position, axis=1)


def _semi_hard_negative_distances(d, negative):
    """``(batch, batch)``: for every pair ``(a, p)``, the distance of ``a`` to its semi-hard negative.

    That is ``min d(a, n)`` over the negatives ``n`` of ``a`` with ``d(a, n) > d(a, p)``, or, when
    there is none, ``max d(a, n)`` over all of them (tfa's rule). Instead of comparing every
    ``(a, p, n)``, each anchor's row is sorted: :func:`_negatives_at_or_below` counts the negatives
    ``<= d(a, p)``, and the negative at that count in the anchor's sorted negatives is the semi-hard
    one (on ties, which only hand-made embeddings have, this decides ``>`` versus ``>=``).
    """
    n = ops.shape(d)[1]
    big = ops.max(d) + 1.0
    negatives_first = ops.where(negative, d, big)  # non-negatives sort last, never counted
    order = ops.argsort(negatives_first, axis=1)
    below = _negatives_at_or_below(negatives_first, d)  # negatives with d(a, n) <= d(a, p)
    num_neg = ops.sum(ops.cast(negative, below.dtype), axis=1, keepdims=True)
    index = ops.take_along_axis(order, ops.minimum(below, n - 1), axis=1)
    semi_hard = ops.take_along_axis(d, index, axis=1)
    hardest_easy = ops.max(ops.where(negative, d, ops.zeros_like(d)), axis=1, keepdims=True)
    return ops.where(ops.less(below, num_neg), semi_hard, hardest_easy + ops.zeros_like(d))


def batch_semi_hard_triplet(
    labels, embeddings, margin: float = 0.2, squared: bool = False, center_reg_weight: float = 0.0
):
    """Semi-hard triplet loss (Schroff et al. 2015, FaceNet), per anchor ``(batch,)``.

    Follows ``tfa.losses.TripletSemiHardLoss`` for the choice of negative. For every valid
    anchor-positive pair ``(a, p)`` (same label, ``p != a``):

    - semi-hard negative: ``min d(a, n)`` over negatives (other label) with ``d(a, n) > d(a, p)``;
    - when no such negative exists: ``max d(a, n)`` over all negatives of ``a`` (tfa's rule —
      the *easiest* negative, so the pair's loss stays small);
    - pair loss ``max(0, d(a, p) - d(a, n*) + margin)``.

    The per-anchor loss is the **mean over that anchor's positive pairs**; anchors with no positive
    or no negative in the batch get 0. (tfa returns one scalar, the mean over all positive pairs in
    the batch; the two agree when every anchor has the same number of positives, e.g. P x K batches.)
    The negatives are found by sorting each anchor's distances (:func:`_semi_hard_negative_distances`),
    in ``O(batch^2 log batch)`` time and ``O(batch^2)`` memory, not tfa's ``(batch, batch, batch)``
    comparison: at a P x K batch of 320 that comparison was about a third of the CBAM model's training
    step (``benchmarks/archive/results/semi_hard_loss.json``).

    ``center_reg_weight > 0`` adds the center regularisation of :func:`triplet_center_reg` on every
    positive pair of the batch: ``center_reg_weight x`` the anchor's mean over its positives of the
    squared distance of ``a`` and ``p`` to their midpoint (``|a - p|^2 / 4``). The triplet term stops
    once a margin is met; this term keeps pulling each class together.
    """
    return _semi_hard_triplet_with(
        _semi_hard_negative_distances, labels, embeddings, margin, squared, center_reg_weight
    )


def _semi_hard_triplet_with(negative_distances, labels, embeddings, margin, squared, center_reg_weight):
    """:func:`batch_semi_hard_triplet` with the search for each pair's negative passed in
    (``negative_distances(d, negative) -> (batch, batch)``), so a benchmark can time another search
    through the same loss."""
    d = pairwise_distances(embeddings, squared=squared)
    positive, negative = _label_masks(labels)
    chosen = negative_distances(d, negative)
    pair_loss = ops.relu(d - chosen + margin)
    pos_f = ops.cast(positive, d.dtype)
    num_pos = ops.sum(pos_f, axis=1)
    loss = ops.sum(pair_loss * pos_f, axis=1) / ops.maximum(num_pos, 1.0)
    if center_reg_weight:
        d2 = d if squared else pairwise_distances(embeddings, squared=True)
        loss = loss + center_reg_weight * ops.sum(d2 / 4.0 * pos_f, axis=1) / ops.maximum(num_pos, 1.0)
    valid = ops.logical_and(ops.greater(num_pos, 0.0), ops.any(negative, axis=1))
    return ops.where(valid, loss, ops.zeros_like(loss))


def batch_all_triplet(labels, embeddings, margin: float = 1.0, squared: bool = True):
    """Batch-all triplet loss, per anchor ``(batch,)``: every valid triplet of a labelled batch.

    For anchor ``a``: the mean over all its positives ``p`` (same label, ``p != a``) and negatives
    ``n`` (other labels) of ``max(0, d(a, p) - d(a, n) + margin)`` — the loss of :func:`triplet`,
    on squared distances by default. A P x K batch of 320 images holds ~2.9 million triplets, so
    each image teaches far more than in a batch of sampled (a, p, n) triplets.
    Anchors without a positive or a negative get 0.

    The sum over negatives is not taken triplet by triplet: for a pair ``(a, p)`` it is
    ``count x (d(a, p) + margin) - total`` over the negatives that violate the margin, those with
    ``d(a, n) <= d(a, p) + margin`` (:func:`_negatives_at_or_below`, a sort of each anchor's row),
    so time is ``O(batch^2 log batch)`` and memory ``O(batch^2)``, not the ``O(batch^3)`` of comparing
    every triplet, with the same values up to float rounding
    (``python -m benchmarks.archive.semi_hard_loss --loss batch-all`` times both).
    """
    d = pairwise_distances(embeddings, squared=squared)
    positive, negative = _label_masks(labels)
    big = ops.max(d) + margin + 1.0  # above every threshold: non-negatives are never counted
    count, total = _negatives_at_or_below(ops.where(negative, d, big), d + margin, with_sum=True)
    count = ops.cast(count, d.dtype)
    pos_f = ops.cast(positive, d.dtype)
    pair_sums = (count * (d + margin) - total) * pos_f
    num_triplets = ops.sum(pos_f, axis=1) * ops.sum(ops.cast(negative, d.dtype), axis=1)
    return ops.sum(pair_sums, axis=1) / ops.maximum(num_triplets, 1.0)


def batch_contrastive(labels, embeddings, margin: float = 1.0):
    """Contrastive loss over every pair of a labelled batch, per anchor ``(batch,)``.

    For anchor ``i``: the mean of ``0.5 * d(i, j)^2`` over its positives ``j`` (same label,
    ``j != i``) plus the mean of ``0.5 * max(0, margin - d(i, k))^2`` over its negatives ``k``
    (other labels) — the pair loss of :func:`contrastive` (``y = 1`` similar), averaged separately
    over positives and negatives so the two kinds weigh the same whatever the batch's P and K.
    A P x K batch of 320 images holds ~51,000 pairs instead of the 160 of a pair batch of the
    same size. Anchors without positives (negatives) get 0 for that term.
    """
    d = pairwise_distances(embeddings, squared=False)
    d2 = ops.square(d)
    positive, negative = _label_masks(labels)
    pos_f, neg_f = ops.cast(positive, d.dtype), ops.cast(negative, d.dtype)
    pos_term = ops.sum(0.5 * d2 * pos_f, axis=1) / ops.maximum(ops.sum(pos_f, axis=1), 1.0)
    neg_term = ops.sum(0.5 * ops.square(ops.relu(margin - d)) * neg_f, axis=1) / ops.maximum(
        ops.sum(neg_f, axis=1), 1.0
    )
    return pos_term + neg_term


def triplet_with_classification(triplet_loss, triplet_weight: float = 1.0, cls_weight: float = 1.0):
    """``model.compile`` kwargs of the combined triplet + classification objective.

    For a model with two outputs ``(stacked (batch, 3, d) [a, p, n] embeddings, class probabilities
    of the anchor)`` trained on :class:`helpers.samplers.TripletClsGenerator`, whose targets are
    ``(zeros, y_anchor)``. Reference settings: ``TripletLoss(1.0, "l2_safe")`` with weights
    ``(0.5, 1.0)``; ``TripletLoss(1.5, "center")`` with ``(1.0, 1.0)``.

    Returns
    -------
    dict with ``loss=[triplet_loss, SparseCategoricalCrossentropy()]`` and
    ``loss_weights=[triplet_weight, cls_weight]``; use as ``model.compile(optimizer, **kwargs)``.
    """
    return dict(
        loss=[triplet_loss, keras.losses.SparseCategoricalCrossentropy()],
        loss_weights=[float(triplet_weight), float(cls_weight)],
    )


# --- Keras Loss wrappers -----------------------------------------------------------------------


def unstack(y_pred, k: int, name: str):
    """The ``k`` embeddings stacked in ``y_pred`` ``(batch, k, d)``, with a clear error for another shape."""
    shape = ops.shape(y_pred)
    if len(shape) != 3 or (shape[1] is not None and shape[1] != k):
        raise ValueError(
            f"{name} expects y_pred of shape (batch, {k}, d) (stacked embeddings), got {tuple(shape)}; "
            f"stack the branch outputs with keras.ops.stack([...], axis=1)."
        )
    return [y_pred[:, i, :] for i in range(k)]


@keras.saving.register_keras_serializable(package="helpers")
class ContrastiveLoss(keras.losses.Loss):
    """Keras wrapper of :func:`contrastive`.

    ``y_true``: ``(batch,)`` with 1 = similar pair, 0 = dissimilar; ``y_pred``: ``(batch, 2, d)`` the
    stacked ``[x0, x1]`` embeddings.
    """

    def __init__(self, margin: float = 1.0, name: str = "contrastive_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.margin = float(margin)

    def call(self, y_true, y_pred):
        x0, x1 = unstack(y_pred, 2, "ContrastiveLoss")
        return contrastive(x0, x1, y_true, margin=self.margin)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}


_TRIPLET_VARIANTS = ("plain", "l2", "l2_safe", "center")


@keras.saving.register_keras_serializable(package="helpers")
class TripletLoss(keras.losses.Loss):
    """Keras wrapper of the offline triplet losses; ``y_pred`` ``(batch, 3, d)`` stacked ``[a, p, n]``.

    ``variant``: ``"plain"`` → :func:`triplet`, ``"l2"`` → :func:`triplet_l2_norm`,
    ``"l2_safe"`` → :func:`triplet_l2_norm_safe`, ``"center"`` → :func:`triplet_center_reg`.
    ``squared=None`` keeps the variant's default (squared for ``plain``, Euclidean for the L2
    variants); ``center`` always uses Euclidean distances. ``y_true`` is ignored.
    """

    def __init__(
        self,
        margin: float = 1.0,
        variant: str = "plain",
        squared: bool | None = None,
        center_reg_weight: float = 0.05,
        name: str = "triplet_loss",
        **kwargs,
    ):
        if variant not in _TRIPLET_VARIANTS:
            raise ValueError(f"TripletLoss variant must be one of {_TRIPLET_VARIANTS}, got {variant!r}.")
        super().__init__(name=name, **kwargs)
        self.margin = float(margin)
        self.variant = variant
        self.squared = None if squared is None else bool(squared)
        self.center_reg_weight = float(center_reg_weight)

    def call(self, y_true, y_pred):
        a, p, n = unstack(y_pred, 3, "TripletLoss")
        if self.variant == "center":
            return triplet_center_reg(a, p, n, self.margin, self.center_reg_weight)
        fn = {"plain": triplet, "l2": triplet_l2_norm, "l2_safe": triplet_l2_norm_safe}[self.variant]
        kwargs = {} if self.squared is None else {"squared": self.squared}
        return fn(a, p, n, margin=self.margin, **kwargs)

    def get_config(self):
        return {
            **super().get_config(),
            "margin": self.margin,
            "variant": self.variant,
            "squared": self.squared,
            "center_reg_weight": self.center_reg_weight,
        }


class _BatchMiningLoss(keras.losses.Loss):
    _fn = None

    def __init__(self, margin: float = 0.2, squared: bool = False, name: str | None = None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.margin = float(margin)
        self.squared = bool(squared)

    def _params(self) -> dict:
        """The keyword arguments of ``_fn``; also the loss's config beyond Keras' own."""
        return {"margin": self.margin, "squared": self.squared}

    def call(self, y_true, y_pred):
        return type(self)._fn(y_true, y_pred, **self._params())

    def get_config(self):
        return {**super().get_config(), **self._params()}


@keras.saving.register_keras_serializable(package="helpers")
class BatchHardTripletLoss(_BatchMiningLoss):
    """Keras wrapper of :func:`batch_hard_triplet`: ``y_true`` labels ``(batch,)``, ``y_pred`` ``(batch, d)``."""

    _fn = staticmethod(batch_hard_triplet)

    def __init__(
        self, margin: float = 0.2, squared: bool = False, name: str = "batch_hard_triplet_loss", **kwargs
    ):
        super().__init__(margin=margin, squared=squared, name=name, **kwargs)


@keras.saving.register_keras_serializable(package="helpers")
class BatchAllTripletLoss(_BatchMiningLoss):
    """Keras wrapper of :func:`batch_all_triplet`: ``y_true`` labels ``(batch,)``, ``y_pred`` ``(batch, d)``."""

    _fn = staticmethod(batch_all_triplet)

    def __init__(
        self, margin: float = 1.0, squared: bool = True, name: str = "batch_all_triplet_loss", **kwargs
    ):
        super().__init__(margin=margin, squared=squared, name=name, **kwargs)


@keras.saving.register_keras_serializable(package="helpers")
class BatchContrastiveLoss(keras.losses.Loss):
    """Keras wrapper of :func:`batch_contrastive`: ``y_true`` labels ``(batch,)``, ``y_pred`` ``(batch, d)``."""

    def __init__(self, margin: float = 1.0, name: str = "batch_contrastive_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.margin = float(margin)

    def call(self, y_true, y_pred):
        return batch_contrastive(y_true, y_pred, margin=self.margin)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}


@keras.saving.register_keras_serializable(package="helpers")
class BatchSemiHardTripletLoss(_BatchMiningLoss):
    """Keras wrapper of :func:`batch_semi_hard_triplet`: ``y_true`` labels ``(batch,)``, ``y_pred`` ``(batch, d)``."""

    _fn = staticmethod(batch_semi_hard_triplet)

    def __init__(
        self,
        margin: float = 0.2,
        squared: bool = False,
        center_reg_weight: float = 0.0,
        name: str = "batch_semi_hard_triplet_loss",
        **kwargs,
    ):
        super().__init__(margin=margin, squared=squared, name=name, **kwargs)
        self.center_reg_weight = float(center_reg_weight)

    def _params(self) -> dict:
        return {**super()._params(), "center_reg_weight": self.center_reg_weight}


# --- registry ----------------------------------------------------------------------------------

#: The Keras losses by name, as pytorch-metric-learning's and OML's registries name theirs.
LOSSES: dict[str, type[keras.losses.Loss]] = {
    "contrastive": ContrastiveLoss,
    "triplet": TripletLoss,
    "batch_hard_triplet": BatchHardTripletLoss,
    "batch_semi_hard_triplet": BatchSemiHardTripletLoss,
    "batch_all_triplet": BatchAllTripletLoss,
    "batch_contrastive": BatchContrastiveLoss,
}


def get(name: str, **kwargs) -> keras.losses.Loss:
    """The loss registered as ``name`` built with ``kwargs``: ``get("triplet", margin=0.5, variant="l2")``."""
    try:
        cls = LOSSES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown loss {name!r}; choose one of: {', '.join(LOSSES)}") from None
    return cls(**kwargs)
