"""Figures of notebook 01: sample grids and class counts (helpers.data)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


def plot_sample_grid(images, labels, class_names, rows: int = 5, cols: int = 10, seed: int = 0):
    """A ``rows x cols`` grid of random images (drawn with ``seed``), each titled with its class name."""
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim not in (3, 4) or len(images) != len(labels) or len(images) == 0:
        raise ValueError(
            f"images must be (n, H, W[, C]) with one label per image, got {images.shape} and {labels.shape}."
        )
    n = min(rows * cols, len(images))
    picks = np.random.default_rng(seed).choice(len(images), size=n, replace=False)
    fig, axes = plt.subplots(rows, cols, figsize=(1.2 * cols, 1.35 * rows), squeeze=False)
    for ax, idx in zip(axes.flat, picks, strict=False):
        img = images[idx]
        if img.ndim == 3 and img.shape[-1] == 1:
            img = img[..., 0]
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
        ax.set_title(str(class_names[int(labels[idx])]), fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_class_counts(dataset):
    """Seaborn countplot of the classes of each split (``hue="split"``) with readable class names."""
    import pandas as pd
    import seaborn as sns

    frames = []
    for split in ("train", "val", "test"):
        y = np.asarray(getattr(dataset, f"y_{split}"))
        frames.append(
            pd.DataFrame({"class": np.asarray(dataset.class_names, dtype=object)[y], "split": split})
        )
    frame = pd.concat(frames, ignore_index=True)
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(dataset.class_names)), 4))
    sns.countplot(
        data=frame,
        x="class",
        hue="split",
        order=list(dataset.class_names),
        hue_order=["train", "val", "test"],
        ax=ax,
    )
    ax.set_title(f"{dataset.name}: images per class and split (source={dataset.source})")
    ax.set_xlabel("")
    ax.set_ylabel("images")
    ax.legend(title="split", bbox_to_anchor=(1.01, 1), loc="upper left")
    ax.tick_params(axis="x", labelrotation=45)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    fig.tight_layout()
    return fig
