"""The cache entry of a trained model: its files, its fingerprint, its lock and its record.

An entry is ``<cache_dir>/<dataset>/<name>.*`` (:func:`cache_paths`); the record
(``<name>.history.json``) is written last and marks it complete. The fingerprint hashes what decides
the weights: the registry entry, the architecture, the code of the losses and samplers, the Keras
version, the data and the training parameters.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path

import keras
import numpy as np

from helpers import config
from helpers.registry import LOSS_KINDS
from helpers.samplers import GENERATOR_KINDS

CACHE_FORMAT = 2
# The modules whose code decides the trained weights beyond the registry entry and the architecture
# (which are hashed directly): the losses, the batch sampling and mining, the k-NN the mining uses.
WEIGHT_CODE = ("losses", "samplers", "augment", "knn")

#: the folder :func:`code_version` reads module files from: ``helpers/`` (``studies.x`` is
#: ``helpers/studies/x.py``)
HELPERS = Path(__file__).resolve().parents[1]


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


def _strip_docstrings(tree: ast.AST) -> ast.AST:
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
    return tree


def code_version(modules=WEIGHT_CODE, folder: str | os.PathLike | None = None) -> str:
    """Hash of the code of ``helpers.<module>`` for each of ``modules``, comments and docstrings left out.

    ``folder`` defaults to :data:`HELPERS`; a dotted name is a path under it (``studies.x``:
    ``helpers/studies/x.py``).
    A hash of the source rather than a hand-bumped version constant: nobody has to remember to bump
    it, and a change to a loss or to the sampling retrains. Parsing first (``ast``) means that
    reformatting, comments and docstrings do not retrain.
    """
    digest = hashlib.sha256()
    for module in modules:
        path = Path(folder or HELPERS) / f"{module.replace('.', '/')}.py"
        tree = _strip_docstrings(ast.parse(path.read_text(encoding="utf-8")))
        digest.update(f"{module}:{ast.dump(tree)}".encode())
    return digest.hexdigest()


def study_code_modules(spec) -> tuple[str, ...]:
    """The modules under ``helpers/studies/`` that define ``spec``'s builder, its study sampler or its loss
    (``("studies.x",)`` for a model of ``helpers/studies/x.py``): their code decides that model's
    weights too, and is hashed for it alone, so editing one study retrains only that study's models.
    A core builder's code is not listed: its architecture is hashed directly."""
    objects = [spec.builder, LOSS_KINDS[spec.loss].build]
    kind = GENERATOR_KINDS.get(spec.generator)
    if kind is not None:
        objects.append(kind.factory)
    found = []
    for obj in objects:
        package, _, module = (getattr(obj, "__module__", "") or "").partition(".")
        if package == "helpers" and module.startswith("studies."):
            found.append(module)
    return tuple(sorted(set(found)))


def walk_layers(model: keras.Model):
    """Every layer of ``model``, depth first into nested models (public ``Model.layers`` only)."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from walk_layers(layer)


def architecture_digest(model: keras.Model) -> str:
    """Hash of ``model``'s layer classes, configs and weight shapes, without layer names (which carry
    global counters, dense_3 vs dense_7), so the same architecture built twice gives the same digest."""
    parts = []
    for layer in walk_layers(model):
        cfg = {k: v for k, v in layer.get_config().items() if k != "name"}
        parts.append(f"{type(layer).__name__}:{json.dumps(cfg, sort_keys=True, default=str)}")
    parts.append(str([(tuple(w.shape), str(w.dtype)) for w in model.weights]))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def model_fingerprint(spec, embedding: keras.Model | None = None) -> str:
    """Hash of what decides the weights of the registry entry ``spec`` apart from the data and the
    training budget: the entry, the architecture, the loss and sampler code (and a study model's own
    module, :func:`study_code_modules`) and the Keras version."""
    payload = {
        "format": CACHE_FORMAT,
        "spec": spec.config(),
        "architecture": architecture_digest(embedding) if embedding is not None else None,
        "code": code_version(),
        "keras": keras.__version__,
    }
    study_modules = study_code_modules(spec)
    if study_modules:  # absent for the core models
        payload["study_code"] = code_version(study_modules)
    return _digest(payload)


def training_fingerprint(spec, data, params: dict, embedding: keras.Model | None = None) -> str:
    """Hash of everything that determines the trained weights of the registry entry ``spec``."""
    return _digest(
        {"model": model_fingerprint(spec, embedding), "params": params, "data": data_fingerprint(data)}
    )


def fingerprints(spec, data, params: dict, embedding: keras.Model) -> dict[str, str]:
    """The three fingerprints a record keeps: ``fingerprint`` (everything), ``model_fingerprint``
    and ``data_fingerprint`` (so :func:`helpers.training.load_trained` can say which part changed)."""
    return {
        "fingerprint": training_fingerprint(spec, data, params, embedding),
        "model_fingerprint": model_fingerprint(spec, embedding),
        "data_fingerprint": data_fingerprint(data),
    }


# --- the entry's files -------------------------------------------------------------------------------


def dataset_name(data=None, dataset: str | None = None) -> str:
    """The cache's dataset folder: ``dataset``, else ``data.name``."""
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


def read_record(path: Path) -> dict | None:
    """The record at ``path`` (a ``<name>.history.json``), or None when it is missing or unreadable."""
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def read_cache_record(name: str, cache_dir=None, dataset: str = "mnist") -> dict | None:
    """The cached history record of ``name`` (fingerprints, history, timings) or None."""
    return read_record(cache_paths(name, cache_dir, dataset)["history"])


def load_weights(model: keras.Model, path: Path) -> None:
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


def ensure_model_file(embedding: keras.Model, paths: dict) -> None:
    """Write the entry's ``.keras`` when it is missing or older than the entry's weights."""
    model_file, weights = paths["model"], paths["feature_extractor"]
    if model_file.exists() and model_file.stat().st_mtime_ns >= weights.stat().st_mtime_ns:
        return
    try:
        save_model_file(embedding, model_file)
    except OSError as exc:  # a read-only cache still loads; only the take-away file is missing
        print(f"cannot write {model_file} ({exc}); the cached weights are unaffected", flush=True)


def load_cached(name: str, model, embedding, fingerprint: str, paths: dict) -> dict | None:
    """The cached record when the entry matches ``fingerprint`` and its weights load, else None."""
    record = read_record(paths["history"])
    if not record:
        return None
    if record.get("fingerprint") != fingerprint or not record.get("complete"):
        print(f"[{name}] cache is for another configuration; retraining", flush=True)
        return None
    try:
        load_weights(embedding, paths["feature_extractor"])
        load_weights(model, paths["weights"])
    except CacheError as exc:
        print(f"[{name}] cache unusable: {exc}; retraining", flush=True)
        return None
    return record


@contextlib.contextmanager
def entry_lock(name: str, paths: dict):
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


def work_folder(paths: dict, fingerprint: str, force: bool) -> Path:
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


def save_entry(paths: dict, model, embedding, record: dict) -> dict:
    """Write the weights and the ``.keras`` file, then ``record`` (with ``complete``), which marks the
    entry complete; drop the work folder. Returns the record written."""
    with config.atomic_path(paths["weights"]) as tmp:
        model.save_weights(tmp)
    with config.atomic_path(paths["feature_extractor"]) as tmp:
        embedding.save_weights(tmp)
    save_model_file(embedding, paths["model"])
    record = {**record, "complete": True}
    config.write_json(paths["history"], record)
    shutil.rmtree(paths["work"], ignore_errors=True)
    return record
