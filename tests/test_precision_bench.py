"""benchmarks/precision.py: the paired bfloat16 - float32 figures (no training here)."""

import numpy as np
import pytest

from benchmarks import precision


def _run(seconds, knn, mapr):
    return {"train_seconds": seconds, "3nn_accuracy": float(np.mean(knn)), "map_at_r": float(np.mean(mapr))}


def test_compare_pairs_the_two_precisions_query_by_query():
    base_knn, mixed_knn = np.array([1, 1, 1, 0.0]), np.array([1, 0, 1, 1.0])
    base_map, mixed_map = np.array([1, 0.5, 1, 0.5]), np.array([1, 0.5, 0.5, 0.5])
    rows = {"float32": _run(100.0, base_knn, base_map), "mixed_bfloat16": _run(80.0, mixed_knn, mixed_map)}
    per_query = {
        "float32": {"3nn_accuracy": base_knn, "map_at_r": base_map},
        "mixed_bfloat16": {"3nn_accuracy": mixed_knn, "map_at_r": mixed_map},
    }
    out = precision.compare("m", rows, per_query)
    assert out["time_ratio"] == pytest.approx(0.8)
    assert out["3nn_accuracy"]["difference"] == pytest.approx(0.0)  # one lost, one gained
    assert (out["3nn_accuracy"]["float32"], out["3nn_accuracy"]["bfloat16"]) == (0.75, 0.75)
    assert out["map_at_r"]["difference"] == pytest.approx(-0.125)  # -0.5 on one of four queries
    assert out["map_at_r"]["ci_low"] < 0 and out["map_at_r"]["ci_high"] == pytest.approx(0.0)


def _comparison(model, seed, knn_diff, base=0.99, ratio=0.8):
    entry = {"float32": base, "bfloat16": base + knn_diff, "difference": knn_diff}
    return {"model": model, "seed": seed, "time_ratio": ratio, "3nn_accuracy": entry, "map_at_r": entry}


def test_mean_difference_averages_the_pairs_with_their_standard_error():
    comparisons = [
        _comparison("m", s, d, ratio=r) for s, d, r in ((0, -0.002, 0.5), (1, 0.001, 2.0), (2, 0.004, 1.0))
    ]
    out = precision.mean_difference(comparisons)
    assert out["pairs"] == 3 and out["time_ratio"] == pytest.approx(1.0)  # geometric mean of 0.5, 2, 1
    knn = out["3nn_accuracy"]
    assert knn["mean_difference"] == pytest.approx(0.001) and knn["bfloat16"] == pytest.approx(0.991)
    # sample std of (-0.003, 0, 0.003) is 0.003; over sqrt(3)
    assert knn["se"] == pytest.approx(0.003 / np.sqrt(3))
    assert "se" not in precision.mean_difference(comparisons[:1])["map_at_r"]


def test_per_model_groups_the_seeds_of_each_model_in_order():
    comparisons = [_comparison("b", 0, 0.002), _comparison("a", 0, 0.0), _comparison("b", 1, 0.004)]
    out = precision.per_model(comparisons)
    assert [m["model"] for m in out] == ["b", "a"] and [m["pairs"] for m in out] == [2, 1]
    assert out[0]["3nn_accuracy"]["mean_difference"] == pytest.approx(0.003)


def test_unknown_model_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        precision.main(["--models", "resnet"])
    assert exc.value.code == 2 and "unknown model" in capsys.readouterr().err
