"""Backend independence: the suite trains on JAX as on TensorFlow, and weights cross between them.

The tests run in TensorFlow (the default backend); the JAX side runs in a subprocess with
``KERAS_BACKEND=jax`` (JAX's CPU build: the same code path a GPU machine with JAX takes).
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from helpers import losses as L
from helpers.data import load_dataset
from helpers.registry import MODELS
from helpers.training import load_embedding, train

pytest.importorskip("jax")
ROOT = Path(__file__).resolve().parents[1]
TINY = dict(epochs=1, steps_per_epoch=1, batch_size=8)


def run_on_jax(code: str, tmp_path: Path) -> dict:
    """Run ``code`` under the JAX backend; it must print one JSON line last."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_losses_agree_between_tensorflow_and_jax(tmp_path):
    rng = np.random.default_rng(0)
    a, p, n = (rng.normal(size=(6, 4)).astype("float32") for _ in range(3))
    labels = np.array([0, 0, 1, 1, 2, 2])
    y = np.array([1, 0, 1, 0, 1, 0], "float32")
    np.savez(tmp_path / "inputs.npz", a=a, p=p, n=n, labels=labels, y=y)
    expected = {
        "contrastive": L.contrastive(a, p, y, margin=2.0),
        "triplet": L.triplet(a, p, n, margin=1.0),
        "triplet_l2_norm_safe": L.triplet_l2_norm_safe(a, p, n, margin=1.0),
        "triplet_center_reg": L.triplet_center_reg(a, p, n),
        "batch_hard": L.batch_hard_triplet(labels, a, margin=0.5),
        "batch_semi_hard": L.batch_semi_hard_triplet(labels, a, margin=0.5),
        "batch_contrastive": L.batch_contrastive(labels, a, margin=2.0),
    }
    got = run_on_jax(
        """
        import json, numpy as np, keras
        from helpers import losses as L
        d = np.load("inputs.npz")
        a, p, n, labels, y = d["a"], d["p"], d["n"], d["labels"], d["y"]
        out = {
            "backend": keras.backend.backend(),
            "contrastive": L.contrastive(a, p, y, margin=2.0),
            "triplet": L.triplet(a, p, n, margin=1.0),
            "triplet_l2_norm_safe": L.triplet_l2_norm_safe(a, p, n, margin=1.0),
            "triplet_center_reg": L.triplet_center_reg(a, p, n),
            "batch_hard": L.batch_hard_triplet(labels, a, margin=0.5),
            "batch_semi_hard": L.batch_semi_hard_triplet(labels, a, margin=0.5),
            "batch_contrastive": L.batch_contrastive(labels, a, margin=2.0),
        }
        print(json.dumps({k: (v if isinstance(v, str) else np.asarray(v).tolist()) for k, v in out.items()}))
    """,
        tmp_path,
    )
    assert got.pop("backend") == "jax"
    for name, value in expected.items():
        np.testing.assert_allclose(
            got[name], keras.ops.convert_to_numpy(value), rtol=1e-5, atol=1e-6, err_msg=name
        )


@pytest.mark.slow
def test_every_model_trains_on_jax_and_its_weights_load_on_tensorflow(tmp_path):
    """Train all six on JAX (one step), load the weights on TensorFlow: same embeddings to 1e-4.

    Then the other way: weights trained on TensorFlow give the same embeddings on JAX.
    """
    data = load_dataset("mnist", source="bundled", verbose=False)
    np.save(tmp_path / "x.npy", data.x_test[:32])
    got = run_on_jax(
        f"""
        import json, numpy as np, keras
        from helpers.data import load_dataset
        from helpers.registry import MODELS
        from helpers.training import train
        data = load_dataset("mnist", source="bundled", verbose=False)
        x = np.load("x.npy")
        out = {{}}
        for name in MODELS:
            model, record = train(name, data, cache_dir="jax_cache", verbose=0, **{TINY!r})
            out[name] = {{"loss": record["history"]["loss"], "backend": record["backend"]}}
            np.save(f"{{name}}.jax.npy", model.predict(x, verbose=0))
        print(json.dumps(out))
    """,
        tmp_path,
    )
    x = np.load(tmp_path / "x.npy")
    for name in MODELS:
        assert got[name]["backend"] == "jax" and np.isfinite(got[name]["loss"]).all()
        model = load_embedding(name, data, cache_dir=tmp_path / "jax_cache")
        np.testing.assert_allclose(
            model.predict(x, verbose=0), np.load(tmp_path / f"{name}.jax.npy"), atol=1e-4, err_msg=name
        )

    for name in ("cnn_simple_v1", "cnn_with_attention_vit_style_v1"):
        model, _ = train(name, data, cache_dir=tmp_path / "tf_cache", verbose=0, **TINY)
        np.save(tmp_path / f"{name}.tf.npy", model.predict(x, verbose=0))
    back = run_on_jax(
        """
        import json, numpy as np
        from helpers.data import load_dataset
        from helpers.training import load_embedding
        data = load_dataset("mnist", source="bundled", verbose=False)
        x = np.load("x.npy")
        err = {}
        for name in ("cnn_simple_v1", "cnn_with_attention_vit_style_v1"):
            emb = load_embedding(name, data, cache_dir="tf_cache").predict(x, verbose=0)
            err[name] = float(np.abs(emb - np.load(f"{name}.tf.npy")).max())
        print(json.dumps(err))
    """,
        tmp_path,
    )
    assert all(err < 1e-4 for err in back.values()), back


def test_filter_images_gradient_shim_runs_on_jax(tmp_path):
    got = run_on_jax(
        """
        import json, numpy as np, keras
        from helpers import explain
        keras.utils.set_random_seed(0)
        inputs = keras.Input((12, 12, 1))
        x = keras.layers.Conv2D(4, 3, activation="relu", name="c1")(inputs)
        model = keras.Model(inputs, keras.layers.Conv2D(3, 3, name="c2")(x))
        layer = explain.conv_layers(model)[1]
        probe = keras.Model(model.input, layer.output)
        start = explain._initial_images((12, 12, 1), 3, seed=0)
        before = probe.predict(start, verbose=0).mean(axis=(1, 2))
        images = explain.filter_images(model, layer, filters=range(3), steps=10, seed=0)
        after = probe.predict(np.asarray(images).reshape(3, 12, 12, 1), verbose=0).mean(axis=(1, 2))
        print(json.dumps({"backend": keras.backend.backend(),
                          "gain": [float(after[i, i] - before[i, i]) for i in range(3)]}))
    """,
        tmp_path,
    )
    assert got["backend"] == "jax"
    assert all(g > 0 for g in got["gain"]), got
