"""VICReg's default-profile recipe, chosen on the validation split: encoder, budget, views, rate.

Kept for the record (its question is answered: ``benchmarks/archive/results/vicreg_recipe_search.json``).
In the default profile (3,000 Fashion-MNIST training images, 72 steps of 128) VICReg's 3-NN stayed
below the raw pixels' and its linear probe within noise of a random encoder's. Each run here trains
one VICReg model from scratch (one epoch of ``--steps`` steps, cosine rate, the study's loss and
sampler) and scores its representation on 2,000 **validation** images, never the test split: 3-NN
(Euclidean and cosine), the linear probe, the same-architecture encoder before training, and the
anomaly AUC of MNIST digits that are not the test's anomalies. ``--floors`` scores the raw pixels and
the study's random encoder on the same images. The chosen recipe (``--encoder grid2 --steps 432``)
went into ``helpers.studies.vicreg`` and ``notebooks/profiles.yaml``; the test split reports it
once, in ``benchmarks/results/vicreg.json``. Its probe there was only 0.013 above the random
encoder's; the rows ``grid2_864*`` and ``grid2_432_b256*`` then checked on validation whether twice
the steps or twice the batch widens that margin, and the rows ``*_u12k*`` / ``*_u54k*`` whether
training on more unlabeled images does (``--unlabeled``; the probe and 3-NN still fit on the 3,000
labelled images). None put both margins at 0.02 or more on both seeds; the recipe was kept. The rows
``*_lr2e-3*``, ``*_cov4*``, ``*_inv15*`` (``--weights``), ``*_wd1e-3*`` and ``*_e1024*`` tried the rate,
the loss weights, the weight decay and the expander; the rate 2e-3 met both margins on seeds 0 and 1
but not on seeds 2 and 3 (the rule, fixed before those runs, asked all four), so it was not taken::

    python -m benchmarks.archive.vicreg_recipe_search --floors
    python -m benchmarks.archive.vicreg_recipe_search --encoder grid2 --steps 432 --seed 1
    python -m benchmarks.archive.vicreg_recipe_search --encoder grid2 --steps 432 --unlabeled 54000 --seed 1
    python -m benchmarks.archive.vicreg_recipe_search --encoder grid2 --steps 432 --lr 0.002 --seed 2

Encoders: ``gap`` (three Conv-BN-ReLU stages of 32, 64, 128 filters and global average pooling: the
study's before), ``grid2`` (the last stage 32 filters, 3x3 average pooling with stride 3 to a 2x2
grid, flattened: 128-d), ``grid2p4`` (the same with 4x4 windows, stride 3), ``grid2_64`` (64 filters:
256-d) and ``dense`` (two stages, then a 128-unit Dense-BN-ReLU on the flattened 7x7 map).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.common import ARCHIVE_RESULTS_DIR, git_commit, stamp

OUT = ARCHIVE_RESULTS_DIR / "vicreg_recipe_search.json"
ENCODERS = ("gap", "grid2", "grid2p4", "grid2_64", "dense")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", help="the row's name (default: built from the settings)")
    p.add_argument("--encoder", default="gap", choices=ENCODERS)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--steps", type=int, default=72)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--scale", type=float, nargs=2, default=(0.3, 1.0), help="crop area, low high")
    p.add_argument("--blur", type=float, default=0.5)
    p.add_argument("--bright", type=float, default=0.3)
    p.add_argument("--contrast", type=float, default=0.4)
    p.add_argument("--wd", type=float, default=1e-5, help="AdamW weight decay")
    p.add_argument("--expander", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--weights", type=float, nargs=3, default=(25.0, 25.0, 1.0), metavar=("INV", "VAR", "COV"),
        help="the loss weights λ, μ, ν",
    )  # fmt: skip
    p.add_argument(
        "--unlabeled",
        type=int,
        help="train VICReg on this many unlabeled training images (default: the 3,000 the probe uses)",
    )
    p.add_argument("--floors", action="store_true", help="score the raw pixels and the random encoder")
    p.add_argument("--out", default=str(OUT))
    return p


def _data():
    """Fashion-MNIST (3,000 train, 2,000 validation) and 1,000 MNIST digits the test never sees."""
    from helpers.studies import vicreg as V

    data, digits = V.study_data(dict(train=3000, val=2000, test=300, anomalies=2000), seed=42, verbose=False)
    return data, digits[1000:]  # the study's test anomalies are the first 1,000


def _pool(n: int):
    """``n`` Fashion-MNIST training images (stratified, the same seed); the validation images are
    never among them (the official training split holds them out)."""
    from helpers.studies import vicreg as V

    return V.study_data(dict(train=n, val=2000, test=300, anomalies=0), seed=42, verbose=False)[0]


def _scores(data, digits, embed) -> dict:
    """3-NN (Euclidean, cosine), probe and anomaly AUC of ``embed`` on the validation split."""
    from helpers import evaluation
    from helpers.studies import vicreg as V

    tr, va = embed(data.x_train), embed(data.x_val)

    def knn(a, b):
        return float(evaluation.knn_correct(a, data.y_train, b, data.y_val, k=3).mean())

    def unit(x):
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    out = {"knn": knn(tr, va), "knn_cos": knn(unit(tr), unit(va))}
    out["probe"] = V.linear_probe(tr, data.y_train, va, data.y_val)
    if digits is not None:
        out["auc"] = V.anomaly_roc(V.anomaly_scores(tr, va), V.anomaly_scores(tr, embed(digits)))["auc"]
    return out


def _encoder(kind: str, input_shape=(28, 28, 1)):
    import keras
    from keras import layers

    from helpers.studies import vicreg as V

    if kind in ("gap", "grid2"):  # grid2 is the study's encoder now; gap its former one, rebuilt here
        return V.vicreg_encoder(input_shape) if kind == "grid2" else _gap_encoder(input_shape)
    inputs = keras.Input(input_shape)
    x = inputs
    for i, filters in enumerate((32, 64, {"grid2p4": 32, "grid2_64": 64, "dense": None}[kind]), start=1):
        if filters is None:
            break
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.Activation("relu")(layers.BatchNormalization(momentum=V.BN_MOMENTUM)(x))
        x = layers.MaxPooling2D(2)(x) if i < 3 else x
    if kind == "dense":
        x = layers.Dense(128, use_bias=False)(layers.Flatten()(x))
        x = layers.Activation("relu")(layers.BatchNormalization(momentum=V.BN_MOMENTUM)(x))
    else:
        x = layers.Flatten()(layers.AveragePooling2D(4 if kind == "grid2p4" else 3, strides=3)(x))
    return keras.Model(inputs, x, name="encoder")


def _gap_encoder(input_shape):
    import keras
    from keras import layers

    from helpers.studies import vicreg as V

    inputs = keras.Input(input_shape)
    x = inputs
    for i, filters in enumerate((32, 64, 128), start=1):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.Activation("relu")(layers.BatchNormalization(momentum=V.BN_MOMENTUM)(x))
        x = layers.MaxPooling2D(2)(x) if i < 3 else x
    return keras.Model(inputs, layers.GlobalAveragePooling2D()(x), name="encoder")


def _builder(args):
    """A ``vicreg_net`` builder with this run's views and encoder."""
    import keras
    from keras import layers

    from helpers.studies import vicreg as V

    def build(input_shape=(28, 28, 1), embedding_dim=512):
        inputs = keras.Input(input_shape, name="image")
        views = V.ViewAugment(
            scale=tuple(args.scale),
            blur=args.blur,
            brightness=args.bright,
            contrast=args.contrast,
            name="views",
        )
        x = _encoder(args.encoder, input_shape)(views(inputs))
        for i in (1, 2):
            x = layers.Dense(embedding_dim, use_bias=False, name=f"exp_dense{i}")(x)
            x = layers.Activation("relu")(layers.BatchNormalization(momentum=V.BN_MOMENTUM)(x))
        return keras.Model(inputs, layers.Dense(embedding_dim, name="expander")(x), name="vicreg_net")

    return build


def _train(args, data, digits) -> dict:
    """Train one VICReg model as ``args`` say; its scores before and after training."""
    import keras

    from helpers import evaluation, registry
    from helpers.studies import vicreg as V

    keras.utils.set_random_seed(args.seed)
    fields = dict(learning_rate=args.lr, weight_decay=args.wd, embedding_dim=args.expander)
    fields.update(zip(("inv_weight", "var_weight", "cov_weight"), args.weights, strict=True))
    with registry.spec_override("vicreg", builder=_builder(args), **fields):
        model, embedding = registry.build_training_model("vicreg")
        registry.compile_training_model(model, "vicreg", total_steps=args.steps)
        encoder = embedding.get_layer("encoder")
        row = {"random_same": _scores(data, None, lambda x: evaluation.embed(encoder, x))}
        views = V.positives_dataset(_pool(args.unlabeled) if args.unlabeled else data)
        pairs = V.PositivePairGenerator(
            views.x_train, views.y_train, batch_size=args.batch, steps_per_epoch=args.steps, seed=args.seed
        )
        start = time.perf_counter()
        history = model.fit(pairs, epochs=1, verbose=0)
        row.update(train_s=time.perf_counter() - start, final_loss=float(history.history["loss"][-1]))
    return {**row, **_scores(data, digits, lambda x: evaluation.embed(encoder, x))}


def _floors(data, digits) -> dict:
    from helpers import evaluation
    from helpers.studies import vicreg as V

    encoder = V.random_encoder(0)
    return {
        "raw": _scores(data, digits, V.flat),
        "random": _scores(data, digits, lambda x: evaluation.embed(encoder, x)),
    }


def main(argv=None) -> int:
    import json
    from pathlib import Path

    from helpers import config

    args = _parser().parse_args(argv)
    data, digits = _data()
    row = _floors(data, digits) if args.floors else _train(args, data, digits)
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "name")}
    name = args.name or ("floors" if args.floors else f"{args.encoder}_{args.steps}_s{args.seed}")
    row = {"name": name, "settings": settings, **row, **stamp(), "commit": git_commit()}
    print(json.dumps(row))
    path = Path(args.out)
    rows = json.loads(path.read_text())["rows"] if path.exists() else []
    config.write_json(path, {"what": __doc__.splitlines()[0], "split": "validation", "rows": [*rows, row]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
