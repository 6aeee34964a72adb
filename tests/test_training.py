"""Training: the cache (hit, miss on a changed configuration, force), corruption, resume after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import training
from helpers.data import load_dataset
from helpers.models import MODELS, build_embedding, build_training_model

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
    for suffix in (".weights.h5", ".feature_extractor.weights.h5", ".history.json"):
        assert (tmp_path / f"cnn_simple_v1{suffix}").exists()
    # atomic writes leave no temporary file, and the work folder is gone once training finished
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cnn_simple_v1.feature_extractor.weights.h5", "cnn_simple_v1.history.json",
        "cnn_simple_v1.weights.h5",
    ]


def test_changed_configuration_retrains_and_force_retrains(data, tmp_path, capsys):
    training.train("cnn_simple_v1", data, cache_dir=tmp_path, **TINY)
    _, rec = training.train("cnn_simple_v1", data, cache_dir=tmp_path, **{**TINY, "epochs": 2})
    assert rec["from_cache"] is False and len(rec["history"]["loss"]) == 2
    assert "another configuration" in capsys.readouterr().out
    _, rec = training.train("cnn_simple_v1", data, cache_dir=tmp_path, **{**TINY, "epochs": 2})
    assert rec["from_cache"] is True
    _, rec = training.train("cnn_simple_v1", data, cache_dir=tmp_path, force=True, **{**TINY, "epochs": 2})
    assert rec["from_cache"] is False


def test_fingerprint_depends_on_data_and_parameters(data):
    params = {"epochs": 1}
    base = training.training_fingerprint("cnn_simple_v1", data, params)
    assert base == training.training_fingerprint("cnn_simple_v1", data, dict(params))
    assert base != training.training_fingerprint("cnn_simple_v1", data, {"epochs": 2})
    assert base != training.training_fingerprint("cnn_simple_v2", data, params)
    other = load_dataset("mnist", source="bundled", seed=7, verbose=False)
    assert base != training.training_fingerprint("cnn_simple_v1", other, params)
    # the same architecture built twice hashes the same (layer names carry global counters)
    assert training._architecture_digest(build_embedding("cnn_simple_v1")) == \
        training._architecture_digest(build_embedding("cnn_simple_v1"))


def test_truncated_weights_are_reported_in_one_line_and_retrained(data, tmp_path, capsys):
    training.train("cnn_simple_v1", data, cache_dir=tmp_path, **TINY)
    weights = tmp_path / "cnn_simple_v1.feature_extractor.weights.h5"
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
    _, rec = training.train("cnn_simple_v1", data, cache_dir=tmp_path, epochs=3, steps_per_epoch=2,
                            batch_size=8)
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
    cmd = [sys.executable, "-m", "helpers.training", "cnn_simple_v1", "--epochs", "40",
           "--steps-per-epoch", "4", "--batch-size", "16", "--cache-dir", str(tmp_path),
           "--source", "bundled"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    work = tmp_path / "cnn_simple_v1.work"
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
    assert not (tmp_path / "cnn_simple_v1.history.json").exists()

    rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resuming" in rerun.stdout
    result = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert result["from_cache"] is False
    assert result["resumed_from_epoch"] >= 1, result  # did not start at epoch 0
    epochs = result["epochs"]
    assert epochs == list(range(len(epochs))), epochs  # every epoch once, none missing
    assert len(epochs) > done_epochs
    record = json.loads((tmp_path / "cnn_simple_v1.history.json").read_text())
    assert len(record["history"]["loss"]) == len(epochs)
    assert not work.exists()
