"""Take a trained embedding model away: ``<name>.keras`` plus a JSON card.

    python -m helpers.export NAME --out FOLDER [--dataset mnist] [--profile default] [--train]

``export(name, folder)`` writes ``folder/<name>.keras`` (the embedding model: images of shape
``input_shape`` in [0, 1] -> embeddings) and ``folder/<name>.json``, the card: the dataset, the
registry entry, the cache fingerprints, the input and its preprocessing, the embedding size, the
evaluation figures the profile's run measured (when it has), and the Keras and backend versions.
Both files are written atomically. The model comes from the cache entry that the profile's
notebooks train (``train=True`` trains it when missing); loading it elsewhere needs only::

    import helpers, keras
    model = keras.models.load_model("folder/cnn_simple_v1.keras")

Exit status of the command line: 0 done, 2 a usage error (unknown model, profile, dataset), 1 a
failure (the model is not cached, the folder cannot be written); errors print one line on stderr.
"""

from __future__ import annotations

import argparse
import csv
import platform
import sys
import types
from pathlib import Path

from helpers import config

PREPROCESSING = (
    "grey images as float32 in [0, 1], light strokes on a dark background as in MNIST, "
    "shape input_shape; helpers.search.read_image turns a PNG/JPEG into one"
)


class ExportError(RuntimeError):
    """The model cannot be exported (not cached, or the folder cannot be written)."""


class ExportUsageError(ValueError):
    """Bad arguments: an unknown model, profile or dataset."""


def profile_settings(profile: str, cache_dir=None) -> tuple[dict, Path]:
    """The training parameters of ``profile`` and the model cache its notebooks train into."""
    from helpers import profiles

    if profile not in profiles.PROFILES:
        raise ExportUsageError(f"unknown profile {profile!r}; choose one of: {', '.join(profiles.PROFILES)}")
    settings = profiles.settings("04_training", profile)  # the notebook that trains the models
    params = {key: settings[key] for key in ("epochs", "steps_per_epoch", "batch_size")}
    if cache_dir is None:  # the runner keeps the smoke profile's models in its run folder
        smoke = profile == "smoke"
        cache_dir = config.RUNS / "smoke" / "models_cache" if smoke else config.MODELS_CACHE
    return params, Path(cache_dir)


def _check_names(name: str, dataset: str) -> None:
    from helpers.data import DATASETS

    if dataset not in DATASETS:
        raise ExportUsageError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)}")
    from helpers.registry import get_spec  # imports Keras: after the checks that need none

    try:
        get_spec(name)
    except ValueError as exc:
        raise ExportUsageError(str(exc)) from None


def _not_cached_message(name, dataset, profile, cache_dir, params) -> str:
    from helpers.training import expected_seconds, format_seconds

    seconds = expected_seconds([name], params["epochs"], params["steps_per_epoch"])[name]
    return (
        f"model {name!r} ({dataset}, profile {profile}) is not in the cache {cache_dir}; train it with "
        f"`python -m helpers.export {name} --dataset {dataset} --profile {profile} --train --out ...` "
        f"(about {format_seconds(seconds)} on a 2-core CPU) or `python -m helpers.run --profile {profile}`"
    )


def cached_model(name, *, dataset="mnist", profile="default", cache_dir=None, train=False):
    """``(embedding, record)`` of the profile's cache entry; trains only with ``train=True``."""
    params, cache_dir = profile_settings(profile, cache_dir)
    _check_names(name, dataset)
    from helpers import training
    from helpers.data import load_dataset

    data = load_dataset(dataset, verbose=False)
    if not train and not training.is_cached(name, data, cache_dir, **params):
        raise ExportError(_not_cached_message(name, dataset, profile, cache_dir, params))
    return training.train(name, data, cache_dir=cache_dir, **params)


def evaluation_row(name: str, dataset: str, profile: str) -> tuple[dict | None, Path]:
    """The model's row of the profile's evaluation table (``runs/<profile>/model_evaluation.csv``)."""
    path = config.RUNS / profile / "model_evaluation.csv"
    if not path.is_file():
        return None, path
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row.get("model") == name and row.get("dataset", dataset) == dataset:
                return {key: _number(value) for key, value in row.items()}, path
    return None, path


def _number(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except (TypeError, ValueError):
            pass
    return text


def versions() -> dict:
    """Python, Keras, the backend and its version, NumPy and this package."""
    import keras
    import numpy as np

    import helpers

    backend = keras.backend.backend()
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(backend)
    backend_version = getattr(sys.modules.get(module), "__version__", None) if module else None
    return {
        "python": platform.python_version(),
        "keras": keras.__version__,
        "backend": backend,
        "backend_version": backend_version,
        "numpy": np.__version__,
        "helpers": helpers.__version__,
    }


def model_card(name, embedding, record, dataset, profile) -> dict:
    """The JSON card of an exported model."""
    import dataclasses

    from helpers.registry import get_spec

    spec = get_spec(name)
    entry = {k: v for k, v in dataclasses.asdict(spec).items() if not callable(v)}
    figures, figures_path = evaluation_row(name, dataset, profile)
    return {
        "model": name,
        "file": f"{name}.keras",
        "load": f"import helpers, keras; keras.models.load_model('{name}.keras')",
        "dataset": dataset,
        "profile": profile,
        "registry_entry": entry,
        "fingerprint": record["fingerprint"],
        "model_fingerprint": record.get("model_fingerprint"),
        "data_fingerprint": record.get("data_fingerprint"),
        "training": {"params": record.get("params"), "train_seconds": record.get("train_seconds")},
        "input_shape": [int(s) for s in embedding.input.shape[1:]],
        "input_dtype": "float32",
        "preprocessing": PREPROCESSING,
        "embedding_size": int(embedding.output.shape[-1]),
        "l2_normalized": bool(spec.l2_normalized),
        "evaluation": figures,
        "evaluation_source": str(figures_path) if figures else None,
        "versions": versions(),
    }


def export(name, folder, *, dataset="mnist", profile="default", cache_dir=None, train=False) -> Path:
    """Write ``folder/<name>.keras`` and its card ``folder/<name>.json``; return the ``.keras`` path.

    The model is the cache entry of ``name`` for ``dataset`` that ``profile``'s notebooks train
    (its epochs, steps and batch size; the smoke profile's own cache). Without ``train=True`` a
    model that is not cached raises :class:`ExportError` saying how to train it.
    """
    embedding, record = cached_model(name, dataset=dataset, profile=profile, cache_dir=cache_dir, train=train)
    from helpers.training import save_model_file

    folder = Path(folder)
    try:
        path = save_model_file(embedding, folder / f"{name}.keras")
        config.write_json(folder / f"{name}.json", model_card(name, embedding, record, dataset, profile))
    except OSError as exc:
        raise ExportError(f"cannot write to {folder} ({exc}); choose a writable --out folder") from None
    return path


# --- command line ------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line on stderr, exit 2
        self.exit(2, f"error: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m helpers.export", description=__doc__.splitlines()[0])
    parser.add_argument("name", help="registry model name, e.g. cnn_simple_v1")
    parser.add_argument("--out", required=True, help="folder for <name>.keras and <name>.json")
    parser.add_argument("--dataset", default="mnist", help="dataset the model was trained on (default mnist)")
    parser.add_argument(
        "--profile",
        default="default",
        help="profile whose training settings and cache to use (default default)",
    )
    parser.add_argument("--cache-dir", help="model cache (default: the profile's, models_cache/)")
    parser.add_argument("--train", action="store_true", help="train the model when it is not cached")
    return parser


def exit_status(exc: Exception) -> int | None:
    """2 for a usage error, 1 for a failure (not cached, unusable cache, data that cannot load),
    None for an exception that is a bug (re-raised)."""
    if isinstance(exc, ExportUsageError):
        return 2
    training, data = sys.modules.get("helpers.training"), sys.modules.get("helpers.data")
    failures = [ExportError]
    failures += [training.CacheError] if training is not None else []
    failures += [data.DatasetError] if data is not None else []
    return 1 if isinstance(exc, tuple(failures)) else None


def main(argv=None) -> int:
    """Entry point of ``python -m helpers.export``; returns the exit status."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        path = export(
            args.name,
            args.out,
            dataset=args.dataset,
            profile=args.profile,
            cache_dir=args.cache_dir,
            train=args.train,
        )
    except (ValueError, RuntimeError) as exc:
        status = exit_status(exc)
        if status is None:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return status
    print(f"wrote {path} and {path.with_suffix('.json')}")
    return 0


class _CallableModule(types.ModuleType):
    """``helpers.export`` is both this module and the function: importing the module replaces the
    package's attribute ``export``, so the module forwards a call to :func:`export`."""

    def __call__(self, *args, **kwargs):
        return export(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    sys.exit(main())
