"""Figures of notebook 07: ROC curves, genuine/impostor distances, a query and its nearest matches.

The numbers come from ``helpers.applications``; these functions only draw them.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


def plot_roc_curves(
    curves: dict,
    target_far: float | None = 0.01,
    log_far: bool = True,
    title: str = "Verification ROC (test pairs)",
):
    """All models' ROC curves on one plot: ``{name: (far, tar)}`` or ``{name: (far, tar, auc)}``.

    With ``log_far`` the false-accept axis is logarithmic (the low-FAR end is where a phone unlock
    operates); ``target_far`` draws a vertical line there.
    """
    if not curves:
        raise ValueError("curves is empty; pass {model name: (far, tar[, auc])}.")
    fig, ax = plt.subplots(figsize=(7, 5))
    cmap = plt.get_cmap("tab10" if len(curves) <= 10 else "tab20")
    for i, (name, curve) in enumerate(curves.items()):
        far, tar = np.asarray(curve[0]), np.asarray(curve[1])
        label = f"{name} (AUC {curve[2]:.4f})" if len(curve) > 2 else name
        keep = far > 0 if log_far else slice(None)
        ax.plot(far[keep], tar[keep], label=label, color=cmap(i % cmap.N), linewidth=1.5)
    if target_far is not None:
        ax.axvline(target_far, color="grey", linestyle="--", linewidth=1)
        ax.text(target_far, 0.02, f" FAR {target_far:g}", color="grey", fontsize=8)
    if log_far:
        ax.set_xscale("log")
    ax.set_xlabel("false-accept rate (impostor pairs accepted)")
    ax.set_ylabel("true-accept rate (genuine pairs accepted)")
    ax.set_ylim(0, 1.01)
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def plot_distance_histograms(
    distances, same, threshold: float | None = None, title: str = "", bins: int = 60
):
    """Histograms of genuine and impostor pair distances, with the operating threshold."""
    d = np.asarray(distances, dtype=float)
    s = np.asarray(same, dtype=bool)
    if d.shape != s.shape:
        raise ValueError(f"distances {d.shape} and same {s.shape} must have the same shape.")
    fig, ax = plt.subplots(figsize=(7, 3.5))
    edges = np.linspace(d.min(), d.max(), bins + 1)
    ax.hist(d[s], bins=edges, alpha=0.6, density=True, label="genuine (same class)", color="tab:green")
    ax.hist(d[~s], bins=edges, alpha=0.6, density=True, label="impostor", color="tab:red")
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:.3g}")
    ax.set_xlabel("distance between the two embeddings")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_query_neighbours(
    query_images,
    neighbour_images,
    distances,
    query_labels=None,
    neighbour_labels=None,
    class_names=None,
    title: str = "",
):
    """One row per query: the query, then its nearest matches with their distances.

    ``query_images`` (q, H, W[, C]); ``neighbour_images`` (q, k, H, W[, C]); ``distances`` (q, k).
    A neighbour whose label differs from the query's is titled in red.
    """
    queries = np.asarray(query_images)
    neighbours = np.asarray(neighbour_images)
    distances = np.asarray(distances)
    if neighbours.ndim < 4 or len(neighbours) != len(queries) or distances.shape != neighbours.shape[:2]:
        raise ValueError(
            f"need query_images (q, H, W[, C]), neighbour_images (q, k, H, W[, C]) and distances (q, k); "
            f"got {queries.shape}, {neighbours.shape} and {distances.shape}."
        )
    q, k = distances.shape
    name = (lambda c: class_names[int(c)]) if class_names is not None else str
    fig, axes = plt.subplots(q, k + 1, figsize=(1.6 * (k + 1), 1.8 * q + 0.4), squeeze=False)
    for row in range(q):
        ax = axes[row, 0]
        ax.imshow(np.squeeze(queries[row]), cmap="gray")
        ax.set_title(
            "query" + (f"\n{name(query_labels[row])}" if query_labels is not None else ""), fontsize=8
        )
        for col in range(k):
            ax = axes[row, col + 1]
            ax.imshow(np.squeeze(neighbours[row, col]), cmap="gray")
            text = f"#{col + 1}  d={distances[row, col]:.3g}"
            colour = "black"
            if neighbour_labels is not None:
                text += f"\n{name(neighbour_labels[row][col])}"
                if query_labels is not None and neighbour_labels[row][col] != query_labels[row]:
                    colour = "red"
            ax.set_title(text, fontsize=8, color=colour)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    for row in range(q):
        for spine in axes[row, 0].spines.values():
            spine.set_edgecolor("tab:blue")
            spine.set_linewidth(2)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
