"""How close each model's float32 training step is to this CPU's float32 arithmetic rate.

``benchmarks/cpu_training.py`` asks every lever that keeps the numbers (allocator, threads, XLA) for
1.3x the images per second of the default setting; ``cnn_simple_v2`` never gets past 1.1x. This script
says why, in one run on one machine:

- the CPU's float32 rate: the median of ``keras.ops.matmul`` of two 2,048 x 2,048 matrices;
- per model, the training step alone: ``train_on_batch`` on batches drawn beforehand by the model's
  own generator (its registry batch, weight seed 0), against the time the generator takes to draw one;
- per model, the multiply-adds of its Conv2D and Dense layers per image (attention's matrix products
  are not counted, so for the attention models the rate below is a lower bound), times 3 for a training
  step (the forward pass, the gradients of the inputs and of the weights): the step's arithmetic rate,
  and its share of the matmul rate.

A model whose step already runs near the matmul rate has no float32 lever left but a faster kernel.
Run from the repository root with the allocator the suite's training processes use::

    LD_PRELOAD="$(python -m helpers.allocator)" python -m benchmarks.archive.float32_ceiling

Writes ``benchmarks/archive/results/float32_ceiling.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from benchmarks.common import ARCHIVE_RESULTS_DIR, print_table, write_results
from helpers.registry import MODELS

OUT = ARCHIVE_RESULTS_DIR / "float32_ceiling.json"


def matmul_gflops(n: int = 2048, repeats: int = 7) -> float:
    """The median float32 rate of ``keras.ops.matmul`` of two ``n`` x ``n`` matrices, in GFLOP/s."""
    import keras

    a, b = keras.random.normal((n, n), seed=0), keras.random.normal((n, n), seed=1)
    keras.ops.convert_to_numpy(keras.ops.matmul(a, b))  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        keras.ops.convert_to_numpy(keras.ops.matmul(a, b))
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def forward_flops(model) -> int:
    """Floating-point operations of one image through ``model``'s Conv2D and Dense layers (2 per
    multiply-add; biases, activations, pooling, normalisation and attention's products not counted)."""
    import keras

    from helpers.training.cache import walk_layers

    total = 0
    for layer in walk_layers(model):
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            positions = int(np.prod(layer.output.shape[1:-1]))
            total += 2 * positions * kh * kw * cin * cout
        elif isinstance(layer, keras.layers.Dense):
            fan_in, units = layer.kernel.shape
            total += 2 * int(np.prod(layer.output.shape[1:-1] or [1])) * fan_in * units
    return total


def step_figures(name: str, data, steps: int, repeats: int) -> dict:
    """Seconds of one training step of ``name`` without its generator, and of one generator batch."""
    import keras

    from helpers.registry import build_training_model, get_spec
    from helpers.training.fit import compile_for_fit, training_params

    spec = get_spec(name)
    keras.utils.set_random_seed(0)
    model, embedding = build_training_model(name, len(data.class_names), tuple(data.x_train.shape[1:]))
    params = training_params(spec, seed=0)  # the registry budget
    train_gen, _ = compile_for_fit(spec, model, embedding, data, params)
    start = time.perf_counter()
    batches = [train_gen[i] for i in range(steps + 1)]
    generator_s = (time.perf_counter() - start) / (steps + 1)
    model.train_on_batch(*batches[0][:2])  # builds and traces the step
    step_s = []
    for _ in range(repeats):
        start = time.perf_counter()
        for batch in batches[1:]:
            model.train_on_batch(*batch[:2])
        step_s.append((time.perf_counter() - start) / steps)
    images = sum(len(part) for part in keras.tree.flatten(batches[1][0]))  # every input image
    return {"step_s": statistics.median(step_s), "generator_s": generator_s, "images_per_step": images,
            "forward_mflop_per_image": forward_flops(embedding) / 1e6}  # fmt: skip


def row_of(name: str, figures: dict, peak: float) -> dict:
    images_per_s = figures["images_per_step"] / figures["step_s"]
    gflops = 3 * figures["forward_mflop_per_image"] * images_per_s / 1e3
    return {
        "model": name,
        **figures,
        "images_per_s": images_per_s,
        "generator_share": figures["generator_s"] / (figures["generator_s"] + figures["step_s"]),
        "step_gflops": gflops,
        "share_of_matmul_rate": gflops / peak,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--steps", type=int, default=15, help="timed training steps per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=OUT)
    args = parser.parse_args(argv)
    from helpers.data import load_dataset

    data = load_dataset("mnist", source="bundled", verbose=False)
    peak_before = matmul_gflops()
    rows = [
        row_of(name, step_figures(name, data, args.steps, args.repeats), peak_before) for name in args.models
    ]
    peak_after = matmul_gflops()
    print(f"matmul float32: {peak_before:.0f} GFLOP/s before, {peak_after:.0f} after the models")
    print_table(rows, ["model", "images_per_s", "generator_share", "forward_mflop_per_image", "step_gflops",
                       "share_of_matmul_rate"])  # fmt: skip
    what = (
        "Each model's float32 training step (train_on_batch on pre-drawn batches, weight seed 0) against "
        "the CPU's float32 matmul rate (2,048 x 2,048, median of 7), measured in one run; step_gflops "
        "counts Conv2D and Dense multiply-adds only, times 3 for a training step"
    )
    write_results(
        args.out, what, rows, [], matmul_gflops_before=peak_before,
        matmul_gflops_after=peak_after, ld_preload=os.environ.get("LD_PRELOAD", ""),
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
