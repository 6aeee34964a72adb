"""Tests of helpers.explain with tiny models built here (no training)."""

import keras
import numpy as np
import pytest

from helpers import explain
from helpers.explain import ExplainError, UnsupportedBackendError


def flat_model(activation=None):
    """Input (8, 8, 1) -> conv 4 (same) -> conv 6 (valid) -> GAP -> dense 3."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", activation=activation, name="c0")(inp)
    x = keras.layers.Conv2D(6, 3, activation=activation, name="c1")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(3)(x), name="flat")


def nested_model():
    """Rescaling, then a functional sub-model holding the convs, then a third conv outside."""
    keras.utils.set_random_seed(1)
    sub_in = keras.Input((8, 8, 1))
    y = keras.layers.Conv2D(4, 3, padding="same", name="s0")(sub_in)
    y = keras.layers.Conv2D(5, 3, name="s1")(y)
    sub = keras.Model(sub_in, y, name="backbone")
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Rescaling(2.0, offset=-1.0)(inp)
    x = sub(x)
    x = keras.layers.Conv2D(2, 1, name="head_conv")(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inp, keras.layers.Dense(3)(x), name="nested"), sub


def image(seed=0):
    return np.random.default_rng(seed).random((8, 8, 1)).astype(np.float32)


def test_conv_layers_flat_and_nested():
    assert [layer.name for layer in explain.conv_layers(flat_model())] == ["c0", "c1"]
    model, _ = nested_model()
    assert [layer.name for layer in explain.conv_layers(model)] == ["s0", "s1", "head_conv"]


def test_feature_maps_flat_match_conv_outputs():
    model = flat_model()
    assert explain._graph_extractor(model, explain.conv_layers(model)) is not None  # graph path
    maps = explain.feature_maps(model, image())
    assert [m.shape for m in maps] == [(8, 8, 4), (6, 6, 6)]
    # reference: apply the conv layers by hand
    c0, c1 = explain.conv_layers(model)
    a0 = keras.ops.convert_to_numpy(c0(image()[None]))
    a1 = keras.ops.convert_to_numpy(c1(a0))
    np.testing.assert_allclose(maps[0], a0[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(maps[1], a1[0], rtol=1e-5, atol=1e-6)


def test_feature_maps_nested_submodel():
    model, sub = nested_model()
    maps = explain.feature_maps(model, image())
    assert [m.shape for m in maps] == [(8, 8, 4), (6, 6, 5), (6, 6, 2)]
    # reference: the sub-model's own graph on the rescaled image
    s0, s1, head = explain.conv_layers(model)
    x = image()[None] * 2.0 - 1.0
    ref0 = keras.Model(sub.input, s0.output)(x)
    ref1 = sub(x)
    ref2 = head(ref1)
    for got, ref in zip(maps, (ref0, ref1, ref2), strict=False):
        np.testing.assert_allclose(got, keras.ops.convert_to_numpy(ref)[0], rtol=1e-5, atol=1e-5)
    assert explain._graph_extractor(model, explain.conv_layers(model)) is None  # hook path used
    # the temporary hooks are gone: `call` is the class method again
    assert all("call" not in vars(layer) for layer in explain.conv_layers(model))


@pytest.mark.parametrize("with_input", [True, False])
def test_feature_maps_sequential(with_input):
    keras.utils.set_random_seed(0)
    layers = [keras.layers.Conv2D(3, 3, name="q0"), keras.layers.Conv2D(2, 3, name="q1")]
    if with_input:
        model = keras.Sequential([keras.Input((8, 8, 1)), *layers])
    else:  # built by a call, no symbolic inputs: the hook path handles it
        model = keras.Sequential(layers)
        model(np.zeros((1, 8, 8, 1), dtype=np.float32))
    maps = explain.feature_maps(model, image())
    assert [m.shape for m in maps] == [(6, 6, 3), (4, 4, 2)]
    ref = keras.ops.convert_to_numpy(model(image()[None]))[0]
    np.testing.assert_allclose(maps[1], ref, rtol=1e-5, atol=1e-6)


def test_feature_maps_errors():
    inp = keras.Input((4,))
    dense = keras.Model(inp, keras.layers.Dense(2)(inp))
    with pytest.raises(ExplainError, match="no Conv2D"):
        explain.feature_maps(dense, np.zeros((4,)))
    with pytest.raises(ExplainError, match="one image"):
        explain.feature_maps(flat_model(), np.zeros((2, 8, 8, 1)))


def test_save_feature_maps_file_names(tmp_path):
    model, _ = nested_model()
    images = np.stack([image(s) for s in range(3)])
    paths = explain.save_feature_maps(model, "tiny", images, out_dir=tmp_path)
    expected = []
    for trial in (1, 2, 3):
        expected.append(tmp_path / f"Trial {trial}" / "input_image.png")
        expected += [tmp_path / f"Trial {trial}" / "tiny" / f"kernel no {i} Output.png" for i in range(3)]
    assert paths == expected
    assert all(p.is_file() and p.stat().st_size > 0 for p in expected)


def mean_activation(model, layer_index, images, filters):
    acts = [explain.feature_maps(model, img)[layer_index] for img in images]
    return np.array([a[..., f].mean() for a, f in zip(acts, filters, strict=False)])


@pytest.mark.parametrize("nested", [False, True])
def test_gradient_ascent_increases_target_activation(nested):
    model = nested_model()[0] if nested else flat_model()
    filters = [0, 2, 3]
    before = explain.filter_images(model, 1, filters, steps=0, seed=3)
    after = explain.filter_images(model, 1, filters, steps=10, step_size=0.5, seed=3)
    assert before.shape == after.shape == (3, 8, 8, 1)
    a0 = mean_activation(model, 1, before, filters)
    a1 = mean_activation(model, 1, after, filters)
    assert np.all(a1 > a0 + 1e-3), (a0, a1)


def test_filter_images_layer_selection_and_errors():
    model = flat_model()
    by_name = explain.filter_images(model, "c0", [1], steps=2)
    by_obj = explain.filter_images(model, explain.conv_layers(model)[0], [1], steps=2)
    np.testing.assert_allclose(by_name, by_obj)
    assert explain.filter_images(model, 0, steps=1).shape == (4, 8, 8, 1)  # all filters
    with pytest.raises(ExplainError, match="filters"):
        explain.filter_images(model, 0, [7])
    with pytest.raises(ExplainError, match="no Conv2D layer named"):
        explain.filter_images(model, "nope")


def test_save_filter_images_file_names(tmp_path):
    model = flat_model()
    paths = explain.save_filter_images(model, "tiny", out_dir=tmp_path, filters_per_layer=3, steps=2)
    base = tmp_path / "Intermediate Kernels" / "tiny"
    assert paths == [base / "layer no 0 kernel weights.png", base / "layer no 1 kernel weights.png"]
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)


def test_value_and_grad_shim_current_backend():
    # f(x) = sum(x^2) -> grad 2x
    x = np.array([[1.0, -2.0, 3.0]], dtype=np.float32)
    value, grad = explain._value_and_grad(lambda t: keras.ops.sum(t * t), x)
    assert value == pytest.approx(14.0)
    np.testing.assert_allclose(grad, 2 * x)


def test_value_and_grad_shim_rejects_unsupported_backend(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    with pytest.raises(UnsupportedBackendError, match="'torch'.*KERAS_BACKEND"):
        explain._value_and_grad(lambda t: t, np.zeros(2, dtype=np.float32))
    assert issubclass(UnsupportedBackendError, ValueError)


def test_plot_feature_maps_grid():
    from helpers import plots

    maps = np.random.default_rng(0).random((6, 6, 20)) * 5 + 3  # not in [0, 1]: each tile is rescaled
    fig = plots.plot_feature_maps(maps, cols=16)
    (ax,) = fig.axes
    (image,) = ax.images
    assert image.get_cmap().name.startswith("viridis")
    shown = image.get_array()
    # 2 rows x 16 columns of 6x6 tiles with 1-pixel gaps
    assert shown.shape == (2 * 7 - 1, 16 * 7 - 1)
    for channel in (0, 15, 16, 19):
        r, c = divmod(channel, 16)
        tile = np.asarray(shown[r * 7 : r * 7 + 6, c * 7 : c * 7 + 6])
        expected = (maps[..., channel] - maps[..., channel].min()) / np.ptp(maps[..., channel])
        np.testing.assert_allclose(tile, expected, atol=1e-6)
    # the gaps and the 12 empty cells of the last row are masked (drawn blank)
    assert shown.mask[6, :].all() and shown.mask[:, 6].all()
    assert shown.mask[7:, 4 * 7 :].all() and not shown.mask[7:, 3 * 7 : 3 * 7 + 6].any()
    plots.plt.close(fig)


def test_tile_mosaic_rejects_mixed_shapes_and_keeps_rgb():
    from helpers.plots import explain as plot_explain

    with pytest.raises(ValueError, match="one shape"):
        plot_explain.tile_mosaic([np.zeros((4, 4)), np.zeros((5, 4))], cols=2)
    with pytest.raises(ValueError, match="at least one"):
        plot_explain.tile_mosaic([], cols=2)
    rgb = np.random.default_rng(1).random((3, 5, 5, 3))
    canvas = plot_explain.tile_mosaic(list(rgb), cols=2, normalise=False)
    assert canvas.shape == (2 * 6 - 1, 2 * 6 - 1, 3)
    np.testing.assert_allclose(canvas[6:, 6:], 1.0)  # the empty cell is white
    np.testing.assert_allclose(canvas[:5, 6:], rgb[1], atol=1e-6)


def pointwise_model():
    """A 1x1 conv: each activation pixel sees one input pixel, so the loss region is exact."""
    keras.utils.set_random_seed(2)
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(3, 1, name="p0")(inp)
    return keras.Model(inp, keras.layers.GlobalAveragePooling2D()(x), name="pointwise")


def test_filter_loss_covers_the_interior_only_so_the_border_stays_put():
    model = pointwise_model()
    start = explain.filter_images(model, 0, [0, 1], steps=0, seed=5)
    after = explain.filter_images(model, 0, [0, 1], steps=3, seed=5, border=2, jitter=0)
    changed = np.abs(after - start)[..., 0] > 1e-6  # (2, 8, 8)
    inside = np.zeros((8, 8), bool)
    inside[2:6, 2:6] = True
    assert changed[:, inside].all() and not changed[:, ~inside].any()
    # border=0 is the old whole-map loss: every pixel moves
    assert (
        np.abs(explain.filter_images(model, 0, [0], steps=1, seed=5, border=0, jitter=0) - start[:1]) > 1e-6
    ).all()
    # the default leaves a tenth of the map (at least one pixel) out
    assert [explain._interior_border(n, None) for n in (4, 5, 8, 28)] == [0, 1, 1, 3]


def test_jitter_is_seeded_and_still_climbs():
    model = flat_model()
    a = explain.filter_images(model, 1, [0, 2], steps=6, seed=3, jitter=1)
    np.testing.assert_array_equal(a, explain.filter_images(model, 1, [0, 2], steps=6, seed=3, jitter=1))
    assert not np.allclose(a, explain.filter_images(model, 1, [0, 2], steps=6, seed=3, jitter=0))
    with pytest.raises(ExplainError, match="jitter must be >= 0"):
        explain.filter_images(model, 1, [0], jitter=-1)


def test_deprocess_image_centres_scales_clips_and_crops():
    ramp = np.linspace(-3, 5, 10 * 10, dtype=np.float32).reshape(10, 10, 1)
    out = explain.deprocess_image(np.stack([ramp, 2 * ramp]), crop=0)
    assert out.shape == (2, 10, 10, 1) and out.min() >= 0 and out.max() <= 1
    # a linear ramp standardised to std 0.15 around 0.5: nothing is clipped, scale does not matter
    np.testing.assert_allclose(out[0].mean(), 0.5, atol=1e-6)
    np.testing.assert_allclose(out[0].std(), 0.15, atol=1e-4)
    np.testing.assert_allclose(out[0], out[1], atol=1e-5)
    assert explain.deprocess_image(ramp).shape == (8, 8, 1)  # default crop: a tenth, 1 pixel
    with pytest.raises(ExplainError, match="leaves no pixel"):
        explain.deprocess_image(ramp, crop=5)
