"""Training with a disk cache that never throws work away, and resumes after a crash.

``train(name, data)`` returns the trained embedding model and its history. Results are cached in
``cache_dir`` (``models_cache/`` by default):

- ``<name>.weights.h5``: the training model (embedding + any head);
- ``<name>.feature_extractor.weights.h5``: the embedding model alone;
- ``<name>.history.json``: the per-epoch history, the fingerprint and timings. Written last, so
  it marks a complete cache entry.

The fingerprint hashes the registry entry, the architecture, the data and the training parameters:
a matching cache is loaded instead of training, anything else retrains. While a model trains, its
work folder ``<name>.work/`` holds Keras ``BackupAndRestore`` state, the best weights so far and
the partial history, so a killed run restarts from its last finished epoch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import keras
import numpy as np

from helpers import config
from helpers.models import build_training_model, compile_training_model, get_spec

CACHE_FORMAT = 1


class CacheError(RuntimeError):
    """A cache entry exists but cannot be used (corrupt or truncated weights)."""


# --- fingerprints -----------------------------------------------------------------------------------


def data_fingerprint(data) -> str:
    """Hash of the arrays a model trains and validates on (names, shapes and contents)."""
    digest = hashlib.sha256()
    for split in ("x_train", "y_train", "x_val", "y_val"):
        array = np.ascontiguousarray(getattr(data, split))
        digest.update(f"{split}:{array.shape}:{array.dtype}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def training_fingerprint(name: str, data, params: dict, embedding: keras.Model | None = None) -> str:
    """Hash of everything that determines the trained weights of ``name``."""
    spec = get_spec(name)
    payload = {
        "format": CACHE_FORMAT,
        "spec": spec.config(),
        "params": params,
        "data": data_fingerprint(data),
        "architecture": _architecture_digest(embedding) if embedding is not None else None,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _architecture_digest(model: keras.Model) -> str:
    # layer names carry global counters (dense_3 vs dense_7): hash classes, shapes and configs
    # without names so that the same architecture built twice gives the same digest
    parts = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        cfg = {k: v for k, v in layer.get_config().items() if k != "name"}
        parts.append(f"{type(layer).__name__}:{json.dumps(cfg, sort_keys=True, default=str)}")
    parts.append(str([tuple(w.shape) for w in model.weights]))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


# --- cache paths -------------------------------------------------------------------------------------


def cache_paths(name: str, cache_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    cache_dir = Path(cache_dir or config.MODELS_CACHE)
    return {
        "weights": cache_dir / f"{name}.weights.h5",
        "feature_extractor": cache_dir / f"{name}.feature_extractor.weights.h5",
        "history": cache_dir / f"{name}.history.json",
        "work": cache_dir / f"{name}.work",
    }


def read_cache_record(name: str, cache_dir=None) -> dict | None:
    """The cached history record of ``name`` (fingerprint, history, timings) or None."""
    path = cache_paths(name, cache_dir)["history"]
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _load_weights(model: keras.Model, path: Path) -> None:
    """Load weights, turning h5py/Keras failures on a damaged file into one CacheError."""
    if not path.exists():
        raise CacheError(f"{path.name} is missing")
    try:
        model.load_weights(path)
    except Exception as exc:  # h5py raises OSError, Keras ValueError: both mean unusable
        raise CacheError(f"{path.name} is unreadable ({type(exc).__name__}: {exc})") from None


# --- generators ---------------------------------------------------------------------------------------


def make_generators(name: str, data, batch_size: int, steps_per_epoch: int, seed: int = 0,
                    embedding: keras.Model | None = None):
    """The training and validation generators for the registry entry ``name``.

    With ``spec.mining != "random"`` the training generator mines negatives in ``embedding``'s
    space, re-embedding the training images at the start of every epoch.
    """
    from helpers import generators

    spec = get_spec(name)
    val_steps = max(1, min(steps_per_epoch, len(data.x_val) // batch_size))
    if spec.generator == "pk":
        per_class = max(2, batch_size // spec.classes_per_batch)
        make = lambda x, y, steps, s, augment: generators.PKBatchGenerator(  # noqa: E731
            x, y, classes_per_batch=spec.classes_per_batch, samples_per_class=per_class,
            steps_per_epoch=steps, seed=s, augment=augment)
        # the validation batches stay the same every epoch (epoch 0), so val_loss is comparable
        return make(data.x_train, data.y_train, steps_per_epoch, seed, spec.augment_on_host), \
            make(data.x_val, data.y_val, val_steps, seed + 10_000, False)
    cls = {
        "pairs": generators.SiamesePairGenerator,
        "triplets": generators.TripletGenerator,
        "triplets_cls": generators.TripletClsGenerator,
    }[spec.generator]
    mining = {}
    if spec.mining != "random":
        if embedding is None:
            raise ValueError(f"model {name!r} mines with mining={spec.mining!r}: pass its embedding")
        mining = {"mining": spec.mining,
                  "embed_fn": lambda x: embedding.predict(x, batch_size=512, verbose=0)}
    train_gen = cls(data.x_train, data.y_train, batch_size=batch_size,
                    steps_per_epoch=steps_per_epoch, seed=seed, augment=spec.augment_on_host, **mining)
    val_gen = cls(data.x_val, data.y_val, batch_size=batch_size, steps_per_epoch=val_steps,
                  seed=seed + 10_000)
    return train_gen, val_gen


# --- callbacks -----------------------------------------------------------------------------------------


class EpochSeed(keras.callbacks.Callback):
    """Tell the generator which epoch is starting, so a resumed run draws the same batches."""

    def __init__(self, generator):
        super().__init__()
        self.generator = generator

    def on_epoch_begin(self, epoch, logs=None):
        self.generator.set_epoch(epoch)


class HistoryCheckpoint(keras.callbacks.Callback):
    """Write the history after every epoch (atomically), keyed by epoch so each appears once."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = Path(path)
        self.epochs: dict[int, dict] = {}
        if self.path.exists():
            try:
                self.epochs = {int(k): v for k, v in json.loads(self.path.read_text()).items()}
            except (OSError, json.JSONDecodeError, ValueError):
                self.epochs = {}
        self._start = None
        self.first_epoch = None  # the first epoch this process ran: > 0 after a resume

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        if self.first_epoch is None:
            self.first_epoch = int(epoch)

    def on_epoch_end(self, epoch, logs=None):
        record = {k: float(v) for k, v in (logs or {}).items()}
        lr = self.model.optimizer.learning_rate
        record["learning_rate"] = float(keras.ops.convert_to_numpy(lr))
        record["seconds"] = time.perf_counter() - (self._start or time.perf_counter())
        self.epochs[int(epoch)] = record
        config.write_json(self.path, {str(k): v for k, v in sorted(self.epochs.items())})

    def as_history(self) -> dict[str, list]:
        """Column view: {"loss": [...], "val_loss": [...], ..., "epoch": [...]}."""
        keys = sorted({k for rec in self.epochs.values() for k in rec})
        epochs = sorted(self.epochs)
        history = {k: [self.epochs[e].get(k) for e in epochs] for k in keys}
        history["epoch"] = epochs
        return history


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` whose backup survives a kill at any instant.

    Keras writes the backup weights in place, so a SIGKILL during that write leaves a file that
    the next run cannot open (seen in the resume test). Here the weights and the epoch metadata
    are written to temporary files and moved into place with ``os.replace``.
    Relies on Keras 3's private ``_weights_path`` / ``_training_metadata_path`` (keras is pinned).
    """

    def _save_model(self):
        Path(self.backup_dir).mkdir(parents=True, exist_ok=True)
        with config.atomic_path(self._weights_path) as weights_tmp:
            self.model.save_weights(filepath=str(weights_tmp), overwrite=True)
            with config.atomic_path(self._training_metadata_path, suffix=".json") as meta_tmp:
                meta_tmp.write_text(json.dumps({"epoch": self._current_epoch,
                                                "batch": self._last_batch_seen}))
            # leaving the weights context moves the weights into place; the metadata went first,
            # so a kill in between resumes one epoch early with these weights: never a crash


class EpochLog(keras.callbacks.Callback):
    """One plain line per epoch: readable in papermill output and CI logs (no progress bars)."""

    def __init__(self, name: str, epochs: int):
        super().__init__()
        self.name, self.total = name, epochs
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        shown = " ".join(f"{k}={v:.4f}" for k, v in (logs or {}).items() if "loss" in k or "accuracy" in k)
        print(f"[{self.name}] epoch {epoch + 1}/{self.total} {shown} "
              f"({time.perf_counter() - self._start:.1f}s)", flush=True)


# --- distribution shim (backend-specific code lives here only) ---------------------------------------


def distribution_scope():
    """A context for data-parallel training on several accelerators; a no-op on one device.

    TensorFlow: ``tf.distribute.MirroredStrategy``; JAX: ``keras.distribution.DataParallel``.
    """
    import contextlib

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
):
    """Train the registry model ``name`` on ``data`` or load it from the cache.

    Parameters
    ----------
    name : str
        A key of ``helpers.models.MODELS``.
    data : helpers.data.Dataset
        Uses ``x_train, y_train`` for training and ``x_val, y_val`` for validation.
    epochs, batch_size, steps_per_epoch, learning_rate : optional
        Default to the registry entry's values.
    seed : int
        Seeds weights initialisation and the generators.
    force : bool
        Retrain even when a matching cache entry exists.
    cache_dir : path, optional
        Defaults to ``helpers.config.MODELS_CACHE``.
    verbose : "auto" or int
        "auto" prints one line per epoch; 1 shows Keras progress bars; 0 is silent.

    Returns
    -------
    (keras.Model, dict)
        The embedding model (images -> embedding) and the history record
        ``{"history": {...}, "fingerprint": ..., "train_seconds": ..., "from_cache": bool, ...}``.
    """
    spec = get_spec(name)
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
    input_shape = tuple(data.x_train.shape[1:])
    num_classes = int(len(data.class_names))
    paths = cache_paths(name, cache_dir)

    keras.utils.set_random_seed(seed)
    with distribution_scope():
        model, embedding = build_training_model(name, num_classes, input_shape)
    fingerprint = training_fingerprint(name, data, params, embedding)

    record = read_cache_record(name, cache_dir)
    if record and not force:
        if record.get("fingerprint") == fingerprint and record.get("complete"):
            try:
                _load_weights(embedding, paths["feature_extractor"])
                _load_weights(model, paths["weights"])
                print(f"[{name}] loaded from cache ({paths['history'].parent})", flush=True)
                return embedding, {**record, "from_cache": True}
            except CacheError as exc:
                print(f"[{name}] cache unusable: {exc}; retraining", flush=True)
        else:
            print(f"[{name}] cache is for another configuration; retraining", flush=True)

    work = paths["work"] / fingerprint[:16]
    if force and paths["work"].exists():
        shutil.rmtree(paths["work"])
    if paths["work"].exists():  # work folders of other configurations are stale
        for other in paths["work"].iterdir():
            if other.name != work.name:
                shutil.rmtree(other, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)

    compile_training_model(model, name, params["learning_rate"],
                           total_steps=params["epochs"] * params["steps_per_epoch"])
    train_gen, val_gen = make_generators(
        name, data, params["batch_size"], params["steps_per_epoch"], seed=seed, embedding=embedding
    )
    history_cb = HistoryCheckpoint(work / "history.partial.json")
    if history_cb.epochs:
        print(f"[{name}] found an interrupted run ({len(history_cb.epochs)} epochs done); resuming",
              flush=True)
    keras_verbose = 1 if verbose == 1 else 0
    cbs = [
        EpochSeed(train_gen),
        # the history is written before the backup: a kill between the two retrains that epoch
        # and overwrites its history entry, instead of losing it
        history_cb,
        AtomicBackupAndRestore(str(work / "backup"), save_freq="epoch", delete_checkpoint=False),
        # spec.monitor: val_loss, or val_accuracy (mode max) for a cross_entropy classifier
        keras.callbacks.EarlyStopping(monitor=spec.monitor, mode=spec.monitor_mode, patience=patience,
                                      restore_best_weights=True),
        keras.callbacks.ModelCheckpoint(str(work / "best.weights.h5"), monitor=spec.monitor,
                                        mode=spec.monitor_mode, save_best_only=True, save_weights_only=True),
    ]
    if spec.lr_schedule == "plateau":  # a cosine schedule lives in the optimizer instead
        cbs.append(keras.callbacks.ReduceLROnPlateau(monitor=spec.monitor, mode=spec.monitor_mode,
                                                     factor=spec.plateau_factor,
                                                     patience=spec.plateau_patience, min_lr=1e-6))
    if verbose == "auto":
        cbs.append(EpochLog(name, params["epochs"]))
    cbs.extend(callbacks or [])

    start = time.perf_counter()
    model.fit(train_gen, validation_data=val_gen, epochs=params["epochs"], callbacks=cbs,
              verbose=keras_verbose)
    seconds = time.perf_counter() - start
    best = work / "best.weights.h5"
    if best.exists():  # the epoch with the best spec.monitor, as ModelCheckpoint saw it
        try:
            _load_weights(model, best)
        except CacheError as exc:  # killed while ModelCheckpoint wrote it: keep the last weights
            print(f"[{name}] best-epoch checkpoint unusable ({exc}); keeping the last epoch's weights")

    with config.atomic_path(paths["weights"]) as tmp:
        model.save_weights(tmp)
    with config.atomic_path(paths["feature_extractor"]) as tmp:
        embedding.save_weights(tmp)
    record = {
        "model": name,
        "fingerprint": fingerprint,
        "complete": True,
        "params": params,
        "history": history_cb.as_history(),
        "train_seconds": seconds,
        "resumed_from_epoch": history_cb.first_epoch or 0,
        "backend": keras.backend.backend(),
        "keras_version": keras.__version__,
    }
    config.write_json(paths["history"], record)
    shutil.rmtree(paths["work"], ignore_errors=True)
    return embedding, {**record, "from_cache": False}


def load_embedding(name: str, data=None, input_shape=(28, 28, 1), cache_dir=None) -> keras.Model:
    """Build ``name``'s embedding model and load its cached feature-extractor weights.

    Raises ``CacheError`` (one line) when the weights are missing or damaged.
    """
    from helpers.models import build_embedding

    if data is not None:
        input_shape = tuple(data.x_train.shape[1:])
    embedding = build_embedding(name, input_shape)
    _load_weights(embedding, cache_paths(name, cache_dir)["feature_extractor"])
    return embedding


def main(argv=None):
    """``python -m helpers.training NAME [--epochs N] ...``: train (or load) one model; used by the
    resume test, which kills this process mid-run."""
    import argparse

    from helpers.data import load_dataset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--steps-per-epoch", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--cache-dir")
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--source", default="auto")
    args = parser.parse_args(argv)
    data = load_dataset(args.dataset, source=args.source)
    _, record = train(args.name, data, epochs=args.epochs, batch_size=args.batch_size,
                      steps_per_epoch=args.steps_per_epoch, force=args.force, cache_dir=args.cache_dir)
    print(json.dumps({"from_cache": record["from_cache"], "epochs": record["history"]["epoch"],
                      "resumed_from_epoch": record["resumed_from_epoch"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
