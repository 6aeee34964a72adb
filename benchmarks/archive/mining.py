"""Mining-table speed: ``same_class_neighbors`` / ``other_class_neighbors`` of ``helpers.samplers``.

Run from the repository root (rewrites ``benchmarks/archive/results/mining.json`` with figures, command, date,
machine, commit)::

    .venv/bin/python -m benchmarks.archive.mining

Each table is built twice, interleaved, on the same data in the same process: by the helpers (the exact
FAISS search of ``helpers.knn``) and by the previous implementation, kept below as the reference
(distance-matrix chunks of 1024 rows and top-k through ``keras.ops``). Data: the bundled MNIST train
split (3,000 images, split seed 42) and the Fashion-MNIST train split (42,000 images, Debian
``dataset-fashion-mnist``; skipped when missing). Features: the raw pixels (784-d, what
``positive_neighbors`` uses without embeddings and notebook 02 mines on) and a 64-d PCA of them standing
in for a model embedding (the cost depends on the shape, not on the values). Cases: the tables each
generator option builds (``positive_neighbors=5``, ``mine_positives`` with pool 10, ``mining="hard"``
pool 10, ``mining="semi-hard"`` pool 10 -> depth 80). Seconds are the best of ``--repeats`` runs (on
shared CPU cores the best is the least disturbed); the results record ``OMP_WAIT_POLICY``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from benchmarks.common import print_table, stamp
from helpers import config

RESULTS = config.ROOT / "benchmarks" / "archive" / "results" / "mining.json"


# --- the previous implementation (keras.ops), the reference ------------------------------------

_CHUNK = 1024


def _knn_rows(f_rows, f_all, n_all, k, self_cols=None, largest=False):
    from keras import ops

    fr = ops.convert_to_tensor(f_rows)
    d2 = ops.sum(fr * fr, axis=1)[:, None] - 2.0 * ops.matmul(fr, ops.transpose(f_all)) + n_all[None, :]
    d2 = ops.maximum(d2, 0.0)
    key = d2 if largest else -d2
    if self_cols is not None:
        own = ops.equal(ops.convert_to_tensor(self_cols)[:, None], ops.arange(ops.shape(d2)[1])[None, :])
        key = ops.where(own, ops.full_like(key, -np.inf), key)
    vals, idx = ops.top_k(key, k=int(k), sorted=True)
    vals = ops.convert_to_numpy(vals)
    return ops.convert_to_numpy(idx).astype(np.int64), (vals if largest else -vals).astype(np.float32)


def reference_same_class_neighbors(features, index, k, largest=False):
    from keras import ops

    f = features.reshape(len(features), -1).astype(np.float32)
    table = np.zeros((len(f), k), dtype=np.int64)
    for c in range(index.num_classes):
        members = index.order[index.offsets[c] : index.offsets[c] + index.counts[c]]
        fc = ops.convert_to_tensor(f[members])
        nc = ops.sum(fc * fc, axis=1)
        kk = min(k, len(members) - 1)
        for s in range(0, len(members), _CHUNK):
            rows = np.arange(s, min(s + _CHUNK, len(members)))
            idx, _ = _knn_rows(f[members[rows]], fc, nc, kk, self_cols=rows, largest=largest)
            table[members[rows], :kk] = members[idx]
    return table


def reference_other_class_neighbors(features, index, k):
    from keras import ops

    f = features.reshape(len(features), -1).astype(np.float32)
    k = min(k, len(f) - int(index.counts.max()))
    table = np.empty((len(f), k), dtype=np.int64)
    for c in range(index.num_classes):
        lo, hi = index.offsets[c], index.offsets[c] + index.counts[c]
        members = index.order[lo:hi]
        others = np.concatenate([index.order[:lo], index.order[hi:]])
        fo = ops.convert_to_tensor(f[others])
        no = ops.sum(fo * fo, axis=1)
        for s in range(0, len(members), _CHUNK):
            rows = members[s : s + _CHUNK]
            idx, _ = _knn_rows(f[rows], fo, no, k)
            table[rows] = others[idx]
    return table


# --- the benchmark ------------------------------------------------------------------------------


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
        out.append(
            ("fashion_mnist train", load_dataset("fashion_mnist", source="idx", seed=42, verbose=False))
        )
    except Exception as exc:  # no Debian package: the small case still runs
        print(f"fashion_mnist skipped: {exc}")
    return out


def _seconds(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def run(repeats: int) -> list[dict]:
    from helpers import samplers

    references = {
        "same_class_neighbors": reference_same_class_neighbors,
        "other_class_neighbors": reference_other_class_neighbors,
    }
    rows = []
    for label, ds in _datasets():
        pixels, emb = _features(ds.x_train)
        feats = {"pixels": pixels, "emb": emb}
        index = samplers.ClassIndex(ds.y_train)
        for name, key, fn_name, kwargs in _cases(len(pixels)):
            ours, ref = getattr(samplers, fn_name), references[fn_name]
            helpers_s = reference_s = float("inf")
            for _ in range(repeats):  # interleaved: both see the same load
                helpers_s = min(helpers_s, _seconds(ours, feats[key], index, **kwargs))
                reference_s = min(reference_s, _seconds(ref, feats[key], index, **kwargs))
            rows.append(
                {
                    "data": label,
                    "n": len(pixels),
                    "case": name,
                    "function": fn_name,
                    "helpers_faiss_s": helpers_s,
                    "reference_keras_ops_s": reference_s,
                    "speedup": reference_s / helpers_s,
                    "repeats": repeats,
                }
            )
            print(
                f"{label:22s} {name:32s} faiss {helpers_s:8.3f} s  keras.ops {reference_s:8.3f} s", flush=True
            )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    # the code measured is the one imported now: record its commit before running
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=config.ROOT
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "helpers"], capture_output=True, text=True, cwd=config.ROOT
    ).stdout.strip()
    rows = run(args.repeats)
    config.write_json(
        args.out,
        {
            **stamp(),
            "commit": commit + ("+changes" if dirty else ""),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
            "rows": rows,
        },
    )
    print()
    print_table(rows, ["data", "n", "case", "helpers_faiss_s", "reference_keras_ops_s", "speedup"])


if __name__ == "__main__":
    main()
