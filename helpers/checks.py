"""Input checks shared by ``helpers.data``, ``helpers.samplers`` and ``helpers.evaluation``.

Each check is written once here; the caller names its own exception class and message, so every
module keeps the errors its users (and tests) know. Messages are ``str.format`` templates whose
fields each check documents.

>>> import numpy as np
>>> labels_1d(np.array([[1], [2]]), ValueError, "labels have shape {shape}")
array([1, 2])
"""

from __future__ import annotations

import numpy as np

__all__ = ["labels_1d", "same_length", "nan_pixels", "no_nan_pixels", "finite"]


def labels_1d(labels, error: type[Exception], message: str) -> np.ndarray:
    """``labels`` as a 1-D array; a column ``(n, 1)`` (Keras' CIFAR-10 labels) is flattened.

    Raises ``error(message.format(shape=...))`` for any other shape than ``(n,)`` or ``(n, 1)``.
    """
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise error(message.format(shape=labels.shape))
    return labels


def same_length(n_first: int, n_second: int, error: type[Exception], message: str) -> None:
    """Raise ``error(message.format(first=n_first, second=n_second))`` when the counts differ."""
    if int(n_first) != int(n_second):
        raise error(message.format(first=int(n_first), second=int(n_second)))


def nan_pixels(images: np.ndarray) -> tuple[int, int]:
    """``(NaN values, images holding at least one)`` of a batch of images; ``(0, 0)`` for integers."""
    images = np.asarray(images)
    if not np.issubdtype(images.dtype, np.floating) or len(images) == 0:
        return 0, 0
    nan = np.isnan(images.reshape(len(images), -1))
    return int(nan.sum()), int(nan.any(axis=1).sum())


def no_nan_pixels(images, error: type[Exception], message: str) -> None:
    """Raise ``error(message.format(values=..., images=...))`` when an image holds a NaN pixel."""
    values, bad = nan_pixels(images)
    if values:
        raise error(message.format(values=values, images=bad))


def finite(array: np.ndarray, error: type[Exception], message: str) -> None:
    """Raise ``error(message)`` when ``array`` holds NaN or infinite values."""
    if not np.all(np.isfinite(array)):
        raise error(message)
