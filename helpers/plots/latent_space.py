"""Figures of notebook 05: 2-D projections of embeddings and metric bars (helpers.evaluation)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from helpers.plots.training import small_multiples


def plot_latent_space(points_2d, labels, class_names=None, title: str = "", ax=None):
    """2-D scatter of projected embeddings coloured by class (tab10) with a class legend."""
    points_2d = np.asarray(points_2d)
    labels = np.asarray(labels)
    if points_2d.ndim != 2 or points_2d.shape[1] != 2 or len(points_2d) != len(labels):
        raise ValueError(
            f"points_2d must be (n, 2) with one label per point, got {points_2d.shape} and "
            f"{labels.shape}; project with helpers.evaluation.project_2d first."
        )
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 6))
    else:
        fig = ax.figure
    cmap = plt.get_cmap("tab10" if len(np.unique(labels)) <= 10 else "tab20")
    for i, cls in enumerate(np.unique(labels)):
        mask = labels == cls
        name = class_names[int(cls)] if class_names is not None else str(cls)
        ax.scatter(points_2d[mask, 0], points_2d[mask, 1], s=4, alpha=0.7, color=cmap(i % cmap.N), label=name)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(markerscale=3, fontsize=8, loc="best", frameon=True)
    return fig


def plot_latent_grid(projections: dict, class_names=None, cols: int = 3, title: str = "Latent spaces"):
    """Grid of :func:`plot_latent_space`, one per model: ``{name: (points_2d, labels)}``."""
    if not projections:
        raise ValueError("projections is empty; pass {model_name: (points_2d, labels)}.")
    return small_multiples(
        projections,
        lambda ax, name, value: plot_latent_space(value[0], value[1], class_names, title=name, ax=ax),
        cols,
        (5.5, 5),
        title,
    )


def plot_metric_bars(
    df,
    metrics=("3nn_accuracy", "silhouette", "map_at_r", "precision_at_1"),
    model_col: str = "model",
    title: str = "Model comparison",
):
    """Grouped bar chart: one group per metric, one bar per model (rows of ``df``)."""
    metrics = [m for m in metrics if m in df.columns]
    if not metrics:
        raise ValueError(f"none of the metrics are columns of df (columns: {list(df.columns)}).")
    models = list(df[model_col])
    width = 0.8 / max(1, len(models))
    x = np.arange(len(metrics))
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(metrics) + 0.3 * len(models)), 4.5))
    cmap = plt.get_cmap("tab10" if len(models) <= 10 else "tab20")
    for i, (_, row) in enumerate(df.iterrows()):
        values = [float(row[m]) for m in metrics]
        ax.bar(
            x + (i - (len(models) - 1) / 2) * width,
            values,
            width,
            label=str(row[model_col]),
            color=cmap(i % cmap.N),
        )
    ax.set_xticks(x)
    ax.set_xticklabels(metrics)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig
