"""Training with a disk cache that never throws work away, and resumes after a crash.

``train(name, data)`` returns the trained embedding model and its history. Results are cached per
dataset in ``<cache_dir>/<dataset>/`` (``models_cache/mnist/``, ``models_cache/fashion_mnist/``…), so
profiles on different datasets keep their own entries:

- ``<name>.weights.h5``: the training model (embedding + any head);
- ``<name>.feature_extractor.weights.h5``: the embedding model alone;
- ``<name>.keras``: the embedding model as a whole (architecture and weights), which
  ``keras.models.load_model`` reads after ``import helpers``; not part of the fingerprint, so an
  entry without one gets it when it is next loaded;
- ``<name>.history.json``: the per-epoch history, the fingerprints and timings. Written last, so
  it marks a complete cache entry;
- ``<name>.lock``: taken while the entry is trained, so a second process waits and then loads it.

The fingerprint hashes what decides the weights: the registry entry, the architecture, the code of
the losses and generators, the Keras version, the data and the training parameters. A matching
cache is loaded instead of training, anything else retrains; :func:`load_trained` refuses a stale
entry. While a model trains, its work folder ``<name>.work/`` holds the Keras ``BackupAndRestore``
state, the best weights so far and the partial history, so a killed run restarts from its last
finished epoch.

``train_many(names, data, processes=2)`` trains several models at once, each in its own worker
process (``python -m helpers.training``) with its share of the CPU's cores, through the same
``train`` and the same cache; then it loads them all.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import time
from pathlib import Path

import keras
import numpy as np

from helpers import allocator, config
from helpers.registry import (
    GENERATOR_KINDS,
    LOSS_KINDS,
    build_training_model,
    compile_training_model,
    get_spec,
    spec_override,
)

CACHE_FORMAT = 2
# The modules whose code decides the trained weights beyond the registry entry and the architecture
# (which are hashed directly): the losses, the batch sampling and mining, the augmentation, the k-NN
# the mining uses; a study's own loss and sampler code through study_code_modules.
WEIGHT_CODE = ("losses", "samplers", "augment", "knn")


class CacheError(RuntimeError):
    """A cache entry exists but cannot be used (missing, corrupt or truncated weights)."""


class StaleCacheError(CacheError):
    """A cache entry was trained for another registry entry, architecture, code, Keras or data."""


# --- fingerprints -----------------------------------------------------------------------------------


def data_fingerprint(data) -> str:
    """Hash of the arrays a model trains and validates on (names, shapes and contents)."""
    digest = hashlib.sha256()
    for split in ("x_train", "y_train", "x_val", "y_val"):
        array = np.ascontiguousarray(getattr(data, split))
        digest.update(f"{split}:{array.shape}:{array.dtype}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def code_version(modules=WEIGHT_CODE, folder: str | os.PathLike | None = None) -> str:
    """Hash of the code of ``helpers.<module>`` for each of ``modules``, comments and docstrings left out.

    A hash of the source rather than a hand-bumped version constant: nobody has to remember to bump
    it, and a change to a loss or to the sampling retrains. Parsing first (``ast``) means that
    reformatting, comments and docstrings do not retrain.
    """
    digest = hashlib.sha256()
    for module in modules:
        path = Path(folder or Path(__file__).parent) / f"{module.replace('.', '/')}.py"
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if (
                isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                and body
                and isinstance(body[0], ast.Expr)
                and isinstance(getattr(body[0], "value", None), ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]
        digest.update(f"{module}:{ast.dump(tree)}".encode())
    return digest.hexdigest()


def study_code_modules(spec) -> tuple[str, ...]:
    """The ``helpers`` modules besides :data:`WEIGHT_CODE` that define ``spec``'s builder, its study
    sampler or its study loss (``("studies.<study>",)`` for a study model): their code decides that
    model's weights too, and is hashed for it alone, so editing one study retrains only that study's models."""
    objects = [spec.builder, LOSS_KINDS[spec.loss].build]
    kind = GENERATOR_KINDS.get(spec.generator)
    if kind is not None:
        objects.append(kind.factory)
    found = []
    for obj in objects:
        package, _, module = (getattr(obj, "__module__", "") or "").partition(".")
        if package == "helpers" and module and module not in WEIGHT_CODE + ("registry", "architectures"):
            found.append(module)
    return tuple(sorted(set(found)))


def model_fingerprint(name: str, embedding: keras.Model | None = None) -> str:
    """Hash of what decides the weights of ``name`` apart from the data and the training budget:
    the registry entry, the architecture, the loss and generator code (and a study model's own
    module, :func:`study_code_modules`) and the Keras version."""
    spec = get_spec(name)
    payload = {
        "format": CACHE_FORMAT,
        "spec": spec.config(),
        "architecture": _architecture_digest(embedding) if embedding is not None else None,
        "code": code_version(),
        "keras": keras.__version__,
    }
    study_modules = study_code_modules(spec)
    if study_modules:  # absent for the six core models: their fingerprints stay as they were
        payload["study_code"] = code_version(study_modules)
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def training_fingerprint(name: str, data, params: dict, embedding: keras.Model | None = None) -> str:
    """Hash of everything that determines the trained weights of ``name``."""
    payload = {"model": model_fingerprint(name, embedding), "params": params, "data": data_fingerprint(data)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _walk_layers(model: keras.Model):
    """Every layer of ``model``, depth first into nested models (public ``Model.layers`` only)."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _walk_layers(layer)


def _architecture_digest(model: keras.Model) -> str:
    # layer names carry global counters (dense_3 vs dense_7): hash classes, configs and weight shapes
    # without names so that the same architecture built twice gives the same digest
    parts = []
    for layer in _walk_layers(model):
        cfg = {k: v for k, v in layer.get_config().items() if k != "name"}
        parts.append(f"{type(layer).__name__}:{json.dumps(cfg, sort_keys=True, default=str)}")
    parts.append(str([(tuple(w.shape), str(w.dtype)) for w in model.weights]))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


# --- cache paths -------------------------------------------------------------------------------------


def _dataset_name(data=None, dataset: str | None = None) -> str:
    name = dataset or getattr(data, "name", None)
    if not name:
        raise ValueError("the cache is kept per dataset: pass data (a Dataset) or dataset='mnist'")
    return str(name)


def cache_paths(
    name: str, cache_dir: str | os.PathLike | None = None, dataset: str = "mnist"
) -> dict[str, Path]:
    """The files of ``name``'s cache entry for ``dataset``: ``<cache_dir>/<dataset>/<name>.*``."""
    folder = Path(cache_dir or config.MODELS_CACHE) / dataset
    return {
        "weights": folder / f"{name}.weights.h5",
        "feature_extractor": folder / f"{name}.feature_extractor.weights.h5",
        "model": folder / f"{name}.keras",
        "history": folder / f"{name}.history.json",
        "work": folder / f"{name}.work",
        "lock": folder / f"{name}.lock",
    }


def read_cache_record(name: str, cache_dir=None, dataset: str = "mnist") -> dict | None:
    """The cached history record of ``name`` (fingerprints, history, timings) or None."""
    path = cache_paths(name, cache_dir, dataset)["history"]
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


def save_model_file(embedding: keras.Model, path: str | os.PathLike) -> Path:
    """Save ``embedding`` as a ``.keras`` file (architecture and weights), atomically."""
    path = Path(path)
    with config.atomic_path(path, suffix=".keras") as tmp:
        embedding.save(tmp)
    return path


def _ensure_model_file(embedding: keras.Model, paths: dict) -> None:
    """Write the entry's ``.keras`` when it is missing or older than the entry's weights."""
    model_file, weights = paths["model"], paths["feature_extractor"]
    if model_file.exists() and model_file.stat().st_mtime_ns >= weights.stat().st_mtime_ns:
        return
    try:
        save_model_file(embedding, model_file)
    except OSError as exc:  # a read-only cache still loads; only the take-away file is missing
        print(f"cannot write {model_file} ({exc}); the cached weights are unaffected", flush=True)


# --- generators ---------------------------------------------------------------------------------------


def _mining_embedder(embedding: keras.Model, trainer: keras.Model | None):
    """``embed_fn`` of a mining generator: the training images in ``embedding``'s current space.

    Backend shim (JAX): during ``fit`` the JAX trainer keeps the weights in its own state and empties
    the variables, and a ``PyDataset`` ends its epoch before the trainer puts them back; the
    trainer's public ``jax_state_sync()`` (what a callback that needs the weights calls) puts them
    back first. Other backends have no such method and need nothing."""

    def embed(x):
        sync = getattr(trainer, "jax_state_sync", None)
        if sync is not None:
            sync()
        return embedding.predict(x, batch_size=512, verbose=0)

    return embed


def make_generators(
    name: str,
    data,
    batch_size: int,
    steps_per_epoch: int,
    seed: int = 0,
    embedding: keras.Model | None = None,
    trainer: keras.Model | None = None,
):
    """The training and validation generators for the registry entry ``name``.

    The spec's ``generator`` names a class of ``helpers.samplers.GENERATORS`` (or a study's kind
    in ``helpers.samplers.GENERATOR_KINDS``). With ``spec.mining != "random"`` the training generator
    mines negatives in ``embedding``'s space, re-embedding the training images every epoch
    (``trainer``: the training model being fit, whose weights those are). The validation batches
    stay the same every epoch (epoch 0, no augmentation), so val_loss is comparable.
    """
    from helpers import samplers

    spec = get_spec(name)
    val_steps = max(1, min(steps_per_epoch, len(data.x_val) // batch_size))
    kind = GENERATOR_KINDS.get(spec.generator)
    if kind is not None:  # a study's own sampler, registered by its module
        return (
            kind.factory(
                spec, data.x_train, data.y_train, batch_size, steps_per_epoch, seed, _host_augment(spec)
            ),
            kind.factory(spec, data.x_val, data.y_val, batch_size, val_steps, seed + 10_000, False),
        )
    mining = {}
    if spec.mining != "random":
        if embedding is None:
            raise ValueError(f"model {name!r} mines with mining={spec.mining!r}: pass its embedding")
        mining = {
            "mining": spec.mining,
            "embed_fn": _mining_embedder(embedding, trainer),
        }
    batches = _batch_arguments(spec, batch_size)
    train_gen = samplers.get_generator(
        spec.generator,
        data.x_train,
        data.y_train,
        steps_per_epoch=steps_per_epoch,
        seed=seed,
        augment=_host_augment(spec),
        **batches,
        **mining,
        **_augment_threads(spec),
    )
    val_gen = samplers.get_generator(
        spec.generator, data.x_val, data.y_val, steps_per_epoch=val_steps, seed=seed + 10_000, **batches
    )
    return train_gen, val_gen


def _host_augment(spec):
    """The training generator's ``augment``: False, or the numpy augmenter of ``spec.augment_params``
    (``True``, the default strengths, when it has none)."""
    from helpers.augment import Augmenter

    if not spec.augment_on_host:
        return False
    return Augmenter(**spec.augment_params) if spec.augment_params else True


#: threads that build the next batches while the trainer runs this one (``PyDataset(workers=...)``)
AUGMENT_THREADS = 2


def _augment_threads(spec) -> dict:
    """``PyDataset`` arguments of a training generator: worker threads when it augments on the host.

    Each batch draws from its own ``(seed, epoch, index)`` stream, so threads give the trainer the same
    batches in the same order; they only overlap the numpy augmentation with the training step
    (the suite-time benchmark measures what it saves). A mining generator keeps one: its
    epoch-end refresh embeds the training images with the model being trained.
    """
    if spec.augment_on_host and spec.mining == "random":
        return {"workers": AUGMENT_THREADS, "use_multiprocessing": False}
    return {}


def _batch_arguments(spec, batch_size: int) -> dict:
    """The generator's batch arguments: ``batch_size``, or P classes x K images for ``"pk"``."""
    if spec.generator == "pk":
        return {
            "classes_per_batch": spec.classes_per_batch,
            "samples_per_class": max(2, batch_size // spec.classes_per_batch),
        }
    return {"batch_size": batch_size}


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

    def best(self, monitor: str = "val_loss", mode: str = "min") -> float | None:
        """The best (``mode`` "min": lowest, "max": highest) ``monitor`` of the epochs recorded so far
        (None before the first)."""
        values = [rec[monitor] for rec in self.epochs.values() if monitor in rec]
        return (max if mode == "max" else min)(values) if values else None

    def as_history(self) -> dict[str, list]:
        """Column view: {"loss": [...], "val_loss": [...], ..., "epoch": [...]}."""
        keys = sorted({k for rec in self.epochs.values() for k in rec})
        epochs = sorted(self.epochs)
        history = {k: [self.epochs[e].get(k) for e in epochs] for k in keys}
        history["epoch"] = epochs
        return history


# The one place that reads Keras' private BackupAndRestore layout (Keras has no public accessor);
# tests/test_training.py checks it against what fit() writes, so a Keras upgrade that changes it
# fails there, loudly, instead of resuming from the wrong files.
def keras_backup_files(callback: keras.callbacks.BackupAndRestore) -> tuple[Path, Path]:
    """``(weights, metadata)``: the files ``BackupAndRestore`` saves to and resumes from."""
    try:
        return Path(callback._weights_path), Path(callback._training_metadata_path)
    except AttributeError as exc:
        raise RuntimeError(
            f"keras {keras.__version__} changed BackupAndRestore ({exc}); update "
            "helpers.training.keras_backup_files and AtomicBackupAndRestore"
        ) from None


_EPOCH_ATTR = "simsuite_epoch"  # written into the backup weights file: the epoch its weights end


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` whose backup survives a kill at any instant.

    Keras writes the backup weights in place, so a SIGKILL during that write leaves a file that
    the next run cannot open (seen in the resume test). Here the weights and the epoch metadata
    are written to temporary files and moved into place with ``os.replace``: the weights first,
    stamped with the epoch they end; then the metadata. A kill between the two moves leaves new
    weights beside the previous epoch's metadata; :meth:`on_train_begin` sees the stamp and moves
    the metadata forward, so the resumed run neither repeats nor skips an epoch.
    """

    def _save_model(self):
        weights, metadata = keras_backup_files(self)
        weights.parent.mkdir(parents=True, exist_ok=True)
        epoch = self._current_epoch  # Keras' private state, as in its own _save_model
        with config.atomic_path(weights) as tmp:
            self.model.save_weights(filepath=str(tmp), overwrite=True)
            _stamp_epoch(tmp, epoch)
        self._weights_moved(epoch)
        config.write_json(metadata, {"epoch": epoch, "batch": self._last_batch_seen})

    def _weights_moved(self, epoch: int) -> None:
        """Called between the two moves (the tests kill the run here)."""

    def on_train_begin(self, logs=None):
        weights, metadata = keras_backup_files(self)
        stamped = _read_epoch_stamp(weights)
        if stamped is not None:
            try:
                recorded = json.loads(metadata.read_text())["epoch"]
            except (OSError, ValueError, KeyError):
                recorded = None
            if recorded != stamped:  # killed between the weights' move and the metadata's
                config.write_json(metadata, {"epoch": stamped, "batch": 0})
        super().on_train_begin(logs)


def _stamp_epoch(path: Path, epoch: int) -> None:
    import h5py

    with h5py.File(path, "a") as f:
        f.attrs[_EPOCH_ATTR] = int(epoch)


def _read_epoch_stamp(path: Path) -> int | None:
    import h5py

    if not path.exists():
        return None
    try:
        with h5py.File(path, "r") as f:
            value = f.attrs.get(_EPOCH_ATTR)
    except OSError:
        return None
    return None if value is None else int(value)


class BestWeights(keras.callbacks.Callback):
    """Save the weights of the epoch with the best ``monitor`` (``mode`` "min" or "max") atomically
    (what Keras' ``ModelCheckpoint(save_best_only=True)`` does in place). ``best`` carries the best
    value of the epochs before a resume, so a resumed run does not take its first epoch for the best."""

    def __init__(self, path: Path, monitor: str = "val_loss", best: float | None = None, mode: str = "min"):
        super().__init__()
        self.path, self.monitor, self.sign = Path(path), monitor, (-1.0 if mode == "max" else 1.0)
        self.best = float("inf") if best is None else self.sign * float(best)  # kept as "lower is better"

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and self.sign * float(value) < self.best:
            self.best = self.sign * float(value)
            with config.atomic_path(self.path) as tmp:
                self.model.save_weights(tmp)


class EpochLog(keras.callbacks.Callback):
    """One plain line per epoch with an estimate of what is left: readable in papermill output and
    CI logs (no progress bars). ``[name] epoch 3/12 loss=0.1234 val_loss=0.1500 (4.1s; ~37s left)``

    What is left is the epochs to go times the mean epoch time of this run (at most: early stopping
    may end it sooner)."""

    def __init__(self, name: str, epochs: int):
        super().__init__()
        self.name, self.total = name, epochs
        self._start = None
        self._seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._start
        self._seconds.append(seconds)
        shown = " ".join(f"{k}={v:.4f}" for k, v in (logs or {}).items() if "loss" in k or "accuracy" in k)
        # the first epoch includes tracing and compilation: leave it out once others are measured
        left = (self.total - epoch - 1) * float(np.mean(self._seconds[1:] or self._seconds))
        eta = f"; ~{format_seconds(left)} left" if epoch + 1 < self.total else ""
        print(f"[{self.name}] epoch {epoch + 1}/{self.total} {shown} ({seconds:.1f}s{eta})", flush=True)


def format_seconds(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``: short enough for a progress line."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def budget_steps(name: str, epochs: int | None = None, steps_per_epoch: int | None = None) -> int:
    """Training steps of ``name``: ``epochs x steps_per_epoch``, each the registry's when not given."""
    spec = get_spec(name)
    return (epochs or spec.epochs) * (steps_per_epoch or spec.steps_per_epoch)


#: the training seconds ``benchmarks/quality.py`` measured for each registry model at its budget
#: (``runs[].train_seconds``): :func:`expected_seconds` reads them to start the costliest model first
MEASURED_SECONDS = config.ROOT / "benchmarks" / "results" / "quality.json"


def expected_seconds(names, epochs=None, steps_per_epoch=None, measured=None) -> dict[str, float]:
    """Each model's expected training seconds: its median measured seconds per step times its budget.

    The budget is :func:`budget_steps`. The seconds per step are the median of the model's runs in
    ``measured`` (default :data:`MEASURED_SECONDS`), each run's ``train_seconds`` divided by the
    model's registry budget. Steps alone are a poor guide: a step of ``cnn_simple_v2`` (128 and 256
    filters) costs several of ``cnn_simple_v1`` (32 and 64). A model with no run gets the median rate
    of those with one; with no usable file, every model gets one second per step (the order of the
    budgets).
    """
    names = list(names)
    rates: dict[str, list[float]] = {}
    try:
        runs = json.loads(Path(measured or MEASURED_SECONDS).read_text())["runs"]
        for run in runs:
            if run.get("model") in names and run.get("train_seconds"):
                rate = float(run["train_seconds"]) / budget_steps(run["model"])
                rates.setdefault(run["model"], []).append(rate)
    except (OSError, ValueError, KeyError, TypeError):  # only an order hint: fall back to the budgets
        rates = {}
    median = {name: float(np.median(r)) for name, r in rates.items()}
    default = float(np.median(list(median.values()))) if median else 1.0
    return {name: median.get(name, default) * budget_steps(name, epochs, steps_per_epoch) for name in names}


def track(names, epochs: int | None = None, steps_per_epoch: int | None = None):
    """Yield ``names`` one by one, printing ``== model 2/6 name (~3m10s left for the list)`` first.

    Like tqdm: what is left is estimated from the time so far, weighted by each model's budget in
    steps (the registry's, or ``epochs`` x ``steps_per_epoch`` when given); a model loaded from the
    cache takes seconds, so the estimate falls as the cache fills.
    """
    names = list(names)
    budgets = [budget_steps(name, epochs, steps_per_epoch) for name in names]
    start = time.perf_counter()
    for i, name in enumerate(names):
        done, elapsed = sum(budgets[:i]), time.perf_counter() - start
        eta = ""
        if i and done and elapsed > 1:
            eta = f" (~{format_seconds(elapsed / done * sum(budgets[i:]))} left for the list)"
        print(f"== model {i + 1}/{len(names)} {name}{eta}", flush=True)
        yield name


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


# --- train: the steps ---------------------------------------------------------------------------------


def training_params(
    name: str,
    epochs=None,
    batch_size=None,
    steps_per_epoch=None,
    learning_rate=None,
    seed: int = 0,
    patience: int = 11,
) -> dict:
    """The training parameters of ``name``: the given values, else the registry entry's."""
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
    return params


def _load_cached(name, model, embedding, fingerprint, paths) -> dict | None:
    """The cached record when the entry matches ``fingerprint`` and its weights load, else None."""
    record = read_cache_record(name, paths["history"].parent.parent, paths["history"].parent.name)
    if not record:
        return None
    if record.get("fingerprint") != fingerprint or not record.get("complete"):
        print(f"[{name}] cache is for another configuration; retraining", flush=True)
        return None
    try:
        _load_weights(embedding, paths["feature_extractor"])
        _load_weights(model, paths["weights"])
    except CacheError as exc:
        print(f"[{name}] cache unusable: {exc}; retraining", flush=True)
        return None
    return record


@contextlib.contextmanager
def _entry_lock(name: str, paths: dict):
    """Hold the cache entry's lock; yield True when another process held it and we waited."""
    import filelock

    paths["lock"].parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(paths["lock"]))
    waited = False
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        print(
            f"[{name}] another process is training this model into {paths['lock'].parent}; waiting for it",
            flush=True,
        )
        lock.acquire()
        waited = True
    try:
        yield waited
    finally:
        lock.release()


def _work_folder(paths: dict, fingerprint: str, force: bool) -> Path:
    """``<name>.work/<fingerprint>/``, after removing the work folders of other configurations."""
    work = paths["work"] / fingerprint[:16]
    if force and paths["work"].exists():
        shutil.rmtree(paths["work"])
    if paths["work"].exists():
        for other in paths["work"].iterdir():
            if other.name != work.name:
                shutil.rmtree(other, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    return work


def _callbacks(name, params, work, train_gen, history_cb, verbose, extra) -> list:
    """Seeding, history, backup, early stopping, best weights, the LR plateau, the epoch log.

    Each watches the spec's ``monitor`` (``val_loss``, or ``val_accuracy`` maximised for a classifier).
    """
    spec = get_spec(name)
    monitor, mode = spec.monitor, spec.monitor_mode
    cbs = [
        EpochSeed(train_gen),
        # the history is written before the backup: a kill between the two retrains that epoch
        # and overwrites its history entry, instead of losing it
        history_cb,
        AtomicBackupAndRestore(str(work / "backup"), save_freq="epoch", delete_checkpoint=False),
        keras.callbacks.EarlyStopping(
            monitor=monitor, mode=mode, patience=params["patience"], restore_best_weights=True
        ),
        BestWeights(
            work / "best.weights.h5", monitor=monitor, best=history_cb.best(monitor, mode), mode=mode
        ),
    ]
    if spec.lr_schedule == "plateau":  # a cosine schedule lives in the optimizer instead
        cbs.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor=monitor,
                mode=mode,
                factor=spec.plateau_factor,
                patience=spec.plateau_patience,
                min_lr=1e-6,
            )
        )
    if verbose == "auto":
        cbs.append(EpochLog(name, params["epochs"]))
    return cbs + list(extra or [])


def tensorboard_callback(name: str, dataset: str, fingerprint: str):
    """A ``keras.callbacks.TensorBoard`` writing the per-epoch curves to
    ``config.TENSORBOARD/<dataset>/<name>/<fingerprint[:16]>/``, or None when the backend is not
    TensorFlow (whose ``tf.summary`` writes the files), the ``tensorboard`` package is missing or
    ``config.TENSORBOARD_LOGS`` is off.
    Epoch scalars only: no graph, histograms or profiling, so training costs the same."""
    if not config.TENSORBOARD_LOGS or keras.backend.backend() != "tensorflow":
        return None
    if importlib.util.find_spec("tensorboard") is None:  # tf.summary needs it to write
        return None
    folder = config.TENSORBOARD / dataset / name / fingerprint[:16]
    return keras.callbacks.TensorBoard(
        str(folder), histogram_freq=0, write_graph=False, update_freq="epoch", profile_batch=0
    )


def recalibrate_batchnorm(embedding: keras.Model, images, batch_size: int = 500) -> int:
    """Recompute the moving mean and variance of ``embedding``'s BatchNormalization layers on ``images``.

    During training the moving statistics follow augmented batches (shifted, rotated, noisy digits),
    while retrieval embeds clean ones. This replaces them with the exact population statistics of
    ``images`` ("precise BN"), one layer at a time in graph order, each layer seeing the outputs of the
    layers before it already recalibrated. The weights the optimizer learned are not touched.

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
        for layer in _walk_layers(model)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    if nested:
        raise ValueError(
            f"{embedding.name} has BatchNormalization layers inside nested models ({', '.join(nested)}); "
            "recalibrate_batchnorm handles the model's own layers only: build it as one functional model"
        )
    layers_bn = [layer for layer in embedding.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers_bn:
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
    return len(layers_bn)


def _fit(
    name, model, embedding, data, params, work, verbose, extra_callbacks
) -> tuple[HistoryCheckpoint, float]:
    """Compile, fit from the last backed-up epoch, then keep the best epoch's weights."""
    compile_training_model(
        model,
        name,
        params["learning_rate"],
        total_steps=params["epochs"] * params["steps_per_epoch"],
        steps_per_epoch=params["steps_per_epoch"],
    )
    train_gen, val_gen = make_generators(
        name,
        data,
        params["batch_size"],
        params["steps_per_epoch"],
        seed=params["seed"],
        embedding=embedding,
        trainer=model,
    )
    history_cb = HistoryCheckpoint(work / "history.partial.json")
    if history_cb.epochs:
        print(
            f"[{name}] found an interrupted run ({len(history_cb.epochs)} epochs done); resuming", flush=True
        )
    board = tensorboard_callback(name, data.name, work.name)
    extra_callbacks = [*(extra_callbacks or []), *([board] if board else [])]
    cbs = _callbacks(name, params, work, train_gen, history_cb, verbose, extra_callbacks)
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
            _load_weights(model, best)
        except CacheError as exc:
            print(f"[{name}] best-epoch checkpoint unusable ({exc}); keeping the last epoch's weights")
    return history_cb, seconds


def _save_entry(name, model, embedding, data, params, fingerprints, history_cb, seconds, paths) -> dict:
    """Write the weights, then the record that marks the entry complete; drop the work folder."""
    with config.atomic_path(paths["weights"]) as tmp:
        model.save_weights(tmp)
    with config.atomic_path(paths["feature_extractor"]) as tmp:
        embedding.save_weights(tmp)
    save_model_file(embedding, paths["model"])
    record = {
        "model": name,
        "dataset": data.name,
        **fingerprints,
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
    return record


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
    if augment is not None and get_spec(name).augment and augment != get_spec(name).augment:
        with spec_override(name, augment=augment):
            return train(
                name,
                data,
                epochs=epochs,
                batch_size=batch_size,
                steps_per_epoch=steps_per_epoch,
                learning_rate=learning_rate,
                seed=seed,
                force=force,
                cache_dir=cache_dir,
                verbose=verbose,
                patience=patience,
                callbacks=callbacks,
            )
    params = training_params(name, epochs, batch_size, steps_per_epoch, learning_rate, seed, patience)
    paths = cache_paths(name, cache_dir, _dataset_name(data))
    keras.utils.set_random_seed(seed)
    with distribution_scope():
        model, embedding = build_training_model(name, len(data.class_names), tuple(data.x_train.shape[1:]))
    fingerprints = {
        "fingerprint": training_fingerprint(name, data, params, embedding),
        "model_fingerprint": model_fingerprint(name, embedding),
        "data_fingerprint": data_fingerprint(data),
    }

    record = None if force else _load_cached(name, model, embedding, fingerprints["fingerprint"], paths)
    if record:
        print(f"[{name}] loaded from cache ({paths['history'].parent})", flush=True)
        _ensure_model_file(embedding, paths)
        return embedding, {**record, "from_cache": True}
    with _entry_lock(name, paths) as waited:
        record = _load_cached(name, model, embedding, fingerprints["fingerprint"], paths) if waited else None
        if record:
            print(f"[{name}] loaded from cache what the other process trained", flush=True)
            _ensure_model_file(embedding, paths)
            return embedding, {**record, "from_cache": True}
        work = _work_folder(paths, fingerprints["fingerprint"], force)
        history_cb, seconds = _fit(name, model, embedding, data, params, work, verbose, callbacks)
        if get_spec(name).recalibrate_bn:  # after the best epoch's weights are loaded, before saving
            recalibrate_batchnorm(embedding, data.x_train)
        record = _save_entry(name, model, embedding, data, params, fingerprints, history_cb, seconds, paths)
    return embedding, {**record, "from_cache": False}


def load_trained(name: str, data, cache_dir=None, retrain: bool = False, **params) -> keras.Model:
    """The cached embedding of ``name`` for ``data``, refusing an entry that is stale.

    Stale means trained for another registry entry, architecture, loss or generator code, Keras
    version or data than today's: :class:`StaleCacheError` says which and how to retrain. With
    ``params`` (``epochs=…``, ``steps_per_epoch=…``…) the training budget must match too.
    ``retrain=True`` trains (through :func:`train`, with ``params``) instead of raising.
    """
    from helpers.registry import build_embedding

    dataset = _dataset_name(data)
    paths = cache_paths(name, cache_dir, dataset)
    embedding = build_embedding(name, tuple(data.x_train.shape[1:]))
    record = read_cache_record(name, cache_dir, dataset)
    try:
        if record is None or not record.get("complete"):
            raise CacheError(f"{paths['history'].name} is missing")
        reasons = []
        if record.get("model_fingerprint") != model_fingerprint(name, embedding):
            reasons.append("the registry entry, architecture, loss/generator code or Keras version changed")
        if record.get("data_fingerprint") != data_fingerprint(data):
            reasons.append(f"it was trained on other {dataset} data")
        if params and record.get("params") != training_params(name, **params):
            reasons.append(f"it was trained with {record.get('params')}")
        if reasons:
            raise StaleCacheError(
                f"{paths['history'].parent / name} is stale: {'; '.join(reasons)}; "
                f"retrain with helpers.training.train({name!r}, data, force=True)"
            )
        _load_weights(embedding, paths["feature_extractor"])
        _ensure_model_file(embedding, paths)
    except CacheError:
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
    from helpers.registry import build_embedding

    if data is not None:
        return load_trained(name, data, cache_dir=cache_dir)
    embedding = build_embedding(name, input_shape)
    _load_weights(embedding, cache_paths(name, cache_dir, dataset)["feature_extractor"])
    return embedding


# --- several models at once ------------------------------------------------------------------------


class TrainingWorkerError(RuntimeError):
    """A worker process of :func:`train_many` failed; the message holds its last lines."""


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
    params = training_params(name, epochs, batch_size, steps_per_epoch, learning_rate, seed, patience)
    record = read_cache_record(name, cache_dir, _dataset_name(data))
    if not record or not record.get("complete"):
        return False
    _, embedding = build_training_model(name, len(data.class_names), tuple(data.x_train.shape[1:]))
    return record.get("fingerprint") == training_fingerprint(name, data, params, embedding)


def train_many(
    names,
    data,
    processes: int = 1,
    threads: int | None = None,
    force: bool = False,
    cache_dir: str | os.PathLike | None = None,
    augment: str | None = None,
    **params,
) -> dict:
    """Train (or load) the registry models ``names`` on ``data``: ``{name: (embedding, record)}``.

    ``processes=1`` calls :func:`train` on each in turn, announcing each with :func:`track`. With
    more, the models that are not cached (all with ``force``) first train in that many worker
    processes at once, the costliest first (:func:`expected_seconds`), each worker with ``threads``
    compute threads (default: the CPU's cores shared out). Their lines (one per epoch) are printed here as
    they come. Then every model loads from the cache; ``record["from_cache"]`` is False for the ones
    the workers trained. A worker runs :func:`train` with the same arguments, so the cache entry,
    its fingerprint and a resume after a kill are the same as in one process.

    Why: these models are too small for one training step to keep two CPU threads busy, so two
    one-thread workers train more images per second on a 2-core CPU than one process on two threads
    (``benchmarks/results/suite_time.json`` times notebook 04 both ways). On a GPU the workers
    share the device.

    ``params``: ``epochs``, ``batch_size``, ``steps_per_epoch``, ``learning_rate``, ``seed``,
    ``patience``, as :func:`train` takes them.

    Raises
    ------
    TrainingWorkerError
        A worker exited with an error; its last lines are in the message. The other workers are
        stopped; what they finished stays cached, and an interrupted model resumes next time.
    """
    names = list(names)
    unknown = sorted(set(params) - _WORKER_PARAMS)
    if unknown:
        raise TypeError(f"train_many got unexpected arguments {unknown}; it takes {sorted(_WORKER_PARAMS)}")
    if int(processes) < 1:
        raise ValueError(f"processes must be at least 1, got {processes!r}")
    for name in names:
        training_params(name, **params)  # an unknown name or a bad budget fails here, not in a worker
    trained = set()
    if processes > 1:
        pending = [n for n in names if force or not is_cached(n, data, cache_dir, **params)]
        if len(pending) > 1:
            threads = threads or max(1, (os.cpu_count() or 1) // int(processes))
            _train_in_workers(pending, data, int(processes), int(threads), force, cache_dir, augment, params)
            trained = set(pending)
    results = {}
    budget = {"epochs": params.get("epochs"), "steps_per_epoch": params.get("steps_per_epoch")}
    for name in track(names, **budget) if not trained else names:
        embedding, record = train(
            name, data, force=force and name not in trained, cache_dir=cache_dir, augment=augment, **params
        )
        results[name] = (embedding, {**record, "from_cache": name not in trained and record["from_cache"]})
    return results


_WORKER_PARAMS = {"epochs", "batch_size", "steps_per_epoch", "learning_rate", "seed", "patience"}


def _worker_command(name, data_path, cache_dir, force, augment, params) -> list[str]:
    """``python -m helpers.training NAME --data FILE ...``: one worker of :func:`train_many`."""
    cmd = [sys.executable, "-m", "helpers.training", name, "--data", str(data_path), "--no-summary"]
    cmd += ["--cache-dir", str(Path(cache_dir or config.MODELS_CACHE).resolve())]
    for key, value in params.items():
        if value is not None:
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    if augment:
        cmd += ["--augment", augment]
    return cmd + (["--force"] if force else [])


def _train_in_workers(names, data, processes, threads, force, cache_dir, augment, params) -> None:
    """Run one worker per model, ``processes`` at a time; relay their lines; raise on a failure."""
    import tempfile

    from helpers.data import save_dataset
    from helpers.run import NOISE, ProcessLines

    # the costliest first (longest-processing-time order): the last to start is short, so the
    # workers finish together instead of one core idling while a costly model trains alone
    cost = expected_seconds(names, params.get("epochs"), params.get("steps_per_epoch"))
    todo = sorted(names, key=cost.__getitem__, reverse=True)
    env = {
        # the worker's share of the cores (TensorFlow; OpenMP for numpy's BLAS); on a GPU, JAX
        # would otherwise give the first worker most of the device memory
        "TF_NUM_INTRAOP_THREADS": str(threads),
        "OMP_NUM_THREADS": str(threads),
        "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"),
        **allocator.preload_env(),  # TCMalloc where installed: far fewer page faults per step
    }
    print(
        f"== training {len(todo)} models in {processes} worker processes, {threads} thread(s) each: "
        + ", ".join(todo),
        flush=True,
    )
    # an error or an interrupt leaves the block: ProcessLines stops the other workers
    with tempfile.TemporaryDirectory(prefix="simsuite-train-") as tmp, ProcessLines(env) as workers:
        data_path = save_dataset(data, Path(tmp) / "data.npz")
        while todo or workers.running:
            while todo and len(workers.running) < processes:
                name = todo.pop(0)
                workers.start(name, _worker_command(name, data_path, cache_dir, force, augment, params))
            name, line = workers.next()  # printed from this thread: a notebook shows it in the cell
            if line is not None:
                if not NOISE.match(line):
                    print(line, flush=True)
                continue
            code = workers.finish(name)
            if code != 0:
                tail = "\n".join(workers.tails[name])
                raise TrainingWorkerError(
                    f"the worker training {name!r} exited with code {code}; its last lines:\n{tail}\n"
                    f"run train({name!r}, data) in this process to see the error with its traceback"
                )


def main(argv=None):
    """``python -m helpers.training NAME [--epochs N] ...``: train (or load) one model. The workers of
    :func:`train_many` (``--data FILE``), and the resume and concurrent-run tests, which kill this
    process or run two at once."""
    import argparse

    from helpers.data import load_dataset, read_dataset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--steps-per-epoch", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--patience", type=int, default=11)
    parser.add_argument("--augment", choices=["host", "device"])
    parser.add_argument("--cache-dir")
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--source", default="auto")
    parser.add_argument("--data", help="a dataset file written by helpers.data.save_dataset (not --dataset)")
    parser.add_argument("--no-summary", action="store_true", help="do not print the JSON summary line")
    args = parser.parse_args(argv)
    data = read_dataset(args.data) if args.data else load_dataset(args.dataset, source=args.source)
    _, record = train(
        args.name,
        data,
        epochs=args.epochs,
        batch_size=args.batch_size,
        steps_per_epoch=args.steps_per_epoch,
        learning_rate=args.learning_rate,
        seed=args.seed,
        patience=args.patience,
        force=args.force,
        cache_dir=args.cache_dir,
        augment=args.augment,
    )
    if not args.no_summary:
        print(
            json.dumps(
                {
                    "from_cache": record["from_cache"],
                    "epochs": record["history"]["epoch"],
                    "resumed_from_epoch": record["resumed_from_epoch"],
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
