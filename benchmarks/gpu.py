"""The suite on a GPU: generator and training throughput, the data-wait share, and the `full` profile.

Meant for a machine with JAX (CUDA) and no TensorFlow, offline; ``benchmarks/gpu.sh`` installs the
wheels brought along in ``.gpu/whl`` and runs, in one command::

    bash benchmarks/gpu.sh            # writes $OUT (or .cache/gpu_out): gpu_results.json, gpu_weights.tar
    # back on the CPU (TensorFlow): the weights load there and give the same embeddings (to 1e-4),
    # and the figures are merged into benchmarks/results/{throughput,quality_full}.json
    .venv/bin/python -m benchmarks.gpu_check --from <folder with gpu_results.json and gpu_weights.tar>

Rehearse on a CPU with small sizes: ``KERAS_BACKEND=jax python -m benchmarks.gpu --smoke``.

Parts, each bounded by its own time budget (what does not fit is listed as skipped, never guessed):

1. ``generator``: triplets/s of ``TripletGenerator`` alone at each batch size, without and with
   augmentation, in one thread and in a pool of threads.
2. ``training``: every registry model at each batch size on 60,000 images (the embedded split
   tiled): images/s after a warm-up epoch (XLA compilation), and the share of step time spent waiting
   for data, measured as ``1 - t_compute / t_real`` where ``t_compute`` is the same number of steps
   fed from batches already in memory and ``t_real`` the steps fed by the generator. For
   cnn_simple_v2 at the largest batch, three ways of augmenting: numpy in the generator's thread
   (the registry's), numpy in ``workers`` threads, and on the device (``ModelSpec.augment="device"``).
3. ``full``: the six models on the full Fashion-MNIST with the ``full`` profile's budgets
   (``helpers.profiles``: notebook 04's ``full`` settings), trained through ``helpers.training.train`` in ``--jobs``
   processes sharing the GPU, then 3-NN, MAP@R and silhouette per model (``evaluate_models``), and
   each model's embeddings of the first 256 test images with its weights, for the CPU check.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

from benchmarks.common import print_table, stamp
from helpers import config
from helpers.data import load_dataset
from helpers.registry import MODELS

REFERENCE_IMAGES = 256  # test images embedded on both machines for the cross-backend check


def full_precision():
    """Matrix products in full float32 while this context is open (backend shim).

    On an H100, JAX computes float32 matmuls and convolutions with TF32 tensor cores by default:
    embeddings then differ from a CPU's by about 1e-3 although the weights are the same. The
    cross-backend check embeds at full precision so that it compares weights, not arithmetic.
    """
    import contextlib

    if keras.backend.backend() == "jax":
        import jax  # backend shim

        return jax.default_matmul_precision("highest")
    return contextlib.nullcontext()


def reference_embeddings(name, data, cache_dir=None, weights=None):
    """``{suffix: embeddings}`` of the first test images: at full and at the default precision."""
    from helpers.evaluation import embed
    from helpers.registry import build_embedding
    from helpers.training import load_embedding

    images = data.x_test[:REFERENCE_IMAGES]
    if weights is None:
        model = load_embedding(name, data, cache_dir=cache_dir)
    else:
        model = build_embedding(name, tuple(images.shape[1:]))
        model.load_weights(weights)
    with full_precision():
        full = embed(model, images)
    return {"": full, "_default_precision": embed(model, images)}


def reembed(args, out: Path) -> int:
    """``--reembed TAR``: the reference embeddings of the weights in TAR (a gpu_weights.tar), again."""
    import tempfile

    data = load_full_data(args)
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(args.reembed) as tar:
        tar.extractall(tmp, filter="data")
        with tarfile.open(out / "gpu_reembed.tar", "w") as new:
            for folder in sorted(Path(tmp).iterdir()):
                name = folder.name
                weights = folder / f"{name}.feature_extractor.weights.h5"
                for suffix, emb in reference_embeddings(name, data, weights=weights).items():
                    path = folder / f"{name}.reference_embeddings{suffix}.npy"
                    np.save(path, emb, allow_pickle=False)
                    new.add(path, arcname=f"{name}/{path.name}")
                new.add(weights, arcname=f"{name}/{weights.name}")
                print(f"[gpu] re-embedded {name}", flush=True)
    config.write_json(
        out / "gpu_reembed.json",
        dict(
            stamp(),
            reembed=str(args.reembed),
            dataset="fashion_mnist idx" if not args.smoke else "mnist bundled",
            reference_images=REFERENCE_IMAGES,
        ),
    )
    return 0


def gpu_command(argv) -> str:
    """The one command that reproduces a run (gpu.sh passes ``--out $OUT`` itself)."""
    argv = list(argv)
    if "--out" in argv:
        i = argv.index("--out")
        del argv[i : i + 2]
    return " ".join(["bash benchmarks/gpu.sh", *argv])


class Deadline:
    """Seconds left of a part's budget."""

    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


# --- 1. generator -------------------------------------------------------------------------------


def bench_generator(x, y, batch_sizes, threads, deadline, batches=20):
    from helpers.samplers import TripletGenerator

    rows = []
    for bs in batch_sizes:
        for augment in (False, True):
            gen = TripletGenerator(x, y, batch_size=bs, seed=0, steps_per_epoch=10_000, augment=augment)
            gen[0]
            for n_threads in (1, threads):
                if deadline.left() < 0:
                    rows.append(
                        dict(
                            section="gpu_generator",
                            batch_size=bs,
                            augment=augment,
                            threads=n_threads,
                            skipped="time budget",
                        )
                    )
                    continue
                start = time.perf_counter()
                with ThreadPoolExecutor(n_threads) as pool:
                    list(pool.map(gen.__getitem__, range(1, batches + 1)))
                seconds = time.perf_counter() - start
                rows.append(
                    dict(
                        section="gpu_generator",
                        batch_size=bs,
                        augment=augment,
                        threads=n_threads,
                        triplets_per_s=batches * bs / seconds,
                    )
                )
                print(
                    f"[gpu] generator batch {bs} augment={augment} threads={n_threads}: "
                    f"{rows[-1]['triplets_per_s']:,.0f} triplets/s",
                    flush=True,
                )
    return rows


# --- 2. training throughput ----------------------------------------------------------------------


class InMemoryBatches(keras.utils.PyDataset):
    """``steps`` batches cycled from a few batches drawn once: the compute-only baseline."""

    def __init__(self, batches, steps):
        super().__init__()
        self.batches, self.steps = batches, steps

    def __len__(self):
        return self.steps

    def __getitem__(self, i):
        return self.batches[i % len(self.batches)]


def _fit_seconds(model, dataset) -> float:
    start = time.perf_counter()
    model.fit(dataset, epochs=1, verbose=0)
    return time.perf_counter() - start


def bench_training_one(name, data, batch_size, steps, workers=1, augment=None):
    """One row: images/s and data-wait share of ``name`` at ``batch_size``."""
    from helpers.registry import build_training_model, compile_training_model
    from helpers.training import make_generators

    original = MODELS[name]
    if augment is not None:
        MODELS[name] = dataclasses.replace(original, augment=augment)
    try:
        keras.utils.set_random_seed(0)
        model, embedding = build_training_model(name, len(data.class_names))
        compile_training_model(model, name, total_steps=10 * steps)
        gen, _ = make_generators(MODELS[name], data, batch_size, steps, seed=0, embedding=embedding)
        gen.workers = workers
        cached = InMemoryBatches([gen[i] for i in range(min(4, len(gen)))], steps)
        compile_s = _fit_seconds(model, cached)  # warm-up: XLA compilation
        compute_s = _fit_seconds(model, cached)
        gen.set_epoch(1)
        real_s = _fit_seconds(model, gen)
    finally:
        MODELS[name] = original
    inputs = len(model.inputs)
    spec = MODELS[name]
    return dict(
        section="gpu_training",
        model=name,
        batch_size=batch_size,
        steps=steps,
        inputs_per_sample=inputs,
        augment=augment if augment is not None else spec.augment,
        workers=workers,
        warmup_s=compile_s,
        images_per_s=steps * batch_size * inputs / real_s,
        compute_images_per_s=steps * batch_size * inputs / compute_s,
        step_ms=1e3 * real_s / steps,
        data_wait_share=max(0.0, 1.0 - compute_s / real_s),
    )


def bench_training(data, models, batch_sizes, steps, workers, deadline, augment=None):
    # the target case first (cnn_simple_v2, three ways of augmenting at the largest batch), then
    # every model at each batch size: what the budget cuts is the end of this list
    big = max(batch_sizes)
    plan = [(name, bs, 1, augment) for name in models for bs in batch_sizes]
    if augment is None and "cnn_simple_v2" in models:
        plan.remove(("cnn_simple_v2", big, 1, None))
        plan = [
            ("cnn_simple_v2", big, 1, None),
            ("cnn_simple_v2", big, workers, None),
            ("cnn_simple_v2", big, 1, "device"),
        ] + plan
    rows = []
    for name, bs, n_workers, augment in plan:
        if deadline.left() < 0:
            rows.append(
                dict(
                    section="gpu_training",
                    model=name,
                    batch_size=bs,
                    workers=n_workers,
                    augment=augment,
                    skipped="time budget",
                )
            )
            continue
        row = bench_training_one(name, data, bs, steps, workers=n_workers, augment=augment)
        rows.append(row)
        print(
            f"[gpu] {name} batch {bs} augment={row['augment']} workers={n_workers}: "
            f"{row['images_per_s']:,.0f} images/s, data wait {row['data_wait_share']:.1%} "
            f"(compute-only {row['compute_images_per_s']:,.0f}; warm-up {row['warmup_s']:.1f}s)",
            flush=True,
        )
    return rows


# --- 3. the full profile -------------------------------------------------------------------------


def full_profile_params(args) -> dict:
    from helpers import profiles

    full = profiles.settings("04_training", "full")
    params = {k: full[k] for k in ("epochs", "steps_per_epoch", "batch_size", "seed")}
    if args.smoke:
        params.update(epochs=2, steps_per_epoch=3, batch_size=64)
    return params


def load_full_data(args):
    if args.smoke:
        return load_dataset("mnist", source="bundled", verbose=False)
    return load_dataset("fashion_mnist", source="idx", fashion_dir=args.fashion_dir, verbose=False)


def train_worker(args) -> int:
    """``--train-worker a,b``: train those models with the full profile's budgets (a child process)."""
    from helpers.training import train

    data = load_full_data(args)
    params = full_profile_params(args)
    for name in args.train_worker.split(","):
        if args.augment:
            MODELS[name] = dataclasses.replace(MODELS[name], augment=args.augment)
        start = time.perf_counter()
        _, record = train(
            name,
            data,
            epochs=params["epochs"],
            steps_per_epoch=params["steps_per_epoch"],
            batch_size=params["batch_size"],
            cache_dir=args.cache_dir,
        )
        print(
            f"[gpu] trained {name} in {time.perf_counter() - start:.0f}s "
            f"({len(record['history']['epoch'])} epochs)",
            flush=True,
        )
    return 0


def run_full(args, deadline, out: Path):
    """Train the six in ``args.jobs`` processes, then evaluate; returns rows and the tar members."""
    from helpers.evaluation import evaluate_models
    from helpers.training import cache_paths, read_cache_record

    names = args.full_models or list(MODELS)
    groups = [names[i :: args.jobs] for i in range(args.jobs)]
    cmd = (
        [
            sys.executable,
            "-m",
            "benchmarks.gpu",
            "--cache-dir",
            str(args.cache_dir),
            "--fashion-dir",
            str(args.fashion_dir),
        ]
        + (["--smoke"] if args.smoke else [])
        + (["--augment", args.augment] if args.augment else [])
    )
    start = time.perf_counter()
    procs = [subprocess.Popen(cmd + ["--train-worker", ",".join(g)], cwd=config.ROOT) for g in groups if g]
    for proc in procs:
        try:
            proc.wait(timeout=max(1.0, deadline.left()))
        except subprocess.TimeoutExpired:
            proc.kill()
            print("[gpu] full profile: time budget reached; killed a training worker", flush=True)
    train_wall_s = time.perf_counter() - start

    data = load_full_data(args)
    rows, _ = evaluate_models(data, names=names, baselines=("raw",), cache_dir=args.cache_dir, verbose=True)
    members = {}
    for row in rows:
        name = row["model"]
        record = read_cache_record(name, args.cache_dir, data.name) if row["kind"] == "model" else None
        if record:
            row["train_seconds"] = record["train_seconds"]
            row["epochs_run"] = len(record["history"]["epoch"])
            row["fingerprint"] = record["fingerprint"]
            members[name] = [cache_paths(name, args.cache_dir, data.name)["feature_extractor"]]
            for suffix, emb in reference_embeddings(name, data, cache_dir=args.cache_dir).items():
                path = out / f"{name}.reference_embeddings{suffix}.npy"
                np.save(path, emb, allow_pickle=False)
                members[name].append(path)
    return rows, members, train_wall_s


# --- driver ----------------------------------------------------------------------------------------


def tiled(data, size):
    reps = int(np.ceil(size / len(data.x_train)))
    return dataclasses.replace(
        data,
        x_train=np.tile(data.x_train, (reps, 1, 1, 1))[:size],
        y_train=np.tile(data.y_train, reps)[:size],
    )


def _parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=Path(os.environ.get("OUT", config.ROOT / ".cache" / "gpu_out"))
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--steps", type=int, default=40, help="timed steps per training measurement")
    parser.add_argument("--dataset-size", type=int, default=60_000)
    parser.add_argument("--models", nargs="*", help="registry names for the training part (default: all)")
    parser.add_argument("--full-models", nargs="*", help="registry names for the full profile (default: all)")
    parser.add_argument("--workers", type=int, default=8, help="generator threads in the workers variant")
    parser.add_argument("--jobs", type=int, default=3, help="training processes sharing the GPU (full)")
    parser.add_argument(
        "--augment",
        choices=("host", "device"),
        default="device",
        help="how the full profile augments (device: keeps the GPU busy)",
    )
    parser.add_argument(
        "--training-augment",
        choices=("host", "device"),
        help="every training row augments this way (default: each model's registry "
        "setting, plus the three ways for cnn_simple_v2)",
    )
    parser.add_argument("--parts", nargs="+", default=["generator", "training", "full"])
    parser.add_argument(
        "--budgets",
        type=float,
        nargs=3,
        default=[20, 160, 270],
        metavar=("GENERATOR", "TRAINING", "FULL"),
        help="seconds per part",
    )
    parser.add_argument("--fashion-dir", type=Path, default=config.ROOT / ".gpu" / "fashion-mnist")
    parser.add_argument("--cache-dir", type=Path, default=config.ROOT / ".cache" / "gpu_models")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for a CPU rehearsal")
    parser.add_argument("--train-worker", help=argparse.SUPPRESS)
    parser.add_argument(
        "--reembed",
        type=Path,
        metavar="TAR",
        help="only embed the reference images again with the weights of a gpu_weights.tar",
    )
    return parser


def _save(args, results):
    """Written after every part: a run stopped by its time limit still returns what it measured."""
    config.write_json(args.out / "gpu_results.json", results)


def _generator_part(args, data60k, results):
    t = time.perf_counter()
    results["sections"]["gpu_generator"] = bench_generator(
        data60k.x_train, data60k.y_train, args.batch_sizes, args.workers, Deadline(args.budgets[0])
    )
    results["seconds"]["generator"] = time.perf_counter() - t
    _save(args, results)


def _training_part(args, data60k, results):
    t = time.perf_counter()
    results["sections"]["gpu_training"] = bench_training(
        data60k,
        args.models or list(MODELS),
        args.batch_sizes,
        args.steps,
        args.workers,
        Deadline(args.budgets[1]),
        augment=args.training_augment,
    )
    results["seconds"]["training"] = time.perf_counter() - t
    _save(args, results)


def _archive_weights(out: Path, members):
    """Tar every trained model's files, then drop the embeddings that now live in the tar."""
    with tarfile.open(out / "gpu_weights.tar", "w") as tar:
        for name, paths in members.items():
            for path in paths:
                tar.add(path, arcname=f"{name}/{path.name}")
    for paths in members.values():  # the embeddings now live in the tar: keep $OUT under its file count
        for path in paths[1:]:
            path.unlink()


def _full_part(args, results):
    t = time.perf_counter()
    rows, members, train_wall_s = run_full(args, Deadline(args.budgets[2]), args.out)
    results["sections"]["full_profile"] = rows
    results["full_profile"] = dict(
        params=full_profile_params(args),
        augment=args.augment,
        dataset="mnist bundled" if args.smoke else "fashion_mnist idx",
        reference_images=REFERENCE_IMAGES,
        jobs=args.jobs,
        train_wall_seconds=train_wall_s,
        seconds=time.perf_counter() - t,
    )
    _archive_weights(args.out, members)
    results["seconds"]["full"] = time.perf_counter() - t
    _save(args, results)


def _print_sections(args, results):
    for section, rows in results["sections"].items():
        print(f"\n{section}")
        print_table(rows, sorted({k for r in rows for k in r if k not in ("section", "fingerprint")}))
    print(f"wrote {args.out / 'gpu_results.json'} in {results['seconds']['total']:.0f}s")


def main(argv=None):
    args = _parser().parse_args(argv)
    if args.train_worker:
        return train_worker(args)
    if args.reembed:
        args.out.mkdir(parents=True, exist_ok=True)
        return reembed(args, args.out)
    if args.smoke:
        args.batch_sizes, args.steps, args.dataset_size = [32, 64], 3, 4000
        args.budgets = [5, 120, 240]
    args.out.mkdir(parents=True, exist_ok=True)
    results = dict(stamp(), argv=sys.argv[1:], command=gpu_command(sys.argv[1:]), sections={}, seconds={})

    started = time.perf_counter()
    base = load_dataset("mnist", source="bundled", verbose=False)
    data60k = tiled(base, args.dataset_size)
    if "generator" in args.parts:
        _generator_part(args, data60k, results)
    if "training" in args.parts:
        _training_part(args, data60k, results)
    if "full" in args.parts:
        _full_part(args, results)
    results["seconds"]["total"] = time.perf_counter() - started
    _save(args, results)
    _print_sections(args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
