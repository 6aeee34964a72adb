"""The VICReg study (helpers/vicreg.py): views, pair sampler, per-batch terms, the measurements
against hand-worked values, a tiny training through the cache, and the same pieces under JAX."""

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import ops

from helpers import profiles
from helpers.data import Dataset
from helpers.samplers import GeneratorError
from helpers.studies import vicreg as V
from helpers.studies.vicreg import VICREG_TERMS
from helpers.training.callbacks import BatchValues

ROOT = Path(__file__).resolve().parents[1]


def _images(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 28, 28, 1)).astype(np.float32)


# --- views ----------------------------------------------------------------------------------------


def test_views_without_jitter_are_the_image_and_flip_mirrors_it():
    x = _images()
    still = V.ViewAugment(scale=(1, 1), ratio=(1, 1), flip=False, brightness=0, contrast=0, blur=0, seed=0)
    np.testing.assert_allclose(np.asarray(still(x, training=True)), x, atol=1e-5)
    flip = V.ViewAugment(scale=(1, 1), ratio=(1, 1), flip=True, brightness=0, contrast=0, blur=0, seed=0)
    out = np.asarray(flip(np.concatenate([x] * 4), training=True))
    mirrored = [
        np.allclose(o, xi[:, ::-1], atol=1e-5) for o, xi in zip(out, np.concatenate([x] * 4), strict=True)
    ]
    kept = [np.allclose(o, xi, atol=1e-5) for o, xi in zip(out, np.concatenate([x] * 4), strict=True)]
    assert all(m or k for m, k in zip(mirrored, kept, strict=True)) and any(mirrored) and any(kept)


def test_views_are_random_only_in_training_and_stay_in_range():
    x = _images()
    layer = V.ViewAugment(seed=1)
    np.testing.assert_array_equal(np.asarray(layer(x)), x)
    a, b = np.asarray(layer(x, training=True)), np.asarray(layer(x, training=True))
    assert np.abs(a - b).mean() > 0.01  # two calls, two views
    assert a.min() >= 0.0 and a.max() <= 1.0
    with pytest.raises(ValueError, match="scale"):
        V.ViewAugment(scale=(0.0, 1.0))


def test_blur_weights_by_hand():
    from keras import ops

    x = np.zeros((1, 5, 5, 1), np.float32)
    x[0, 2, 2, 0] = 9.0
    same = np.asarray(V._blur3(ops.convert_to_tensor(x), np.zeros((1, 1, 1, 1), np.float32)))
    np.testing.assert_allclose(same, x)
    box = np.asarray(V._blur3(ops.convert_to_tensor(x), np.ones((1, 1, 1, 1), np.float32)))[0, :, :, 0]
    np.testing.assert_allclose(box[1:4, 1:4], np.ones((3, 3)), rtol=1e-6)  # 9 spread as [1,1,1]/3 twice
    assert box.sum() == pytest.approx(9.0) and box[0].sum() == 0.0


# --- pairs ----------------------------------------------------------------------------------------


def test_pair_sampler_draws_partners_from_the_table_deterministically():
    x = _images(10)
    self_pairs = V.PositivePairGenerator(x, np.arange(10), batch_size=4, steps_per_epoch=2, seed=3)
    (a, b), y = self_pairs[0]
    np.testing.assert_array_equal(a, b)
    assert y.shape == (4,) and not y.any()
    table = np.stack([(np.arange(10) + k) % 10 for k in (1, 2, 3)], axis=1)
    gen = V.PositivePairGenerator(x, table, batch_size=6, steps_per_epoch=2, seed=3)
    anchors, partners = gen.batch_indices(1)
    assert len(set(anchors.tolist())) == 6
    assert all(p in table[i] for i, p in zip(anchors, partners, strict=True))
    again = V.PositivePairGenerator(x, table, batch_size=6, steps_per_epoch=2, seed=3)
    np.testing.assert_array_equal(again.batch_indices(1)[1], partners)
    gen.set_epoch(1)
    assert not np.array_equal(gen.batch_indices(1)[0], anchors)


def test_pair_sampler_rejects_bad_tables():
    x = _images(5)
    with pytest.raises(GeneratorError, match="one row per image"):
        V.PositivePairGenerator(x, np.zeros((4, 1), np.int64))
    with pytest.raises(GeneratorError, match="outside"):
        V.PositivePairGenerator(x, np.full((5, 1), 7))
    with pytest.raises(GeneratorError, match="batch_size"):
        V.PositivePairGenerator(x, np.arange(5), batch_size=6)


def _tiny_data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 28, 28, 1)).astype(np.float32)
    y = np.arange(n) % 4
    return Dataset("tiny", "test", x, y, x[:16], y[:16], x[:16], y[:16], ["a", "b", "c", "d"])


def test_positives_dataset_replaces_the_labels_by_partner_tables():
    data = _tiny_data()
    views = V.positives_dataset(data)
    assert views.name == "tiny-views" and views.y_train.shape == (48, 1)
    np.testing.assert_array_equal(views.y_train[:, 0], np.arange(48))
    np.testing.assert_array_equal(views.y_test, data.y_test)  # evaluation keeps the labels
    table = V.neighbour_table(data.x_train.reshape(48, -1))
    assert table.shape == (48, 3) and not (table == np.arange(48)[:, None]).any()
    nn = V.positives_dataset(data, table, V.neighbour_table(data.x_val.reshape(16, -1)), "neighbours")
    assert nn.name == "tiny-neighbours" and nn.y_val.shape == (16, 3)


def test_batch_terms_recover_each_batch_from_the_running_means():
    logger = BatchValues(("loss", *VICREG_TERMS))
    values = [4.0, 2.0, 3.0]
    logger.on_epoch_begin(0)
    for b in range(3):
        logger.on_train_batch_end(b, {"loss": float(np.mean(values[: b + 1])), "variance": 1.0})
    logger.on_epoch_begin(1)
    logger.on_train_batch_end(0, {"loss": 7.0})
    assert logger.values["loss"] == pytest.approx([4.0, 2.0, 3.0, 7.0])
    assert logger.values["variance"] == pytest.approx([1.0, 1.0, 1.0])
    assert logger.epochs == [0, 0, 0, 1]


# --- measurements ------------------------------------------------------------------------------------


def test_spectrum_effective_rank_of_round_and_flat_clouds():
    rng = np.random.default_rng(0)
    round_cloud = V.spectrum(rng.normal(size=(4000, 8)))
    assert round_cloud["effective_rank"] == pytest.approx(8.0, rel=0.02) and round_cloud["rank"] == 8
    line = np.outer(rng.normal(size=500), rng.normal(size=8))
    flat = V.spectrum(line)
    assert flat["effective_rank"] == pytest.approx(1.0, abs=1e-6) and flat["rank"] == 1
    assert V.spectrum(np.ones((5, 3)))["effective_rank"] == 0.0
    with pytest.raises(ValueError, match="n >= 2"):
        V.spectrum(np.ones((1, 3)))


def test_anomaly_scores_by_hand_and_a_perfect_roc():
    train = np.array([[0.0, 0.0], [2.0, 0.0], [10.0, 10.0]], np.float32)
    scores = V.anomaly_scores(train, np.array([[1.0, 0.0], [5.0, 0.0]], np.float32))
    np.testing.assert_allclose(scores, [1.0, 4.0], rtol=1e-6)  # (1 + 1) / 2, (3 + 5) / 2
    roc = V.anomaly_roc(np.array([0.1, 0.2, 0.3]), np.array([0.5, 0.9]))
    assert roc["auc"] == 1.0 and roc["tpr"][-1] == 1.0
    assert V.anomaly_roc(np.array([0.5, 0.9]), np.array([0.1, 0.2]))["auc"] == 0.0


def _blobs(n=40, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    return rng.normal(size=(n, 5)) * 0.1 + y[:, None] * 5.0, y


@pytest.mark.filterwarnings("ignore:Graph is not fully connected")
def test_probe_clustering_and_laplacian_eigenmaps_on_separated_blobs():
    x, y = _blobs()
    assert V.linear_probe(x, y, x, y) == 1.0
    with pytest.raises(ValueError, match="same d"):
        V.linear_probe(x, y, x[:, :3], y)
    c = V.clustering(x, y, n_clusters=2)
    assert c["nmi"] == pytest.approx(1.0) and c["ari"] == pytest.approx(1.0)
    assert c["silhouette_clusters"] == pytest.approx(c["silhouette_labels"]) and c["silhouette_labels"] > 0.9
    images = np.zeros((40, 4, 4, 1), np.float32)
    images[y == 1, :2] = 1.0  # two kinds of image: the kNN graph has two components
    images += np.random.default_rng(1).random(images.shape).astype(np.float32) * 0.05
    train, test = V.laplacian_eigenmaps(images[:30], images[30:], n_components=2, n_neighbors=5)
    assert train.shape == (30, 2) and test.shape == (10, 2)
    assert V.linear_probe(train, y[:30], test, y[30:]) == 1.0


def test_profiles_and_registry_entries():
    import dataclasses

    from helpers import registry

    plain = dataclasses.replace(registry.MODELS["cnn_simple_v1"], loss="vicreg", margin=0.0)
    with pytest.raises(ValueError, match="needs a spec with inv_weight"):
        registry.make_loss(plain)
    assert profiles.settings("10_vicreg", "default", epochs=3)["epochs"] == 3
    with pytest.raises(ValueError, match="unknown profile"):
        profiles.settings("10_vicreg", "huge")
    assert V.STUDY["vicreg_no_variance"].var_weight == 0.0 and V.STUDY["vicreg"].var_weight == 25.0
    assert {s.generator for s in V.STUDY.values()} == {"positive_pairs"}


def test_results_table_reads_the_committed_figures(tmp_path):
    rows = [
        {"representation": name, "probe": 0.5, "effective_rank": 3.0, "anomaly_auc": 0.9}
        for name in ("vicreg", "vicreg_no_variance", "vicreg_neighbours", "raw pixels")
    ]
    clustering = {"vicreg": {"silhouette_clusters": 0.2, "silhouette_labels": 0.1, "nmi": 0.4, "ari": 0.3}}
    path = tmp_path / "r.json"
    path.write_text(
        json.dumps({"command": "c", "date": "d", "representations": rows, "clustering": clustering})
    )
    table = V.results_table({"default": path, "full": tmp_path / "missing.json"})
    assert list(table.columns) == ["reference (CIFAR-10)", "default"]
    assert table.loc["linear probe: VICReg", "reference (CIFAR-10)"] == 0.72
    assert table.loc["VICReg k-means NMI", "default"] == 0.4
    assert V.results_table({"default": tmp_path / "missing.json"}) is None


# --- training through the cache ----------------------------------------------------------------------------


@pytest.mark.slow
def test_tiny_training_caches_the_model_and_its_batch_terms(tmp_path):
    data = _tiny_data()
    params = {"steps_per_epoch": 2, "batch_size": 16}
    encoder, _, record = V.train_model("vicreg", V.positives_dataset(data), params, 1, tmp_path)
    assert encoder.output_shape == (None, V.REPRESENTATION_DIM) and not record["from_cache"]
    terms = record["batch_terms"]["values"]
    assert len(terms["loss"]) == 2 and all(
        len(terms[k]) == 2 for k in ("invariance", "variance", "covariance")
    )
    assert set(record["history"]) >= {"loss", "invariance", "variance", "covariance", "val_loss"}
    again, _, cached = V.train_model("vicreg", V.positives_dataset(data), params, 1, tmp_path)
    assert cached["from_cache"] and cached["batch_terms"]["values"] == terms
    np.testing.assert_allclose(
        V.embed_all(again, data, data.x_test)["test"],
        V.embed_all(encoder, data, data.x_test)["test"],
        rtol=1e-5,
    )
    # the neighbour model's partners are its data: other partners, another fingerprint
    tables = [np.roll(np.arange(n), s)[:, None] for n, s in ((48, 1), (16, 1))]
    _, _, nn = V.train_model(
        "vicreg_neighbours", V.positives_dataset(data, *tables, "nn"), params, 1, tmp_path
    )
    tables = [np.roll(np.arange(n), s)[:, None] for n, s in ((48, 2), (16, 1))]
    _, _, nn2 = V.train_model(
        "vicreg_neighbours", V.positives_dataset(data, *tables, "nn"), params, 1, tmp_path
    )
    assert not nn2["from_cache"] and nn2["data_fingerprint"] != nn["data_fingerprint"]


def test_train_only_study_trains_the_three_models_and_a_rerun_loads_them(tmp_path, monkeypatch):
    # the GPU half of a split run: train, stop before the CPU-bound evaluation; the CPU half reuses
    # the cache (its figures are then from the same weights)
    data = _tiny_data()
    monkeypatch.setattr(V, "study_data", lambda params, **kw: (data, data.x_test[:8]))
    params = {"steps_per_epoch": 2, "batch_size": 16, "epochs": 1, "ablation_epochs": 1, "nn_epochs": 1}
    study = V.run_study(params, cache_dir=tmp_path, verbose=False, train_only=True)
    assert set(study["records"]) == set(V.LEARNED) and "rows" not in study and "clusters" not in study
    assert not any(r["from_cache"] for r in study["records"].values())
    again = V.run_study(params, cache_dir=tmp_path, verbose=False, train_only=True)
    assert all(r["from_cache"] for r in again["records"].values())
    summary = V.training_summary(again)
    assert set(summary) == set(V.LEARNED) and all(m["epochs_run"] == 1 for m in summary.values())


@pytest.mark.slow
def test_views_loss_and_cached_training_under_jax(tmp_path):
    pytest.importorskip("jax")
    code = """
        import json, numpy as np, keras
        from helpers.studies import vicreg as V
        from helpers.data import Dataset
        x = np.random.default_rng(0).random((48, 28, 28, 1)).astype("float32")
        layer = V.ViewAugment(seed=0)
        a, b = np.asarray(layer(x[:8], training=True)), np.asarray(layer(x[:8], training=True))
        z = np.random.default_rng(1).normal(size=(6, 2, 5)).astype("float32")
        terms = {k: float(v) for k, v in V.vicreg_terms(z[:, 0], z[:, 1]).items()}
        y = np.arange(48) % 4
        data = Dataset("tiny", "test", x, y, x[:16], y[:16], x[:16], y[:16], list("abcd"))
        params = {"steps_per_epoch": 2, "batch_size": 16}
        encoder, _, record = V.train_model("vicreg", V.positives_dataset(data), params, 1, "cache")
        rep = V.embed_all(encoder, data, x[:4])
        print(json.dumps({"backend": keras.backend.backend(), "differ": float(np.abs(a - b).mean()),
                          "terms": terms, "loss": record["history"]["loss"][-1],
                          "keys": sorted(record["history"]),
                          "batches": len(record["batch_terms"]["values"]["variance"]),
                          "rep": list(rep["digits"].shape)}))
    """
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["backend"] == "jax" and got["differ"] > 0.01 and np.isfinite(got["loss"])
    assert {"invariance", "variance", "covariance"} <= set(got["keys"]) and got["batches"] == 2
    assert got["rep"] == [4, V.REPRESENTATION_DIM]
    z = np.random.default_rng(1).normal(size=(6, 2, 5)).astype("float32")

    want = {k: float(v) for k, v in V.vicreg_terms(z[:, 0], z[:, 1]).items()}
    assert got["terms"] == pytest.approx(want, rel=1e-5)


def test_same_class_share_by_hand():
    labels = np.array([0, 0, 1, 1])
    table = np.array([[1, 2], [0, 1], [3, 0], [2, 2]])
    assert V.same_class_share(table, labels) == pytest.approx(6 / 8)  # rows: 1, 2, 1, 2 of 2 same-class


def test_figures_draw_what_they_are_given_and_refuse_nothing():
    from helpers.studies.plots import vicreg as plots

    rng = np.random.default_rng(0)
    terms = {
        "m": {
            "values": {"loss": [3.0, 2.0], "invariance": [1.0, 0.5], "variance": [1, 1], "covariance": [2, 1]}
        }
    }
    fig = plots.plot_batch_terms({**terms, "cached": None})
    assert len(fig.axes) == 4 and len(fig.axes[0].lines) == 1
    with pytest.raises(ValueError, match="no per-batch terms"):
        plots.plot_batch_terms({"cached": None})
    labels = np.arange(20) % 2
    proj = {n: {"pca": rng.normal(size=(20, 2)), "tsne": rng.normal(size=(20, 2))} for n in ("a", "b")}
    fig = plots.plot_pca_tsne(proj, labels, ["x", "y"])
    assert len(fig.axes) == 4 and [ax.get_legend() is not None for ax in fig.axes] == [
        False,
        True,
        False,
        False,
    ]
    roc = V.anomaly_roc(rng.random(10), rng.random(10) + 0.5)
    assert len(plots.plot_anomaly_roc({"a": roc}).axes[0].lines) == 2  # the curve and chance
    fig = plots.plot_clusters(
        rng.normal(size=(20, 2)), labels, labels, ["x", "y"], "a", {"silhouette_clusters": 0.5}
    )
    assert "0.500" in fig.axes[0].get_title()
    import matplotlib.pyplot as plt

    plt.close("all")


def test_the_ablation_trains_as_long_as_vicreg_in_every_profile():
    for profile in profiles.PROFILES:
        params = profiles.settings("10_vicreg", profile)
        assert params["ablation_epochs"] == params["epochs"], profile


def test_paired_comparisons_on_the_same_test_images():
    right = np.r_[np.ones(90), np.zeros(10)].astype(bool)  # vicreg: 90 of 100
    floor = np.r_[np.ones(80), np.zeros(20)].astype(bool)  # random encoder: a subset of 80
    correct = {
        "vicreg": {"probe": right, "knn_accuracy": right},
        "random encoder": {"probe": floor, "knn_accuracy": right},
    }
    rows = V.paired_comparisons(correct, seed=0)
    assert [(r["representation"], r["against"], r["figure"]) for r in rows] == [
        ("vicreg", "random encoder", "probe"),
        ("vicreg", "random encoder", "knn_accuracy"),
    ]
    assert rows[0]["difference"] == pytest.approx(0.1) and rows[0]["excludes_zero"]
    assert rows[1]["difference"] == 0.0 and not rows[1]["excludes_zero"]


# --- VICReg --------------------------------------------------------------------------------------


def _vicreg_numpy(za, zb, eps=1e-4):
    """The three VICReg terms with plain loops (the paper's definitions, unbiased covariance)."""
    n, d = za.shape
    inv = sum((za[i, j] - zb[i, j]) ** 2 for i in range(n) for j in range(d)) / (n * d)
    var = cov = 0.0
    for z in (za, zb):
        mean = [sum(z[i, j] for i in range(n)) / n for j in range(d)]
        c = [
            [sum((z[i, a] - mean[a]) * (z[i, b] - mean[b]) for i in range(n)) / (n - 1) for b in range(d)]
            for a in range(d)
        ]
        var += sum(max(0.0, 1.0 - math.sqrt(c[j][j] + eps)) for j in range(d)) / d
        cov += sum(c[a][b] ** 2 for a in range(d) for b in range(d) if a != b) / d
    return {"invariance": inv, "variance": var, "covariance": cov}


def test_vicreg_terms_match_a_plain_numpy_computation():
    za = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 0.5], [1.0, 1.0, -1.0], [0.5, -0.5, 0.0]], np.float32)
    zb = np.array([[0.5, 0.0, 2.0], [0.0, 2.0, 0.0], [1.5, 1.0, -1.0], [0.0, 0.0, 0.0]], np.float32)
    want = _vicreg_numpy(za.astype(float), zb.astype(float))
    got = {k: float(ops.convert_to_numpy(v)) for k, v in V.vicreg_terms(za, zb).items()}
    assert got == pytest.approx(want, rel=1e-5)
    # by hand: the invariance is the mean of the squared differences, 2.0 / 12
    assert got["invariance"] == pytest.approx((0.25 + 1.0 + 0.25 + 0.25 + 0.25 + 0.25) / 12, rel=1e-6)
    total = float(ops.convert_to_numpy(V.vicreg(za, zb)))
    assert total == pytest.approx(
        25 * want["invariance"] + 25 * want["variance"] + want["covariance"], rel=1e-5
    )
    # mu = 0: the ablation drops exactly the variance term
    ablation = float(ops.convert_to_numpy(V.vicreg(za, zb, var_weight=0.0)))
    assert total - ablation == pytest.approx(25 * want["variance"], rel=1e-5)


def test_vicreg_on_a_collapsed_batch():
    z = np.ones((5, 4), np.float32)  # every vector the same: no variance, no covariance
    t = {k: float(ops.convert_to_numpy(v)) for k, v in V.vicreg_terms(z, z).items()}
    assert t["invariance"] == 0.0 and t["covariance"] == 0.0
    assert t["variance"] == pytest.approx(2 * (1 - math.sqrt(1e-4)), rel=1e-6)  # 1.98: the hinge at full


def test_vicreg_wrapper_metrics_and_serialisation():
    rng = np.random.default_rng(1)
    pair = rng.normal(size=(6, 2, 5)).astype(np.float32)
    loss = V.VICRegLoss(margin=0.0, var_weight=0.0)
    assert isinstance(loss, V.VICRegLoss)
    ref = V.vicreg(pair[:, 0], pair[:, 1], 25.0, 0.0, 1.0)
    assert float(ops.convert_to_numpy(loss(np.zeros(6, np.float32), pair))) == pytest.approx(
        float(ops.convert_to_numpy(ref)), rel=1e-5
    )
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert clone.get_config() == loss.get_config()
    terms = V.vicreg_terms(pair[:, 0], pair[:, 1])
    for metric in V.vicreg_metrics():
        metric.update_state(np.zeros(6, np.float32), pair)
        assert float(ops.convert_to_numpy(metric.result())) == pytest.approx(
            float(ops.convert_to_numpy(terms[metric.name])), rel=1e-5
        )
    with pytest.raises(ValueError, match="no margin"):
        V.VICRegLoss(margin=1.0)
    with pytest.raises(ValueError, match=">= 0"):
        V.VICRegLoss(var_weight=-1.0)
    with pytest.raises(ValueError, match="term must be one of"):
        V.VICRegTerm("variances")
    with pytest.raises(ValueError, match="batch, 2, d"):
        loss(np.zeros(4, np.float32), np.zeros((4, 3, 5), np.float32))


def test_benchmark_margin_check_needs_both_figures_two_points_above_both_floors():
    from benchmarks.vicreg import _checks

    reps = [
        {"representation": "vicreg", "probe": 0.85, "anomaly_auc": 0.99},
        {"representation": "vicreg_no_variance", "probe": 0.80},
        {"representation": "raw pixels", "probe": 0.80, "anomaly_auc": 0.97},
    ]

    def comparisons(knn_over_raw):
        return [
            {
                "representation": "vicreg",
                "against": against,
                "figure": figure,
                "difference": d,
                "ci_low": d - 0.02,
            }
            for (against, figure, d) in [
                ("random encoder", "probe", 0.03),
                ("random encoder", "knn_accuracy", 0.05),
                ("raw pixels", "probe", 0.05),
                ("raw pixels", "knn_accuracy", knn_over_raw),
            ]
        ]

    met = _checks({"representations": reps, "comparisons": comparisons(0.021)})
    assert met["margin_above_both_floors"] and met["probe_above_both_floors_paired"]
    missed = _checks({"representations": reps, "comparisons": comparisons(0.019)})
    assert not missed["margin_above_both_floors"] and missed["auc_above_raw_pixels"]
