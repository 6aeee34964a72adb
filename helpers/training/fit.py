"""``train`` and ``load_trained``: a registry model trained on a dataset, or loaded from its cache entry.

The registry name is resolved to its spec once, here at the door (:func:`train`, :func:`load_trained`,
:func:`is_cached`); the steps below take the spec.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import keras
import numpy as np

from helpers.registry import (
    build_embedding,
    build_training_model,
    compile_training_model,
    get_spec,
    spec_override,
)
from helpers.training import cache
from helpers.training.batches import make_generators
from helpers.training.callbacks import HistoryCheckpoint, tensorboard_callback, training_callbacks

# --- distribution shim (backend-specific code lives here only) ---------------------------------------


def distribution_scope():
    """A context for data-parallel training on several accelerators; a no-op on one device.

    TensorFlow: ``tf.distribute.MirroredStrategy``; JAX: ``keras.distribution.DataParallel``.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf  # backend shim

        if len(tf.config.list_logical_devices("GPU")) > 1:
            return tf.distribute.MirroredStrategy().scope()
    elif backend == "jax":
        import jax  # backend shim

        if len(jax.devices()) > 1:
            keras.distribution.set_distribution(keras.distribution.DataParallel())
    return contextlib.nullcontext()


# --- the steps ------------------------------------------------------------------------------------------


def training_params(
    spec,
    epochs=None,
    batch_size=None,
    steps_per_epoch=None,
    learning_rate=None,
    seed: int = 0,
    patience: int = 11,
) -> dict:
    """The training parameters of the registry entry ``spec``: the given values, else the entry's."""
    params = {
        "epochs": int(epochs if epochs is not None else spec.epochs),
        "batch_size": int(batch_size if batch_size is not None else spec.batch_size),
        "steps_per_epoch": int(steps_per_epoch if steps_per_epoch is not None else spec.steps_per_epoch),
        "learning_rate": float(learning_rate if learning_rate is not None else spec.learning_rate),
        "seed": int(seed),
        "patience": int(patience),
    }
    for key in ("epochs", "batch_size", "steps_per_epoch"):
        if params[key] <= 0:
            raise ValueError(f"{key} must be a positive integer, got {params[key]}")
    return params


def recalibrate_batchnorm(embedding: keras.Model, images, batch_size: int = 500) -> int:
    """Recompute the moving mean and variance of ``embedding``'s BatchNormalization layers on ``images``.

    During training the moving statistics follow augmented batches (shifted, rotated, noisy digits),
    while retrieval embeds clean ones. This replaces them with the exact population statistics of
    ``images`` ("precise BN"), one layer at a time in graph order, each layer seeing the outputs of the
    layers before it already recalibrated. The weights the optimizer learned are not touched.
    :func:`train` calls it for an entry with ``recalibrate_bn``.

    Parameters
    ----------
    embedding : keras.Model
        A functional model whose BatchNormalization layers are its own (not inside a nested model).
    images : array-like of shape (n_samples, ...)
        Model inputs, e.g. the clean training images.
    batch_size : int, default=500
        Images per forward pass (memory, not the result, depends on it).

    Returns
    -------
    int
        The number of layers recalibrated.
    """
    images = np.asarray(images)
    if len(images) < 2:
        raise ValueError(f"recalibrating BatchNorm needs at least 2 images, got {len(images)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    nested = [
        layer.name
        for model in embedding.layers
        if isinstance(model, keras.Model)
        for layer in cache.walk_layers(model)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    if nested:
        raise ValueError(
            f"{embedding.name} has BatchNormalization layers inside nested models ({', '.join(nested)}); "
            "recalibrate_batchnorm handles the model's own layers only: build it as one functional model"
        )
    layers_bn = [layer for layer in embedding.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers_bn:
        _recalibrate_layer(embedding, layer, images, batch_size)
    return len(layers_bn)


def _recalibrate_layer(embedding: keras.Model, layer, images: np.ndarray, batch_size: int) -> None:
    """Set ``layer``'s moving statistics to the mean and variance of its inputs over ``images``."""
    probe = keras.Model(embedding.input, layer.input)
    axes = [a % len(layer.input.shape) for a in np.atleast_1d(layer.axis)]
    total, total_sq, count = 0.0, 0.0, 0
    for start in range(0, len(images), batch_size):
        x = np.asarray(probe.predict_on_batch(images[start : start + batch_size]), dtype=np.float64)
        reduce = tuple(a for a in range(x.ndim) if a not in axes)
        total = total + x.sum(axis=reduce)
        total_sq = total_sq + np.square(x).sum(axis=reduce)
        count += int(np.prod([x.shape[a] for a in reduce]))
    mean = total / count
    variance = np.maximum(total_sq / count - np.square(mean), 0.0)
    layer.moving_mean.assign(mean.reshape(layer.moving_mean.shape).astype(layer.moving_mean.dtype))
    layer.moving_variance.assign(
        variance.reshape(layer.moving_variance.shape).astype(layer.moving_variance.dtype)
    )


def compile_for_fit(spec, model, embedding, data, params):
    """Compile the training ``model`` for the schedule of ``params`` (:func:`training_params`) and
    return its ``(train, validation)`` generators."""
    compile_training_model(
        model,
        spec.name,
        params["learning_rate"],
        total_steps=params["epochs"] * params["steps_per_epoch"],
        steps_per_epoch=params["steps_per_epoch"],
    )
    return make_generators(
        spec,
        data,
        params["batch_size"],
        params["steps_per_epoch"],
        seed=params["seed"],
        embedding=embedding,
        trainer=model,
    )


def fit_from_backup(
    spec, model, embedding, data, params, work: Path, verbose, extra_callbacks
) -> tuple[HistoryCheckpoint, float]:
    """Compile, fit from the last backed-up epoch, then keep the best epoch's weights."""
    train_gen, val_gen = compile_for_fit(spec, model, embedding, data, params)
    history_cb = HistoryCheckpoint(work / "history.partial.json")
    if history_cb.epochs:
        print(
            f"[{spec.name}] found an interrupted run ({len(history_cb.epochs)} epochs done); resuming",
            flush=True,
        )
    board = tensorboard_callback(spec.name, data.name, work.name)
    extra_callbacks = [*(extra_callbacks or []), *([board] if board else [])]
    cbs = training_callbacks(spec, params, work, train_gen, history_cb, verbose, extra_callbacks)
    start = time.perf_counter()
    model.fit(
        train_gen,
        validation_data=val_gen,
        epochs=params["epochs"],
        callbacks=cbs,
        verbose=1 if verbose == 1 else 0,
    )
    seconds = time.perf_counter() - start
    best = work / "best.weights.h5"
    if best.exists():  # the epoch with the best validation monitor
        try:
            cache.load_weights(model, best)
        except cache.CacheError as exc:
            print(f"[{spec.name}] best-epoch checkpoint unusable ({exc}); keeping the last epoch's weights")
    return history_cb, seconds


# --- train ------------------------------------------------------------------------------------------------


def train(
    name: str,
    data,
    epochs: int | None = None,
    batch_size: int | None = None,
    steps_per_epoch: int | None = None,
    learning_rate: float | None = None,
    seed: int = 0,
    force: bool = False,
    cache_dir: str | os.PathLike | None = None,
    verbose: int | str = "auto",
    patience: int = 11,
    callbacks: list | None = None,
    augment: str | None = None,
):
    """Train the registry model ``name`` on ``data`` or load it from the cache.

    Parameters
    ----------
    name : str
        A key of ``helpers.registry.MODELS`` (or ``STUDY_MODELS``).
    data : helpers.data.Dataset
        Uses ``x_train, y_train`` for training and ``x_val, y_val`` for validation; ``data.name``
        picks the cache folder.
    epochs, batch_size, steps_per_epoch, learning_rate : optional
        Default to the registry entry's values.
    seed : int
        Seeds weights initialisation and the generators.
    force : bool
        Retrain even when a matching cache entry exists.
    cache_dir : path, optional
        Defaults to ``helpers.config.MODELS_CACHE``; the entry goes to ``<cache_dir>/<data.name>/``.
    verbose : "auto" or int
        "auto" prints one line per epoch; 1 shows Keras progress bars; 0 is silent.
    callbacks : list, optional
        Keras callbacks added after the training's own.
    augment : {"host", "device"}, optional
        Where an augmenting model augments: numpy in the generator, or a layer in the training graph
        (for accelerators, which one host thread cannot feed). None keeps the registry's. The cache
        entry is the same either way; a model the registry does not augment stays unaugmented.

    Returns
    -------
    (keras.Model, dict)
        The embedding model (images -> embedding) and the history record
        ``{"history": {...}, "fingerprint": ..., "train_seconds": ..., "from_cache": bool, ...}``.
    """
    if augment not in (None, "host", "device"):
        raise ValueError(f"augment must be 'host', 'device' or None, got {augment!r}")
    spec = get_spec(name)
    override = augment is not None and spec.augment and augment != spec.augment
    with spec_override(name, augment=augment) if override else contextlib.nullcontext(spec) as spec:
        params = training_params(spec, epochs, batch_size, steps_per_epoch, learning_rate, seed, patience)
        paths = cache.cache_paths(name, cache_dir, cache.dataset_name(data))
        keras.utils.set_random_seed(seed)
        with distribution_scope():
            model, embedding = build_training_model(
                name, len(data.class_names), tuple(data.x_train.shape[1:])
            )
        prints = cache.fingerprints(spec, data, params, embedding)
        record = None if force else cache.load_cached(name, model, embedding, prints["fingerprint"], paths)
        trained = False
        if record:
            print(f"[{name}] loaded from cache ({paths['history'].parent})", flush=True)
        else:
            record, trained = _fit_entry(
                spec, model, embedding, data, params, prints, paths, force, verbose, callbacks
            )
    if not trained:
        cache.ensure_model_file(embedding, paths)
    return embedding, {**record, "from_cache": not trained}


def _fit_entry(
    spec, model, embedding, data, params, prints, paths, force, verbose, callbacks
) -> tuple[dict, bool]:
    """Under the entry's lock: load what another process trained meanwhile, else fit and save the
    entry. Returns ``(record, trained)``."""
    with cache.entry_lock(spec.name, paths) as waited:
        record = (
            cache.load_cached(spec.name, model, embedding, prints["fingerprint"], paths) if waited else None
        )
        if record:
            print(f"[{spec.name}] loaded from cache what the other process trained", flush=True)
            return record, False
        work = cache.work_folder(paths, prints["fingerprint"], force)
        history_cb, seconds = fit_from_backup(spec, model, embedding, data, params, work, verbose, callbacks)
        if spec.recalibrate_bn:  # after the best epoch's weights are loaded, before saving
            recalibrate_batchnorm(embedding, data.x_train)
        record = _record(spec, data, params, prints, history_cb, seconds)
        return cache.save_entry(paths, model, embedding, record), True


def _record(spec, data, params, prints, history_cb, seconds) -> dict:
    """The record of a finished run: fingerprints, parameters, history, timings, backend."""
    return {
        "model": spec.name,
        "dataset": data.name,
        **prints,
        "params": params,
        "history": history_cb.as_history(),
        "train_seconds": seconds,
        "resumed_from_epoch": history_cb.first_epoch or 0,
        "backend": keras.backend.backend(),
        "keras_version": keras.__version__,
    }


def load_trained(name: str, data, cache_dir=None, retrain: bool = False, **params) -> keras.Model:
    """The cached embedding of ``name`` for ``data``, refusing an entry that is stale.

    Stale means trained for another registry entry, architecture, loss or generator code, Keras
    version or data than today's: :class:`StaleCacheError` says which and how to retrain. With
    ``params`` (``epochs=…``, ``steps_per_epoch=…``…) the training budget must match too.
    ``retrain=True`` trains (through :func:`train`, with ``params``) instead of raising.
    """
    spec = get_spec(name)
    dataset = cache.dataset_name(data)
    paths = cache.cache_paths(name, cache_dir, dataset)
    embedding = build_embedding(name, tuple(data.x_train.shape[1:]))
    record = cache.read_record(paths["history"])
    try:
        if record is None or not record.get("complete"):
            raise cache.CacheError(f"{paths['history'].name} is missing")
        reasons = []
        if record.get("model_fingerprint") != cache.model_fingerprint(spec, embedding):
            reasons.append("the registry entry, architecture, loss/generator code or Keras version changed")
        if record.get("data_fingerprint") != cache.data_fingerprint(data):
            reasons.append(f"it was trained on other {dataset} data")
        if params and record.get("params") != training_params(spec, **params):
            reasons.append(f"it was trained with {record.get('params')}")
        if reasons:
            raise cache.StaleCacheError(
                f"{paths['history'].parent / name} is stale: {'; '.join(reasons)}; "
                f"retrain with helpers.training.train({name!r}, data, force=True)"
            )
        cache.load_weights(embedding, paths["feature_extractor"])
        cache.ensure_model_file(embedding, paths)
    except cache.CacheError:
        if not retrain:
            raise
        embedding, _ = train(name, data, cache_dir=cache_dir, **params)
    return embedding


def load_embedding(
    name: str, data=None, input_shape=(28, 28, 1), cache_dir=None, dataset: str = "mnist"
) -> keras.Model:
    """Build ``name``'s embedding model and load its cached feature-extractor weights.

    With ``data`` this is :func:`load_trained` (a stale entry raises :class:`StaleCacheError`);
    without, the weights of ``<cache_dir>/<dataset>/`` are loaded unchecked. Raises ``CacheError``
    (one line) when the weights are missing or damaged.
    """
    if data is not None:
        return load_trained(name, data, cache_dir=cache_dir)
    embedding = build_embedding(name, input_shape)
    cache.load_weights(embedding, cache.cache_paths(name, cache_dir, dataset)["feature_extractor"])
    return embedding


def is_cached(
    name: str,
    data,
    cache_dir: str | os.PathLike | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    steps_per_epoch: int | None = None,
    learning_rate: float | None = None,
    seed: int = 0,
    patience: int = 11,
) -> bool:
    """Whether :func:`train` with these arguments would load ``name`` from the cache: a complete
    entry with the same fingerprint. Builds the model (no weights are loaded, nothing is trained)."""
    spec = get_spec(name)
    params = training_params(spec, epochs, batch_size, steps_per_epoch, learning_rate, seed, patience)
    record = cache.read_cache_record(name, cache_dir, cache.dataset_name(data))
    if not record or not record.get("complete"):
        return False
    _, embedding = build_training_model(name, len(data.class_names), tuple(data.x_train.shape[1:]))
    return record.get("fingerprint") == cache.training_fingerprint(spec, data, params, embedding)
