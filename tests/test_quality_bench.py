"""The pure parts of the quality benchmark: summaries over seeds, targets, overrides, the studies file.

No training: runs are hand-written rows.
"""

from __future__ import annotations

import json

import pytest

from benchmarks import quality, quality_studies

MODELS = ("cnn_with_attention_v1", "cnn_simple_v1")


def run(model, split_seed, seed, acc, sil=0.5, map_r=0.9, eval_split="test", seconds=10.0):
    return {
        "model": model,
        "split_seed": split_seed,
        "seed": seed,
        "eval_split": eval_split,
        "3nn_accuracy": acc,
        "silhouette": sil,
        "map_at_r": map_r,
        "precision_at_1": acc,
        "train_seconds": seconds,
        "command": f"cmd {split_seed}",
    }


def test_summary_over_split_seeds_is_mean_and_population_std():
    rows = [run("m", s, 0, acc) for s, acc in ((42, 0.99), (1, 0.98), (2, 0.97), (3, 0.96))]
    (s,) = quality.summarise(rows, over="split_seed")
    assert s["seeds"] == 4 and s["over_values"] == [1, 2, 3, 42]
    assert s["3nn_accuracy"] == pytest.approx(0.975)
    # deviations 0.015, 0.005, -0.005, -0.015: sqrt((2 * 0.015^2 + 2 * 0.005^2) / 4)
    assert s["3nn_accuracy_std"] == pytest.approx(0.0111803, abs=1e-6)
    assert (s["3nn_accuracy_min"], s["3nn_accuracy_max"]) == (0.96, 0.99)


def test_summary_refuses_two_runs_of_one_seed():
    rows = [run("m", 42, 0, 0.9), run("m", 1, 0, 0.9)]
    with pytest.raises(quality.QualityBenchError, match="select one table"):
        quality.summarise(rows, over="seed")


def test_tables_split_weight_seeds_and_split_seeds():
    runs = [run("cnn_simple_v1", 42, w, 0.97 + w / 1000) for w in (0, 1, 2)]
    runs += [run("cnn_simple_v1", s, 0, 0.95) for s in (1, 2, 3)]
    runs += [run("cnn_simple_v1", 1, 0, 0.5, eval_split="val")]  # a study: in neither table
    tables = quality.tables(runs)
    weights, splits = tables["weight_seeds"]["summary"][0], tables["split_seeds"]["summary"][0]
    assert weights["over_values"] == [0, 1, 2] and weights["3nn_accuracy"] == pytest.approx(0.971)
    assert splits["over_values"] == [1, 2, 3, 42]
    assert splits["3nn_accuracy"] == pytest.approx((0.97 + 3 * 0.95) / 4)
    assert tables["split_seeds"]["commands"] == ["cmd 42", "cmd 1", "cmd 2", "cmd 3"]


def test_merge_replaces_the_run_of_the_same_key_and_reads_older_runs():
    older = {k: v for k, v in run("m", 42, 0, 0.90).items() if k not in ("split_seed", "eval_split")}
    merged = quality.merge_runs([older, run("m", 1, 0, 0.91)], [run("m", 42, 0, 0.95)])
    assert [(r["split_seed"], r["3nn_accuracy"]) for r in merged] == [(1, 0.91), (42, 0.95)]
    assert merged[0]["eval_split"] == "test" and "eval_split" not in older


def test_targets_tolerate_float_error_of_a_mean():
    # 0.989, 0.992, 0.989 average to 0.98999999999999999 in float
    mean = (0.989 + 0.992 + 0.989) / 3
    assert mean < 0.99 and quality.meets(mean, 0.99)
    assert not quality.meets(0.9899, 0.99)


def test_targets_name_one_model_for_all_three_or_the_closest():
    summary = [
        {"model": "cnn_with_attention_v1", "3nn_accuracy": 0.992, "silhouette": 0.79, "map_at_r": 0.98},
        {"model": "cnn_simple_v1", "3nn_accuracy": 0.975, "silhouette": 0.85, "map_at_r": 0.96},
    ]
    t = quality.check_targets(summary, models=MODELS)
    # the CBAM row meets two of the three, the other model one: CBAM is the closest, short on silhouette
    assert t["one model silhouette"] == {
        "model": "cnn_with_attention_v1",
        "value": 0.79,
        "target": 0.80,
        "met": False,
    }
    assert t["one model 3nn_accuracy"]["met"] and t["every model 3nn_accuracy"]["model"] == "cnn_simple_v1"
    summary[0]["silhouette"] = 0.81
    t = quality.check_targets(summary, models=MODELS)
    assert all(t[f"one model {m}"]["met"] for m in quality.ONE_MODEL)
    assert t["every model 3nn_accuracy"]["met"] is True  # 0.975 >= 0.97


def test_override_parsing():
    assert quality.parse_overrides(["margin=0.5", "augment=true", "lr_schedule=cosine"]) == {
        "margin": 0.5,
        "augment": True,
        "lr_schedule": "cosine",
    }
    with pytest.raises(quality.QualityBenchError, match="KEY=VALUE"):
        quality.parse_overrides(["margin"])
    with pytest.raises(quality.QualityBenchError, match="not a registry field"):
        quality.parse_overrides(["marign=0.5"])


def test_a_study_cannot_write_the_reported_table(tmp_path):
    with pytest.raises(quality.QualityBenchError, match="--out"):
        quality.check_out(quality.DEFAULT_OUT, "val", {})
    with pytest.raises(quality.QualityBenchError, match="--out"):
        quality.check_out(quality.DEFAULT_OUT, "test", {"margin": 1.0})
    quality.check_out(tmp_path / "study.json", "val", {"margin": 1.0})  # elsewhere: fine
    quality.check_out(quality.DEFAULT_OUT, "test", {})


def test_studies_writer_moves_legacy_rows_and_replaces_a_rerun(tmp_path):
    path = tmp_path / "quality_studies.json"
    path.write_text(json.dumps({"studies": [{"study": "old", "3nn_accuracy": 0.98}]}))
    doc = quality_studies.load_doc(path)
    assert doc["studies"] == [] and doc["legacy_test_split"][0]["eval_split"] == "test"
    study = quality_studies.STUDIES["cbam_margin_1"]
    table = {
        "eval_split": "val",
        "summary": quality.summarise(
            [run(study.model, s, 0, acc, eval_split="val") for s, acc in ((1, 0.99), (2, 0.98))],
            over="split_seed",
        ),
    }
    command = quality_studies.study_command("cbam_margin_1", [1, 2], "val")
    row = quality_studies.study_row("cbam_margin_1", study, table, command, "abc123")
    assert row["split_seeds"] == [1, 2] and row["3nn_accuracy"] == pytest.approx(0.985)
    assert (
        row["command"]
        == "python -m benchmarks.quality_studies cbam_margin_1 --split-seeds 1 2 --eval-split val"
    )
    doc = quality_studies.merge_study(doc, row)
    doc = quality_studies.merge_study(doc, {**row, "3nn_accuracy": 0.5})  # rerun: replaces
    assert [r["3nn_accuracy"] for r in doc["studies"]] == [0.5]
    doc = quality_studies.merge_study(doc, {**row, "split_seeds": [1]})  # other seeds: a new row
    assert len(doc["studies"]) == 2 and len(doc["legacy_test_split"]) == 1


def test_study_arguments_reach_quality_py():
    study = quality_studies.Study("cnn_simple_v1", {"margin": 2.0, "lr_schedule": "cosine"}, "x")
    args = quality.parse_args(quality_studies.quality_args(study, [1, 2], "val", "/tmp/c", "/tmp/o.json"))
    assert args.models == ["cnn_simple_v1"] and args.split_seeds == [1, 2] and args.eval_split == "val"
    assert quality.parse_overrides(args.set) == {"margin": 2.0, "lr_schedule": "cosine"}


def test_a_study_whose_overrides_change_nothing_reuses_the_benchmark_cache():
    spec = quality_studies.MODELS["cnn_simple_v1"]
    same = quality_studies.Study("cnn_simple_v1", {"margin": spec.margin}, "x")
    other = quality_studies.Study("cnn_simple_v1", {"margin": spec.margin + 1.0}, "x")
    assert quality_studies.as_registered(same) and not quality_studies.as_registered(other)
    assert quality_studies.as_registered(quality_studies.Study("cnn_simple_v1", {}, "x"))


def test_bn_recalibration_summary_pairs_each_split_seeds_two_rows():
    from benchmarks.archive import bn_recalibration

    def row(split_seed, statistics, acc, sil):
        metrics = {"3nn_accuracy": acc, "silhouette": sil, "map_at_r": acc, "precision_at_1": acc}
        return {"split_seed": split_seed, "bn_statistics": statistics, **metrics}

    # rows out of order: the gain must pair by split seed, not by position
    rows = [
        row(2, "moving", 0.980, 0.70),
        row(1, "moving", 0.990, 0.80),
        row(1, "recalibrated", 0.993, 0.81),
        row(2, "recalibrated", 0.979, 0.74),
    ]
    moving, recalibrated, gain = bn_recalibration.summarise(rows)
    assert moving["bn_statistics"] == "moving" and moving["3nn_accuracy"] == pytest.approx(0.985)
    assert moving["3nn_accuracy_std"] == pytest.approx(0.005)
    assert recalibrated["silhouette"] == pytest.approx(0.775)
    assert gain["3nn_accuracy_per_split"] == pytest.approx([0.003, -0.001])
    assert gain["silhouette_per_split"] == pytest.approx([0.01, 0.04])
    assert gain["3nn_accuracy"] == pytest.approx(0.001)


def test_data_size_fraction_is_stratified_seeded_and_leaves_the_other_splits():
    import numpy as np

    from benchmarks.archive import data_size
    from helpers.data import Dataset

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 10)  # 10 images of each of 4 classes
    x = rng.random((40, 2, 2, 1)).astype(np.float32)
    data = Dataset("toy", "toy", x, y, x[:8], y[:8], x[:4], y[:4], ["a", "b", "c", "d"])
    half = data_size.train_fraction(data, 0.5, seed=1)
    assert np.bincount(half.y_train).tolist() == [5, 5, 5, 5]  # stratified
    kept = [int(np.flatnonzero((x == image).all(axis=(1, 2, 3)))[0]) for image in half.x_train]
    assert kept == sorted(kept) and (y[kept] == half.y_train).all()  # real images, in the split's order
    assert half.x_val is data.x_val and half.y_test is data.y_test
    again, other = data_size.train_fraction(data, 0.5, seed=1), data_size.train_fraction(data, 0.5, seed=2)
    np.testing.assert_array_equal(again.x_train, half.x_train)
    assert not np.array_equal(other.x_train, half.x_train)
    assert data_size.train_fraction(data, 1.0, seed=1) is data
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\], got 1.5"):
        data_size.train_fraction(data, 1.5, seed=1)


def test_data_size_summary_is_one_row_per_fraction_smallest_first():
    from benchmarks.archive import data_size

    def row(fraction, split_seed, acc):
        metrics = {"3nn_accuracy": acc, "silhouette": acc, "map_at_r": acc, "precision_at_1": acc}
        return {
            "fraction": fraction,
            "split_seed": split_seed,
            "train_images": int(3000 * fraction),
            **metrics,
        }

    rows = [row(1.0, 1, 0.99), row(0.5, 2, 0.97), row(0.5, 1, 0.98), row(1.0, 2, 0.988)]
    half, whole = data_size.summarise(rows)
    assert (half["fraction"], half["train_images"], half["split_seeds"]) == (0.5, 1500, [1, 2])
    assert half["3nn_accuracy"] == pytest.approx(0.975) and half["3nn_accuracy_std"] == pytest.approx(0.005)
    assert whole["3nn_accuracy"] == pytest.approx(0.989)


def test_shift_averaging_summary_pairs_each_set_with_none_on_the_same_split_seeds():
    from benchmarks.archive import shift_averaging

    def row(split_seed, shift_set, acc, eval_split="val"):
        return {
            **run("cnn_with_attention_v1", split_seed, 0, acc, eval_split=eval_split),
            "shift_set": shift_set,
        }

    rows = [row(1, "none", 0.98), row(2, "none", 0.99), row(1, "square2", 0.99), row(2, "square2", 0.99)]
    rows.append(row(1, "none", 0.5, eval_split="test"))  # another split: never a baseline for val
    summary = {(s["eval_split"], s["shift_set"]): s for s in shift_averaging.summarise(rows)}
    # gains per split seed: +0.01 and 0 -> mean 0.005; the mean accuracy 0.99 with std 0
    assert summary["val", "square2"]["3nn_gain_over_none"] == pytest.approx(0.005)
    assert summary["val", "square2"]["3nn_accuracy"] == pytest.approx(0.99)
    assert summary["val", "none"]["3nn_accuracy_std"] == pytest.approx(0.005)
    assert summary["test", "none"]["split_seeds"] == [1]
    # a rerun replaces the rows with the same key and keeps the rest
    merged = shift_averaging.merge(rows, [row(1, "square2", 1.0)])
    assert len(merged) == len(rows)
    assert [r["3nn_accuracy"] for r in merged if r["shift_set"] == "square2" and r["split_seed"] == 1] == [
        1.0
    ]


def test_refit_trains_on_train_then_val_and_summarises_against_the_registry_run():
    import numpy as np

    from benchmarks.archive import refit_train_val as refit
    from helpers.data import Dataset

    x = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)
    y = np.arange(10) % 2
    data = Dataset("toy", "toy", x[:6], y[:6], x[6:8], y[6:8], x[8:], y[8:], ["a", "b"])
    both = refit.with_val_in_train(data)
    assert both.x_train[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4, 5, 6, 7]  # train, then val
    assert both.y_train.tolist() == [0, 1, 0, 1, 0, 1, 0, 1]
    assert both.x_val is data.x_val and both.x_test is data.x_test

    def row(split_seed, variant, shift_set, acc):
        return {
            **run("cnn_with_attention_v1", split_seed, 0, acc),
            "variant": variant,
            "shift_set": shift_set,
            "train_images": 6,
            "references": 6,
        }

    rows = [row(1, "registry", "none", 0.98), row(2, "registry", "none", 0.99)]
    rows += [row(1, "refit", "none", 0.99), row(2, "refit", "none", 0.995)]
    summary = {(s["variant"], s["shift_set"]): s for s in refit.summarise(rows)}
    assert list(summary) == [("registry", "none"), ("refit", "none")]  # in the order measured
    # gains per split seed +0.01 and +0.005 -> 0.0075
    assert summary["refit", "none"]["3nn_gain"] == pytest.approx(0.0075)
    assert summary["refit", "none"]["3nn_accuracy"] == pytest.approx(0.9925)
    assert summary["registry", "none"]["3nn_gain"] == pytest.approx(0.0)


def test_shift_averaging_refuses_to_merge_into_a_file_of_another_kind_before_measuring(tmp_path, monkeypatch):
    from benchmarks.archive import shift_averaging

    other = tmp_path / "suite_time.json"
    other.write_text(json.dumps({"profiles": {}}))
    monkeypatch.setattr(shift_averaging, "measure", lambda *a, **k: pytest.fail("measured before the check"))
    with pytest.raises(SystemExit, match="holds no shift-averaging rows"):
        shift_averaging.main(["--out", str(other)])
    assert json.loads(other.read_text()) == {"profiles": {}}  # left as it was


# --- fresh or marked rows --------------------------------------------------------------------------------


def test_stale_marker_trips_when_a_registry_field_changes(monkeypatch):
    import dataclasses

    from benchmarks import common, report
    from helpers import registry

    rows = common.stamp_rows([run(MODELS[0], 42, 0, 0.98), run("raw_pixels", 42, 0, 0.92)], commit="abc1234")
    assert rows[0]["commit"] == "abc1234" and len(rows[0]["registry_fingerprint"]) == 16
    assert "registry_fingerprint" not in rows[1]  # a baseline has no registry entry
    unstamped = run(MODELS[1], 42, 0, 0.97)
    names, notes = report.freshness_marks([*rows, unstamped])
    assert names == [MODELS[0], "raw_pixels", f"{MODELS[1]}{report.UNSTAMPED}"]
    assert notes == [report.FRESHNESS_NOTES[report.UNSTAMPED]]

    spec = registry.MODELS[MODELS[0]]
    monkeypatch.setitem(registry.MODELS, MODELS[0], dataclasses.replace(spec, margin=spec.margin + 0.25))
    names, notes = report.freshness_marks(rows)
    assert names == [f"{MODELS[0]}{report.STALE}", "raw_pixels"]
    assert notes == [report.FRESHNESS_NOTES[report.STALE]]


def test_a_summary_carries_the_fingerprint_its_runs_share():
    a, b = run(MODELS[0], 42, 0, 0.98), run(MODELS[0], 42, 1, 0.97)
    assert "registry_fingerprint" not in quality.summarise([a, b])[0]  # unstamped runs
    a["registry_fingerprint"] = b["registry_fingerprint"] = "f1"
    assert quality.summarise([a, b])[0]["registry_fingerprint"] == "f1"
    b["registry_fingerprint"] = "f2"
    assert quality.summarise([a, b])[0]["registry_fingerprint"] == "mixed"


def test_a_summary_gives_the_standard_error_over_runs_or_one_run_s_interval():
    a, b = run(MODELS[0], 42, 0, 0.98), run(MODELS[0], 42, 1, 0.96)
    # two runs: s = sqrt(2 * 0.01^2 / 1) = 0.01414, SE = s / sqrt(2) = 0.01
    assert quality.summarise([a, b])[0]["3nn_accuracy_se"] == pytest.approx(0.01)
    a.update({"3nn_accuracy_ci_low": 0.97, "3nn_accuracy_ci_high": 0.99})
    one = quality.summarise([a])[0]
    assert (one["3nn_accuracy_ci_low"], one["3nn_accuracy_ci_high"]) == (0.97, 0.99)
    assert "3nn_accuracy_se" not in one


def test_archived_shift_averaging_embeds_the_mean_over_its_shift_set():
    import numpy as np

    from benchmarks.archive.shift_averaging import embed_shifted

    class PixelPosition:  # a stand-in network: the lit pixel's (row, column)
        def predict(self, x, batch_size=None, verbose=0):
            row, column = np.divmod(x.reshape(len(x), -1).argmax(axis=1), x.shape[2])
            return np.stack([row, column], axis=1).astype(np.float32)

    x = np.zeros((1, 5, 5, 1), dtype=np.float32)
    x[0, 1, 2] = 1.0
    # cross1 moves the pixel to (1,2) (1,3) (1,1) (2,2) (0,2): the mean is (1, 2)
    np.testing.assert_allclose(embed_shifted(PixelPosition(), x, "cross1"), [[1.0, 2.0]])
