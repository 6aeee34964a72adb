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

The modules, one job each:

- :mod:`~helpers.training.cache`: the entry's files, fingerprints, lock, record and weights;
- :mod:`~helpers.training.batches`: the training and validation batches of a registry entry;
- :mod:`~helpers.training.callbacks`: kill-safe backup, best weights, history, epoch log, time budget,
  per-batch values, TensorBoard;
- :mod:`~helpers.training.estimates`: budgets in steps, expected seconds, progress over a list;
- :mod:`~helpers.training.fit`: ``train``, ``load_trained``, ``is_cached``, BatchNorm recalibration;
- :mod:`~helpers.training.workers`: ``train_many``, its worker processes and their command line.
"""

from helpers.training.batches import make_generators
from helpers.training.cache import (
    CacheError,
    StaleCacheError,
    cache_paths,
    load_weights,
    read_cache_record,
    save_model_file,
)
from helpers.training.estimates import expected_seconds, format_seconds, track
from helpers.training.fit import (
    distribution_scope,
    is_cached,
    load_embedding,
    load_trained,
    recalibrate_batchnorm,
    train,
    training_params,
)
from helpers.training.workers import TrainingWorkerError, train_many

__all__ = [
    "CacheError",
    "StaleCacheError",
    "TrainingWorkerError",
    "cache_paths",
    "distribution_scope",
    "expected_seconds",
    "format_seconds",
    "is_cached",
    "load_embedding",
    "load_trained",
    "load_weights",
    "make_generators",
    "read_cache_record",
    "recalibrate_batchnorm",
    "save_model_file",
    "track",
    "train",
    "train_many",
    "training_params",
]
