"""Mining-table speed: ``same_class_neighbors`` / ``other_class_neighbors`` of ``helpers.generators``.

Run from the repository root; each run rewrites its ``--label`` section of
``benchmarks/results/mining.json`` (figures, command, date, machine, commit)::

    .venv/bin/python benchmarks/mining.py --label before   # at the commit before a change
    .venv/bin/python benchmarks/mining.py --label after    # after it

Data: the bundled MNIST train split (3,000 images, split seed 42) and the Fashion-MNIST train split
(42,000 images, Debian ``dataset-fashion-mnist``; skipped when missing). Features: the raw pixels
(784-d, what ``positive_neighbors`` uses without embeddings and notebook 02 mines on) and a 64-d PCA of
them standing in for a model embedding (the cost depends on the shape, not on the values). Cases: the
tables each generator option builds (``positive_neighbors=5``, ``mine_positives`` with pool 10,
``mining="hard"`` pool 10, ``mining="semi-hard"`` pool 10 -> depth 80). Seconds are the best of
``--repeats`` runs (2 shared CPU cores: the best is the least disturbed).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.common import print_table, stamp  # noqa: E402
from helpers import config  # noqa: E402

RESULTS = config.ROOT / "benchmarks" / "results" / "mining.json"


def _features(x):
    from sklearn.decomposition import PCA

    pixels = x.reshape(len(x), -1).astype(np.float32)
    emb = PCA(n_components=64, random_state=0, svd_solver="randomized").fit_transform(pixels)
    return pixels, np.ascontiguousarray(emb, dtype=np.float32)


def _cases(n):
    """(name, features key, function name, kwargs) per table a generator option builds."""
    cases = [
        ("positive_neighbors=5 (pixels)", "pixels", "same_class_neighbors", {"k": 5}),
        ("positive_neighbors=5 (64-d)", "emb", "same_class_neighbors", {"k": 5}),
        ("mine_positives, pool 10 (64-d)", "emb", "same_class_neighbors", {"k": 10, "largest": True}),
        ("hard, pool 10 (64-d)", "emb", "other_class_neighbors", {"k": 10}),
        ("semi-hard, depth 80 (64-d)", "emb", "other_class_neighbors", {"k": 80}),
    ]
    if n <= 10_000:  # notebook 02 mines hard negatives on pixels (minutes at 42,000 on 2 cores)
        cases.append(("hard, pool 5 (pixels)", "pixels", "other_class_neighbors", {"k": 5}))
    return cases


def _datasets():
    from helpers.data import load_dataset

    out = [("mnist bundled train", load_dataset("mnist", source="bundled", seed=42, verbose=False))]
    try:
        out.append(("fashion_mnist train", load_dataset("fashion_mnist", source="idx", seed=42, verbose=False)))
    except Exception as exc:  # no Debian package: the small case still runs
        print(f"fashion_mnist skipped: {exc}")
    return out


def run(repeats: int) -> list[dict]:
    from helpers import generators

    rows = []
    for label, ds in _datasets():
        pixels, emb = _features(ds.x_train)
        feats = {"pixels": pixels, "emb": emb}
        index = generators._ClassIndex(ds.y_train)
        for name, key, fn_name, kwargs in _cases(len(pixels)):
            fn = getattr(generators, fn_name)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                fn(feats[key], index, **kwargs)
                times.append(time.perf_counter() - start)
            rows.append({"data": label, "n": len(pixels), "case": name, "function": fn_name,
                         "seconds": min(times), "repeats": repeats})
            print(f"{label:22s} {name:32s} {min(times):8.3f} s", flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", required=True, help="section name, e.g. before / after")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    rows = run(args.repeats)
    import json

    previous = json.loads(args.out.read_text()) if args.out.exists() else {"sections": {}}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=config.ROOT).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "helpers"], capture_output=True, text=True,
                           cwd=config.ROOT).stdout.strip()
    previous["sections"][args.label] = {**stamp(), "commit": commit + ("+changes" if dirty else ""),
                                        "rows": rows}
    config.write_json(args.out, previous)
    print()
    print_table(rows, ["data", "n", "case", "seconds"])


if __name__ == "__main__":
    main()
