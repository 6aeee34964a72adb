"""Export: every registry model round-trips through a .keras file; an exported model loads in a fresh
process with only ``import helpers, keras`` and embeds as the cached one does; the card holds what it
promises; the errors (not cached, unknown names) are one line with the right exit status."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import helpers
from helpers import config, training
from helpers.data import load_dataset
from helpers.export import ExportError, ExportUsageError, export, main
from helpers.registry import MODELS, build_embedding

ROOT = Path(__file__).resolve().parents[1]
MODEL = "cnn_simple_v1"


@pytest.fixture(scope="module")
def data():
    return load_dataset("mnist", source="bundled", verbose=False)


@pytest.fixture()
def offline(data, tmp_path, monkeypatch):
    """The bundled MNIST as the only dataset in the data cache; runs and models under tmp_path."""
    load_dataset("mnist", source="bundled", cache_dir=tmp_path / "data", verbose=False)
    monkeypatch.setattr(config, "DATA_CACHE", tmp_path / "data")
    monkeypatch.setattr(config, "RUNS", tmp_path / "runs")
    return tmp_path


@pytest.mark.parametrize("name", list(MODELS))
def test_every_registry_embedding_round_trips_through_a_keras_file(name, data, tmp_path):
    model = build_embedding(name)
    path = training.save_model_file(model, tmp_path / f"{name}.keras")
    loaded = keras.models.load_model(path)
    x = data.x_test[:8]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


FRESH_LOAD = """
import sys, numpy as np
import helpers.samplers  # Keras loads while a module of the suite is half imported
import keras
x = np.load(sys.argv[1])
for path in sys.argv[2:]:
    np.save(path + ".npy", keras.models.load_model(path).predict(x, verbose=0))
"""


def test_import_helpers_is_enough_to_load_every_kind_of_layer_in_a_fresh_process(data, tmp_path):
    import helpers.studies.vicreg  # noqa: F401 - registers the VICReg study models (their embedding holds ViewAugment)

    x = data.x_test[:8]
    np.save(tmp_path / "x.npy", x)
    expected, paths = {}, []
    for name in ("cnn_with_attention_vit_style_v1", "cnn_with_attention_v1", "vicreg"):  # tokens, CBAM, views
        model = build_embedding(name)
        paths.append(str(training.save_model_file(model, tmp_path / f"{name}.keras")))
        expected[paths[-1]] = model.predict(x, verbose=0)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "-c", FRESH_LOAD, str(tmp_path / "x.npy"), *paths],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for path, want in expected.items():
        np.testing.assert_allclose(np.load(path + ".npy"), want, atol=1e-5)

    # the same files on the JAX backend: the take-away model is not tied to TensorFlow
    env["KERAS_BACKEND"] = "jax"
    jax_paths = [str(Path(p).with_name(f"jax_{Path(p).name}")) for p in paths]
    for path, copy in zip(paths, jax_paths, strict=True):
        Path(copy).write_bytes(Path(path).read_bytes())
    jax_run = [sys.executable, "-c", FRESH_LOAD.replace("import helpers.samplers", "import helpers")]
    proc = subprocess.run(
        [*jax_run, str(tmp_path / "x.npy"), *jax_paths], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for path, copy in zip(paths, jax_paths, strict=True):
        np.testing.assert_allclose(np.load(copy + ".npy"), expected[path], atol=1e-4)


@pytest.mark.slow
def test_exported_model_loads_in_a_fresh_process_and_embeds_as_the_cache(data, offline):
    smoke_cache = config.RUNS / "smoke" / "models_cache"
    with pytest.raises(ExportError, match=r"not in the cache .*--train"):
        export(MODEL, offline / "out", profile="smoke")
    assert not (offline / "out").exists()

    path = export(MODEL, offline / "out", profile="smoke", train=True)
    assert path == offline / "out" / f"{MODEL}.keras"
    entry = training.cache_paths(MODEL, smoke_cache, "mnist")
    assert entry["model"].is_file()  # the cache entry keeps a .keras beside its weights
    cached = training.load_embedding(MODEL, cache_dir=smoke_cache)
    np.save(offline / "x.npy", data.x_test[:32])
    np.save(offline / "expected.npy", cached.predict(data.x_test[:32], verbose=0))

    script = (
        "import sys, numpy as np, helpers, keras\n"
        "model = keras.models.load_model(sys.argv[1])\n"
        "np.save(sys.argv[3], model.predict(np.load(sys.argv[2]), verbose=0))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    args = [str(path), str(offline / "x.npy"), str(offline / "got.npy")]
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        cwd=offline,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    np.testing.assert_allclose(np.load(offline / "got.npy"), np.load(offline / "expected.npy"), atol=1e-5)

    card = json.loads(path.with_suffix(".json").read_text())
    record = training.read_cache_record(MODEL, smoke_cache)
    assert card["fingerprint"] == record["fingerprint"] and card["dataset"] == "mnist"
    assert card["input_shape"] == [28, 28, 1] and card["embedding_size"] == 64
    assert card["registry_entry"]["loss"] == MODELS[MODEL].loss
    assert card["training"]["params"] == {**record["params"]}
    assert card["versions"]["keras"] == keras.__version__
    assert card["evaluation"] is None  # the profile has not evaluated it


@pytest.mark.slow
def test_a_cache_entry_without_a_keras_file_gets_one_when_loaded(data, tmp_path):
    kwargs = {"cache_dir": tmp_path, "epochs": 1, "steps_per_epoch": 1, "batch_size": 16}
    embedding, _ = training.train(MODEL, data, **kwargs)
    entry = training.cache_paths(MODEL, tmp_path, "mnist")
    weights_mtime = entry["feature_extractor"].stat().st_mtime_ns
    entry["model"].unlink()
    _, record = training.train(MODEL, data, **kwargs)
    assert record["from_cache"] and entry["model"].is_file()
    assert entry["feature_extractor"].stat().st_mtime_ns == weights_mtime  # the weights were not rewritten
    loaded = keras.models.load_model(entry["model"])
    x = data.x_test[:8]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), embedding.predict(x, verbose=0), atol=1e-5)


def test_the_card_takes_the_models_row_of_the_profiles_evaluation_table(offline):
    from helpers.export import evaluation_row

    assert evaluation_row(MODEL, "mnist", "smoke") == (None, config.RUNS / "smoke" / "model_evaluation.csv")
    table = config.RUNS / "smoke" / "model_evaluation.csv"
    table.parent.mkdir(parents=True)
    table.write_text(
        "model,3nn_accuracy,embedding_size,kind\ncnn_simple_v2,0.9,64,model\ncnn_simple_v1,0.875,64,model\n"
    )
    row, path = evaluation_row(MODEL, "mnist", "smoke")
    assert (
        row == {"model": MODEL, "3nn_accuracy": 0.875, "embedding_size": 64, "kind": "model"}
        and path == table
    )


def test_export_is_reachable_from_the_package_and_callable():
    assert callable(helpers.export)
    from helpers import export as exported

    assert callable(exported)


def test_cli_errors_exit_2_for_usage_and_1_for_failures(offline, capsys):
    cases = [
        (["nope", "--out", str(offline / "o")], 2, "unknown model 'nope'"),
        ([MODEL, "--out", str(offline / "o"), "--profile", "huge"], 2, "unknown profile 'huge'"),
        ([MODEL, "--out", str(offline / "o"), "--dataset", "svhn"], 2, "unknown dataset 'svhn'"),
        ([MODEL], 2, "required: --out"),
        ([MODEL, "--out", str(offline / "o"), "--profile", "smoke"], 1, "--train"),
    ]
    for argv, status, message in cases:
        assert main(argv) == status, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (offline / "o").exists()
    with pytest.raises(ExportUsageError):
        export(MODEL, offline / "o", profile="huge")

    # from a shell: a bad profile is found before Keras starts (and prints its own lines)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "helpers.export", MODEL, "--out", str(offline / "o"), "--profile", "huge"]
    proc = subprocess.run(argv, env=env, cwd=offline, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == ["error: unknown profile 'huge'; choose one of: smoke, default, full"]


def test_import_helpers_is_enough_to_deserialise_the_study_losses_in_a_fresh_process():
    import json

    import keras

    from helpers.studies import contrastive_4_vs_9, vicreg

    objects = [
        contrastive_4_vs_9.GradedContrastiveLoss(margin=2.0, near_margin=0.5),
        vicreg.VICRegLoss(var_weight=0.0),
        vicreg.VICRegTerm("variance"),
    ]
    configs = [keras.saving.serialize_keras_object(o) for o in objects]
    code = (
        "import sys, json, helpers, keras\n"
        "for c in json.loads(sys.argv[1]):\n"
        "    o = keras.saving.deserialize_keras_object(c)\n"
        "    print(type(o).__module__, type(o).__name__, json.dumps(o.get_config(), sort_keys=True))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(configs)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    want = [
        f"{type(o).__module__} {type(o).__name__} {json.dumps(o.get_config(), sort_keys=True)}"
        for o in objects
    ]
    assert proc.stdout.splitlines() == want
