"""Figures of notebook 04: learning curves, and the small-multiples grid other topics reuse."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


def plot_history(history: dict, title: str = "", ax=None):
    """Train (``loss``) and validation (``val_loss``) loss curves of one run; returns the Figure."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 4))
    else:
        fig = ax.figure
    for key, label in (("loss", "train"), ("val_loss", "validation")):
        values = history.get(key)
        if values is not None and len(values):
            ax.plot(np.arange(1, len(values) + 1), values, marker="o", markersize=3, label=label)
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    return fig


def plot_histories(histories: dict, cols: int = 3, title: str = "Training curves"):
    """One axes per model (train and validation loss) in a grid; returns the Figure."""
    if not histories:
        raise ValueError("histories is empty; pass {model_name: history_dict}.")
    return small_multiples(
        histories,
        lambda ax, name, history: plot_history(history, title=name, ax=ax),
        cols,
        (5, 3.5),
        title,
    )


def small_multiples(items: dict, draw, cols: int, cell_size, title: str):
    """One axes per ``items`` entry in a grid of ``cols`` columns; ``draw(ax, name, value)``."""
    names = list(items)
    cols = max(1, min(cols, len(names)))
    rows = int(np.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cell_size[0] * cols, cell_size[1] * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        draw(ax, name, items[name])
    for ax in axes.flat[len(names) :]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
