"""Study: a DenseNet-BC classifier on Fashion-MNIST, a Siamese head on its frozen features, and three
representations of the same test images compared (raw pixels, DenseNet features, Siamese embeddings).

Notebook 08 tells the story and ``benchmarks/densenet_fashion_mnist.py`` measures it; both call the
functions here. The two models are study entries of the registry (:data:`CLASSIFIER`, :data:`HEAD`,
registered on import) and train through the suite's one cached, resumable path,
:func:`helpers.training.train`:

- ``densenet_bc_fashion``: :func:`helpers.densenet_bc` plus a softmax ``class_head``
  (``loss="cross_entropy"``), augmentation in the training graph (:class:`~helpers.augment.DeviceAugment`,
  rotation up to 10 degrees, shift up to 2.8 px = 10 %), AdamW (lr 1e-3, weight decay 1e-4),
  ReduceLROnPlateau on validation accuracy (factor 0.5, patience 3) and the best weights by
  validation accuracy, as the reference.
- ``densenet_siamese_head``: :func:`helpers.siamese_head` (Dense 128 ReLU, Dense 128,
  L2-normalised), triplet loss with margin 0.5 on random triplets of :mod:`helpers.samplers`. Its
  inputs are the DenseNet features of the training images, embedded once: only the head trains.
- ``densenet_bc_fashion_small`` (:data:`SMALL_CLASSIFIER`), the classifier of the CPU profiles
  (``smoke``, ``default``): the reference's layers at half the depth (blocks 3/6/4) and half the
  resolution (:func:`densenet_bc_small`), no augmentation, a cosine learning rate from 4e-3. The
  ``full`` profile trains the reference's ``densenet_bc_fashion``.

Data: the official 60,000 / 10,000 split with 10 % of train for validation
(``load_dataset("fashion_mnist", split="official")``); the smoke and default profiles take a
stratified subset of it. Pixels stay in [0, 1]: the DenseNet maps them to [-1, 1] with its first
layer, so the augmentation (which clips to [0, 1]) and the raw-pixel baseline see the usual data.
"""

from __future__ import annotations

import time

import keras
import numpy as np
from keras import layers

from helpers import evaluation, registry, training
from helpers.architectures import BN_MOMENTUM
from helpers.data import Dataset, load_dataset, stratified_indices, stratified_subset
from helpers.metrics import with_interval

# --- architectures ------------------------------------------------------------------------------


def _dense_layer(x, growth_rate, dropout, name):
    """DenseNet-BC bottleneck: BN-ReLU-Conv1x1(4k)-BN-ReLU-Conv3x3(k)-Dropout, concatenated to ``x``."""
    he = keras.initializers.HeNormal()
    h = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn1")(x)
    h = layers.Activation("relu", name=f"{name}_relu1")(h)
    h = layers.Conv2D(4 * growth_rate, 1, use_bias=False, kernel_initializer=he, name=f"{name}_conv1")(h)
    h = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn2")(h)
    h = layers.Activation("relu", name=f"{name}_relu2")(h)
    h = layers.Conv2D(
        growth_rate, 3, padding="same", use_bias=False, kernel_initializer=he, name=f"{name}_conv2"
    )(h)
    if dropout:
        h = layers.Dropout(dropout, name=f"{name}_drop")(h)
    return layers.Concatenate(name=f"{name}_concat")([x, h])


def densenet_bc(
    input_shape=(28, 28, 1),
    embedding_dim=None,
    growth_rate=12,
    blocks=(6, 12, 8),
    initial_channels=24,
    compression=0.5,
    dropout=0.2,
    stem_pool=False,
):
    """DenseNet-BC for small grey images, the reference's architecture; returns images -> ``features``.

    Inputs in [0, 1] are mapped to [-1, 1] inside the model (``Rescaling``), so augmentation and the
    data stay in [0, 1]. A 3x3 convolution to ``initial_channels``; dense blocks of ``blocks``
    bottleneck layers of growth rate ``growth_rate``; between blocks a transition (BN-ReLU-Conv1x1
    with ``compression`` of the channels, 2x2 average pooling); then BN-ReLU and global average
    pooling: the ``features`` vector (192-d for the defaults). He initialisation; BatchNormalization
    momentum 0.9 (PyTorch's default 0.1 in its convention, as the reference). The 10-class
    softmax is the ``class_head`` that ``build_training_model`` adds for ``loss="cross_entropy"``.
    ``embedding_dim`` is accepted for the registry's builder signature and must be None or the
    computed feature size.
    """
    he = keras.initializers.HeNormal()
    inputs = keras.Input(input_shape, name="image")
    x = layers.Rescaling(2.0, offset=-1.0, name="to_minus1_1")(inputs)
    x = layers.Conv2D(
        initial_channels, 3, padding="same", use_bias=False, kernel_initializer=he, name="stem_conv"
    )(x)
    if stem_pool:  # the smaller variant: the dense blocks start at half the resolution
        x = layers.MaxPooling2D(pool_size=2, name="stem_pool")(x)
    for b, n_layers in enumerate(blocks, start=1):
        for i in range(1, n_layers + 1):
            x = _dense_layer(x, growth_rate, dropout, name=f"block{b}_layer{i}")
        if b < len(blocks):
            channels = int(x.shape[-1] * compression)
            x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"transition{b}_bn")(x)
            x = layers.Activation("relu", name=f"transition{b}_relu")(x)
            x = layers.Conv2D(channels, 1, use_bias=False, kernel_initializer=he, name=f"transition{b}_conv")(
                x
            )
            x = layers.AveragePooling2D(pool_size=2, name=f"transition{b}_pool")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="final_bn")(x)
    x = layers.Activation("relu", name="final_relu")(x)
    features = layers.GlobalAveragePooling2D(name="features")(x)
    if embedding_dim is not None and embedding_dim != features.shape[-1]:
        raise ValueError(
            f"densenet_bc computes {features.shape[-1]}-d features with these settings, "
            f"not embedding_dim={embedding_dim}; register it with embedding_dim={features.shape[-1]}"
        )
    return keras.Model(inputs, features, name="densenet_bc")


def siamese_head(input_shape=(192,), embedding_dim=128):
    """The Siamese head on frozen backbone features: Dense(128)-ReLU-Dense(128) (L2-normalised by the
    registry when ``l2_normalized=True``). Its input is a feature vector, not an image."""
    inputs = keras.Input(input_shape, name="features")
    x = layers.Dense(embedding_dim, activation="relu", name="head_dense1")(inputs)
    outputs = layers.Dense(embedding_dim, name="embedding")(x)
    return keras.Model(inputs, outputs, name="siamese_head")


CLASSIFIER = registry.register(
    registry.ModelSpec(
        "densenet_bc_fashion",
        densenet_bc,
        loss="cross_entropy",
        margin=0.0,
        generator="pk",
        description="DenseNet-BC (k=12, blocks 6/12/8) classifier; its GAP features are the embedding",
        epochs=30,
        steps_per_epoch=421,
        batch_size=128,
        learning_rate=1e-3,
        optimizer="adamw",
        weight_decay=1e-4,
        embedding_dim=192,
        augment="device",
        augment_params={"shift": 2.8, "rotation": 10.0, "noise": 0.0},
        monitor="val_accuracy",
        plateau_factor=0.5,
        plateau_patience=3,
    )
)


def densenet_bc_small(input_shape=(28, 28, 1), embedding_dim=None):
    """The default profile's smaller DenseNet-BC: the reference's layers (growth rate 12, bottlenecks,
    compression 0.5, dropout 0.2) at half its depth (dense blocks of 3 / 6 / 4 layers) and half its
    resolution (2x2 max pooling after the stem: the blocks run at 14x14, 7x7 and 3x3); 99-d features,
    116,838 parameters."""
    return densenet_bc(input_shape, embedding_dim, blocks=(3, 6, 4), stem_pool=True)


SMALL_CLASSIFIER = registry.register(
    registry.ModelSpec(
        "densenet_bc_fashion_small",
        densenet_bc_small,
        loss="cross_entropy",
        margin=0.0,
        generator="pk",
        description="DenseNet-BC, half depth (blocks 3/6/4) at half resolution (pooled stem), "
        "no augmentation, cosine learning rate: the CPU profiles' classifier",
        epochs=6,
        steps_per_epoch=50,
        batch_size=120,
        learning_rate=4e-3,
        optimizer="adamw",
        weight_decay=1e-4,
        lr_schedule="cosine",
        embedding_dim=99,
        monitor="val_accuracy",
    )
)
HEAD = registry.register(
    registry.ModelSpec(
        "densenet_siamese_head",
        siamese_head,
        loss="triplet",
        margin=0.5,
        generator="triplets",
        description="Siamese head on frozen DenseNet features: Dense 128 ReLU, Dense 128, L2; triplet loss",
        epochs=20,
        steps_per_epoch=200,
        batch_size=256,
        learning_rate=1e-3,
        l2_normalized=True,
        embedding_dim=128,
    )
)

REPRESENTATIONS = ("raw pixels", "DenseNet features", "Siamese embeddings")
#: The reference's "expected" silhouette scores of the three representations.
REFERENCE_SILHOUETTE = {"raw pixels": 0.15, "DenseNet features": 0.35, "Siamese embeddings": 0.52}

#: The study's folder of the models cache (:func:`helpers.studies.cache.folder`, one per profile).
CACHE_FOLDER = "densenet_study"


# --- data ---------------------------------------------------------------------------------------------


def study_data(
    params: dict, seed: int = 42, source: str = "auto", fashion_dir=None, verbose=True, use_cache: bool = True
) -> Dataset:
    """Fashion-MNIST on its official split (10 % of train for validation), cut to the profile's sizes."""
    kwargs = {"fashion_dir": fashion_dir} if fashion_dir else {}
    data = load_dataset(
        "fashion_mnist",
        source=source,
        seed=seed,
        split="official",
        val_fraction=0.1,
        verbose=verbose,
        use_cache=use_cache,
        **kwargs,
    )
    return stratified_subset(data, params.get("train"), params.get("val"), params.get("test"), seed=seed)


# --- the classifier -------------------------------------------------------------------------------------


def train_classifier(
    data: Dataset,
    params: dict,
    seed: int = 0,
    cache_dir=None,
    force: bool = False,
    callbacks=None,
    name: str | None = None,
):
    """Train (or load from the cache) the DenseNet classifier through :func:`helpers.training.train`.

    Returns ``(features_model, classifier, record)``: images -> 192-d features, images -> class
    probabilities, and the training record (history, timings, ``from_cache``). ``name`` is another
    registered classifier of the same kind (the tests train a tiny one); by default the profile's
    ``classifier`` (the reference's :data:`CLASSIFIER` when ``params`` names none).
    """
    name = name or params.get("classifier", CLASSIFIER.name)
    features, record = training.train(
        name,
        data,
        epochs=params["epochs"],
        steps_per_epoch=params["steps_per_epoch"],
        batch_size=params["batch_size"],
        seed=seed,
        cache_dir=cache_dir,
        force=force,
        callbacks=callbacks,
    )
    classifier, _ = registry.build_training_model(
        name, data.num_classes, tuple(data.x_train.shape[1:]), embedding=features
    )
    training.load_weights(classifier, training.cache_paths(name, cache_dir, data.name)["weights"])
    return features, classifier, record


def predict_classes(classifier, features) -> np.ndarray:
    """Class ids from already computed DenseNet ``features`` through the classifier's ``class_head``
    (a matrix product: the backbone is not run, nor traced, a second time)."""
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in classifier.get_layer("class_head").weights)
    return np.argmax(np.asarray(features, np.float32) @ kernel + bias, axis=1)


def classification_report(y, pred, class_names) -> dict:
    """Accuracy with its 95 % bootstrap interval over the images (``accuracy_ci_low`` / ``_high``),
    confusion matrix and per-class precision / recall / F1 (scikit-learn) of ``pred``."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    y, pred = np.asarray(y), np.asarray(pred)
    if y.shape != pred.shape:
        raise ValueError(f"labels {y.shape} and predictions {pred.shape} differ in shape")
    labels = np.arange(len(class_names))
    precision, recall, f1, support = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    rows = [
        {
            "class": class_names[c],
            "precision": float(precision[c]),
            "recall": float(recall[c]),
            "f1": float(f1[c]),
            "support": int(support[c]),
        }
        for c in labels
    ]
    report = with_interval({}, "accuracy", (y == pred).astype(np.float64))
    return {**report, "confusion": confusion_matrix(y, pred, labels=labels), "per_class": rows}


def confused_pairs(confusion, class_names, top: int = 5) -> list[dict]:
    """The ``top`` class pairs most often mistaken for each other (both directions summed)."""
    cm = np.asarray(confusion)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(class_names):
        raise ValueError(f"confusion must be ({len(class_names)}, {len(class_names)}), got {cm.shape}")
    sym = cm + cm.T
    i, j = np.triu_indices(len(cm), k=1)
    order = np.argsort(-sym[i, j], kind="stable")[:top]
    return [
        {"pair": f"{class_names[i[o]]} / {class_names[j[o]]}", "errors": int(sym[i[o], j[o]])} for o in order
    ]


# --- the Siamese head ------------------------------------------------------------------------------------


def feature_dataset(features_model, data: Dataset) -> Dataset:
    """``data`` with every split's images replaced by their frozen DenseNet features (embedded once)."""
    parts = {}
    for split in ("train", "val", "test"):
        parts[f"x_{split}"] = evaluation.embed(features_model, getattr(data, f"x_{split}"))
        parts[f"y_{split}"] = getattr(data, f"y_{split}")
    return Dataset(
        name=f"{data.name}-densenet-features", source=data.source, class_names=list(data.class_names), **parts
    )


def train_head(features: Dataset, params: dict, seed: int = 0, cache_dir=None, force: bool = False):
    """Train (or load) the Siamese head on feature vectors; returns ``(head, record)``."""
    return training.train(
        HEAD.name,
        features,
        epochs=params["head_epochs"],
        steps_per_epoch=params["head_steps"],
        batch_size=params["head_batch"],
        seed=seed,
        cache_dir=cache_dir,
        force=force,
    )


# --- three representations --------------------------------------------------------------------------------


def representations(x, features, head) -> dict[str, np.ndarray]:
    """Raw pixels (flattened), DenseNet features and Siamese embeddings of the images ``x``, whose
    DenseNet ``features`` (from :func:`feature_dataset`) are given."""
    if len(features) != len(x):
        raise ValueError(f"{len(x)} images but {len(features)} feature vectors; pass the features of x")
    return {
        "raw pixels": np.asarray(x, np.float32).reshape(len(x), -1),
        "DenseNet features": np.asarray(features, np.float32),
        "Siamese embeddings": evaluation.embed(head, features),
    }


def compare(queries: dict, query_labels, refs: dict, ref_labels, seed: int = 0, k: int = 3) -> list[dict]:
    """One row per representation: silhouette, Davies-Bouldin, Calinski-Harabasz of the queries
    (the test sample), and ``k``-NN accuracy, precision@1 (top-1 search accuracy) and MAP@R of the
    queries searched among ``refs`` (the training images embedded the same way)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # KMeans / k-NN: one thread is faster on a shared 2-core machine
        rows = [
            _compare_one(name, emb, query_labels, refs[name], ref_labels, seed, k)
            for name, emb in queries.items()
        ]
    return rows


def _compare_one(name, emb, query_labels, ref_emb, ref_labels, seed, k):
    clusters = evaluation.cluster_metrics(emb, query_labels, seed=seed)
    retrieval = evaluation.retrieval_metrics(emb, query_labels, ref_emb, ref_labels, ks=(1,))
    return {
        "representation": name,
        "dim": int(emb.shape[1]),
        "silhouette": clusters["silhouette"],
        "davies_bouldin": clusters["davies_bouldin"],
        "calinski_harabasz": clusters["calinski_harabasz"],
        f"{k}nn_accuracy": evaluation.knn_accuracy(ref_emb, ref_labels, emb, query_labels, k=k),
        "precision_at_1": retrieval["precision_at_1"],
        "map_at_r": retrieval["map_at_r"],
        "reference_silhouette": REFERENCE_SILHOUETTE.get(name),
    }


def order_matches_reference(rows: list[dict]) -> bool:
    """Whether the measured silhouettes rise raw < features < Siamese, as the reference expects."""
    by_name = {r["representation"]: r["silhouette"] for r in rows}
    values = [by_name[name] for name in REPRESENTATIONS]
    return bool(values[0] < values[1] < values[2])


def tsne(reps: dict, seed: int = 42, perplexity: float = 40.0, max_iter: int = 1000) -> dict:
    """t-SNE of each representation (PCA to 50 dimensions first when wider, as the reference)."""
    from threadpoolctl import threadpool_limits

    out = {}
    with threadpool_limits(1):  # 6x faster than the default threads on a shared 2-core machine
        for name, emb in reps.items():
            perp = min(float(perplexity), (len(emb) - 1) / 3.0)
            out[name] = evaluation.project_2d(
                emb, method="tsne", seed=seed, perplexity=perp, max_iter=max_iter
            )
    return out


def search(query_emb, ref_emb, k: int = 5):
    """Indices ``(n_queries, k)`` of each query's ``k`` nearest references (``helpers.knn.exact_knn``)."""
    from helpers.knn import exact_knn

    idx, _ = exact_knn(query_emb, ref_emb, k)
    return idx


# --- the whole study -----------------------------------------------------------------------------------------


def run_study(
    params: dict,
    seed: int = 42,
    cache_dir=None,
    force: bool = False,
    callbacks=None,
    source: str = "auto",
    fashion_dir=None,
    with_tsne: bool = True,
    verbose: bool = True,
    data_cache: bool = True,
) -> dict:
    """Data, classifier, report, features, Siamese head, three representations compared (and their
    t-SNE). Returns every intermediate the notebook and the benchmark show."""
    timings = {}
    start = time.perf_counter()
    data = study_data(
        params, seed=seed, source=source, fashion_dir=fashion_dir, verbose=verbose, use_cache=data_cache
    )
    features_model, classifier, record = train_classifier(
        data, params, seed=0, cache_dir=cache_dir, force=force, callbacks=callbacks
    )
    timings["classifier_train_seconds"] = record["train_seconds"]
    t = time.perf_counter()
    feats = feature_dataset(features_model, data)
    timings["feature_seconds"] = time.perf_counter() - t
    report = classification_report(data.y_test, predict_classes(classifier, feats.x_test), data.class_names)
    head, head_record = train_head(feats, params, seed=0, cache_dir=cache_dir, force=force)
    timings["head_train_seconds"] = head_record["train_seconds"]
    idx = stratified_indices(data.y_test, params["sample"], seed)
    queries = representations(data.x_test[idx], feats.x_test[idx], head)
    refs = representations(data.x_train, feats.x_train, head)
    t = time.perf_counter()
    rows = compare(queries, data.y_test[idx], refs, data.y_train, seed=seed)
    timings["compare_seconds"] = time.perf_counter() - t
    points = None
    if with_tsne:
        t = time.perf_counter()
        points = tsne(queries, seed=seed, max_iter=params["tsne_iter"])
        timings["tsne_seconds"] = time.perf_counter() - t
    timings["total_seconds"] = time.perf_counter() - start
    return {
        "data": data,
        "features": feats,
        "features_model": features_model,
        "classifier": classifier,
        "record": record,
        "head": head,
        "head_record": head_record,
        "report": report,
        "sample_index": idx,
        "queries": queries,
        "refs": refs,
        "rows": rows,
        "tsne": points,
        "timings": timings,
    }
