"""Training speed on the CPU: images/s, the kernel's share of CPU time and page faults, lever by lever.

Each measurement is a fresh process (``--worker``) that trains one registry model from scratch with the
suite's own ``helpers.training.train`` for a few epochs of a few steps, and times the steps of every
epoch after the first (the first traces and compiles): wall time, user and system CPU time and minor
page faults of the process (``getrusage``). Validation and saving are outside the timed steps.

Two modes, as the suite trains:

- ``alone``: one process, TensorFlow's default threads (a notebook training in its kernel);
- ``pair``: two processes side by side with one thread each, as ``train_many`` runs its workers
  (the figure is the mean of the two). Both wait for each other at the start of the timed epochs
  (a file barrier), so neither is timed while the other still imports or compiles.

Levers, each against the baseline (today's settings: glibc's allocator, Keras' default
``jit_compile``, the registry's augmentation) in the same run, alternating baseline and lever
(A B A B) so that the machine's drift hits both alike:

- ``tcmalloc`` / ``jemalloc``: the allocator preloaded (``helpers.allocator``);
- ``tcmalloc_keep``: TCMalloc that never returns freed pages to the kernel (``TCMALLOC_RELEASE_RATE=0``);
- ``tcmalloc_interop1``: TCMalloc and one TensorFlow inter-op thread (``TF_NUM_INTEROP_THREADS=1``);
- ``xla``: ``jit_compile=True`` forced on every ``Model.compile``;
- ``device_augment``: the in-graph augmenter instead of the numpy one (changes what is learned:
  a recipe change, not a speed setting);
- ``threads``: two threads per process (alone: one thread instead of the default);
- ``bf16`` / ``tcmalloc_bf16``: Keras' ``mixed_bfloat16`` policy (bfloat16 computations, float32
  weights), without and with TCMalloc: this CPU has AVX512_BF16 (changes what is learned: a recipe
  change, not a speed setting).

Data: the bundled MNIST split (the study models train on the same 28 x 28 images here: speed
depends on shapes, not content). Run from the repository root::

    python -m benchmarks.cpu_training                                   # every model, tcmalloc, both modes
    python -m benchmarks.cpu_training --models cnn_with_attention_v1 --levers tcmalloc jemalloc xla
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from helpers import allocator

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "cpu_training.json"
CORE = [
    "cnn_simple_v1",
    "cnn_simple_v2",
    "cnn_with_attention_v1",
    "cnn_with_attention_cls_head_v1",
    "cnn_with_attention_cls_head_v2",
    "cnn_with_attention_vit_style_v1",
]
STUDY = {"densenet_bc_fashion": "helpers.studies.densenet_fashion_mnist", "vicreg": "helpers.studies.vicreg"}
#: Settings a lever may set: cleared from the parent's environment, so the baseline has none of them.
CLEARED = (
    "LD_PRELOAD",
    "TCMALLOC_RELEASE_RATE",
    "TF_NUM_INTEROP_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "OMP_NUM_THREADS",
    "TF_ENABLE_ONEDNN_OPTS",
)
LEVERS = (
    "tcmalloc",
    "tcmalloc_keep",
    "tcmalloc_interop1",
    "jemalloc",
    "xla",
    "device_augment",
    "threads",
    "bf16",
    "tcmalloc_bf16",
    "tcmalloc_eigen",
    "tcmalloc_spe5",
)


# --- the worker: one training, timed -------------------------------------------------------------


def _usage() -> tuple[float, float, float, int]:
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), ru.ru_utime, ru.ru_stime, ru.ru_minflt


def wait_at_barrier(barrier: str | None, timeout: float = 900.0) -> None:
    """``DIR:N``: mark this process arrived in DIR, then wait until N processes have (no-op for None)."""
    if not barrier:
        return
    folder, parties = barrier.rsplit(":", 1)
    (Path(folder) / str(os.getpid())).touch()
    deadline = time.monotonic() + timeout
    while len(list(Path(folder).iterdir())) < int(parties):
        if time.monotonic() > deadline:
            raise TimeoutError(f"barrier {barrier}: the other worker never reached its timed epochs")
        time.sleep(0.02)


def _probe(steps: int, barrier: str | None = None):
    """A callback summing wall, user, system time and page faults over the steps of epochs 2, 3, ...
    (at the start of epoch 2 it first waits at ``barrier``, see :func:`wait_at_barrier`)."""
    import keras

    class Probe(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.total, self.start, self.epoch = [0.0, 0.0, 0.0, 0], None, 0

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                wait_at_barrier(barrier)
            self.epoch, self.start = epoch, _usage() if epoch >= 1 else None

        def on_train_batch_end(self, batch, logs=None):
            if self.start is not None and batch == steps - 1:
                self.total = [t + (b - a) for t, a, b in zip(self.total, self.start, _usage(), strict=True)]
                self.start = None

    return Probe()


def _force_compile(**forced) -> None:
    """Make every ``keras.Model.compile`` of this process take ``forced`` (e.g. ``jit_compile``)."""
    import keras

    compile_ = keras.Model.compile

    def compile_forced(self, *args, **kwargs):
        return compile_(self, *args, **{**kwargs, **forced})

    keras.Model.compile = compile_forced


def worker(
    name: str, epochs: int, steps: int, augment: str | None, xla: bool, barrier: str | None = None,
    policy: str | None = None, steps_per_execution: int = 1,
) -> dict:  # fmt: skip
    """Train ``name`` from scratch in this process; the timed figures of epochs 2..``epochs``
    (``policy``: a Keras dtype policy such as ``"mixed_bfloat16"`` set before the model is built;
    ``steps_per_execution``: training steps per call of the compiled step, see ``Model.compile``)."""
    import importlib

    import keras

    if name in STUDY:
        importlib.import_module(STUDY[name])
    if xla or steps_per_execution > 1:
        _force_compile(**({"jit_compile": True} if xla else {}), steps_per_execution=steps_per_execution)
    if policy:
        keras.mixed_precision.set_global_policy(policy)
    from helpers import registry, training
    from helpers.data import load_dataset
    from helpers.training.batches import batch_arguments

    data = load_dataset("mnist", source="bundled", verbose=False)
    spec = registry.get_spec(name)
    probe = _probe(steps, barrier)
    with tempfile.TemporaryDirectory(prefix="cpu-training-") as cache:
        training.train(
            name, data, epochs=epochs, steps_per_epoch=steps, cache_dir=cache, force=True,
            verbose=0, patience=epochs + 1, callbacks=[probe], augment=augment,
        )  # fmt: skip
        inputs, jit = len(probe.model.inputs), bool(probe.model.jit_compile)
    batch = batch_arguments(spec, spec.batch_size)
    samples = batch.get("batch_size") or batch["classes_per_batch"] * batch["samples_per_class"]
    wall, user, system, faults = probe.total
    images = inputs * samples * steps * (epochs - 1)
    return {
        "images_per_s": images / wall,
        "kernel_share": system / max(user + system, 1e-9),
        "faults_per_s": faults / wall,
        "cpu_per_wall": (user + system) / wall,
        "timed_seconds": wall,
        "jit_compile": jit,
        "bfloat16": keras.mixed_precision.global_policy().compute_dtype == "bfloat16",
    }


# --- the parent: levers, paired ------------------------------------------------------------------


def lever_settings(lever: str, mode: str) -> tuple[dict, list[str]]:
    """(environment, worker arguments) of ``lever`` ("baseline" for today's settings) in ``mode``."""
    threads = {"alone": None, "pair": "1"}[mode]
    if lever == "threads":
        threads = {"alone": "1", "pair": "2"}[mode]
    env = {"TF_NUM_INTRAOP_THREADS": threads, "OMP_NUM_THREADS": threads} if threads else {}
    library = lever.split("_")[0]
    if library in allocator.LIBRARIES:
        preload = allocator.preload_env(library, environ={})
        if not preload:
            raise SystemExit(
                f"error: {library} is not installed: sudo apt-get install {allocator.LIBRARIES[library][1]}"
            )
        env.update(preload)
        if lever == "tcmalloc_keep":  # never hand freed pages back to the kernel (gperftools' knob)
            env["TCMALLOC_RELEASE_RATE"] = "0"
        if lever == "tcmalloc_interop1":  # one thread for TensorFlow's op scheduling as well
            env["TF_NUM_INTEROP_THREADS"] = "1"
        if lever == "tcmalloc_eigen":  # TensorFlow's own (Eigen) kernels instead of oneDNN's
            env["TF_ENABLE_ONEDNN_OPTS"] = "0"
    bf16 = ["--policy", "mixed_bfloat16"]
    args = {
        "xla": ["--xla"], "device_augment": ["--augment", "device"], "bf16": bf16, "tcmalloc_bf16": bf16,
        "tcmalloc_spe5": ["--steps-per-execution", "5"],
    }  # fmt: skip
    return env, args.get(lever, [])


def _launch(name: str, lever: str, mode: str, epochs: int, steps: int, barrier: str | None = None):
    env_add, args = lever_settings(lever, mode)
    args = [*args, "--barrier", barrier] if barrier else args
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env.update(env_add, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "benchmarks.cpu_training", "--worker", name]
    cmd += ["--epochs", str(epochs), "--steps", str(steps), *args]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def measure(name: str, lever: str, mode: str, epochs: int, steps: int) -> dict:
    """One measurement: one worker (alone) or two side by side (pair, averaged)."""
    parties = {"alone": 1, "pair": 2}[mode]
    results = []
    with tempfile.TemporaryDirectory(prefix="cpu-training-barrier-") as folder:
        barrier = f"{folder}:{parties}" if parties > 1 else None
        procs = [_launch(name, lever, mode, epochs, steps, barrier) for _ in range(parties)]
        for proc in procs:
            out, err = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"worker {name} ({lever}, {mode}) failed:\n{err[-2000:]}")
            results.append(json.loads(out.strip().splitlines()[-1]))
    return {
        **{k: statistics.fmean(r[k] for r in results) for k in results[0]},
        "load_1min": os.getloadavg()[0],
    }


def paired_runs(models, levers, modes, repeats, epochs, steps) -> list[dict]:
    """Every (model, mode): baseline and each lever alternating, ``repeats`` rounds."""
    rows = []
    for name in models:
        for mode in modes:
            for repeat in range(repeats):
                for lever in ("baseline", *levers):
                    row = {"model": name, "mode": mode, "lever": lever, "repeat": repeat}
                    row.update(measure(name, lever, mode, epochs, steps))
                    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))
                    rows.append(row)
    return rows


def _per_cpu(row: dict) -> float:
    return row["images_per_s"] / row["cpu_per_wall"]


def summarise(rows: list[dict]) -> list[dict]:
    """Per (model, mode, lever): median images/s, kernel share, faults/s, and the speed-up over the
    baseline of the same round (geometric mean over rounds, with its min and max)."""
    base = {(r["model"], r["mode"], r["repeat"]): r for r in rows if r["lever"] == "baseline"}
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["mode"], r["lever"]), []).append(r)
    out = []
    for (model, mode, lever), rs in groups.items():
        ratios = [r["images_per_s"] / base[(model, mode, r["repeat"])]["images_per_s"] for r in rs]
        cpu_ratios = [_per_cpu(r) / _per_cpu(base[(model, mode, r["repeat"])]) for r in rs]
        out.append(
            {
                "model": model,
                "mode": mode,
                "lever": lever,
                "images_per_s": statistics.median(r["images_per_s"] for r in rs),
                # what the machine's other load does not move as much: images per second of CPU time
                "images_per_cpu_s": statistics.median(_per_cpu(r) for r in rs),
                "kernel_share": statistics.median(r["kernel_share"] for r in rs),
                "faults_per_s": statistics.median(r["faults_per_s"] for r in rs),
                "speedup": statistics.geometric_mean(ratios),
                "speedup_min": min(ratios),
                "speedup_max": max(ratios),
                "cpu_speedup": statistics.geometric_mean(cpu_ratios),
                "rounds": len(rs),
            }
        )
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=CORE + list(STUDY), help="registry names")
    parser.add_argument("--levers", nargs="+", default=["tcmalloc"], choices=LEVERS)
    parser.add_argument("--modes", nargs="+", default=["alone", "pair"], choices=["alone", "pair"])
    parser.add_argument("--repeats", type=int, default=2, help="rounds of baseline + levers (A B A B)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per measurement; the first is untimed")
    parser.add_argument("--steps", type=int, default=6, help="training steps per epoch")
    parser.add_argument(
        "--out", type=Path, default=OUT, help="results file (rows are appended to a run list)"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--augment", choices=["host", "device"], help=argparse.SUPPRESS)
    parser.add_argument("--xla", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--barrier", help=argparse.SUPPRESS)
    parser.add_argument("--policy", help=argparse.SUPPRESS)
    parser.add_argument("--steps-per-execution", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.epochs < 2 or args.steps < 1 or args.repeats < 1:
        parser.error("--epochs must be at least 2 (the first is untimed), --steps and --repeats at least 1")
    if args.worker:
        figures = worker(
            args.worker, args.epochs, args.steps, args.augment, args.xla, args.barrier, args.policy,
            args.steps_per_execution,
        )  # fmt: skip
        print(json.dumps(figures))
        return 0
    unknown = [m for m in args.models if m not in CORE and m not in STUDY]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from: {', '.join(CORE + list(STUDY))}")
    rows = paired_runs(args.models, args.levers, args.modes, args.repeats, args.epochs, args.steps)
    save(args.out, rows, summarise(rows), vars(args))
    return 0


def save(path: Path, rows, summary, settings) -> None:
    """Append this run (rows, summary, settings, stamp) to the results file's list of runs."""
    from benchmarks.common import stamp
    from helpers import config

    runs = json.loads(path.read_text())["runs"] if path.exists() else []
    keep = {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in settings.items()
        if k in ("models", "levers", "modes", "repeats", "epochs", "steps")
    }
    keep["pair_start"] = "together"  # pair workers wait at a barrier before their timed epochs
    runs.append({"settings": keep, "summary": summary, "rows": rows, **stamp()})
    config.write_json(path, {"what": __doc__.splitlines()[0], "runs": runs})
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
