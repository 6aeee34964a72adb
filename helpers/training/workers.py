"""Several models at once: :func:`train_many` and its worker processes (``python -m helpers.training``).

Each worker runs :func:`helpers.training.train` on one model with its share of the CPU's cores, so the
cache entry, its fingerprint and a resume after a kill are the same as in one process.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from helpers import allocator, config
from helpers.processes import NOISE, ProcessLines
from helpers.registry import get_spec
from helpers.training.estimates import expected_seconds, track
from helpers.training.fit import is_cached, train, training_params


class TrainingWorkerError(RuntimeError):
    """A worker process of :func:`train_many` failed; the message holds its last lines."""


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
    unknown = sorted(set(params) - WORKER_PARAMS)
    if unknown:
        raise TypeError(f"train_many got unexpected arguments {unknown}; it takes {sorted(WORKER_PARAMS)}")
    if int(processes) < 1:
        raise ValueError(f"processes must be at least 1, got {processes!r}")
    for name in names:  # an unknown name or a bad budget fails here, not in a worker
        training_params(get_spec(name), **params)
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


WORKER_PARAMS = {"epochs", "batch_size", "steps_per_epoch", "learning_rate", "seed", "patience"}


def worker_command(name, data_path, cache_dir, force, augment, params) -> list[str]:
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
                workers.start(name, worker_command(name, data_path, cache_dir, force, augment, params))
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

    parser = argparse.ArgumentParser(
        prog="python -m helpers.training", description="Train (or load from the cache) one registry model."
    )
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
