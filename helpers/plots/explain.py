"""Figures of notebook 06: feature maps and filter images (helpers.explain)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


def _image_grid(images, cols, cmap="viridis", title=None, normalise=True):
    """Draw a list of 2-D (or RGB) arrays in a grid with ``cols`` columns."""
    n = len(images)
    cols = max(1, min(cols, n))
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(
        rows, cols, figsize=(cols * 1.0, rows * 1.0 + (0.4 if title else 0)), squeeze=False
    )
    for ax, img in zip(axes.flat, images, strict=False):
        img = np.asarray(img, dtype=np.float32)
        if normalise:
            lo, hi = float(img.min()), float(img.max())
            img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
        ax.imshow(img, cmap=None if img.ndim == 3 else cmap)
    for ax in axes.flat:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
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
