"""Study: classes a model never saw in training, and the transfer classifier.

Notebook 07 and ``benchmarks/applications.py`` ask how an embedding handles digits it was not
trained on: ``cnn_simple_v1``'s recipe trained on digits 0-7 (:data:`UNSEEN_MODEL`, on
``Dataset.subset``) against the same model on all ten, and a plain softmax classifier's penultimate
layer used as an embedding (:data:`CLASSIFIER_MODEL`, "transfer"; :data:`UNSEEN_CLASSIFIER_MODEL`
on 0-7). :func:`unseen_class_report` measures the unseen classes with the verification and
identification functions of :mod:`helpers.applications`.

The three models are study entries of the registry (``helpers.registry.register``, on import) and
train through the suite's one cached path, :func:`helpers.training.train`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from helpers import knn, registry
from helpers.applications import (
    ApplicationError,
    Gallery,
    auc,
    check_labels,
    check_vectors,
    verification_scores,
)
from helpers.architectures import BN_MOMENTUM


def precision_at_1(query_emb, query_labels, ref_emb, ref_labels, metric: str = "l2") -> float:
    """Fraction of queries whose nearest reference has their class."""
    q = check_vectors(query_emb, "query_emb")
    r = check_vectors(ref_emb, "ref_emb")
    qy = check_labels(query_labels, len(q), "query_labels")
    ry = check_labels(ref_labels, len(r), "ref_labels")
    idx, _ = knn.exact_knn(q, r, k=1, metric=metric)
    return float((ry[idx[:, 0]] == qy).mean())


def unseen_class_report(
    embeddings: dict,
    labels: dict,
    unseen=(8, 9),
    shots=(1, 5),
    episodes: int = 20,
    n_pairs: int = 2000,
    seed: int = 0,
    metric: str = "l2",
) -> dict:
    """How well an embedding separates classes it (may have) never seen in training.

    ``embeddings`` and ``labels`` map ``"train"`` and ``"test"`` to arrays of the *full* dataset
    (every class). Figures, all about the ``unseen`` classes:

    - ``auc``: verification AUC of test pairs whose first image is unseen
      (:func:`helpers.applications.make_pairs` with ``classes=unseen``: genuine pairs inside one
      unseen class, impostors against any other class);
    - ``{s}shot``: identification accuracy of the unseen test images against a gallery of ``s``
      train images of *every* class (mean over ``episodes`` enrolments; ``_std`` beside it);
    - ``p_at_1``: P@1 of the unseen test images against the whole train split.
    """
    e_tr = check_vectors(embeddings["train"], "train embeddings")
    e_te = check_vectors(embeddings["test"], "test embeddings")
    y_tr = check_labels(labels["train"], len(e_tr), "train labels")
    y_te = check_labels(labels["test"], len(e_te), "test labels")
    unseen = np.asarray(list(unseen), dtype=np.int64)
    mask = np.isin(y_te, unseen)
    if not mask.any():
        raise ApplicationError(f"no test image has one of the unseen classes {unseen.tolist()}.")
    d, same = verification_scores(e_te, y_te, n_pairs, n_pairs, seed=seed, metric=metric, classes=unseen)
    report = {"auc": auc(d, same)}
    for s in shots:
        accuracies = []
        for e in range(int(episodes)):
            gallery = Gallery.enroll(
                e_tr,
                y_tr,
                s,
                seed=int(np.random.default_rng([seed, int(s), e]).integers(2**31)),
                metric=metric,
            )
            pred, _ = gallery.identify(e_te[mask], threshold=None)
            accuracies.append(float((pred == y_te[mask]).mean()))
        report[f"{s}shot"] = float(np.mean(accuracies))
        report[f"{s}shot_std"] = float(np.std(accuracies))
    report["p_at_1"] = precision_at_1(e_te[mask], y_te[mask], e_tr, y_tr, metric)
    return report


# --- the models: the unseen-class model and the transfer embedding ----------------------------------


def cnn_softmax_classifier(input_shape=(28, 28, 1), embedding_dim=64):
    """A plain image classifier's body, the size of ``cnn_simple_v1``: two conv / pool / BN stages,
    Flatten, then a ReLU Dense layer whose output is the embedding (its penultimate layer; the
    softmax head is added by ``build_training_model`` for the ``"cross_entropy"`` loss)."""
    import keras
    from keras import layers

    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for i, filters in enumerate((32, 64), start=1):
        x = layers.Conv2D(filters, 3, padding="valid", use_bias=False, name=f"conv{i}")(x)
        x = layers.AveragePooling2D(pool_size=2)(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
        x = layers.Activation("relu")(x)
    x = layers.Flatten()(x)
    outputs = layers.Dense(embedding_dim, activation="relu", name="embedding")(x)
    return keras.Model(inputs, outputs, name="cnn_softmax_classifier")


_BASE = registry.MODELS["cnn_simple_v1"]
# Half of cnn_simple_v1's budget (3 x 100 steps of 320 images, about 35 s on 2 CPU cores), so that
# notebook 07 trains both in its 2-minute default budget and shares their cache entries with
# benchmarks/applications.py (which also trains cnn_simple_v1 itself at this budget).
_SHORT = {"epochs": 3, "steps_per_epoch": _BASE.steps_per_epoch, "batch_size": _BASE.batch_size}
# the same recipe as cnn_simple_v1 on 8 classes: P x K batches need P <= the classes present
UNSEEN_MODEL = registry.register(
    dataclasses.replace(
        _BASE,
        name="cnn_simple_v1_digits_0_7",
        classes_per_batch=8,
        **_SHORT,
        description="cnn_simple_v1's recipe on digits 0-7 only (P=8 classes x K=40 per batch)",
    )
).name
_CLASSIFIER = registry.register(
    registry.ModelSpec(
        "cnn_softmax_classifier",
        cnn_softmax_classifier,
        loss="cross_entropy",
        margin=0.0,
        generator="pk",
        description="plain softmax classifier of cnn_simple_v1's size; embedding = "
        "its penultimate (ReLU Dense 64) layer",
        augment=True,
        lr_schedule="cosine",
        **_SHORT,
    )
)
CLASSIFIER_MODEL = _CLASSIFIER.name
UNSEEN_CLASSIFIER_MODEL = registry.register(
    dataclasses.replace(
        _CLASSIFIER,
        name="cnn_softmax_classifier_digits_0_7",
        classes_per_batch=8,
        description="cnn_softmax_classifier on digits 0-7 only (P=8 classes x K=40 per batch)",
    )
).name
