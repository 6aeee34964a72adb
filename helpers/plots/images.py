"""Image grids: rows of images with captions, and queries beside their nearest neighbours."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


def plot_image_rows(rows: dict, title: str = "", cols: int = 8):
    """One row of images per key: ``{row title: (images, captions)}``."""
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.3 * cols, 1.6 * len(rows)), squeeze=False)
    for ax_row, (name, (images, captions)) in zip(axes, rows.items(), strict=True):
        for j, ax in enumerate(ax_row):
            ax.axis("off")
            if j < len(images):
                ax.imshow(np.asarray(images[j]).squeeze(), cmap="gray")
                ax.set_title(captions[j], fontsize=7)
        ax_row[0].text(-0.15, 0.5, name, transform=ax_row[0].transAxes, ha="right", va="center", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_labelled_neighbours(
    query_images,
    query_labels,
    ref_images,
    ref_labels,
    neighbours,
    class_names,
    title: str = "Similar-image search (Siamese embeddings)",
):
    """One row per query: the query, then its nearest references (green title: same class, red: not)."""
    neighbours = np.asarray(neighbours)
    n, k = neighbours.shape
    if len(query_images) != n:
        raise ValueError(f"{len(query_images)} queries but {n} rows of neighbours")
    fig, axes = plt.subplots(n, k + 1, figsize=(1.4 * (k + 1), 1.5 * n), squeeze=False)
    for i in range(n):
        cells = [(query_images[i], f"query\n{class_names[int(query_labels[i])]}", "black")]
        for j in neighbours[i]:
            same = int(ref_labels[j]) == int(query_labels[i])
            cells.append((ref_images[j], class_names[int(ref_labels[j])], "green" if same else "red"))
        for ax, (image, label, color) in zip(axes[i], cells, strict=False):
            ax.imshow(np.asarray(image).squeeze(), cmap="gray")
            ax.set_title(label, fontsize=7, color=color)
            ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
