"""Figures of notebook 02: pairs, triplets and triplets with class labels (helpers.samplers)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


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
    """Image pairs of a :class:`helpers.samplers.SiamesePairGenerator` batch: two rows, one pair a column.

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


def plot_triplets(
    generator_or_batch, class_names, n=8, batch_index=0, triplet_classes=None, show_anchor_label=False
):
    """Triplets of a :class:`helpers.samplers.TripletGenerator` batch: rows = triplets, columns =
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
                title += (
                    f"\n[label {int(anchor_labels[i])}: {_gen_class_name(class_names, anchor_labels[i])}]"
                )
            _gen_draw_cell(axes[i, j], imgs[i], title, "tab:red" if j == 2 else "black")
    fig.tight_layout()
    return fig


def plot_triplets_cls(generator_or_batch, class_names, n=8, batch_index=0, triplet_classes=None):
    """:func:`plot_triplets` for a :class:`helpers.samplers.TripletClsGenerator`: the anchor also shows
    the class label the classification head is trained on (the batch target ``y_anchor``)."""
    fig = plot_triplets(
        generator_or_batch, class_names, n, batch_index, triplet_classes, show_anchor_label=True
    )
    fig.suptitle("Triplets with the anchor's class label", fontsize=10)
    fig.tight_layout()
    return fig
