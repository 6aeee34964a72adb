"""Figures of notebook 08 (the DenseNet study, :mod:`helpers.studies.densenet_fashion_mnist`): accuracy
curves, the confusion matrix and the per-class scores. The t-SNE panels reuse
:func:`helpers.plots.plot_latent_grid`, the neighbours :func:`helpers.plots.plot_labelled_neighbours`."""

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
