"""Figures of notebook 06: feature maps and filter images (helpers.explain)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

GAP = 1  # pixels of white between the tiles of a grid


def grid_shape(n: int, cols: int) -> tuple[int, int]:
    """``(rows, cols)`` of a grid of ``n`` tiles with at most ``cols`` per row."""
    cols = max(1, min(cols, n))
    return int(np.ceil(n / cols)), cols


def tile_mosaic(images, cols: int, normalise: bool = True) -> np.ndarray:
    """The 2-D (or RGB) arrays ``images`` laid out in one array, ``cols`` tiles per row.

    Each tile is scaled to [0, 1] on its own when ``normalise``. The :data:`GAP`-pixel gaps and the
    empty cells of the last row are NaN (1.0, white, for RGB tiles), so a colormap can show them blank.
    """
    tiles = [np.asarray(img, dtype=np.float32) for img in images]
    if not tiles:
        raise ValueError("no images to lay out: pass at least one 2-D (or RGB) array.")
    shape = tiles[0].shape
    if any(t.shape != shape for t in tiles) or len(shape) not in (2, 3):
        raise ValueError(
            f"images must all be 2-D (or RGB) arrays of one shape, got {[t.shape for t in tiles]}."
        )
    rows, cols = grid_shape(len(tiles), cols)
    h, w = shape[:2]
    canvas = np.full((rows * (h + GAP) - GAP, cols * (w + GAP) - GAP, *shape[2:]), np.nan, np.float32)
    for k, tile in enumerate(tiles):
        if normalise:
            lo, hi = float(tile.min()), float(tile.max())
            tile = (tile - lo) / (hi - lo) if hi > lo else np.zeros_like(tile)
        r, c = divmod(k, cols)
        canvas[r * (h + GAP) : r * (h + GAP) + h, c * (w + GAP) : c * (w + GAP) + w] = tile
    if canvas.ndim == 3:  # imshow does not mask NaN in RGB images
        canvas = np.nan_to_num(canvas, nan=1.0)
    return canvas


def _image_grid(images, cols, cmap="viridis", title=None, normalise=True):
    """Draw a list of 2-D (or RGB) arrays in a grid with ``cols`` columns.

    One image on one axes (:func:`tile_mosaic`), not an axes per tile: a layer's 256 feature maps
    drew in seconds as 256 subplots, and notebook 06 draws dozens of such grids.
    """
    canvas = tile_mosaic(images, cols, normalise=normalise)
    rows, cols = grid_shape(len(images), cols)
    fig, ax = plt.subplots(figsize=(cols * 1.0, rows * 1.0 + (0.4 if title else 0)))
    if canvas.ndim == 2:
        colormap = plt.get_cmap(cmap).with_extremes(bad="white")
        limits = {"vmin": 0.0, "vmax": 1.0} if normalise else {}
        ax.imshow(np.ma.masked_invalid(canvas), cmap=colormap, interpolation="nearest", **limits)
    else:
        ax.imshow(np.clip(canvas, 0, 1), interpolation="nearest")
    ax.axis("off")
    if title:
        fig.suptitle(title)
    return fig


def plot_feature_maps(maps, cols: int = 16, title=None):
    """Every channel of one conv layer's output ``(h, w, channels)`` as a viridis grid."""
    maps = np.asarray(maps)
    if maps.ndim == 4 and maps.shape[0] == 1:
        maps = maps[0]
    if maps.ndim != 3:
        raise ValueError(f"maps must be one layer's output (h, w, channels), got {maps.shape}.")
    return _image_grid([maps[..., c] for c in range(maps.shape[-1])], cols, title=title)


def plot_filter_images(images, cols: int = 16, title=None):
    """Gradient-ascent filter images ``(n, H, W, C)``: viridis for 1 channel, RGB for 3."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be (n, H, W, C), got {images.shape}.")
    if images.shape[-1] == 3:
        tiles = list(images)
    elif images.shape[-1] == 1:
        tiles = list(images[..., 0])
    else:
        tiles = list(images.mean(axis=-1))
    return _image_grid(tiles, cols, title=title)


def plot_input_image(image, title=None):
    """One input image (gray for 1 channel, RGB for 3)."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    fig, ax = plt.subplots(figsize=(3, 3))
    ax.imshow(np.clip(image, 0, 1), cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1)
    ax.axis("off")
    if title:
        ax.set_title(title)
    return fig
