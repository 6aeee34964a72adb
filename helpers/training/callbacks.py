"""The callbacks of a training run: kill-safe backup, best weights, history, per-epoch progress, a
time budget, per-batch values.

:func:`training_callbacks` assembles them for one run; :func:`tensorboard_callback` is the optional
TensorBoard writer (a TensorFlow-only shim).
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import keras
import numpy as np

from helpers import config
from helpers.training.estimates import format_seconds


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
            "helpers.training.callbacks.keras_backup_files and AtomicBackupAndRestore"
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


class TimeBudget(keras.callbacks.Callback):
    """Stop training cleanly once ``seconds`` have passed: at an epoch's end when the next epoch
    would not fit (judged by the longest epoch so far), else after the batch that crosses the
    budget. Validation, checkpoints and the cache still run, so the model is evaluated as usual."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = float(seconds)
        self.start = None
        self.longest = 0.0
        self._epoch_start = None
        self.stopped = False

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if time.perf_counter() - self.start > self.seconds:
            self.model.stop_training = self.stopped = True

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        self.longest = max(self.longest, now - self._epoch_start)
        if now - self.start + self.longest > self.seconds:
            self.model.stop_training = self.stopped = True
            print(
                f"[time budget] stopping after epoch {epoch + 1} ({now - self.start:.0f}s of "
                f"{self.seconds:.0f}s)",
                flush=True,
            )


class BatchValues(keras.callbacks.Callback):
    """The value of each of ``keys`` (the loss, a loss term logged as a metric) at every training batch.

    Keras logs each metric as its mean over the epoch so far; the value of batch ``b`` is
    ``(b + 1) m_b - b m_(b-1)``. ``values[key]`` lists them in order; ``epochs`` the epoch of each.
    """

    def __init__(self, keys=("loss",)):
        super().__init__()
        self.keys = tuple(keys)
        self.values = {k: [] for k in self.keys}
        self.epochs: list[int] = []
        self._epoch, self._last = 0, {}

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._last = int(epoch), {}

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        for key in self.keys:
            if key in logs:
                mean = float(logs[key])
                value = (batch + 1) * mean - batch * self._last.get(key, 0.0) if batch else mean
                self._last[key] = mean
                self.values[key].append(value)
        self.epochs.append(self._epoch)


def training_callbacks(spec, params: dict, work: Path, train_gen, history_cb, verbose, extra) -> list:
    """Seeding, history, backup, early stopping, best weights, the LR plateau, the epoch log, then
    ``extra``. Each watches the spec's ``monitor`` (``val_loss``, or ``val_accuracy`` maximised for a
    classifier)."""
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
        cbs.append(EpochLog(spec.name, params["epochs"]))
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
