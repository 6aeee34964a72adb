"""TensorBoard Embedding Projector files of an index: look at the stored vectors in 3-D.

``write_projector(index, folder)`` writes ``vectors.tsv`` (one vector a row, no header),
``metadata.tsv`` (a header ``id  label  class``, then one row per vector), ``sprite.png`` (the
items' images in a square grid, when they are known) and ``projector_config.pbtxt``. Then::

    tensorboard --logdir FOLDER    # the Projector tab
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from helpers import config
from helpers.search.errors import SearchError
from helpers.search.images import write_image

SPRITE_MAX = 8192  # the Projector's largest sprite image, pixels per side


def _clean(text) -> str:
    return " ".join(str(text).split())  # a tab or a newline would break the TSV


def _write_text(path: Path, lines) -> None:
    with config.atomic_path(path, suffix=".tsv" if path.suffix == ".tsv" else ".pbtxt") as tmp:
        tmp.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def sprite(images, size: int) -> np.ndarray:
    """The images (n, H, W[, 1]) resized to ``size`` pixels and tiled row by row in a square grid."""
    from helpers.search.images import resize_image

    n = len(images)
    side = math.ceil(math.sqrt(n))
    if side * size > SPRITE_MAX:
        fits = SPRITE_MAX // side
        raise SearchError(
            f"{n} images of {size} pixels make a sprite wider than {SPRITE_MAX}; pass sprite_size <= {fits}."
        )
    grid = np.zeros((side * size, side * size), np.float32)
    for i, image in enumerate(images):
        tile = resize_image(np.ascontiguousarray(np.asarray(image, np.float32).squeeze()), (size, size))
        row, col = divmod(i, side)
        grid[row * size : (row + 1) * size, col * size : (col + 1) * size] = tile
    return grid


def _source_images(index):
    """The items' images when the index was built from a dataset split with integer ids, else None."""
    src = index.source
    if not src or index.ids.dtype.kind == "U":
        return None
    from helpers.data import load_dataset

    data = load_dataset(
        src["dataset"], source=src.get("source", "auto"), seed=src.get("seed", 42), verbose=False
    )
    return data.split(src["split"])[0][index.ids]


def _config_text(name: str, sprite_size: int | None) -> list[str]:
    lines = ["embeddings {", f'  tensor_name: "{name}"', '  tensor_path: "vectors.tsv"']
    lines.append('  metadata_path: "metadata.tsv"')
    if sprite_size:
        lines += ["  sprite {", '    image_path: "sprite.png"']
        lines += [f"    single_image_dim: {sprite_size}"] * 2 + ["  }"]
    return [*lines, "}"]


def write_projector(index, folder, images=None, *, sprite_size: int = 28) -> Path:
    """Write the Projector files of ``index`` (an ``EmbeddingIndex``) to ``folder``; return it.

    ``images`` (one per stored item, in order) make the sprite; by default they are read back from
    the dataset split the index was built from (``python -m helpers.search build``), and without
    either the Projector shows points only.
    """
    if len(index) == 0:
        raise SearchError("the index is empty; add items before writing Projector files.")
    images = _source_images(index) if images is None else np.asarray(images)
    if images is not None and len(images) != len(index):
        raise SearchError(f"pass one image per stored item: {len(images)} images for {len(index)} items.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _write_text(folder / "vectors.tsv", ("\t".join(f"{v:.7g}" for v in row) for row in index.vectors))
    rows = zip(index.ids, index.labels, strict=True)
    meta = (f"{_clean(i)}\t{label}\t{_clean(index.class_name(int(label)))}" for i, label in rows)
    _write_text(folder / "metadata.tsv", ["id\tlabel\tclass", *meta])
    if images is not None:
        write_image(folder / "sprite.png", sprite(images, sprite_size))
    name = _clean(index.model.name if index.model else "embeddings")
    _write_text(
        folder / "projector_config.pbtxt", _config_text(name, sprite_size if images is not None else None)
    )
    return folder
