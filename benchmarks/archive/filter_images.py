"""Filter images before / after the Keras-example technique: how much of each image is a frame.

    python -m benchmarks.archive.filter_images [--model cnn_simple_v1] [--layer -1] [--filters 16] [--steps 20]

Trains (or loads from the cache) the model at its registry budget on the embedded MNIST, then
draws the first ``--filters`` filters of one conv layer twice with the same seed and steps:

- before: the mean activation over the whole map, no jitter, shown raw (what notebook 06 did);
- after: the mean over the interior of the map, 1-pixel jitter, shown through ``deprocess_image``.

The figure printed is the *frame share*: the part of an image's deviation from its mean that lies in
its outer 2-pixel ring (27% of a 28x28 image's pixels; higher means a frame). Writes
``docs/filter_images/{before,after}.png`` and ``benchmarks/archive/results/filter_images.json``.
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks.common import ARCHIVE_RESULTS_DIR, print_table, stamp
from helpers import config, explain, plots
from helpers.data import load_dataset
from helpers.training import train

OUT = config.ROOT / "docs" / "filter_images"


def frame_share(images: np.ndarray, ring: int = 2) -> np.ndarray:
    """Per image: sum of |x - mean| over the outer ``ring`` pixels / the sum over all pixels."""
    dev = np.abs(images - images.mean(axis=(1, 2, 3), keepdims=True)).sum(axis=-1)
    inner = dev[:, ring:-ring, ring:-ring].sum(axis=(1, 2))
    total = dev.sum(axis=(1, 2))
    return (total - inner) / np.maximum(total, 1e-12)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn_simple_v1")
    parser.add_argument("--layer", type=int, default=-1, help="conv layer index (default: the last)")
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)

    data = load_dataset("mnist", source="bundled", verbose=False)
    embedding, _ = train(args.model, data)
    layer = explain.conv_layers(embedding)[args.layer]
    filters = range(min(args.filters, int(layer.filters)))
    before = explain.filter_images(
        embedding, layer, filters, steps=args.steps, seed=args.seed, border=0, jitter=0
    )
    after = explain.filter_images(embedding, layer, filters, steps=args.steps, seed=args.seed)
    title = f"{args.model} - conv layer {args.layer % len(explain.conv_layers(embedding))}"
    for name, images in (("before", before), ("after", explain.deprocess_image(after))):
        fig = plots.plot_filter_images(images, cols=8, title=f"{title} ({name})")
        config.save_figure(fig, OUT / f"{name}.png", dpi=60)
        plots.plt.close(fig)

    rows = [
        {
            "images": name,
            "frame share mean": float(frame_share(images).mean()),
            "frame share max": float(frame_share(images).max()),
        }
        for name, images in (("before (whole map, no jitter)", before), ("after (interior, jitter 1)", after))
    ]
    print_table(rows, ["images", "frame share mean", "frame share max"])
    config.write_json(
        ARCHIVE_RESULTS_DIR / "filter_images.json",
        {
            **stamp(),
            "model": args.model,
            "layer": args.layer,
            "filters": len(filters),
            "steps": args.steps,
            "seed": args.seed,
            "ring_pixels": 2,
            "ring_area_share": 1 - 24 * 24 / (28 * 28),
            "rows": rows,
            "images": [str((OUT / f"{n}.png").relative_to(config.ROOT)) for n in ("before", "after")],
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
