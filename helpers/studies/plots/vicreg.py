"""Figures of notebook 10 (VICReg): loss terms per batch, PCA / t-SNE side by side, eigenvalue
spectra, anomaly ROC curves, image grids, k-means clusters. The numbers come from ``helpers.studies.vicreg``."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from helpers.plots import plot_latent_space


def plot_batch_terms(terms: dict, title: str = "VICReg loss and its terms, per batch"):
    """One panel per key (loss, invariance, variance, covariance), one line per model:
    ``{model: {"values": {key: [...]}}}`` as ``helpers.studies.vicreg.train_model`` records them."""
    terms = {name: t for name, t in terms.items() if t}
    if not terms:
        raise ValueError("no per-batch terms to plot: every model came from a cache without its log")
    keys = ("loss", "invariance", "variance", "covariance")
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2))
    for ax, key in zip(axes, keys, strict=True):
        for name, t in terms.items():
            values = t["values"].get(key) or []
            ax.plot(np.arange(1, len(values) + 1), values, label=name, linewidth=1.2)
        ax.set_title(key if key == "loss" else f"{key} (unweighted)")
        ax.set_xlabel("batch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_pca_tsne(projections: dict, labels, class_names, title: str = "Test representations in 2-D"):
    """One row per representation: PCA on the left, t-SNE on the right, coloured by class.
    ``projections``: ``{name: {"pca": (n, 2), "tsne": (n, 2)}}``."""
    if not projections:
        raise ValueError("projections is empty; compute them with helpers.studies.vicreg.projections")
    fig, axes = plt.subplots(len(projections), 2, figsize=(11, 4.6 * len(projections)), squeeze=False)
    for i, (name, p) in enumerate(projections.items()):
        for ax, method in zip(axes[i], ("pca", "tsne"), strict=True):
            plot_latent_space(p[method], labels, class_names, title=f"{name}: {method.upper()}", ax=ax)
            if ax.get_legend() is not None and not (i == 0 and method == "tsne"):  # one legend
                ax.get_legend().remove()
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    return fig


def plot_spectra(spectra: dict, title: str = "Eigenvalues of the test representations' covariance"):
    """Eigenvalues (normalised to sum 1, descending, log scale) of each representation."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, eig in spectra.items():
        eig = np.asarray(eig, float)
        share = eig / eig.sum() if eig.sum() > 0 else eig
        ax.semilogy(np.arange(1, len(share) + 1), np.maximum(share, 1e-12), label=name, linewidth=1.3)
    ax.set_xlabel("component")
    ax.set_ylabel("share of the variance")
    ax.set_xscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_anomaly_roc(rocs: dict, title: str = "Anomaly detection: Fashion-MNIST test (normal) vs MNIST"):
    """ROC curves ``{name: {"fpr", "tpr", "auc"}}`` on linear axes, the diagonal for chance."""
    if not rocs:
        raise ValueError("rocs is empty; compute them with helpers.studies.vicreg.anomaly_roc")
    fig, ax = plt.subplots(figsize=(6, 5))
    for name, r in rocs.items():
        ax.plot(r["fpr"], r["tpr"], label=f"{name} (AUC {r['auc']:.3f})", linewidth=1.5)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("false-positive rate (normal images flagged)")
    ax.set_ylabel("true-positive rate (MNIST digits flagged)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def _scatter_with_centroids(ax, points, groups, names, title):
    cmap = plt.get_cmap("tab10")
    for i, g in enumerate(np.unique(groups)):
        mask = groups == g
        ax.scatter(points[mask, 0], points[mask, 1], s=4, alpha=0.6, color=cmap(i % 10), label=names[int(g)])
        c = points[mask].mean(axis=0)
        ax.scatter(*c, marker="X", s=120, color=cmap(i % 10), edgecolor="black", linewidth=1)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(markerscale=3, fontsize=7, loc="best")


def plot_clusters(points, clusters, labels, class_names, name: str = "", scores: dict | None = None):
    """t-SNE of one representation coloured by k-means cluster and by true label, each group's
    centroid (mean of its 2-D points) marked with a cross; ``scores`` (silhouettes) in the titles."""
    points, clusters, labels = np.asarray(points), np.asarray(clusters), np.asarray(labels)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2))
    s = scores or {}
    cluster_title = f"{name}: k-means clusters" + (
        f" (silhouette {s['silhouette_clusters']:.3f})" if "silhouette_clusters" in s else ""
    )
    label_title = f"{name}: true labels" + (
        f" (silhouette {s['silhouette_labels']:.3f})" if "silhouette_labels" in s else ""
    )
    n_clusters = int(clusters.max()) + 1
    _scatter_with_centroids(
        axes[0], points, clusters, [f"cluster {c}" for c in range(n_clusters)], cluster_title
    )
    _scatter_with_centroids(axes[1], points, labels, list(class_names), label_title)
    fig.tight_layout()
    return fig
