"""Figures of notebook 08 (DenseNet on Fashion-MNIST): accuracy curves, the confusion matrix, the
per-class scores, and a query with its nearest neighbours. The t-SNE panels reuse
:func:`helpers.plots.latent_space.plot_latent_grid`."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


def plot_accuracy_history(history: dict, title: str = "DenseNet training"):
    """Train and validation accuracy and loss per epoch of one training record's ``history``."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, metric in zip(axes, ("accuracy", "loss"), strict=False):
        for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
            values = history.get(key)
            if values:
                ax.plot(np.arange(1, len(values) + 1), values, marker="o", markersize=3, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_confusion_matrix(confusion, class_names, title: str = "Confusion matrix (test)"):
    """The confusion matrix as counts, rows = true class, columns = predicted class."""
    cm = np.asarray(confusion)
    if cm.ndim != 2 or cm.shape != (len(class_names), len(class_names)):
        raise ValueError(f"confusion must be ({len(class_names)}, {len(class_names)}), got {cm.shape}")
    fig, ax = plt.subplots(figsize=(7, 6))
    image = ax.imshow(cm, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046)
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    threshold = cm.max() / 2 if cm.size else 0
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(
                j,
                i,
                str(cm[i, j]),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if cm[i, j] > threshold else "black",
            )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_per_class_scores(rows, title: str = "Per-class precision, recall and F1 (test)"):
    """Grouped bars of ``precision``, ``recall`` and ``f1`` for rows ``{"class": ..., ...}``."""
    if not rows:
        raise ValueError("rows is empty; pass densenet_study.classification_report(...)['per_class']")
    names = [r["class"] for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(10, 3.8))
    for offset, key in zip((-0.27, 0.0, 0.27), ("precision", "recall", "f1"), strict=False):
        ax.bar(x + offset, [r[key] for r in rows], width=0.27, label=key)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(ncols=3, loc="lower right")
    ax.set_title(title)
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
