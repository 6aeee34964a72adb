"""Back on the CPU: check the GPU run's weights under TensorFlow and commit its figures.

    .venv/bin/python -m benchmarks.gpu_check --from FOLDER

``FOLDER`` holds what ``bash benchmarks/gpu.sh`` wrote (``gpu_results.json``, ``gpu_weights.tar``).
For every model of the full profile, the feature-extractor weights trained on the GPU (JAX) are
loaded into the same architecture here (TensorFlow by default) and embed the same test images; the
largest absolute difference from the GPU's embeddings must be at most ``--atol`` (1e-4). Then:

- ``benchmarks/results/throughput.json`` gets the sections ``gpu_generator`` and ``gpu_training``
  (with the GPU run's command, date and machine);
- ``benchmarks/results/quality_full.json`` gets the full profile's table, its time, and the check.

Exit code 1 when a model's embeddings differ by more than ``--atol``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tarfile
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

from benchmarks.common import RESULTS_DIR, print_table, stamp
from helpers import config

GPU_STAMP_KEYS = ("command", "date", "machine")


def check_weights(results: dict, tar_path: Path, atol: float) -> list[dict]:
    """One row per model: max |embedding difference| between the GPU run and this machine.

    ``max_abs_diff`` compares with the GPU's embeddings at full float32 precision (what ``same``
    judges); ``max_abs_diff_default_precision``, where the tar has them, with the GPU's default
    (TF32) arithmetic, to show how much of a difference the arithmetic alone makes.
    """
    from helpers.data import load_dataset
    from helpers.evaluation import embed
    from helpers.registry import build_embedding

    full = results["full_profile"]
    if full["dataset"].startswith("fashion"):
        data = load_dataset("fashion_mnist", source="idx", verbose=False)
    else:
        data = load_dataset("mnist", source="bundled", verbose=False)
    images = data.x_test[: full["reference_images"]]
    rows = []
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(tar_path) as tar:
        tar.extractall(tmp, filter="data")
        for folder in sorted(Path(tmp).iterdir()):
            name = folder.name
            model = build_embedding(name, tuple(images.shape[1:]))
            model.load_weights(folder / f"{name}.feature_extractor.weights.h5")
            here = embed(model, images)
            row = dict(model=name, images=len(images), atol=atol, backend_here=keras.backend.backend())
            for suffix in ("", "_default_precision"):
                path = folder / f"{name}.reference_embeddings{suffix}.npy"
                if path.exists():
                    gpu = np.load(path, allow_pickle=False)
                    row[f"max_abs_diff{suffix}"] = float(np.abs(here - gpu).max())
            row["same"] = row["max_abs_diff"] <= atol
            rows.append(row)
    return rows


def merge(results: dict, check_rows: list[dict], source: Path, weights: Path | None = None) -> None:
    from benchmarks.gpu import gpu_command

    gpu_stamp = {k: results[k] for k in GPU_STAMP_KEYS}
    # embeddings re-made on the GPU by `gpu.sh --reembed` carry their own stamp beside their tar
    reembed = weights.parent / "gpu_reembed.json" if weights is not None else None
    gpu_embeddings_stamp = json.loads(reembed.read_text()) if reembed and reembed.exists() else None
    if gpu_embeddings_stamp:
        gpu_embeddings_stamp["command"] = "bash benchmarks/gpu.sh --reembed .gpu/gpu_weights.tar"
    gpu_stamp["command"] = gpu_command(results.get("argv", []))
    argv = results.get("argv", [])
    # a run with --training-augment X measures every model that way: its own section
    training = (
        "gpu_training"
        if "--training-augment" not in argv
        else f"gpu_training_{argv[argv.index('--training-augment') + 1]}"
    )
    throughput_path = RESULTS_DIR / "throughput.json"
    throughput = json.loads(throughput_path.read_text()) if throughput_path.exists() else {}
    sections = dict(throughput.get("sections", {}))
    section_stamps = dict(throughput.get("section_stamps", {}))
    for section, target in (("gpu_generator", "gpu_generator"), ("gpu_training", training)):
        rows = [r for r in results["sections"].get(section, []) if "skipped" not in r]
        if rows:
            sections[target] = rows
            section_stamps[target] = gpu_stamp
    throughput.update(sections=sections, section_stamps=section_stamps)
    config.write_json(throughput_path, throughput)
    if "full_profile" in results["sections"]:
        config.write_json(
            RESULTS_DIR / "quality_full.json",
            {
                **gpu_stamp,
                "rows": results["sections"]["full_profile"],
                "full_profile": results["full_profile"],
                "seconds": results["seconds"],
                "cpu_check": {"rows": check_rows, **stamp(), "gpu_embeddings": gpu_embeddings_stamp},
            },
        )
    print(f"merged {source} into {throughput_path.name} and quality_full.json")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source", type=Path, required=True)
    parser.add_argument("--atol", type=float, default=1e-4)
    parser.add_argument(
        "--weights", type=Path, help="the tar of weights and embeddings (default: FOLDER/gpu_weights.tar)"
    )
    parser.add_argument("--no-merge", action="store_true", help="only check, write nothing")
    args = parser.parse_args(argv)
    results_path = args.source / "gpu_results.json"
    if not results_path.exists():
        print(f"gpu_check: {results_path} not found; pass the folder gpu.sh wrote", file=sys.stderr)
        return 2
    results = json.loads(results_path.read_text())
    check_rows = []
    weights = args.weights or args.source / "gpu_weights.tar"
    if "full_profile" in results and weights.exists():
        check_rows = check_weights(results, weights, args.atol)
        print_table(
            check_rows,
            [
                "model",
                "images",
                "max_abs_diff",
                "max_abs_diff_default_precision",
                "atol",
                "backend_here",
                "same",
            ],
        )
    if not args.no_merge:
        merge(results, check_rows, args.source, weights)
    return 0 if all(r["same"] for r in check_rows) else 1


if __name__ == "__main__":
    sys.exit(main())
