"""On-device augmentation: the same geometry as the numpy Augmenter, only while training."""

import numpy as np
import pytest
from keras import ops

from helpers.augment import NUMPY_OPS, DeviceAugment, bilinear_sample, rotation_shift_transforms
from helpers.registry import MODELS, ModelSpec, build_training_model


def _numpy_warp(images, theta, dy, dx):
    # the Augmenter's inverse map, written out for fixed parameters
    b, h, w, _ = images.shape
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    oy, ox = yy[None] - cy - dy[:, None, None], xx[None] - cx - dx[:, None, None]
    return bilinear_sample(images, cos * oy - sin * ox + cy, sin * oy + cos * ox + cx, xp=NUMPY_OPS)


def test_transforms_reproduce_the_numpy_warp():
    rng = np.random.default_rng(0)
    images = rng.random((4, 28, 28, 1)).astype(np.float32)
    theta = np.deg2rad(np.array([0.0, 10.0, -7.5, 3.0], np.float32))
    dy = np.array([0.0, 1.5, -2.0, 0.25], np.float32)
    dx = np.array([0.0, -1.0, 2.0, 1.75], np.float32)
    transforms = rotation_shift_transforms(
        ops.convert_to_tensor(theta), ops.convert_to_tensor(dy), ops.convert_to_tensor(dx), 28, 28
    )
    device = ops.convert_to_numpy(
        ops.image.affine_transform(
            images, transforms, interpolation="bilinear", fill_mode="constant", data_format="channels_last"
        )
    )
    host = _numpy_warp(images, theta, dy, dx)
    np.testing.assert_allclose(device[0], images[0], atol=1e-5)  # identity transform
    # inside the image the two bilinear warps agree (they differ only in how the border is filled)
    np.testing.assert_allclose(device[:, 3:-3, 3:-3], host[:, 3:-3, 3:-3], atol=1e-4)


def test_device_augment_only_while_training():
    images = np.random.default_rng(1).random((8, 28, 28, 1)).astype(np.float32)
    layer = DeviceAugment(seed=0)
    np.testing.assert_array_equal(ops.convert_to_numpy(layer(images, training=False)), images)
    out = ops.convert_to_numpy(layer(images, training=True))
    assert out.shape == images.shape and out.min() >= 0.0 and out.max() <= 1.0
    assert np.abs(out - images).mean() > 0.01
    again = ops.convert_to_numpy(layer(images, training=True))
    assert not np.allclose(out, again)  # a fresh draw each call


def test_augment_mode_is_validated_and_device_mode_wraps_the_training_model():
    import dataclasses

    with pytest.raises(ValueError, match="augment must be"):
        dataclasses.replace(MODELS["cnn_simple_v1"], augment="gpu")
    spec = dataclasses.replace(MODELS["cnn_simple_v1"], augment="device")
    assert isinstance(spec, ModelSpec) and not spec.augment_on_host
    assert MODELS["cnn_simple_v1"].augment_on_host
    MODELS["cnn_simple_v1"] = spec
    try:
        model, embedding = build_training_model("cnn_simple_v1")
    finally:
        MODELS["cnn_simple_v1"] = dataclasses.replace(spec, augment=True)
    assert any(isinstance(layer, DeviceAugment) for layer in model.layers)
    assert not any(isinstance(layer, DeviceAugment) for layer in embedding.layers)


def test_train_can_move_augmentation_to_the_device_and_keeps_one_cache_entry(tmp_path):
    from helpers.data import load_dataset
    from helpers.training import train

    data = load_dataset("mnist", source="bundled", verbose=False)
    budget = {"epochs": 1, "steps_per_epoch": 2, "batch_size": 40, "cache_dir": tmp_path, "verbose": 0}
    with pytest.raises(ValueError, match="augment must be 'host', 'device' or None"):
        train("cnn_simple_v1", data, augment="gpu", **budget)
    _, first = train("cnn_simple_v1", data, augment="device", **budget)
    assert not first["from_cache"]
    assert MODELS["cnn_simple_v1"].augment is True  # the registry entry is restored
    _, again = train("cnn_simple_v1", data, **budget)  # host augmentation: the same cache entry
    assert again["from_cache"] and again["fingerprint"] == first["fingerprint"]


def test_device_elastic_field_matches_the_host_augmenter():
    from helpers.augment import Augmenter

    img = np.zeros((256, 28, 28, 1), np.float32)
    img[:, 8:20, 13:15] = 1.0
    # a vanishing field: the map_coordinates path reproduces the affine path of the same draws
    tiny, affine = DeviceAugment(2, 10, 0, elastic=1e-6, seed=3), DeviceAugment(2, 10, 0, seed=3)
    np.testing.assert_allclose(
        ops.convert_to_numpy(tiny(img[:8], training=True)),
        ops.convert_to_numpy(affine(img[:8], training=True)),
        atol=1e-4,
    )
    # the same field size moves the bar as much on the device as on the host (other random numbers)
    device = ops.convert_to_numpy(DeviceAugment(0, 0, 0, elastic=1.5, seed=0)(img, training=True))
    host = Augmenter(0, 0, 0, elastic=1.5)(img, np.random.default_rng(0))
    change_device, change_host = np.abs(device - img).mean(), np.abs(host - img).mean()
    assert change_device > 0.005 and abs(change_device - change_host) < 0.2 * change_host
    assert DeviceAugment(elastic=1.5).get_config()["elastic"] == 1.5


def test_the_bilinear_sampler_gives_the_same_on_keras_ops_and_numpy_and_trains_in_a_traced_graph():
    import keras

    rng = np.random.default_rng(2)
    images = rng.random((3, 9, 9, 2)).astype(np.float32)
    sy, sx = rng.uniform(-3, 11, size=(2, 3, 9, 9)).astype(np.float32)
    device = ops.convert_to_numpy(
        bilinear_sample(ops.convert_to_tensor(images), ops.convert_to_tensor(sy), ops.convert_to_tensor(sx))
    )
    host = bilinear_sample(images, sy, sx, xp=NUMPY_OPS)
    assert isinstance(host, np.ndarray) and host.dtype == np.float32
    np.testing.assert_allclose(device, host, atol=1e-6)
    # the elastic path inside fit(): the batch size is unknown while the step is traced
    inputs = keras.Input((28, 28, 1))
    warped = DeviceAugment(2, 10, 0.05, elastic=1.0, seed=0)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(warped)))
    model.compile("adam", "mse")
    history = model.fit(rng.random((40, 28, 28, 1)), np.zeros((40, 1)), batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
