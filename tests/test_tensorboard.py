"""TensorBoard logs of training: the epoch curves equal the history; logs change neither the cache's
fingerprint nor the weights; the setting turns them off; a notebook run sends them to its folder."""

import keras
import numpy as np
import pytest

from helpers import config, training
from helpers.data import load_dataset
from helpers.training.callbacks import tensorboard_callback

MODEL = "cnn_simple_v1"
TINY = {"epochs": 2, "steps_per_epoch": 2, "batch_size": 16}

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="TensorBoard logs are written by TensorFlow's tf.summary"
)


def read_scalars(folder) -> dict[str, list[float]]:
    """Every scalar of the event files under ``folder``, by tag, in step order (TensorFlow shim)."""
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    values: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(folder.rglob("events.out.tfevents.*")):
        for raw in tf.data.TFRecordDataset(str(path)):
            event = event_pb2.Event.FromString(raw.numpy())
            for value in event.summary.value:
                number = (
                    float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") else value.simple_value
                )
                values.setdefault(value.tag, []).append((event.step, number))
    return {tag: [v for _, v in sorted(pairs)] for tag, pairs in values.items()}


@pytest.fixture(scope="module")
def data():
    return load_dataset("mnist", source="bundled", verbose=False)


@pytest.mark.slow
def test_logs_hold_the_history_and_change_nothing_learned(data, tmp_path, monkeypatch):
    monkeypatch.setattr(config, "TENSORBOARD", tmp_path / "tb")
    monkeypatch.setattr(config, "TENSORBOARD_LOGS", True)
    logged, record = training.train(MODEL, data, cache_dir=tmp_path / "a", **TINY)
    folder = tmp_path / "tb" / "mnist" / MODEL / record["fingerprint"][:16]
    scalars = read_scalars(folder / "train")
    np.testing.assert_allclose(scalars["epoch_loss"], record["history"]["loss"], rtol=1e-5)
    val = read_scalars(folder / "validation")
    np.testing.assert_allclose(val["epoch_loss"], record["history"]["val_loss"], rtol=1e-5)

    monkeypatch.setattr(config, "TENSORBOARD_LOGS", False)
    monkeypatch.setattr(config, "TENSORBOARD", tmp_path / "off")
    plain, other = training.train(MODEL, data, cache_dir=tmp_path / "b", **TINY)
    assert not (tmp_path / "off").exists()
    assert other["fingerprint"] == record["fingerprint"]
    np.testing.assert_allclose(other["history"]["loss"], record["history"]["loss"], rtol=1e-5)
    x = data.x_test[:16]
    np.testing.assert_allclose(plain.predict(x, verbose=0), logged.predict(x, verbose=0), atol=1e-5)


def test_no_callback_when_turned_off_and_the_folder_under_the_run(monkeypatch, tmp_path):
    monkeypatch.setattr(config, "TENSORBOARD_LOGS", False)
    assert tensorboard_callback(MODEL, "mnist", "f" * 64) is None
    monkeypatch.setattr(config, "TENSORBOARD_LOGS", True)
    monkeypatch.setattr(config, "TENSORBOARD", tmp_path / "runs" / "default" / "tensorboard")
    board = tensorboard_callback(MODEL, "mnist", "0123456789abcdef" * 4)
    assert board.log_dir == str(
        tmp_path / "runs" / "default" / "tensorboard" / "mnist" / MODEL / "0123456789abcdef"
    )
    assert board.write_graph is False and board.histogram_freq == 0

    from helpers import run

    for key in run._OUTPUTS:  # set then delete: monkeypatch restores the environment afterwards
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    for attr, _ in run._OUTPUTS.values():
        monkeypatch.setattr(config, attr, getattr(config, attr))
    run.set_profile_outputs("default", tmp_path / "runs" / "default")
    assert config.TENSORBOARD == (tmp_path / "runs" / "default" / "tensorboard").resolve()
