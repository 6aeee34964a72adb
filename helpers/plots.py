"""Every figure of the suite. Each function returns a matplotlib Figure; ``save_figure`` writes it.

Functions compute nothing beyond what they draw: metrics come from ``helpers.evaluation``.
"""

from __future__ import annotations

import matplotlib

if matplotlib.get_backend().lower() not in {"module://matplotlib_inline.backend_inline", "agg"}:
    # headless runs (papermill, CI) have no display; Jupyter keeps its inline backend
    try:
        matplotlib.use("Agg")
    except Exception:  # pragma: no cover - backend already fixed by the host
        pass

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from helpers.config import save_figure  # noqa: E402,F401  (re-exported for notebooks)

# --- section: data (helpers.data) -------------------------------------------------------------
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
    for ax, idx in zip(axes.flat, picks):
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
        frames.append(pd.DataFrame({"class": np.asarray(dataset.class_names, dtype=object)[y], "split": split}))
    frame = pd.concat(frames, ignore_index=True)
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(dataset.class_names)), 4))
    sns.countplot(data=frame, x="class", hue="split", order=list(dataset.class_names),
                  hue_order=["train", "val", "test"], ax=ax)
    ax.set_title(f"{dataset.name}: images per class and split (source={dataset.source})")
    ax.set_xlabel("")
    ax.set_ylabel("images")
    ax.legend(title="split", bbox_to_anchor=(1.01, 1), loc="upper left")
    ax.tick_params(axis="x", labelrotation=45)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    fig.tight_layout()
    return fig


# --- section: generators (helpers.generators) -------------------------------------------------
def _gen_as_image(img):
    img = np.asarray(img)
    return img[..., 0] if img.ndim == 3 and img.shape[-1] == 1 else img


def _gen_class_name(class_names, c):
    try:
        return str(class_names[int(c)])
    except (TypeError, IndexError, KeyError, ValueError):
        return str(c)


def _gen_draw_cell(ax, img, title, color="black"):
    img = _gen_as_image(img)
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0.0, vmax=1.0)
    ax.set_title(title, fontsize=8, color=color)
    ax.set_xticks([])
    ax.set_yticks([])


def _gen_batch_and_classes(source, batch_index, classes, k):
    """``(images tuple, targets, per-image class ids or None)`` from a generator or a ready batch."""
    if hasattr(source, "batch_indices") and hasattr(source, "__getitem__"):
        images, targets = source[batch_index]
        idx = source.batch_indices(batch_index)
        classes = [source.y[i] for i in idx[:k]]
        return images, targets, classes
    images, targets = source
    return images, targets, classes


def plot_pairs(generator_or_batch, class_names, n=8, batch_index=0, pair_classes=None):
    """Image pairs of a :class:`helpers.generators.SiamesePairGenerator` batch: two rows, one pair a column.

    ``generator_or_batch``: the generator (classes read through ``batch_indices``) or a batch
    ``((x0, x1), y)`` with ``pair_classes=(classes0, classes1)``. Each column is titled
    Similar/Different; each image with its class name.
    """
    (x0, x1), sim, classes = _gen_batch_and_classes(generator_or_batch, batch_index, pair_classes, 2)
    n = min(n, len(x0))
    fig, axes = plt.subplots(2, n, figsize=(1.4 * n, 4.0), squeeze=False)
    for j in range(n):
        similar = bool(np.asarray(sim)[j] > 0.5)
        for r, imgs in enumerate((x0, x1)):
            name = _gen_class_name(class_names, classes[r][j]) if classes is not None else ""
            title = (("Similar" if similar else "Different") + "\n" + name) if r == 0 else name
            _gen_draw_cell(axes[r, j], imgs[j], title, "tab:green" if similar else "tab:red")
    fig.suptitle("Pairs, one per column: similar (green) and different (red)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_triplets(generator_or_batch, class_names, n=8, batch_index=0, triplet_classes=None, show_anchor_label=False):
    """Triplets of a :class:`helpers.generators.TripletGenerator` batch: rows = triplets, columns =
    anchor / positive / negative, each image titled with its class name.

    ``generator_or_batch``: the generator or a batch ``((a, p, n), targets)`` with
    ``triplet_classes=(classes_a, classes_p, classes_n)``.
    """
    (a, p, ng), targets, classes = _gen_batch_and_classes(generator_or_batch, batch_index, triplet_classes, 3)
    n = min(n, len(a))
    fig, axes = plt.subplots(n, 3, figsize=(4.6, 1.5 * n), squeeze=False)
    anchor_labels = None
    if show_anchor_label and isinstance(targets, (tuple, list)) and len(targets) == 2:
        anchor_labels = np.asarray(targets[1])
    for i in range(n):
        for j, (role, imgs) in enumerate((("anchor", a), ("positive", p), ("negative", ng))):
            name = _gen_class_name(class_names, classes[j][i]) if classes is not None else ""
            title = f"{role}: {name}" if i == 0 else name
            if j == 0 and anchor_labels is not None:
                title += f"\n[label {int(anchor_labels[i])}: {_gen_class_name(class_names, anchor_labels[i])}]"
            _gen_draw_cell(axes[i, j], imgs[i], title, "tab:red" if j == 2 else "black")
    fig.tight_layout()
    return fig


def plot_triplets_cls(generator_or_batch, class_names, n=8, batch_index=0, triplet_classes=None):
    """:func:`plot_triplets` for a :class:`helpers.generators.TripletClsGenerator`: the anchor also shows
    the class label the classification head is trained on (the batch target ``y_anchor``)."""
    fig = plot_triplets(generator_or_batch, class_names, n, batch_index, triplet_classes, show_anchor_label=True)
    fig.suptitle("Triplets with the anchor's class label", fontsize=10)
    fig.tight_layout()
    return fig


# --- section: training (helpers.training) -----------------------------------------------------
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
    return _small_multiples(
        histories, lambda ax, name, history: plot_history(history, title=name, ax=ax),
        cols, (5, 3.5), title,
    )


def _small_multiples(items: dict, draw, cols: int, cell_size, title: str):
    """One axes per ``items`` entry in a grid of ``cols`` columns; ``draw(ax, name, value)``."""
    names = list(items)
    cols = max(1, min(cols, len(names)))
    rows = int(np.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cell_size[0] * cols, cell_size[1] * rows),
                             squeeze=False)
    for ax, name in zip(axes.flat, names):
        draw(ax, name, items[name])
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


# --- section: evaluation (helpers.evaluation) -------------------------------------------------
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
        ax.scatter(points_2d[mask, 0], points_2d[mask, 1], s=4, alpha=0.7,
                   color=cmap(i % cmap.N), label=name)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(markerscale=3, fontsize=8, loc="best", frameon=True)
    return fig


def plot_latent_grid(
    projections: dict, class_names=None, cols: int = 3, title: str = "Latent spaces"
):
    """Grid of :func:`plot_latent_space`, one per model: ``{name: (points_2d, labels)}``."""
    if not projections:
        raise ValueError("projections is empty; pass {model_name: (points_2d, labels)}.")
    return _small_multiples(
        projections,
        lambda ax, name, value: plot_latent_space(value[0], value[1], class_names, title=name, ax=ax),
        cols, (5.5, 5), title,
    )


def plot_metric_bars(df, metrics=("3nn_accuracy", "silhouette", "map_at_r", "precision_at_1"),
                     model_col: str = "model", title: str = "Model comparison"):
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
        ax.bar(x + (i - (len(models) - 1) / 2) * width, values, width,
               label=str(row[model_col]), color=cmap(i % cmap.N))
    ax.set_xticks(x)
    ax.set_xticklabels(metrics)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig


# --- section: explanation (helpers.explain) ---------------------------------------------------
def _image_grid(images, cols, cmap="viridis", title=None, normalise=True):
    """Draw a list of 2-D (or RGB) arrays in a grid with ``cols`` columns."""
    n = len(images)
    cols = max(1, min(cols, n))
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.0, rows * 1.0 + (0.4 if title else 0)),
                             squeeze=False)
    for ax, img in zip(axes.flat, images):
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

