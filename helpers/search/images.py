"""Image files in and out, as the models saw MNIST: grey, (H, W, 1), float32 in [0, 1]. Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from helpers import config
from helpers.search.errors import SearchError

# ITU-R BT.601 luma, the weights of OpenCV's and Pillow's colour-to-grey conversion
LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _open(path: Path):
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise SearchError(f"image file {path} does not exist.")
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, ValueError):
        raise SearchError(
            f"cannot read image file {path}: not an image Pillow can decode (PNG, JPEG, ...)."
        ) from None
    return img


def _as_float(img) -> tuple[np.ndarray, np.ndarray | None]:
    """``(grey or colour pixels in [0, 1], alpha in [0, 1] or None)`` of a Pillow image."""
    if img.mode == "P":  # a palette: its colours, with the transparency the palette may carry
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode not in ("L", "LA", "RGB", "RGBA", "F") and not img.mode.startswith("I"):
        img = img.convert("RGBA" if "A" in img.mode else "RGB")  # 1-bit, CMYK, YCbCr, ...
    a = np.asarray(img)
    if img.mode.startswith("I"):  # 16-bit grey (I;16) or 32-bit integers holding 16-bit values
        a = a.astype(np.float32) / 65535.0
    elif a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    else:
        a = np.clip(a.astype(np.float32), 0.0, 1.0)
    if a.ndim == 3 and a.shape[2] in (2, 4):
        return a[..., :-1], a[..., -1]
    return a, None


def resize_image(img: np.ndarray, size) -> np.ndarray:
    """Resize a float image to ``size`` (H, W): pixel-area averaging (``BOX``) when shrinking, as
    OpenCV's ``INTER_AREA``; bilinear when enlarging."""
    from PIL import Image

    height, width = int(size[0]), int(size[1])
    if img.shape == (height, width):
        return img
    shrinking = height <= img.shape[0] and width <= img.shape[1]
    resample = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(img).resize((width, height), resample), np.float32)


def read_image(path, size=(28, 28)) -> np.ndarray:
    """Read a PNG/JPEG (any size, grey, colour or with alpha) as the model saw MNIST: (H, W, 1) in [0, 1].

    Steps: Pillow reads the file; 16-bit images are scaled to [0, 1] like 8-bit ones; colour becomes
    grey (BT.601 luma, ``0.299 R + 0.587 G + 0.114 B``); a transparent image is composited over black
    when its opaque pixels are light on average and over white otherwise, so the drawn strokes stay
    visible. The whole image is resized to ``size`` (no cropping, aspect not kept) by pixel-area
    averaging (Pillow's ``BOX`` filter, as OpenCV's ``INTER_AREA``), bilinear when enlarging.
    **A light background is detected by the median of the border pixels** (the outermost row and
    column on each side): above 0.5 means a dark digit on paper, so the image is inverted to a light
    digit on a dark background, as in MNIST.
    """
    img, alpha = _as_float(_open(Path(path)))
    if img.ndim == 3:
        img = img[..., 0] if img.shape[2] == 1 else img[..., :3] @ LUMA
    if alpha is not None and (alpha < 1.0).any():
        opaque = alpha > 0.5
        light_strokes = opaque.any() and float(img[opaque].mean()) > 0.5
        background = 0.0 if light_strokes else 1.0
        img = img * alpha + background * (1.0 - alpha)
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    if float(np.median(border)) > 0.5:
        img = 1.0 - img
    img = resize_image(np.ascontiguousarray(img, dtype=np.float32), size)
    return np.clip(img, 0.0, 1.0).astype(np.float32)[..., None]


def write_image(path, image) -> Path:
    """Write a (H, W[, 1]) image in [0, 1] as an 8-bit grey image (PNG, or by the suffix), atomically."""
    from PIL import Image

    a = np.asarray(image, dtype=np.float32).squeeze()
    a = np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
    path = Path(path)
    with config.atomic_path(path, suffix=path.suffix or ".png") as tmp:
        try:
            Image.fromarray(a).save(tmp)
        except (OSError, ValueError) as exc:
            raise SearchError(f"cannot write image {path} ({exc}).") from None
    config.log_image(path)
    return path
