"""Model explanation: Conv2D feature maps and filter visualisation by gradient ascent.

Everything is backend-agnostic Keras 3 except :func:`_value_and_grad`, the one clearly marked
backend shim (TensorFlow ``GradientTape`` / JAX ``jax.value_and_grad``) that gradient ascent
needs because Keras 3 has no backend-neutral autodiff API.

Layer outputs are read in one of two ways:

* **graph** - when every Conv2D layer is a direct member of the model's own functional graph
  (the usual case) a feature model ``keras.Model(model.inputs, [layer.output, ...])`` is built;
* **hooks** - otherwise (convs inside nested sub-models, subclassed models), each conv layer's
  ``call`` is wrapped for the duration of one forward pass to record its output. This works for
  any nesting depth, under ``tf.GradientTape`` and under ``jax`` tracing. A layer called
  several times in one pass records its first call. Not thread-safe for the same model.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import keras
import numpy as np

from helpers import config

__all__ = [
    "ExplainError",
    "UnsupportedBackendError",
    "conv_layers",
    "feature_maps",
    "save_feature_maps",
    "filter_images",
    "deprocess_image",
    "save_filter_images",
]


class ExplainError(ValueError):
    """Raised for invalid inputs to the explanation functions."""


class UnsupportedBackendError(ExplainError, NotImplementedError):
    """Raised when gradient ascent runs on a Keras backend without a gradient shim."""


# --------------------------------------------------------------------------------------------
# finding conv layers
# --------------------------------------------------------------------------------------------


def _children(layer) -> list:
    if isinstance(layer, keras.Model):
        return list(layer.layers)
    return list(getattr(layer, "_layers", []) or [])


def conv_layers(model) -> list:
    """All ``keras.layers.Conv2D`` layers of ``model`` in order, searching nested models/layers.

    Order is the model's layer order (topological for functional models), depth first into
    sub-models. A layer shared in several places is listed once.
    """
    found, seen = [], set()

    def walk(layer):
        for child in _children(layer):
            if id(child) in seen:
                continue
            seen.add(id(child))
            if isinstance(child, keras.layers.Conv2D):
                found.append(child)
            else:
                walk(child)

    walk(model)
    return found


# --------------------------------------------------------------------------------------------
# reading layer outputs
# --------------------------------------------------------------------------------------------


def _graph_extractor(model, layers):
    """``keras.Model(model.inputs, outputs)`` when all ``layers`` are direct graph members."""
    direct = {id(layer) for layer in getattr(model, "layers", [])}
    if not all(id(layer) in direct for layer in layers):
        return None
    try:
        inputs = model.inputs
        if not inputs:
            return None
        inputs = inputs[0] if len(inputs) == 1 else inputs  # match a single-input call
        return keras.Model(inputs, [layer.output for layer in layers])
    except (AttributeError, ValueError):  # unbuilt Sequential / subclassed model
        return None


def _recorder(original, key, records):
    def wrapper(*args, **kwargs):
        out = original(*args, **kwargs)
        records.setdefault(key, out)
        return out

    return wrapper


@contextlib.contextmanager
def _recording(layers):
    """Temporarily wrap each layer's ``call`` to record its first output of the pass."""
    records: dict[int, object] = {}
    patched = []
    try:
        for layer in layers:
            # bypass Keras attribute tracking: a plain instance attribute shadowing the method
            object.__setattr__(layer, "call", _recorder(layer.call, id(layer), records))
            patched.append(layer)
        yield records
    finally:
        for layer in patched:
            object.__delattr__(layer, "call")


def _output_fn(model, layers):
    """Return ``fn(x) -> list of backend tensors``, the outputs of ``layers`` for input ``x``."""
    extractor = _graph_extractor(model, layers)
    if extractor is not None:

        def fn(x):
            out = extractor(x, training=False)
            return list(out) if isinstance(out, (list, tuple)) else [out]

        return fn

    def fn(x):
        with _recording(layers) as records:
            model(x, training=False)
        missing = [layer.name for layer in layers if id(layer) not in records]
        if missing:
            raise ExplainError(
                f"layers {missing} were not called by the model's forward pass; "
                "pass the model that contains them."
            )
        return [records[id(layer)] for layer in layers]

    return fn


def _image_batch(image, model=None) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[0] != 1:
        raise ExplainError(f"expected one image (H, W, C) or (1, H, W, C), got shape {image.shape}.")
    return image


def feature_maps(model, image) -> list[np.ndarray]:
    """Outputs of every Conv2D layer of ``model`` (see :func:`conv_layers`) for one image.

    Parameters
    ----------
    model : keras.Model
        Single-input image model (e.g. the embedding network), possibly with nested sub-models.
    image : array-like of shape (H, W, C), (H, W) or (1, H, W, C)

    Returns
    -------
    maps : list of ndarray of shape (h, w, filters), float32, one per conv layer in order.
    """
    layers = conv_layers(model)
    if not layers:
        raise ExplainError(f"model {model.name!r} has no Conv2D layer to explain.")
    x = _image_batch(image)
    outputs = _output_fn(model, layers)(x)
    return [np.asarray(keras.ops.convert_to_numpy(o), dtype=np.float32)[0] for o in outputs]


def save_feature_maps(model, model_name: str, images, out_dir=None, cols: int = 16) -> list[Path]:
    """Save the input and every conv layer's feature-map grid for each image.

    Writes ``<out_dir>/Trial <n>/input_image.png`` and
    ``<out_dir>/Trial <n>/<model_name>/kernel no <i> Output.png`` (``n`` = 1, 2, ... per image,
    ``i`` = 0-based conv-layer index).

    Returns
    -------
    paths : list of Path, in write order.
    """
    from helpers import plots

    out_dir = Path(config.MODELS_EXPLAIN if out_dir is None else out_dir)
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or len(images) == 0:
        raise ExplainError(f"images must be (n, H, W, C) with n >= 1, got shape {images.shape}.")
    paths = []
    for trial, image in enumerate(images, start=1):
        trial_dir = out_dir / f"Trial {trial}"
        fig = plots.plot_input_image(image)
        paths.append(config.save_figure(fig, trial_dir / "input_image.png"))
        plots.plt.close(fig)
        for i, fmap in enumerate(feature_maps(model, image)):
            fig = plots.plot_feature_maps(fmap, cols=cols)
            path = trial_dir / model_name / f"kernel no {i} Output.png"
            paths.append(config.save_figure(fig, path))
            plots.plt.close(fig)
    return paths


# --------------------------------------------------------------------------------------------
# BACKEND SHIM: the only backend-specific code of this module
# --------------------------------------------------------------------------------------------


def _value_and_grad(fn, x: np.ndarray):
    """Value and gradient of the scalar ``fn(x)`` with respect to ``x``.

    TensorFlow: ``tf.GradientTape``; JAX: ``jax.value_and_grad``. Selected by
    ``keras.backend.backend()``; other backends raise :class:`UnsupportedBackendError`.

    Returns
    -------
    value : float
    grad : ndarray, same shape as ``x``
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        xt = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            value = fn(xt)
        grad = tape.gradient(value, xt)
        return float(value.numpy()), np.asarray(grad.numpy())
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        value, grad = jax.value_and_grad(fn)(jnp.asarray(x))
        return float(value), np.asarray(grad)
    raise UnsupportedBackendError(
        f"gradient ascent needs autodiff, implemented for the 'tensorflow' and 'jax' Keras "
        f"backends only, but the backend is {backend!r}; set KERAS_BACKEND=tensorflow or jax."
    )


# --------------------------------------------------------------------------------------------
# filter visualisation by gradient ascent
# --------------------------------------------------------------------------------------------


def _input_shape(model) -> tuple:
    try:
        shape = tuple(model.inputs[0].shape[1:])
    except (AttributeError, IndexError, TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or any(d is None for d in shape):
        raise ExplainError(
            "cannot read a fixed (H, W, C) input shape from the model; build it with "
            "keras.Input(shape=(H, W, C))."
        )
    return shape


def _initial_images(shape, n: int, seed: int) -> np.ndarray:
    """Gray images (0.5) with small uniform noise, one per filter."""
    rng = np.random.default_rng(seed)
    return (0.5 + rng.uniform(-0.1, 0.1, size=(n, *shape))).astype(np.float32)


def _interior_border(size: int, border: int | None) -> int:
    """The rows/columns left out on each side of a ``size``-wide activation map."""
    if border is None:  # about a tenth of the map, at least one pixel, when the map is big enough
        border = max(1, round(size * 0.1)) if size >= 5 else 0
    return border if size - 2 * border >= 1 else 0


def _resolve_layer(model, layer):
    layers = conv_layers(model)
    if isinstance(layer, (int, np.integer)):
        if not -len(layers) <= layer < len(layers):
            raise ExplainError(f"conv layer index {layer} out of range ({len(layers)} convs).")
        return layers[layer]
    if isinstance(layer, str):
        named = [lyr for lyr in layers if lyr.name == layer]
        if not named:
            raise ExplainError(f"no Conv2D layer named {layer!r}; have {[lyr.name for lyr in layers]}.")
        return named[0]
    if not any(layer is lyr for lyr in layers):
        raise ExplainError(f"layer {getattr(layer, 'name', layer)!r} is not a Conv2D of the model.")
    return layer


def filter_images(
    model,
    layer,
    filters=None,
    steps: int = 20,
    step_size: float = 1.0,
    seed: int = 0,
    border: int | None = None,
    jitter: int = 1,
) -> np.ndarray:
    """Inputs maximising each selected filter's activation, by gradient ascent.

    The technique of the Keras example "Visualizing what convnets learn": the loss is the mean
    activation of the filter over the *interior* of its map (``border`` rows and columns left out
    on each side; by default a tenth of the map), so the zero padding along the image border cannot
    win the ascent and draw a frame; each step shifts the images by a random ``jitter`` of up to
    that many pixels (rolled back after), which favours patterns over single-pixel noise; each
    image's gradient is L2-normalised before the step ``x += step_size * g / ||g||``. All selected
    filters are optimised together as one batch (image ``j`` for filter ``filters[j]``; the loss is
    the sum over the batch, so each image's gradient only involves its own filter). Starts from
    gray (0.5) plus uniform noise in [-0.1, 0.1].

    Parameters
    ----------
    model : keras.Model
        Single-input image model with a known input shape.
    layer : keras.layers.Conv2D or int or str
        Conv layer (object, index into :func:`conv_layers`, or name).
    filters : sequence of int, optional
        Filter indices; default all filters of the layer.
    steps : int, default=20
    step_size : float, default=1.0
    seed : int, default=0
        Seeds the starting noise and the jitter.
    border : int, optional
        Activation rows/columns left out of the loss on each side (0: the whole map).
    jitter : int, default=1
        Largest random shift in pixels per step (0: none).

    Returns
    -------
    images : ndarray of shape (len(filters), H, W, C), float32 (not clipped; see
        :func:`deprocess_image` to show them).
    """
    layer = _resolve_layer(model, layer)
    n_filters = int(layer.filters)
    filters = list(range(n_filters)) if filters is None else [int(f) for f in filters]
    if not filters or any(not 0 <= f < n_filters for f in filters):
        raise ExplainError(f"filters must be non-empty indices in [0, {n_filters}), got {filters}.")
    if steps < 0:
        raise ExplainError(f"steps must be >= 0, got {steps}.")
    if jitter < 0 or (border is not None and border < 0):
        raise ExplainError(f"border and jitter must be >= 0, got border={border}, jitter={jitter}.")

    x = _initial_images(_input_shape(model), len(filters), seed)
    rng = np.random.default_rng(seed + 1)
    out_fn = _output_fn(model, [layer])
    # one-hot (batch, filters) selector: image j -> its own filter
    selector = np.zeros((len(filters), n_filters), dtype=np.float32)
    selector[np.arange(len(filters)), filters] = 1.0

    def loss_fn(images):
        act = out_fn(images)[0]  # (batch, h, w, n_filters)
        bh, bw = _interior_border(act.shape[1], border), _interior_border(act.shape[2], border)
        interior = act[:, bh : act.shape[1] - bh, bw : act.shape[2] - bw, :]
        per_filter = keras.ops.mean(interior, axis=(1, 2))  # (batch, n_filters)
        return keras.ops.sum(per_filter * selector)

    for _ in range(steps):
        shift = tuple(int(s) for s in rng.integers(-jitter, jitter + 1, size=2)) if jitter else (0, 0)
        _, grad = _value_and_grad(loss_fn, np.roll(x, shift, axis=(1, 2)))
        grad = np.roll(grad, (-shift[0], -shift[1]), axis=(1, 2))
        norm = np.sqrt(np.sum(grad**2, axis=(1, 2, 3), keepdims=True)) + 1e-8
        x = (x + step_size * grad / norm).astype(np.float32)
    return x


def deprocess_image(images, crop: int | None = None) -> np.ndarray:
    """Filter images ready to show, as in the Keras example: each image centred, scaled to a standard
    deviation of 0.15 around 0.5 and clipped to [0, 1], with ``crop`` pixels (default: a tenth of
    the side) cut from each border, where the ascent barely reaches.

    ``images``: ``(n, H, W, C)`` or ``(H, W, C)``; returns float32 of the same rank.
    """
    images = np.asarray(images, dtype=np.float32)
    single = images.ndim == 3
    batch = images[None] if single else images
    if batch.ndim != 4:
        raise ExplainError(f"images must be (n, H, W, C) or (H, W, C), got shape {images.shape}.")
    crop = max(1, round(batch.shape[1] * 0.1)) if crop is None else int(crop)
    if crop < 0 or min(batch.shape[1:3]) - 2 * crop < 1:
        raise ExplainError(f"crop={crop} leaves no pixel of {batch.shape[1]}x{batch.shape[2]} images.")
    mean = batch.mean(axis=(1, 2, 3), keepdims=True)
    std = batch.std(axis=(1, 2, 3), keepdims=True)
    out = np.clip((batch - mean) / (std + 1e-5) * 0.15 + 0.5, 0.0, 1.0)
    out = out[:, crop : out.shape[1] - crop, crop : out.shape[2] - crop, :].astype(np.float32)
    return out[0] if single else out


def save_filter_images(
    model,
    model_name: str,
    out_dir=None,
    filters_per_layer: int = 16,
    steps: int = 20,
    step_size: float = 1.0,
    seed: int = 0,
    cols: int = 16,
) -> list[Path]:
    """Save gradient-ascent filter images of the first ``filters_per_layer`` filters per conv.

    Writes ``<out_dir>/Intermediate Kernels/<model_name>/layer no <i> kernel weights.png``
    (``i`` = 0-based conv-layer index; grid, viridis), each image passed through
    :func:`deprocess_image`.

    Returns
    -------
    paths : list of Path, one per conv layer.
    """
    from helpers import plots

    out_dir = Path(config.MODELS_EXPLAIN if out_dir is None else out_dir)
    layers = conv_layers(model)
    if not layers:
        raise ExplainError(f"model {model.name!r} has no Conv2D layer to explain.")
    paths = []
    for i, layer in enumerate(layers):
        filters = range(min(filters_per_layer, int(layer.filters)))
        images = filter_images(model, layer, filters, steps=steps, step_size=step_size, seed=seed)
        fig = plots.plot_filter_images(
            deprocess_image(images), cols=cols, title=f"{model_name} - conv layer {i}"
        )
        path = out_dir / "Intermediate Kernels" / model_name / f"layer no {i} kernel weights.png"
        paths.append(config.save_figure(fig, path))
        plots.plt.close(fig)
    return paths
