"""The command line: ``python -m helpers.search build|query``.

    python -m helpers.search build --model cnn_with_attention_v1 --dataset mnist --split train --out idx/
    python -m helpers.search query --index idx/ --image digit.png [--image ...] -k 5 [--figure out.png] [--json]

``build`` embeds a dataset split with a cached model and saves the index; a model that is not cached
is trained only with ``--train`` (the command says how long that takes). ``query`` prints, per query
image, the rank, id, class name and distance of each neighbour, or with ``--json`` one JSON object.

Exit status: 0 done; 2 a usage error (a bad option or value, an unknown model, a missing or
unreadable image); 1 a failure (a model that is not cached or changed since the index was built, a
folder that is not a readable index, a dataset that cannot be loaded). Errors print one line on
stderr that names the fix, and write nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from helpers import config
from helpers.data import DATASETS
from helpers.knn import METRICS
from helpers.search.errors import ModelMismatchError, ModelNotCachedError, NotAnIndexError, SearchError
from helpers.search.images import read_image
from helpers.search.index import EmbeddingIndex, SearchResult
from helpers.search.kinds import KINDS, IndexConfig
from helpers.search.store import read_metadata


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line on stderr, exit 2 (argparse prints the usage too)
        self.exit(2, f"error: {message} (see --help)\n")


def _build_parser(sub) -> None:
    build = sub.add_parser("build", help="embed a dataset split with a cached model and save an index")
    build.add_argument("--model", required=True, help="registry model name, e.g. cnn_with_attention_v1")
    build.add_argument(
        "--dataset", default="mnist", choices=DATASETS, help="dataset to index (default mnist)"
    )
    build.add_argument("--source", default="auto", help="dataset source (see helpers.data; default auto)")
    build.add_argument(
        "--split", default="train", choices=("train", "val", "test"), help="split to index (default train)"
    )
    build.add_argument("--out", required=True, help="index folder to write (replaced atomically)")
    build.add_argument("--kind", default="flat", choices=KINDS, help="FAISS index: exact flat, HNSW or IVF")
    build.add_argument("--metric", default="l2", choices=METRICS, help="squared L2 or cosine (default l2)")
    build.add_argument(
        "--profile",
        help="use the model a notebook profile trains (smoke, default, full): its epochs, steps, "
        "batch size and model cache, as `python -m helpers.export` does",
    )
    build.add_argument("--cache-dir", help="model cache (default models_cache/, or the profile's)")
    build.add_argument(
        "--epochs", type=int, help="epochs the model was cached with (default: the registry's)"
    )
    build.add_argument(
        "--steps-per-epoch", type=int, help="steps per epoch it was cached with (default: registry)"
    )
    build.add_argument(
        "--batch-size", type=int, help="batch size it was cached with (default: the registry's)"
    )
    build.add_argument("--train", action="store_true", help="train the model when it is not cached")


def _query_parser(sub) -> None:
    query = sub.add_parser("query", help="print the nearest stored items of image files")
    query.add_argument("--index", required=True, help="index folder written by `build`")
    query.add_argument("--image", required=True, action="append", help="PNG/JPEG file (repeatable)")
    query.add_argument("-k", type=int, default=5, help="neighbours per image (>= 1, default 5)")
    query.add_argument("--figure", help="also save the query and its neighbours as a PNG")
    query.add_argument("--cache-dir", help="model cache, if not the one the index was built from")
    query.add_argument("--json", action="store_true", help="print the results as one JSON object")


def parser() -> argparse.ArgumentParser:
    """The ``python -m helpers.search`` argument parser."""
    parser = _Parser(prog="python -m helpers.search", description="Similar-image search on a FAISS index.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _build_parser(sub)
    _query_parser(sub)
    return parser


# --- build -------------------------------------------------------------------------------------------


def _train_kwargs(args) -> dict:
    """The training settings to look the model up with: the profile's, then any given explicitly.
    With ``--profile`` and no ``--cache-dir``, ``args.cache_dir`` becomes the profile's cache."""
    kwargs = {}
    if args.profile is not None:
        from helpers.export import profile_settings

        kwargs, cache_dir = profile_settings(args.profile, args.cache_dir)  # unknown: ValueError, exit 2
        args.cache_dir = str(cache_dir)
    given = {"epochs": args.epochs, "batch_size": args.batch_size, "steps_per_epoch": args.steps_per_epoch}
    return {**kwargs, **{key: value for key, value in given.items() if value is not None}}


def _ensure_cached(args, data, train_kwargs) -> None:
    """Refuse an uncached model unless ``--train``; with it, say how long training will take."""
    from helpers import training

    if training.is_cached(args.model, data, args.cache_dir, **train_kwargs):
        return
    epochs, steps = train_kwargs.get("epochs"), train_kwargs.get("steps_per_epoch")
    eta = training.format_seconds(training.expected_seconds([args.model], epochs, steps)[args.model])
    if not args.train:
        raise ModelNotCachedError(
            f"model {args.model!r} is not cached for {data.name} with these settings; add --train to "
            f"train it (about {eta} on a 2-core CPU), or pass the --cache-dir / --epochs it was trained with."
        )
    print(f"training {args.model} on {data.name}: about {eta} on a 2-core CPU", flush=True)


def _build(args) -> int:
    from helpers.data import load_dataset
    from helpers.registry import get_spec

    get_spec(args.model)  # an unknown name: a usage error, before the data loads
    data = load_dataset(args.dataset, source=args.source, verbose=False)
    train_kwargs = _train_kwargs(args)
    _ensure_cached(args, data, train_kwargs)
    x, y = data.split(args.split)
    index = EmbeddingIndex.from_model(
        args.model,
        x,
        y,
        data=data,
        config=IndexConfig(args.kind, args.metric),
        cache_dir=args.cache_dir,
        train_kwargs=train_kwargs,
    )
    index.source = {"dataset": data.name, "source": data.source, "split": args.split, "seed": 42}
    index.save(args.out)
    print(
        f"saved {len(index)} items of {data.name}/{args.split} ({args.kind}, {args.metric}, "
        f"model {args.model}) to {args.out}"
    )
    return 0


# --- query -------------------------------------------------------------------------------------------


def _neighbour_images(index: EmbeddingIndex, result: SearchResult, shape) -> np.ndarray:
    """The neighbours' images (q, k, H, W, C) when the index was built from a dataset split with
    integer ids (``build``); blank tiles otherwise (the figure then shows classes and distances)."""
    src = index.source
    if not src or result.ids.dtype.kind == "U":
        return np.zeros((*result.ids.shape, *shape), np.float32)
    from helpers.data import load_dataset

    data = load_dataset(
        src["dataset"], source=src.get("source", "auto"), seed=src.get("seed", 42), verbose=False
    )
    x, _ = data.split(src["split"])
    return x[np.where(result.ids >= 0, result.ids, 0)]


def _as_json(index: EmbeddingIndex, result: SearchResult, images, args) -> dict:
    queries = []
    for row, path in enumerate(images):
        neighbours = [
            {
                "rank": col + 1,
                "id": result.ids[row, col].item(),
                "label": int(result.labels[row, col]),
                "class": index.class_name(int(result.labels[row, col])),
                "distance": float(d) if np.isfinite(d := result.distances[row, col]) else None,
            }
            for col in range(args.k)
        ]
        queries.append({"image": str(path), "neighbours": neighbours})
    return {"index": str(args.index), "k": args.k, "metric": index.metric, "queries": queries}


def _print_table(index: EmbeddingIndex, result: SearchResult, images, k: int) -> None:
    for row, path in enumerate(images):
        print(f"query {path}")
        print(f"  {'rank':>4}  {'id':>8}  {'class':<12} distance")
        for col in range(k):
            name = index.class_name(int(result.labels[row, col]))
            print(f"  {col + 1:>4}  {result.ids[row, col]!s:>8}  {name:<12} {result.distances[row, col]:.6g}")


def _save_figure(index, result, images, shape, args) -> None:
    from helpers import plots

    names = index.class_names if (result.labels >= 0).all() else None  # -1: unlabelled items
    fig = plots.plot_query_neighbours(
        images,
        _neighbour_images(index, result, shape),
        result.distances,
        neighbour_labels=result.labels,
        class_names=names,
        title=f"{', '.join(Path(p).name for p in args.image)}: nearest items of {Path(args.index).name}",
    )
    config.save_figure(fig, args.figure)
    plots.plt.close(fig)


def _query(args) -> int:
    # every check on the user's input runs before Keras is imported (its import prints to stderr)
    if args.k < 1:
        raise SearchError(f"-k must be >= 1, got {args.k}.")
    if args.figure and Path(args.figure).suffix.lower() != ".png":
        raise SearchError(f"--figure must be a .png path, got {args.figure}.")
    meta = read_metadata(args.index)
    try:
        count, shape = int(meta["count"]), tuple(meta.get("input_shape") or (28, 28, 1))
    except (KeyError, TypeError, ValueError) as exc:
        raise NotAnIndexError(f"{args.index} has an unreadable metadata.json ({exc}); rebuild it.") from None
    if args.k > count:
        raise SearchError(f"-k {args.k} is larger than the index ({count} items).")
    images = np.stack([read_image(path, size=shape[:2]) for path in args.image])
    index = EmbeddingIndex.load(args.index, cache_dir=args.cache_dir)
    result = index.query(images, args.k)
    if args.figure:
        _save_figure(index, result, images, shape, args)
    if args.json:
        print(json.dumps(_as_json(index, result, args.image, args), indent=2))
    else:
        _print_table(index, result, args.image, args.k)
        if args.figure:
            print(f"figure: {args.figure}")
    return 0


# --- entry point ---------------------------------------------------------------------------------------


def exit_status(exc: Exception) -> int | None:
    """1 for a failure, 2 for a usage error, None for an exception that is a bug (re-raised)."""
    if isinstance(exc, (NotAnIndexError, ModelMismatchError, ModelNotCachedError)):
        return 1
    training, data = sys.modules.get("helpers.training"), sys.modules.get("helpers.data")
    if training is not None and isinstance(exc, training.CacheError):
        return 1
    if data is not None and isinstance(exc, data.DatasetError):
        return 1  # the names are checked by argparse: what is left cannot load the data
    if isinstance(exc, ValueError):  # SearchError on the input, an unknown model name
        return 2
    return None


def main(argv=None) -> int:
    """Entry point of ``python -m helpers.search``; returns the exit status (see the module's help)."""
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, one line printed by _Parser.error)
        return int(exc.code or 0)
    try:
        return _build(args) if args.command == "build" else _query(args)
    except (ValueError, RuntimeError) as exc:
        status = exit_status(exc)
        if status is None:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return status
