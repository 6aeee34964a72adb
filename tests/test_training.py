"""Training: the cache (hit, miss on a changed configuration, force), corruption, resume after SIGKILL."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import training
from helpers.data import load_dataset
from helpers.registry import MODELS, build_embedding, build_training_model, get_spec
from helpers.training import batches, cache, callbacks, estimates, workers

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(epochs=1, steps_per_epoch=1, batch_size=8)


@pytest.fixture(scope="module")
def data():
    return load_dataset("mnist", source="bundled", verbose=False)


def test_cache_hit_returns_the_same_model_without_training(data, tmp_path, capsys):
    emb1, rec1 = training.train("cnn_simple_v1", data, cache_dir=tmp_path, **TINY)
    assert rec1["from_cache"] is False
    emb2, rec2 = training.train("cnn_simple_v1", data, cache_dir=tmp_path, **TINY)
    assert rec2["from_cache"] is True
    assert "loaded from cache" in capsys.readouterr().out
    x = data.x_test[:16]
    np.testing.assert_allclose(emb1.predict(x, verbose=0), emb2.predict(x, verbose=0), atol=1e-6)
    # the entry lives in the dataset's folder; atomic writes leave no temporary file, and the work
    # folder is gone once training finished (the lock file stays: removing it would race)
    assert [p.name for p in tmp_path.iterdir()] == ["mnist"]
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == [
        "cnn_simple_v1.feature_extractor.weights.h5",
        "cnn_simple_v1.history.json",
        "cnn_simple_v1.keras",
        "cnn_simple_v1.lock",
        "cnn_simple_v1.weights.h5",
    ]


def test_changed_configuration_retrains_and_force_retrains(data, tmp_path, capsys):
    training.train("cnn_simple_v1", data, cache_dir=tmp_path, **TINY)
    _, rec = training.train("cnn_simple_v1", data, cache_dir=tmp_path, **{**TINY, "epochs": 2})
    assert rec["from_cache"] is False and len(rec["history"]["loss"]) == 2
    out = capsys.readouterr().out
    assert "another configuration" in out
    # one line per epoch: losses, seconds and (before the last epoch) what is left
    epoch_lines = [
        line for line in out.splitlines() if line.startswith("[cnn_simple_v1] epoch ") and "/2 " in line
    ]
    assert len(epoch_lines) == 2, out
    assert re.fullmatch(
        r"\[cnn_simple_v1\] epoch 1/2 loss=\d+\.\d{4} val_loss=\d+\.\d{4} "
        r"\(\d+\.\ds; ~\d+s left\)",
        epoch_lines[0],
    ), epoch_lines[0]
    assert epoch_lines[1].startswith("[cnn_simple_v1] epoch 2/2 ") and "left" not in epoch_lines[1]
    _, rec = training.train("cnn_simple_v1", data, cache_dir=tmp_path, **{**TINY, "epochs": 2})
    assert rec["from_cache"] is True
    _, rec = training.train("cnn_simple_v1", data, cache_dir=tmp_path, force=True, **{**TINY, "epochs": 2})
    assert rec["from_cache"] is False


def test_track_prints_the_model_and_what_is_left_for_the_list(capsys, monkeypatch):
    clock = iter([0.0, 0.0, 10.0, 10.0, 30.0])
    monkeypatch.setattr(estimates.time, "perf_counter", lambda: next(clock))
    names = list(estimates.track(["cnn_simple_v1", "cnn_simple_v2"], epochs=2, steps_per_epoch=5))
    assert names == ["cnn_simple_v1", "cnn_simple_v2"]
    lines = capsys.readouterr().out.splitlines()
    # 10 s for the first model's 10 steps: the second's 10 steps are about 10 s more
    assert lines == ["== model 1/2 cnn_simple_v1", "== model 2/2 cnn_simple_v2 (~10s left for the list)"]
    assert [estimates.format_seconds(s) for s in (42, 185, 3725)] == ["42s", "3m05s", "1h02m"]


def test_fingerprint_depends_on_data_and_parameters(data):
    params = {"epochs": 1}
    base = cache.training_fingerprint(get_spec("cnn_simple_v1"), data, params)
    assert base == cache.training_fingerprint(get_spec("cnn_simple_v1"), data, dict(params))
    assert base != cache.training_fingerprint(get_spec("cnn_simple_v1"), data, {"epochs": 2})
    assert base != cache.training_fingerprint(get_spec("cnn_simple_v2"), data, params)
    other = load_dataset("mnist", source="bundled", seed=7, verbose=False)
    assert base != cache.training_fingerprint(get_spec("cnn_simple_v1"), other, params)
    # the same architecture built twice hashes the same (layer names carry global counters)
    assert cache.architecture_digest(build_embedding("cnn_simple_v1")) == cache.architecture_digest(
        build_embedding("cnn_simple_v1")
    )


@pytest.mark.parametrize(
    "name", ["cnn_simple_v1", "cnn_with_attention_v1", "cnn_with_attention_vit_style_v1"]
)
def test_a_mixed_precision_model_embeds_in_float32_and_hashes_apart(name):
    import keras

    base = cache.architecture_digest(build_embedding(name))
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_embedding(name)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    convolutions = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convolutions and all(layer.compute_dtype == "bfloat16" for layer in convolutions)
    assert model.get_layer("embedding").compute_dtype == "float32"
    assert model(np.zeros((2, 28, 28, 1), "float32")).dtype == "float32"
    assert cache.architecture_digest(model) != base  # a cached float32 model is not reused for it


def test_truncated_weights_are_reported_in_one_line_and_retrained(data, tmp_path, capsys):
    training.train("cnn_simple_v1", data, cache_dir=tmp_path, **TINY)
    weights = tmp_path / "mnist" / "cnn_simple_v1.feature_extractor.weights.h5"
    blob = weights.read_bytes()
    weights.write_bytes(blob[: len(blob) // 3])
    capsys.readouterr()
    emb, rec = training.train("cnn_simple_v1", data, cache_dir=tmp_path, **TINY)
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "cache unusable" in line]
    assert len(lines) == 1 and "cnn_simple_v1.feature_extractor.weights.h5" in lines[0]
    assert "Traceback" not in out
    assert rec["from_cache"] is False
    assert emb.predict(data.x_test[:4], verbose=0).shape == (4, 64)
    # the rewritten file loads again
    _, rec = training.train("cnn_simple_v1", data, cache_dir=tmp_path, **TINY)
    assert rec["from_cache"] is True


def test_load_embedding_of_a_missing_cache_is_one_clear_error(tmp_path):
    with pytest.raises(training.CacheError, match="missing"):
        training.load_embedding("cnn_simple_v1", cache_dir=tmp_path)


def test_bad_parameters_are_rejected(data, tmp_path):
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        training.train("cnn_simple_v1", data, cache_dir=tmp_path, epochs=0)
    with pytest.raises(ValueError, match="unknown model 'nope'; choose one of"):
        training.train("nope", data, cache_dir=tmp_path)


def test_cosine_schedule_decays_the_rate_step_by_step(data, tmp_path, monkeypatch):
    import dataclasses
    import math

    spec = dataclasses.replace(MODELS["cnn_simple_v1"], lr_schedule="cosine", learning_rate=1e-3)
    monkeypatch.setitem(MODELS, "cnn_simple_v1", spec)
    _, rec = training.train(
        "cnn_simple_v1", data, cache_dir=tmp_path, epochs=3, steps_per_epoch=2, batch_size=8
    )
    # after 2, 4 and 6 of 6 steps: 1e-3 * (0.01 + 0.99 * (1 + cos(pi * step / 6)) / 2)
    expected = [1e-3 * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * s / 6))) for s in (2, 4, 6)]
    np.testing.assert_allclose(rec["history"]["learning_rate"], expected, rtol=1e-5)
    with pytest.raises(ValueError, match="lr_schedule must be 'plateau' or 'cosine'"):
        dataclasses.replace(spec, lr_schedule="linear")


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_trains_one_step_and_embeds(data, tmp_path, name):
    emb, rec = training.train(name, data, cache_dir=tmp_path, **TINY)
    out = emb.predict(data.x_test[:5], verbose=0)
    assert out.shape == (5, MODELS[name].embedding_dim) and np.isfinite(out).all()
    assert np.isfinite(rec["history"]["loss"]).all()
    if MODELS[name].l2_normalized:
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-4)
    model, _ = build_training_model(name)
    expected_inputs = {"pairs": 2, "triplets": 3, "triplets_cls": 3, "pk": 1}[MODELS[name].generator]
    assert len(model.inputs) == expected_inputs


@pytest.mark.slow
def test_resume_after_sigkill(tmp_path):
    """Kill a real training process after an epoch finished; the rerun resumes, history is whole."""
    cmd = [
        sys.executable,
        "-m",
        "helpers.training",
        "cnn_simple_v1",
        "--epochs",
        "40",
        "--steps-per-epoch",
        "4",
        "--batch-size",
        "16",
        "--cache-dir",
        str(tmp_path),
        "--source",
        "bundled",
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    work = tmp_path / "mnist" / "cnn_simple_v1.work"
    deadline = time.time() + 240
    done_epochs = 0
    try:
        while time.time() < deadline and proc.poll() is None:
            partial = list(work.glob("*/history.partial.json"))
            if partial:
                try:
                    done_epochs = len(json.loads(partial[0].read_text()))
                except (OSError, json.JSONDecodeError):
                    done_epochs = 0
                if done_epochs >= 2:
                    break
            time.sleep(0.02)
        assert proc.poll() is None, "training finished before it could be killed"
        assert done_epochs >= 2, "no epoch finished within the time limit"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (tmp_path / "mnist" / "cnn_simple_v1.history.json").exists()

    rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resuming" in rerun.stdout
    result = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert result["from_cache"] is False
    assert result["resumed_from_epoch"] >= 1, result  # did not start at epoch 0
    epochs = result["epochs"]
    assert epochs == list(range(len(epochs))), epochs  # every epoch once, none missing
    assert len(epochs) > done_epochs
    record = json.loads((tmp_path / "mnist" / "cnn_simple_v1.history.json").read_text())
    assert len(record["history"]["loss"]) == len(epochs)
    assert not work.exists()


# --- cache per dataset ----------------------------------------------------------------------------


def test_two_datasets_keep_two_entries_and_switching_back_loads_from_cache(data, tmp_path):
    import dataclasses

    other = dataclasses.replace(
        data, name="other_digits", x_train=data.x_train[:600], y_train=data.y_train[:600]
    )
    _, rec_a = training.train("cnn_simple_v1", data, cache_dir=tmp_path, **TINY)
    _, rec_b = training.train("cnn_simple_v1", other, cache_dir=tmp_path, **TINY)
    assert rec_a["from_cache"] is False and rec_b["from_cache"] is False
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnist", "other_digits"]
    for folder in ("mnist", "other_digits"):
        assert (tmp_path / folder / "cnn_simple_v1.feature_extractor.weights.h5").exists()
    # switching back costs nothing: both entries load
    assert training.train("cnn_simple_v1", data, cache_dir=tmp_path, **TINY)[1]["from_cache"] is True
    assert training.train("cnn_simple_v1", other, cache_dir=tmp_path, **TINY)[1]["from_cache"] is True


# --- fingerprint: what decides the weights retrains -----------------------------------------------


def _narrower(builder):
    """The same builder (same name) with a 32-unit embedding: only the architecture changes."""
    import functools

    @functools.wraps(builder)
    def build(input_shape=(28, 28, 1), embedding_dim=64):
        return builder(input_shape=input_shape, embedding_dim=32)

    return build


@pytest.mark.parametrize("change", ["margin", "center_reg_weight", "architecture"])
def test_a_changed_registry_field_or_architecture_retrains(data, tmp_path, monkeypatch, change):
    import dataclasses

    training.train("cnn_simple_v1", data, cache_dir=tmp_path, **TINY)
    spec = MODELS["cnn_simple_v1"]
    changed = {
        "margin": {"margin": spec.margin + 0.5},
        "center_reg_weight": {"center_reg_weight": spec.center_reg_weight + 1.0},
        "architecture": {"builder": _narrower(spec.builder)},
    }[change]
    monkeypatch.setitem(MODELS, "cnn_simple_v1", dataclasses.replace(spec, **changed))
    # the stale entry is refused where it is loaded by name (evaluation, notebook 06) ...
    with pytest.raises(training.StaleCacheError, match="registry entry, architecture"):
        training.load_trained("cnn_simple_v1", data, cache_dir=tmp_path)
    # ... and train() retrains it
    emb, rec = training.train("cnn_simple_v1", data, cache_dir=tmp_path, **TINY)
    assert rec["from_cache"] is False
    assert (
        training.load_trained("cnn_simple_v1", data, cache_dir=tmp_path).output.shape[-1]
        == emb.output.shape[-1]
    )


def test_fingerprint_covers_the_keras_version_and_the_loss_and_generator_code(data, monkeypatch, tmp_path):
    base = cache.training_fingerprint(get_spec("cnn_simple_v1"), data, {"epochs": 1})
    monkeypatch.setattr(cache.keras, "__version__", "99.0.0")
    assert cache.training_fingerprint(get_spec("cnn_simple_v1"), data, {"epochs": 1}) != base
    monkeypatch.undo()
    with monkeypatch.context() as patch:
        patch.setattr(cache, "code_version", lambda: "another version")
        assert cache.training_fingerprint(get_spec("cnn_simple_v1"), data, {"epochs": 1}) != base
    # code_version: comments, docstrings and formatting do not count; the code does
    versions = {}
    for label, source in [
        ("plain", "def loss(x):\n    return x * 2\n"),
        ("commented", '"""Doc."""\n\n\ndef loss(x):  # twice\n    """Twice x."""\n    return (x * 2)\n'),
        ("changed", "def loss(x):\n    return x * 3\n"),
    ]:
        (tmp_path / "losses.py").write_text(source)
        versions[label] = cache.code_version(("losses",), folder=tmp_path)
    assert versions["plain"] == versions["commented"] != versions["changed"]


def test_load_trained_checks_data_and_budget_and_can_retrain(data, tmp_path):
    import dataclasses

    with pytest.raises(training.CacheError, match="missing"):
        training.load_trained("cnn_simple_v1", data, cache_dir=tmp_path)
    training.train("cnn_simple_v1", data, cache_dir=tmp_path, **TINY)
    assert training.load_trained("cnn_simple_v1", data, cache_dir=tmp_path, **TINY) is not None
    with pytest.raises(training.StaleCacheError, match="trained with"):
        training.load_trained("cnn_simple_v1", data, cache_dir=tmp_path, **{**TINY, "epochs": 2})
    shuffled = dataclasses.replace(data, x_train=data.x_train[::-1].copy())
    with pytest.raises(training.StaleCacheError, match="other mnist data"):
        training.load_embedding("cnn_simple_v1", shuffled, cache_dir=tmp_path)
    training.load_trained("cnn_simple_v1", shuffled, cache_dir=tmp_path, retrain=True, **TINY)
    assert training.read_cache_record("cnn_simple_v1", tmp_path)[
        "data_fingerprint"
    ] == cache.data_fingerprint(shuffled)


# --- backup: Keras' private layout, and a kill between the two moves ------------------------------


def _tiny_model():
    import keras

    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer="sgd", loss="mse")
    return model


def test_keras_backup_layout_is_what_fit_writes_and_resumes_from(tmp_path):
    """Fails loudly when a Keras upgrade moves BackupAndRestore's files (private attributes)."""
    import keras

    x, y = np.ones((4, 3), "float32"), np.ones((4, 1), "float32")
    plain = keras.callbacks.BackupAndRestore(str(tmp_path / "plain"), delete_checkpoint=False)
    _tiny_model().fit(x, y, epochs=2, verbose=0, callbacks=[plain])
    weights, metadata = callbacks.keras_backup_files(plain)
    assert weights.exists() and metadata.exists(), "Keras writes its backup elsewhere now"
    assert json.loads(metadata.read_text())["epoch"] == 2
    # Keras resumes from these files: an epoch count of 5 there skips the first 5 of 6 epochs
    metadata.write_text(json.dumps({"epoch": 5, "batch": 0}))
    history = _tiny_model().fit(
        x,
        y,
        epochs=6,
        verbose=0,
        callbacks=[keras.callbacks.BackupAndRestore(str(tmp_path / "plain"), delete_checkpoint=False)],
    )
    assert len(history.history["loss"]) == 1


class _Killed(Exception):
    pass


def test_a_kill_between_the_weights_and_the_metadata_moves_resumes_exactly(data, tmp_path, monkeypatch):
    budget = dict(epochs=3, steps_per_epoch=2, batch_size=8)
    straight, _ = training.train("cnn_simple_v1", data, cache_dir=tmp_path / "straight", **budget)

    def kill_after_second_epoch(self, epoch):
        if epoch == 2:
            raise _Killed  # the weights of epoch 2 are in place, the metadata still says 1

    monkeypatch.setattr(callbacks.AtomicBackupAndRestore, "_weights_moved", kill_after_second_epoch)
    with pytest.raises(_Killed):
        training.train("cnn_simple_v1", data, cache_dir=tmp_path / "killed", **budget)
    backup = next((tmp_path / "killed" / "mnist").glob("cnn_simple_v1.work/*/backup"))
    assert json.loads((backup / "training_metadata.json").read_text())["epoch"] == 1
    monkeypatch.undo()

    resumed, record = training.train("cnn_simple_v1", data, cache_dir=tmp_path / "killed", **budget)
    assert record["resumed_from_epoch"] == 2, "resumes after the epoch whose weights were moved"
    assert record["history"]["epoch"] == [0, 1, 2]
    x = data.x_test[:32]
    np.testing.assert_allclose(resumed.predict(x, verbose=0), straight.predict(x, verbose=0), atol=1e-5)


# --- two processes, one cache entry ---------------------------------------------------------------


@pytest.mark.slow
def test_a_second_process_waits_for_the_first_and_loads_its_entry(tmp_path):
    """Two real training processes on one entry: one trains, the other waits and loads it.

    The test holds the entry's lock until both processes have tried to take it, so they
    overlap whatever their start-up times."""
    import filelock

    lock = filelock.FileLock(str(training.cache_paths("cnn_simple_v1", tmp_path, "mnist")["lock"]))
    cmd = [
        sys.executable,
        "-m",
        "helpers.training",
        "cnn_simple_v1",
        "--epochs",
        "2",
        "--steps-per-epoch",
        "2",
        "--batch-size",
        "8",
        "--cache-dir",
        str(tmp_path),
        "--source",
        "bundled",
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    logs = [tmp_path / f"proc{i}.log" for i in (0, 1)]
    procs = []
    with lock:
        try:
            for log in logs:
                with open(log, "w") as out:
                    procs.append(
                        subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
                    )
            deadline = time.time() + 300
            while time.time() < deadline and not all("waiting for it" in log.read_text() for log in logs):
                assert all(p.poll() is None for p in procs), [log.read_text()[-2000:] for log in logs]
                time.sleep(0.2)
            assert all("waiting for it" in log.read_text() for log in logs), "processes never met the lock"
        except BaseException:
            for p in procs:
                p.kill()
            raise
    for p in procs:
        assert p.wait(timeout=600) == 0
    outputs = [log.read_text() for log in logs]
    results = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    assert sorted(r["from_cache"] for r in results) == [False, True]
    loader = outputs[[r["from_cache"] for r in results].index(True)]
    assert loader.count("loaded from cache what the other process trained") == 1
    assert "epoch 1/2" not in loader  # it did not train
    assert not (tmp_path / "mnist" / "cnn_simple_v1.work").exists()


def test_a_study_modules_code_is_in_its_models_fingerprint_only(monkeypatch):
    import helpers.studies.vicreg  # noqa: F401  (registers the VICReg models)
    from helpers.registry import get_spec

    assert cache.study_code_modules(get_spec("vicreg")) == ("studies.vicreg",)
    assert cache.study_code_modules(get_spec("cnn_simple_v1")) == ()
    assert cache.HELPERS == ROOT / "helpers"  # module names are relative to helpers/, not the package
    core, study = (
        cache.model_fingerprint(get_spec("cnn_simple_v1")),
        cache.model_fingerprint(get_spec("vicreg")),
    )
    real = cache.code_version

    def edited_vicreg(modules=cache.WEIGHT_CODE, folder=None):  # as if helpers/studies/vicreg.py changed
        return real(modules, folder) + ("-edited" if "studies.vicreg" in modules else "")

    monkeypatch.setattr(cache, "code_version", edited_vicreg)
    assert cache.model_fingerprint(get_spec("cnn_simple_v1")) == core
    assert cache.model_fingerprint(get_spec("vicreg")) != study


def test_augment_threads_feed_the_trainer_the_same_batches(data, tmp_path, monkeypatch):
    from helpers.registry import get_spec

    assert batches.augment_threads(get_spec("cnn_simple_v1"))["workers"] == batches.AUGMENT_THREADS > 1
    # a mining generator's epoch-end refresh uses the model being trained: no threads
    assert batches.augment_threads(get_spec("cnn_with_attention_cls_head_v1")) == {}
    budget = dict(epochs=2, steps_per_epoch=3, batch_size=40, seed=5)
    threaded, _ = training.train("cnn_simple_v1", data, cache_dir=tmp_path / "threads", **budget)
    monkeypatch.setattr(batches, "AUGMENT_THREADS", 1)
    single, _ = training.train("cnn_simple_v1", data, cache_dir=tmp_path / "one", **budget)
    x = data.x_test[:32]
    # the same augmented batches in the same order give the same weights
    np.testing.assert_allclose(threaded.predict(x, verbose=0), single.predict(x, verbose=0), atol=1e-5)


# --- several models at once (train_many) ----------------------------------------------------------


@pytest.mark.slow
def test_train_many_trains_in_worker_processes_then_loads_what_train_would(
    data, tmp_path, monkeypatch, capsys
):
    names = ["cnn_simple_v1", "cnn_simple_v2"]
    assert not training.is_cached(names[0], data, cache_dir=tmp_path, **TINY)
    trained = training.train_many(names, data, processes=2, cache_dir=tmp_path, **TINY)
    out = capsys.readouterr().out
    assert "training 2 models in 2 worker processes" in out
    # the workers' epoch lines reach this process's output
    assert all(f"[{name}] epoch 1/1" in out for name in names)
    assert list(trained) == names and all(rec["from_cache"] is False for _, rec in trained.values())
    # the entries are train()'s: same fingerprint, so train() in this process loads them
    for name in names:
        assert training.is_cached(name, data, cache_dir=tmp_path, **TINY)
        embedding, record = training.train(name, data, cache_dir=tmp_path, **TINY)
        assert record["from_cache"] is True
        x = data.x_test[:8]
        np.testing.assert_allclose(embedding.predict(x, verbose=0), trained[name][0].predict(x, verbose=0))
    # everything cached: no worker starts, and the records say so
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail("a worker started"))
    again = training.train_many(names, data, processes=2, cache_dir=tmp_path, **TINY)
    assert all(rec["from_cache"] is True for _, rec in again.values())
    # another budget is another entry
    assert not training.is_cached(names[0], data, cache_dir=tmp_path, **{**TINY, "steps_per_epoch": 2})


def test_expected_seconds_scale_the_seconds_per_step_to_the_budget():
    # registry budgets: cnn_simple_v1 600 steps, cnn_simple_v2 180, cnn_with_attention_v1 1440
    rates = {"cnn_simple_v1": 0.11, "cnn_simple_v2": 1.0}
    names = ["cnn_simple_v1", "cnn_simple_v2", "cnn_with_attention_v1"]
    cost = estimates.expected_seconds(names, rates=rates)
    assert cost["cnn_simple_v1"] == pytest.approx(66.0)
    assert cost["cnn_simple_v2"] == pytest.approx(180.0)
    # no rate: the median of the rates, (0.11 + 1.0) / 2 s a step, times 1440 steps
    assert cost["cnn_with_attention_v1"] == pytest.approx(0.555 * 1440)
    # a smaller budget scales every model alike: 2 x 5 steps
    small = estimates.expected_seconds(names, epochs=2, steps_per_epoch=5, rates=rates)
    assert small["cnn_simple_v2"] == pytest.approx(10.0) and small["cnn_simple_v1"] == pytest.approx(1.1)
    # no rates: the budgets in steps give the order
    steps = estimates.expected_seconds(names, rates={})
    assert steps == {"cnn_simple_v1": 600.0, "cnn_simple_v2": 180.0, "cnn_with_attention_v1": 1440.0}
    # the package's own table covers every core model: no results file is read at run time
    assert set(estimates.SECONDS_PER_STEP) == set(MODELS)


def test_a_failing_worker_raises_with_its_last_lines_and_stops_the_others(data, tmp_path, monkeypatch):
    # cnn_simple_v2 fewer steps (180 against 600) but the costlier: it starts first
    rates = {"cnn_simple_v1": 0.1, "cnn_simple_v2": 140 / 180}
    monkeypatch.setattr(estimates, "SECONDS_PER_STEP", rates)
    started = []

    def command(name, *args):
        started.append(name)
        if name == "cnn_simple_v1":  # the cheaper model: the second worker to start
            return [
                sys.executable,
                "-c",
                "print('loading'); print('boom: out of memory'); raise SystemExit(3)",
            ]
        return [sys.executable, "-c", "import time; time.sleep(60)"]

    monkeypatch.setattr(workers, "worker_command", command)
    start = time.perf_counter()
    with pytest.raises(training.TrainingWorkerError, match=r"(?s)'cnn_simple_v1' exited with code 3.*boom"):
        training.train_many(["cnn_simple_v1", "cnn_simple_v2"], data, processes=2, cache_dir=tmp_path)
    assert started == ["cnn_simple_v2", "cnn_simple_v1"]  # the costlier first, whatever the list's order
    assert time.perf_counter() - start < 30  # the sleeping worker was stopped, not waited for


def test_train_many_rejects_bad_arguments_before_starting_a_worker(data, tmp_path, monkeypatch):
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail("a worker started"))
    with pytest.raises(ValueError, match="processes must be at least 1"):
        training.train_many(["cnn_simple_v1"], data, processes=0, cache_dir=tmp_path)
    with pytest.raises(TypeError, match="unexpected arguments.*'epoch'"):
        training.train_many(["cnn_simple_v1"], data, processes=2, cache_dir=tmp_path, epoch=1)
    with pytest.raises(ValueError, match="unknown model 'nope'|'nope'"):
        training.train_many(["cnn_simple_v1", "nope"], data, processes=2, cache_dir=tmp_path, **TINY)
    with pytest.raises(ValueError, match="steps_per_epoch must be a positive integer"):
        training.train_many(["cnn_simple_v1"], data, processes=2, cache_dir=tmp_path, steps_per_epoch=0)


def _bn_chain():
    import keras

    inputs = keras.Input((3,))
    x = keras.layers.BatchNormalization(name="bn1")(inputs)
    x = keras.layers.Dense(2, use_bias=False, kernel_initializer="ones", name="sum")(x)
    return keras.Model(inputs, keras.layers.BatchNormalization(name="bn2")(x))


def test_recalibrate_batchnorm_sets_population_statistics_layer_by_layer():
    rng = np.random.default_rng(0)
    x = rng.normal([1.0, -2.0, 5.0], [0.5, 2.0, 3.0], size=(1000, 3)).astype("float32")
    model = _bn_chain()
    assert training.recalibrate_batchnorm(model, x, batch_size=64) == 2
    bn1, bn2 = model.get_layer("bn1"), model.get_layer("bn2")
    np.testing.assert_allclose(bn1.moving_mean.numpy(), x.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(bn1.moving_variance.numpy(), x.var(axis=0), rtol=1e-4)
    # bn2 sees the sum of three features bn1 has just standardised (gamma 1, beta 0): mean 0 and,
    # as the three draws are independent, variance about 3 (not the raw sum's 0.25 + 4 + 9)
    standardised = (x - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + bn1.epsilon)
    expected = standardised.sum(axis=1)
    np.testing.assert_allclose(bn2.moving_mean.numpy(), [expected.mean()] * 2, atol=1e-5)
    np.testing.assert_allclose(bn2.moving_variance.numpy(), [expected.var()] * 2, rtol=1e-4)
    assert abs(expected.var() - 3.0) < 0.3


def test_recalibrate_batchnorm_rejects_what_it_cannot_do():
    import keras

    with pytest.raises(ValueError, match="at least 2 images"):
        training.recalibrate_batchnorm(_bn_chain(), np.zeros((1, 3), "float32"))
    inputs = keras.Input((3,))
    nested = keras.Model(inputs, _bn_chain()(inputs))
    with pytest.raises(ValueError, match="nested models \\(bn1, bn2\\)"):
        training.recalibrate_batchnorm(nested, np.zeros((4, 3), "float32"))


def test_recalibrate_bn_entry_saves_the_clean_training_images_statistics(data, tmp_path, monkeypatch):
    import dataclasses

    name = "cnn_with_attention_v1"
    # off, the field is left out of the fingerprint (older caches stay valid); on, it is in it
    assert "recalibrate_bn" not in MODELS["cnn_simple_v2"].config()
    assert MODELS[name].config()["recalibrate_bn"] is True
    monkeypatch.setitem(MODELS, name, dataclasses.replace(MODELS[name], recalibrate_bn=True))
    trained, _ = training.train(name, data, cache_dir=tmp_path, epochs=1, steps_per_epoch=2, batch_size=20)
    loaded = training.load_trained(name, data, cache_dir=tmp_path)  # what the cache holds
    first = [w.copy() for w in loaded.get_weights()]
    # recalibrating again on the same images changes nothing: the saved statistics are theirs
    assert training.recalibrate_batchnorm(loaded, data.x_train) == 3
    for before, after in zip(first, loaded.get_weights(), strict=True):
        np.testing.assert_allclose(after, before, rtol=1e-3, atol=1e-5)
    # the entry without the flag keeps the moving averages of augmented batches, which differ
    monkeypatch.setitem(MODELS, name, dataclasses.replace(MODELS[name], recalibrate_bn=False))
    plain, _ = training.train(
        name, data, cache_dir=tmp_path / "plain", epochs=1, steps_per_epoch=2, batch_size=20
    )
    norms = [layer for layer in plain.layers if "batch_normalization" in layer.name]
    moving = [layer.moving_mean.numpy().copy() for layer in norms]
    training.recalibrate_batchnorm(plain, data.x_train)
    recalibrated = [layer.moving_mean.numpy() for layer in norms]
    assert len(moving) == 3
    assert any(not np.allclose(a, b, atol=1e-3) for a, b in zip(moving, recalibrated, strict=True))


def test_augment_params_reach_the_host_augmenter(data):
    from helpers.augment import Augmenter
    from helpers.registry import spec_override

    name = "cnn_simple_v1"  # augments on the host
    train_gen, val_gen = training.make_generators(get_spec(name), data, batch_size=40, steps_per_epoch=2)
    assert isinstance(train_gen.augmenter, Augmenter) and train_gen.augmenter.elastic == 0.0
    assert val_gen.augmenter is None  # validation batches stay clean
    params = {"shift": 1.0, "rotation": 0.0, "noise": 0.0, "elastic": 1.5}
    with spec_override(name, augment_params=params):
        train_gen, _ = training.make_generators(get_spec(name), data, batch_size=40, steps_per_epoch=2)
    augmenter = train_gen.augmenter
    assert (augmenter.shift, augmenter.rotation, augmenter.elastic) == (1.0, 0.0, 1.5)
