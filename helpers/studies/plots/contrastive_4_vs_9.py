"""Figures of notebook 09: 2-D embeddings of 4 vs 9 coloured by digit and by shift, and the
separation table as bars (the numbers come from ``helpers.studies.contrastive_4_vs_9.separation_metrics``)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


def _scatter(ax, points, groups, names, title, cmap="tab10"):
    points, groups = np.asarray(points), np.asarray(groups)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) != len(groups):
        raise ValueError(
            f"points must be (n, 2) with one group per point, got {points.shape} and "
            f"{groups.shape}; the study's embeddings are 2-D."
        )
    colours = plt.get_cmap(cmap)
    for i, (g, name) in enumerate(names.items()):
        mask = groups == g
        if mask.any():
            ax.scatter(
                points[mask, 0], points[mask, 1], s=5, alpha=0.6, color=colours(i % colours.N), label=name
            )
    ax.set_title(title, fontsize=10)
    ax.legend(markerscale=3, fontsize=7, loc="best", frameon=True)


def plot_shift_views(views: dict, class_names=("4", "9"), title: str = ""):
    """One row of five panels for one model's ``embedding_views``: train and test coloured by digit,
    the shifted test digits coloured by digit and by shift, and only the ±largest shifts coloured by
    the four target groups (4-6, 4+6, 9-6, 9+6)."""
    e_tr, y_tr, _ = views["train"]
    e_te, y_te, _ = views["test"]
    e_sh, y_sh, s_sh = views["test_shifted"]
    digits = {i: name for i, name in enumerate(class_names)}
    shifts = {int(s): f"{int(s):+d} px" if s else "0 px" for s in np.unique(s_sh)}
    far = int(np.abs(s_sh).max())
    keep = np.abs(s_sh) == far
    four = {int(c) * 100 + s: f"{class_names[int(c)]}{s:+d}" for c in np.unique(y_sh) for s in (-far, far)}
    fig, axes = plt.subplots(1, 5, figsize=(22, 4.4))
    _scatter(axes[0], e_tr, y_tr, digits, "train, by digit")
    _scatter(axes[1], e_te, y_te, digits, "test, by digit")
    _scatter(axes[2], e_sh, y_sh, digits, "test shifted (0, ±3, ±6), by digit")
    _scatter(axes[3], e_sh, s_sh, shifts, "test shifted, by shift")
    _scatter(axes[4], e_sh[keep], y_sh[keep] * 100 + s_sh[keep], four, f"test ±{far} px: the four groups")
    if title:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    return fig


def plot_separation_bars(
    rows,
    metrics=("knn_shifted", "knn_shifted_loo", "sil_shifted", "shift_sil_6", "four_cluster_sil"),
    title: str = "Digit and shift separation",
):
    """Grouped bars of ``metrics`` for each row ``{"model": ..., metric: value}``."""
    rows = list(rows)
    if not rows:
        raise ValueError("rows is empty; pass one dict of separation metrics per model.")
    names = [r["model"] for r in rows]
    fig, ax = plt.subplots(figsize=(min(14, 3 + 1.2 * len(rows)), 4))
    width = 0.8 / len(metrics)
    x = np.arange(len(rows))
    for j, m in enumerate(metrics):
        ax.bar(x + j * width - 0.4 + width / 2, [r[m] for r in rows], width, label=m)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(x, names, rotation=25, ha="right", fontsize=8)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
